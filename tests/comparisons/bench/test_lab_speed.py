"""`python -m comparisons.bench --preset lab`: every technique timed against eager in one run, its images checked
against eager's, the table and notes printed and the JSON written."""

from __future__ import annotations

import json

import pytest

from comparisons.bench import cli as bench
from comparisons.bench import lab_speed
from comparisons.presets import FAST_CPU, load_models
from comparisons.settings import Settings

FEW = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)
THREE = ["unclip", "latent_diffusion", "stable_unclip"]


@pytest.fixture(scope="module")
def rows():
    pipes = load_models("lab", device="cpu", fast_cpu=False)
    out = lab_speed.bench_modes(pipes, repeats=1, settings=FEW)
    assert all(p.cpu_speed == lab_speed.EAGER for p in pipes.values())  # left eager, as loaded
    return out


def test_every_mode_is_timed_against_eager_with_its_images_checked(rows):
    assert [r["technique"] for r in rows] == [m.label for m in lab_speed.modes()]
    eager = rows[0]
    assert eager["technique"] == "eager" and eager["all_ratio"] == 1.0 and eager["max_abs_diff"] == 0.0
    for r in rows:
        two = r["technique"].endswith("two architectures")
        assert r["architectures"] == (THREE[:2] if two else THREE)
        assert r["all_s"] > 0 and all(r[f"{a}_s"] > 0 for a in r["architectures"])
        assert ("stable_unclip_s" in r) != two
        assert r["max_abs_diff"] <= 1e-4, r  # no technique changes the images
        assert r["measured"].startswith(
            "concurrent" if "side by side" in r["technique"] else ("isolated", "concurrent")
        )
    kept = next(m for m in lab_speed.modes() if m.label.startswith("default"))
    assert kept.concurrent and kept.speed == FAST_CPU and kept.architectures is None  # what the app runs
    two = next(r for r in rows if r["technique"] == "eager, two architectures")
    assert two["all_ratio"] == 1.0  # the two-architecture rows are taken against eager on the same two
    assert all(r["note"] for r in rows if r["technique"] in lab_speed.NOTES)


def test_the_cli_prints_the_table_and_writes_the_json(rows, monkeypatch, tmp_path, capsys):
    report = {
        "preset": "lab",
        "machine": {"cpu": "x86_64", "cores": "2", "torch": "2", "date": "2026-12-01"},
        "repeats": 1,
        "modes": rows,
        "request": {"default_s": 1.0, "eager_s": 2.0, "ratio": 0.5, "default_concurrent": True},
        "start_to_first_image_s": {"cold": 14.0, "default": 12.0, "eager": None},
    }
    monkeypatch.setattr(bench, "run_lab_speed", lambda repeats: report | {"repeats": repeats})
    assert bench.main(["--preset", "lab", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["repeats"] == 5  # the lab bench's own default
    out = capsys.readouterr().out
    assert "| eager | isolated" in out and "| unCLIP s | LD s | Stable unCLIP s | one comparison s |" in out
    assert "| default, two architectures | concurrent, 1 thread each |" in out and " | - | " in out
    assert "default 12.0 s; a first start, empty trace cache: 14.0 s; eager over 300 s." in out
    report |= lab_speed.start_report(
        {"cold": None, "default": {"imports": 8.0, "loaded": 10.5, "first_image": 11.2}, "eager": None}
    )
    monkeypatch.setattr(bench, "run_lab_speed", lambda repeats: report)
    assert bench.main(["--preset", "lab", "--json", str(tmp_path / "l.json")]) == 0
    out = capsys.readouterr().out
    assert "default 11.2 s (imported at 8.0 s, models loaded and warm at 10.5 s); a first start" in out
    assert "empty trace cache: over 300 s" in out
    assert all(f"- {label}: " in out for label in lab_speed.NOTES)


def test_a_fresh_start_reaches_its_first_image_through_each_phase():
    phases = lab_speed.bench_start("default")
    assert list(phases) == list(lab_speed.PHASES)
    assert 0 < phases["imports"] < phases["loaded"] < phases["first_image"] < 300


def test_the_api_request_is_timed_through_gradio_client_on_the_app():
    timed = lab_speed.bench_api(repeats=1)
    assert 0 < timed["default_s"] < 60 and timed["first_s"] > 0
