"""The lab study: its measures on known inputs, and `python -m research.study --quick` end to end: the report has every
claim with the paper's statement, figures with n and intervals, a verdict and its limits; each claim's plot is a
real picture; and every number in the report is one findings.json holds."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lab.captions import parse_caption
from lab.checker import check
from lab.world import HELDOUT_PAIRS, caption_is_true_of, scene_for
from research.study.claims import decompose, open_prompts, two_colour_prompts
from research.study.lab_models import Knobs, oracle_render
from research.study.measures import binding_error, diversity_by_prompt, entropy_bits, mean_pairwise_distance, sign_of

ROOT = Path(__file__).resolve().parents[2]
VERDICTS = {"supported", "contradicted", "inconclusive"}


# ----------------------------------------------------------------------------- measures


def test_entropy_is_zero_for_one_value_and_log2_k_for_k_equally_common_ones():
    assert entropy_bits(["a"] * 8) == 0.0
    assert entropy_bits(list("abcd") * 2) == pytest.approx(2.0)
    assert entropy_bits(["a", "a", "a", "b"]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert math.isnan(entropy_bits([]))


def test_pairwise_distance_is_zero_for_copies_and_one_for_orthogonal_embeddings():
    assert mean_pairwise_distance(np.tile([[1.0, 0.0]], (5, 1))) == pytest.approx(0.0)
    assert mean_pairwise_distance(np.eye(3)) == pytest.approx(1.0)
    assert math.isnan(mean_pairwise_distance(np.eye(1)))


def test_diversity_by_prompt_reads_regions_and_sizes_over_the_images_that_found_the_object():
    rows = [
        {"architecture": "a", "prompt": "p", "read_region": r, "read_size": s}
        for r, s in [("top", "small"), ("left", "small"), (None, None), ("top", "large")]
    ]
    div = diversity_by_prompt(rows, np.eye(4)).iloc[0]
    assert (div["seeds"], div["found"]) == (4, 3)
    assert div["entropy"] == pytest.approx(math.log2(3))  # three distinct (region, size) readings
    assert div["region_entropy"] == pytest.approx(entropy_bits(["top", "left", "top"]))
    assert div["judge_distance"] == pytest.approx(1.0)


def _row(prompt: str, image: np.ndarray) -> dict:
    result = check(image, prompt)
    return {
        "prompt": prompt,
        "read_colours": sorted(d.colour for d in result.detected),
        **{f"check_{k}": v for k, v in result.as_dict().items()},
    }


def test_binding_errors_are_swapped_colours_not_missing_ones():
    prompt = "a red circle to the left of a blue square"
    spec = parse_caption(prompt)
    truth = scene_for(spec, np.random.default_rng(0))
    assert binding_error(_row(prompt, truth.render())) == 0.0
    swapped = scene_for(parse_caption("a blue circle to the left of a red square"), np.random.default_rng(0))
    assert binding_error(_row(prompt, swapped.render())) == 1.0
    missing = scene_for(parse_caption("a green circle to the left of a blue square"), np.random.default_rng(0))
    assert math.isnan(binding_error(_row(prompt, missing.render())))  # red is not drawn: no binding to judge
    assert math.isnan(binding_error(_row("a red circle", truth.render())))


def test_decomposition_splits_the_gap_into_the_prior_and_the_space():
    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    frame = pd.concat(
        pd.DataFrame({"architecture": a, "prompt": [f"p{i}" for i in range(30)], "m": base + shift})
        for a, shift in (("unclip", 2.0), ("latent_diffusion", 0.0), ("stable_unclip", 2.0))
    )
    parts = decompose(frame, "m", ["prompt"])
    assert parts["gap"]["mean_diff"] == pytest.approx(2.0) and parts["prior_part"]["mean_diff"] == pytest.approx(2.0)
    assert parts["space_part"]["mean_diff"] == pytest.approx(0.0)
    assert (sign_of(parts["gap"]), sign_of(parts["space_part"])) == (1, 0)


def test_prompts_leave_position_and_size_open_and_avoid_held_out_pairs():
    prompts = open_prompts(24, seed=0)
    assert len(set(prompts)) == 24 and prompts == open_prompts(24, seed=0)
    for p in prompts:
        spec = parse_caption(p)
        (obj,) = spec.objects
        assert obj.size is None and spec.position is None and (obj.colour, obj.shape) not in HELDOUT_PAIRS
    for p in two_colour_prompts(100):
        a, b = parse_caption(p).objects
        assert a.colour != b.colour


def test_oracle_renders_are_true_of_their_caption_and_repeatable():
    for prompt in ("a red circle", "a large blue square at the top left", "a red circle above a small blue square"):
        image = oracle_render(prompt, 3)
        assert np.array_equal(image, oracle_render(prompt, 3))
        assert check(image, prompt).all_correct, prompt
    assert caption_is_true_of(
        parse_caption("a red circle"), scene_for(parse_caption("a red circle"), np.random.default_rng(1))
    )
    with pytest.raises(ValueError, match="embedding"):
        Knobs(embedding="clip")


# ----------------------------------------------------------------------------- the quick run, end to end

NUMBER = re.compile(r"(?<![\w.,])-?\d{1,3}(?:,\d{3})+(?![\d])|(?<![\w.,])-?\d+(?:\.\d+)?%?")


def _leaves(value, numbers: list[float], strings: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            strings.append(str(k))
            _leaves(v, numbers, strings)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, numbers, strings)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        numbers.append(float(value))
    else:
        strings.append(str(value))


def _formatted(numbers: list[float]) -> set[str]:
    """Every way the report formats a number: 0-3 decimals, as itself or as a percentage."""
    out = set()
    for x in numbers:
        if math.isfinite(x):
            for d in range(4):
                out |= {f"{x:.{d}f}", f"{100 * x:.{d}f}%", f"{x:,.0f}"}
    return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("findings")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-m", "research.study", "--quick", "--out", str(out)], cwd=ROOT, env=env, check=True
    )
    return out


def test_quick_report_has_every_claim_with_its_parts(quick):
    report = (quick / "REPORT.md").read_text()
    findings = json.loads((quick / "findings.json").read_text())
    assert list(findings["claims"]) == ["1", "2", "3", "4", "5", "6"] and findings["meta"]["quick"]
    table = [line for line in report.splitlines() if re.match(r"\| \d\. ", line)]
    assert len(table) == 6, "the verdict table lists the six claims"
    sections = re.split(r"\n## ", report)[1:]
    assert [s.split(".")[0] for s in sections] == ["1", "2", "3", "4", "5", "6"]
    for section, (claim, result) in zip(sections, findings["claims"].items()):
        assert result["verdict"] in VERDICTS
        assert f"**Verdict: {result['verdict']}.**" in section and f"**{result['verdict']}**" in table[int(claim) - 1]
        for part in ("**Paper.**", "**Lab test.**", "**Limits.**", f"![claim {claim}](claim{claim}.png)"):
            assert part in section, f"claim {claim} lacks {part}"
        if claim != "6":
            assert re.search(r"\[-?\d+\.\d+%?, -?\d+\.\d+%?\]", section), f"claim {claim} shows no interval"
            assert "n" in result and all(v for v in result["n"].values()), f"claim {claim} has no n"


def test_quick_plots_are_pictures(quick):
    for claim in "123456":
        with Image.open(quick / f"claim{claim}.png") as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 5 and (pixels < 128).mean() > 0.005, f"claim {claim}'s plot is blank"


def test_every_number_in_the_report_is_in_the_json(quick):
    report = (quick / "REPORT.md").read_text()
    numbers, strings = [], []
    _leaves(json.loads((quick / "findings.json").read_text()), numbers, strings)
    formatted, text = _formatted(numbers), "\n".join(strings)
    measured = 0
    for line in report.splitlines():
        for token in NUMBER.findall(line):
            in_figures = token in formatted
            measured += in_figures
            assert in_figures or re.search(rf"(?<![\d.]){re.escape(token)}(?![\d])", text), f"{token!r} in {line!r}"
        for cell in re.findall(r"-?\d+\.\d+%? \[-?\d+\.\d+%?, -?\d+\.\d+%?\]", line):  # a figure and its interval
            assert all(t in formatted for t in NUMBER.findall(cell)), f"{cell!r} is not the JSON's"
    assert measured > 200
