"""The GPU path: offload, channels_last, VAE slicing, CUDA graphs, the out-of-memory guard.

The CPU tests check that each switch leaves the images as they were and that CUDA graphs refuse
what they cannot do; the CUDA tests (skipped without a GPU) check fp16, offload's memory saving,
graph replays against eager images, and a real out-of-memory error.
"""

import numpy as np
import pytest
import torch

from pipelines import cuda_graphs
from pipelines.base import GPUOutOfMemoryError
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
    import pipelines.base as base

    unclip = build_tiny_unclip(2)
    before = unclip("a red circle", **UNCLIP_ARGS).images
    placed = []
    real_placed = base._placed
    monkeypatch.setattr(base, "_placed", lambda modules, dev: placed.append(modules) or real_placed(modules, dev))
    unclip.enable_model_cpu_offload("cpu")
    after = unclip("a red circle", **UNCLIP_ARGS).images
    expected = [
        [unclip.text_encoder],
        [unclip.prior],
        [unclip.text_proj, unclip.decoder],
        [unclip.super_res_first, unclip.super_res_last],
    ]
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


def test_cuda_graphs_refuse_what_they_cannot_do():
    ld = build_tiny_latent_diffusion(1)
    with pytest.raises(ValueError, match="captures CUDA graphs itself"):
        ld.optimize(compile=True, compile_mode="reduce-overhead", cuda_graphs=True)
    with pytest.raises(ValueError, match="need a CUDA device; this pipeline is on cpu"):
        ld.optimize(cuda_graphs=True)
    ld.enable_model_cpu_offload("cpu")
    with pytest.raises(ValueError, match="cannot go with enable_model_cpu_offload"):
        ld.optimize(cuda_graphs=True)
    compiled = build_tiny_latent_diffusion(1)
    compiled.optimize(compile=True)  # lazy: nothing compiles until a call
    with pytest.raises(ValueError, match="compiled without CUDA graphs"):
        compiled.optimize(cuda_graphs=True)
    with pytest.raises(ValueError, match="on a CUDA device"):
        cuda_graphs.install(ld.unet, pool=None)


def test_moving_a_pipeline_drops_its_graphs():
    ld = build_tiny_latent_diffusion(1)
    eager = ld("a red circle", **LD_ARGS).images
    # Installed by hand (capture needs CUDA): a graph would replay on the weights' old addresses.
    ld.unet.forward = cuda_graphs.CUDAGraphed(ld.unet.forward, torch.device("cuda"), pool=None)
    assert cuda_graphs.installed(ld.unet) is not None and ld.cuda_graph_count() == 0
    ld.to("cpu")
    assert cuda_graphs.installed(ld.unet) is None
    np.testing.assert_array_equal(ld("a red circle", **LD_ARGS).images, eager)


class ReplayOnCPU:
    """Stands in for a captured CUDA graph: replay re-runs the recorded call on the static inputs and
    writes the result into the static output, which is what a graph replay does to that memory."""

    def __init__(self, fn, output):
        self.fn, self.output = fn, output

    def replay(self):
        for static, fresh in zip(
            torch.utils._pytree.tree_leaves(self.output), torch.utils._pytree.tree_leaves(self.fn())
        ):
            static.copy_(fresh)


def graph_on_cpu(monkeypatch, pipe):
    monkeypatch.setattr(cuda_graphs, "record", lambda fn, device, pool: (ReplayOnCPU(fn, out := fn()), out))
    for name in pipe.denoiser_names:
        module = getattr(pipe, name)
        module.forward = cuda_graphs.CUDAGraphed(module.forward, torch.device("cpu"), pool=None)


@pytest.mark.parametrize(
    "build, args", [(build_tiny_latent_diffusion, LD_ARGS), (build_tiny_unclip, UNCLIP_ARGS)], ids=["ld", "unclip"]
)
def test_graph_replays_feed_each_step_its_inputs(monkeypatch, build, args):
    pipe = build(1)
    eager = pipe(["a red circle", "a blue square"], **args).images
    graph_on_cpu(monkeypatch, pipe)
    graphed = pipe(["a red circle", "a blue square"], **args).images
    np.testing.assert_array_equal(graphed, eager)  # stale static inputs would replay the first step's output
    assert pipe.cuda_graph_count() == len(pipe.denoiser_names)  # one signature per denoiser
    np.testing.assert_array_equal(pipe(["a red circle", "a blue square"], **args).images, eager)
    assert pipe.cuda_graph_count() == len(pipe.denoiser_names)  # replayed, not captured again
    pipe("a red circle", **args)
    assert pipe.cuda_graph_count() == 2 * len(pipe.denoiser_names)  # a new batch size is a new signature


def test_a_replay_leaves_earlier_outputs_alone(monkeypatch):
    ld = build_tiny_latent_diffusion(1)
    graph_on_cpu(monkeypatch, ld)
    hidden = torch.randn(1, 77, ld.unet.config.cross_attention_dim)
    with torch.inference_mode():
        first = ld.unet(torch.randn(1, 4, 8, 8), torch.tensor(10), encoder_hidden_states=hidden).sample
        kept = first.clone()
        ld.unet(torch.randn(1, 4, 8, 8), torch.tensor(500), encoder_hidden_states=hidden)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)


@cuda
def test_cuda_fp16_matches_diffusers_and_offload_saves_memory():
    from diffusers import StableDiffusionPipeline

    ld = build_tiny_latent_diffusion(1).to("cuda", torch.float16)
    ref = StableDiffusionPipeline(
        **ld.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    ours = ld("a red circle", **LD_ARGS)
    theirs = ref(
        "a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="np"
    ).images
    assert ours.dtype == "float16" and ours.stages[0].memory_kind == "cuda_max_allocated"
    np.testing.assert_allclose(ours.images, theirs, atol=1e-3)
    resident_peak = max(s.peak_memory_bytes for s in ours.stages)
    ld.enable_model_cpu_offload("cuda")
    offloaded = ld("a red circle", **LD_ARGS)
    assert next(ld.unet.parameters()).device.type == "cpu"
    assert max(s.peak_memory_bytes for s in offloaded.stages) < resident_peak
    np.testing.assert_allclose(offloaded.images, ours.images, atol=1e-3)


@cuda
def test_cuda_fp16_unclip_matches_diffusers():
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

    unclip = build_tiny_unclip(2).to("cuda", torch.float16)
    ref = UnCLIPPipeline(**unclip.components())
    ref.set_progress_bar_config(disable=True)
    ours = unclip("a red circle", **UNCLIP_ARGS).images
    settings = {k: v for k, v in UNCLIP_ARGS.items() if k != "seed"}
    theirs = ref("a red circle", generator=torch.Generator().manual_seed(5), output_type="np", **settings).images
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    np.testing.assert_allclose(unclip("a red circle", **UNCLIP_ARGS).images, ours, atol=2e-3)  # and run to run


@cuda
def test_real_cuda_out_of_memory_then_next_call_works():
    ld = build_tiny_latent_diffusion(1).to("cuda")
    with pytest.raises(GPUOutOfMemoryError, match="free after emptying the cache"):
        ld("a red circle", height=2048, width=2048, num_images_per_prompt=256, num_inference_steps=1, seed=0)
    assert ld("a red circle", **LD_ARGS).images.shape == (1, 64, 64, 3)


@cuda
def test_cuda_graphs_replay_the_eager_images_for_us_and_diffusers():
    from diffusers import StableDiffusionPipeline

    ld = build_tiny_latent_diffusion(1).to("cuda", torch.float16)
    ref = StableDiffusionPipeline(
        **ld.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    ref.set_progress_bar_config(disable=True)
    eager = ld(["a red circle", "a blue square"], **LD_ARGS).images
    ld.optimize(cuda_graphs=True)
    graphed = ld(["a red circle", "a blue square"], **LD_ARGS).images
    np.testing.assert_allclose(graphed, eager, atol=2e-3)
    assert ld.cuda_graph_count() == 1  # one U-Net signature: batch 4 (guidance doubles the batch of 2)
    assert ld("a red circle", **LD_ARGS).images.shape == (1, 64, 64, 3) and ld.cuda_graph_count() == 2
    again = ld(["a red circle", "a blue square"], **LD_ARGS).images
    np.testing.assert_array_equal(again, graphed)  # a replay, not a new capture
    assert ld.cuda_graph_count() == 2
    # diffusers' pipeline shares the U-Net, so it replays graphs too (its own call signature).
    theirs = ref(
        ["a red circle", "a blue square"],
        num_inference_steps=3,
        generator=[torch.Generator().manual_seed(s) for s in (5, 6)],
        output_type="np",
    ).images
    np.testing.assert_allclose(theirs, graphed, atol=2e-3)
    assert ld.cuda_graph_count() == 3
    ld.to("cuda")
    assert ld.cuda_graph_count() == 0
    np.testing.assert_allclose(ld(["a red circle", "a blue square"], **LD_ARGS).images, eager, atol=2e-3)


@cuda
def test_cuda_graphs_cover_every_unclip_denoiser():
    unclip = build_tiny_unclip(2).to("cuda", torch.float16)
    eager = unclip("a red circle", **UNCLIP_ARGS).images
    unclip.optimize(cuda_graphs=True)
    graphed = unclip("a red circle", **UNCLIP_ARGS).images
    np.testing.assert_allclose(graphed, eager, atol=2e-3)
    assert all(cuda_graphs.installed(getattr(unclip, n)) for n in unclip.denoiser_names)
    assert unclip.cuda_graph_count() == 4  # prior, decoder, super-res first and last
