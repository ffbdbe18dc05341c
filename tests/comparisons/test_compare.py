"""The side-by-side CLI (`make compare`) and the presets, on tiny models: every architecture, or those left in."""

from pathlib import Path

import pandas as pd
import pytest

from comparisons import compare
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.presets import get_preset
from comparisons.settings import Settings
from comparisons.store import load_runs
from pipelines import load_latent_diffusion, load_unclip
from pipelines.tiny import save_tiny

FAST = [
    "--steps",
    "2",
    "--prior-steps",
    "2",
    "--decoder-steps",
    "2",
    "--super-res-steps",
    "2",
    "--stable-unclip-prior-steps",
    "2",
    "--stable-unclip-steps",
    "2",
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"))


def test_compare_writes_every_image_and_a_stage_table(tiny_dirs, tmp_path, capsys):
    unclip_dir, ld_dir, stable_dir = tiny_dirs
    code = compare.main(
        [
            "a red circle above a blue square",
            "--seed",
            "3",
            "--preset",
            "tiny",
            "--unclip",
            str(unclip_dir),
            "--latent-diffusion",
            str(ld_dir),
            "--stable-unclip",
            str(stable_dir),
            "--out",
            str(tmp_path),
            *FAST,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    runs = load_runs(tmp_path)
    assert list(runs["architecture"]) == ["unclip", "latent_diffusion", "stable_unclip"] and set(runs["seed"]) == {3}
    assert all(Path(p).is_file() and p in out for p in runs["image_path"])
    assert "CLIP score" in out
    for stage in ("text_encoder", "prior", "decoder", "super_res", "unet", "vae_decode", "total"):
        assert stage in out
    assert "unclip s" in out and "latent_diffusion MB" in out and "stable_unclip s" in out and "peak RSS" in out


def test_compare_leaves_out_what_it_is_told_to(tiny_dirs, tmp_path, capsys):
    unclip_dir, ld_dir, _ = tiny_dirs
    argv = ["a red circle", "--preset", "tiny", "--unclip", str(unclip_dir), "--latent-diffusion", str(ld_dir)]
    assert compare.main([*argv, "--stable-unclip", "none", "--out", str(tmp_path), *FAST]) == 0
    assert list(load_runs(tmp_path)["architecture"]) == ["unclip", "latent_diffusion"]
    assert "stable_unclip" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["", "--seed", "0"], "empty prompt"),
        (["a cat", "--seed", "-1"], "[0, 2**63)"),
        (["a cat", "--unclip", "/nonexistent/dir"], "neither an existing directory nor a hub id"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(tiny_dirs, tmp_path, capsys, argv, message):
    unclip_dir, ld_dir, stable_dir = tiny_dirs
    defaults = ["--latent-diffusion", str(ld_dir), "--stable-unclip", str(stable_dir), "--out", str(tmp_path), *FAST]
    if "--unclip" not in argv:
        defaults += ["--unclip", str(unclip_dir)]
    assert compare.main(argv + defaults) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_stage_table_orders_stages_and_puts_total_last(tiny_dirs, tmp_path):
    unclip_dir, ld_dir, _ = tiny_dirs
    harness = Harness(
        {"unclip": load_unclip(unclip_dir), "latent_diffusion": load_latent_diffusion(ld_dir)}, tiny_judge(), tmp_path
    )
    results = compare.generate(
        harness, "a red circle", 0, Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2)
    )
    table = compare.stage_table({arch: out for arch, (out, _) in results.items()})
    assert list(table.index) == ["text_encoder", "prior", "decoder", "super_res", "unet", "vae_decode", "total"]
    assert table.loc["total", "unclip s"] >= table.loc["decoder", "unclip s"] > 0
    assert pd.isna(table.loc["prior", "latent_diffusion s"])  # latent diffusion has no prior


def test_tiny_preset_is_written_once_in_hub_layout():
    preset = get_preset("tiny")
    for directory in preset.models.values():
        assert (Path(directory) / "model_index.json").is_file()
    index = Path(preset.models["unclip"]) / "model_index.json"
    written = index.stat().st_mtime_ns
    assert get_preset("tiny") == preset and index.stat().st_mtime_ns == written  # not written again
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
