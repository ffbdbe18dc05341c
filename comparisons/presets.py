"""Which weights each architecture runs with: named presets or explicit paths / hub ids.

- `lab` (default): the Shapes lab's models, trained from scratch in this repo (`make train`) and
  shipped in `lab/weights`: real, small, offline; images the lab's checker can read back.
- `tiny`: seeded random components in Karlo's and SD's structure, written once to a cache
  directory in hub layout and loaded back through the real loaders. Runs anywhere, offline, in
  seconds; untrained, so its images are noise: for testing the machinery, not for looking at.
- `pretrained`: Karlo (`kakaobrain/karlo-v1-alpha`) and Stable Diffusion 1.5 from the hub or
  its cache; on CUDA in fp16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from comparisons.harness import Harness
from comparisons.metrics import load_judge
from comparisons.store import RunLog
from pipelines import LatentDiffusion, UnCLIP, load_latent_diffusion, load_unclip
from pipelines.devices import pick_device
from pipelines.hub import ProgressCallback

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("T2I_CACHE", ROOT / ".cache"))
LAB_WEIGHTS = ROOT / "lab" / "weights"


@dataclass(frozen=True)
class Preset:
    """Where both architectures' weights come from."""

    name: str
    unclip: str  # directory in diffusers' layout or hub id
    latent_diffusion: str
    judge: str  # comparisons.metrics.load_judge name: never the generators' own CLIP
    fp16_on_cuda: bool  # real models run in half precision on a GPU; tiny ones gain nothing from it
    use_checker: bool = False  # the Shapes lab's checker can read the images


PRESETS = {
    "lab": Preset("lab", str(LAB_WEIGHTS / "unclip"), str(LAB_WEIGHTS / "latent_diffusion"), "lab", False, use_checker=True),
    "tiny": Preset("tiny", str(CACHE_DIR / "tiny-v2" / "unclip"), str(CACHE_DIR / "tiny-v2" / "latent_diffusion"), "tiny", False),
    "pretrained": Preset("pretrained", "kakaobrain/karlo-v1-alpha", "stable-diffusion-v1-5/stable-diffusion-v1-5", "ViT-L-14", True),
}
DEFAULT_PRESET = "lab"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    if name == "lab" and not (Path(preset.unclip) / "model_index.json").is_file():
        raise ValueError(f"the Shapes lab weights are missing from {LAB_WEIGHTS}: rebuild them with `make train`")
    if name == "tiny" and not (Path(preset.unclip) / "model_index.json").is_file():
        from pipelines.tiny import save_tiny

        save_tiny(Path(preset.unclip).parent)
    return preset


def load_models(
    preset: str = DEFAULT_PRESET,
    *,
    unclip: str | None = None,
    latent_diffusion: str | None = None,
    device: str | None = None,
    cuda_graphs: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[UnCLIP, LatentDiffusion]:
    """Both pipelines of a preset; `unclip` / `latent_diffusion` override its paths.

    On a GPU the convolutions run channels_last, and with `cuda_graphs` the denoisers replay CUDA
    graphs (three eager calls' capture per new batch shape, then much less launch overhead: for sweeps).
    `progress(repo_id, done_bytes, total_bytes)` follows downloads from the hub (pipelines.hub.download_bars
    draws them).
    """
    p = get_preset(preset)
    dev = pick_device(device)
    if cuda_graphs and dev.type != "cuda":  # optimize() would say so too, but only after loading the weights
        raise ValueError(f"CUDA graphs need a CUDA device, not {dev}")
    dtype = torch.float16 if (dev.type == "cuda" and p.fp16_on_cuda) else torch.float32
    pipes = (load_unclip(unclip or p.unclip, device=dev, dtype=dtype, progress=progress),
             load_latent_diffusion(latent_diffusion or p.latent_diffusion, device=dev, dtype=dtype, progress=progress))
    if dev.type == "cuda":
        for pipe in pipes:
            pipe.optimize(channels_last=True, cuda_graphs=cuda_graphs)
    return pipes


def load_harness(
    preset: str = DEFAULT_PRESET,
    *,
    unclip: str | None = None,
    latent_diffusion: str | None = None,
    device: str | None = None,
    out_dir: str | Path = "results",
    log: bool = True,
    cuda_graphs: bool = False,
    progress: ProgressCallback | None = None,
) -> Harness:
    """Everything a comparison needs: both pipelines, the preset's judge, the run log in `out_dir`."""
    p = get_preset(preset)
    pipes = load_models(preset, unclip=unclip, latent_diffusion=latent_diffusion, device=device,
                        cuda_graphs=cuda_graphs, progress=progress)
    out_dir = Path(out_dir)
    return Harness(
        *pipes, judge=load_judge(p.judge, pick_device(device), progress), out_dir=out_dir,
        models={"unclip": unclip or p.unclip, "latent_diffusion": latent_diffusion or p.latent_diffusion},
        use_checker=p.use_checker, log=RunLog(out_dir) if log else None,
    )
