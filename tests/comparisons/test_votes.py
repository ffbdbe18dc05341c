"""Votes are kept as the run log keeps rows (atomic appends, nothing lost to threads, processes or kill -9), export
exactly, and their statistics recover what a synthetic electorate was built with: known Bradley–Terry strengths, a
judge agreeing with people at a known rate."""

import json
import multiprocessing
import os
import runpy
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from comparisons.schema import DTYPES
from comparisons.vote_log import (
    QUESTIONS,
    VOTE_COLUMNS,
    VOTES_NAME,
    VoteLog,
    export_votes_csv,
    export_votes_parquet,
    load_votes,
    read_votes_csv,
    read_votes_parquet,
)
from comparisons.votes import agreement, main, report, strengths, win_rates

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
TRUE = {"unclip": 0.8, "stable_unclip": 0.0, "latent_diffusion": -0.8}  # log-strengths, already centred


def vote(i: int, left: str = "unclip", right: str = "latent_diffusion", answer: str = "left", **extra) -> dict:
    """A complete, valid vote; `extra` overrides its columns."""
    row = {
        "vote_id": f"{i:032x}",
        "created_at": T0 + timedelta(seconds=i),
        "voter": f"visitor-{i % 7}",
        "question": "caption",
        "prompt": f"a red circle above a blue square {i}",
        "seeds": str(i % 10),
        "left_architecture": left,
        "right_architecture": right,
        "left_run_ids": f"run-{left}-{i}",
        "right_run_ids": f"run-{right}-{i}",
        "left_images": f"images/{left}/{i}.png",
        "right_images": f"images/{right}/{i}.png",
        "answer": answer,
        "winner": {"left": left, "right": right, "tie": ""}[answer],
        "pair_key": "|".join(sorted((left, right))) + f"|{i % 10}",
        "shown_at": T0 + timedelta(seconds=i - 3.5),
        "seconds_to_vote": 3.5,
        "judge": "ViT-L-14",
        "judge_left": None,
        "judge_right": None,
        "checker_left": None,
        "checker_right": None,
    }
    return {**row, **extra}


def electorate(strength: dict[str, float], n: int, seed: int, tie_rate: float = 0.1, **extra) -> list[dict]:
    """`n` votes on random pairs in random order, the left side winning with Bradley–Terry's probability."""
    rng = np.random.default_rng(seed)
    names = sorted(strength)
    votes = []
    for i in range(n):
        left, right = rng.choice(names, size=2, replace=False)
        p_left = 1 / (1 + np.exp(strength[right] - strength[left]))
        answer = "tie" if rng.random() < tie_rate else ("left" if rng.random() < p_left else "right")
        votes.append(vote(i, str(left), str(right), answer, **extra))
    return votes


def sigmoid(x: float) -> float:
    return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------- what the votes say


def test_strengths_and_win_rates_recover_known_bradley_terry_strengths(tmp_path):
    # 95% intervals miss one time in twenty: over 60 seeds they covered 92-97% of these strengths, and seed 0 all
    VoteLog(tmp_path).append(electorate(TRUE, 3000, seed=0))
    votes = load_votes(tmp_path)
    assert len(votes) == 3000

    fitted = strengths(votes, resamples=400).set_index("architecture")
    assert set(fitted["question"]) == {"caption"}
    for name, true in TRUE.items():
        row = fitted.loc[name]
        assert row["low"] < true < row["high"], (name, row.to_dict())
        assert row["high"] - row["low"] < 0.3  # the interval is informative, not merely wide
        assert row["beats_low"] < sigmoid(true) < row["beats_high"]
    assert abs(fitted["strength"].sum()) < 1e-9  # centred
    decisive = votes[votes["answer"] != "tie"]
    assert fitted["n"].sum() == 2 * len(decisive)

    rates = win_rates(votes)
    assert list(zip(rates["a"], rates["b"])) == [
        ("latent_diffusion", "stable_unclip"),
        ("latent_diffusion", "unclip"),
        ("stable_unclip", "unclip"),
    ]
    assert rates["n"].sum() == 3000 and rates["ties"].sum() == (votes["answer"] == "tie").sum()
    for r in rates.itertuples():
        assert r.low < sigmoid(TRUE[r.a] - TRUE[r.b]) < r.high, r
        assert r.a_wins + r.b_wins + r.ties == r.n
        assert 0.05 < r.tie_rate < 0.15


def test_equal_architectures_have_intervals_around_even(tmp_path):
    VoteLog(tmp_path).append(electorate({"unclip": 0.0, "latent_diffusion": 0.0}, 1000, seed=2, question="diversity"))
    votes = load_votes(tmp_path)
    fitted = strengths(votes, resamples=400)
    assert (fitted["low"] < 0).all() and (fitted["high"] > 0).all()
    assert fitted["strength"].abs().max() < 0.1
    (rate,) = win_rates(votes).itertuples()
    assert rate.question == "diversity" and rate.low < 0.5 < rate.high


def test_win_rate_intervals_are_statsmodels_wilson_intervals():
    votes = pd.DataFrame(
        [vote(i, answer=a) for i, a in enumerate(["left"] * 9 + ["right"] * 2 + ["tie"] * 3)]
        + [vote(100 + i, "stable_unclip", "unclip", "right", question="photorealism") for i in range(5)]
    ).astype({c: DTYPES[k] for c, k in VOTE_COLUMNS.items()})
    rates = win_rates(votes).set_index("question")
    caption, photo = rates.loc["caption"], rates.loc["photorealism"]
    # a is latent_diffusion, the right side, which won twice out of 11 decisive votes
    assert (caption["a"], caption["a_wins"], caption["b_wins"], caption["ties"]) == ("latent_diffusion", 2, 9, 3)
    assert caption[["low", "high"]].tolist() == pytest.approx(proportion_confint(2, 11, method="wilson"))
    assert caption["tie_rate"] == pytest.approx(3 / 14)
    assert photo["win_rate"] == 0.0  # unclip (b) won all five: the interval still reaches past 0
    assert photo[["low", "high"]].tolist() == pytest.approx(proportion_confint(0, 5, method="wilson"))


def judged(n: int, p_agree: float, seed: int) -> list[dict]:
    """Votes whose CLIP judge picks the people's side with probability `p_agree`."""
    rng = np.random.default_rng(seed)
    votes = []
    for v in electorate(TRUE, n, seed=seed, tie_rate=0.0):
        people_left = v["answer"] == "left"
        judge_left = people_left if rng.random() < p_agree else not people_left
        high, low = 0.31 + rng.random() / 10, 0.2 + rng.random() / 10
        votes.append({**v, "judge_left": high if judge_left else low, "judge_right": low if judge_left else high})
    return votes


def test_agreement_recovers_a_judges_known_agreement_and_kappa(tmp_path):
    votes = judged(1500, 0.8, seed=3)
    skipped = [
        vote(9000, answer="tie", judge_left=0.3, judge_right=0.2),  # people could not tell
        vote(9001, judge_left=0.3, judge_right=0.3),  # the judge could not tell
        vote(9002, judge_left=0.3),  # no measure of the right side
    ]
    checked = [vote(9100 + i, checker_left=1.0, checker_right=0.5 * (i % 3)) for i in range(8)]
    VoteLog(tmp_path).append(votes + skipped + checked)
    table = agreement(load_votes(tmp_path)).set_index("judge")

    clip = table.loc["clip"]
    assert clip["question"] == "caption" and clip["n"] == 1500
    assert clip["low"] < 0.8 < clip["high"]
    assert clip["kappa_low"] < 2 * 0.8 - 1 < clip["kappa_high"]
    assert clip["kappa_high"] - clip["kappa_low"] < 0.15
    # the checker judged 8 votes, all left-wins; it was even on 2 (1.0 against 1.0), picked left on the other 6:
    # it always agrees, but people always picked the same side too, so kappa is undefined
    checker = table.loc["checker"]
    assert (checker["n"], checker["agree"]) == (6, 1.0)
    assert np.isnan(checker["kappa"])


def test_a_judge_picking_at_random_has_kappa_around_zero():
    votes = pd.DataFrame(judged(800, 0.5, seed=4)).astype({c: DTYPES[k] for c, k in VOTE_COLUMNS.items()})
    (row,) = agreement(votes).itertuples()
    assert row.kappa_low < 0 < row.kappa_high
    assert row.low < 0.5 < row.high


def test_no_judged_votes_no_agreement_rows():
    votes = pd.DataFrame([vote(0)]).astype({c: DTYPES[k] for c, k in VOTE_COLUMNS.items()})
    assert agreement(votes).empty and list(agreement(votes).columns)[:3] == ["question", "judge", "n"]


# ----------------------------------------------------------------------------- the log


def test_append_then_load_is_typed_in_column_order(tmp_path):
    log = VoteLog(tmp_path / "new" / "results")
    assert log.path == tmp_path / "new" / "results" / VOTES_NAME
    empty = log.load()
    assert list(empty.columns) == list(VOTE_COLUMNS) and empty.empty
    log.append([vote(0), vote(1, answer="tie", voter="", judge_left=np.float64(0.3), judge_right=0.25)])
    log.append([])
    votes = log.load()
    assert list(votes.columns) == list(VOTE_COLUMNS)
    assert {c: votes[c].dtype for c in votes} == {c: DTYPES[k] for c, k in VOTE_COLUMNS.items()}
    assert votes["created_at"].tolist() == [T0, T0 + timedelta(seconds=1)]
    assert votes["winner"].tolist() == ["unclip", ""] and votes["voter"].tolist() == ["visitor-0", ""]
    assert votes["judge_left"].isna().tolist() == [True, False]
    line = json.loads(log.path.read_text().splitlines()[0])
    assert line["created_at"] == "2026-03-01T12:00:00.123456+00:00" and list(line) == list(VOTE_COLUMNS)


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"question": "beauty"}, "question"),
        ({"answer": "both"}, "answer"),
        ({"right_architecture": "unclip", "right_run_ids": "x"}, "right_architecture"),
        ({"left_architecture": ""}, "left_architecture"),
        ({"winner": "latent_diffusion"}, "winner"),
        ({"answer": "tie"}, "winner"),  # a tie names no winner
        ({"mood": "happy"}, "mood"),
        ({"seeds": "0, 1"}, "seeds"),
        ({"created_at": datetime(2026, 3, 1)}, "created_at"),  # no time zone
        ({"seconds_to_vote": None}, "seconds_to_vote"),
        ({"prompt": 7}, "prompt"),
        ({"judge_left": float("inf")}, "judge_left"),
    ],
)
def test_a_bad_vote_names_itself_and_its_column_and_writes_nothing(tmp_path, change, column):
    log = VoteLog(tmp_path)
    log.append([vote(0)])
    before = log.path.read_bytes()
    with pytest.raises(ValueError, match=rf"vote 1 \('{1:032x}'\).*{column}"):
        log.append([vote(2), {**vote(1), **change}])
    assert log.path.read_bytes() == before


def test_a_vote_missing_a_column_is_refused(tmp_path):
    log = VoteLog(tmp_path)
    bad = vote(0)
    del bad["pair_key"]
    with pytest.raises(ValueError, match="vote 0 .*pair_key"):
        log.append([bad])
    with pytest.raises(ValueError, match="list of dicts"):
        log.append(vote(0))
    assert not log.path.exists()


def _append_votes(directory: str, worker: int, start) -> None:
    start.wait()  # all start together so their appends interleave
    log = VoteLog(directory)
    for i in range(25):
        log.append([vote(1000 * worker + 2 * i + k, prompt=f"worker {worker} " + "x" * 5000) for k in range(2)])


def _all_lines_are_votes(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    records = [json.loads(line) for line in data.splitlines()]
    assert all(list(r) == list(VOTE_COLUMNS) for r in records)
    return records


def test_appends_from_threads_and_processes_keep_every_vote_whole(tmp_path):
    start = threading.Event()
    threads = [threading.Thread(target=_append_votes, args=(str(tmp_path), w, start)) for w in range(8)]
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    processes = [ctx.Process(target=_append_votes, args=(str(tmp_path), w, go)) for w in (8, 9)]
    for worker in (*threads, *processes):
        worker.start()
    start.set()
    go.set()
    for t in threads:
        t.join()
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected = {f"{1000 * w + j:032x}" for w in range(10) for j in range(50)}
    assert len(_all_lines_are_votes(tmp_path / VOTES_NAME)) == 500
    votes = load_votes(tmp_path)
    assert len(votes) == 500 and set(votes["vote_id"]) == expected


def test_a_writer_killed_mid_loop_leaves_only_whole_votes(tmp_path):
    log = VoteLog(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child appends until it is killed
        try:
            for i in range(10**6):
                log.append([vote(4 * i + k, prompt="y" * 20000) for k in range(4)])
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while (not log.path.exists() or log.path.stat().st_size < 2_000_000) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    kept = len(log.load())
    assert kept >= 100
    log.append([vote(10**7)])  # cuts a torn tail, if the kill left one
    assert len(_all_lines_are_votes(log.path)) == kept + 1
    assert load_votes(tmp_path)["vote_id"].iloc[-1] == f"{10**7:032x}"


def test_a_torn_tail_is_ignored_then_cut(tmp_path):
    log = VoteLog(tmp_path)
    log.append([vote(0)])
    whole = log.path.read_bytes()
    with open(log.path, "ab") as f:
        f.write(whole[: len(whole) // 2])  # half a vote, as a crash mid-write leaves it
    assert log.load()["vote_id"].tolist() == [f"{0:032x}"]
    log.append([vote(1)])
    assert [r["vote_id"] for r in _all_lines_are_votes(log.path)] == [f"{0:032x}", f"{1:032x}"]


# ----------------------------------------------------------------------------- exports


def awkward_votes(tmp_path: Path) -> pd.DataFrame:
    VoteLog(tmp_path).append(
        [
            vote(0, prompt='=HYPERLINK("http://example.com","click")', voter=""),
            vote(1, prompt="'quoted\", über 🙂\nsecond line", answer="tie", judge=""),
            vote(2, prompt="", answer="right", judge_left=0.25, judge_right=1 / 3, checker_left=0.5),
        ]
    )
    return load_votes(tmp_path)


def test_csv_neutralises_formulas_and_reads_back_exactly(tmp_path):
    votes = awkward_votes(tmp_path)
    export_votes_csv(votes, tmp_path / "votes.csv")
    raw = (tmp_path / "votes.csv").read_text()
    assert '"\'=HYPERLINK(""http://example.com"",""click"")"' in raw
    pd.testing.assert_frame_equal(read_votes_csv(tmp_path / "votes.csv"), votes)


def test_parquet_reads_back_exactly(tmp_path):
    votes = awkward_votes(tmp_path)
    export_votes_parquet(votes, tmp_path / "votes.parquet")
    pd.testing.assert_frame_equal(read_votes_parquet(tmp_path / "votes.parquet"), votes)


def test_exports_refuse_a_frame_that_is_not_votes(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        export_votes_csv(awkward_votes(tmp_path).drop(columns="judge"), tmp_path / "votes.csv")
    assert not (tmp_path / "votes.csv").exists()


# ----------------------------------------------------------------------------- in words


def test_the_command_prints_the_three_tables_with_the_functions_figures(tmp_path, capsys):
    log = VoteLog(tmp_path)
    log.append(judged(300, 0.8, seed=5))
    log.append(electorate(TRUE, 300, seed=6, question="photorealism"))
    votes = load_votes(tmp_path)
    assert main([str(tmp_path), "--csv", str(tmp_path / "v.csv"), "--parquet", str(tmp_path / "v.parquet")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Wrote 600 votes to")
    assert QUESTIONS["caption"] in text and QUESTIONS["photorealism"] in text and "picked a side" in text
    for r in win_rates(votes).itertuples():
        assert f"won {100 * r.win_rate:.1f}% of {r.a_wins + r.b_wins} decisive votes" in text
        assert f"(95% CI {100 * r.low:.1f}% to {100 * r.high:.1f}%)" in text
    for r in strengths(votes).itertuples():
        assert f"{r.strength:+.2f} (95% CI {r.low:+.2f} to {r.high:+.2f})" in text
    (r,) = agreement(votes).itertuples()
    assert f"{100 * r.agree:.1f}% of {r.n} votes" in text
    assert f"kappa {r.kappa:.2f} (95% CI {r.kappa_low:.2f} to {r.kappa_high:.2f})" in text
    pd.testing.assert_frame_equal(read_votes_csv(tmp_path / "v.csv"), votes)
    pd.testing.assert_frame_equal(read_votes_parquet(tmp_path / "v.parquet"), votes)
    assert report(votes) in text


def test_the_command_on_a_folder_without_votes_says_so(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"No votes in {tmp_path} yet.\n"
    assert not (tmp_path / VOTES_NAME).exists()


def test_the_command_on_a_missing_folder_exits_2(monkeypatch, capsys):
    missing = "/nonexistent/results"
    # as `python -m comparisons.votes` runs it, without a new interpreter's seconds of importing torch
    monkeypatch.delitem(sys.modules, "comparisons.votes")
    monkeypatch.setattr(sys, "argv", ["votes.py", missing])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module("comparisons.votes", run_name="__main__")
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: there is no results folder at {str(missing)!r}\n"
