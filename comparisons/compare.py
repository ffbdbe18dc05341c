"""One prompt, every architecture: generate with each and print a side-by-side cost table.

python -m comparisons.compare "a red circle above a blue square" --seed 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import transformers

from comparisons.harness import Harness
from comparisons.presets import DEFAULT_PRESET, PRESETS, add_model_flags, load_harness, models_from_flags
from comparisons.settings import Settings, add_setting_flags, from_flags
from pipelines import PipelineOutput
from pipelines.base import GPUOutOfMemoryError
from pipelines.hub import download_bars


def generate(
    harness: Harness, prompt: str, seed: int, settings: Settings = Settings()
) -> dict[str, tuple[PipelineOutput, dict]]:
    """The same prompt and seed through every architecture: each one's output and logged row (all or none)."""
    made = [harness.make(arch, [prompt], [seed], settings) for arch in harness.architectures]
    harness.save(*made)
    return {m.architecture: (m.output, m.rows[0]) for m in made}


def memory_label(kind: str) -> str:
    return {"cuda_max_allocated": "peak VRAM", "process_peak_rss": "peak RSS"}.get(kind, kind)


def stage_table(outputs: dict[str, PipelineOutput]) -> pd.DataFrame:
    """Stages in pipeline order then the total: seconds and peak memory (MB) per architecture."""
    rows: dict[str, dict[str, float]] = {}
    for arch, out in outputs.items():
        for s in out.stages:
            rows.setdefault(s.name, {})
            rows[s.name][f"{arch} s"] = s.seconds
            rows[s.name][f"{arch} MB"] = s.peak_memory_bytes / 2**20
        rows.setdefault("total", {})
        rows["total"][f"{arch} s"] = out.total_seconds
        rows["total"][f"{arch} MB"] = max(s.peak_memory_bytes for s in out.stages) / 2**20
    rows["total"] = rows.pop("total")  # last
    columns = [f"{arch} {unit}" for arch in outputs for unit in ("s", "MB")]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("stage")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    add_model_flags(parser)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="run log and images go here")
    add_setting_flags(parser)
    args = parser.parse_args(argv)
    transformers.logging.disable_progress_bar()
    try:
        settings = from_flags(args).checked()
        harness = load_harness(
            args.preset, models=models_from_flags(args), device=args.device, out_dir=args.out, progress=download_bars()
        )
        results = generate(harness, args.prompt, args.seed, settings)
    except (ValueError, OSError, GPUOutOfMemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outputs = {arch: out for arch, (out, _) in results.items()}
    for arch, (out, row) in results.items():
        print(
            f"{arch:>16}: {row['image_path']}  ({row['width']}x{row['height']}, {out.device}, {out.dtype}), "
            f"CLIP score {row['clip_score']:.1f} ({harness.judge.name} judge)"
        )
    kinds = {memory_label(out.stages[0].memory_kind) for out in outputs.values()}
    print(
        f"\nprompt: {args.prompt!r}  seed: {args.seed}  memory: {', '.join(sorted(kinds))} (MB)  "
        f"log: {args.out / 'runs.jsonl'}"
    )
    print(stage_table(outputs).to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
