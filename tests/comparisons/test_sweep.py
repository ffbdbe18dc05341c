"""Sweeps: argument checks, batching, resume after a kill (processes under accelerate: test_integrity)."""

from pathlib import Path

import numpy as np
import pytest

from comparisons import sweep
from comparisons.grid import layout_for, read_parameters
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.settings import Settings
from comparisons.store import RunLog, load_runs
from pipelines import registry
from pipelines.tiny import build_tiny_latent_diffusion, build_tiny_unclip

from helpers import png_pixels

FAST = ["--steps", "2", "--guidance", "1,4", "--super-res-steps", "2", "--batch-size", "4", "--no-progress"]
ARCHS = ("unclip", "latent_diffusion", "stable_unclip")  # the tiny preset's


@pytest.fixture()
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# shapes\na red circle\n\na blue square above a green cross\n")
    return path


@pytest.fixture(scope="module")
def pipes():
    return {"unclip": build_tiny_unclip(0), "latent_diffusion": build_tiny_latent_diffusion(0)}


def harness_for(pipes, out):
    return Harness(pipes, judge=tiny_judge(), out_dir=out, log=RunLog(out))


def jobs_for(prompts, seeds="0-1"):
    return sweep.plan_jobs(
        sweep.read_prompts(prompts),
        sweep.parse_seeds(seeds),
        [2],
        [1.0, 4.0],
        ["unclip", "latent_diffusion"],
        Settings(super_res_steps=2),
    )


# ----------------------------------------------------------------------------- parsing


def test_seed_ranges():
    assert sweep.parse_seeds("0-9") == list(range(10))
    assert sweep.parse_seeds("0-3,10,2") == [0, 1, 2, 3, 10]
    for bad, message in [
        ("9-0", "runs backwards"),
        ("a-b", "not a number"),
        ("-1", "not a number"),
        ("1,", "not a number"),
        (f"0-{2**63}", "seeds are whole numbers from 0 to 9,223,372,036,854,775,807"),
    ]:
        with pytest.raises(ValueError, match=message):
            sweep.parse_seeds(bad)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "has no prompts"),
        (b"\n# only a comment\n  \n", "has no prompts"),
        (b"a cat\0\x01\x02", "binary"),
        ("a caf\u00e9".encode("latin-1"), "not UTF-8"),
        (b"a cat\n" * 100_000, "at most 10000"),
    ],
)
def test_malformed_prompt_files(tmp_path, content, message):
    path = tmp_path / "p.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        sweep.read_prompts(path)


def test_grid_batches_like_settings_together(prompts):
    jobs = jobs_for(prompts)
    assert len(jobs) == 2 * 2 * 2 * 2  # prompts × seeds × guidance × architectures
    groups = list(sweep.batches(jobs, 3))
    assert all(len({(j.architecture, j.settings) for j in g}) == 1 for g in groups)
    assert sorted(len(g) for g in groups) == [1, 1, 1, 1, 3, 3, 3, 3]
    unclip = next(j for j in jobs if j.architecture == "unclip" and j.settings.value("decoder_guidance") == 4.0)
    own = unclip.settings.of("unclip")
    assert (own.prior_steps, own.decoder_steps, own.prior_guidance) == (2, 2, 4.0)
    assert len({j.key for j in jobs}) == len(jobs)


# ----------------------------------------------------------------------------- the CLI's bad input


@pytest.mark.parametrize(
    "case",
    [
        "unknown-architecture",
        "backwards-seeds",
        "out-is-a-file",
        "out-read-only",
        "binary-prompts",
        "cuda-graphs-on-cpu",
        "grid-not-a-png",
        "grid-axes-alike",
        "grid-is-a-directory",
        "half-a-step",
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, prompts, case, capsys):
    out = tmp_path / "out"
    args = {
        "unknown-architecture": ["--architectures", "unclip,gan"],
        "backwards-seeds": ["--seeds", "9-0"],
        "binary-prompts": [],
        "out-is-a-file": [],
        "out-read-only": [],
        "cuda-graphs-on-cpu": ["--cuda-graphs", "--device", "cpu"],
        "grid-not-a-png": ["--grid", str(tmp_path / "grid.jpg")],
        "grid-axes-alike": ["--grid", str(tmp_path / "grid.png"), "--grid-rows", "seed", "--grid-columns", "seed"],
        "grid-is-a-directory": ["--grid", str(tmp_path / "folder.png")],
        "half-a-step": ["--steps", "2,1.5"],
    }[case]
    if case == "grid-is-a-directory":
        (tmp_path / "folder.png").mkdir()
    if case == "binary-prompts":
        prompts.write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    if case == "out-is-a-file":
        out.write_text("not a directory")
    if case == "out-read-only":
        out = Path("/proc/self")  # read-only even for root, who ignores permission bits
    assert sweep.main(["--prompts", str(prompts), "--out", str(out), *FAST, *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "out" / "runs.jsonl").exists() and not (tmp_path / "grid.png").exists()
    if case == "half-a-step":
        assert lines[0] == "error: --steps “2,1.5”: expected whole numbers separated by commas"


# ----------------------------------------------------------------------------- running


def test_sweep_resumes_after_a_kill_without_duplicates(pipes, prompts, tmp_path, monkeypatch):
    jobs = jobs_for(prompts)
    harness = harness_for(pipes, tmp_path)
    real = harness.make
    calls = {"n": 0}

    def killed_on_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill lands mid-batch: that batch writes nothing
        return real(*args, **kwargs)

    monkeypatch.setattr(harness, "make", killed_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(harness, jobs, batch_size=2, progress=False)
    assert len(load_runs(tmp_path)) == 4

    monkeypatch.setattr(harness, "make", real)
    assert sweep.run_sweep(harness, jobs, batch_size=2, progress=False) == len(jobs) - 4
    assert sweep.run_sweep(harness, jobs, batch_size=2, progress=False) == 0
    df = load_runs(tmp_path)
    assert len(df) == len(jobs) and df["sweep_key"].is_unique
    assert set(df["sweep_key"]) == {j.key for j in jobs}


def test_summary_cli_reads_a_sweep_log(pipes, prompts, tmp_path, capsys):
    from comparisons import summary
    from comparisons.exports import read_csv

    harness = harness_for(pipes, tmp_path)
    sweep.run_sweep(
        harness,
        [j for j in jobs_for(prompts) if 4.0 in (j.settings.value("guidance"), j.settings.value("decoder_guidance"))],
        batch_size=4,
        progress=False,
    )
    assert summary.main([str(tmp_path), "--csv", str(tmp_path / "runs.csv")]) == 0
    out = capsys.readouterr().out
    assert "difference [95% CI]" in out and "seconds_total" in out
    assert len(read_csv(tmp_path / "runs.csv")) == len(load_runs(tmp_path)) == 8
    assert summary.main([str(tmp_path / "empty")]) == 2


def test_every_setting_of_the_grid_is_checked_before_any_work(prompts):
    with pytest.raises(ValueError, match="`prior_steps` must be between 2 and 1000, got 0"):
        sweep.plan_jobs(sweep.read_prompts(prompts), [0], [2, 0, 3], [4.0], ["unclip", "latent_diffusion"], Settings())


# ----------------------------------------------------------------------------- the grid picture


def test_grid_flag_draws_the_whole_sweep_from_the_log_an_earlier_run_included(prompts, tmp_path, capsys):
    out, picture = tmp_path / "out", tmp_path / "pictures" / "grid.png"
    tiny = ["--preset", "tiny", "--device", "cpu"]
    assert sweep.main(["--prompts", str(prompts), "--seeds", "0", "--out", str(out), *tiny, *FAST]) == 0
    first_run = set(load_runs(out)["run_id"])
    argv = ["--prompts", str(prompts), "--seeds", "0-1", "--out", str(out), "--grid", str(picture), *tiny, *FAST]
    assert sweep.main(argv) == 0  # seed 0 is in the log already: this run makes seed 1 only
    assert "grid: 24 of 24 images" in capsys.readouterr().out  # 2 prompts × 2 seeds × 2 guidance × 3
    df = load_runs(out)
    assert len(df) == 24 and len(set(df["run_id"]) - first_run) == 1
    parameters = read_parameters(picture)
    assert parameters["prompts"] == sweep.read_prompts(prompts) and parameters["seeds"] == [0, 1]
    assert (parameters["steps"], parameters["guidance"]) == ([2], [1.0, 4.0])
    assert parameters["architectures"] == list(ARCHS)
    assert (parameters["rows"], parameters["columns"]) == ("prompt", "seed")
    assert parameters["run_id"] in set(df["run_id"]) - first_run and parameters["settings"]["super_res_steps"] == 2
    jobs = sweep.plan_jobs(parameters["prompts"], [0, 1], [2], [1.0, 4.0], list(ARCHS), Settings(super_res_steps=2))
    spec = sweep.grid_spec(jobs)
    assert spec.shape == (2, 4) and spec.column_axes == ("seed", "guidance")  # guidance nests in the columns
    images = {row.sweep_key: png_pixels(row.image_path) for row in df.itertuples()}
    layout = layout_for(spec, max(max(im.shape[:2]) for im in images.values()))[0]
    pixels = png_pixels(picture)
    assert pixels.shape[:2] == layout.size[::-1]
    for job in jobs:
        guidance = job.settings.value(registry.get(job.architecture).sweep_guidance[0])
        r, c = spec.prompts.index(job.prompt), 2 * job.seed + (1.0, 4.0).index(guidance)
        left, top, right, bottom = layout.box(r, c, spec.architectures.index(job.architecture))
        made = images[job.key]
        factor = layout.tile // made.shape[0]  # NEAREST, by a whole factor
        expected = made.repeat(factor, axis=0).repeat(factor, axis=1)
        assert np.array_equal(pixels[top:bottom, left:right], expected), job
