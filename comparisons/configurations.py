"""Which configurations a run log holds, and what to call them, so a summary compares like with like.

A configuration is what `comparisons.summary` insists one architecture's compared rows share: its model, size and
registered settings (`own_settings`), and the environment pairs must match in (`SHARED_SETTINGS`). A log with
several (a sweep over steps, compares with other settings) has one paired summary per pair of configurations that
share (prompt, seed) pairs: `choices` lists them newest first, labelled from the registry ("unCLIP 25/25/7 g 4/8
vs LD 50 steps g 7.5"); with no pairs at all, each configuration alone, for an unpaired summary.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from comparisons.summary import MODEL_COLUMNS, SHARED_SETTINGS, joint_rows, own_settings, text_to_image
from pipelines import registry
from pipelines.registry import GUIDANCE, LEVEL, STEPS, TEXT

PAIR_KEYS = ("prompt", "seed")  # besides SHARED_SETTINGS: what makes two rows a pair (summary._pair_keys)
TEXT_CHARS = 24  # of a text setting (the negative prompt) in a label


@dataclass(frozen=True)
class Configuration:
    """One architecture's configuration: its (column, value) pairs, missing values as None."""

    architecture: str
    values: tuple[tuple[str, object], ...]

    def matches(self, df: pd.DataFrame) -> pd.Series:
        """Which rows of `df` are of this configuration."""
        mask = df["architecture"] == self.architecture
        for column, value in self.values:
            mask &= df[column].isna() if value is None else df[column] == value
        return mask.fillna(False).astype(bool)


@dataclass(frozen=True)
class Choice:
    """What a summary compares: configurations of two or more architectures that pair on (prompt, seed, ...), or
    one alone."""

    label: str
    configurations: tuple[Configuration, ...]
    n_pairs: int  # distinct (prompt, seed, ...) pairs between the two; 0 for one alone
    newest: int  # the position in the log of its newest row

    @property
    def paired(self) -> bool:
        return len(self.configurations) >= 2

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(c.architecture for c in self.configurations)

    def rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The text-to-image rows of `df` of its configurations (an img2img row may share its settings); paired, only
        those of the (prompt, seed, ...) keys all of them have: a configuration in two choices (Stable unCLIP's,
        beside two settings of the others) shows each choice its own rows."""
        df = text_to_image(df)
        mask = pd.Series(False, index=df.index)
        for configuration in self.configurations:
            mask |= configuration.matches(df)
        mine = df[mask]
        return joint_rows(mine, self.architectures) if self.paired else mine


def configuration_columns(df: pd.DataFrame, architecture: str) -> list[str]:
    """The columns of an architecture's configuration the frame has: model and size, its settings, environment."""
    mine = {s.name for s in registry.get(architecture).settings}
    own = [c for c in own_settings() if c in MODEL_COLUMNS or c in mine]
    return [c for c in (*own, *SHARED_SETTINGS) if c in df.columns]


def _plain(value: object) -> object:
    """A cell as a plain, hashable Python value; missing as None."""
    if pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def configurations(df: pd.DataFrame, architecture: str) -> pd.Series:
    """Each of the architecture's rows' Configuration, indexed like them."""
    rows = df[df["architecture"] == architecture]
    columns = configuration_columns(df, architecture)
    return pd.Series(
        [Configuration(architecture, tuple(zip(columns, map(_plain, r)))) for r in rows[columns].itertuples(False)],
        index=rows.index,
        dtype=object,
    )


# ----------------------------------------------------------------------------- labels


def _number(value: object) -> str:
    """7.5 as "7.5", 4.0 as "4"; exact enough that two values never read the same."""
    if value is None:
        return "?"
    short = f"{value:g}"
    return short if float(short) == float(value) else repr(value)


def settings_label(configuration: Configuration) -> str:
    """The architecture's short name, its steps ("50 steps", or per stage "25/25/7"), its guidance ("g 4/8")
    and any text setting: "unCLIP 25/25/7 g 4/8"."""
    arch, values = registry.get(configuration.architecture), dict(configuration.values)
    steps = [_number(values.get(s.name)) for s in arch.settings if s.role == STEPS]
    guidance = [_number(values.get(s.name)) for s in arch.settings if s.role == GUIDANCE]
    parts = [arch.short]
    if steps:
        parts.append(f"{steps[0]} steps" if len(steps) == 1 else "/".join(steps))
    if guidance:
        parts.append("g " + "/".join(guidance))
    parts += [f"{s.infotext.lower()} {_number(values.get(s.name))}" for s in arch.settings if s.role == LEVEL]
    for s in arch.settings:
        text = values.get(s.name)
        if s.role == TEXT and text:
            shown = text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"
            parts.append(f"{s.infotext.lower()} “{shown}”")
    return " ".join(parts)


def _shown(column: str, value: object) -> str:
    if column == "model" and isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name  # a directory: its name (lab/weights/unclip -> unclip)
    if column == "memory_kind":
        return f"memory {value}"
    return f"{column} {value}" if column != "model" else str(value)


# A column left out of a label when the one before it differs too: the model names its hash, the device its name.
IMPLIED = {"model_hash": "model", "device_name": "device"}


def labels(configurations: list[Configuration]) -> dict[Configuration, str]:
    """Each configuration's `settings_label`, with the model and environment columns that vary among those of one
    architecture whose settings read the same ("LD 50 steps g 7.5 · device cuda"); never two alike."""
    out: dict[Configuration, str] = {}
    for configuration in configurations:
        base = settings_label(configuration)
        alike = [dict(c.values) for c in configurations if settings_label(c) == base]
        varying = {col for col, _ in configuration.values if len({repr(v.get(col)) for v in alike}) > 1}
        extra = [
            _shown(col, v)
            for col, v in configuration.values
            if col in varying and IMPLIED.get(col) not in varying and col not in _text_columns()
        ]
        out[configuration] = _unique(" · ".join([base, *extra]), set(out.values()))
    return out


def _unique(label: str, taken: set[str]) -> str:
    """`label`, or `label (2)`, `label (3)`, ... when it is taken (two long texts cut alike)."""
    k = 1
    while (f"{label} ({k})" if k > 1 else label) in taken:
        k += 1
    return f"{label} ({k})" if k > 1 else label


def _text_columns() -> set[str]:
    """The text settings' columns: the labels say them already."""
    return {s.name for s in registry.all_settings() if s.role == TEXT}


# ----------------------------------------------------------------------------- choices


def _joint(df: pd.DataFrame, archs: tuple[str, ...], configs: pd.Series) -> pd.DataFrame:
    """Distinct (prompt, seed, ...) keys per joint configuration of `archs`, one column each, and n."""
    keys = [k for k in (*PAIR_KEYS, *SHARED_SETTINGS) if k in df.columns]
    merged = None
    for arch in archs:
        side = df.loc[df["architecture"] == arch, keys].astype(object).where(lambda d: d.notna(), None)
        side = side.assign(**{arch: configs[side.index]}).drop_duplicates()
        merged = side if merged is None else merged.merge(side, on=keys)
    if merged is None or merged.empty:
        return pd.DataFrame(columns=[*archs, "n"])
    return merged.groupby(list(archs), sort=False).size().rename("n").reset_index()


def choices(df: pd.DataFrame) -> list[Choice]:
    """What a summary can compare, newest first: every joint configuration of all the architectures present that
    shares (prompt, seed) pairs, then of fewer of them (each pair of architectures) where the rows pair no further;
    with no pairs at all, every configuration alone. Empty only for a frame without text-to-image rows."""
    if df.empty or "architecture" not in df.columns:
        return []
    df = text_to_image(df.reset_index(drop=True))  # summaries compare these alone: an image-in row chooses nothing
    if df.empty:
        return []
    present = [n for n in registry.names() if (df["architecture"] == n).any()]
    configs = pd.concat([configurations(df, a) for a in present])
    newest: dict[Configuration, int] = {}
    for position, configuration in configs.items():
        newest[configuration] = max(newest.get(configuration, -1), int(position))
    found: list[tuple[tuple[Configuration, ...], int]] = []
    for k in range(len(present), 1, -1):
        for archs in itertools.combinations(present, k):
            for _, r in _joint(df, archs, configs).iterrows():
                joint = tuple(r[a] for a in archs)
                # a pair whose rows all pair further (inside a larger choice with as many pairs) adds nothing
                if not any(set(joint) < set(bigger) and n >= int(r["n"]) for bigger, n in found):
                    found.append((joint, int(r["n"])))
    if not found:
        found = [((c,), 0) for c in newest]
    names = labels(list(dict.fromkeys(c for joint, _ in found for c in joint)))
    order = sorted(found, key=lambda item: (sorted(-newest[c] for c in item[0]), -len(item[0])))
    return [
        Choice(" vs ".join(names[c] for c in sorted(joint, key=_registered)), joint, n, max(newest[c] for c in joint))
        for joint, n in order
    ]


def _registered(configuration: Configuration) -> int:
    """Where its architecture is in the registry: labels read in that order (unCLIP vs LD)."""
    return registry.names().index(configuration.architecture)


def choose(options: list[Choice], label: str | None) -> Choice | None:
    """The option labelled `label`, else the newest (the first); None when there are none."""
    return next((c for c in options if c.label == label), options[0] if options else None)
