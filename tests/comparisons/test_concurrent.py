"""A comparison's architectures side by side (Harness.make_each): the same images and rows as one at a time,
rows that say how they were timed, and failures raised once all have finished; three architectures on two cores run
two at a time."""

from __future__ import annotations

import contextvars

import pytest

from comparisons import harness as harness_module
from comparisons.app.compare import Compare
from comparisons.app.session import AppConfig, Session
from comparisons.harness import pays, workers
from comparisons.presets import load_harness
from comparisons.schema import CONCURRENT, ISOLATED, TIMING
from comparisons.settings import Settings
from pipelines.devices import cores
from tests.helpers import assert_images_close

PROMPT = "a red circle above a blue square"
FEW = Settings(prior_steps=3, decoder_steps=3, super_res_steps=2, steps=3)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return load_harness("lab", device="cpu", out_dir=tmp_path_factory.mktemp("concurrent"), log=False)


def test_side_by_side_gives_the_images_and_rows_of_one_at_a_time(harness):
    alone = harness.make_each(PROMPT, 3, FEW, "r1", {}, concurrent=False)
    both = harness.make_each(PROMPT, 3, FEW, "r2", {}, concurrent=True)
    assert [m.architecture for m in both] == [m.architecture for m in alone] == list(harness.architectures)
    for a, b in zip(alone, both):
        assert_images_close(b.output.images, a.output.images, atol=1e-4)
        assert a.rows[0][TIMING] == ISOLATED and b.rows[0][TIMING] == CONCURRENT
        # the checker read the same (repr: a verdict it could not give is NaN, which equals nothing)
        verdicts = [{k: repr(v) for k, v in m.rows[0].items() if k.endswith(("_correct", "_read"))} for m in (a, b)]
        assert verdicts[0] and verdicts[0] == verdicts[1]
        assert b.rows[0]["clip_cosine"] == pytest.approx(a.rows[0]["clip_cosine"], abs=1e-4)


def test_callbacks_see_the_callers_context_variables(harness):
    """gradio's progress bar finds its request in context variables: side by side, the callbacks must see them."""
    request = contextvars.ContextVar("request", default=None)
    request.set("event 1")
    seen = set()
    callbacks = {a: (lambda state: seen.add(request.get())) for a in harness.architectures}
    harness.make_each(PROMPT, 0, FEW, "r4", callbacks, concurrent=True)
    assert seen == {"event 1"}


def test_a_failure_is_raised_after_all_finished(harness, monkeypatch):
    finished = []
    make = type(harness).make

    def flaky(self, arch, *args, **kwargs):
        if arch == "unclip":
            raise ValueError("unclip broke")
        finished.append(make(self, arch, *args, **kwargs).architecture)
        return finished[-1]

    monkeypatch.setattr(type(harness), "make", flaky)
    with pytest.raises(ValueError, match="unclip broke"):
        harness.make_each(PROMPT, 0, FEW, "r3", {}, concurrent=True)
    assert sorted(finished) == sorted(a for a in harness.architectures if a != "unclip")


def test_the_lab_preset_runs_side_by_side_where_there_are_the_cores(harness, tmp_path, monkeypatch):
    assert harness.architectures == ("unclip", "latent_diffusion", "stable_unclip")
    assert harness.concurrent == pays(3) == (cores() > 1)
    monkeypatch.setattr(harness_module, "cores", lambda: 2)
    assert workers(3) == 2 and workers(2) == 2 and workers(1) == 1
    monkeypatch.setattr(harness_module, "cores", lambda: 1)
    assert not pays(3) and workers(3) == 1
    assert not load_harness("lab", device="cpu", out_dir=tmp_path, log=False, fast_cpu=False).concurrent


def test_a_compare_request_logs_its_timing_and_reports_progress_to_the_end(tmp_path):
    session = Session(AppConfig(results_dir=tmp_path))
    fractions = []
    rows, _ = Compare(session).run(PROMPT, 5, FEW, progress=lambda f, _: fractions.append(f))
    expected = CONCURRENT if session.harness().concurrent else ISOLATED
    assert {r[TIMING] for r in rows.values()} == {expected}
    assert set(session.runs()[TIMING]) == {expected}  # the run log keeps the column
    assert max(fractions) == pytest.approx(1.0) and all(0 < f <= 1 for f in fractions)


def test_loading_warms_the_traces_and_the_stage_memory_of_the_default_comparison(harness):
    for arch, pipe in harness.pipelines.items():
        for name in pipe.denoiser_names:
            traced = getattr(pipe, name).forward
            assert traced.traces, f"{arch} {name}: not traced while loading"
    before = {
        (a, n): list(getattr(p, n).forward.traces) for a, p in harness.pipelines.items() for n in p.denoiser_names
    }
    memory_passes = len(harness._stage_memory)
    assert memory_passes >= len(harness.pipelines)  # the default configuration's, once per architecture
    harness.make_each("a blue square", 3, Settings(), "first", {})  # a user's first image
    assert len(harness._stage_memory) == memory_passes  # no new memory pass
    after = {
        (a, n): list(getattr(p, n).forward.traces) for a, p in harness.pipelines.items() for n in p.denoiser_names
    }
    assert after == before  # nothing traced
