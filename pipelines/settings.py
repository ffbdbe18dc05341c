"""How a pipeline's settings are declared: a frozen dataclass beside the pipeline (nanoGPT's `GPTConfig`), one field
per knob with its default written once, a comment, and its facts in field metadata: the pipeline argument it sets,
the app's label, AUTOMATIC1111's infotext key, what it is (steps, guidance, text, a level) and, for steps, the
denoising loop it sets and the fewest its scheduler takes.

    @dataclass(frozen=True)
    class UnCLIPSettings(PipelineSettings):
        prior_steps: int = steps(25, "prior_num_inference_steps", "unCLIP prior steps", "Prior steps", "prior", 2)

The pipeline's own signature reads its defaults from the class (`prior_num_inference_steps: int =
UnCLIPSettings.prior_steps`); the registry, the app's widgets, the run log's columns and the PNG infotext read the
fields (`PipelineSettings.fields()`, each a `Setting`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

STEPS, GUIDANCE, TEXT, LEVEL, STRENGTH = "steps", "guidance", "text", "level", "strength"  # what a setting is
KINDS = {STEPS: int, GUIDANCE: float, TEXT: str, LEVEL: int, STRENGTH: float}


@dataclass(frozen=True)
class Setting:
    """One knob of an architecture and the pipeline argument it sets (a settings field's facts, or a strength's)."""

    name: str  # the field, run-log column and widget: "prior_steps"
    argument: str  # the pipeline's keyword argument: "prior_num_inference_steps"
    role: str  # STEPS (a whole number of denoising steps), GUIDANCE (a scale), TEXT, LEVEL (a whole number in
    # [0, maximum]: Stable unCLIP's noise level) or STRENGTH (in (0, 1])
    default: int | float | str | None
    label: str  # the app's widget label: "unCLIP prior steps"
    infotext: str  # AUTOMATIC1111's infotext key: "Prior steps"
    stage: str | None = None  # STEPS: the denoising loop it sets; STRENGTH: the loop it shortens
    minimum: int = 1  # STEPS: the fewest its stage's scheduler takes
    maximum: int | None = None  # LEVEL: the largest

    @property
    def kind(self) -> type:
        return KINDS[self.role]


def _field(default: object, **facts: object) -> dataclasses.Field:
    return dataclasses.field(default=default, metadata={"setting": facts})


def steps(default: int, argument: str, label: str, infotext: str, stage: str, minimum: int = 1) -> dataclasses.Field:
    """A denoising loop's step count."""
    return _field(default, argument=argument, role=STEPS, label=label, infotext=infotext, stage=stage, minimum=minimum)


def guidance(default: float, argument: str, label: str, infotext: str) -> dataclasses.Field:
    """A classifier-free guidance scale (1 turns it off)."""
    return _field(default, argument=argument, role=GUIDANCE, label=label, infotext=infotext)


def text(default: str | None, argument: str, label: str, infotext: str) -> dataclasses.Field:
    """A text beside the prompt (a negative prompt)."""
    return _field(default, argument=argument, role=TEXT, label=label, infotext=infotext)


def level(default: int, argument: str, label: str, infotext: str, maximum: int) -> dataclasses.Field:
    """A whole number from 0 to `maximum` (Stable unCLIP's noise level)."""
    return _field(default, argument=argument, role=LEVEL, label=label, infotext=infotext, maximum=maximum)


@dataclass(frozen=True)
class PipelineSettings:
    """The base of every pipeline's settings dataclass: its fields as `Setting`s, and as the call's arguments."""

    @classmethod
    def fields(cls) -> tuple[Setting, ...]:
        """Each field's Setting, in declaration order."""
        return tuple(
            Setting(f.name, default=f.default, **f.metadata["setting"])
            for f in dataclasses.fields(cls)
            if "setting" in f.metadata
        )

    def kwargs(self, names: tuple[str, ...] | None = None) -> dict[str, object]:
        """The settings (those `names`, by default all) as the pipeline's keyword arguments."""
        return {s.argument: getattr(self, s.name) for s in self.fields() if names is None or s.name in names}

    def values(self, names: tuple[str, ...] | None = None) -> dict[str, object]:
        """The settings (those `names`, by default all) by field name: a row's settings columns."""
        return {s.name: getattr(self, s.name) for s in self.fields() if names is None or s.name in names}
