"""The frame both pipelines share: components by diffusers' names, device and dtype, saving, CPU
offload, GPU speed-ups, and the bookkeeping of one call (its generators, stage timings, output).

An architecture subclasses `Pipeline`, names its components, and writes its stages and its
`__call__`; what is the same in both architectures is written here once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from pipelines import cpu_speed as cpu_speed_lib
from pipelines import cuda_graphs as cuda_graphs_lib
from pipelines.checks import check_finite
from pipelines.devices import cpu_kernels
from pipelines.loading import save_pipeline
from pipelines.measure import StageRecorder, TensorMeter
from pipelines.outputs import PipelineOutput, postprocess
from pipelines.seeds import Generators, generator_arg, make_generators

# torch.compile modes that already capture CUDA graphs (cudagraph trees)
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")


def prepare_latents(
    shape: tuple[int, ...], scheduler, generator: Generators, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A denoising loop's starting noise at its scheduler's initial scale (diffusers' prepare_latents): the one draw
    every loop of every pipeline starts from, from the call's generators."""
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma


def guide(pred: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022) on a model output batched [uncond, cond]."""
    uncond, cond = pred.chunk(2)
    return uncond + scale * (cond - uncond)


class GPUOutOfMemoryError(RuntimeError):
    """A generation did not fit in GPU memory; the cache was emptied and the pipeline still works."""


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


def uses(*names: str):
    """Mark a stage method with the models it runs, so CPU offload can bring them to the GPU."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if self._meter is not None:  # a memory pass: the stage's weights count
                self._meter.runs(getattr(self, n) for n in names if getattr(self, n, None) is not None)
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


@dataclass(frozen=True)
class Run:
    """One call in progress: what its stages draw from, and what it has cost so far."""

    generator: Generators  # what every stage's random draws take, one generator per image or one for all
    seeds: list[int]  # seed of each image, for the output
    recorder: StageRecorder  # each stage's time and peak memory
    start: float  # time.perf_counter() when the call began

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Context that measures the stage `name`."""
        return self.recorder.stage(name)


class Pipeline:
    """Components by diffusers' names, and what both architectures do alike with them:
    device and dtype, saving, CPU offload, channels_last and torch.compile."""

    component_names: tuple[str, ...] = ()
    denoiser_names: tuple[str, ...] = ()  # the models each denoising loop calls many times
    pipeline_class_name: str = ""  # the `_class_name` of model_index.json
    _offload_device: torch.device | None = None
    _graph_pool: tuple | None = None  # the memory pool the denoisers' CUDA graphs share
    _meter: TensorMeter | None = None  # set during `stage_memory`'s pass
    cpu_speed: cpu_speed_lib.CPUSpeed = cpu_speed_lib.CPUSpeed()  # the CPU speed-ups on (optimize_cpu)
    _traces: dict | None = None  # denoiser name -> its pipelines.traced.Traced, kept across optimize_cpu calls

    def components(self) -> dict[str, object]:
        return {n: getattr(self, n) for n in self.component_names if getattr(self, n, None) is not None}

    def _inference_only(self) -> None:
        """Modules built from configs start in training mode (dropout on, and diffusers' ResnetBlock2D
        lays out its input differently when training); a pipeline only ever samples."""
        for module in self.modules().values():
            module.eval()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {n: c for n, c in self.components().items() if isinstance(c, torch.nn.Module)}

    def _first_weight(self) -> torch.Tensor:
        # a parameter, not the module's .device: any torch module serves, not only diffusers' and transformers'
        return next(p for m in self.modules().values() for p in m.parameters())

    @property
    def device(self) -> torch.device:
        """Where the stages compute (with CPU offload, the GPU, although weights rest on the CPU)."""
        return self._offload_device or self._first_weight().device

    @property
    def dtype(self) -> torch.dtype:
        return self._first_weight().dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        self._offload_device = None
        self.disable_cuda_graphs()  # a graph replays on the weights' old addresses
        if self.cpu_speed != cpu_speed_lib.CPUSpeed():  # a trace holds the weights as they were
            self.optimize_cpu(cpu_speed_lib.CPUSpeed())
        self._traces = None
        for module in self.modules().values():
            # torch's own `to`: diffusers' warns on any dtype argument, even an unchanged one, and Stable unCLIP's
            # image normaliser's takes other argument names
            torch.nn.Module.to(module, device) if dtype is None else torch.nn.Module.to(module, device, dtype)
        return self

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_pipeline(directory, self.pipeline_class_name, self.components())

    def parameter_counts(self) -> dict[str, int]:
        return {n: sum(p.numel() for p in m.parameters()) for n, m in self.modules().items()}

    # -- one call: its start and its output

    def _begin(self, n_images: int, seed: int | Sequence[int] | None, generator: Generators | None) -> Run:
        """The end of a call's input checks: its generators from `seed` or `generator`, a stage recorder."""
        start = time.perf_counter()
        gens, seeds = make_generators(n_images, seed, generator)
        return Run(generator_arg(gens), seeds, StageRecorder(self.device, self._meter), start)

    def _output(self, image: torch.Tensor, run: Run, prompts: list[str], **extra) -> PipelineOutput:
        """The call's output: images in [0, 1] as numpy, and what it cost since the run began."""
        return PipelineOutput(
            images=postprocess(image),
            seeds=run.seeds,
            prompts=prompts,
            stages=run.recorder.stages,
            total_seconds=time.perf_counter() - run.start,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            threads=torch.get_num_threads(),
            cpu_kernels=cpu_kernels(),
            cpu_speed=self.cpu_speed.label,
            **extra,
        )

    def stage_memory(self, call: Callable[[], PipelineOutput]) -> dict[str, int]:
        """Bytes each stage of `call()` (a call of this pipeline on the CPU) allocates: its tensors' peak above
        what was alive at its start, plus the weights of the models it runs. A pass of its own: the meter sees
        every op, so its timings are not the pipeline's."""
        if self.device.type != "cpu":
            raise ValueError(f"stage_memory measures CPU calls; on {self.device} rows keep CUDA's max allocated")
        self._meter = meter = TensorMeter()
        try:
            with meter:
                output = call()
        finally:
            self._meter = None
        return {s.name: s.peak_memory_bytes for s in output.stages}

    # -- CPU speed-ups

    def optimize_cpu(self, speed: cpu_speed_lib.CPUSpeed) -> None:
        """Run with the CPU speed-ups `speed` names (pipelines.cpu_speed), and only those: `CPUSpeed()` is eager
        again. Traces are kept while the pipeline stays where it is, so switching back and forth re-traces nothing."""
        if speed != cpu_speed_lib.CPUSpeed() and (self.device.type != "cpu" or self._offload_device is not None):
            raise ValueError(f"CPU speed-ups are for pipelines on the CPU; this one runs on {self.device}")
        if self._traces is None:
            self._traces = {}
        cpu_speed_lib.apply(self.modules(), self.denoiser_names, speed, self._traces)
        self.cpu_speed = speed

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

    def optimize(
        self,
        *,
        channels_last: bool = True,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        """GPU speed-ups: channels_last convolutions (U-Nets, VAE) and, for the denoisers, optionally
        torch.compile (tens of seconds per model on the first call) and CUDA graphs (three eager
        calls' time per model and input shape; see pipelines.cuda_graphs). With both, the compiled forward is
        what the graph records, so `compile_mode` must be one that captures no graphs of its own."""
        if cuda_graphs:
            self._check_graphable(compile, compile_mode)
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

    def _check_graphable(self, compile: bool, compile_mode: str | None) -> None:
        """Refuse CUDA graphs where they cannot work, before anything is changed."""
        if compile and compile_mode in GRAPHING_COMPILE_MODES:
            raise ValueError(
                f"compile_mode {compile_mode!r} captures CUDA graphs itself: use it without "
                "cuda_graphs, or cuda_graphs with compile_mode None or 'max-autotune-no-cudagraphs'"
            )
        denoisers = [m for n, m in self.modules().items() if n in self.denoiser_names]
        if any(getattr(m, "_compiled_call_impl", None) is not None for m in denoisers):
            # The compiled call would trace into the graphs' replay.
            raise ValueError("the denoisers were compiled without CUDA graphs; build the pipeline again to add them")
        if self._offload_device is not None:
            raise ValueError(
                "CUDA graphs need the weights to stay on the GPU: they cannot go with enable_model_cpu_offload()"
            )
        if self.device.type != "cuda":
            raise ValueError(
                f"CUDA graphs need a CUDA device; this pipeline is on {self.device}: call .to('cuda') first"
            )

    def disable_cuda_graphs(self) -> None:
        """Back to the denoisers' own forward (a compiled one stays compiled)."""
        for module in self.modules().values():
            cuda_graphs_lib.uninstall(module)
        self._graph_pool = None

    def cuda_graph_count(self) -> int:
        """Graphs captured so far across the denoisers: one per model and input signature."""
        return sum(len(g.graphs) for m in self.modules().values() if (g := cuda_graphs_lib.installed(m)))


class DecodesLatents:
    """What the latent pipelines share: their VAE's decoder, and its stage of a call, timed and checked."""

    @torch.inference_mode()
    @uses("vae")
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE-decode (B, 4, h, w) latents to images (B, 3, h*f, w*f) in [-1, 1]."""
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def decode_stage(self, run: Run, latents: torch.Tensor) -> torch.Tensor:
        """A call's vae_decode stage: `decode`, timed, and refused if it made NaN or inf."""
        with run.stage("vae_decode"):
            image = self.decode(latents)
        return check_finite(image, "vae_decode", {})


class TakesImageEmbeddings:
    """What a pipeline conditioned on CLIP image embeddings (unCLIP's decoder, Stable unCLIP's U-Net) needs to make
    variations: an image encoder, perhaps attached after loading (`borrowed` says from where), and the embeddings it
    gives. The pipeline names the width it reads (`clip_embedding_dim`) and what reads it (`embedding_reader`)."""

    image_encoder: torch.nn.Module | None
    feature_extractor: object | None
    borrowed: dict[str, str]
    clip_embedding_dim: int
    embedding_reader: str = "this model"

    def attach_image_encoder(self, image_encoder: torch.nn.Module, feature_extractor: object, source: str) -> None:
        """Give it the image encoder of another repo (`pipelines.components.load_image_encoder`) or its own, read on
        first use, so that it makes variations; refused when it embeds in another width (another CLIP)."""
        if image_encoder.config.projection_dim != self.clip_embedding_dim:
            raise ValueError(
                f"{source}'s image encoder embeds in {image_encoder.config.projection_dim} dimensions, "
                f"{self.embedding_reader} reads {self.clip_embedding_dim}: they are not from the same CLIP"
            )
        self.image_encoder, self.feature_extractor = image_encoder.eval(), feature_extractor
        self.borrowed = {**self.borrowed, "image_encoder": source}

    @torch.inference_mode()
    @uses("image_encoder")
    def encode_image(self, images: Sequence[object] | torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings (B, D) of given images (PIL, or pixels the feature extractor made), for variations
        (needs `image_encoder`)."""
        if self.image_encoder is None or self.feature_extractor is None:
            raise ValueError(
                f"this {type(self).__name__} model has no image_encoder/feature_extractor: it makes no variations"
            )
        if not isinstance(images, torch.Tensor):
            images = self.feature_extractor(images=list(images), return_tensors="pt").pixel_values
        return self.image_encoder(images.to(self.device, self.image_encoder.dtype)).image_embeds
