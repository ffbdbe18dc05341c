"""What both pipelines share: the output record, per-step state, stage measurement, input checks.

Both architectures return the same `PipelineOutput`, so the comparison harness can put an unCLIP
image and a latent-diffusion image in the same table without knowing which produced which.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines import cuda_graphs as cuda_graphs_lib
from pipelines.loading import save_pipeline

MAX_SEED = 2**63  # torch.Generator.manual_seed takes any int64; keep seeds non-negative
# torch.compile modes that already capture CUDA graphs (cudagraph trees)
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")
MAX_STEPS = 1000  # the training schedules of Karlo and SD have 1000 timesteps
MAX_PROMPT_CHARS = 5_000  # CLIP reads 77 tokens (about 75 words); beyond this a prompt is a paste accident


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StageStats:
    """Cost of one pipeline stage."""

    name: str  # "text_encoder", "prior", "decoder", "super_res", "unet", "vae_decode", ...
    seconds: float  # wall time, CUDA synchronised at both ends
    peak_memory_bytes: int  # see memory_kind
    memory_kind: str  # "cuda_max_allocated" (VRAM) or "process_peak_rss" (whole process, CPU)


@dataclass(frozen=True)
class StepState:
    """What a per-step callback receives (k-diffusion style: the state of one denoising step)."""

    stage: str  # which denoising loop: "prior", "decoder", "super_res" or "unet"
    step: int  # 0-based index within the stage
    num_steps: int  # steps in this stage
    timestep: int  # the scheduler's timestep t
    sample: torch.Tensor  # x_t after this step, (B, ...)
    denoised: torch.Tensor  # predicted clean sample x_0 at this step, same shape as sample


StepCallback = Callable[[StepState], None]


@dataclass
class PipelineOutput:
    """Images of one call plus everything needed to log, reproduce and explain them."""

    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    seeds: list[int]  # seed of each image; image i is reproduced alone with seeds[i]
    prompts: list[str]  # prompt of each image (repeated for num_images_per_prompt)
    stages: list[StageStats]
    total_seconds: float
    device: str
    dtype: str
    # unCLIP only: the CLIP image embedding that conditioned the decoder, (N, D)
    image_embeds: torch.Tensor | None = None
    # the CLIP text embedding (projected) of each image's prompt, (N, D), where the model has one
    text_embeds: torch.Tensor | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def pil_images(self) -> list[Image.Image]:
        return [Image.fromarray(img) for img in to_uint8(self.images)]

    def stage(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages are {[s.name for s in self.stages]}")


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(np.uint8)


def guide(pred: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) on a model output batched [uncond, cond]."""
    uncond, cond = pred.chunk(2)
    return uncond + scale * (cond - uncond)


def postprocess(image: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) float32 numpy in [0, 1], as diffusers does."""
    image = (image * 0.5 + 0.5).clamp(0, 1)
    return image.cpu().permute(0, 2, 3, 1).float().numpy()


# ----------------------------------------------------------------------------- measurement


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024


def _reset_rss_peak() -> bool:
    # Linux resets VmHWM (peak RSS) when "5" is written to clear_refs; this makes the CPU
    # peak a per-stage figure rather than the peak of the whole process lifetime.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StageRecorder:
    """Times stages and records their peak memory; the pipelines call `stage(name)` around each."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stages: list[StageStats] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        start = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        if cuda:
            peak, kind = torch.cuda.max_memory_allocated(self.device), "cuda_max_allocated"
        else:
            peak, kind = _rss_peak_bytes(), "process_peak_rss"
        self.stages.append(StageStats(name, seconds, peak, kind))


# ----------------------------------------------------------------------------- input checks


def check_prompts(prompt: str | Sequence[str], name: str = "prompt") -> list[str]:
    """A prompt or a non-empty list of non-empty prompts -> list of prompts."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts:
        raise ValueError(f"`{name}` is empty: give a prompt string or a non-empty list of prompts")
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"`{name}` must hold strings, got {type(p).__name__}")
        if not p.strip():
            raise ValueError(f"`{name}` holds an empty prompt: every prompt needs some text")
        _check_length(p, name)
    return prompts


def _check_length(text: str, name: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"`{name}` is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} (CLIP reads about 75 words)")


def check_negative_prompts(negative_prompt: str | Sequence[str] | None, n: int) -> list[str]:
    """None -> n empty strings (the unconditional prompt); a string or n strings otherwise, each within the
    prompt's length limit."""
    if negative_prompt is None:
        return [""] * n
    if not isinstance(negative_prompt, (str, list, tuple)):
        raise ValueError(f"`negative_prompt` must be a string or a list of strings, got {type(negative_prompt).__name__}")
    negs = [negative_prompt] if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negs) == 1:
        negs = negs * n
    if len(negs) != n or not all(isinstance(p, str) for p in negs):
        raise ValueError(f"`negative_prompt` must be one string or {n} strings (one per prompt), got {len(negs)}")
    for p in negs:
        _check_length(p, "negative_prompt")
    return negs


def check_steps(steps: int, name: str, minimum: int = 1, stage: str | None = None) -> int:
    """A whole number of denoising steps in [minimum, MAX_STEPS]; `stage` names what needs the minimum."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"`{name}` must be a whole number, got {steps!r:.40}")
    if not minimum <= steps <= MAX_STEPS:
        needs = f" ({stage} needs at least {minimum})" if stage and steps < minimum and minimum > 1 else ""
        raise ValueError(f"`{name}` must be between {minimum} and {MAX_STEPS}, got {steps}{needs}")
    return int(steps)


def check_guidance(scale: float, name: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)):
        raise ValueError(f"`{name}` must be a number, got {scale!r:.40}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0 (1.0 turns guidance off), got {scale}")
    return float(scale)


def check_count(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`{name}` must be a whole number >= 1, got {n!r:.40}")
    return int(n)


def check_size(value: int, factor: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < factor or value % factor:
        raise ValueError(f"`{name}` must be a positive multiple of {factor} for this model, got {value!r:.40}")
    return int(value)


def check_seed(seed: int, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`{name}` must be a whole number, got {seed!r:.40}")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"`{name}` must be in [0, 2**63), got {seed}")
    return int(seed)


def make_generators(
    n: int, seed: int | Sequence[int] | None, generator: torch.Generator | list[torch.Generator] | None
) -> tuple[list[torch.Generator], list[int]]:
    """One CPU generator per image, so image i can be regenerated alone from seeds[i].

    `seed` is the first image's seed (image i gets seed + i) or one seed per image. With neither
    a seed nor a generator, a fresh seed is drawn and reported in the output.
    """
    if generator is not None:
        if seed is not None:
            raise ValueError("give either `seed` or `generator`, not both")
        gens = list(generator) if isinstance(generator, (list, tuple)) else None
        if gens is None:
            # A single generator serves the whole batch, as in diffusers; its seed is each image's seed
            # only in the sense that the batch is reproduced from it.
            return [generator], [generator.initial_seed()] * n
        if len(gens) != n:
            raise ValueError(f"got {len(gens)} generators for {n} images: give one per image")
        return gens, [g.initial_seed() for g in gens]
    if seed is None:
        seed = secrets.randbelow(MAX_SEED - n)
    if isinstance(seed, (list, tuple)):
        seeds = [check_seed(s) for s in seed]
    else:
        first = check_seed(seed)
        seeds = [check_seed(first + i, f"seed of image {i} (seed + {i})") for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} images: give one seed, or one per image")
    return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds


def generator_arg(gens: list[torch.Generator]) -> torch.Generator | list[torch.Generator]:
    """diffusers' randn_tensor takes a generator or a list of one per batch item."""
    return gens[0] if len(gens) == 1 else gens


def repeat_prompts(prompts: list[str], num_images_per_prompt: int) -> list[str]:
    return [p for p in prompts for _ in range(num_images_per_prompt)]


# ----------------------------------------------------------------------------- the pipelines' shared frame


class GPUOutOfMemoryError(RuntimeError):
    """A generation did not fit in GPU memory; the cache was emptied and the pipeline still works."""


class NonFiniteError(ValueError):
    """A stage produced NaN or inf (extreme guidance, float16 overflow): no image is made from it."""


def check_finite(values: torch.Tensor, stage: str, settings: dict[str, object]) -> torch.Tensor:
    """`values` as they are if every element is finite, else a NonFiniteError naming the stage and its settings.
    One reduction per stage (a device sync on a GPU), never per step."""
    if not bool(torch.isfinite(values).all()):
        given = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())
        raise NonFiniteError(
            f"the {stage} stage produced NaN or infinite values ({given}, {str(values.dtype).removeprefix('torch.')}): "
            "lower the guidance scale, or run in float32 or bfloat16 if float16 overflowed; no image was made")
    return values


def oom_guard(method):
    """Turn a CUDA out-of-memory error into a clear error, after freeing the cache for the next call."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            free = ""
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
                free_b, total_b = torch.cuda.mem_get_info(self.device)
                free = f" ({free_b / 2**30:.1f} of {total_b / 2**30:.1f} GiB free after emptying the cache)"
            raise GPUOutOfMemoryError(
                f"out of GPU memory in {type(self).__name__}.{method.__name__}{free}: use fewer images per call, "
                "a smaller size, or enable_model_cpu_offload()"
            ) from None

    return wrapper


class Pipeline:
    """Components by diffusers' names, and what both architectures do alike with them:
    device and dtype, saving, CPU offload, channels_last and torch.compile."""

    component_names: tuple[str, ...] = ()
    denoiser_names: tuple[str, ...] = ()  # the models each denoising loop calls many times
    pipeline_class_name: str = ""  # the `_class_name` of model_index.json
    _offload_device: torch.device | None = None
    _graph_pool: tuple | None = None  # the memory pool the denoisers' CUDA graphs share

    def components(self) -> dict[str, object]:
        return {n: getattr(self, n) for n in self.component_names if getattr(self, n, None) is not None}

    def _inference_only(self) -> None:
        """Modules built from configs start in training mode (dropout on, and diffusers' ResnetBlock2D
        lays out its input differently when training); a pipeline only ever samples."""
        for module in self.modules().values():
            module.eval()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {n: c for n, c in self.components().items() if isinstance(c, torch.nn.Module)}

    @property
    def device(self) -> torch.device:
        """Where the stages compute (with CPU offload, the GPU, although weights rest on the CPU)."""
        return self._offload_device or next(iter(self.modules().values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.modules().values())).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self._offload_device = None
        self.disable_cuda_graphs()  # a graph replays on the weights' old addresses
        for module in self.modules().values():
            # diffusers warns on any dtype argument, even an unchanged one
            module.to(device) if dtype is None else module.to(device=device, dtype=dtype)
        return self

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_pipeline(directory, self.pipeline_class_name, self.components())

    def _output(self, image: torch.Tensor, seeds: list[int], prompts: list[str], recorder: StageRecorder, start: float, **extra) -> PipelineOutput:
        """The call's output: images in [0, 1] as numpy, and what it cost since `start`."""
        return PipelineOutput(
            images=postprocess(image), seeds=seeds, prompts=prompts, stages=recorder.stages,
            total_seconds=time.perf_counter() - start, device=str(self.device), dtype=str(self.dtype).removeprefix("torch."), **extra,
        )

    def parameter_counts(self) -> dict[str, int]:
        return {n: sum(p.numel() for p in m.parameters()) for n, m in self.modules().items()}

    # -- GPU path

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep weights on the CPU; each stage brings its own models to `device` and sends them back.

        Peak GPU memory becomes that of the largest stage instead of the whole pipeline, for GPUs
        too small to hold it (Karlo fp16 is about 7 GB), at the price of host-to-GPU copies.
        """
        self.to("cpu")
        self._offload_device = torch.device(device)

    def on_device(self, *names: str):
        """Context for a stage using the named models: a no-op unless CPU offload is on."""
        if self._offload_device is None:
            return nullcontext()
        return _placed([getattr(self, n) for n in names], self._offload_device)

    def optimize(self, *, channels_last: bool = True, compile: bool = False, compile_mode: str | None = None,
                 cuda_graphs: bool = False) -> None:
        """GPU speed-ups: channels_last convolutions (U-Nets, VAE) and, for the denoisers, optionally
        torch.compile (tens of seconds per model on the first call) and CUDA graphs (three eager
        calls' time per model and input shape; see pipelines.cuda_graphs). With both, the compiled forward is what
        the graph records, so `compile_mode` must be one that captures no graphs of its own."""
        if cuda_graphs:
            if compile and compile_mode in GRAPHING_COMPILE_MODES:
                raise ValueError(f"compile_mode {compile_mode!r} captures CUDA graphs itself: use it without cuda_graphs, "
                                 "or cuda_graphs with compile_mode None or 'max-autotune-no-cudagraphs'")
            if any(getattr(m, "_compiled_call_impl", None) is not None for n, m in self.modules().items() if n in self.denoiser_names):
                # The compiled call would trace into the graphs' replay.
                raise ValueError("the denoisers were compiled without CUDA graphs; build the pipeline again to add them")
            if self._offload_device is not None:
                raise ValueError("CUDA graphs need the weights to stay on the GPU: they cannot go with enable_model_cpu_offload()")
            if self.device.type != "cuda":
                raise ValueError(f"CUDA graphs need a CUDA device; this pipeline is on {self.device}: call .to('cuda') first")
        self.disable_cuda_graphs()
        if cuda_graphs:
            self._graph_pool = torch.cuda.graph_pool_handle()
        for name, module in self.modules().items():
            if channels_last and any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
                module.to(memory_format=torch.channels_last)
            if name not in self.denoiser_names:
                continue
            if cuda_graphs:
                forward = torch.compile(module.forward, mode=compile_mode) if compile else module.forward
                cuda_graphs_lib.install(module, self._graph_pool, forward)
            elif compile:
                module.compile(mode=compile_mode)

    def disable_cuda_graphs(self) -> None:
        """Back to the denoisers' own forward (a compiled one stays compiled)."""
        for module in self.modules().values():
            cuda_graphs_lib.uninstall(module)
        self._graph_pool = None

    def cuda_graph_count(self) -> int:
        """Graphs captured so far across the denoisers: one per model and input signature."""
        return sum(len(g.graphs) for m in self.modules().values() if (g := cuda_graphs_lib.installed(m)))


def uses(*names: str):
    """Mark a stage method with the models it runs, so CPU offload can bring them to the GPU."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            with self.on_device(*names):
                return method(self, *args, **kwargs)

        return wrapper

    return decorate


@contextmanager
def _placed(modules: list[torch.nn.Module], device: torch.device) -> Iterator[None]:
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        for m in modules:
            m.to("cpu")
