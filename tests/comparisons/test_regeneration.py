"""What regenerating a row promises (comparisons.regeneration): rows and PNGs record how they were made; made again
that way the pixels are identical, made again otherwise (alone, other threads, another kernel path) they stay within
the measured close bound, which another seed's image does not; the audit says so row by row."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comparisons import audit
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.presets import load_models
from comparisons.records import MADE_HOW, made_how_from_png, parse_infotext, save_png
from comparisons.regeneration import (
    CLOSE,
    CLOSE_BOUND,
    EXACT,
    Difference,
    difference,
    regenerate,
    regenerate_batch,
    remake,
    what_differs,
)
from comparisons.settings import Settings
from comparisons.store import RunLog
from pipelines.devices import cpu_kernels
from pipelines.tiny import build_tiny_latent_diffusion

from helpers import png_pixels

ROOT = Path(__file__).resolve().parents[2]
FAST = Settings(
    prior_steps=2,
    decoder_steps=2,
    super_res_steps=2,
    steps=2,
    decoder_guidance=4.0,
    guidance=4.0,
    stable_unclip_prior_steps=2,
    stable_unclip_steps=2,
    stable_unclip_guidance=4.0,
)
PROMPTS = ["a red circle", "a blue square above a green cross", "a small yellow triangle"]


@pytest.fixture(scope="module")
def pipes():
    return load_models("tiny", device="cpu")


@pytest.fixture(scope="module")
def made(pipes, tmp_path_factory):
    """Each architecture's batch of three, logged: (folder, architecture -> its rows)."""
    out = tmp_path_factory.mktemp("made")
    harness = Harness(pipes, tiny_judge(), out, log=RunLog(out))
    return out, {a: harness.generate(a, PROMPTS, [0, 1, 2], FAST)[1] for a in pipes}


def paths(rows: list[dict]) -> list[Path]:
    return [Path(r["image_path"]) for r in rows]


# ----------------------------------------------------------------------------- what rows record


def test_rows_and_pngs_record_how_they_were_made(made):
    _, by_architecture = made
    rows = by_architecture["unclip"]
    ids = {r["batch_id"] for r in rows}
    assert len(ids) == 1 and [r["batch_pos"] for r in rows] == [0, 1, 2] and {r["batch_size"] for r in rows} == {3}
    assert ids != {by_architecture["latent_diffusion"][0]["batch_id"]}  # one id per call
    row = rows[1]
    assert (row["device"], row["dtype"], row["cpu_speed"]) == ("cpu", "float32", "eager")
    assert row["threads"] == torch.get_num_threads() and row["cpu_kernels"] == cpu_kernels()
    assert row["device_name"] and row["torch_version"] == torch.__version__
    with Image.open(row["image_path"]) as im:
        parsed = parse_infotext(im.text["parameters"])
    # AUTOMATIC1111's keys for the batch, and every other way the image depends on how it was made
    assert (parsed["Batch size"], parsed["Batch pos"]) == ("3", "1")
    for column, label in MADE_HOW.items():
        assert parsed[label] == str(row[column]), label
    recorded = made_how_from_png(row["image_path"])
    assert recorded == {**{c: row[c] for c in MADE_HOW}, "diffusers_version": row["diffusers_version"]} | {
        "model_hash": row["model_hash"]
    }


# ----------------------------------------------------------------------------- exact and close


@pytest.mark.parametrize("architecture", ["unclip", "latent_diffusion"])
def test_a_batch_made_again_the_way_it_was_made_is_exact(made, pipes, architecture):
    _, by_architecture = made
    again = regenerate_batch(pipes[architecture], paths(by_architecture[architecture]))
    for result in again:
        assert result.case == EXACT and result.why == () and result.holds, str(result)
        assert result.difference == Difference(0, 0.0, float("inf"))
        assert np.array_equal(np.asarray(result.image), png_pixels(result.path))
    assert "exact: identical pixels, as promised" == str(again[0])


@pytest.mark.parametrize("architecture", ["unclip", "latent_diffusion"])
def test_a_row_of_a_batch_made_again_alone_is_close_and_says_why(made, pipes, architecture):
    _, by_architecture = made
    for path in paths(by_architecture[architecture]):
        alone = regenerate(pipes[architecture], path)
        assert alone.case == CLOSE and alone.why == ("made in a batch of 3, made again alone",), alone.why
        assert alone.holds, str(alone)
        assert "PSNR" in str(alone) or alone.difference.max_levels == 0
    far = difference(np.asarray(remake(pipes[architecture], path, seed=7)), png_pixels(path))
    assert not CLOSE_BOUND.admits(far), f"another seed is only {far} away: the bound is blind"


def test_a_row_made_with_one_thread_is_made_again_with_one(pipes, tmp_path):
    harness = Harness(pipes, tiny_judge(), tmp_path)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, rows = harness.generate("unclip", ["a red circle"], [3], FAST)
    finally:
        torch.set_num_threads(previous)
    assert rows[0]["threads"] == 1
    again = regenerate(pipes["unclip"], rows[0]["image_path"])  # in this thread's own count of threads
    assert again.case == EXACT and again.difference.max_levels == 0, str(again)
    assert torch.get_num_threads() == previous  # set back


def test_what_differs_names_each_difference_in_words(made, pipes, tmp_path):
    _, by_architecture = made
    row = by_architecture["latent_diffusion"][0]
    recorded = made_how_from_png(row["image_path"])
    pipe = pipes["latent_diffusion"]
    assert what_differs(recorded, pipe, 3) == []
    changed = recorded | {"cpu_kernels": "DEFAULT; oneDNN SSE41", "torch_version": "2.0.0", "model_hash": "abc"}
    why = what_differs(changed, pipe, 1)
    assert why[0] == "made in a batch of 3, made again alone"
    assert f"cpu kernels DEFAULT; oneDNN SSE41, now {cpu_kernels()}" in why
    assert f"torch 2.0.0, now {torch.__version__}" in why
    assert any(w.startswith("model hash abc, now ") for w in why)
    # a PNG from before rows recorded how: close, saying what it lacks
    old = {k: v for k, v in row.items() if k not in MADE_HOW}
    path = save_png(Image.open(row["image_path"]).convert("RGB"), tmp_path / "old.png", old)
    result = regenerate(pipe, path)
    assert result.case == CLOSE and "its PNG does not record its threads" in result.why and result.holds


def test_batch_arguments_are_checked(made, pipes):
    _, by_architecture = made
    unclip, ld = paths(by_architecture["unclip"]), paths(by_architecture["latent_diffusion"])
    with pytest.raises(ValueError, match="not of one batch"):
        regenerate_batch(pipes["unclip"], [unclip[0], ld[1]])
    with pytest.raises(ValueError, match="batch order"):
        regenerate_batch(pipes["unclip"], [unclip[1], unclip[0], unclip[2]])
    with pytest.raises(ValueError, match="no PNG"):
        regenerate_batch(pipes["unclip"], [])


ANOTHER_PATH = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
MAKE_THERE = f"""
import sys
from pathlib import Path
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.presets import load_models
from comparisons.settings import Settings
from comparisons.store import RunLog
out = Path(sys.argv[1])
harness = Harness(load_models("tiny", device="cpu"), tiny_judge(), out, log=RunLog(out))
for architecture in harness.architectures:
    harness.generate(architecture, {PROMPTS!r}, [0, 1, 2], {FAST!r})
"""


def test_rows_made_on_another_kernel_path_are_close_and_say_so(pipes, tmp_path):
    """An SSE-only machine, as far as this one can stand in for it: every library's kernels capped (or, where this
    process runs capped so, none)."""
    environ = {k: v for k, v in os.environ.items() if k not in ANOTHER_PATH} | {"HF_HUB_OFFLINE": "1"}
    sse = cpu_kernels() == "DEFAULT; oneDNN SSE41; MKL SSE4_2"
    subprocess.run(
        [sys.executable, "-c", MAKE_THERE, str(tmp_path)],
        cwd=ROOT,
        env=environ | ({} if sse else ANOTHER_PATH),
        check=True,
    )
    rows = RunLog(tmp_path).read_records()
    assert len({r["cpu_kernels"] for r in rows}) == 1 and rows[0]["cpu_kernels"] != cpu_kernels()
    for architecture in pipes:
        batch = [Path(r["image_path"]) for r in rows if r["architecture"] == architecture]
        for result in regenerate_batch(pipes[architecture], batch) + [regenerate(pipes[architecture], batch[0])]:
            assert result.case == CLOSE and any(w.startswith("cpu kernels ") for w in result.why), result.why
            assert result.holds, f"{architecture}: {result}"


def test_difference_counts_levels_share_and_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 3  # one value of 48, 3 levels off: MSE 9/48
    d = difference(a, b)
    assert d.max_levels == 3 and d.fraction == pytest.approx(1 / 48)
    assert d.psnr == pytest.approx(10 * np.log10(255**2 / (9 / 48)))
    assert difference(a, a).psnr == float("inf")
    with pytest.raises(ValueError, match="different sizes"):
        difference(a, a[:2])


# ----------------------------------------------------------------------------- the audit


def test_the_audit_makes_every_row_again_and_says_which_promise_holds(made, capsys):
    folder, _ = made
    assert audit.main([str(folder), "--regenerate", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "made again: 9 of 9 rows; 9 as promised (9 exact, 0 close), 0 not" in out
    assert "row 1 [unclip, seed 0, “a red circle”]: exact: identical pixels, as promised" in out
    assert "row 7 [stable_unclip, seed 0, “a red circle”]: exact: identical pixels, as promised" in out
    assert out.count(": exact: identical pixels, as promised") == 9


def test_the_audit_says_when_the_loaded_weights_are_not_the_rows(made, pipes):
    folder, _ = made
    report = audit.audit(folder)
    results = audit.regenerate_rows(report, {**pipes, "latent_diffusion": build_tiny_latent_diffusion(1)})
    assert [type(r) for _, r in results[:3] + results[6:]] == [audit.Regenerated] * 6
    assert {r for _, r in results[3:6]} == {
        "the loaded latent_diffusion weights are not this row's (latent_diffusion): name its model"
    }
    assert "0 not" not in audit.format_regenerated(report, results).splitlines()[0]


def test_the_audit_finds_an_image_whose_pixels_were_changed(made, pipes, tmp_path):
    folder, by_architecture = made
    row = by_architecture["latent_diffusion"][1]
    pixels = png_pixels(row["image_path"]).copy()
    pixels[:4, :4] = 255 - pixels[:4, :4]  # a corner painted over, the infotext left as it was
    copy = tmp_path / "copy"
    copy.mkdir()
    rows = [{**row, "image_path": str(save_png(Image.fromarray(pixels), copy / "x.png", row))}]
    RunLog(copy).append(rows)
    report = audit.audit(copy)
    assert report.clean  # its infotext is its row's: only making it again shows
    [(line, result)] = audit.regenerate_rows(report, pipes)
    assert result.case == CLOSE and not result.holds  # alone: its batch mates are not in this log
    assert "NOT as promised" in audit.format_regenerated(report, [(line, result)])
