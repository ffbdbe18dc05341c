"""The Sweep tab's backend (comparisons.app.sweep) on the tiny preset, called directly: nothing to show before a
sweep, a grid refused in words, ZeroGPU's way of running the batches one call at a time, and the models kept while a
sweep runs on them."""

import time

import pytest

from comparisons.app.session import AppConfig, Session
from comparisons.app.sweep import Sweep
from comparisons.app.views import TABLE_COLUMNS
from comparisons.settings import Settings

FAST = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2)


@pytest.fixture
def sweep(tmp_path):
    return Sweep(Session(AppConfig("tiny", "cpu", tmp_path)))


def test_before_any_sweep_there_is_nothing_to_show(sweep):
    assert sweep.status is None and list(sweep.rows().columns) == list(TABLE_COLUMNS) and sweep.rows().empty
    assert sweep.picture() == (None, "No sweep yet: its grid fills in here as batches land.")
    with pytest.raises(ValueError, match="no sweep is running"):
        sweep.cancel()


@pytest.mark.parametrize(
    "prompts, architectures, error",
    [("", ["unclip"], "the sweep has no prompts"), (" \n ", ["unclip"], "no prompts"), ("a", [], "pick at least one")],
)
def test_a_grid_without_prompts_or_architectures_is_refused(sweep, prompts, architectures, error):
    with pytest.raises(ValueError, match=error):
        sweep.plan(prompts, "0", "2", "4", architectures)
    assert sweep.status is None


def test_the_batches_run_one_call_at_a_time_and_land_as_they_go(sweep):
    status, todo = sweep.plan("a red circle\na blue square", "0", "2", "4", ["unclip"], FAST, batch_size=1)
    assert status.total == 2 and len(todo) == 2 and status.running
    calls = []

    def make(batch, run_id, visitor):  # what a decorated GPU call of make_sweep_batch does, counted
        calls.append(len(batch))
        return sweep.make_sweep_batch(batch, run_id, visitor)

    done = [s.done for s in sweep.steps(status, todo, make=make)]
    assert calls == [1, 1] and done == [1, 2, 2] and not status.running and status.error is None
    assert len(sweep.rows()) == 2 and set(sweep.rows()["run_id"]) == {status.run_id}
    path, note = sweep.picture("prompt", "seed")
    assert path.is_file() and path.parent == sweep.session.results_dir / "grids" and "2/2 images made" in note


def test_the_models_stay_while_a_sweep_runs_on_them(sweep):
    session = sweep.session
    status = sweep.start("a red circle", "0-999", "2", "4", ["unclip"], FAST, batch_size=1)
    try:
        with pytest.raises(ValueError, match="a sweep is running on these models"):
            session.switch("lab")
        assert session.config.preset == "tiny"
    finally:
        sweep.cancel()
        sweep.wait(120)
    assert not status.running and status.cancelled
    assert "**lab**" in session.switch("lab")  # once it has stopped, the switch goes through
    end = time.monotonic() + 120
    while not session.settled:  # the load ends here, not in the next test (it patches torch while it runs)
        assert time.monotonic() < end, session.status()
        time.sleep(0.05)
    assert session.status().startswith("**lab** loaded")
