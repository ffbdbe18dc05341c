"""`python -m research.study [--quick] [--weights lab/weights] [--out research/findings] [--seed 0] [--device auto]`.

Runs the six claims (research.study.claims) on the lab's three models (research.study.lab_models) and writes
<out>/REPORT.md, <out>/claim<N>.png and <out>/findings.json (research.study.report). The full run takes about
15 minutes on a quiet 2-core CPU (14.4 min, 2026-12-07); `--quick` (a few prompts, fewer steps: the report's
shape, not its verdicts) under three minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lab.stable_unclip import NAME as STABLE_UNCLIP
from pipelines.devices import pick_device
from research.evaluate import weights_hash
from research.study import claims
from research.study.claims import Sizes
from research.study.lab_models import LATENT_DIFFUSION, UNCLIP, LabModels, Steps
from research.study.measures import N_BOOT
from research.study.report import diff, num, write
from research.study.report import pct as percent
from research.study.texts import CLAIMS, because

QUICK_SIZES = Sizes(
    diversity_prompts=3,
    seeds=8,
    guidance_prompts=2,
    prior_prompts=8,
    binding_prompts=8,
    speed_prompts=4,
    unclip_steps=(2, 5),
    latent_steps=(2, 10),
)
QUICK_STEPS = Steps(prior=5, decoder=5, super_res=2, unet=10)


@dataclass(frozen=True)
class StudyConfig:
    weights: Path = Path("lab/weights")  # unclip/, latent_diffusion/, stable_unclip/, judge/
    out: Path = Path("research/findings")
    seed: int = 0
    device: str = "auto"
    quick: bool = False
    only: tuple[str, ...] = tuple(CLAIMS)  # the claims to run, in order (6 reads 1-4)
    sizes: Sizes | None = None  # None: the full run's, or QUICK_SIZES with `quick`

    def __post_init__(self) -> None:
        if self.sizes is None:
            object.__setattr__(self, "sizes", QUICK_SIZES if self.quick else Sizes())
        unknown = sorted(set(self.only) - set(tuple(CLAIMS)))
        if unknown:
            raise ValueError(f"unknown claims {unknown}; the study has {tuple(CLAIMS)}")
        missing = [p for p in (UNCLIP, LATENT_DIFFUSION, STABLE_UNCLIP, "judge") if not (self.weights / p).is_dir()]
        if missing:
            raise ValueError(f"no weights for {', '.join(missing)} under {self.weights}: run `make train` first")
        pick_device(self.device)


def training_tflop(weights: Path) -> dict[str, float]:
    """Each model's training compute from its packaged budgets, the shared generator CLIP apart."""
    out = {}
    for model in (UNCLIP, LATENT_DIFFUSION, STABLE_UNCLIP):
        parts = json.loads((weights / model / "training_budget.json").read_text())["parts"]
        out[model] = sum(b["training_flops"] for part, b in parts.items() if part != "clip") / 1e12
    return out


def run(config: StudyConfig) -> dict:
    """Every claim asked for, in order; returns the findings (what findings.json holds)."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    lab_models = LabModels(config.weights, pick_device(config.device), QUICK_STEPS if config.quick else Steps())
    results, seconds = {}, {}
    steps = {
        "1": lambda: claims.claim_diversity(lab_models, config.sizes, config.seed),
        "2": lambda: claims.claim_guidance(lab_models, config.sizes, config.seed),
        "3": lambda: claims.claim_prior(lab_models, config.sizes, config.seed),
        "4": lambda: claims.claim_binding(lab_models, config.sizes, config.seed),
        "5": lambda: claims.claim_cost(lab_models, config.sizes, config.seed, training_tflop(config.weights)),
        "6": lambda: claims.claim_cause(results),
    }
    for c in config.only:
        tick = time.perf_counter()
        print(f"claim {c} ...", file=sys.stderr, flush=True)
        results[c] = steps[c]()
        results[c]["because"] = because(c, results[c], _difference)
        seconds[c] = time.perf_counter() - tick
        print(f"claim {c}: {seconds[c]:.0f} s", file=sys.stderr, flush=True)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(lab_models.unclip.device),
        "quick": config.quick,
        "seed": config.seed,
        "n_boot": N_BOOT,
        "sizes": asdict(config.sizes),
        "steps": asdict(lab_models.steps),
        "wall_minutes": (time.perf_counter() - start) / 60,
        "claim_minutes": {c: s / 60 for c, s in seconds.items()},
        "weights_sha256": {m: weights_hash(config.weights / m) for m in (UNCLIP, LATENT_DIFFUSION, STABLE_UNCLIP)},
    }
    return {"meta": meta, "claims": results}


def _difference(d: dict, pct: bool = False) -> str:
    return diff(d, percent if pct else num)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="Test the papers' claims about unCLIP and latent diffusion in the lab."
    )
    parser.add_argument("--quick", action="store_true", help="a few prompts and fewer steps (the report's shape)")
    parser.add_argument("--weights", type=Path, default=StudyConfig.weights)
    parser.add_argument("--out", type=Path, default=StudyConfig.out, help="where REPORT.md, the plots and JSON go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    parser.add_argument("--claims", default=",".join(tuple(CLAIMS)), help="comma-separated claims to run, e.g. 1,2")
    args = parser.parse_args(argv)
    try:
        config = StudyConfig(args.weights, args.out, args.seed, args.device, args.quick, tuple(args.claims.split(",")))
    except ValueError as err:
        parser.error(str(err))
    findings = run(config)
    print(f"wrote {write(findings, config.out)}")
    return findings
