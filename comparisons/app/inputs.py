"""What the app's widgets send, checked: the prompt, the seed, the settings (any registered architecture's); and the
prompts that fit a preset: its examples, and whether a prompt is one the Shapes lab's models know. Every parser
raises `ValueError` with a message for the user.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from comparisons.presets import get_preset
from comparisons.settings import Settings
from lab.captions import parse_caption
from lab.prompt_files import read_prompts
from pipelines import registry
from pipelines.checks import MAX_PROMPT_CHARS, MAX_SEED
from pipelines.registry import LEVEL, STEPS, TEXT

REAL_PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "real_models.txt"  # examples outside the lab


def parse_text(value: str | None, name: str, label: str | None = None) -> str:
    """Text as typed, stripped; an error names it as "the `name`", or by its widget's `label`."""
    subject = label or f"the {name}"
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{subject} must be text, got {shown(value)}")
    text = (value or "").strip()
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"{subject} is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} (CLIP reads about 75 words)"
        )
    return text


def parse_prompt(text: str | None, name: str = "prompt") -> str:
    text = parse_text(text, name)
    if not text:
        raise ValueError(f"the {name} is empty: type what the image should show")
    return text


RANDOM_SEED = -1  # typed as a seed: draw one (AUTOMATIC1111's and ComfyUI's habit); the row logs the one drawn
SEEDS = f"a whole number from 0 to {MAX_SEED - 1:,}, or {RANDOM_SEED} for a random one"


def shown(value: object, limit: int = 40) -> str:
    """A value as an error quotes what the user sent: in quotation marks, cut short; "nothing" for none."""
    if value is None:
        return "nothing"
    text = str(value)
    return "“" + (text if len(text) <= limit else text[: limit - 1] + "…") + "”"


def parse_seed(value: str | float | int | None) -> int:
    """A seed as typed: a whole number in [0, 2**63), or -1 for a random one. Text, not a float: 2**63 - 1 has no
    exact float."""
    text = str(value if value is not None else "").strip().replace(",", "")
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(f"Seed: {shown(value)} is not {SEEDS}") from None
    if seed == RANDOM_SEED:
        return random_seed()
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"Seed: {shown(value)} is out of range; use {SEEDS}")
    return seed


def random_seed() -> int:
    return secrets.randbelow(2**32)


def _number(value: float | int | str | None, label: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number, got {shown(value)}") from None


def _whole(value: float | int | str | None, label: str, of: str = " of steps") -> int:
    number = _number(value, label)
    if not number.is_integer():
        raise ValueError(f"{label} must be a whole number{of}, got {shown(value)}")
    return int(number)


def parse_settings(**values: float | int | str | None) -> Settings:
    """Settings from the Advanced widgets and the negative prompt (any registered settings, by name), checked like
    the pipelines check them; an error names the widget by its label."""
    known = {s.name: s for s in registry.all_settings()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    parsed = {}
    for name, value in values.items():
        s = known[name]
        parsed[name] = (
            parse_text(value, name, s.label) or None
            if s.role == TEXT
            else _whole(value, s.label)
            if s.role == STEPS
            else _whole(value, s.label, "")
            if s.role == LEVEL
            else _number(value, s.label)
        )
    return Settings(**parsed).checked(by_label=True)


def vocabulary_notice(prompt: str, preset: str) -> str | None:
    """In the Shapes lab, a notice when the prompt leaves the world the models were trained on."""
    if not get_preset(preset).use_checker:
        return None
    try:
        parse_caption(prompt)
    except ValueError as err:
        return (
            f"The Shapes lab models only know captions like 'a red circle above a blue square'. {err}. "
            "They will still draw something, but the checker cannot judge it."
        )
    return None


def example_prompts(preset: str, n: int = 8) -> list[str]:
    """Example prompts that fit the preset: the Shapes vocabulary in the lab, real prompts otherwise."""
    if get_preset(preset).use_checker:
        single, two = read_prompts("heldout_single"), read_prompts("heldout_two")
        return [p for pair in zip(two, single) for p in pair][:n]  # two-object first: the lab's headline
    lines = REAL_PROMPTS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")][:n]
