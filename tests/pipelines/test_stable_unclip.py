"""Stable unCLIP against diffusers' StableUnCLIPPipeline and StableUnCLIPImg2ImgPipeline on the same tiny
components (configs unlike the lab's: the U-Net's text encoder another CLIP than the prior's), fixed seeds: parity
within PARITY_ATOL; its prior is unCLIP's, to the bit, when it steps Karlo's own scheduler."""

import numpy as np
import pytest
import torch
from diffusers import PriorTransformer, StableUnCLIPImg2ImgPipeline, StableUnCLIPPipeline

from pipelines.components import load_stable_unclip
from pipelines.tiny import build_tiny_stable_unclip, build_tiny_unclip

from helpers import assert_images_close, max_abs_diff, oracle_generators, random_image

PROMPTS = ["a red square above a blue circle", "a small green cross"]
TEXT_TO_IMAGE = (
    "prior_tokenizer",
    "prior_text_encoder",
    "prior",
    "prior_scheduler",
    "image_normalizer",
    "image_noising_scheduler",
    "tokenizer",
    "text_encoder",
    "unet",
    "scheduler",
    "vae",
)
VARIATIONS = (
    "feature_extractor",
    "image_encoder",
    "image_normalizer",
    "image_noising_scheduler",
    "tokenizer",
    "text_encoder",
    "unet",
    "scheduler",
    "vae",
)


def oracle(pipe, cls=StableUnCLIPPipeline, names=TEXT_TO_IMAGE):
    components = pipe.components()
    reference = cls(**{n: components[n] for n in names})
    reference.set_progress_bar_config(disable=True)
    return reference


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(scheduler="ddim", prior_scheduler="ddpm"):
        key = (scheduler, prior_scheduler)
        if key not in cache:
            cache[key] = build_tiny_stable_unclip(0, scheduler, prior_scheduler)
        return cache[key]

    return get


@pytest.mark.parametrize(
    "scheduler, prompts, kwargs",
    [
        ("ddim", PROMPTS[:1], dict(num_inference_steps=3, prior_num_inference_steps=3)),
        ("ddim", PROMPTS, dict(num_inference_steps=2, prior_num_inference_steps=2, noise_level=250)),
        ("pndm", PROMPTS[:1], dict(num_inference_steps=3, prior_num_inference_steps=2, guidance_scale=1.0)),
        ("euler", PROMPTS[:1], dict(num_inference_steps=2, prior_num_inference_steps=2, prior_guidance_scale=1.0)),
        (
            "ddim",
            PROMPTS[0],  # a string: diffusers wants the negative prompt of the prompt's type
            dict(num_inference_steps=2, prior_num_inference_steps=2, negative_prompt="a blue circle", noise_level=9),
        ),
    ],
)
def test_text_to_image_matches_diffusers(built, scheduler, prompts, kwargs):
    pipe = built(scheduler)
    ours = pipe(prompts, seed=[11, 12][: 1 if isinstance(prompts, str) else len(prompts)], **kwargs)
    reference = oracle(pipe)(prompts, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images
    assert_images_close(ours.images, reference)


@pytest.mark.parametrize("kwargs", [dict(num_inference_steps=3), dict(num_inference_steps=2, noise_level=100)])
@pytest.mark.parametrize("prompt", ["", "a red square"])
def test_variations_match_diffusers_img2img(built, prompt, kwargs):
    pipe, image = built(), random_image(48, 5)
    ours = pipe.variations(prompt, image, seed=7, **kwargs)
    reference = oracle(pipe, StableUnCLIPImg2ImgPipeline, VARIATIONS)(
        image=image, prompt=prompt, generator=oracle_generators(ours.seeds), output_type="np", **kwargs
    ).images
    assert_images_close(ours.images, reference)


def test_its_prior_is_uncplips_to_the_bit_on_karlos_own_scheduler(built):
    """Stepped with Karlo's UnCLIPScheduler (each step told its next timestep, as unCLIP's loop does), the prior's
    embedding is unCLIP's: the two architectures share the prior, and differ in the space alone."""
    pipe, unclip = built(prior_scheduler="unclip"), build_tiny_unclip(0, image_variations=True)
    ours = pipe(PROMPTS, seed=[3, 4], prior_num_inference_steps=5, num_inference_steps=2)
    theirs = unclip(
        PROMPTS,
        seed=[3, 4],
        prior_num_inference_steps=5,
        decoder_num_inference_steps=2,
        super_res_num_inference_steps=2,
    )
    assert torch.equal(ours.image_embeds, theirs.image_embeds)


def test_noise_level_and_seed_change_the_image_and_stages_are_recorded(built):
    pipe = built()
    base = pipe(PROMPTS[0], seed=1, num_inference_steps=2, prior_num_inference_steps=2)
    assert [s.name for s in base.stages] == ["text_encoder", "prior", "unet", "vae_decode"]
    again = pipe(PROMPTS[0], seed=1, num_inference_steps=2, prior_num_inference_steps=2)
    assert np.array_equal(base.images, again.images)
    for changed in (dict(seed=2), dict(seed=1, noise_level=500)):
        other = pipe(PROMPTS[0], **{"num_inference_steps": 2, "prior_num_inference_steps": 2, **changed})
        assert max_abs_diff(other.images, base.images) > 1e-2, changed


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(noise_level=-1), "`noise_level` must be a whole number from 0 to 999"),
        (dict(noise_level=1000), "`noise_level` must be a whole number from 0 to 999"),
        (dict(noise_level=2.5), "`noise_level` must be a whole number"),
        (dict(num_inference_steps=0), "`num_inference_steps` must be between 1 and 1000"),
        (dict(prior_num_inference_steps=1), "Stable unCLIP's prior needs at least 2"),
        (dict(guidance_scale=float("nan")), "`guidance_scale` must be a finite number"),
    ],
)
def test_bad_settings_are_refused_before_any_work(built, kwargs, error):
    with pytest.raises(ValueError, match=error):
        built(prior_scheduler="unclip")(PROMPTS[0], seed=0, **kwargs)


# ----------------------------------------------------------------------------- loading


def _karlo_parts(unclip) -> dict:
    """What registry.load_all lends a Stable unCLIP package from the unCLIP pipeline beside it."""
    return dict(
        prior=unclip.prior,
        prior_text_encoder=unclip.text_encoder,
        prior_tokenizer=unclip.tokenizer,
        prior_scheduler=unclip.prior_scheduler,
    )


def test_a_package_loads_with_the_prior_beside_it_and_draws_the_same_images(tiny, tmp_path):
    """Saved without a prior (stabilityai's layout) and loaded beside an unCLIP: the very prior objects, the same
    pixels as before the round trip."""
    pipe = tiny("stable_unclip")
    directory = pipe.save_pretrained(tmp_path / "su", without=("prior", "prior_text_encoder", "prior_tokenizer"))
    assert not (directory / "prior").exists()
    unclip = tiny("unclip")
    loaded = load_stable_unclip(directory, shared=_karlo_parts(unclip))
    assert loaded.prior is unclip.prior and loaded.prior_text_encoder is unclip.text_encoder
    steps = dict(prior_num_inference_steps=2, num_inference_steps=2)
    assert np.array_equal(loaded(PROMPTS[0], seed=3, **steps).images, pipe(PROMPTS[0], seed=3, **steps).images)
    with pytest.raises(ValueError, match="has no prior, prior_scheduler, prior_text_encoder, prior_tokenizer"):
        load_stable_unclip(directory)


def test_a_pipeline_saved_by_diffusers_loads_its_own_prior(built, tmp_path):
    pipe = built()
    oracle(pipe).save_pretrained(tmp_path)  # StableUnCLIPPipeline's save: a prior of its own
    loaded = load_stable_unclip(tmp_path)
    steps = dict(prior_num_inference_steps=2, num_inference_steps=2)
    assert_images_close(loaded(PROMPTS[0], seed=3, **steps).images, pipe(PROMPTS[0], seed=3, **steps).images)


def test_a_prior_or_vae_that_does_not_fit_is_refused_in_one_sentence(tiny, built, tmp_path):
    """Another preset's unCLIP beside it (a prior of another width), or a VAE of other latent channels: refused when
    loading, naming what does not fit and how to carry on, never a shape error mid-image."""
    directory = tiny("stable_unclip").save_pretrained(tmp_path / "su", without=("prior", "prior_text_encoder"))
    lent = _karlo_parts(tiny("unclip"))
    lent["prior"] = PriorTransformer(num_attention_heads=2, attention_head_dim=8, num_layers=1, embedding_dim=48)
    with pytest.raises(ValueError) as caught:
        load_stable_unclip(directory, shared=lent)
    message = str(caught.value)
    assert f"Stable unCLIP from {directory} needs a prior embedding width of " in message
    assert "the unCLIP model loaded beside it lends one of 48" in message and "--stable-unclip none" in message
    assert "\n" not in message
