"""Input checks at the pipelines' edge.

Every check raises a `ValueError` that says what was wrong and what is allowed, so that bad input
never reaches a torch kernel; `check_finite` is the one check on what a stage produced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

MAX_SEED = 2**63  # torch.Generator.manual_seed takes any int64; keep seeds non-negative
MAX_STEPS = 1000  # the training schedules of Karlo and SD have 1000 timesteps
MAX_PROMPT_CHARS = 5_000  # CLIP reads 77 tokens (about 75 words); beyond this a prompt is a paste accident


def _named(name: str) -> str:
    """How an error names what was wrong: an argument as code (`num_inference_steps`), a widget's label as its
    words ("unCLIP prior steps"), so that each reader sees the name they typed into."""
    return f"`{name}`" if name.isidentifier() else name


def check_prompts(prompt: str | Sequence[str], name: str = "prompt") -> list[str]:
    """A prompt or a non-empty list of non-empty prompts -> list of prompts."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts:
        raise ValueError(f"{_named(name)} is empty: give a prompt string or a non-empty list of prompts")
    for p in prompts:
        if not isinstance(p, str):
            raise ValueError(f"{_named(name)} must hold strings, got {type(p).__name__}")
        if not p.strip():
            raise ValueError(f"{_named(name)} holds an empty prompt: every prompt needs some text")
        _check_length(p, name)
    return prompts


def _check_length(text: str, name: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"{_named(name)} is {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} (CLIP reads about 75 words)"
        )


def check_negative_prompts(negative_prompt: str | Sequence[str] | None, n: int) -> list[str]:
    """None -> n empty strings (the unconditional prompt); a string or n strings otherwise, each within the
    prompt's length limit."""
    if negative_prompt is None:
        return [""] * n
    if not isinstance(negative_prompt, (str, list, tuple)):
        raise ValueError(
            f"`negative_prompt` must be a string or a list of strings, got {type(negative_prompt).__name__}"
        )
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
        raise ValueError(f"{_named(name)} must be a whole number, got {steps!r:.40}")
    if not minimum <= steps <= MAX_STEPS:
        needs = f" ({stage} needs at least {minimum})" if stage and steps < minimum and minimum > 1 else ""
        raise ValueError(f"{_named(name)} must be between {minimum} and {MAX_STEPS}, got {steps}{needs}")
    return int(steps)


def check_guidance(scale: float, name: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)):
        raise ValueError(f"{_named(name)} must be a number, got {scale!r:.40}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"{_named(name)} must be a finite number >= 0 (1.0 turns guidance off), got {scale}")
    return float(scale)


def check_strength(strength: float, name: str = "strength") -> float:
    """img2img's strength: the fraction of the schedule that denoises, in (0, 1] (1 starts from pure noise)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating)):
        raise ValueError(f"{_named(name)} must be a number in (0, 1], got {strength!r:.40}")
    if not 0 < strength <= 1:  # NaN fails this too
        raise ValueError(f"{_named(name)} must be in (0, 1], got {strength} (1 starts from pure noise)")
    return float(strength)


def check_count(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{_named(name)} must be a whole number >= 1, got {n!r:.40}")
    return int(n)


def check_size(value: int, factor: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < factor or value % factor:
        raise ValueError(f"{_named(name)} must be a positive multiple of {factor} for this model, got {value!r:.40}")
    return int(value)


def check_seed(seed: int, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"{_named(name)} must be a whole number, got {seed!r:.40}")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"{_named(name)} must be in [0, 2**63), got {seed}")
    return int(seed)


def repeat_prompts(prompts: list[str], num_images_per_prompt: int) -> list[str]:
    return [p for p in prompts for _ in range(num_images_per_prompt)]


class NonFiniteError(ValueError):
    """A stage produced NaN or inf (extreme guidance, float16 overflow): no image is made from it."""


def check_finite(values: torch.Tensor, stage: str, settings: dict[str, object]) -> torch.Tensor:
    """`values` as they are if every element is finite, else a NonFiniteError naming the stage and its settings.
    One reduction per stage (a device sync on a GPU), never per step."""
    if not bool(torch.isfinite(values).all()):
        given = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())
        dtype = str(values.dtype).removeprefix("torch.")
        raise NonFiniteError(
            f"the {stage} stage produced NaN or infinite values ({given}, {dtype}): "
            "lower the guidance scale, or run in float32 or bfloat16 if float16 overflowed; no image was made"
        )
    return values
