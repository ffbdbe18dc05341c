"""Sweep throughput through the whole harness: a batched sweep against a naive loop of one call per image."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from comparisons.bench.pipelines import SETTINGS, _sync
from comparisons.harness import Harness
from comparisons.metrics import load_judge
from comparisons.presets import DEFAULT_PRESET, get_preset, load_models
from comparisons.settings import Settings
from comparisons.store import RunLog
from comparisons.sweep import plan_jobs, read_prompts, run_sweep

ROOT = Path(__file__).resolve().parent.parent.parent


def bench_sweep(
    device: torch.device, preset: str = DEFAULT_PRESET, n_prompts: int = 8, n_seeds: int = 2, batch_size: int = 16
) -> dict:
    """Images/s of a batched sweep against a naive loop (one call per prompt and seed), both through
    the full harness (judge scores, checker, PNGs, run log), same models, grid and settings."""
    prompts = read_prompts(ROOT / "lab" / "prompts" / "heldout_two.txt")[:n_prompts]
    s = SETTINGS["tiny"]
    jobs = plan_jobs(
        prompts,
        list(range(n_seeds)),
        [s["latent_diffusion"]["num_inference_steps"]],
        [s["latent_diffusion"]["guidance_scale"]],
        ["unclip", "latent_diffusion"],
        Settings(super_res_steps=s["unclip"]["super_res_num_inference_steps"]),
    )
    pipes, config = load_models(preset, device=str(device)), get_preset(preset)
    judge = load_judge(config.judge, device)
    with tempfile.TemporaryDirectory() as tmp:

        def harness(name: str) -> Harness:
            return Harness(
                pipes,
                judge=judge,
                out_dir=Path(tmp) / name,
                use_checker=config.use_checker,
                log=RunLog(Path(tmp) / name),
            )

        run_sweep(harness("warm-up"), jobs[:2] + jobs[-2:], batch_size=2, progress=False)
        naive = harness("naive")
        _sync()
        start = time.perf_counter()
        for job in jobs:
            naive.generate(job.architecture, [job.prompt], [job.seed], job.settings)
        _sync()
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        run_sweep(harness("batched"), jobs, batch_size=batch_size, progress=False)
        _sync()
        batched_s = time.perf_counter() - start
    return {
        "preset": preset,
        "images": len(jobs),
        "batch_size": batch_size,
        "naive_images_per_s": len(jobs) / naive_s,
        "batched_images_per_s": len(jobs) / batched_s,
        "speedup": naive_s / batched_s,
    }
