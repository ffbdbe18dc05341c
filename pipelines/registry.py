"""The architectures the tool knows, as a plain table: name -> pipeline class, settings dataclass, loader, labels,
the stages its calls record and how it takes an image in.

Everything else derives from here: the comparison settings (`comparisons.settings.Settings`), the app's widgets,
the sweep grid, the PNG infotext, the run log's column types, the summaries' configurations and the lab's
evaluation. A setting's facts (default, label, infotext key, range) are its dataclass field's, written once beside
its pipeline (pipelines.settings). Adding an architecture is one pipeline file and one `register` call; a test adds
a dummy one and follows it through the whole tool.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.components import load_latent_diffusion, load_stable_unclip, load_unclip
from pipelines.latent_diffusion import STRENGTH as IMG2IMG_STRENGTH
from pipelines.latent_diffusion import LatentDiffusion, LatentDiffusionSettings, kept_steps
from pipelines.settings import GUIDANCE, LEVEL, STEPS, STRENGTH, TEXT, PipelineSettings, Setting
from pipelines.stable_unclip import StableUnCLIP, StableUnCLIPSettings
from pipelines.unclip import UnCLIP, UnCLIPSettings

__all__ = ["GUIDANCE", "LEVEL", "STEPS", "STRENGTH", "TEXT", "Architecture", "ImageIn", "Setting"]
TEXT_TO_IMAGE = "text_to_image"  # the run log's `mode` of a pipeline's __call__; an ImageIn names its own


@dataclass(frozen=True)
class ImageIn:
    """How an architecture takes an image in: a pipeline method beside __call__ (unCLIP's variations, latent
    diffusion's img2img), with some of the architecture's settings and perhaps a strength of its own."""

    mode: str  # the run log's `mode` of its rows: "variations", "img2img"
    method: str  # the pipeline method: method(image, ...) or, when it takes a prompt, method(prompt, image, ...)
    settings: tuple[str, ...]  # the architecture's settings it takes; the others do not apply (absent from its rows)
    stages: tuple[str, ...]  # the stages it records, in order
    takes_prompt: bool  # img2img is conditioned on a prompt; unCLIP's variations on the image alone
    strength: Setting | None = None  # img2img: how far the image is noised, which shortens `strength.stage`
    needs_prompt: bool | None = None  # None: as takes_prompt (Stable unCLIP's variations take one, or none)

    @property
    def prompt_required(self) -> bool:
        return self.takes_prompt if self.needs_prompt is None else self.needs_prompt


@dataclass(frozen=True)
class Architecture:
    """An architecture as the tool knows it: one row of the table."""

    name: str  # "unclip": the run log's `architecture` value
    label: str  # "unCLIP (Karlo / DALL·E 2)": above its image
    short: str  # "unCLIP": in tables and configuration labels
    pipeline: type  # the pipeline class
    settings_class: type[PipelineSettings]  # its settings dataclass, beside the pipeline
    load: Callable[..., object]  # load(path_or_hub_id, *, device, dtype, progress) -> pipeline
    stages: tuple[str, ...]  # the stages its text-to-image call records, in order
    sweep_steps: tuple[str, ...]  # the settings a sweep's --steps sets (its main denoising loops)
    sweep_guidance: tuple[str, ...]  # the settings a sweep's --guidance sets
    # stage -> seconds per denoising step of the full-size model, one image, fp16 on an H100
    # (benchmarks/full_size_h100_2026-11-27.json): what a ZeroGPU call asks for is computed from these
    gpu_seconds_per_step: dict[str, float] = field(default_factory=dict)
    image_in: ImageIn | None = None  # how it takes an image in, if it does
    # component -> (architecture, its component): what it takes from the pipelines loaded before it, in memory,
    # rather than loading again (Stable unCLIP: Karlo's prior and its CLIP, from unCLIP's pipeline)
    shares: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def settings(self) -> tuple[Setting, ...]:
        """Its settings' facts, in its dataclass's order."""
        return self.settings_class.fields()

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


def _takes(pipeline: type, method: str, argument: str) -> bool:
    return argument in inspect.signature(getattr(pipeline, method)).parameters


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
        missing = [
            s.argument
            for s in architecture.settings_of(image_in.mode)
            if not _takes(architecture.pipeline, image_in.method, s.argument)
        ]
        if missing:  # each one an argument of the method, as of __call__
            raise ValueError(f"{architecture.name}'s {image_in.method} takes no {', '.join(missing)}")
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
        settings_class=UnCLIPSettings,
        load=load_unclip,
        stages=("text_encoder", "prior", "decoder", "super_res"),
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
        settings_class=LatentDiffusionSettings,
        load=load_latent_diffusion,
        stages=("text_encoder", "unet", "vae_decode"),
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
            strength=Setting(
                "strength", "strength", STRENGTH, IMG2IMG_STRENGTH, "img2img strength", "Denoising strength", "unet"
            ),
        ),
    )
)


register(
    Architecture(
        name="stable_unclip",
        label="Stable unCLIP (unCLIP's prior, a latent U-Net)",
        short="Stable unCLIP",
        pipeline=StableUnCLIP,
        settings_class=StableUnCLIPSettings,
        load=load_stable_unclip,
        stages=("text_encoder", "prior", "unet", "vae_decode"),
        sweep_steps=("stable_unclip_prior_steps", "stable_unclip_steps"),
        sweep_guidance=("stable_unclip_guidance",),
        # the prior is Karlo's (measured with unCLIP); the U-Net's is SD 1.5's scaled by latent area (96² / 64²),
        # stable-diffusion-2-1-unclip-small drawing 768 px: an estimate until a GPU measures it
        gpu_seconds_per_step={"prior": 0.015, "unet": 0.072},
        image_in=ImageIn(
            mode="variations",
            method="variations",
            # the image's embedding replaces the prior's: no prior settings
            settings=("noise_level", "stable_unclip_steps", "stable_unclip_guidance", "stable_unclip_negative_prompt"),
            stages=("text_encoder", "image_encoder", "unet", "vae_decode"),
            takes_prompt=True,
            needs_prompt=False,
        ),
        shares={
            "prior": ("unclip", "prior"),
            "prior_text_encoder": ("unclip", "text_encoder"),
            "prior_tokenizer": ("unclip", "tokenizer"),
            "prior_scheduler": ("unclip", "prior_scheduler"),
            "text_encoder": ("latent_diffusion", "text_encoder"),  # where its package has none (the lab's)
            "tokenizer": ("latent_diffusion", "tokenizer"),
            "vae": ("latent_diffusion", "vae"),
            # the lab's (and tiny's) unCLIP embed images with the CLIP its prior was trained on; a model loaded
            # without one (Karlo) lends none, and variations read the package's own on first use
            "image_encoder": ("unclip", "image_encoder"),
            "feature_extractor": ("unclip", "feature_extractor"),
        },
    )
)


def load_all(sources: dict[str, str], **options) -> dict[str, object]:
    """Each architecture's pipeline (architecture -> a directory or hub id; `options` the loaders' LoadOptions), in
    `sources`' order, each taking what it `shares` from those loaded before it, in memory."""
    pipes: dict[str, object] = {}
    for name, source in sources.items():
        a = get(name)
        shared = {part: getattr(pipes[owner], theirs) for part, (owner, theirs) in a.shares.items() if owner in pipes}
        pipes[name] = a.load(source, **options, **({"shared": shared} if a.shares else {}))
    return pipes


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
    """Every value the run log's `mode` takes: text to image, then each ImageIn's (two may share one)."""
    return tuple(dict.fromkeys((TEXT_TO_IMAGE, *(i.mode for i in image_ins()))))


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
