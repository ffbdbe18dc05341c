"""The registry is the one home of each architecture's facts: a dummy architecture registered here, and nowhere
else, flows through settings, the CLIs' flags, PNG infotext, the run log's types, sweeps, the harness, summaries,
the app's backend and widgets, and the lab's evaluation."""

import argparse
import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from comparisons import presets, sweep
from comparisons.app.backends import Backends
from comparisons.app.inputs import parse_settings
from comparisons.app.progress import stage_steps
from comparisons.app.session import AppConfig, Session
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.records import settings_from_png
from comparisons.schema import FLOAT, INT, column_kind, core_columns
from comparisons.settings import Settings, add_setting_flags, from_flags
from comparisons.store import RunLog, load_runs
from comparisons.summary import default_pair, own_settings, summary_table
from pipelines import registry
from pipelines.unclip import UnCLIP

from helpers import PAINTER, Painter


@pytest.fixture()
def painter(monkeypatch, tmp_path):
    """The painter registered, and a preset that holds it beside the tiny preset's three architectures."""
    registry.register(PAINTER)  # registered here, and nowhere else
    tiny = presets.get_preset("tiny")
    monkeypatch.setitem(
        presets.PRESETS, "painted", presets.Preset("painted", {**tiny.models, "painter": "-"}, "tiny", False)
    )
    yield PAINTER
    registry.unregister("painter")


FAST = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)


def test_the_shipped_registry_reads_its_defaults_from_the_pipelines_signatures():
    parameters = inspect.signature(UnCLIP.__call__).parameters
    unclip = registry.get("unclip")
    assert {s.name: s.default for s in unclip.settings} == {
        "prior_steps": parameters["prior_num_inference_steps"].default,
        "decoder_steps": 25,
        "super_res_steps": 7,
        "prior_guidance": 4.0,
        "decoder_guidance": 8.0,
    }
    ld = Settings().of("latent_diffusion")
    assert (ld.steps, ld.guidance, ld.negative_prompt) == (50, 7.5, None)
    with pytest.raises(ValueError, match="unknown architecture 'gan'"):
        registry.get("gan")
    with pytest.raises(ValueError, match="registered already"):
        registry.register(unclip)


def test_an_image_in_mode_names_its_method_and_settings_in_the_registry():
    unclip, ld = registry.get("unclip"), registry.get("latent_diffusion")
    assert registry.modes() == ("text_to_image", "variations", "img2img")
    assert [s.name for s in unclip.settings_of("variations")] == [
        "decoder_steps",
        "super_res_steps",
        "decoder_guidance",
    ]
    assert Settings().pipeline_kwargs("unclip", "variations") == {
        "decoder_num_inference_steps": 25,
        "super_res_num_inference_steps": 7,
        "decoder_guidance_scale": 8.0,
    }
    assert ld.image_in.strength.default == inspect.signature(ld.pipeline.img2img).parameters["strength"].default
    assert ld.steps_of_stages({"steps": 50}, "img2img", 0.3) == {"unet": 15}
    assert unclip.steps_of_stages(Settings().for_architecture("unclip", "variations"), "variations") == {
        "decoder": 25,
        "super_res": 7,
    }
    assert {"image_encoder", "vae_encode"} <= set(registry.all_stages())
    assert column_kind("strength") == FLOAT and column_kind("steps_unet") == INT and column_kind("mode") == "string"
    with pytest.raises(ValueError, match="LD has no mode 'variations'; it has text_to_image or img2img"):
        ld.settings_of("variations")
    with pytest.raises(ValueError, match="Painter has no mode 'img2img'; it has text_to_image"):
        PAINTER.settings_of("img2img")


def test_an_image_in_mode_is_checked_when_registered():
    bad = registry.ImageIn("scribble", "scribble", ("coats",), ("paint",), takes_prompt=False)
    with pytest.raises(ValueError, match="painter's scribble calls 'scribble', which its pipeline lacks"):
        registry.register(dataclasses.replace(PAINTER, image_in=bad))
    wrong = dataclasses.replace(bad, method="__call__", settings=("coats", "size"))
    with pytest.raises(ValueError, match=r"painter's scribble names a mode or settings it lacks: \['size'\]"):
        registry.register(dataclasses.replace(PAINTER, image_in=wrong))
    assert "painter" not in registry.names()


def test_a_new_architecture_flows_through_settings_flags_and_infotext(painter):
    assert (Settings().of("painter").coats, Settings().of("painter").brightness) == (3, 0.5)  # its dataclass's
    assert Settings(coats=5).pipeline_kwargs("painter") == {"num_coats": 5, "brightness": 0.5}
    assert parse_settings(coats="4", brightness="0.25") == Settings(coats=4, brightness=0.25)
    with pytest.raises(ValueError, match="Painter coats must be between 1 and 1000"):
        parse_settings(coats=0)
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    assert from_flags(parser.parse_args(["--coats", "6"])).of("painter").coats == 6
    assert column_kind("coats") == INT and column_kind("brightness") == FLOAT and "seconds_paint" in core_columns()
    assert "coats" in own_settings() and stage_steps("painter", Settings(coats=4)) == {"paint": 4}


def test_a_new_architecture_flows_through_a_sweep_the_harness_the_log_and_the_summary(painter, tmp_path, tiny):
    harness = Harness({"unclip": tiny("unclip"), "painter": Painter()}, tiny_judge(), tmp_path, log=RunLog(tmp_path))
    jobs = sweep.plan_jobs(
        ["a red circle", "a blue square"], [0, 1], [2], [0.5, 1.0], ["unclip", "painter"], Settings(super_res_steps=2)
    )
    assert {j.settings.value("coats") for j in jobs if j.architecture == "painter"} == {2}
    assert sweep.run_sweep(harness, jobs, batch_size=4, progress=False) == len(jobs) == 16
    df = load_runs(tmp_path)
    painted = df[df["architecture"] == "painter"]
    assert len(painted) == 8 and painted["coats"].dtype == "Int64" and painted["seconds_paint"].notna().all()
    assert painted["prior_steps"].isna().all()  # unCLIP's settings stay out of the painter's rows
    row = painted.iloc[0]
    architecture, prompt, seed, settings = settings_from_png(row["image_path"])
    assert (architecture, settings.of("painter").coats, settings.of("painter").brightness) == (
        "painter",
        2,
        row["brightness"],
    )
    again = Painter()([prompt], seed=[seed], **settings.pipeline_kwargs("painter")).pil_images()[0]
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(row["image_path"]).convert("RGB")))
    first = df[df["brightness"].isna() | (df["brightness"] == 0.5)]
    first = first[(first["decoder_guidance"].isna()) | (first["decoder_guidance"] == 0.5)]
    assert default_pair(first) == ("unclip", "painter")  # the first two registered that have rows
    assert summary_table(first).loc["seconds_total", "n"] == 4


def test_a_new_architecture_reaches_the_apps_backend_and_widgets(painter, tmp_path):
    session = Session(AppConfig("painted", "cpu", tmp_path))
    assert session.architectures == ("unclip", "latent_diffusion", "stable_unclip", "painter")
    tabs = Backends.of(session)
    rows, _ = tabs.compare.run("a red circle", "3", FAST.replace(coats=2))
    assert set(rows) == {"unclip", "latent_diffusion", "stable_unclip", "painter"} and rows["painter"]["coats"] == 2
    assert Path(rows["painter"]["image_path"]).is_file()
    config = app.build_app(tabs).config
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"image-painter", "stats-painter", "coats", "brightness"} <= ids
    labels = {c["props"].get("label") for c in config["components"]}
    assert {"Painter (a dummy)", "Painter coats"} <= labels
