"""Configurations of a run log: labelled from the registry, listed newest first, pairs when there are any and each
configuration alone when there are none, so a summary always has something to compare."""

import pandas as pd
import pytest

from comparisons.configurations import Configuration, choices, choose, labels, settings_label
from comparisons.settings import Settings
from comparisons.summary import summary_table

DEFAULT_LABEL = "unCLIP 25/25/7 g 4/8 vs LD 50 steps g 7.5"


def rows(arch: str, settings: Settings, seeds=range(3), prompts=("a red circle",), **columns) -> pd.DataFrame:
    """A run log's rows of one architecture and settings, as the harness writes them (the columns pairing reads)."""
    records = [
        {
            "architecture": arch,
            "prompt": prompt,
            "seed": seed,
            "model": f"/work/lab/weights/{arch}",
            "model_hash": "abc",
            "height": 32,
            "width": 32,
            "dtype": "float32",
            "device": "cpu",
            "device_name": "cpu",
            **settings.for_architecture(arch),
            "seconds_total": 1.0 + seed,
            "peak_memory_mb": 100.0,
            "clip_score": 20.0 + seed,
            **columns,
        }
        for prompt in prompts
        for seed in seeds
    ]
    return pd.DataFrame(records)


def log(*parts: pd.DataFrame) -> pd.DataFrame:
    """Parts in the order they were logged: the last is the newest."""
    return pd.concat(parts, ignore_index=True)


def sweep_point(steps: int) -> Settings:
    return Settings().with_sweep_values("unclip", steps, 8.0).with_sweep_values("latent_diffusion", steps, 7.5)


def test_labels_come_from_the_registry():
    df = log(rows("unclip", Settings()), rows("latent_diffusion", Settings()))
    (only,) = choices(df)
    assert only.label == DEFAULT_LABEL and only.paired and only.n_pairs == 3
    blurry = Settings(negative_prompt="blurry, low quality, watermark, text")
    (unpaired,) = choices(rows("latent_diffusion", blurry))
    assert unpaired.label == "LD 50 steps g 7.5 negative prompt “blurry, low quality, wa…”"
    assert settings_label(Configuration("unclip", (("prior_steps", 10), ("prior_guidance", 4.25)))) == (
        "unCLIP 10/?/? g 4.25/?"  # a column the log lacks reads "?"
    )


def test_several_configurations_are_listed_newest_first_as_pairs():
    df = log(
        rows("unclip", Settings()),  # a compare at the defaults
        rows("latent_diffusion", Settings()),
        rows("unclip", sweep_point(10)),  # a sweep at 10 steps
        rows("latent_diffusion", sweep_point(10)),
        rows("latent_diffusion", sweep_point(20)),  # then latent diffusion alone at 20
    )
    found = [c.label for c in choices(df)]
    assert found == [
        "unCLIP 10/10/7 g 4/8 vs LD 20 steps g 7.5",  # the newest rows, with the newest partner
        "unCLIP 25/25/7 g 4/8 vs LD 20 steps g 7.5",
        "unCLIP 10/10/7 g 4/8 vs LD 10 steps g 7.5",
        "unCLIP 25/25/7 g 4/8 vs LD 10 steps g 7.5",
        "unCLIP 10/10/7 g 4/8 vs LD 50 steps g 7.5",
        DEFAULT_LABEL,
    ]
    default = choose(choices(df), None)
    assert default.label == found[0] and default.n_pairs == 3
    picked = choose(choices(df), DEFAULT_LABEL)
    chosen = picked.rows(df)
    assert len(chosen) == 6 and set(chosen.index) == set(range(6))  # the compare's rows, nothing else
    table = summary_table(chosen)  # one configuration per architecture: the summary no longer refuses
    assert (table["n"] == 3).all() and table.loc["seconds_total", "mean_diff"] == pytest.approx(0.0)


def test_without_pairs_each_configuration_stands_alone_newest_first():
    unclip_only = log(rows("unclip", Settings()), rows("unclip", sweep_point(10)))
    assert [c.label for c in choices(unclip_only)] == ["unCLIP 10/10/7 g 4/8", "unCLIP 25/25/7 g 4/8"]
    assert not any(c.paired for c in choices(unclip_only))
    apart = log(rows("unclip", Settings()), rows("latent_diffusion", Settings(), prompts=("a blue square",)))
    assert [(c.label, c.n_pairs) for c in choices(apart)] == [("LD 50 steps g 7.5", 0), ("unCLIP 25/25/7 g 4/8", 0)]


def test_never_empty_while_there_are_rows():
    assert choices(pd.DataFrame()) == [] and choose([], None) is None
    for df in (rows("unclip", Settings()), rows("latent_diffusion", Settings(), seeds=[0])):
        options = choices(df)
        assert options and choose(options, "no such configuration") is options[0]
        assert len(options[0].rows(df)) == len(df)


def test_configurations_alike_in_settings_are_told_apart_by_what_differs():
    df = log(
        rows("latent_diffusion", Settings()),
        rows("latent_diffusion", Settings(), device="cuda", device_name="NVIDIA H200"),
        rows("latent_diffusion", Settings(), model="stabilityai/stable-diffusion-2-1-base", model_hash="def"),
    )
    assert [c.label for c in choices(df)] == [  # the model says its hash, the device its name
        "LD 50 steps g 7.5 · stabilityai/stable-diffusion-2-1-base · device cpu",
        "LD 50 steps g 7.5 · latent_diffusion · device cuda",  # a directory: its name
        "LD 50 steps g 7.5 · latent_diffusion · device cpu",
    ]
    same = Configuration("latent_diffusion", (("steps", 50), ("guidance", 7.5), ("negative_prompt", "x" * 30)))
    other = Configuration("latent_diffusion", (("steps", 50), ("guidance", 7.5), ("negative_prompt", "x" * 31)))
    assert len(set(labels([same, other]).values())) == 2  # cut alike, still two labels


def test_rows_measured_in_other_memory_kinds_are_never_paired():
    """A log from before stage memory (peak RSS, the whole process) and after (tensors + weights) holds the same
    settings: pairing across would mix a 1,400 MB process with a 15 MB stage."""
    df = log(
        rows("unclip", Settings(), memory_kind="peak RSS", peak_memory_mb=1400.0),
        rows("latent_diffusion", Settings(), memory_kind="peak RSS", peak_memory_mb=1400.0),
        rows("unclip", Settings(), memory_kind="tensors + weights", peak_memory_mb=14.0),
        rows("latent_diffusion", Settings(), memory_kind="tensors + weights", peak_memory_mb=17.0),
    )
    options = choices(df)
    assert len(options) == 2 and all(o.paired and o.n_pairs == 3 for o in options)
    chosen = choose(options, None).rows(df)  # the newest: tensors + weights
    assert set(chosen["memory_kind"]) == {"tensors + weights"} and len(chosen) == 6
    assert (
        options[0].label
        == "unCLIP 25/25/7 g 4/8 · memory tensors + weights vs LD 50 steps g 7.5 · memory tensors + weights"
    )
    memory = summary_table(chosen).loc["peak_memory_mb"]
    assert memory["n"] == 3 and {memory["mean_unclip"], memory["mean_latent_diffusion"]} == {14.0, 17.0}


def test_rows_timed_alone_and_side_by_side_are_never_paired():
    """Seconds measured one architecture at a time and both at once (Harness.make_each) are not alike; a log from
    before the timing column holds neither and pairs with neither."""
    df = log(
        rows("unclip", Settings(), seconds_total=0.7),
        rows("latent_diffusion", Settings(), seconds_total=1.4),
        rows("unclip", Settings(), timing="isolated", seconds_total=0.7),
        rows("latent_diffusion", Settings(), timing="isolated", seconds_total=1.4),
        rows("unclip", Settings(), timing="concurrent", seconds_total=0.9),
        rows("latent_diffusion", Settings(), timing="concurrent", seconds_total=1.0),
    )
    options = choices(df)
    assert len(options) == 3 and all(o.paired and o.n_pairs == 3 for o in options)
    chosen = choose(options, None).rows(df)  # the newest: side by side
    assert set(chosen["timing"]) == {"concurrent"} and len(chosen) == 6
    assert options[0].label == "unCLIP 25/25/7 g 4/8 · timing concurrent vs LD 50 steps g 7.5 · timing concurrent"
