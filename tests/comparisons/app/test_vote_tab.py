"""The Vote tab's backend: pairs found in the run log, ballots shown blind and cast once, votes as rows of the votes
log, and the refusals that keep ballots from being stuffed (comparisons.app.vote)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_app import FAST

from comparisons.app.access import Access, Limits
from comparisons.app.pairs import GRID_SEEDS, pairs_in, spread_of
from comparisons.app.session import AppConfig, Session
from comparisons.app.views import score_views
from comparisons.app.vote import PENDING_PER_VOTER, Vote, reveal
from comparisons.settings import Settings
from comparisons.vote_log import VOTES_NAME, load_votes, read_votes_csv, read_votes_parquet

PROMPTS = "a red circle above a blue square\na green triangle"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _row(run_id, prompt, seed, arch, **extra):
    return {
        "run_id": run_id,
        "prompt": prompt,
        "seed": seed,
        "architecture": arch,
        "image_path": f"{arch}-{seed}.png",
        **extra,
    }


def test_pairs_are_one_row_per_architecture_of_one_run_prompt_and_seed():
    rows = [_row("r1", "p", s, a, clip_score=float(s)) for s in range(9) for a in ("unclip", "latent_diffusion")]
    rows += [_row("r1", "p", 0, "stable_unclip"), _row("r1", "p", 0, "stable_unclip")]  # twice: left out
    rows += [_row("r2", "p", 0, "stable_unclip")]  # alone in its run: no pair
    df = pd.DataFrame(rows)
    singles = pairs_in(df, "caption")
    assert len(singles) == 9
    assert all([s.architecture for s in p.sides] == ["unclip", "latent_diffusion"] for p in singles)
    assert sorted(p.seeds for p in singles) == [(s,) for s in range(9)]
    sets = pairs_in(df, "diversity")
    assert [p.seeds for p in sets] == [(0, 1, 2, 3), (4, 5, 6, 7)]  # the ninth seed makes no set of four
    assert sets[0].sides[0].images == [f"unclip-{s}.png" for s in range(4)]
    assert len({p.key for p in singles + sets}) == 11
    assert singles[0].flipped().key == singles[0].key  # a pair is named whatever its sides' order
    with pytest.raises(ValueError, match="Question"):
        pairs_in(df, "beauty")


def test_a_pair_made_again_by_another_run_is_one_pair():
    def made(run_id, arch, digest):
        return _row(run_id, "p", 0, arch, model=arch, image_path=f"images/{arch}/{run_id}-{digest}.png")

    again = [made(r, a, d) for r in ("r1", "r2") for a, d in (("unclip", "a" * 16), ("latent_diffusion", "b" * 16))]
    assert len(pairs_in(pd.DataFrame(again), "caption")) == 1  # the same images: one pair, one vote per voter
    other = again + [made("r3", "unclip", "c" * 16), made("r3", "latent_diffusion", "b" * 16)]
    assert len(pairs_in(pd.DataFrame(other), "caption")) == 2  # other settings (another digest): another pair


def test_image_in_rows_and_rows_without_images_make_no_pairs():
    rows = [_row("r", "p", 0, a, mode="variation") for a in ("unclip", "latent_diffusion")]
    assert pairs_in(pd.DataFrame(rows), "caption") == []
    assert pairs_in(pd.DataFrame(columns=["run_id", "prompt", "seed", "architecture"]), "caption") == []


def test_spread_is_one_minus_the_mean_cosine_of_different_images():
    same = np.tile([[1.0, 0.0]], (4, 1))
    assert spread_of(same) == pytest.approx(0.0)
    orthogonal = np.eye(4)
    assert spread_of(orthogonal) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        spread_of(same[:1])


@pytest.fixture(scope="module")
def voting(tmp_path_factory):
    """A lab session whose run log holds pairs made on the spot: (vote, clock)."""
    clock = Clock()
    access = Access(limits=Limits(votes_per_minute=5))
    session = Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("vote"), access=access))
    vote = Vote(session, clock=clock)
    said = vote.record(vote.make_pairs(PROMPTS, Settings(**FAST)))
    assert said.startswith("Made 24 images: 2 prompts × 4 seeds × 3 architectures, 24 new pairs")
    return vote, clock


def _lines(vote: Vote) -> list[str]:
    path = vote.session.results_dir / VOTES_NAME
    return path.read_text().splitlines() if path.exists() else []


def test_pairs_made_on_the_spot_give_every_question_pairs(voting):
    vote, _ = voting
    runs = vote.session.runs()
    assert len(runs) == 24 and runs["run_id"].nunique() == 1
    assert sorted(runs.groupby("architecture")["seed"].nunique()) == [GRID_SEEDS] * 3
    assert len(vote.pairs("caption")) == len(vote.pairs("photorealism")) == 2 * 4 * 3
    assert len(vote.pairs("diversity")) == 2 * 3


def test_a_vote_is_a_row_of_what_was_shown_and_names_show_only_after(voting, tmp_path):
    vote, clock = voting
    clock.now += 120
    ballot = vote.show("alice", "caption")
    left, right = vote.pictures(ballot)
    assert left.size == right.size == (32, 32)
    shown = np.asarray(Image.open(ballot.pair.sides[0].images[0]).convert("RGB"))
    assert np.array_equal(np.asarray(left), shown)  # the side's own pixels, decoded afresh
    row, cast = vote.cast("alice", ballot.token, "right")
    assert cast == ballot
    back = load_votes(vote.session.results_dir).iloc[-1]
    assert back["vote_id"] == row["vote_id"] and back["voter"] == "alice" and back["answer"] == "right"
    assert back["left_architecture"] == ballot.pair.sides[0].architecture
    assert back["winner"] == ballot.pair.sides[1].architecture
    folder = vote.session.results_dir
    assert folder / back["left_images"] == Path(ballot.pair.sides[0].images[0])  # named inside the results folder
    assert back["left_images"].startswith("images/") and back["prompt"] == ballot.pair.prompt
    assert back["seeds"] == str(ballot.pair.seeds[0]) and back["pair_key"] == ballot.pair.key
    runs = vote.session.runs().set_index("image_path")
    for side, where in zip(ballot.pair.sides, ("left", "right")):
        made = runs.loc[side.images[0]]
        assert back[f"judge_{where}"] == pytest.approx(made["clip_score"])  # the judge's CLIP score of that image
        assert back[f"checker_{where}"] == float(made["check_all_correct"])  # and the checker's verdict
    said = reveal(ballot, "right")
    assert "score of image and caption" in said and "The Shapes checker reads" in said
    names = [s.architecture for s in ballot.pair.sides]
    assert "Left: " in said and "You chose the right one" in said
    assert all(n.replace("_", " ")[:4].lower() in said.lower() for n in names)


def test_a_ballot_is_single_use_and_the_voters_own(voting):
    vote, clock = voting
    clock.now += 120
    ballot = vote.show("bob", "photorealism")
    assert ballot.judge == ballot.checker == (None, None)  # CLIP score measures the caption, not realism
    assert "judge" not in reveal(ballot, "left") and "checker" not in reveal(ballot, "left")
    before = len(_lines(vote))
    for who, token in (("mallory", ballot.token), ("bob", "made-up"), ("bob", None), ("bob", "")):
        with pytest.raises(ValueError, match="not valid"):
            vote.cast(who, token, "left")
    assert len(_lines(vote)) == before  # refusals write nothing
    vote.cast("bob", ballot.token, "left")  # another's attempt did not take bob's ballot
    with pytest.raises(ValueError, match="not valid"):
        vote.cast("bob", ballot.token, "left")  # replayed
    with pytest.raises(ValueError, match="left, right, or tie"):
        vote.cast("bob", vote.show("bob", "photorealism").token, "both")
    assert len(_lines(vote)) == before + 1
    assert all(json.loads(line)["voter"] in ("alice", "bob") for line in _lines(vote))


def test_a_voter_never_judges_a_pair_twice_and_runs_out(voting):
    vote, clock = voting
    keys = []
    while True:
        clock.now += 13  # under the rate of 5 a minute
        try:
            ballot = vote.show("carol", "diversity")
        except ValueError as err:
            assert "No pair left" in str(err)
            break
        left, right = vote.pictures(ballot)
        assert left.size == (2 * 32 + 2, 2 * 32 + 2)  # a set of four as a 2 × 2 mosaic
        assert None not in ballot.judge and all(0 <= j <= 2 for j in ballot.judge)
        keys.append(ballot.pair.key)
        vote.cast("carol", ballot.token, "tie")
    assert len(keys) == len(set(keys)) == len(vote.pairs("diversity"))
    votes = load_votes(vote.session.results_dir)
    assert sorted(votes[votes["voter"] == "carol"]["pair_key"]) == sorted(keys)
    assert (votes[votes["voter"] == "carol"]["seeds"].str.count(",") == GRID_SEEDS - 1).all()


def test_a_pair_out_on_a_ballot_is_not_handed_again(voting):
    vote, clock = voting
    clock.now += 120
    ballots = [vote.show("dave", "caption") for _ in range(10)]
    assert len({b.pair.key for b in ballots}) == 10
    for b in ballots[:5]:
        vote.cast("dave", b.token, "left")
    assert len(vote._voted["dave"]) == 5


def test_sides_are_drawn_at_random(voting):
    vote, _ = voting
    lefts = {vote.show(f"eve{i}", "caption").pair.sides[0].architecture for i in range(60)}
    assert len(lefts) == 3  # every architecture shows up on the left


def test_unused_ballots_are_capped_and_expire(voting):
    vote, clock = voting
    clock.now += 120
    tokens = [vote.show("frank", "photorealism").token for _ in range(PENDING_PER_VOTER + 2)]
    with pytest.raises(ValueError, match="not valid"):
        vote.cast("frank", tokens[0], "left")  # the oldest, voided by newer ones
    clock.now += 3601
    with pytest.raises(ValueError, match="not valid"):
        vote.cast("frank", tokens[-1], "left")


def test_votes_are_rate_limited_per_voter(voting):
    vote, clock = voting
    clock.now += 120
    for _ in range(5):
        vote.cast("grace", vote.show("grace", "caption").token, "left")
    ballot = vote.show("grace", "caption")
    before = len(_lines(vote))
    with pytest.raises(ValueError, match="5 a minute"):
        vote.cast("grace", ballot.token, "left")
    assert len(_lines(vote)) == before
    vote.cast("heidi", vote.show("heidi", "caption").token, "left")  # another voter is not held up
    clock.now += 61
    vote.cast("grace", ballot.token, "left")  # the refused ballot is still good once the minute has passed


def test_scores_read_in_words(voting):
    vote, _ = voting
    note, wins, strengths, agreement = score_views(*vote.scores())
    votes = load_votes(vote.session.results_dir)
    assert note.startswith(f"{len(votes):,} votes")
    assert set(wins["question"]) <= {"Photorealism", "Caption", "Diversity"}
    assert wins["votes"].sum() == len(votes)
    assert all(" vs " in a for a in wins["first vs second"])
    assert "No votes yet" in score_views(votes.iloc[:0], *[pd.DataFrame()] * 2, 0)[0]


def test_pairs_need_prompts_the_models_take(voting):
    vote, _ = voting
    with pytest.raises(ValueError, match="at most 16"):
        vote.prompts("\n".join(f"p{i}" for i in range(17)))
    assert vote.prompts("") == vote.prompts(None) and len(vote.prompts("")) == 8
    assert vote.prompts(" a \n\n a \n b ") == ["a", "b"]


def test_votes_export_as_csv_neutralised_and_parquet(voting):
    vote, clock = voting
    clock.now += 120
    votes = vote.votes("anyone")  # on loopback every vote
    assert len(votes) == len(_lines(vote))
    csv, parquet = vote.export(votes, "csv"), vote.export(votes, "parquet")
    assert csv.parent.name == "exports" and csv.name.startswith(f"votes-{len(votes)}-")
    assert vote.export(votes, "csv") == csv  # the same votes, the same file
    pd.testing.assert_frame_equal(read_votes_csv(csv), votes.reset_index(drop=True))
    pd.testing.assert_frame_equal(read_votes_parquet(parquet), votes.reset_index(drop=True))
    with pytest.raises(ValueError, match="no votes"):
        vote.export(votes.iloc[:0], "csv")
    with pytest.raises(ValueError, match="csv or parquet"):
        vote.export(votes, "xlsx")


def test_a_public_app_shows_a_voter_the_owners_pairs_and_their_own_and_exports_their_votes(tmp_path):
    access = Access(public=True, limits=Limits(per_minute=5, votes_per_minute=100))
    session = Session(AppConfig("lab", "cpu", tmp_path, access=access))
    vote = Vote(session)
    owner = vote.pairs("caption", "owners-visitor-id-never-used")
    assert owner == []
    vote.record(vote.make_pairs("=HYPERLINK(1)", Settings(**FAST), visitor="ann"))
    assert len(vote.pairs("caption", "ann")) == 12 and vote.pairs("caption", "ben") == []  # ann's rows are hers
    with pytest.raises(ValueError, match="No pair left"):
        vote.show("ben-voter", "caption", visitor="ben")
    ballot = vote.show("ann-voter", "caption", visitor="ann")
    vote.cast("ann-voter", ballot.token, "left")
    assert len(vote.votes("ann-voter")) == 1 and vote.votes("ben-voter").empty
    raw = vote.export(vote.votes("ann-voter"), "csv").read_text()
    assert '"\'=HYPERLINK(1)"' in raw  # a prompt a spreadsheet would run, neutralised
