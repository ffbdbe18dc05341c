"""Shared fixtures: tiny pipelines built once per session, their diffusers oracles, test images.

The hub is switched off before anything imports huggingface_hub, so no test can reach the
network; every component is built from a config with a fixed seed (pipelines/tiny.py).
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import inspect

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPImageVariationPipeline, UnCLIPPipeline
from PIL import Image

from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

SEED = 0  # seed of the tiny components' weights
PARITY_ATOL = 1e-4  # max abs pixel difference (images in [0, 1]) we accept against diffusers
# Two steps per stage keeps a tiny unCLIP call around a second on a CPU.
UNCLIP_STEPS = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)
VARIATION_STEPS = dict(decoder_num_inference_steps=2, super_res_num_inference_steps=2)
LD_STEPS = dict(num_inference_steps=2)


def oracle_generators(seeds: list[int]) -> list[torch.Generator]:
    """The generators diffusers needs to reproduce an output of ours: one CPU generator per image."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def assert_images_close(ours: np.ndarray, reference: np.ndarray, atol: float = PARITY_ATOL) -> None:
    diff = max_abs_diff(ours, reference)
    assert diff <= atol, f"max abs pixel difference {diff:.3g} exceeds {atol:g}"


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- our pipelines


@pytest.fixture(scope="session")
def unclip():
    return build_tiny_unclip(SEED)


@pytest.fixture(scope="session")
def unclip_variations():
    return build_tiny_unclip(SEED, image_variations=True)


@pytest.fixture(scope="session")
def latent_diffusion_with():
    """`latent_diffusion_with(scheduler)`: the tiny SD with that scheduler, built once."""
    built = {}

    def get(scheduler: str = "pndm"):
        if scheduler not in built:
            built[scheduler] = build_tiny_latent_diffusion(SEED, scheduler=scheduler)
        return built[scheduler]

    return get


@pytest.fixture(scope="session")
def latent_diffusion(latent_diffusion_with):
    return latent_diffusion_with("pndm")


# ----------------------------------------------------------------------------- diffusers oracles


@pytest.fixture(scope="session")
def unclip_oracle(unclip):
    return _quiet(UnCLIPPipeline(**unclip.components()))


@pytest.fixture(scope="session")
def unclip_variations_oracle(unclip_variations):
    accepted = inspect.signature(UnCLIPImageVariationPipeline.__init__).parameters
    components = {k: v for k, v in unclip_variations.components().items() if k in accepted}
    return _quiet(UnCLIPImageVariationPipeline(**components))


def sd_oracle(latent_diffusion, cls=StableDiffusionPipeline):
    """diffusers' SD pipeline (or img2img) over the same components, without a safety checker."""
    return _quiet(cls(**latent_diffusion.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False))


@pytest.fixture(scope="session")
def sd_img2img_oracle(latent_diffusion):
    return sd_oracle(latent_diffusion, StableDiffusionImg2ImgPipeline)


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
    return [random_image(64, seed=2), random_image(48, seed=3)]
