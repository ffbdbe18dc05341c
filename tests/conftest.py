"""Shared fixtures: tiny pipelines built once per session, their diffusers oracles, test images.

The hub is switched off before anything imports huggingface_hub, so no test can reach the
network (test_hub.py turns it back on for its own tests, pointed at a stand-in hub on 127.0.0.1);
every component is built from a config with a fixed seed (pipelines/tiny.py).

Why the per-image reproduction test runs in float64: the tiny models' first denoising step
starts at t = 999, where x_0 = (x_t - sqrt(1 - a) * eps) / sqrt(a) with a ~ 2e-6 multiplies any
input difference by ~600, and the decoder and super-resolution each take such a step. A float32
rounding difference (1e-7) from a different batch composition (two images at once against one),
which changes nothing a user could see with real weights, then grows to 1e-2 in a pixel. In
float64 rounding is 1e-16, so a difference over 1e-4 can only be a difference in what is
computed. Parity with diffusers batches the same way on both sides and holds in float32.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPImageVariationPipeline, UnCLIPPipeline
from PIL import Image

from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

SEED = 0  # seed of the tiny components' weights
PARITY_ATOL = 1e-4  # max abs pixel difference (images in [0, 1]) we accept against diffusers
# Two steps per stage keeps a tiny call well under a second on a CPU.
UNCLIP_STEPS = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)
VARIATION_STEPS = dict(decoder_num_inference_steps=2, super_res_num_inference_steps=2)
LD_STEPS = dict(num_inference_steps=2)
# What UnCLIPImageVariationPipeline.__init__ takes: no prior.
VARIATION_COMPONENTS = (
    "decoder",
    "text_encoder",
    "tokenizer",
    "text_proj",
    "feature_extractor",
    "image_encoder",
    "super_res_first",
    "super_res_last",
    "decoder_scheduler",
    "super_res_scheduler",
)


def oracle_generators(seeds: list[int]) -> list[torch.Generator]:
    """The generators diffusers needs to reproduce an output of ours: one CPU generator per image."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def assert_images_close(ours: np.ndarray, reference: np.ndarray, atol: float = PARITY_ATOL) -> None:
    diff = max_abs_diff(ours, reference)
    assert diff <= atol, f"max abs pixel difference {diff:.3g} exceeds {atol:g}"


# ----------------------------------------------------------------------------- our pipelines


@pytest.fixture(scope="session")
def tiny():
    """`tiny(kind, dtype=torch.float32, scheduler="pndm")`: a tiny pipeline, built once per session.

    kind is "unclip", "unclip_variations" (unCLIP with an image encoder) or "latent_diffusion".
    """
    built = {}

    def get(kind: str, dtype: torch.dtype = torch.float32, scheduler: str = "pndm"):
        key = (kind, dtype, scheduler if kind == "latent_diffusion" else None)
        if key not in built:
            if kind == "latent_diffusion":
                pipe = build_tiny_latent_diffusion(SEED, scheduler=scheduler)
            else:
                pipe = build_tiny_unclip(SEED, image_variations=kind == "unclip_variations")
            built[key] = pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
        return built[key]

    return get


@pytest.fixture(scope="session")
def unclip(tiny):
    return tiny("unclip")


@pytest.fixture(scope="session")
def unclip_variations(tiny):
    return tiny("unclip_variations")


@pytest.fixture(scope="session")
def latent_diffusion(tiny):
    return tiny("latent_diffusion")


# ----------------------------------------------------------------------------- diffusers oracles


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unclip_oracle(pipe) -> UnCLIPPipeline:
    return _quiet(UnCLIPPipeline(**pipe.components()))


def variations_oracle(pipe) -> UnCLIPImageVariationPipeline:
    components = pipe.components()
    return _quiet(UnCLIPImageVariationPipeline(**{name: components[name] for name in VARIATION_COMPONENTS}))


def sd_oracle(pipe, cls=StableDiffusionPipeline):
    """diffusers' SD pipeline (or its img2img) over our components, without a safety checker."""
    return _quiet(cls(**pipe.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False))


# ----------------------------------------------------------------------------- inputs


def random_image(size: int, seed: int) -> Image.Image:
    """A seeded RGB noise image: structureless, so any misuse of it changes the output."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def init_image(latent_diffusion):
    return random_image(latent_diffusion.image_size, seed=1)


@pytest.fixture(scope="session")
def variation_images():
    # two sizes: the feature extractor must resize both to the image encoder's 32 px
    return [random_image(64, seed=2), random_image(48, seed=3)]
