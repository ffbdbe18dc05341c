"""Each architecture's facts in one place: its name and labels, the stages it records, the settings it takes.

Everything else derives from here: the comparison settings (`comparisons.settings.Settings`), the app's widgets,
the sweep grid, the PNG infotext, the run log's column types, the summaries' configurations and the lab's
evaluation. A setting's default is read from its pipeline's own signature, so the pipeline stays the one
place a default is written (as diffusers keeps them in `__call__`). Adding an architecture is one `register`
call; a test adds a dummy one and follows it through the whole tool.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.latent_diffusion import LatentDiffusion, load_latent_diffusion
from pipelines.schedulers import UNCLIP_MIN_STEPS
from pipelines.unclip import UnCLIP, load_unclip

STEPS, GUIDANCE, TEXT = "steps", "guidance", "text"  # what a setting is


@dataclass(frozen=True)
class Setting:
    """One knob of an architecture and the pipeline argument it sets."""

    name: str  # the Settings field, run-log column and widget: "prior_steps"
    argument: str  # the pipeline's keyword argument: "prior_num_inference_steps"
    role: str  # STEPS (a whole number of denoising steps), GUIDANCE (a scale) or TEXT
    default: int | float | str | None  # read from the pipeline's signature
    label: str  # the app's widget label: "unCLIP prior steps"
    infotext: str  # AUTOMATIC1111's infotext key: "Prior steps"
    stage: str | None = None  # STEPS: the denoising loop it sets (a recorded stage)
    minimum: int = 1  # STEPS: the fewest its stage's scheduler takes

    @property
    def kind(self) -> type:
        return {STEPS: int, GUIDANCE: float, TEXT: str}[self.role]


@dataclass(frozen=True)
class Architecture:
    """An architecture as the tool knows it."""

    name: str  # "unclip": the run log's `architecture` value
    label: str  # "unCLIP (Karlo / DALL·E 2)": above its image
    short: str  # "unCLIP": in tables and configuration labels
    pipeline: type  # the pipeline class
    load: Callable[..., object]  # load(path_or_hub_id, *, device, dtype, progress) -> pipeline
    stages: tuple[str, ...]  # the stages its text-to-image call records, in order
    settings: tuple[Setting, ...]
    sweep_steps: tuple[str, ...]  # the settings a sweep's --steps sets (its main denoising loops)
    sweep_guidance: tuple[str, ...]  # the settings a sweep's --guidance sets
    # stage -> seconds per denoising step of the full-size model, one image, fp16 on an H100
    # (benchmarks/full_size_h100_2026-11-27.json): what a ZeroGPU call asks for is computed from these
    gpu_seconds_per_step: dict[str, float] = field(default_factory=dict)

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise ValueError(f"{self.name} has no setting {name!r}; it has {', '.join(s.name for s in self.settings)}")

    def steps_of_stages(self, values: dict[str, object]) -> dict[str, int]:
        """The steps asked of each denoising loop, in stage order, from this architecture's setting values."""
        loops = {s.stage: int(values[s.name]) for s in self.settings if s.role == STEPS}
        return {stage: loops[stage] for stage in self.stages if stage in loops}


def signature_default(pipeline: type, argument: str, method: str = "__call__") -> object:
    """The default of `argument` in `pipeline.method`'s signature."""
    parameter = inspect.signature(getattr(pipeline, method)).parameters.get(argument)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise ValueError(f"{pipeline.__name__}.{method} has no argument {argument!r} with a default")
    return parameter.default


def steps(
    pipeline: type, name: str, argument: str, label: str, infotext: str, stage: str, minimum: int = 1
) -> Setting:
    return Setting(name, argument, STEPS, signature_default(pipeline, argument), label, infotext, stage, minimum)


def guidance(pipeline: type, name: str, argument: str, label: str, infotext: str) -> Setting:
    return Setting(name, argument, GUIDANCE, signature_default(pipeline, argument), label, infotext)


def text(pipeline: type, name: str, argument: str, label: str, infotext: str) -> Setting:
    return Setting(name, argument, TEXT, signature_default(pipeline, argument), label, infotext)


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an architecture; its setting names must be new (they are run-log columns)."""
    if architecture.name in ARCHITECTURES:
        raise ValueError(f"an architecture named {architecture.name!r} is registered already")
    taken = {s.name for a in ARCHITECTURES.values() for s in a.settings}
    clash = sorted(taken & {s.name for s in architecture.settings})
    if clash:
        raise ValueError(f"{architecture.name}'s settings {clash} are another architecture's: name them apart")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


register(
    Architecture(
        name="unclip",
        label="unCLIP (Karlo / DALL·E 2)",
        short="unCLIP",
        pipeline=UnCLIP,
        load=load_unclip,
        stages=("text_encoder", "prior", "decoder", "super_res"),
        settings=(
            steps(
                UnCLIP,
                "prior_steps",
                "prior_num_inference_steps",
                "unCLIP prior steps",
                "Prior steps",
                "prior",
                UNCLIP_MIN_STEPS,
            ),
            steps(
                UnCLIP,
                "decoder_steps",
                "decoder_num_inference_steps",
                "unCLIP decoder steps",
                "Decoder steps",
                "decoder",
                UNCLIP_MIN_STEPS,
            ),
            steps(
                UnCLIP,
                "super_res_steps",
                "super_res_num_inference_steps",
                "unCLIP super-res steps",
                "Super-res steps",
                "super_res",
                UNCLIP_MIN_STEPS,
            ),
            guidance(UnCLIP, "prior_guidance", "prior_guidance_scale", "unCLIP prior guidance", "Prior CFG scale"),
            guidance(
                UnCLIP, "decoder_guidance", "decoder_guidance_scale", "unCLIP decoder guidance", "Decoder CFG scale"
            ),
        ),
        sweep_steps=("prior_steps", "decoder_steps"),
        sweep_guidance=("decoder_guidance",),
        gpu_seconds_per_step={"prior": 0.015, "decoder": 0.044, "super_res": 0.069},
    )
)

register(
    Architecture(
        name="latent_diffusion",
        label="Latent diffusion (Stable Diffusion)",
        short="LD",
        pipeline=LatentDiffusion,
        load=load_latent_diffusion,
        stages=("text_encoder", "unet", "vae_decode"),
        settings=(
            steps(LatentDiffusion, "steps", "num_inference_steps", "Latent diffusion steps", "Steps", "unet"),
            guidance(LatentDiffusion, "guidance", "guidance_scale", "Latent diffusion guidance", "CFG scale"),
            text(
                LatentDiffusion,
                "negative_prompt",
                "negative_prompt",
                "Negative prompt (latent diffusion only)",
                "Negative prompt",
            ),
        ),
        sweep_steps=("steps",),
        sweep_guidance=("guidance",),
        gpu_seconds_per_step={"unet": 0.032},
    )
)


def unregister(name: str) -> None:
    ARCHITECTURES.pop(name, None)


def get(name: str) -> Architecture:
    """The registered architecture called `name`, or a ValueError listing the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def names() -> tuple[str, ...]:
    return tuple(ARCHITECTURES)


def all_settings() -> tuple[Setting, ...]:
    """Every registered architecture's settings, architecture by architecture."""
    return tuple(s for a in ARCHITECTURES.values() for s in a.settings)


def all_stages() -> tuple[str, ...]:
    """Every stage some architecture records (text-to-image, then image-conditioned ones), first seen first."""
    extra = ("image_encoder", "vae_encode")  # unCLIP's variations and latent diffusion's img2img
    return tuple(dict.fromkeys([*(s for a in ARCHITECTURES.values() for s in a.stages), *extra]))


def architecture_of(pipeline: object) -> Architecture:
    """The registered architecture a pipeline object belongs to."""
    for architecture in ARCHITECTURES.values():
        if isinstance(pipeline, architecture.pipeline):
            return architecture
    raise ValueError(f"{type(pipeline).__name__} is no registered architecture's pipeline")
