"""The run log keeps every committed row through concurrency, crashes and a full disk, and the
exports give back the same values with the same dtypes."""

import csv
import errno
import json
import multiprocessing
import os
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from comparisons.exports import export_csv, export_parquet, read_csv, read_parquet
from comparisons.schema import DTYPES, column_kind, core_columns, encode_rows, frame_from_records
from comparisons.store import RunLog, done_keys, load_runs

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
BIG_SEED = 2**63 - 1  # float64 would round it to 2**63


def unclip_row(i: int, **extra) -> dict:
    return {
        "run_id": f"u{i}",
        "created_at": T0 + timedelta(seconds=i),
        "architecture": "unclip",
        "model": "karlo",
        "prompt": f"a red circle {i}",
        "seed": i,
        "height": 64,
        "width": 64,
        "prior_steps": 2,
        "decoder_steps": 2,
        "super_res_steps": 2,
        "prior_guidance": 4.0,
        "decoder_guidance": 8.0,
        "dtype": "float32",
        "device": "cpu",
        "seconds_prior": 0.25,
        "seconds_total": 1.5,
        "peak_memory_mb": 512.0,
        "memory_kind": "peak RSS",
        "clip_score": 21.5,
        "clip_cosine": 0.215,
        "prior_image_cosine": 0.8,
        **extra,
    }


def ld_row(i: int, **extra) -> dict:
    return {
        "run_id": f"l{i}",
        "created_at": T0 + timedelta(seconds=i),
        "architecture": "latent_diffusion",
        "model": "sd15",
        "prompt": f"a red circle {i}",
        "negative_prompt": None,
        "seed": i,
        "steps": 2,
        "guidance": 7.5,
        "dtype": "float32",
        "device": "cpu",
        "seconds_unet": 0.5,
        "seconds_total": 1.0,
        "peak_memory_mb": np.float64(256.0),
        "memory_kind": "peak RSS",
        "clip_score": 23.0,
        **extra,
    }


def file_bytes(log: RunLog) -> bytes:
    return log.path.read_bytes() if log.path.exists() else b""


# ----------------------------------------------------------------------------- append and load


def test_round_trip_with_mixed_optional_columns(tmp_path):
    log = RunLog(tmp_path / "runs")
    log.append([unclip_row(0), ld_row(1, negative_prompt='blurry, "low" quality\n😀')])
    log.append([ld_row(2, seed=BIG_SEED, steps=2.0, check_colour_correct=True, check_count_correct=None, note="lab")])
    df = load_runs(tmp_path / "runs")

    assert list(df.columns) == [*core_columns(), "check_colour_correct", "check_count_correct", "note"]
    assert df["run_id"].tolist() == ["u0", "l1", "l2"]
    for name in df.columns:
        kind = column_kind(name) or "string"  # "note" holds strings, so it is typed as one
        assert df[name].dtype == DTYPES[kind], name
    assert df["seed"].tolist() == [0, 1, BIG_SEED]  # exact: no trip through float64
    assert df["created_at"].tolist() == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert df["negative_prompt"][1] == 'blurry, "low" quality\n😀'
    assert df["prior_image_cosine"].tolist()[0] == 0.8 and df["prior_image_cosine"][1:].isna().all()
    assert df["prior_steps"].isna().tolist() == [False, True, True]
    assert df["check_colour_correct"].isna().tolist() == [True, True, False] and df["check_colour_correct"][2]
    assert df["check_count_correct"].isna().all()
    assert df["peak_memory_mb"].tolist() == [512.0, 256.0, 256.0]
    assert df["steps"].tolist()[1:] == [2, 2]
    assert df.index.equals(pd.RangeIndex(3))


def test_checker_columns_get_their_types(tmp_path):
    # what comparisons.records makes of lab.checker's CheckResult.as_dict(): verdicts as 1.0 / 0.0 / NaN
    checks = {
        "check_caption": "a red circle",
        "check_n_expected": 1,
        "check_n_detected": 2,
        "check_count_correct": False,
        "check_object1_colour_correct": 1.0,
        "check_object1_size_correct": float("nan"),
        "check_position_correct": 0.0,
        "check_min_confidence": 0.25,
        "check_object1_shape_read": "square",
        "check_object2_shape_read": None,
    }
    RunLog(tmp_path).append([ld_row(0, **checks), ld_row(1)])
    df = load_runs(tmp_path)
    assert df["check_object1_colour_correct"].dtype == "boolean" and df["check_object1_colour_correct"][0]
    assert df["check_position_correct"].tolist() == [False, pd.NA] and df["check_object1_size_correct"].isna().all()
    assert df["check_n_detected"].dtype == "Int64" and df["check_min_confidence"].dtype == "float64"
    assert df["check_caption"].dtype == "string"
    # what was read: strings, even a column no row has a value in
    assert (
        df["check_object1_shape_read"].tolist() == ["square", pd.NA]
        and df["check_object2_shape_read"].dtype == "string"
    )


def test_empty_log_has_the_core_columns(tmp_path):
    df = RunLog(tmp_path).load()
    assert len(df) == 0 and list(df.columns) == list(core_columns())
    assert all(df[c].dtype == DTYPES[column_kind(c)] for c in core_columns())
    with pytest.raises(ValueError, match="no run log directory"):
        load_runs(tmp_path / "missing")


@pytest.mark.parametrize(
    "row, match",
    [
        ({"seed": 1.5}, "takes int"),
        ({"seed": 2.0**60}, "takes int"),  # a float this big may already have been rounded
        ({"seed": 2**63}, "64-bit"),
        ({"note": [1, 2]}, "list values cannot be logged"),
        ({"prompt": 3}, "takes string"),
        ({"created_at": datetime(2026, 1, 1)}, "no time zone"),
        ({"created_at": "2026-01-01"}, "takes datetime"),
        ({"check_colour_correct": 0.5}, "takes bool"),
        ({"clip_score": float("inf")}, "finite"),
        ({"versions": {"torch": "2.5"}}, "cannot be logged"),
    ],
)
def test_bad_rows_are_refused_before_anything_is_written(tmp_path, row, match):
    log = RunLog(tmp_path)
    log.append([unclip_row(0)])
    before = file_bytes(log)
    with pytest.raises(ValueError, match=match):
        log.append([ld_row(1), {**ld_row(2), **row}])  # the good first row must not be written either
    assert file_bytes(log) == before


def test_done_keys(tmp_path):
    log = RunLog(tmp_path)
    log.append([unclip_row(0), ld_row(0), ld_row(1, prompt=None)])
    assert done_keys(tmp_path, ["architecture", "prompt", "seed"]) == {
        ("unclip", "a red circle 0", 0),
        ("latent_diffusion", "a red circle 0", 0),
        ("latent_diffusion", None, 1),
    }
    assert log.done_keys(["seed"]) == {(0,), (1,)}
    assert log.done_keys(["sweep_key"]) == set()  # a column no row has yet: nothing is done
    log.append([{**ld_row(3), "sweep_key": "k3"}])
    assert log.done_keys(["sweep_key"]) == {(None,), ("k3",)}
    with pytest.raises(ValueError, match="non-empty"):
        log.done_keys([])


# ----------------------------------------------------------------------------- concurrency


def _append_many(directory: str, worker: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait()  # all workers start together so their appends interleave
    log = RunLog(directory)
    for i in range(25):
        log.append([{"run_id": f"w{worker}-{i}", "seed": i, "prompt": f"worker {worker} " + "x" * 5000}])


def test_concurrent_appends_from_processes_lose_and_duplicate_nothing(tmp_path):
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_append_many, args=(str(tmp_path), w, start)) for w in range(4)]
    for p in workers:
        p.start()
    start.set()
    for p in workers:
        p.join(timeout=60)
        assert p.exitcode == 0
    df = load_runs(tmp_path)
    assert len(df) == 100
    assert set(df["run_id"]) == {f"w{w}-{i}" for w in range(4) for i in range(25)}
    assert all(json.loads(line) for line in (tmp_path / "runs.jsonl").read_bytes().splitlines())


def test_concurrent_appends_from_threads(tmp_path):
    start = threading.Event()
    threads = [threading.Thread(target=_append_many, args=(str(tmp_path), w, start)) for w in range(4)]
    for t in threads:
        t.start()
    start.set()
    for t in threads:
        t.join()
    assert sorted(load_runs(tmp_path)["run_id"]) == sorted(f"w{w}-{i}" for w in range(4) for i in range(25))


# ----------------------------------------------------------------------------- crashes and a full disk


def _partial_write(fraction: float, then):
    """An os.write that writes only part of the block, then calls `then` (raise, or die)."""
    real_write = os.write

    def write(fd, data):
        real_write(fd, bytes(data[: int(len(data) * fraction)]))
        then()

    return write


def _die() -> None:
    os._exit(3)  # no cleanup, no rollback: what a killed process leaves behind


def test_crash_mid_append_leaves_a_torn_line_that_is_ignored_then_cut(tmp_path):
    log = RunLog(tmp_path)
    log.append([unclip_row(0), ld_row(0)])
    before = log.load()
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork to crash a child mid-write")
    pid = os.fork()
    if pid == 0:  # the child crashes halfway through a two-row batch (in its second row)
        os.write = _partial_write(0.75, _die)
        RunLog(tmp_path).append([unclip_row(1), ld_row(1)])
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    assert not file_bytes(log).endswith(b"\n")  # the crash really tore a line

    # the complete first row of the dead batch stays (a resumed sweep skips it); the torn one is ignored
    after = log.load()
    assert after["run_id"].tolist() == ["u0", "l0", "u1"]
    pd.testing.assert_frame_equal(after.iloc[:2], before)

    log.append([ld_row(2)])  # cuts the torn tail first, so the new row is not glued to it
    assert file_bytes(log).endswith(b"\n")
    assert all(json.loads(line) for line in file_bytes(log).splitlines())
    assert log.load()["run_id"].tolist() == ["u0", "l0", "u1", "l2"]


@pytest.mark.parametrize("tail", [b'{"run_id":"torn","se', b'{"run_id":"no newline"}'])
def test_unterminated_tail_is_not_committed(tmp_path, tail):
    log = RunLog(tmp_path)
    log.append([unclip_row(0)])
    with open(log.path, "ab") as f:
        f.write(tail)  # even valid JSON counts only once its "\n" is written
    assert log.load()["run_id"].tolist() == ["u0"]
    log.append([ld_row(1)])
    assert log.load()["run_id"].tolist() == ["u0", "l1"]


def test_torn_only_line_is_cut_to_an_empty_log(tmp_path):
    log = RunLog(tmp_path)
    log.path.write_bytes(b'{"run_id":"to')
    assert len(log.load()) == 0
    log.append([ld_row(0)])
    assert file_bytes(log) == encode_rows([ld_row(0)])


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    log = RunLog(tmp_path)
    log.path.write_bytes(b'{"run_id":"a"}\nnot json\n{"run_id":"b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        log.load()


def _raise_enospc() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("how", ["raise after a partial write", "short write, then raise"])
def test_full_disk_keeps_earlier_rows_and_the_next_append_works(tmp_path, monkeypatch, how):
    log = RunLog(tmp_path)
    log.append([unclip_row(0), ld_row(0, seed=BIG_SEED)])
    before_bytes, before = file_bytes(log), log.load()

    if how == "raise after a partial write":
        fake = _partial_write(0.6, _raise_enospc)
    else:  # the kernel's way: the first write is short, the next one fails
        real_write, calls = os.write, []

        def fake(fd, data):
            calls.append(len(data))
            if len(calls) > 1:
                _raise_enospc()
            return real_write(fd, bytes(data[: len(data) // 2]))

    monkeypatch.setattr(os, "write", fake)
    with pytest.raises(OSError, match="could not append 3 row") as err:
        log.append([unclip_row(1), ld_row(1), ld_row(2)])
    assert err.value.errno == errno.ENOSPC and "unchanged" in str(err.value)
    monkeypatch.undo()

    assert file_bytes(log) == before_bytes  # rolled back: not even the complete rows of the batch stay
    pd.testing.assert_frame_equal(log.load(), before)
    log.append([ld_row(3)])
    assert log.load()["run_id"].tolist() == ["u0", "l0", "l3"]


# ----------------------------------------------------------------------------- exports


@pytest.fixture
def every_dtype(tmp_path) -> pd.DataFrame:
    prompts = ["plain", 'commas, "quotes"\nand a newline', "", None, "emoji 😀 and ünïcødé", "cr\r\nlf"]
    rows = []
    for i, prompt in enumerate(prompts):
        row = unclip_row(i) if i % 2 else ld_row(i, check_colour_correct=bool(i % 4), note=f"n{i}")
        rows.append({**row, "prompt": prompt, "seed": BIG_SEED - i, "clip_score": 0.1 + 0.2 * i})
    rows[3]["created_at"] = None
    RunLog(tmp_path / "log").append(rows)
    return load_runs(tmp_path / "log")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(tmp_path, every_dtype, fmt):
    export, read = {"csv": (export_csv, read_csv), "parquet": (export_parquet, read_parquet)}[fmt]
    path = tmp_path / f"runs.{fmt}"
    export(every_dtype, path)
    back = read(path)
    pd.testing.assert_frame_equal(back, every_dtype)  # values and dtypes
    assert back["seed"].tolist()[0] == BIG_SEED
    assert back["prompt"][2] == "" and back["prompt"][3] is pd.NA  # empty and missing stay apart
    assert back["created_at"].isna().tolist() == [False, False, False, True, False, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", path.name]  # no temp file left behind


def test_csv_dtypes_come_from_the_names_not_the_values(tmp_path):
    # "12" in an unknown column stays a string; in seed it is an int, even when every seed is missing
    df = pd.DataFrame({"seed": pd.array([None], dtype="Int64"), "label": pd.array(["12"], dtype="string")})
    export_csv(df, tmp_path / "x.csv")
    pd.testing.assert_frame_equal(read_csv(tmp_path / "x.csv"), df)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_failed_export_leaves_the_old_file(tmp_path, every_dtype, fmt):
    export = {"csv": export_csv, "parquet": export_parquet}[fmt]
    path = tmp_path / f"runs.{fmt}"
    export(every_dtype, path)
    old = path.read_bytes()
    bad = every_dtype.assign(seed=[1.5] * len(every_dtype))
    with pytest.raises(ValueError, match="seed"):
        export(bad, path)
    mixed = pd.DataFrame({"extra": [1, "a"]})  # arrow cannot store mixed objects
    with pytest.raises(ValueError, match="cannot be exported"):
        export(mixed, path)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", path.name]


FORMULAS = [
    '=HYPERLINK("http://x","y")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tTAB",
    "\rCR",
    "'=quoted",
    "'plain quote",
    "a = b",
    "",
    None,
]


def test_csv_for_a_browser_neutralises_formulas_in_text_cells_only(tmp_path):
    df = pd.DataFrame(
        {
            "prompt": pd.array(FORMULAS, dtype="string"),
            "negative_prompt": pd.array(["-blurry"] * len(FORMULAS), dtype="string"),
            "clip_cosine": [-0.5] * len(FORMULAS),
            "seed": pd.array([-3] * len(FORMULAS), dtype="Int64"),
        }
    )
    export_csv(df, tmp_path / "safe.csv", neutralise_formulas=True)
    with open(tmp_path / "safe.csv", newline="", encoding="utf-8") as f:
        cells = list(csv.DictReader(f))
    prompts = [c["prompt"] for c in cells]
    assert prompts[:6] == ["'" + p for p in FORMULAS[:6]]  # every formula start (OWASP) becomes text
    assert prompts[6:9] == ["''=quoted", "''plain quote", "a = b"]  # a leading quote is doubled: the prefix comes off
    assert {c["negative_prompt"] for c in cells} == {"'-blurry"}
    assert {c["clip_cosine"] for c in cells} == {"-0.5"} and {c["seed"] for c in cells} == {
        "-3"
    }  # numbers stay numbers
    pd.testing.assert_frame_equal(read_csv(tmp_path / "safe.csv", neutralised=True), df)  # and come back exactly
    export_csv(df, tmp_path / "exact.csv")
    assert read_csv(tmp_path / "exact.csv")["prompt"].tolist()[:6] == FORMULAS[:6]  # the default CSV is exact


def _full(log: RunLog) -> pd.DataFrame:
    return frame_from_records(log.read_records())


def test_a_log_read_again_reads_only_what_was_appended_and_equals_a_whole_read(tmp_path, monkeypatch):
    """Each load grows the last one by the new lines (typed as a whole read types them, extra columns too); a torn
    tail waits for its end; a log replaced or rewritten shorter is read whole again."""
    log = RunLog(tmp_path / "runs")
    log.append([unclip_row(0), ld_row(1)])
    first = log.load()
    read = []
    real = RunLog._read_from
    monkeypatch.setattr(RunLog, "_read_from", lambda self, *a: read.append(a[0]) or real(self, *a))
    log.append([ld_row(2, note="lab", check_colour_correct=True)])  # new extra columns
    grown = log.load()
    assert read == [len(file_bytes(log)) - len(encode_rows([ld_row(2, note="lab", check_colour_correct=True)]))]
    pd.testing.assert_frame_equal(grown, _full(log))  # read from where the last load ended, typed as a whole
    with open(log.path, "ab") as f:
        f.write(encode_rows([unclip_row(3, note=7)])[:-5])  # a torn tail: an append under way in another process
    grown = log.load()
    assert len(grown) == 3 and "u3" not in set(grown["run_id"])
    with open(log.path, "ab") as f:
        f.write(encode_rows([unclip_row(3, note=7)])[-5:])  # its end lands
    pd.testing.assert_frame_equal(log.load(), _full(log))  # "note" now mixed: typed as a whole read types it
    assert log.load()["run_id"].tolist() == ["u0", "l1", "l2", "u3"] and len(first) == 2
    rewritten = file_bytes(log).split(b"\n")[:2]
    log.path.write_bytes(b"\n".join(rewritten) + b"\n")  # rewritten shorter, same file
    assert log.load()["run_id"].tolist() == ["u0", "l1"]
    replacement = tmp_path / "other.jsonl"
    replacement.write_bytes(encode_rows([ld_row(9)]))
    os.replace(replacement, log.path)  # another file at the same path
    assert log.load()["run_id"].tolist() == ["l9"]
    loaded = log.load()
    loaded["seed"] = 0  # a caller's change stays its own
    assert log.load()["seed"].tolist() == [9]
