"""Bad input is refused at the edge with a ValueError a user can read, before any model runs."""

import re

import numpy as np
import pytest
import torch

from pipelines.devices import pick_device
from pipelines.tiny import BLOCK_CHANNELS

from helpers import LD_STEPS, UNCLIP_STEPS, VARIATION_STEPS

VAE_FACTOR = 2 ** (len(BLOCK_CHANNELS) - 1)  # the tiny VAE's downsampling

# entry point -> the arguments of a valid call (tiny step counts, a fixed seed)
VALID = {
    "unclip": dict(prompt="a red square", seed=0, **UNCLIP_STEPS),
    "unclip_variations": dict(seed=0, **VARIATION_STEPS),  # + image
    "text2img": dict(prompt="a red square", seed=0, **LD_STEPS),
    "img2img": dict(prompt="a red square", seed=0, num_inference_steps=2, strength=1.0),  # + image
}
STEP_ARGS = {
    "unclip": ("prior_num_inference_steps", "decoder_num_inference_steps", "super_res_num_inference_steps"),
    "unclip_variations": ("decoder_num_inference_steps", "super_res_num_inference_steps"),
    "text2img": ("num_inference_steps",),
    "img2img": ("num_inference_steps",),
}
GUIDANCE_ARGS = {
    "unclip": ("prior_guidance_scale", "decoder_guidance_scale"),
    "unclip_variations": ("decoder_guidance_scale",),
    "text2img": ("guidance_scale",),
    "img2img": ("guidance_scale",),
}
WITH_PROMPT = ("unclip", "text2img", "img2img")


@pytest.fixture
def call(unclip, unclip_variations, latent_diffusion, init_image, variation_images):
    """`call(entry, **overrides)`: a valid call with some arguments replaced.

    Every model refuses to run meanwhile, so a check that comes too late fails the test.
    """
    pipes = (unclip, unclip_variations, latent_diffusion)

    def refuse(module, args):
        raise AssertionError(f"{type(module).__name__} ran: the input should have been refused before any model")

    # every submodule, since some models run through methods other than forward (vae.encode)
    hooks = [m.register_forward_pre_hook(refuse) for p in pipes for top in p.modules().values() for m in top.modules()]
    entries = {
        "unclip": unclip,
        "unclip_variations": lambda **kw: unclip_variations.variations(**{"image": variation_images[0], **kw}),
        "text2img": latent_diffusion,
        "img2img": lambda **kw: latent_diffusion.img2img(**{"image": init_image, **kw}),
    }
    yield lambda entry, **overrides: entries[entry](**{**VALID[entry], **overrides})
    for hook in hooks:
        hook.remove()


def cases(table):
    """pytest params (entry, overrides, phrase) from {entry: [(id, overrides, phrase), ...]}."""
    return [
        pytest.param(entry, kw, phrase, id=f"{entry}-{id}") for entry, rows in table.items() for id, kw, phrase in rows
    ]


PROMPT_CASES = cases(
    {
        entry: [
            ("empty-string", dict(prompt=""), "empty"),
            ("whitespace", dict(prompt=" \t\n "), "empty"),
            ("empty-list", dict(prompt=[]), "empty"),
            ("one-empty-in-list", dict(prompt=["a cat", ""]), "empty"),
            ("not-a-string", dict(prompt=[3]), "must hold strings"),
            ("too-long", dict(prompt="a" * 5001), "`prompt` is 5,001 characters; at most 5,000"),
        ]
        for entry in WITH_PROMPT
    }
)

# The fewest steps each entry's schedulers take: UnCLIPScheduler divides by steps - 1.
MIN_STEPS = {"unclip": 2, "unclip_variations": 2, "text2img": 1, "img2img": 1}
STEP_CASES = cases(
    {
        entry: [
            (f"{arg}={steps}", {arg: steps}, f"`{arg}` must be between {MIN_STEPS[entry]} and 1000, got {steps}")
            for arg in args
            for steps in sorted({0, MIN_STEPS[entry] - 1, 1001})
        ]
        + [(f"{args[0]}=2.5", {args[0]: 2.5}, f"`{args[0]}` must be a whole number")]
        for entry, args in STEP_ARGS.items()
    }
)
UNCLIP_ONE_STEP = [
    pytest.param(
        entry,
        {arg: 1},
        f"unCLIP's {arg.removesuffix('_num_inference_steps')} stage needs at least 2",
        id=f"{entry}-{arg}=1-names-the-stage",
    )
    for entry in ("unclip", "unclip_variations")
    for arg in STEP_ARGS[entry]
]

GUIDANCE_CASES = cases(
    {
        entry: [
            (f"{arg}={scale}", {arg: scale}, f"`{arg}` must be a finite number >= 0")
            for arg in args
            for scale in (float("nan"), float("inf"), -1.0)
        ]
        for entry, args in GUIDANCE_ARGS.items()
    }
)

SEED_CASES = cases(
    {
        entry: [
            ("seed=-1", dict(seed=-1), "must be in [0, 2**63), got -1"),
            ("seed=2**63", dict(seed=2**63), f"must be in [0, 2**63), got {2**63}"),
            ("seed-string", dict(seed="7"), "`seed` must be a whole number, got '7'"),
            ("last-seed-overflows", dict(seed=2**63 - 1, num_images_per_prompt=2), "seed of image 1"),
            ("seed-and-generator", dict(generator=torch.Generator()), "either `seed` or `generator`"),
        ]
        for entry in VALID
    }
)

COUNT_CASES = cases(
    {
        entry: [
            ("zero", dict(num_images_per_prompt=0), "`num_images_per_prompt` must be a whole number >= 1, got 0"),
        ]
        for entry in VALID
    }
)

OTHER_CASES = cases(
    {
        "text2img": [
            ("height-odd", dict(height=64 + VAE_FACTOR // 2), f"`height` must be a positive multiple of {VAE_FACTOR}"),
            ("width-odd", dict(width=32 + VAE_FACTOR // 2), f"`width` must be a positive multiple of {VAE_FACTOR}"),
            ("height-zero", dict(height=0), f"`height` must be a positive multiple of {VAE_FACTOR}"),
            (
                "negative-prompts-mismatch",
                dict(prompt=["a", "b"], negative_prompt=["x", "y", "z"]),
                "one string or 2 strings",
            ),
            (
                "negative-prompt-too-long",
                dict(negative_prompt="x" * 2**20),
                "`negative_prompt` is 1,048,576 characters",
            ),
            ("negative-prompt-not-text", dict(negative_prompt=3), "`negative_prompt` must be a string"),
        ],
        "img2img": [
            ("strength-0", dict(strength=0), "`strength` must be in (0, 1], got 0"),
            ("strength-1.5", dict(strength=1.5), "`strength` must be in (0, 1], got 1.5"),
            ("strength-times-steps-below-1", dict(strength=0.4, num_inference_steps=2), "leaves no denoising step"),
            ("image-not-an-image", dict(image="cat.png"), "`image` must be a PIL image"),
        ],
        "unclip_variations": [
            ("no-images", dict(image=[]), "`image` must be a PIL image or a non-empty list"),
            ("image-path", dict(image="cat.png"), "`image` must be a PIL image"),
        ],
    }
)


@pytest.mark.parametrize(
    "entry, overrides, phrase",
    PROMPT_CASES + STEP_CASES + UNCLIP_ONE_STEP + GUIDANCE_CASES + SEED_CASES + COUNT_CASES + OTHER_CASES,
)
def test_bad_input_is_refused_before_any_model_runs(call, entry, overrides, phrase):
    with pytest.raises(ValueError, match=re.escape(phrase)):
        call(entry, **overrides)


# ----------------------------------------------------------------------------- long prompts

LONG_PROMPT = " ".join(["red"] * 80) + " zebra"  # 81 words, 83 tokens with start and end: 6 too many


@pytest.mark.parametrize("entry", WITH_PROMPT)
def test_long_prompt_warns_about_truncation_and_still_makes_an_image(unclip, latent_diffusion, init_image, entry):
    run = {
        "unclip": lambda: unclip(LONG_PROMPT, seed=0, **UNCLIP_STEPS),
        "text2img": lambda: latent_diffusion(LONG_PROMPT, seed=0, **LD_STEPS),
        "img2img": lambda: latent_diffusion.img2img(
            LONG_PROMPT, init_image, strength=1.0, num_inference_steps=2, seed=0
        ),
    }[entry]
    with pytest.warns(UserWarning, match="truncated") as record:
        out = run()
    assert "zebra" in str(record[0].message)  # the warning says what was dropped
    assert out.images.shape == (1, 64, 64, 3)
    assert (out.images >= 0).all() and (out.images <= 1).all()


def test_truncation_warning_quotes_a_short_excerpt(latent_diffusion):
    prompt = "red " * 70 + "zebra " * 700  # 4,480 characters, most of them dropped
    with pytest.warns(UserWarning, match="truncated") as record:
        latent_diffusion(prompt.strip(), seed=0, **LD_STEPS)
    message = str(record[0].message)
    assert len(message) < 300 and "zebra" in message and "more characters" in message


# ----------------------------------------------------------------------------- non-finite images


@pytest.mark.parametrize("entry", ["text2img", "img2img"])
def test_extreme_guidance_names_the_stage_and_makes_no_image(latent_diffusion, init_image, entry):
    from pipelines.checks import NonFiniteError

    run = {
        "text2img": lambda **kw: latent_diffusion("a red square", seed=0, **LD_STEPS, **kw),
        "img2img": lambda **kw: latent_diffusion.img2img(
            "a red square", init_image, strength=1.0, num_inference_steps=2, seed=0, **kw
        ),
    }[entry]
    with pytest.raises(NonFiniteError, match="the unet stage produced NaN or infinite values .guidance_scale=1e.308"):
        run(guidance_scale=1e308)  # float32 turns the scale into inf, and inf * 0 into NaN
    assert run().images.shape[0] == 1  # the next call is served


@pytest.mark.parametrize(
    "model, stage", [("prior", "prior"), ("decoder", "decoder"), ("super_res_first", "super_res")]
)
def test_a_stage_that_overflows_is_named(unclip, model, stage):
    """As float16 can overflow in any stage: a NaN in one model's output is caught where it appears."""
    from pipelines.checks import NonFiniteError

    def overflow(module, args, output):
        (output.predicted_image_embedding if model == "prior" else output.sample).fill_(float("nan"))

    handle = getattr(unclip, model).register_forward_hook(overflow)
    try:
        with pytest.raises(NonFiniteError, match=f"the {stage} stage produced NaN"):
            unclip("a red square", seed=0, **UNCLIP_STEPS)
    finally:
        handle.remove()
    assert np.isfinite(unclip("a red square", seed=0, **UNCLIP_STEPS).images).all()


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", " cuda", ""])
def test_an_unknown_device_is_refused_with_what_is_allowed(name):
    with pytest.raises(ValueError, match=re.escape(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N")):
        pick_device(name)


def test_known_devices_are_read_as_torch_reads_them():
    assert pick_device(None) == pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu") and pick_device("cuda:1") == torch.device("cuda", 1)


def test_the_clis_refuse_an_unknown_device(capsys):
    from lab import train

    with pytest.raises(SystemExit) as exit_:
        train.main(["clip", "--device", "gpu"])
    assert exit_.value.code == 2 and "unknown device 'gpu'" in capsys.readouterr().err
