"""Every image stays with its row: sweeps of many batches (in process, the CLI, killed mid-write and rerun,
the app's background sweep, two accelerate processes) leave one PNG per row whose infotext is its row and
which regenerates its own pixels; the audit finds each kind of damage and passes a clean folder."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comparisons import audit, sweep
from comparisons.app.session import AppConfig, Session
from comparisons.app.sweep import Sweep
from comparisons.files import temp_prefix, write_new_file
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.presets import load_models
from comparisons.records import infotext, save_png
from comparisons.settings import Settings
from comparisons.store import RunLog

from helpers import check_results_folder, png_pixels

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a red circle", "a blue square above a green cross", "a small yellow triangle"]
FAST = [
    "--steps",
    "2",
    "--guidance",
    "1,4",
    "--super-res-steps",
    "2",
    "--no-progress",
    "--preset",
    "tiny",
    "--device",
    "cpu",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_pipes():
    """The tiny preset as the CLI loads it, to regenerate rows from their PNGs."""
    return load_models("tiny", device="cpu")


@pytest.fixture()
def prompt_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


ARCHS = ("unclip", "latent_diffusion", "stable_unclip")  # the tiny preset's


def grid_size(seeds: int) -> int:
    return len(PROMPTS) * seeds * 2 * 3  # prompts × seeds × guidance × architectures (the tiny preset's three)


# ----------------------------------------------------------------------------- sweeps of many batches


def test_cli_sweep_of_many_batches_keeps_one_image_per_row(prompt_file, tmp_path, tiny_pipes):
    out = tmp_path / "sweep"
    assert (
        sweep.main(["--prompts", str(prompt_file), "--seeds", "0-3", "--batch-size", "4", "--out", str(out), *FAST])
        == 0
    )
    rows = check_results_folder(out, tiny_pipes, expected_rows=grid_size(4))  # 12 batches of 4
    assert len({r["run_id"] for r in rows}) == 1


def test_duplicate_prompts_and_a_batch_of_one_key_twice_never_share_a_file(tmp_path, tiny_pipes):
    harness = Harness(tiny_pipes, tiny_judge(), tmp_path, log=RunLog(tmp_path))
    jobs = sweep.plan_jobs(
        ["a red circle", "a red circle"], [0, 0, 1], [2], [4.0], ["latent_diffusion"], Settings(super_res_steps=2)
    )
    assert len(jobs) == 2  # a prompt or seed given twice is one job
    harness.generate("latent_diffusion", ["a red circle"] * 2, [5, 5], Settings(steps=2), run_id="same")
    sweep.run_sweep(harness, jobs, batch_size=1, progress=False, run_id="same")
    rows = check_results_folder(tmp_path, tiny_pipes, expected_rows=4)
    assert sorted(Path(r["image_path"]).name.count("-") for r in rows) == [1, 1, 1, 2]  # the twin got a `-1` suffix


KILLED_CHILD = """
import os, sys, tempfile, time
from pathlib import Path
import comparisons.records as records
from comparisons.files import TEMP_SUFFIX, temp_prefix, write_new_file
calls = {"n": 0}
def torn(path, data, sync_dir=True):
    calls["n"] += 1
    if calls["n"] < int(os.environ["TEAR_AT"]):
        return write_new_file(path, data, sync_dir)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(Path(path).name), suffix=TEMP_SUFFIX, dir=Path(path).parent)
    os.write(fd, data[: len(data) // 2])  # half a PNG, then the kill
    Path(os.environ["MARKER"]).write_text(tmp)
    time.sleep(600)
records.write_new_file = torn
from comparisons.sweep import main
sys.exit(main(sys.argv[1:]))
"""


def test_sweep_killed_mid_write_and_rerun_leaves_no_torn_image_and_no_row_without_its_file(
    prompt_file, tmp_path, tiny_pipes
):
    out, marker = tmp_path / "sweep", tmp_path / "torn"
    args = ["--prompts", str(prompt_file), "--seeds", "0-3", "--batch-size", "4", "--out", str(out), *FAST]
    # grid groups of 12 in batches of 4: the 11th PNG is the third of the third batch, so two batches are
    # logged, two PNGs of the third are on disk without rows, and one is torn
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, *args], cwd=ROOT, env={**ENV, "TEAR_AT": "11", "MARKER": str(marker)}
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the sweep ended before its torn write"
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    torn = Path(marker.read_text())
    assert torn.exists() and torn.name.startswith(".") and not torn.name.endswith(".png")  # only a temp file is torn
    rows = RunLog(out).read_records()
    assert len(rows) == 8 and all(Path(r["image_path"]).is_file() for r in rows)  # no row without its file
    for path in (out / "images").rglob("*.png"):  # every image under its final name is whole
        png_pixels(path)
    found = audit.audit(out).counts()
    assert found == {"unreferenced": 2, "unfinished": 1}, found

    assert sweep.main(args) == 0  # the same command again
    check_results_folder(out, tiny_pipes, expected_rows=grid_size(4))
    assert not torn.exists()


def test_the_apps_background_sweep_of_many_batches_keeps_one_image_per_row(tmp_path, tiny_pipes):
    session = Session(AppConfig("tiny", "cpu", tmp_path))
    fast = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2)
    backend = Sweep(session)
    status = backend.start("\n".join(PROMPTS), "0-3", "2", "1,4", list(ARCHS), fast)  # batches of 8
    backend.wait(300)
    assert status.error is None and status.done == status.total == grid_size(4)
    check_results_folder(tmp_path, tiny_pipes, expected_rows=grid_size(4))


def test_two_accelerate_processes_keep_one_image_per_row(prompt_file, tmp_path, tiny_pipes):
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "comparisons.sweep",
            "--prompts",
            str(prompt_file),
            "--seeds",
            "0-1",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path),
            *FAST,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "process 0: made" in result.stdout and "process 1: made" in result.stdout
    rows = check_results_folder(tmp_path, tiny_pipes, expected_rows=grid_size(2))
    assert len({r["run_id"] for r in rows}) == 2  # one per process
    keys = [json.loads(r["sweep_key"]) for r in rows]  # the processes' shares merge, nothing twice
    assert len({r["sweep_key"] for r in rows}) == len(rows)
    assert {(k[0], k[1], k[2]) for k in keys} == {(a, p, s) for a in ARCHS for p in PROMPTS for s in (0, 1)}


# ----------------------------------------------------------------------------- files written once


def test_a_new_file_never_replaces_another(tmp_path):
    first = write_new_file(tmp_path / "a.png", b"one")
    second = write_new_file(tmp_path / "a.png", b"two")
    assert (first.name, second.name) == ("a.png", "a-1.png")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert not list(tmp_path.glob(temp_prefix("a.png") + "*"))  # no temp file stays


# ----------------------------------------------------------------------------- the audit


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory, tiny_pipes):
    out = tmp_path_factory.mktemp("clean")
    harness = Harness(tiny_pipes, tiny_judge(), out, log=RunLog(out))
    jobs = sweep.plan_jobs(PROMPTS, [0, 1], [2], [4.0], ["unclip", "latent_diffusion"], Settings(super_res_steps=2))
    sweep.run_sweep(harness, jobs, batch_size=4, progress=False)
    return out


@pytest.fixture()
def damaged(clean_folder, tmp_path):
    copy = Path(shutil.copytree(clean_folder, tmp_path / "copy"))
    rows = RunLog(copy).read_records()
    for row in rows:  # the copy's rows point at the copy's images
        row["image_path"] = str(copy / Path(row["image_path"]).relative_to(clean_folder))
    (copy / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return copy, rows


def rewrite_log(folder: Path, rows: list[dict]) -> None:
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_audit_passes_a_clean_folder(clean_folder, capsys):
    assert audit.main([str(clean_folder)]) == 0
    assert "12 rows, 12 images: clean" in capsys.readouterr().out


def test_the_audit_finds_each_kind_of_damage(damaged, capsys):
    folder, rows = damaged
    paths = [Path(r["image_path"]) for r in rows]
    paths[0].unlink()  # row 1: missing
    rows[2]["image_path"] = rows[1]["image_path"]  # rows 2 and 3: shared
    paths[3].write_bytes(paths[3].read_bytes()[:200])  # row 4: torn
    other = {**rows[4], "prompt": "a white diamond", "seed": 99}
    save_png(Image.open(paths[4]).copy(), paths[4].with_name("x.png"), other)
    os.replace(paths[4].with_name("x.png"), paths[4])  # row 5: its PNG says another prompt and seed
    (folder / "images" / "unclip" / "stray.png").write_bytes(paths[5].read_bytes())  # unreferenced
    (folder / "images" / "unclip" / f"{temp_prefix('y.png')}abc.tmp").write_bytes(b"half")  # unfinished
    rewrite_log(folder, rows)

    report = audit.audit(folder)
    by_row = {(p.row, p.kind) for p in report.problems if p.row is not None}
    # row 3 now names row 2's image, whose infotext is row 2's
    assert by_row == {
        (1, "missing"),
        (2, "shared"),
        (3, "shared"),
        (3, "mismatch"),
        (4, "unreadable"),
        (5, "mismatch"),
    }
    mismatch = next(p for p in report.problems if p.kind == "mismatch" and p.row == 5)
    assert "prompt" in mismatch.detail and "Seed" in mismatch.detail and "a white diamond" in mismatch.detail
    assert report.counts()["unreferenced"] == 2  # stray.png, and row 3's own image no row points to any more
    assert report.counts()["unfinished"] == 1
    assert audit.main([str(folder)]) == 1
    out = capsys.readouterr().out
    assert "1 missing, 2 shared, 1 unreadable, 2 mismatch, 2 unreferenced, 1 unfinished" in out
    assert out.count("\n  ") == len(report.problems)  # one line per problem

    assert audit.main([str(folder), "--prune"]) == 1  # prunes files, never rows: the row problems stay
    after = audit.audit(folder).counts()
    assert "unreferenced" not in after and "unfinished" not in after and after["shared"] == 2


def test_the_audit_flags_a_folder_written_with_the_old_names_row_by_row(damaged):
    folder, rows = damaged
    for row in rows:  # the old harness: `<run>-<index in batch>-seed<seed>.png`, saved over any earlier file
        Path(row["image_path"]).unlink()
        old = Path(row["image_path"]).with_name(f"{row['run_id']}-000-seed{row['seed']}.png")
        info = PngInfo()
        info.add_text("parameters", infotext(row))
        Image.new("RGB", (row["width"], row["height"])).save(old, pnginfo=info)
        row["image_path"] = str(old)
    rewrite_log(folder, rows)
    report = audit.audit(folder)
    shared = {p.row for p in report.problems if p.kind == "shared"}
    mismatched = {p.row for p in report.problems if p.kind == "mismatch"}
    assert shared == set(range(1, len(rows) + 1))  # 3 prompts wrote each (architecture, seed) file
    assert len(mismatched) == len(rows) * 2 // 3 and mismatched < shared  # all but each file's last writer


def test_the_audit_refuses_a_folder_without_a_log(tmp_path, capsys):
    assert audit.main([str(tmp_path)]) == 2
    assert "no runs.jsonl" in capsys.readouterr().err
