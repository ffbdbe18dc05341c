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

from pipelines.components import load_latent_diffusion, load_unclip
from pipelines.latent_diffusion import LatentDiffusion, kept_steps
from pipelines.schedulers import UNCLIP_MIN_STEPS
from pipelines.unclip import UnCLIP

STEPS, GUIDANCE, TEXT, STRENGTH = "steps", "guidance", "text", "strength"  # what a setting is
TEXT_TO_IMAGE = "text_to_image"  # the run log's `mode` of a pipeline's __call__; an ImageIn names its own


@dataclass(frozen=True)
class Setting:
    """One knob of an architecture and the pipeline argument it sets."""

    name: str  # the Settings field, run-log column and widget: "prior_steps"
    argument: str  # the pipeline's keyword argument: "prior_num_inference_steps"
    role: str  # STEPS (a whole number of denoising steps), GUIDANCE (a scale), TEXT or STRENGTH (in (0, 1])
    default: int | float | str | None  # read from the pipeline's signature
    label: str  # the app's widget label: "unCLIP prior steps"
    infotext: str  # AUTOMATIC1111's infotext key: "Prior steps"
    stage: str | None = None  # STEPS: the denoising loop it sets; STRENGTH: the loop it shortens
    minimum: int = 1  # STEPS: the fewest its stage's scheduler takes

    @property
    def kind(self) -> type:
        return {STEPS: int, GUIDANCE: float, TEXT: str, STRENGTH: float}[self.role]


@dataclass(frozen=True)
class ImageIn:
    """How an architecture takes an image in: a pipeline method beside __call__ (unCLIP's variations, latent
    diffusion's img2img), with some of the architecture's settings and perhaps a strength of its own."""

    mode: str  # the run log's `mode` of its rows: "variations", "img2img"
    method: str  # the pipeline method: method(image, ...) or, when it takes a prompt, method(prompt, image, ...)
    settings: tuple[str, ...]  # the architecture's settings it takes; the others do not apply (absent from its rows)
    stages: tuple[str, ...]  # the stages it records, in order
    takes_prompt: bool  # img2img is conditioned on a prompt; variations on the image alone
    strength: Setting | None = None  # img2img: how far the image is noised, which shortens `strength.stage`


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
    image_in: ImageIn | None = None  # how it takes an image in, if it does

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise ValueError(f"{self.name} has no setting {name!r}; it has {', '.join(s.name for s in self.settings)}")

    def mode(self, mode: str = TEXT_TO_IMAGE) -> ImageIn | None:
        """The ImageIn of `mode` (None for text to image), or a ValueError naming the modes this one has."""
        if mode == TEXT_TO_IMAGE:
            return None
        if self.image_in is None or self.image_in.mode != mode:
            has = " or ".join([TEXT_TO_IMAGE, *([self.image_in.mode] if self.image_in else [])])
            raise ValueError(f"{self.short} has no mode {mode!r}; it has {has}")
        return self.image_in

    def settings_of(self, mode: str = TEXT_TO_IMAGE) -> tuple[Setting, ...]:
        """The settings a mode takes: all of them for text to image, an ImageIn's own choice otherwise."""
        image_in = self.mode(mode)
        return self.settings if image_in is None else tuple(s for s in self.settings if s.name in image_in.settings)

    def steps_of_stages(
        self, values: dict[str, object], mode: str = TEXT_TO_IMAGE, strength: float | None = None
    ) -> dict[str, int]:
        """The steps each denoising loop runs, in stage order, from this architecture's setting values (and, for
        img2img, the strength: the pipeline's own kept_steps)."""
        image_in = self.mode(mode)
        loops = {s.stage: int(values[s.name]) for s in self.settings_of(mode) if s.role == STEPS}
        if image_in is not None and image_in.strength is not None and strength is not None:
            loops[image_in.strength.stage] = kept_steps(loops[image_in.strength.stage], strength)
        stages = self.stages if image_in is None else image_in.stages
        return {stage: loops[stage] for stage in stages if stage in loops}


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


def strength(pipeline: type, method: str, name: str, label: str, infotext: str, stage: str) -> Setting:
    return Setting(name, name, STRENGTH, signature_default(pipeline, name, method), label, infotext, stage)


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    """Add an architecture; its setting names must be new (they are run-log columns)."""
    if architecture.name in ARCHITECTURES:
        raise ValueError(f"an architecture named {architecture.name!r} is registered already")
    taken = {s.name for a in ARCHITECTURES.values() for s in a.settings}
    clash = sorted(taken & {s.name for s in architecture.settings})
    if clash:
        raise ValueError(f"{architecture.name}'s settings {clash} are another architecture's: name them apart")
    image_in = architecture.image_in
    if image_in is not None:
        if not callable(getattr(architecture.pipeline, image_in.method, None)):
            raise ValueError(
                f"{architecture.name}'s {image_in.mode} calls {image_in.method!r}, which its pipeline lacks"
            )
        for s in architecture.settings_of(image_in.mode):  # each one an argument of the method, as of __call__
            signature_default(architecture.pipeline, s.argument, image_in.method)
        unknown = sorted(set(image_in.settings) - {s.name for s in architecture.settings})
        if unknown or image_in.mode == TEXT_TO_IMAGE:
            raise ValueError(f"{architecture.name}'s {image_in.mode} names a mode or settings it lacks: {unknown}")
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
        image_in=ImageIn(
            mode="variations",
            method="variations",
            # the image's embedding replaces the prior's: no prior settings
            settings=("decoder_steps", "super_res_steps", "decoder_guidance"),
            stages=("text_encoder", "image_encoder", "decoder", "super_res"),
            takes_prompt=False,
        ),
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
        image_in=ImageIn(
            mode="img2img",
            method="img2img",
            settings=("steps", "guidance", "negative_prompt"),
            stages=("text_encoder", "vae_encode", "unet", "vae_decode"),
            takes_prompt=True,
            # "Denoising strength": AUTOMATIC1111's infotext key for it
            strength=strength(
                LatentDiffusion, "img2img", "strength", "img2img strength", "Denoising strength", "unet"
            ),
        ),
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


def image_ins() -> tuple[ImageIn, ...]:
    """Every registered architecture's way of taking an image in."""
    return tuple(a.image_in for a in ARCHITECTURES.values() if a.image_in is not None)


def modes() -> tuple[str, ...]:
    """Every value the run log's `mode` takes: text to image, then each ImageIn's."""
    return (TEXT_TO_IMAGE, *(i.mode for i in image_ins()))


def strength_settings() -> tuple[Setting, ...]:
    """The ImageIns' strengths: settings of an image-in method alone (not of Settings, the CLIs or Compare)."""
    return tuple(i.strength for i in image_ins() if i.strength is not None)


def all_stages() -> tuple[str, ...]:
    """Every stage some architecture records (text-to-image, then image-in ones), first seen first."""
    text_to_image = [s for a in ARCHITECTURES.values() for s in a.stages]
    return tuple(dict.fromkeys([*text_to_image, *(s for i in image_ins() for s in i.stages)]))


def denoising_stages() -> tuple[str, ...]:
    """Every stage a steps setting drives (the run log's steps_<stage> columns), first seen first."""
    return tuple(dict.fromkeys(s.stage for s in all_settings() if s.role == STEPS))


def architecture_of(pipeline: object) -> Architecture:
    """The registered architecture a pipeline object belongs to."""
    for architecture in ARCHITECTURES.values():
        if isinstance(pipeline, architecture.pipeline):
            return architecture
    raise ValueError(f"{type(pipeline).__name__} is no registered architecture's pipeline")
