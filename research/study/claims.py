"""The six claims: each runs its lab test and returns its figures, a verdict and what limits it (plain JSON).

A verdict reads paired 95% intervals: supported when the interval of the difference the paper predicts lies on
its side of 0, contradicted when it lies on the other side, inconclusive when it holds 0 (or measures disagree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lab.captions import parse_caption
from lab.prompt_files import read_prompts
from lab.stable_unclip import NAME as STABLE_UNCLIP
from lab.world import COLOURS, HELDOUT_PAIRS, SHAPES
from research.study.lab_models import LATENT_DIFFUSION, MODELS, UNCLIP, Knobs, LabModels
from research.study.measures import (
    ATTRIBUTES,
    TWO_ATTRIBUTES,
    accuracies,
    accuracy,
    binding_error,
    diversity_by_prompt,
    mean_ci,
    paired,
    sign_of,
)

DIVERSITY = ("entropy", "judge_distance")
QUALITY_FROM = 8.0  # claim 2: the guidance whose accuracy the highest is compared with
GUIDANCE_ATTRIBUTES = {
    k: ATTRIBUTES[k] for k in ("colour", "shape", "all correct")
}  # ground truth (bits of (region, size)), the judge (cosine distance)


@dataclass(frozen=True)
class Sizes:
    """How much each claim measures: the full run's, or a quick run's."""

    diversity_prompts: int = 24  # open prompts ("a red circle") for claim 1
    seeds: int = 8  # seeds per open prompt (K)
    guidance_prompts: int = 10  # open prompts per guidance value (claim 2)
    guidance: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    prior_prompts: int = 100  # single-object prompts (claim 3)
    binding_prompts: int = 100  # two-object prompts with two colours (claim 4)
    speed_prompts: int = 40  # prompts per step count (claim 5)
    unclip_steps: tuple[int, ...] = (5, 10, 25)  # decoder steps
    latent_steps: tuple[int, ...] = (5, 10, 25, 50)  # U-Net steps, both latent models


def open_prompts(n: int, seed: int) -> list[str]:
    """n captions naming a colour and a shape only, position and size left open, from pairs seen in training."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELDOUT_PAIRS]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [parse_caption(f"a {pairs[i][0]} {pairs[i][1]}").caption() for i in order[:n]]


def two_colour_prompts(n: int) -> list[str]:
    """The first n two-object validation captions whose objects differ in colour (training distribution)."""
    prompts = [p for p in read_prompts("validation") if _two_colours(p)]
    return (prompts + [p for p in read_prompts("train") if _two_colours(p)])[:n]


def _two_colours(prompt: str) -> bool:
    objects = parse_caption(prompt).objects
    return len(objects) == 2 and objects[0].colour != objects[1].colour


def _verdict(signs: Sequence[int], predicted: int = 1) -> str:
    """All measures on the predicted side: supported; all on the other: contradicted; otherwise inconclusive."""
    if signs and all(s == predicted for s in signs):
        return "supported"
    if signs and all(s == -predicted for s in signs):
        return "contradicted"
    return "inconclusive"


def _rows(lab_models: LabModels, model: str, prompts: list[str], seeds: int, knobs: Knobs = Knobs(), **cols):
    p = [prompt for prompt in prompts for _ in range(seeds)]
    s = [k for _ in prompts for k in range(seeds)]
    return lab_models.rows(model, p, s, knobs, **cols)


# ----------------------------------------------------------------------------- 1 and 2: diversity


def diversity_frame(lab_models: LabModels, prompts: list[str], seeds: int, knobs: Knobs = Knobs(), models=MODELS):
    """Per (architecture, prompt): diversity over its seeds, and the rows of every image."""
    frames, rows = [], []
    for model in models:
        r, e = _rows(lab_models, model, prompts, seeds, knobs)
        frames.append(diversity_by_prompt(r, e))
        rows += r
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def decompose(frame: pd.DataFrame, metric: str, pair_on: Sequence[str], higher: bool = True) -> dict:
    """unCLIP - latent diffusion (the gap), split into the prior's part (Stable unCLIP - latent diffusion: the
    same space, a prior added) and the space's (unCLIP - Stable unCLIP: the same prior, pixels for the latent);
    paired."""
    return {
        "gap": paired(frame, metric, UNCLIP, LATENT_DIFFUSION, pair_on, higher),
        "prior_part": paired(frame, metric, STABLE_UNCLIP, LATENT_DIFFUSION, pair_on, higher),
        "space_part": paired(frame, metric, UNCLIP, STABLE_UNCLIP, pair_on, higher),
    }


def claim_diversity(lab_models: LabModels, sizes: Sizes, seed: int) -> dict:
    prompts = open_prompts(sizes.diversity_prompts, seed)
    div, rows = diversity_frame(lab_models, prompts, sizes.seeds)
    keys = (*DIVERSITY, "region_entropy", "size_entropy")
    per_model = {m: {k: mean_ci(div.loc[div["architecture"] == m, k].tolist()) for k in keys} for m in MODELS}
    rows["found"] = rows["read_region"].notna().astype(float)
    found = {m: accuracy(rows[rows["architecture"] == m], "found") for m in MODELS}
    parts = {k: decompose(div, k, ["prompt"]) for k in DIVERSITY}
    return {
        "n": {"prompts": len(prompts), "seeds": sizes.seeds, "images_per_model": len(prompts) * sizes.seeds},
        "prompts": prompts,
        "per_model": per_model,
        "object_found": found,
        "parts": parts,
        "verdict": _verdict([sign_of(parts[k]["gap"]) for k in DIVERSITY]),  # the paper: unCLIP more diverse
    }


def claim_guidance(lab_models: LabModels, sizes: Sizes, seed: int) -> dict:
    prompts = open_prompts(sizes.guidance_prompts, seed + 1)
    curves: dict[str, list[dict]] = {m: [] for m in MODELS}
    per_prompt = []
    for g in sizes.guidance:
        div, rows = diversity_frame(lab_models, prompts, sizes.seeds, Knobs(guidance=g))
        quality = rows.groupby(["architecture", "prompt"])[ATTRIBUTES["all correct"]].mean().rename("all_correct")
        per_prompt.append(div.merge(quality.reset_index(), on=["architecture", "prompt"]).assign(guidance=g))
        for m in MODELS:
            sub, mine = div[div["architecture"] == m], rows[rows["architecture"] == m]
            point = {"guidance": g, **{k: mean_ci(sub[k].tolist()) for k in DIVERSITY}}
            point.update({f"accuracy {k}": v for k, v in accuracies(mine, GUIDANCE_ATTRIBUTES).items()})
            curves[m].append(point)
    frame = pd.concat(per_prompt, ignore_index=True)
    low, high = min(sizes.guidance), max(sizes.guidance)
    # quality is lost from the guidance the models sample at by default (8 and 7.5; 8 is on the grid)
    reference = min(sizes.guidance, key=lambda g: abs(g - QUALITY_FROM))
    parts = {}  # per prompt: what the highest guidance loses, paired across models
    for k, start in (("entropy", low), ("judge_distance", low), ("all_correct", reference)):
        wide = frame.pivot_table(index=["architecture", "prompt"], columns="guidance", values=k).reset_index()
        wide["drop"] = wide[start] - wide[high]
        parts[k] = decompose(wide, "drop", ["prompt"], higher=False)
    return {
        "n": {"prompts": len(prompts), "seeds": sizes.seeds, "guidance_values": len(sizes.guidance)},
        "prompts": prompts,
        "curves": curves,
        "quality_from": reference,
        "parts": parts,  # diversity lost from the lowest to the highest guidance; all correct from quality_from
        # the paper: unCLIP loses less diversity and less quality (its drop - latent diffusion's < 0)
        "verdict": _verdict([sign_of(parts[k]["gap"]) for k in parts], predicted=-1),
    }


# ----------------------------------------------------------------------------- 3: the prior


def claim_prior(lab_models: LabModels, sizes: Sizes, seed: int) -> dict:
    prompts = read_prompts("seen_single")[: sizes.prior_prompts]
    seeds = [seed + i for i in range(len(prompts))]
    frames = []
    for model in (UNCLIP, STABLE_UNCLIP):
        for embedding in ("prior", "text", "oracle"):
            rows, _ = lab_models.rows(model, prompts, seeds, Knobs(embedding=embedding))
            frames.append(pd.DataFrame(rows))
    frame = pd.concat(frames, ignore_index=True)
    table = {a: accuracies(frame[frame["architecture"] == a], ATTRIBUTES) for a in frame["architecture"].unique()}
    column = ATTRIBUTES["all correct"]
    diffs = {
        model: {
            "prior_minus_text": paired(frame, column, model, f"{model}/text", ["prompt", "seed"]),
            "oracle_minus_prior": paired(frame, column, f"{model}/oracle", model, ["prompt", "seed"]),
        }
        for model in (UNCLIP, STABLE_UNCLIP)
    }
    return {
        "n": {"prompts": len(prompts), "images_per_variant": len(prompts)},
        "accuracy": table,
        "paired_all_correct": diffs,
        "verdict": _verdict([sign_of(diffs[UNCLIP]["prior_minus_text"])]),
    }


# ----------------------------------------------------------------------------- 4: binding


def claim_binding(lab_models: LabModels, sizes: Sizes, seed: int) -> dict:
    prompts = two_colour_prompts(sizes.binding_prompts)
    seeds = [seed + i for i in range(len(prompts))]
    frames = []
    for model, embedding in ((UNCLIP, "prior"), (LATENT_DIFFUSION, "prior"), (STABLE_UNCLIP, "prior")) + (
        (UNCLIP, "oracle"),
        (STABLE_UNCLIP, "oracle"),
    ):
        rows, _ = lab_models.rows(model, prompts, seeds, Knobs(embedding=embedding))
        frames.append(pd.DataFrame(rows))
    frame = pd.concat(frames, ignore_index=True)
    frame["binding_error"] = [binding_error(row) for _, row in frame.iterrows()]
    archs = list(frame["architecture"].unique())
    rates = {a: accuracy(frame[frame["architecture"] == a], "binding_error") for a in archs}
    table = {a: accuracies(frame[frame["architecture"] == a], TWO_ATTRIBUTES) for a in archs}
    pairs = ["prompt", "seed"]
    parts = decompose(frame, "binding_error", pairs, higher=False)
    oracle = {
        m: paired(frame, "binding_error", m, f"{m}/oracle", pairs, higher=False) for m in (UNCLIP, STABLE_UNCLIP)
    }
    return {
        "n": {"prompts": len(prompts), "images_per_variant": len(prompts)},
        "binding_error": rates,
        "accuracy": table,
        "parts": parts,
        "minus_oracle": oracle,  # the model's binding errors - its decoder's on a true render's embedding
        "verdict": _verdict([sign_of(parts["gap"])]),  # the paper: unCLIP binds worse (more errors)
    }


# ----------------------------------------------------------------------------- 5: cost


def claim_cost(lab_models: LabModels, sizes: Sizes, seed: int, budgets: dict[str, float]) -> dict:
    prompts = read_prompts("seen_single")[100 : 100 + sizes.speed_prompts]
    seeds = [seed + i for i in range(len(prompts))]
    points: dict[str, list[dict]] = {}
    for model, steps in ((UNCLIP, sizes.unclip_steps), (LATENT_DIFFUSION, sizes.latent_steps)) + (
        (STABLE_UNCLIP, sizes.latent_steps),
    ):
        for n in steps:
            knobs = Knobs(steps=n)
            rows, _ = lab_models.rows(model, prompts, seeds, knobs)
            frame = pd.DataFrame(rows)
            points.setdefault(model, []).append(
                {
                    "steps": n,
                    "accuracy": accuracy(frame, ATTRIBUTES["all correct"]),
                    "shape": accuracy(frame, ATTRIBUTES["shape"]),
                    "seconds_per_image": lab_models.seconds_per_image(model, prompts[0], knobs),
                    "batched_seconds_per_image": float(frame["seconds_per_image"].mean()),
                    "gflop_per_image": lab_models.flops_per_image(model, prompts[0], knobs) / 1e9,
                }
            )
    default = {UNCLIP: lab_models.steps.decoder, LATENT_DIFFUSION: lab_models.steps.unet}
    ref = next((p for p in points[UNCLIP] if p["steps"] == default[UNCLIP]), points[UNCLIP][-1])
    # the latent model's cheapest setting whose accuracy reaches unCLIP's default's lower bound
    reach = [p for p in points[LATENT_DIFFUSION] if p["accuracy"]["mean"] >= ref["accuracy"]["low"]]
    cheapest = min(reach, key=lambda p: p["seconds_per_image"]) if reach else None
    if cheapest is None:
        verdict = "contradicted"
    elif (
        cheapest["seconds_per_image"] < ref["seconds_per_image"]
        and cheapest["gflop_per_image"] < ref["gflop_per_image"]
    ):
        verdict = "supported"
    elif (
        cheapest["seconds_per_image"] > ref["seconds_per_image"]
        and cheapest["gflop_per_image"] > ref["gflop_per_image"]
    ):
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return {
        "n": {"prompts": len(prompts)},
        "points": points,
        "unclip_default": ref,
        "latent_diffusion_cheapest_reaching_it": cheapest,
        "training_tflop": budgets,
        "verdict": verdict,
    }


# ----------------------------------------------------------------------------- 6: prior or space

CAUSE_MEASURES = (  # (claim, label, how to reach its decomposition)
    ("1", "diversity, ground truth", lambda r: r["1"]["parts"]["entropy"]),
    ("1", "diversity, judge", lambda r: r["1"]["parts"]["judge_distance"]),
    ("2", "diversity lost to guidance, ground truth", lambda r: r["2"]["parts"]["entropy"]),
    ("2", "diversity lost to guidance, judge", lambda r: r["2"]["parts"]["judge_distance"]),
    ("2", "all correct lost to guidance", lambda r: r["2"]["parts"]["all_correct"]),
    ("4", "binding errors", lambda r: r["4"]["parts"]),
)
PERCENT_MEASURES = {"all correct lost to guidance", "binding errors"}  # proportions: shown as percentages


def attribute(parts: dict) -> str:
    """Which difference carries a gap: the prior, the space, both, neither (no gap), or unclear."""
    gap, prior, space = (sign_of(parts[k]) for k in ("gap", "prior_part", "space_part"))
    if gap == 0:
        return "no gap"
    if prior == gap and space != gap:
        return "prior"
    if space == gap and prior != gap:
        return "space"
    return "both" if prior == space == gap else "unclear"


def claim_cause(results: dict) -> dict:
    """Claims 1, 2 and 4's gaps between unCLIP and latent diffusion traced through Stable unCLIP."""
    table = [
        {
            "claim": claim,
            "measure": label,
            **get(results),
            "carried_by": attribute(get(results)),
            "percent": label in PERCENT_MEASURES,
        }
        for claim, label, get in CAUSE_MEASURES
        if claim in results
    ]
    carried = [row["carried_by"] for row in table if row["carried_by"] != "no gap"]
    prior_effect = (
        {m: results["3"]["paired_all_correct"][m]["prior_minus_text"] for m in (UNCLIP, STABLE_UNCLIP)}
        if "3" in results
        else {}
    )
    verdict = (
        "supported"
        if carried and all(c == "prior" for c in carried)
        else ("contradicted" if carried and all(c == "space" for c in carried) else "inconclusive")
    )
    return {"table": table, "prior_effect": prior_effect, "verdict": verdict}
