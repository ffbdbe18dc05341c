"""Where to compute: one reading of a `--device` string for the pipelines, the lab and the comparisons."""

from __future__ import annotations

import torch

AUTO = "auto"  # CUDA if this machine has it, else the CPU


def pick_device(name: str | torch.device | None = AUTO) -> torch.device:
    """ "auto" (or None): CUDA if present, else the CPU; otherwise a torch device string such as
    "cpu", "cuda" or "cuda:1", refused with a ValueError when torch cannot read it."""
    if name is None or name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        return name
    if not isinstance(name, str):
        raise ValueError(f"a device must be a string such as 'cuda', got {type(name).__name__}")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or another torch device such as mps"
        ) from None
