"""Votes as people cast them through the served app: gradio_client voters at once, tokens replayed and forged, the
server killed mid-vote, and two browsers voting side by side (comparisons.app.vote, comparisons.app.ui.vote)."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image
from test_app import FAST, FAST_ARGS, TEXTS

from comparisons.app.access import Access, Limits, RateLimiter
from comparisons.app.backends import Backends
from comparisons.app.session import AppConfig, Session
from comparisons.settings import Settings
from comparisons.vote_log import VOTE_COLUMNS, VOTES_NAME, load_votes

from helpers import CHROMIUM, CHROMIUM_FLAGS, free_port, serving, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = "\n".join(
    f"a {c} {s}" for c, s in [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle")]
)
VOTERS, VOTES_EACH = 20, 50


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The lab app on loopback, its run log holding 3 prompts' pairs, four seeds each: (vote, url)."""
    access = Access(limits=Limits(votes_per_minute=1000))
    session = Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("ballots"), access=access))
    backends = Backends.of(session)
    three = "\n".join(PROMPTS.splitlines()[:3])  # 36 pairs of single images a question: 25 each for 20 voters
    backends.vote.record(backends.vote.make_pairs(three, Settings(**FAST)))
    with serving(backends) as url:
        yield backends.vote, url


def _client(url: str) -> Client:
    """A voter's session; patient, as a loaded 2-core CI machine can keep a call waiting many seconds."""
    return Client(url, download_files=False, verbose=False, httpx_kwargs={"timeout": 300})


def _lines(folder: Path) -> list[str]:
    path = folder / VOTES_NAME
    return path.read_text().splitlines() if path.exists() else []


def test_twenty_voters_at_once_fifty_votes_each_are_exactly_a_thousand_rows(served):
    vote, url = served
    before = len(_lines(vote.session.results_dir))
    cast: dict[int, list[str]] = {}
    errors = []

    def voter(i: int) -> None:
        try:
            client = _client(url)
            rng, answers = random.Random(i), []
            for k in range(VOTES_EACH):
                question = ("caption", "photorealism")[k % 2]
                *_, token = client.predict(question, api_name="/next_pair")
                answer = rng.choice(("left", "right", "tie"))
                said = client.predict(token, answer, api_name="/vote")
                assert said.startswith("**Left: ")
                answers.append(answer)
            cast[i] = answers
        except Exception as err:  # noqa: BLE001 - collected, asserted below
            errors.append(f"voter {i}: {err!r}")

    threads = [threading.Thread(target=voter, args=(i,)) for i in range(VOTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    lines = _lines(vote.session.results_dir)[before:]
    assert len(lines) == VOTERS * VOTES_EACH == 1000
    assert all(set(json.loads(line)) == set(VOTE_COLUMNS) for line in lines)  # every line whole
    votes = load_votes(vote.session.results_dir).iloc[before:]
    by_voter = {v: g.sort_values("created_at") for v, g in votes.groupby("voter")}
    assert len(by_voter) == VOTERS and all(len(g) == VOTES_EACH for g in by_voter.values())
    clicked = sorted(tuple(a) for a in cast.values())
    assert sorted(tuple(g["answer"]) for g in by_voter.values()) == clicked  # each voter's answers, in order
    for g in by_voter.values():
        assert g.groupby("question")["pair_key"].nunique().to_dict() == {"caption": 25, "photorealism": 25}
        sides = g["left_architecture"] + g["right_architecture"]
        assert (g["winner"] == g["left_architecture"]).eq(g["answer"] == "left").all()
        assert sides.nunique() > 1  # sides and pairs drawn at random


def test_replayed_forged_and_borrowed_tokens_write_nothing(served):
    vote, url = served
    alice, mallory = (_client(url) for _ in range(2))
    *_, token = alice.predict("caption", api_name="/next_pair")
    *_, spare = alice.predict("photorealism", api_name="/next_pair")
    before = len(_lines(vote.session.results_dir))
    refused = 0
    for client, attempt in ((mallory, token), (mallory, "A" * 32), (alice, "forged-token"), (alice, "")):
        with pytest.raises(Exception, match="not valid"):
            client.predict(attempt, "left", api_name="/vote")
        refused += 1
    assert len(_lines(vote.session.results_dir)) == before
    alice.predict(token, "left", api_name="/vote")  # mallory's try did not take alice's ballot
    for attempt in range(3):
        with pytest.raises(Exception, match="not valid"):
            alice.predict(token, "right", api_name="/vote")  # replayed
    with pytest.raises(Exception, match="left, right, or tie"):
        alice.predict(spare, "both", api_name="/vote")
    assert len(_lines(vote.session.results_dir)) == before + 1 and refused == 4


def test_a_voters_rate_is_limited_and_says_when(served, monkeypatch):
    vote, url = served
    monkeypatch.setattr(vote, "_rate", RateLimiter(3))
    client = _client(url)
    for _ in range(3):
        client.predict(client.predict("caption", api_name="/next_pair")[-1], "tie", api_name="/vote")
    *_, token = client.predict("caption", api_name="/next_pair")
    before = len(_lines(vote.session.results_dir))
    with pytest.raises(Exception, match=r"Votes: 3 a minute per browser session; try again in \d+ s"):
        client.predict(token, "tie", api_name="/vote")
    assert len(_lines(vote.session.results_dir)) == before
    other = _client(url)  # another session votes on
    other.predict(other.predict("caption", api_name="/next_pair")[-1], "tie", api_name="/vote")
    assert len(_lines(vote.session.results_dir)) == before + 1


def test_the_server_killed_mid_vote_leaves_no_torn_line(tmp_path):
    """`python app.py` killed with SIGKILL while four voters vote: every line of the votes log is a whole vote, and
    every vote a voter was told of is there."""
    port, results = free_port(), tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "T2I_VOTES_PER_MINUTE": "10000"}
    command = [sys.executable, "app.py", "--port", str(port), "--results", str(results)]
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url, tmp_path / "server.log")
        _client(url).predict("a red circle", *TEXTS, *FAST_ARGS, api_name="/make_pairs")  # 12 pairs a question
        told, stop = collections.Counter(), threading.Event()

        def voter(i: int) -> None:
            client = _client(url)
            while not stop.is_set():
                try:
                    *_, token = client.predict(("caption", "photorealism")[told[i] % 2], api_name="/next_pair")
                    client.predict(token, "left", api_name="/vote")
                    told[i] += 1
                except Exception:  # noqa: BLE001 - the server is gone, or this voter has judged every pair
                    return

        threads = [threading.Thread(target=voter, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        while sum(told.values()) < 40:
            assert process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    raw = (results / VOTES_NAME).read_bytes()
    assert raw.endswith(b"\n")  # no torn tail: each vote is one write of a whole line
    lines = raw.decode().splitlines()
    assert all(set(json.loads(line)) == set(VOTE_COLUMNS) for line in lines)
    assert sum(told.values()) <= len(lines) <= sum(told.values()) + len(threads)  # at most one in flight each
    assert len(load_votes(results)) == len(lines)


# ----------------------------------------------------------------------------- two browsers


def _pixels(page, selector: str) -> np.ndarray:
    src = page.locator(f"{selector} img").get_attribute("src")
    with urllib.request.urlopen(src) as response:
        return np.asarray(Image.open(response).convert("RGB"))


def test_two_browsers_vote_at_once_and_see_names_only_after_voting(served):
    from playwright.sync_api import expect, sync_playwright

    vote, url = served
    before = len(load_votes(vote.session.results_dir))
    clicked: dict[str, list[tuple[str, np.ndarray]]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        pages = {}
        for name in ("first", "second"):
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(url)
            page.get_by_role("tab", name="Vote").click()
            pages[name] = page
        for round_ in range(3):
            for page in pages.values():  # both pairs up before either votes: two sessions' ballots at once
                page.locator("#vote-next").click()
            for (name, page), answer in zip(pages.items(), (("left", "right", "tie")[round_], "right")):
                button = page.locator(f"#vote-answer-{answer}")
                expect(button).to_be_enabled(timeout=20_000)
                expect(page.locator("#vote-reveal")).to_have_text("")
                assert "Left:" not in page.locator("#vote-left").inner_text()  # no name before the vote
                pixels = _pixels(page, "#vote-left")
                button.click()
                expect(page.locator("#vote-reveal")).to_contain_text("You chose", timeout=20_000)
                expect(page.locator("#vote-left")).to_contain_text("Left: ")  # the name, once voted
                names = page.locator("#vote-reveal").inner_text()
                assert names.startswith("Left: ") and " · Right: " in names
                expect(button).to_be_disabled()
                clicked.setdefault(name, []).append((answer, pixels))
        browser.close()
    votes = load_votes(vote.session.results_dir).iloc[before:]
    assert len(votes) == 6 and votes["voter"].nunique() == 2
    by_answers = {tuple(a for a, _ in made): made for made in clicked.values()}
    assert len(by_answers) == 2  # the browsers answered differently: each voter's rows are matched by their answers
    for _, group in votes.groupby("voter"):
        made = by_answers[tuple(group.sort_values("created_at")["answer"])]
        for (_, pixels), image in zip(made, group.sort_values("created_at")["left_images"]):
            logged = Image.open(vote.session.results_dir / image).convert("RGB")
            assert np.array_equal(pixels, np.asarray(logged))  # the left image it logged


def test_a_voter_who_has_judged_every_pair_is_told_so_with_no_ballot(served):
    vote, url = served
    client = _client(url)
    sets = len(vote.pairs("diversity"))
    for _ in range(sets):
        caption, left, right, token = client.predict("diversity", api_name="/next_pair")
        assert token and left and right and "varies more" in caption
        client.predict(token, "tie", api_name="/vote")
    caption, left, right, token = client.predict("diversity", api_name="/next_pair")
    assert caption.startswith("No pair left for you to judge") and token == "" and left is None and right is None
