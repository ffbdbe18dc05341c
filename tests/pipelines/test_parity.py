"""Our pipelines against diffusers' reference pipelines on the same tiny weights and generators.

Also what parity alone does not show: determinism, per-image seeds, the per-step callback and
the stage records the comparison harness reads. Parity runs in float32, the dtype users run on a
CPU, and a float64 case per grid shows it is no accident of rounding. Per-image reproduction
compares batches of different sizes, so it runs in float64 (see conftest.py for why).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline

from lab.models import decoder_scheduler, ld_scheduler, prior_scheduler, super_res_scheduler
from pipelines.outputs import PipelineOutput, StepState, postprocess
from pipelines.tiny import EMBED_DIM, build_tiny_latent_diffusion, build_tiny_unclip

from helpers import (
    LD_STEPS,
    UNCLIP_STEPS,
    VARIATION_STEPS,
    assert_images_close,
    max_abs_diff,
    oracle_generators,
    sd_oracle,
    unclip_oracle,
    variations_oracle,
)

F32, F64 = torch.float32, torch.float64
PROMPTS = ["a red square above a blue circle", "two green triangles!"]
SEED = 11


def n_images(prompt, kwargs) -> int:
    return (1 if isinstance(prompt, str) else len(prompt)) * kwargs.get("num_images_per_prompt", 1)


# ----------------------------------------------------------------------------- unCLIP


def unclip_case(id, prompt=PROMPTS[0], dtype=F32, **kwargs):
    return pytest.param(prompt, dtype, {**UNCLIP_STEPS, **kwargs}, id=id)


UNCLIP_CASES = [
    unclip_case("guided", prior_guidance_scale=4.0, decoder_guidance_scale=8.0),
    unclip_case("guided-float64", dtype=F64, prior_guidance_scale=4.0, decoder_guidance_scale=8.0),
    unclip_case(
        "unguided-3-2-3-steps",
        prior_guidance_scale=1.0,
        decoder_guidance_scale=1.0,
        prior_num_inference_steps=3,
        super_res_num_inference_steps=3,
    ),
    unclip_case("prior-unguided-decoder-guided", prior_guidance_scale=1.0, decoder_guidance_scale=6.0),
    unclip_case("prior-guided-decoder-unguided", prior_guidance_scale=5.0, decoder_guidance_scale=1.0),
    unclip_case("two-prompts", PROMPTS, decoder_num_inference_steps=3),
    unclip_case("two-images-per-prompt", PROMPTS[1], num_images_per_prompt=2),
]


@pytest.mark.parametrize("prompt, dtype, kwargs", UNCLIP_CASES)
def test_unclip_matches_diffusers(tiny, prompt, dtype, kwargs):
    pipe = tiny("unclip", dtype)
    ours = pipe(prompt, seed=SEED, **kwargs)
    reference = unclip_oracle(pipe)(prompt, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images

    assert ours.images.shape == (n_images(prompt, kwargs), 64, 64, 3)
    assert_images_close(ours.images, reference)


@pytest.mark.parametrize(
    "images, dtype, kwargs",
    [
        pytest.param([0], F32, dict(decoder_guidance_scale=8.0), id="one-image-guided"),
        pytest.param(
            [0, 1], F32, dict(decoder_guidance_scale=1.0, decoder_num_inference_steps=3), id="two-images-unguided"
        ),
        pytest.param(
            [1], F32, dict(decoder_guidance_scale=4.0, num_images_per_prompt=2), id="two-variations-per-image"
        ),
    ],
)
def test_unclip_variations_match_diffusers(tiny, variation_images, images, dtype, kwargs):
    pipe = tiny("unclip_variations", dtype)
    kwargs = {**VARIATION_STEPS, **kwargs}
    image = [variation_images[i] for i in images]
    ours = pipe.variations(image, seed=SEED, **kwargs)
    reference = variations_oracle(pipe)(
        image=image, generator=oracle_generators(ours.seeds), output_type="np", **kwargs
    ).images

    assert ours.images.shape == (n_images(image, kwargs), 64, 64, 3)
    assert_images_close(ours.images, reference)


def test_unclip_with_the_shapes_labs_schedulers_matches_diffusers():
    """The lab's decoder predicts v (pipelines.schedulers.UnCLIPVScheduler) and its super-res the clean
    image, not the noise: still diffusers' pipeline."""
    pipe = build_tiny_unclip(SEED)
    pipe.prior_scheduler, pipe.decoder_scheduler, pipe.super_res_scheduler = (
        prior_scheduler(),
        decoder_scheduler(),
        super_res_scheduler(),
    )
    assert pipe.decoder_scheduler.config.prediction_type == "v_prediction"
    assert pipe.super_res_scheduler.config.prediction_type == "sample"
    kwargs = {**UNCLIP_STEPS, "prior_guidance_scale": 4.0, "decoder_guidance_scale": 8.0}
    ours = pipe(PROMPTS[0], seed=SEED, **kwargs)
    reference = unclip_oracle(pipe)(
        PROMPTS[0], generator=oracle_generators(ours.seeds), output_type="np", **kwargs
    ).images
    assert_images_close(ours.images, reference)


# ----------------------------------------------------------------------------- latent diffusion


def ld_case(id, scheduler="pndm", prompt=PROMPTS[0], dtype=F32, **kwargs):
    return pytest.param(scheduler, prompt, dtype, {**LD_STEPS, "guidance_scale": 7.5, **kwargs}, id=id)


LD_CASES = [
    ld_case("pndm-guided"),
    ld_case("pndm-guided-float64", dtype=F64),
    ld_case("pndm-unguided-3-steps", guidance_scale=1.0, num_inference_steps=3),
    ld_case("two-prompts", prompt=PROMPTS),
    ld_case("two-images-per-prompt", prompt=PROMPTS[1], num_images_per_prompt=2),
    ld_case("negative-prompt", negative_prompt="blurry, dark"),
    ld_case("two-negative-prompts", prompt=PROMPTS, negative_prompt=["blurry", "a yellow star"]),
    ld_case("48x64", height=48, width=64),
    ld_case("ddim", "ddim"),
    ld_case("euler", "euler"),
    # draws fresh noise from the generators at every step
    ld_case("euler-ancestral", "euler_ancestral", PROMPTS[1], num_images_per_prompt=2),
]


@pytest.mark.parametrize("scheduler, prompt, dtype, kwargs", LD_CASES)
def test_latent_diffusion_matches_diffusers(tiny, scheduler, prompt, dtype, kwargs):
    pipe = tiny("latent_diffusion", dtype, scheduler)
    ours = pipe(prompt, seed=SEED, **kwargs)
    reference = sd_oracle(pipe)(prompt, generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images

    assert ours.images.shape == (n_images(prompt, kwargs), kwargs.get("height", 64), kwargs.get("width", 64), 3)
    assert_images_close(ours.images, reference)


def test_latent_diffusion_with_the_shapes_labs_v_prediction_matches_diffusers():
    pipe = build_tiny_latent_diffusion(SEED, "ddim")
    pipe.scheduler = ld_scheduler()
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    kwargs = {**LD_STEPS, "guidance_scale": 7.5}
    ours = pipe(PROMPTS[0], seed=SEED, **kwargs)
    reference = sd_oracle(pipe)(PROMPTS[0], generator=oracle_generators(ours.seeds), output_type="np", **kwargs).images
    assert_images_close(ours.images, reference)


@pytest.mark.parametrize(
    "scheduler, strength, dtype, kwargs",
    [
        pytest.param("pndm", 0.5, F32, dict(num_inference_steps=4), id="pndm-strength-0.5"),
        pytest.param("pndm", 1.0, F32, dict(num_inference_steps=2, num_images_per_prompt=2), id="pndm-strength-1.0"),
        # Euler schedulers keep a step index, which img2img must start part-way through the schedule
        pytest.param(
            "euler_ancestral",
            0.6,
            F32,
            dict(num_inference_steps=4, guidance_scale=1.0),
            id="euler-ancestral-strength-0.6",
        ),
    ],
)
def test_img2img_matches_diffusers(tiny, init_image, scheduler, strength, dtype, kwargs):
    pipe = tiny("latent_diffusion", dtype, scheduler)
    ours = pipe.img2img(PROMPTS[0], init_image, strength=strength, seed=SEED, **kwargs)
    oracle = sd_oracle(pipe, StableDiffusionImg2ImgPipeline)
    reference = oracle(
        PROMPTS[0],
        image=init_image,
        strength=strength,
        generator=oracle_generators(ours.seeds),
        output_type="np",
        **kwargs,
    ).images

    assert ours.images.shape == (n_images(PROMPTS[0], kwargs), 64, 64, 3)
    assert_images_close(ours.images, reference)


# ----------------------------------------------------------------------------- every entry point


@dataclass
class EntryPoint:
    """One way to make images, run on inputs picked by index (prompts, or images for variations)."""

    name: str
    run: Callable[..., PipelineOutput]  # run(indices, seed=..., **kwargs)
    loops: list[tuple[str, str]]  # (callback stage, the argument giving its steps), in order
    stages: tuple[str, ...]  # stage names in the output, in order
    sample_shapes: dict[str, tuple[int, ...]]  # callback stage -> shape of one image's sample
    to_image: Callable[[torch.Tensor], torch.Tensor]  # last sample -> image in [-1, 1]


def make_entry(name: str, request, dtype: torch.dtype) -> EntryPoint:
    tiny = request.getfixturevalue("tiny")
    if name == "unclip":
        pipe = tiny("unclip", dtype)
        return EntryPoint(
            name,
            lambda idx, **kw: pipe([PROMPTS[i] for i in idx], **{**UNCLIP_STEPS, **kw}),
            [
                ("prior", "prior_num_inference_steps"),
                ("decoder", "decoder_num_inference_steps"),
                ("super_res", "super_res_num_inference_steps"),
            ],
            ("text_encoder", "prior", "decoder", "super_res"),
            {"prior": (EMBED_DIM,), "decoder": (3, 32, 32), "super_res": (3, 64, 64)},
            lambda sample: sample,
        )
    if name == "unclip_variations":
        pipe, images = tiny("unclip_variations", dtype), request.getfixturevalue("variation_images")
        return EntryPoint(
            name,
            lambda idx, **kw: pipe.variations([images[i] for i in idx], **{**VARIATION_STEPS, **kw}),
            [("decoder", "decoder_num_inference_steps"), ("super_res", "super_res_num_inference_steps")],
            ("text_encoder", "image_encoder", "decoder", "super_res"),
            {"decoder": (3, 32, 32), "super_res": (3, 64, 64)},
            lambda sample: sample,
        )
    pipe = tiny("latent_diffusion", dtype)
    if name == "text2img":
        return EntryPoint(
            name,
            lambda idx, **kw: pipe([PROMPTS[i] for i in idx], **{**LD_STEPS, **kw}),
            [("unet", "num_inference_steps")],
            ("text_encoder", "unet", "vae_decode"),
            {"unet": (4, 32, 32)},
            pipe.decode,
        )
    image = request.getfixturevalue("init_image")
    return EntryPoint(
        name,
        lambda idx, **kw: pipe.img2img(
            [PROMPTS[i] for i in idx], image, **{"strength": 0.75, "num_inference_steps": 4, **kw}
        ),
        [("unet", "num_inference_steps")],
        ("text_encoder", "vae_encode", "unet", "vae_decode"),
        {"unet": (4, 32, 32)},
        pipe.decode,
    )


ENTRY_POINTS = ["unclip", "unclip_variations", "text2img", "img2img"]


@pytest.fixture(params=ENTRY_POINTS)
def entry(request) -> EntryPoint:
    return make_entry(request.param, request, F32)


@pytest.fixture(params=ENTRY_POINTS)
def entry64(request) -> EntryPoint:
    return make_entry(request.param, request, F64)


def test_same_seed_gives_identical_images(entry):
    first = entry.run([0], seed=5)
    again = entry.run([0], seed=5)
    other = entry.run([0], seed=6)

    assert np.array_equal(first.images, again.images)
    assert max_abs_diff(first.images, other.images) > 1e-2, "the seed does not change the image"


@pytest.mark.parametrize("batch", ["two-inputs", "two-images-per-input"])
def test_each_image_of_a_batch_reproduces_alone_from_its_seed(entry64, batch):
    if batch == "two-inputs":
        together, inputs = entry64.run([0, 1], seed=7), [0, 1]
    else:
        together, inputs = entry64.run([1], seed=7, num_images_per_prompt=2), [1, 1]

    assert together.seeds == [7, 8]
    for i, seed in enumerate(together.seeds):
        alone = entry64.run([inputs[i]], seed=seed)
        assert alone.seeds == [seed]
        assert_images_close(together.images[i : i + 1], alone.images)


def test_callback_sees_every_step_of_every_stage(entry):
    # A different step count per stage, so a state filed under the wrong stage shows.
    steps = {arg: 2 + k for k, (_, arg) in enumerate(entry.loops)}
    states: list[StepState] = []
    out = entry.run([0, 1], seed=3, callback=states.append, **steps)

    order = [stage for stage, _ in entry.loops]
    assert [s.stage for s in states] == sorted((s.stage for s in states), key=order.index), "stages out of order"
    assert {s.stage for s in states} == set(order)
    for stage, arg in entry.loops:
        mine = [s for s in states if s.stage == stage]
        if entry.name.startswith("unclip"):
            assert len(mine) == steps[arg]
        else:
            # PNDM adds one warm-up step; img2img skips the noisiest steps of the schedule
            assert 1 <= len(mine) <= steps[arg] + 1
        assert [s.step for s in mine] == list(range(len(mine)))
        assert all(s.num_steps == len(mine) for s in mine)
        timesteps = [s.timestep for s in mine]
        assert timesteps == sorted(timesteps, reverse=True), timesteps
        for s in mine:
            assert s.sample.shape == (2, *entry.sample_shapes[stage])
            assert s.denoised.shape == s.sample.shape
            assert s.denoised.isfinite().all()

    # The last state is the real end of the loop: it turns into the returned images.
    assert_images_close(postprocess(entry.to_image(states[-1].sample)), out.images, atol=1e-6)


def test_img2img_callback_skips_the_noisiest_steps(latent_diffusion, init_image):
    states: list[StepState] = []
    latent_diffusion.img2img(
        PROMPTS[0], init_image, strength=0.5, num_inference_steps=4, seed=3, callback=states.append
    )
    full = latent_diffusion.scheduler.timesteps.tolist()  # the whole schedule of 4 steps

    assert [s.timestep for s in states] == full[-len(states) :]
    assert len(states) < len(full)


def test_latent_diffusion_stages_run_by_hand_make_the_calls_images(latent_diffusion, init_image):
    """denoise sets its own timesteps and draws its own noise, as unCLIP's stages do: the stages alone,
    one generator passed along, give the entry points' images to the bit."""
    ld = latent_diffusion
    text = ld.encode_prompt([PROMPTS[0]], [""])
    gen = torch.Generator().manual_seed(3)
    by_hand = ld.decode(ld.denoise(text, gen, 2, 7.5))
    np.testing.assert_array_equal(postprocess(by_hand), ld(PROMPTS[0], num_inference_steps=2, seed=3).images)

    gen = torch.Generator().manual_seed(3)
    clean = ld.encode_image(ld.image_processor.preprocess(init_image), gen, 1)
    by_hand = ld.decode(ld.denoise(text, gen, 4, 7.5, image_latents=clean, strength=0.5))
    out = ld.img2img(PROMPTS[0], init_image, strength=0.5, num_inference_steps=4, seed=3)
    np.testing.assert_array_equal(postprocess(by_hand), out.images)


def test_stages_are_recorded_with_time_and_memory(entry):
    out = entry.run([0], seed=3)

    assert tuple(s.name for s in out.stages) == entry.stages
    for s in out.stages:
        assert s.seconds > 0, s
        assert s.peak_memory_bytes > 0, s
        assert s.memory_kind == "process_peak_rss", s
    assert out.total_seconds >= sum(s.seconds for s in out.stages)
    assert (out.device, out.dtype) == ("cpu", "float32")
    assert out.images.dtype == np.float32 and 0 <= out.images.min() and out.images.max() <= 1
    assert out.seeds == [3] and len(out.prompts) == 1
