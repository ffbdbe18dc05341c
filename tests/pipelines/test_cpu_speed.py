"""The CPU speed-ups (pipelines.cpu_speed, pipelines.traced) keep the lab's images: each technique alone and the
lab preset's default against the eager pipelines, same prompt and seed."""

from __future__ import annotations

import pytest
import torch

from comparisons.presets import FAST_CPU, load_models
from comparisons.settings import Settings
from pipelines.cpu_speed import CPUSpeed
from pipelines.traced import Traced
from tests.helpers import assert_images_close

PROMPT = "a red circle above a blue square"
FEW = Settings(prior_steps=3, decoder_steps=3, super_res_steps=2, steps=3)


@pytest.fixture(scope="module")
def lab():
    return load_models("lab", device="cpu", fast_cpu=False)


def _images(pipe, architecture: str, speed: CPUSpeed, settings: Settings, seeds=(0,)):
    pipe.optimize_cpu(speed)
    try:
        return pipe([PROMPT] * len(seeds), seed=list(seeds), **settings.pipeline_kwargs(architecture)).images
    finally:
        pipe.optimize_cpu(CPUSpeed())


@pytest.mark.parametrize("architecture", ["unclip", "latent_diffusion"])
def test_the_default_gives_eager_images_at_default_steps(lab, architecture):
    pipe = lab[architecture]
    eager = _images(pipe, architecture, CPUSpeed(), Settings())
    assert_images_close(_images(pipe, architecture, FAST_CPU, Settings()), eager, atol=1e-4)


@pytest.mark.parametrize("architecture", ["unclip", "latent_diffusion"])
@pytest.mark.parametrize(
    "speed", [CPUSpeed(trace=True), CPUSpeed(fast_attention=True), CPUSpeed(onednn_off=("unet", "decoder"))]
)
def test_each_technique_alone_gives_eager_images(lab, architecture, speed):
    pipe = lab[architecture]
    eager = _images(pipe, architecture, CPUSpeed(), FEW, seeds=(0, 1))
    assert_images_close(_images(pipe, architecture, speed, FEW, seeds=(0, 1)), eager, atol=1e-4)


def test_traces_are_kept_per_signature_and_dropped_by_to(lab):
    pipe = lab["latent_diffusion"].to("cpu")  # no traces from the tests before
    pipe.optimize_cpu(CPUSpeed(trace=True))
    traced = pipe.unet.forward
    assert isinstance(traced, Traced)
    pipe(PROMPT, seed=0, **FEW.pipeline_kwargs("latent_diffusion"))
    assert len(traced.traces) == 1  # every step one signature: the timestep is an input, not a constant
    pipe.optimize_cpu(CPUSpeed())
    assert "forward" not in pipe.unet.__dict__
    pipe.optimize_cpu(CPUSpeed(trace=True))
    assert pipe.unet.forward is traced and len(traced.traces) == 1  # off and on again: nothing re-traced
    pipe([PROMPT] * 2, seed=[0, 1], **FEW.pipeline_kwargs("latent_diffusion"))
    assert len(traced.traces) == 2  # a batch of two is another shape
    pipe.to("cpu")
    assert pipe.cpu_speed == CPUSpeed() and "forward" not in pipe.unet.__dict__


def test_the_memory_meter_sees_the_eager_models(lab):
    pipe = lab["latent_diffusion"]
    kwargs = FEW.pipeline_kwargs("latent_diffusion")
    eager = pipe.stage_memory(lambda: pipe(PROMPT, seed=0, **kwargs))
    pipe.optimize_cpu(FAST_CPU)
    try:
        pipe(PROMPT, seed=0, **kwargs)  # traced first, so a trace exists that the meter must not use
        assert pipe.stage_memory(lambda: pipe(PROMPT, seed=0, **kwargs)) == eager
    finally:
        pipe.optimize_cpu(CPUSpeed())


def test_attention_keeps_diffusers_forward_for_keyword_arguments(lab):
    from diffusers.models.attention_processor import Attention

    pipe = lab["latent_diffusion"]
    pipe.optimize_cpu(CPUSpeed(fast_attention=True))
    try:
        attn = next(m for m in pipe.unet.modules() if isinstance(m, Attention))
        x = torch.randn(1, 4, attn.query_dim)
        with torch.inference_mode():
            assert torch.equal(attn(x), type(attn).forward(attn, x))
            assert torch.equal(attn(x, scale=1.0), type(attn).forward(attn, x))  # unknown keyword: dropped, warned
    finally:
        pipe.optimize_cpu(CPUSpeed())


def test_speed_ups_are_refused_off_the_cpu(lab):
    pipe = lab["unclip"]
    pipe.enable_model_cpu_offload("cuda")  # weights stay on the CPU, stages would compute on the GPU
    try:
        with pytest.raises(ValueError, match="CPU speed-ups are for pipelines on the CPU"):
            pipe.optimize_cpu(FAST_CPU)
    finally:
        pipe.to("cpu")


def test_the_lab_preset_runs_fast_by_default():
    pipes = load_models("lab", device="cpu")
    assert all(p.cpu_speed == FAST_CPU for p in pipes.values())
    assert all(isinstance(p.unet.forward, Traced) for p in [pipes["latent_diffusion"]])


def test_what_watches_the_eager_forward_still_sees_it(lab):
    """A forward hook or another attention processor (the app's cross-attention recorder) runs the eager forward:
    a trace would skip them without a word."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = lab["latent_diffusion"]
    kwargs = FEW.pipeline_kwargs("latent_diffusion")
    pipe.optimize_cpu(FAST_CPU)
    try:
        pipe(PROMPT, seed=0, **kwargs)  # traced
        calls = []
        handle = pipe.unet.conv_in.register_forward_hook(lambda *_: calls.append(1))
        pipe(PROMPT, seed=0, **kwargs)
        handle.remove()
        assert len(calls) == 3  # one per step

        class Counting(AttnProcessor2_0):
            def __call__(self, *args, **kw):
                calls.append(2)
                return super().__call__(*args, **kw)

        attn2 = next(m for name, m in pipe.unet.named_modules() if name.endswith("attn2"))
        original = attn2.processor
        attn2.set_processor(Counting())
        try:
            pipe(PROMPT, seed=0, **kwargs)
        finally:
            attn2.set_processor(original)
        assert calls.count(2) == 3
        assert not pipe.unet.forward.instrumented()  # the original processor back: traced again
    finally:
        pipe.optimize_cpu(CPUSpeed())


def test_saved_traces_load_in_a_fresh_pipeline_and_a_broken_file_is_traced_again(tmp_path, monkeypatch):
    speed = CPUSpeed(trace=True, trace_cache=tmp_path)
    first = load_models("lab", device="cpu", fast_cpu=False)["latent_diffusion"]
    made = _images(first, "latent_diffusion", speed, FEW)
    (saved,) = tmp_path.glob("UNet2DConditionModel-*.pt")
    fresh = load_models("lab", device="cpu", fast_cpu=False)["latent_diffusion"]

    def no_tracing(*args, **kwargs):
        raise AssertionError("traced again, though the cache holds the trace")

    with monkeypatch.context() as m:
        m.setattr(torch.jit, "trace", no_tracing)
        assert_images_close(_images(fresh, "latent_diffusion", speed, FEW), made, atol=0)
    other = fresh.to("cpu")  # new Traced objects: nothing in memory
    with torch.no_grad():
        next(other.unet.parameters()).add_(1e-3)  # other weights: another file, never the stale graph
    _images(other, "latent_diffusion", speed, FEW)
    assert len(list(tmp_path.glob("UNet2DConditionModel-*.pt"))) == 2
    saved.write_bytes(b"not a trace")
    broken = load_models("lab", device="cpu", fast_cpu=False)["latent_diffusion"]
    assert_images_close(_images(broken, "latent_diffusion", speed, FEW), made, atol=0)
    assert saved.stat().st_size > 1000  # rewritten
