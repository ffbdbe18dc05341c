"""Where to compute: one reading of a `--device` string for the pipelines, the lab and the comparisons, and what a
call records of where it ran (the device's name, the CPU kernel path)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

AUTO = "auto"  # CUDA if this machine has it, else the CPU


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


# Variables that cap the instruction set of the libraries a CPU call runs through besides ATen's own kernels (which
# torch.backends.cpu.get_cpu_capability() names, ATEN_CPU_CAPABILITY capping them): each cap is another kernel path.
KERNEL_CAPS = {"ONEDNN_MAX_CPU_ISA": "oneDNN", "MKL_ENABLE_INSTRUCTIONS": "MKL"}


def cpu_kernels() -> str:
    """The CPU kernel path of this process: ATen's capability ("AVX512", "AVX2", "DEFAULT"), then any cap set on
    oneDNN's or MKL's ("AVX512; oneDNN AVX2"). Two processes on one kernel path compute alike."""
    caps = [f"{library} {os.environ[name]}" for name, library in KERNEL_CAPS.items() if os.environ.get(name)]
    return "; ".join([torch.backends.cpu.get_cpu_capability(), *caps])


@functools.cache
def cpu_name() -> str:
    """The processor's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), as Linux reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str | torch.device) -> str:
    """The GPU's name on CUDA, the processor's elsewhere."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
