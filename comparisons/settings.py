"""The settings of a comparison: each registered architecture's settings dataclass, the one beside its pipeline
(pipelines.settings; `UnCLIPSettings`, `LatentDiffusionSettings`, ...).

`Settings(prior_steps=10, steps=20)` holds what was given, by field name (names are unique across architectures:
the registry refuses a clash); `settings.of("unclip")` is unCLIP's dataclass with them, every other field its
default, so an architecture registered later has its settings here too. Each architecture takes its own
(`of`) as its pipeline's keyword arguments (`pipeline_kwargs`) and its rows' columns (`for_architecture`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pipelines import registry
from pipelines.checks import MAX_PROMPT_CHARS, check_guidance, check_steps
from pipelines.registry import GUIDANCE, LEVEL, STEPS, TEXT, TEXT_TO_IMAGE, Setting
from pipelines.settings import PipelineSettings

# The most guidance a comparison runs: far beyond the models' own (4 to 10) every image is noise, and a row of noise
# only muddies a summary (AUTOMATIC1111's slider stops at 30). The pipelines themselves take any finite scale.
MAX_GUIDANCE = 50.0


def _known() -> dict[str, Setting]:
    return {s.name: s for s in registry.all_settings()}


class Settings:
    """Each registered architecture's settings; those not given are its dataclass's defaults."""

    __slots__ = ("_given",)

    def __init__(self, **values: int | float | str | None) -> None:
        unknown = sorted(set(values) - set(_known()))
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}; known: {', '.join(_known())}")
        object.__setattr__(self, "_given", dict(values))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Settings are frozen: use replace(...)")

    def __reduce__(self):  # pickles (a forked GPU worker, deepcopy) carry the given values, not the defaults
        return _rebuilt, (self._given,)

    def of(self, architecture: str) -> PipelineSettings:
        """The architecture's settings dataclass: what was given for its fields, its defaults for the rest."""
        cls = registry.get(architecture).settings_class
        return cls(**{s.name: self._given[s.name] for s in cls.fields() if s.name in self._given})

    def value(self, name: str) -> object:
        """The value of the setting called `name`, whichever architecture's it is (a sweep's axis, a column)."""
        setting = _known().get(name)
        if setting is None:
            raise ValueError(f"no setting {name!r}; known: {', '.join(_known())}")
        return self._given.get(name, setting.default)

    def items(self) -> tuple[tuple[str, object], ...]:
        """(name, value) of every setting, given or default, architecture by architecture in registry order."""
        return tuple(item for a in registry.names() for item in self.of(a).values().items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self.items() == other.items()

    def __hash__(self) -> int:
        return hash(self.items())

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in self._given.items())})"

    def replace(self, **changes: int | float | str | None) -> Settings:
        return Settings(**{**self._given, **changes})

    def fewest_steps(self, architectures: Iterable[str], at_least: int = 1) -> Settings:
        """These settings with every step count of `architectures` at its stage's minimum (or `at_least`)."""
        steps = [s for a in architectures for s in registry.get(a).settings if s.role == STEPS]
        return self.replace(**{s.name: max(s.minimum, at_least) for s in steps})

    def for_architecture(self, architecture: str, mode: str = TEXT_TO_IMAGE) -> dict[str, object]:
        """The settings that are the architecture's own and apply in `mode`, by name (its rows' settings columns)."""
        names = tuple(s.name for s in registry.get(architecture).settings_of(mode))
        return self.of(architecture).values(names)

    def pipeline_kwargs(self, architecture: str, mode: str = TEXT_TO_IMAGE) -> dict[str, object]:
        """The architecture's settings as the keyword arguments of its pipeline's call (or of `mode`'s method)."""
        names = tuple(s.name for s in registry.get(architecture).settings_of(mode))
        return self.of(architecture).kwargs(names)

    def checked(self, by_label: bool = False) -> Settings:
        """These settings, or a ValueError naming the first one no pipeline can run (the pipelines' own checks): by
        its name (a flag's, an argument's), or `by_label` by its widget's label, for the app."""
        for architecture in registry.ARCHITECTURES.values():
            values = self.of(architecture.name)
            for s in architecture.settings:
                value, name = getattr(values, s.name), s.label if by_label else s.name
                if s.role == STEPS:
                    check_steps(value, name, s.minimum, f"{architecture.short}'s {s.stage} stage")
                elif s.role == GUIDANCE:
                    check_guidance(value, name)
                    if value > MAX_GUIDANCE:
                        raise ValueError(
                            f"{name} must be at most {MAX_GUIDANCE:g}, got {value:g}: guidance that far beyond what "
                            "the models were trained with only draws noise (1 turns guidance off)"
                        )
                elif s.role == LEVEL:
                    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= s.maximum:
                        raise ValueError(f"{name} must be a whole number from 0 to {s.maximum}, got {value!r:.40}")
                elif s.role == TEXT and value is not None:
                    if not isinstance(value, str):
                        raise ValueError(f"{name} must be text, got {type(value).__name__}")
                    if len(value) > MAX_PROMPT_CHARS:
                        raise ValueError(f"{name} is {len(value):,} characters; at most {MAX_PROMPT_CHARS:,}")
        return self

    def with_sweep_values(self, architecture: str, steps: int, guidance: float) -> Settings:
        """These settings with a sweep's grid point applied to the architecture's main loops and guidance."""
        a = registry.get(architecture)
        return self.replace(**{name: steps for name in a.sweep_steps}, **{name: guidance for name in a.sweep_guidance})


def _rebuilt(given: dict) -> Settings:
    return Settings(**given)


def fields_of(role: str) -> tuple[str, ...]:
    """The names of every registered setting of a role (registry.STEPS, GUIDANCE or TEXT)."""
    return tuple(s.name for s in registry.all_settings() if s.role == role)


def add_setting_flags(parser, skip: tuple[str, ...] = ()) -> None:
    """One `--<name>` flag per registered setting not in `skip` (default: the pipeline's own); see `from_flags`."""
    for s in registry.all_settings():
        if s.name not in skip:
            parser.add_argument(
                "--" + s.name.replace("_", "-"), type=s.kind, default=None, help=f"{s.label} (default {s.default})"
            )


def from_flags(args, skip: tuple[str, ...] = ()) -> Settings:
    """The Settings that `add_setting_flags`' flags set (those not given keep their defaults)."""
    given = {s.name: getattr(args, s.name) for s in registry.all_settings() if s.name not in skip}
    return Settings(**{name: value for name, value in given.items() if value is not None})
