"""The GPU path: offload, channels_last, VAE slicing, the out-of-memory guard.

The CPU tests check that each switch leaves the images as they were; the CUDA tests (skipped
without a GPU) check fp16, offload's memory saving and a real out-of-memory error.
"""

import numpy as np
import pytest
import torch

from pipelines.common import GPUOutOfMemoryError
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
LD_ARGS = dict(num_inference_steps=3, seed=5)
UNCLIP_ARGS = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2, seed=5)


def test_channels_last_and_vae_slicing_keep_the_image():
    ld = build_tiny_latent_diffusion(1)
    before = ld(["a red circle", "a blue square"], **LD_ARGS).images
    ld.optimize(channels_last=True)
    ld.enable_vae_slicing()
    after = ld(["a red circle", "a blue square"], **LD_ARGS).images
    assert ld.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_vae_tiling_decodes_large_latents():
    ld = build_tiny_latent_diffusion(1)
    ld.enable_vae_tiling()
    ld.vae.tile_sample_min_size, ld.vae.tile_latent_min_size = 32, 16  # force tiles at this tiny size
    out = ld("a red circle", height=96, width=96, **LD_ARGS)
    assert out.images.shape == (1, 96, 96, 3) and np.isfinite(out.images).all()


def test_offload_brings_each_stage_its_models(monkeypatch):
    import pipelines.common as common

    unclip = build_tiny_unclip(2)
    before = unclip("a red circle", **UNCLIP_ARGS).images
    placed = []
    real_placed = common._placed
    monkeypatch.setattr(common, "_placed", lambda modules, device: placed.append(modules) or real_placed(modules, device))
    unclip.enable_model_cpu_offload("cpu")
    after = unclip("a red circle", **UNCLIP_ARGS).images
    expected = [[unclip.text_encoder], [unclip.prior], [unclip.text_proj, unclip.decoder], [unclip.super_res_first, unclip.super_res_last]]
    assert placed == expected
    assert unclip.device == torch.device("cpu")
    np.testing.assert_array_equal(after, before)


def test_out_of_memory_becomes_a_clear_error_and_the_next_call_works(monkeypatch):
    ld = build_tiny_latent_diffusion(1)
    real = ld.unet.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(ld.unet, "forward", flaky)
    with pytest.raises(GPUOutOfMemoryError, match="out of GPU memory in LatentDiffusion.__call__"):
        ld("a red circle", **LD_ARGS)
    assert ld("a red circle", **LD_ARGS).images.shape == (1, 64, 64, 3)


@cuda
def test_cuda_fp16_matches_diffusers_and_offload_saves_memory():
    from diffusers import StableDiffusionPipeline

    ld = build_tiny_latent_diffusion(1).to("cuda", torch.float16)
    ref = StableDiffusionPipeline(**ld.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ours = ld("a red circle", **LD_ARGS)
    theirs = ref("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="np").images
    assert ours.dtype == "float16" and ours.stages[0].memory_kind == "cuda_max_allocated"
    np.testing.assert_allclose(ours.images, theirs, atol=1e-3)
    resident_peak = max(s.peak_memory_bytes for s in ours.stages)
    ld.enable_model_cpu_offload("cuda")
    offloaded = ld("a red circle", **LD_ARGS)
    assert next(ld.unet.parameters()).device.type == "cpu"
    assert max(s.peak_memory_bytes for s in offloaded.stages) < resident_peak
    np.testing.assert_allclose(offloaded.images, ours.images, atol=1e-3)


@cuda
def test_real_cuda_out_of_memory_then_next_call_works():
    ld = build_tiny_latent_diffusion(1).to("cuda")
    with pytest.raises(GPUOutOfMemoryError, match="free after emptying the cache"):
        ld("a red circle", height=2048, width=2048, num_images_per_prompt=256, num_inference_steps=1, seed=0)
    assert ld("a red circle", **LD_ARGS).images.shape == (1, 64, 64, 3)
