"""Evaluation of the Shapes lab: the Wilson interval and retrieval top-1 against known values, and a tiny
end-to-end run over weights trained for 2 steps (figures meaningless; structure and ranges asserted)."""

import json
import math
from pathlib import Path

import pytest
import torch

from comparisons.intervals import wilson_interval
from comparisons.settings import Settings
from lab.runs import RunOptions
from lab.train import run
from lab.world import SHAPES, caption_is_true_of, split_of
from research.evaluate import (
    BARS,
    NOTHING,
    SINGLE_COLUMNS,
    TWO_COLUMNS,
    EvalConfig,
    accuracy_table,
    main,
    retrieval_scenes,
    retrieval_top1,
    shapes_drawn,
)

from helpers import TINY


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: conftest imports torch before lab.train can set OMP_WAIT_POLICY=PASSIVE, and
    spinning OpenMP threads made this module ~10x slower on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, one_thread):
    """Every part trained for 2 steps and packaged, once for this module."""
    root = tmp_path_factory.mktemp("lab")
    opts = RunOptions(out=root / "weights", checkpoints=root / "checkpoints", progress=False)
    run("all", TINY, opts)
    return opts.out


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "k, n, expected",
    [(9, 10, (0.5958, 0.9821)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)), (50, 100, (0.4038, 0.5962))],
)
def test_wilson_interval_matches_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(expected[0], abs=1e-4) and high == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_holds_its_proportion_at_the_ends():
    """At k = 0 rounding left the lower bound at 3e-18, above the proportion (a tiny model's retrieval)."""
    for n in range(1, 201):
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0


def test_wilson_interval_rejects_impossible_counts():
    for k, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError, match="k <= n"):
            wilson_interval(k, n)


def test_retrieval_scenes_are_held_out_and_each_caption_fits_its_own_scene_only():
    scenes = retrieval_scenes(100, seed=0)
    assert all(split_of(scene.spec()) != "train" for scene in scenes)
    for i, scene in enumerate(scenes):
        assert [j for j, other in enumerate(scenes) if caption_is_true_of(scene.spec(), other)] == [i]


def test_retrieval_top1_on_identity_and_permuted_embeddings():
    eye = torch.eye(8)
    assert retrieval_top1(eye, eye) == 1.0
    assert retrieval_top1(eye, eye[torch.roll(torch.arange(8), 1)]) == 0.0
    half = eye.clone()
    half[[0, 1]] = half[[1, 0]]  # images 0 and 1 swapped: texts 0 and 1 retrieve the wrong one
    assert retrieval_top1(eye, half) == 0.75
    assert retrieval_top1(3 * eye, eye) == 1.0  # cosine, not dot product: the scale does not matter
    with pytest.raises(ValueError, match="same shape"):
        retrieval_top1(eye, eye[:4])


def test_accuracy_table_leaves_out_captions_that_do_not_ask():
    rows = [{"size": 1.0, "shape": 1.0}, {"size": float("nan"), "shape": 0.0}, {"size": 0.0, "shape": 1.0}]
    table = accuracy_table(rows, {"size": "size", "shape": "shape"})
    assert (table["size"].k, table["size"].n, table["shape"].k, table["shape"].n) == (1, 2, 2, 3)
    assert accuracy_table(rows[1:2], {"size": "size"})["size"] is None


def test_shapes_drawn_counts_what_each_asked_shape_came_out_as():
    rows = [
        {"prompt": "a red circle", "check_object1_shape_read": "circle"},
        {"prompt": "a large cyan circle at the top", "check_object1_shape_read": "square"},
        {"prompt": "a blue circle", "check_object1_shape_read": None},  # nothing drawn
        {"prompt": "a red cross", "check_object1_shape_read": "cross"},
        {"prompt": "a red circle above a blue square", "check_object1_shape_read": "circle"},
    ]  # two: left out
    assert shapes_drawn(rows) == {"circle": {"circle": 1, "square": 1, NOTHING: 1}, "cross": {"cross": 1}}


def test_config_rejects_bad_arguments(tmp_path):
    for name in ("unclip", "latent_diffusion", "judge"):
        (tmp_path / name).mkdir()
    for kwargs in ({"n_single": 0}, {"n_two": 201}, {"batch_size": 0}, {"seed": -1}):
        with pytest.raises(ValueError, match="must be"):
            EvalConfig(weights=tmp_path, **kwargs)


# ----------------------------------------------------------------------------- end to end

ARCHS = ("unclip", "latent_diffusion", "stable_unclip")  # the package's, in the registry's order
FAST = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)


def test_tiny_run_reports_every_measure_with_valid_json(weights, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = [
        "--weights",
        str(weights),
        "--n-single",
        "4",
        "--n-two",
        "4",
        "--batch-size",
        "3",
        "--device",
        "cpu",
        "--json",
        str(out),
    ]
    main(argv, FAST)
    record = json.loads(out.read_text())
    names = [m["name"] for m in record["measures"]]
    expected = (
        [f"single/{m}" for m in SINGLE_COLUMNS]
        + [f"seen/{m}" for m in SINGLE_COLUMNS]
        + [f"two/{m}" for m in TWO_COLUMNS]
        + ["retrieval/judge", "retrieval/generator"]
    )
    assert names == expected
    for m in record["measures"]:
        if m["name"].startswith("retrieval"):
            assert m["n"] == 100
        assert set(m["values"]) == ({"shared"} if m["name"].startswith("retrieval") else set(ARCHS))
        for value in m["values"].values():
            if value is not None:
                assert value["n"] == m["n"] and 0 <= value["k"] <= value["n"]
                assert 0 <= value["low"] <= value["value"] <= value["high"] <= 1
        assert (m["bar"] is None) == (m["name"] not in BARS) and (m["passed"] is None) == (m["bar"] is None)
    by_name = {m["name"]: m for m in record["measures"]}
    assert by_name["single/colour"]["n"] == by_name["seen/colour"]["n"] == by_name["two/count"]["n"] == 4
    assert set(record) == {"date", "device", "settings", "weights_sha256", "measures", "shapes_drawn"}
    for arch in ARCHS:  # 4 images each, every one counted once under the shape it asked
        for group in ("single", "seen"):
            table = record["shapes_drawn"][arch][group]
            assert set(table) <= set(SHAPES) and sum(sum(row.values()) for row in table.values()) == 4
            assert all(set(row) <= {*SHAPES, NOTHING} for row in table.values())
    assert record["settings"]["n_single"] == 4 and record["device"] == "cpu"
    assert all(len(h) == 64 for h in record["weights_sha256"].values())
    out = capsys.readouterr().out
    table, drawn = out.split("\n\n")
    table = table.splitlines()
    assert len(table) == 1 + len(expected) and all(any(line.startswith(n) for line in table) for n in expected)
    assert drawn.startswith("shapes drawn") and "unclip, seen" in drawn and "latent_diffusion, single" in drawn
    assert "stable_unclip, single" in drawn and "stable_unclip" in table[0]
    assert not math.isnan(by_name["retrieval/judge"]["values"]["shared"]["value"])


def test_missing_weights_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--weights", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make train" in err


def test_the_evaluation_covers_every_registered_architecture_the_package_holds(weights, tmp_path):
    """A dummy architecture registered in the tests alone, with a folder in a copy of the package, is evaluated too."""
    import shutil

    from pipelines import registry

    from helpers import PAINTER

    package = Path(shutil.copytree(weights, tmp_path / "weights"))
    (package / "painter").mkdir()
    (package / "painter" / "model_index.json").write_text("{}")
    registry.register(PAINTER)
    try:
        evaluation = main(
            ["--weights", str(package), "--n-single", "2", "--n-two", "2", "--device", "cpu"],
            FAST.replace(coats=1),
        )
    finally:
        registry.unregister("painter")
    single = next(m for m in evaluation.measures if m.name == "single/colour")
    assert set(single.values) == {*ARCHS, "painter"} and single.values["painter"].n == 2
    assert set(evaluation.shapes_drawn) == {*ARCHS, "painter"}
