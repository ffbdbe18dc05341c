"""Which weights each architecture runs with: named presets or explicit paths / hub ids.

- `lab` (default): the Shapes lab's models, trained from scratch in this repo (`make train`) and
  shipped in `lab/weights`: real, small, offline; images the lab's checker can read back.
- `tiny`: seeded random components in Karlo's and SD's structure, written once to a cache
  directory in hub layout and loaded back through the real loaders. Runs anywhere, offline, in
  seconds; untrained, so its images are noise: for testing the machinery, not for looking at.
- `pretrained`: Karlo (`kakaobrain/karlo-v1-alpha`) and Stable Diffusion 1.5 from the hub or
  its cache; on CUDA in fp16. It needs a GPU unless a device is named (`--device cpu`). Karlo has no
  image encoder: its variations borrow the one of `kakaobrain/karlo-v1-alpha-image-variations` (that
  component alone), fetched when first asked for (comparisons.app.image_in).

Any architecture's model can be swapped for another hub id or directory (`models=`, the CLIs'
`--unclip` / `--latent-diffusion` flags), and the judge for another (`judge=`, `--judge`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from comparisons.harness import Harness, pays
from comparisons.metrics import PRETRAINED_JUDGES, load_judge
from comparisons.settings import Settings
from comparisons.store import RunLog
from pipelines import registry
from pipelines.base import Pipeline
from pipelines.cpu_speed import CPUSpeed
from pipelines.devices import pick_device
from pipelines.hub import HubError, ProgressCallback
from pipelines.tiny import save_tiny

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("T2I_CACHE", ROOT / ".cache"))
LAB_WEIGHTS = ROOT / "lab" / "weights"


@dataclass(frozen=True)
class Preset:
    """Where each architecture's weights come from, and the judge that scores them."""

    name: str
    models: dict[str, str]  # architecture -> directory in diffusers' layout or hub id, in the order shown
    judge: str  # comparisons.metrics.load_judge name: never the generators' own CLIP
    fp16_on_cuda: bool  # real models run in half precision on a GPU; tiny ones gain nothing from it
    use_checker: bool = False  # the Shapes lab's checker can read the images
    needs_gpu: bool = False  # too slow and big for a CPU unless the user names the device
    # architecture -> where its variations borrow an image encoder when its model loads none (fetched on first use)
    image_encoders: dict[str, str] = field(default_factory=dict)
    fast_cpu: bool = False  # on a CPU: the speed-ups that pay for these models (FAST_CPU, Harness.make_each)
    caveat: str = ""  # what a user must know before reading its images and scores


def _under(
    root: Path, architectures: tuple[str, ...] = ("unclip", "latent_diffusion", "stable_unclip")
) -> dict[str, str]:
    return {a: str(root / a) for a in architectures}


PRESETS = {
    "lab": Preset("lab", _under(LAB_WEIGHTS), "lab", False, use_checker=True, fast_cpu=True),
    "tiny": Preset(
        "tiny",
        _under(CACHE_DIR / "tiny-v3"),
        "tiny",
        False,
        caveat="its models and judge are untrained random weights: every image is noise and CLIP scores mean "
        "nothing; it tests the machinery in seconds (the lab preset compares trained models)",
    ),
    "pretrained": Preset(
        "pretrained",
        {
            "unclip": "kakaobrain/karlo-v1-alpha",
            "latent_diffusion": "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "stable_unclip": "stabilityai/stable-diffusion-2-1-unclip-small",  # with Karlo's prior, shared
        },
        "ViT-L-14",
        True,
        needs_gpu=True,
        image_encoders={
            "unclip": "kakaobrain/karlo-v1-alpha-image-variations",  # Karlo's text-to-image repo has none
            "stable_unclip": "stabilityai/stable-diffusion-2-1-unclip-small",  # its own, read for variations alone
        },
    ),
}
DEFAULT_PRESET = "lab"
# The CPU speed-ups a fast_cpu preset's pipelines run with, those that paid on the lab's models (the bench's notes:
# comparisons.bench.lab_speed); its comparisons also run their architectures side by side where there are the cores.
FAST_CPU = CPUSpeed(trace=True, fast_attention=True, trace_cache=CACHE_DIR / "traces")
JUDGES = ("lab", "tiny", *PRETRAINED_JUDGES)  # comparisons.metrics.load_judge names


class NeedsGPUError(ValueError):
    """A preset of full-size models asked to run on a machine without CUDA, the device left to choose."""


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    first = Path(next(iter(preset.models.values())))
    if name == "lab" and not (first / "model_index.json").is_file():
        raise ValueError(f"the Shapes lab weights are missing from {LAB_WEIGHTS}: rebuild them with `make train`")
    if name == "tiny" and not (first / "model_index.json").is_file():
        save_tiny(first.parent)
    return preset


LEAVE_OUT = "none"  # as an architecture's model: leave the architecture out (Stable unCLIP's 5 GB, say)


def model_sources(preset: str, models: dict[str, str] | None = None) -> dict[str, str]:
    """The preset's architecture -> path or hub id, with `models` overriding some (none may be unknown) and
    LEAVE_OUT dropping one."""
    chosen = dict(get_preset(preset).models)
    for architecture, source in (models or {}).items():
        registry.get(architecture)
        if source == LEAVE_OUT:
            chosen.pop(architecture, None)
        elif source:
            chosen[architecture] = str(source)
    if not chosen:
        raise ValueError("every architecture is left out: keep at least one")
    return chosen


def load_models(
    preset: str = DEFAULT_PRESET,
    *,
    models: dict[str, str] | None = None,
    device: str | None = None,
    cuda_graphs: bool = False,
    progress: ProgressCallback | None = None,
    fast_cpu: bool | None = None,
) -> dict[str, Pipeline]:
    """Each architecture's pipeline of a preset (architecture -> pipeline); `models` overrides its paths or hub ids.

    On a GPU the convolutions run channels_last, and with `cuda_graphs` the denoisers replay CUDA
    graphs (three eager calls' capture per new batch shape, then much less launch overhead: for sweeps).
    `progress(repo_id, done_bytes, total_bytes)` follows downloads from the hub (pipelines.hub.download_bars
    draws them). On a CPU, `fast_cpu` (default: the preset's) turns on FAST_CPU's speed-ups; off, eager.
    """
    p = get_preset(preset)
    dev = pick_device(device)
    if p.needs_gpu and dev.type != "cuda" and device in (None, "auto"):
        raise NeedsGPUError(
            f"the {preset} preset needs a GPU and this machine has none (no CUDA device): run the lab preset, or "
            "pass --device cpu to run it on the CPU anyway (minutes per image, about 20 GB of memory)"
        )
    if cuda_graphs and dev.type != "cuda":  # optimize() would say so too, but only after loading the weights
        raise ValueError(f"CUDA graphs need a CUDA device, not {dev}")
    dtype = torch.float16 if (dev.type == "cuda" and p.fp16_on_cuda) else torch.float32
    # Karlo's prior for Stable unCLIP: shared with unCLIP's pipeline, not loaded twice (registry.load_all)
    pipes = registry.load_all(model_sources(preset, models), device=dev, dtype=dtype, progress=progress)
    if dev.type == "cuda":
        for pipe in pipes.values():
            pipe.optimize(channels_last=True, cuda_graphs=cuda_graphs)
    elif p.fast_cpu if fast_cpu is None else fast_cpu:
        for pipe in pipes.values():
            pipe.optimize_cpu(FAST_CPU)
    return pipes


def load_harness(
    preset: str = DEFAULT_PRESET,
    *,
    models: dict[str, str] | None = None,
    device: str | None = None,
    out_dir: str | Path = "results",
    log: bool = True,
    cuda_graphs: bool = False,
    progress: ProgressCallback | None = None,
    judge: str | None = None,
    fast_cpu: bool | None = None,
) -> Harness:
    """Everything a comparison needs: the preset's pipelines (or `models`), its judge (or `judge`), the run log in
    `out_dir`. The Shapes lab's checker scores only the lab's own models: it cannot read another model's images.
    `fast_cpu` (default: the preset's): on a CPU, FAST_CPU's speed-ups and comparisons run side by side where each
    architecture has a core (Harness.make_each); off, eager and one at a time, for timing comparisons."""
    p = get_preset(preset)
    sources = model_sources(preset, models)
    fast = p.fast_cpu if fast_cpu is None else fast_cpu
    pipes = load_models(
        preset, models=models, device=device, cuda_graphs=cuda_graphs, progress=progress, fast_cpu=fast
    )
    out_dir = Path(out_dir)
    harness = Harness(
        pipes,
        judge=load_judge(judge or p.judge, pick_device(device), progress),
        out_dir=out_dir,
        models=sources,
        use_checker=p.use_checker and sources == p.models,
        log=RunLog(out_dir) if log else None,
        concurrent=fast and all(pipe.device.type == "cpu" for pipe in pipes.values()) and pays(len(pipes)),
    )
    if any(pipe.cpu_speed.trace for pipe in pipes.values()):
        warm_up(harness)
    return harness


WARM_UP_PROMPT = "a red circle"


def warm_up(harness: Harness) -> None:
    """One comparison at the default settings' fewest steps, kept nowhere, as the app's Compare runs it: the
    denoisers' traces (one per input signature, which the step count does not change; loaded from the trace cache, or
    made) and the default configuration's stage-memory pass (made at the fewest steps) are then paid while the models
    load, not by the user's first image."""
    settings = Settings().fewest_steps(harness.architectures)
    harness.make_each(WARM_UP_PROMPT, 0, settings, "warm-up", {})


def load_problem(err: Exception) -> str:
    """Why a preset or model did not load, in one sentence for a status line (the whole message goes to the log)."""
    if isinstance(err, HubError):
        return err.summary
    if isinstance(err, NeedsGPUError):
        return str(err).split(":")[0]
    first = str(err).split("\n")[0]
    return first if len(first) <= 160 else first[:157] + "…"


def add_model_flags(parser, environ: dict[str, str] | None = None) -> None:
    """`--<architecture> ID_OR_DIR` per registered architecture (`--unclip`, `--latent-diffusion`): a model in place
    of the preset's; with `environ`, T2I_<ARCHITECTURE> (T2I_UNCLIP, T2I_LATENT_DIFFUSION) are the defaults."""
    for a in registry.ARCHITECTURES.values():
        default = (environ or {}).get(f"T2I_{a.name.upper()}")
        parser.add_argument(
            "--" + a.name.replace("_", "-"),
            dest=f"model_{a.name}",
            default=default,
            metavar="ID_OR_DIR",
            help=f"{a.label}: a hub id or a directory in diffusers' layout (overrides the preset); "
            f"{LEAVE_OUT} leaves it out",
        )


def models_from_flags(args) -> dict[str, str]:
    """The models `add_model_flags`' flags name (architecture -> hub id or directory)."""
    return {a: getattr(args, f"model_{a}") for a in registry.names() if getattr(args, f"model_{a}", None)}


def check_judge(name: str | None) -> str | None:
    """A judge name as typed (None or empty: the preset's own), refused when load_judge would not know it."""
    name = (name or "").strip() or None
    if name is not None and name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {', '.join(JUDGES)}")
    return name
