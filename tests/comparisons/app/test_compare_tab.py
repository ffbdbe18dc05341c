"""The Compare tab's backend (comparisons.app.compare) on the tiny preset, called directly: every architecture on one
prompt and seed, made without writing anything and then recorded, one row and PNG each; examples and notices follow
the preset; bad input is refused in words before any model runs."""

from pathlib import Path

import pytest

from comparisons.app.compare import Compare
from comparisons.app.inputs import vocabulary_notice
from comparisons.app.session import AppConfig, Session
from comparisons.settings import Settings

FAST = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)
PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def compare(tmp_path_factory):
    return Compare(Session(AppConfig("tiny", "cpu", tmp_path_factory.mktemp("compare"))))


def test_made_writes_nothing_and_recorded_logs_one_row_and_png_per_architecture(compare):
    session = compare.session
    seen = []
    made, notices = compare.make_compare(PROMPT, "4", FAST, lambda fraction, what: seen.append(fraction))
    assert [m.architecture for m in made] == list(session.architectures) and notices == []
    assert session.runs().empty and not any(Path(m.rows[0]["image_path"]).exists() for m in made)
    assert seen[-1] == pytest.approx(1.0)  # one progress bar over every architecture's steps, to its end
    rows = compare.record(made)
    assert list(rows) == list(session.architectures) and all(r["seed"] == 4 for r in rows.values())
    assert all(Path(r["image_path"]).is_file() for r in rows.values())
    assert len(session.runs()) == len(rows)
    again, _ = compare.run(PROMPT, "5", FAST)  # both halves in one call
    assert len(session.runs()) == 2 * len(rows) and {r["seed"] for r in again.values()} == {5}


@pytest.mark.parametrize(
    "prompt, seed, error",
    [("  ", "0", "the prompt is empty"), (PROMPT, "-2", "Seed: “-2” is out of range"), (PROMPT, "x", "Seed: “x”")],
)
def test_bad_input_is_refused_before_any_model_runs(compare, prompt, seed, error):
    before = len(compare.session.runs())
    with pytest.raises(ValueError, match=error):
        compare.run(prompt, seed, FAST)
    assert len(compare.session.runs()) == before


def test_examples_and_notices_follow_the_preset(compare, tmp_path):
    assert compare.notice("a cat on a sofa") is None  # outside the lab nothing is out of vocabulary
    lab = Compare(Session(AppConfig("lab", "cpu", tmp_path)))  # nothing loads: examples come from prompt files
    assert all(vocabulary_notice(p, "lab") is None for p in lab.examples(4)) and len(lab.examples(4)) == 4
    assert "cat" in lab.notice("a cat on a sofa") and lab.notice(None) is not None
    assert len(compare.examples(3)) == 3 and compare.examples(3) != lab.examples(3)
