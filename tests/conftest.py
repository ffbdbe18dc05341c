"""Shared fixtures: tiny pipelines built once per session and test images (their oracles and checks: helpers.py).

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

import pytest
import torch

from pipelines.stable_unclip import StableUnCLIP
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_stable_unclip, build_tiny_unclip

from helpers import SEED, random_image

# ----------------------------------------------------------------------------- our pipelines


@pytest.fixture(scope="session")
def tiny():
    """`tiny(kind, dtype=torch.float32, scheduler="pndm")`: a tiny pipeline, built once per session.

    kind is "unclip", "unclip_variations" (unCLIP with an image encoder), "latent_diffusion" or "stable_unclip"
    (its package's parts: the prior shared with "unclip" and no image encoder, as a load gives it).
    """
    built = {}

    def get(kind: str, dtype: torch.dtype = torch.float32, scheduler: str = "pndm"):
        key = (kind, dtype, scheduler if kind == "latent_diffusion" else None)
        if key not in built:
            if kind == "latent_diffusion":
                pipe = build_tiny_latent_diffusion(SEED, scheduler=scheduler)
            elif kind == "stable_unclip":
                parts = build_tiny_stable_unclip(SEED, prior_scheduler="unclip").components()
                unclip = get("unclip", dtype)
                shared = dict(
                    prior=unclip.prior, prior_text_encoder=unclip.text_encoder, prior_tokenizer=unclip.tokenizer
                )
                parts = {k: v for k, v in parts.items() if k not in ("image_encoder", "feature_extractor")} | shared
                pipe = StableUnCLIP(**parts | {"prior_scheduler": unclip.prior_scheduler})
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


# ----------------------------------------------------------------------------- inputs


@pytest.fixture(scope="session")
def init_image(latent_diffusion):
    return random_image(latent_diffusion.image_size, seed=1)


@pytest.fixture(scope="session")
def variation_images():
    # two sizes: the feature extractor must resize both to the image encoder's 32 px
    return [random_image(64, seed=2), random_image(48, seed=3)]
