"""The app under ZeroGPU's model: every function that runs the models runs in a forked child (tests/helpers.forked_gpu
stands in for spaces.GPU), so only what it returns comes back. Images, rows and sweep progress must reach the
serving process, which alone writes the PNGs and the run log. Each call asks ZeroGPU for the seconds its steps need."""

import math
import os
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

import app
from comparisons.app.backends import Backends
from comparisons.app.session import AppConfig, Session
from comparisons.app.zerogpu import GPU_CALL_OVERHEAD_S, GPU_SAFETY, compare_duration, gpu_duration, image_in_duration
from comparisons.records import settings_from_png
from comparisons.settings import Settings

from helpers import check_grid_png, check_results_folder, forked_gpu, free_port, random_image

FAST = [2, 2, 2, 4.0, 8.0, 2, 7.5, 2, 4.0, 0, 2, 10.0]  # the Advanced widgets, in the registry's order
TEXTS = ["", ""]  # the negative prompts: latent diffusion's, Stable unCLIP's
PROMPT = "a red circle above a blue square"
ARCHS = ("unclip", "latent_diffusion", "stable_unclip")  # the lab preset's, in the page's order


@pytest.fixture(scope="module")
def tabs(tmp_path_factory):
    """A lab session as on ZeroGPU, and its tabs' backends (the served app's own)."""
    session = Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("zero"), zero_gpu=True))
    session.harness()  # as app.main does on ZeroGPU: in the main thread, before launch
    return Backends.of(session)


@pytest.fixture(scope="module")
def zero(tabs):
    """The lab app as on ZeroGPU, served on loopback: (session, client, GPU calls made)."""
    session, calls = tabs.session, []
    demo = app.build_app(tabs, gpu=forked_gpu(calls, writes_nothing_in=session.results_dir))
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        **app.launch_options(None, free_port(), {}),
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(session.results_dir)],
    )
    yield session, Client(url, verbose=False), calls
    demo.close()


def test_a_comparison_made_in_a_forked_worker_is_written_and_logged_by_the_server(zero):
    session, client, calls = zero
    before = len(session.runs())
    made = client.predict(PROMPT, *TEXTS, "5", *FAST, api_name="/compare")
    call = calls[-1]
    assert call.name == "make_compare" and call.pid != os.getpid() and call.duration >= 30
    new = session.runs().iloc[before:]
    assert list(new["architecture"]) == list(ARCHS) and set(new["seed"]) == {5}
    for png, stats, arch in zip(made[::2], made[1::2], ARCHS, strict=True):
        row = new[new["architecture"] == arch].iloc[0]
        assert Path(row["image_path"]).is_file() and stats.startswith("seed 5")
        assert Image.open(png).tobytes() == Image.open(row["image_path"]).tobytes()  # the page shows the logged PNG
        assert settings_from_png(row["image_path"])[:3] == (arch, PROMPT, 5)
    check_results_folder(session.results_dir)


def test_an_image_taken_in_is_made_in_a_forked_worker_and_kept_and_logged_by_the_server(zero, tmp_path):
    session, client, calls = zero
    before = len(session.runs())
    random_image(40, seed=8).save(tmp_path / "source.png")
    _, unclip_png, _, ld_png, ld_stats, stable_png, _, _ = client.predict(
        handle_file(str(tmp_path / "source.png")), PROMPT, 0.5, "6", *TEXTS, *FAST, api_name="/image_in"
    )
    call = calls[-1]
    assert call.name == "make" and call.pid != os.getpid() and call.duration >= 30
    new = session.runs().iloc[before:]
    assert list(new["architecture"]) == list(ARCHS) and set(new["seed"]) == {6}
    for png, arch in ((unclip_png, "unclip"), (ld_png, "latent_diffusion"), (stable_png, "stable_unclip")):
        row = new[new["architecture"] == arch].iloc[0]
        assert Image.open(png).tobytes() == Image.open(row["image_path"]).tobytes()
        assert Path(row["source_image"]).is_file()  # written here, by the server: the worker wrote nothing
    assert ld_stats.startswith("img2img at strength 0.5")
    check_results_folder(session.results_dir)


def test_looking_inside_runs_in_a_forked_worker(zero):
    _, client, calls = zero
    decoder_strip, *_ = client.predict(PROMPT, *TEXTS, "5", *FAST, api_name="/explain")
    assert calls[-1].name == "explain" and calls[-1].pid != os.getpid()
    assert Image.open(decoder_strip).size[0] > 0


def test_latent_space_walks_run_in_forked_workers_and_reach_the_page(zero):
    session, client, calls = zero
    before = len(session.runs())
    *strips, note = client.predict(
        "a red circle", "a blue square", 3, "prompts", *TEXTS, "5", *FAST, api_name="/interpolate"
    )
    assert calls[-1].name == "interpolate" and calls[-1].pid != os.getpid() and calls[-1].duration >= 30
    assert len(strips) == 2 * len(ARCHS)  # a strip and its table per architecture
    for strip, table in zip(strips[::2], strips[1::2], strict=True):
        assert Image.open(strip).width > 2.5 * Image.open(strip).height  # three frames side by side
        assert table["headers"] == ["read", "t = 0.00", "t = 0.50", "t = 1.00"]  # the checker's, made in the child
    assert note.startswith("The Shapes checker read every frame")
    strip, table, note = client.predict(
        "a red circle", "a red circle", "a red square", 3, 0.5, "empty", *TEXTS, "5", *FAST, api_name="/text_diff"
    )
    assert calls[-1].name == "text_diff" and calls[-1].pid != os.getpid()
    assert table["headers"] == ["read", "θ = 0.00", "θ = 0.25", "θ = 0.50"] and Image.open(strip).width > 0
    assert len(session.runs()) == before  # explorations: nothing logged


def test_a_sweep_is_a_sequence_of_gpu_calls_whose_progress_and_rows_reach_the_page(zero, tabs):
    session, client, calls = zero
    before, made_before = len(session.runs()), len(calls)
    job = client.submit(
        "a red circle\na blue square", "0-2", "2,3", "7.5", ["unclip", "latent_diffusion"], api_name="/sweep"
    )
    outputs = job.result() and job.outputs()  # every yield of the generator, in order
    messages = [status for status, *_ in outputs]
    done = [int(m.split(": ")[1].split("/")[0]) for m in messages]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 24 and "finished" in messages[-1], messages
    batches = calls[made_before:]
    assert len(batches) == 4 and all(c.name == "make_sweep_batch" and c.pid != os.getpid() for c in batches)
    assert done == [0, 6, 12, 18, 24, 24]  # the page hears of every batch (one per architecture and steps) as it lands
    rows = session.runs().iloc[before:]
    assert len(rows) == 24 and rows["image_path"].is_unique and rows["run_id"].nunique() == 1
    sweep = tabs.sweep
    assert sweep.status.done == 24 and not sweep.status.running  # counted here, not in a child
    check_results_folder(session.results_dir)
    first_grid, last_grid = outputs[0][2], outputs[-1][2]  # the grid as the first and the last batch landed
    assert check_grid_png(first_grid, rows.iloc[:0])["run_id"] == sweep.status.run_id  # all placeholders
    parameters = check_grid_png(last_grid, rows)  # every image in its cell
    assert parameters["steps"] == [2, 3] and parameters["seeds"] == [0, 1, 2] and "24/24 images" in outputs[-1][4]


def test_models_are_fixed_on_zerogpu(zero):
    session, *_ = zero
    with pytest.raises(ValueError, match="fixed when the Space starts"):
        session.switch("tiny")


def test_main_loads_the_models_in_the_main_thread_before_launch_on_zerogpu(monkeypatch, tmp_path):
    seen = {}

    def launch(self, **options):
        seen["loaded"] = self._session._harness is not None

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(app.gr.Blocks, "launch", launch)
    original = app.build_app

    def build(backends, *args, **kwargs):
        demo = original(backends, *args, **kwargs)
        demo._session = backends.session
        return demo

    monkeypatch.setattr(app, "build_app", build)
    app.main(["--device", "cpu", "--results", str(tmp_path)])
    assert seen == {"loaded": True}


def test_stable_unclip_asks_zerogpu_for_its_prior_and_its_u_nets_steps():
    """Its seconds per step are the registry's (Karlo's prior as measured; the U-Net's scaled from SD 1.5's by latent
    area, an estimate until a GPU measures it), so a comparison of three asks for its steps on top of the others'."""
    two, three = ("unclip", "latent_diffusion"), ("unclip", "latent_diffusion", "stable_unclip")
    defaults = Settings()  # Stable unCLIP: 25 prior steps, 20 U-Net steps
    alone = 25 * 0.015 + 20 * 0.072
    assert gpu_duration([("stable_unclip", defaults, 1)]) == math.ceil(GPU_CALL_OVERHEAD_S + GPU_SAFETY * alone)
    assert compare_duration(three, defaults) > compare_duration(two, defaults)
    more = defaults.replace(stable_unclip_steps=100)
    assert compare_duration(three, more) > compare_duration(three, defaults)
    # its variations skip the prior: only the U-Net's steps count
    assert image_in_duration(("stable_unclip",), defaults, None) < gpu_duration([("stable_unclip", defaults, 1)])
