"""Our pipelines against diffusers' reference pipelines on the same tiny weights and generators.

Also what parity alone does not show: determinism, per-image seeds, the per-step callback and
the stage records the comparison harness reads.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from conftest import LD_STEPS, UNCLIP_STEPS, VARIATION_STEPS, assert_images_close, max_abs_diff, oracle_generators, sd_oracle
from pipelines.common import PipelineOutput, StepState, postprocess
from pipelines.tiny import EMBED_DIM

PROMPTS = ["a red square above a blue circle", "two green triangles!"]
SEED = 11

# ----------------------------------------------------------------------------- unCLIP


def unclip_case(prompt, id, **kwargs):
    return pytest.param(prompt, {**UNCLIP_STEPS, **kwargs}, id=id)


UNCLIP_CASES = [
    unclip_case(PROMPTS[0], "guided", prior_guidance_scale=4.0, decoder_guidance_scale=8.0),
    unclip_case(PROMPTS[0], "unguided-3-2-3-steps", prior_guidance_scale=1.0, decoder_guidance_scale=1.0,
                prior_num_inference_steps=3, super_res_num_inference_steps=3),
    # diffusers guides both stages when either asks; we guide per stage, which must not change the image
    unclip_case(PROMPTS[0], "prior-unguided-decoder-guided", prior_guidance_scale=1.0, decoder_guidance_scale=6.0),
    unclip_case(PROMPTS[0], "prior-guided-decoder-unguided", prior_guidance_scale=5.0, decoder_guidance_scale=1.0),
    unclip_case(PROMPTS, "two-prompts", decoder_num_inference_steps=3),
    unclip_case(PROMPTS[1], "two-images-per-prompt", num_images_per_prompt=2),
]


@pytest.mark.parametrize("prompt, kwargs", UNCLIP_CASES)
def test_unclip_matches_diffusers(unclip, unclip_oracle, prompt, kwargs):
    ours = unclip(prompt, seed=SEED, **kwargs)
    reference = unclip_oracle(prompt, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images

    n_images = (1 if isinstance(prompt, str) else len(prompt)) * kwargs.get("num_images_per_prompt", 1)
    assert ours.images.shape == (n_images, 64, 64, 3)
    assert_images_close(ours.images, reference)


@pytest.mark.parametrize(
    "images, kwargs",
    [
        pytest.param([0], dict(decoder_guidance_scale=8.0), id="one-image-guided"),
        pytest.param([0, 1], dict(decoder_guidance_scale=1.0, decoder_num_inference_steps=3), id="two-images-unguided"),
        pytest.param([1], dict(decoder_guidance_scale=4.0, num_images_per_prompt=2), id="two-variations-per-image"),
    ],
)
def test_unclip_variations_match_diffusers(unclip_variations, unclip_variations_oracle, variation_images, images, kwargs):
    kwargs = {**VARIATION_STEPS, **kwargs}
    image = [variation_images[i] for i in images]
    ours = unclip_variations.variations(image, seed=SEED, **kwargs)
    reference = unclip_variations_oracle(image=image, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images

    assert ours.images.shape == (len(images) * kwargs.get("num_images_per_prompt", 1), 64, 64, 3)
    assert_images_close(ours.images, reference)


# ----------------------------------------------------------------------------- latent diffusion


def ld_case(scheduler, prompt, id, **kwargs):
    return pytest.param(scheduler, prompt, {**LD_STEPS, "guidance_scale": 7.5, **kwargs}, id=id)


LD_CASES = [
    ld_case("pndm", PROMPTS[0], "pndm-guided"),
    ld_case("pndm", PROMPTS[0], "pndm-unguided-3-steps", guidance_scale=1.0, num_inference_steps=3),
    ld_case("pndm", PROMPTS, "two-prompts"),
    ld_case("pndm", PROMPTS[1], "two-images-per-prompt", num_images_per_prompt=2),
    ld_case("pndm", PROMPTS[0], "negative-prompt", negative_prompt="blurry, dark"),
    ld_case("pndm", PROMPTS, "two-negative-prompts", negative_prompt=["blurry", "a yellow star"]),
    ld_case("pndm", PROMPTS[0], "48x64", height=48, width=64),
    ld_case("ddim", PROMPTS[0], "ddim"),
    ld_case("euler", PROMPTS[0], "euler"),
    # draws fresh noise from the generators at every step
    ld_case("euler_ancestral", PROMPTS[1], "euler-ancestral", num_images_per_prompt=2),
]


@pytest.mark.parametrize("scheduler, prompt, kwargs", LD_CASES)
def test_latent_diffusion_matches_diffusers(latent_diffusion_with, scheduler, prompt, kwargs):
    pipe = latent_diffusion_with(scheduler)
    ours = pipe(prompt, seed=SEED, **kwargs)
    reference = sd_oracle(pipe)(prompt, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images

    n_images = (1 if isinstance(prompt, str) else len(prompt)) * kwargs.get("num_images_per_prompt", 1)
    assert ours.images.shape == (n_images, kwargs.get("height", 64), kwargs.get("width", 64), 3)
    assert_images_close(ours.images, reference)


@pytest.mark.parametrize(
    "scheduler, strength, kwargs",
    [
        pytest.param("pndm", 0.5, dict(num_inference_steps=4), id="pndm-strength-0.5"),
        pytest.param("pndm", 1.0, dict(num_inference_steps=2, num_images_per_prompt=2), id="pndm-strength-1.0"),
        # Euler schedulers keep a step index, which img2img must start part-way through the schedule
        pytest.param("euler_ancestral", 0.6, dict(num_inference_steps=4, guidance_scale=1.0), id="euler-ancestral-strength-0.6"),
    ],
)
def test_img2img_matches_diffusers(latent_diffusion_with, init_image, scheduler, strength, kwargs):
    pipe = latent_diffusion_with(scheduler)
    ours = pipe.img2img(PROMPTS[0], init_image, strength=strength, seed=SEED, **kwargs)
    oracle = sd_oracle(pipe, StableDiffusionImg2ImgPipeline)
    reference = oracle(PROMPTS[0], image=init_image, strength=strength, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images

    assert ours.images.shape == (kwargs.get("num_images_per_prompt", 1), 64, 64, 3)
    assert_images_close(ours.images, reference)


# ----------------------------------------------------------------------------- every entry point


@dataclass
class EntryPoint:
    """One way to make images, run on inputs picked by index (prompts, or images for variations)."""

    name: str
    run: Callable[..., PipelineOutput]  # run(indices, seed=..., **kwargs)
    loops: list[tuple[str, str]]  # (callback stage, its steps argument), in order
    stages: tuple[str, ...]  # stage names in the output, in order
    sample_shapes: dict[str, tuple[int, ...]]  # callback stage -> shape of one image's sample
    to_image: Callable[[torch.Tensor], torch.Tensor] = lambda sample: sample  # last sample -> image in [-1, 1]


@pytest.fixture(params=["unclip", "unclip_variations", "text2img", "img2img"])
def entry(request) -> EntryPoint:
    if request.param == "unclip":
        pipe = request.getfixturevalue("unclip")
        return EntryPoint(
            "unclip",
            lambda idx, **kw: pipe([PROMPTS[i] for i in idx], **{**UNCLIP_STEPS, **kw}),
            [("prior", "prior_num_inference_steps"), ("decoder", "decoder_num_inference_steps"), ("super_res", "super_res_num_inference_steps")],
            ("text_encoder", "prior", "decoder", "super_res"),
            {"prior": (EMBED_DIM,), "decoder": (3, 32, 32), "super_res": (3, 64, 64)},
        )
    if request.param == "unclip_variations":
        pipe, images = request.getfixturevalue("unclip_variations"), request.getfixturevalue("variation_images")
        return EntryPoint(
            "unclip_variations",
            lambda idx, **kw: pipe.variations([images[i] for i in idx], **{**VARIATION_STEPS, **kw}),
            [("decoder", "decoder_num_inference_steps"), ("super_res", "super_res_num_inference_steps")],
            ("text_encoder", "image_encoder", "decoder", "super_res"),
            {"decoder": (3, 32, 32), "super_res": (3, 64, 64)},
        )
    pipe = request.getfixturevalue("latent_diffusion")
    if request.param == "text2img":
        return EntryPoint(
            "text2img",
            lambda idx, **kw: pipe([PROMPTS[i] for i in idx], **{**LD_STEPS, **kw}),
            [("unet", "num_inference_steps")],
            ("text_encoder", "unet", "vae_decode"),
            {"unet": (4, 32, 32)},
            pipe.decode,
        )
    image = request.getfixturevalue("init_image")
    return EntryPoint(
        "img2img",
        lambda idx, **kw: pipe.img2img([PROMPTS[i] for i in idx], image, **{"strength": 0.75, "num_inference_steps": 4, **kw}),
        [("unet", "num_inference_steps")],
        ("text_encoder", "vae_encode", "unet", "vae_decode"),
        {"unet": (4, 32, 32)},
        pipe.decode,
    )


def test_same_seed_gives_identical_images(entry):
    first = entry.run([0], seed=5)
    again = entry.run([0], seed=5)
    other = entry.run([0], seed=6)

    assert np.array_equal(first.images, again.images)
    assert max_abs_diff(first.images, other.images) > 1e-2, "the seed does not change the image"


@pytest.mark.parametrize("batch", ["two-inputs", "two-images-per-input"])
def test_each_image_of_a_batch_reproduces_alone_from_its_seed(entry, batch):
    if batch == "two-inputs":
        together, inputs = entry.run([0, 1], seed=7), [0, 1]
    else:
        together, inputs = entry.run([1], seed=7, num_images_per_prompt=2), [1, 1]

    assert together.seeds == [7, 8]
    for i, seed in enumerate(together.seeds):
        alone = entry.run([inputs[i]], seed=seed)
        assert alone.seeds == [seed]
        assert_images_close(together.images[i : i + 1], alone.images)


def test_callback_sees_every_step_of_every_stage(entry):
    # A different step count per stage, so a state filed under the wrong stage shows.
    steps = {arg: 2 + k for k, (_, arg) in enumerate(entry.loops)}
    states: list[StepState] = []
    out = entry.run([0, 1], seed=3, callback=states.append, **steps)

    loops = [stage for stage, _ in entry.loops]
    assert [s.stage for s in states] == sorted((s.stage for s in states), key=loops.index), "stages out of order"
    assert {s.stage for s in states} == set(loops)
    for stage, arg in entry.loops:
        mine = [s for s in states if s.stage == stage]
        if entry.name in ("unclip", "unclip_variations"):
            assert len(mine) == steps[arg]
        else:
            # PNDM runs one extra warm-up step; img2img skips the noisiest steps of the schedule
            assert 1 <= len(mine) <= steps[arg] + 1
        assert [s.step for s in mine] == list(range(len(mine)))
        assert all(s.num_steps == len(mine) for s in mine)
        timesteps = [s.timestep for s in mine]
        assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) >= len(mine) - 1
        for s in mine:
            assert s.sample.shape == (2, *entry.sample_shapes[stage])
            assert s.denoised.shape == s.sample.shape
            assert s.denoised.isfinite().all()

    # The last state is the real end of the loop: it turns into the returned images.
    assert_images_close(postprocess(entry.to_image(states[-1].sample)), out.images, atol=1e-6)


def test_stages_are_recorded_with_time_and_memory(entry):
    out = entry.run([0], seed=3)

    assert tuple(s.name for s in out.stages) == entry.stages
    for s in out.stages:
        assert s.seconds > 0, s
        assert s.peak_memory_bytes > 0, s
        assert s.memory_kind == "process_peak_rss", s
    assert out.total_seconds >= sum(s.seconds for s in out.stages)
    assert (out.device, out.dtype) == ("cpu", "float32")
    assert out.images.dtype == np.float32 and out.images.min() >= 0 and out.images.max() <= 1
    assert out.seeds == [3] and len(out.prompts) == 1
