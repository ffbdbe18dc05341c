"""One prompt, both architectures: generate with each and print a side-by-side cost table.

    python -m comparisons.compare "a red circle above a blue square" --seed 0
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import transformers

from comparisons.presets import DEFAULT_PRESET, PRESETS, load_models
from pipelines import LatentDiffusion, PipelineOutput, UnCLIP
from pipelines.common import GPUOutOfMemoryError

ARCHITECTURES = ("unclip", "latent_diffusion")


@dataclass(frozen=True)
class CompareSettings:
    """Steps and guidance of every stage; the defaults are Karlo's and SD's."""

    prior_steps: int = 25
    decoder_steps: int = 25
    super_res_steps: int = 7
    prior_guidance: float = 4.0
    decoder_guidance: float = 8.0
    steps: int = 50  # latent diffusion U-Net steps
    guidance: float = 7.5  # latent diffusion guidance
    negative_prompt: str | None = None  # latent diffusion only: unCLIP has no negative prompt


def generate(
    unclip: UnCLIP, latent_diffusion: LatentDiffusion, prompt: str, seed: int, settings: CompareSettings = CompareSettings()
) -> dict[str, PipelineOutput]:
    """The same prompt and seed through both architectures."""
    s = settings
    return {
        "unclip": unclip(
            prompt, seed=seed, prior_num_inference_steps=s.prior_steps, decoder_num_inference_steps=s.decoder_steps,
            super_res_num_inference_steps=s.super_res_steps, prior_guidance_scale=s.prior_guidance,
            decoder_guidance_scale=s.decoder_guidance,
        ),
        "latent_diffusion": latent_diffusion(
            prompt, seed=seed, negative_prompt=s.negative_prompt, num_inference_steps=s.steps, guidance_scale=s.guidance
        ),
    }


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
    parser.add_argument("--unclip", help="unCLIP directory or hub id (overrides the preset)")
    parser.add_argument("--latent-diffusion", help="latent diffusion directory or hub id (overrides the preset)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    parser.add_argument("--out", type=Path, default=Path("results/compare"), help="where the two PNGs go")
    for field, default in CompareSettings.__dataclass_fields__.items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(default.default) if default.default is not None else str, default=default.default)
    args = parser.parse_args(argv)
    transformers.logging.disable_progress_bar()
    settings = CompareSettings(**{f: getattr(args, f) for f in CompareSettings.__dataclass_fields__})
    try:
        unclip, ld = load_models(args.preset, unclip=args.unclip, latent_diffusion=args.latent_diffusion, device=args.device)
        outputs = generate(unclip, ld, args.prompt, args.seed, settings)
    except (ValueError, GPUOutOfMemoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for arch, out in outputs.items():
        path = args.out / f"{arch}-seed{args.seed}.png"
        out.pil_images()[0].save(path)
        print(f"{arch:>16}: {path}  ({out.images.shape[2]}x{out.images.shape[1]}, {out.device}, {out.dtype})")
    kinds = {memory_label(out.stages[0].memory_kind) for out in outputs.values()}
    print(f"\nprompt: {args.prompt!r}  seed: {args.seed}  memory: {', '.join(sorted(kinds))} (MB)")
    print(stage_table(outputs).to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
