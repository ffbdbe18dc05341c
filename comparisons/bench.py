"""Benchmark: our pipelines against diffusers' on identical components and settings.

    python -m comparisons.bench [--repeats 7] [--json FILE]

Runs are interleaved (ours, theirs, theirs, ours, ...) after a warm-up of each, so drift in the
machine's speed falls on both sides alike; the table gives medians and the ratio ours/theirs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import torch
import transformers
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

from comparisons.presets import pick_device
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

UNCLIP_SETTINGS = dict(prior_num_inference_steps=10, decoder_num_inference_steps=10, super_res_num_inference_steps=4,
                       prior_guidance_scale=4.0, decoder_guidance_scale=8.0)
LD_SETTINGS = dict(num_inference_steps=20, guidance_scale=7.5)
PROMPT = "a red circle above a blue square"


@dataclass(frozen=True)
class BenchResult:
    architecture: str
    ours_median_s: float
    diffusers_median_s: float
    ratio: float  # ours / diffusers: below 1 is faster
    repeats: int
    settings: dict


def _gens(seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed)]


def interleaved(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Wall times of both after one warm-up each; the order alternates every round."""
    ours(), theirs()
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for r in range(repeats):
        order = [("ours", ours), ("theirs", theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times["ours"], times["theirs"]


def bench_tiny(repeats: int, device: torch.device) -> list[BenchResult]:
    results = []
    unclip = build_tiny_unclip(0).to(device)
    ref_unclip = UnCLIPPipeline(**unclip.components())
    ld = build_tiny_latent_diffusion(0).to(device)
    ref_ld = StableDiffusionPipeline(**ld.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    cases = [
        ("unclip", UNCLIP_SETTINGS, lambda: unclip(PROMPT, generator=_gens(0), **UNCLIP_SETTINGS),
         lambda: ref_unclip(PROMPT, generator=_gens(0), output_type="np", **UNCLIP_SETTINGS)),
        ("latent_diffusion", LD_SETTINGS, lambda: ld(PROMPT, generator=_gens(0), **LD_SETTINGS),
         lambda: ref_ld(PROMPT, generator=_gens(0), output_type="np", **LD_SETTINGS)),
    ]
    for ref in (ref_unclip, ref_ld):
        ref.set_progress_bar_config(disable=True)  # a progress bar is not what we compare
    for name, settings, ours, theirs in cases:
        t_ours, t_theirs = interleaved(ours, theirs, repeats)
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        results.append(BenchResult(name, m_ours, m_theirs, m_ours / m_theirs, repeats, settings))
    return results


def machine() -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": str(torch.get_num_threads()), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", dest="json_file", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    transformers.logging.disable_progress_bar()
    results = bench_tiny(args.repeats, pick_device(args.device))
    info = machine()
    print(f"tiny components, {args.device}, median of {args.repeats} interleaved runs ({info['date']}, torch {info['torch']})")
    print(f"{'architecture':<18}{'ours s':>10}{'diffusers s':>13}{'ratio':>8}")
    for r in results:
        print(f"{r.architecture:<18}{r.ours_median_s:>10.3f}{r.diffusers_median_s:>13.3f}{r.ratio:>8.2f}")
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump({"machine": info, "results": [asdict(r) for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
