"""The side-by-side CLI (`make run`) and the benchmark, on tiny models."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from comparisons import compare
from comparisons.bench import cli as bench
from comparisons.bench import pipelines as bench_pipelines
from comparisons.harness import Harness
from comparisons.metrics import tiny_judge
from comparisons.presets import get_preset
from comparisons.settings import Settings
from comparisons.store import load_runs
from pipelines import load_latent_diffusion, load_unclip
from pipelines.tiny import save_tiny

FAST = ["--steps", "2", "--prior-steps", "2", "--decoder-steps", "2", "--super-res-steps", "2"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"))


def test_compare_writes_both_images_and_a_stage_table(tiny_dirs, tmp_path, capsys):
    unclip_dir, ld_dir = tiny_dirs
    code = compare.main(
        [
            "a red circle above a blue square",
            "--seed",
            "3",
            "--unclip",
            str(unclip_dir),
            "--latent-diffusion",
            str(ld_dir),
            "--out",
            str(tmp_path),
            *FAST,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    runs = load_runs(tmp_path)
    assert list(runs["architecture"]) == ["unclip", "latent_diffusion"] and set(runs["seed"]) == {3}
    assert all(Path(p).is_file() and p in out for p in runs["image_path"])
    assert "CLIP score" in out
    for stage in ("text_encoder", "prior", "decoder", "super_res", "unet", "vae_decode", "total"):
        assert stage in out
    assert "unclip s" in out and "latent_diffusion MB" in out and "peak RSS" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["", "--seed", "0"], "empty prompt"),
        (["a cat", "--seed", "-1"], "[0, 2**63)"),
        (["a cat", "--unclip", "/nonexistent/dir"], "neither an existing directory nor a hub id"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(tiny_dirs, tmp_path, capsys, argv, message):
    unclip_dir, ld_dir = tiny_dirs
    defaults = ["--latent-diffusion", str(ld_dir), "--out", str(tmp_path), *FAST]
    if "--unclip" not in argv:
        defaults += ["--unclip", str(unclip_dir)]
    assert compare.main(argv + defaults) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_stage_table_orders_stages_and_puts_total_last(tiny_dirs, tmp_path):
    unclip_dir, ld_dir = tiny_dirs
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


def test_bench_compares_ours_with_diffusers(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(
        bench_pipelines.SETTINGS,
        "tiny",
        {
            "unclip": dict(
                prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2
            ),
            "latent_diffusion": dict(num_inference_steps=2, guidance_scale=7.5),
        },
    )
    assert bench.main(["--repeats", "1", "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["architecture"] for r in report["results"]] == ["unclip", "latent_diffusion"]
    for r in report["results"]:
        assert r["ours_median_s"] > 0 and r["diffusers_median_s"] > 0 and r["flops"] > 0
        assert r["max_abs_diff"] <= 1e-4  # the same images, else the timing compares different work
        assert r["ratio"] == pytest.approx(r["ours_median_s"] / r["diffusers_median_s"])
    sweep = report["sweep"]
    assert sweep["images"] == 8 * 2 * 2 and sweep["batched_images_per_s"] > 0 and sweep["naive_images_per_s"] > 0
    assert "ratio" in capsys.readouterr().out


def test_bench_dtype_is_for_full_size_only():
    with pytest.raises(SystemExit) as err:
        bench.main(["--dtype", "bfloat16"])
    assert err.value.code == 2


def test_bench_speedup_passes_cheapest_first():
    S = bench_pipelines.Speedup
    assert bench_pipelines.speedups(False, None, False) == []
    assert bench_pipelines.speedups(False, None, True) == [S(False, None, True)]
    assert bench_pipelines.speedups(True, None, True) == [
        S(False, None, True),
        S(True, None, True),
    ]  # compiled, then captured
    assert bench_pipelines.speedups(True, "reduce-overhead", True)[-1] == S(
        True, "reduce-overhead", False
    )  # it captures its own
    assert [p.label for p in bench_pipelines.speedups(True, "max-autotune-no-cudagraphs", True)] == [
        "CUDA graphs",
        "compile (max-autotune-no-cudagraphs) + CUDA graphs",
    ]


def test_bench_speedup_times_both_and_records_a_failure(monkeypatch):
    report, pipes, refs = bench_pipelines.run_bench(False, torch.device("cpu"), 1)
    name = "latent_diffusion"
    # CUDA graphs on the CPU fail: the failure is recorded, the pipeline still works eagerly.
    failed = bench_pipelines.add_speedup(
        report, pipes, refs, name, bench_pipelines.Speedup(False, None, True), repeats=1
    )
    assert "need a CUDA device" in failed["error"] and pipes[name].cuda_graph_count() == 0
    # A pass that changes nothing on the CPU (channels_last only) measures like the eager table.
    monkeypatch.setattr(type(pipes[name]), "optimize", lambda self, **kwargs: None)
    entry = bench_pipelines.add_speedup(
        report, pipes, refs, name, bench_pipelines.Speedup(True, None, False), repeats=2
    )
    assert entry["first_call_s"] > 0 and entry["max_abs_diff"] <= 1e-4 and entry["cuda_graphs_captured"] == 0
    assert entry["run_to_run_max_abs_diff"] == 0  # the CPU is deterministic
    assert entry["ratio"] == pytest.approx(entry["ours_median_s"] / entry["diffusers_median_s"])
    result = next(r for r in report["results"] if r["architecture"] == name)
    assert result["speedups"] == [failed, entry]
    assert "with compile (default): ours" in bench.format_report(
        report
    ) and "with CUDA graphs: FAILED" in bench.format_report(report)


def test_bench_cuda_graphs_need_cuda():
    with pytest.raises(SystemExit) as err:
        bench.main(["--cuda-graphs", "--device", "cpu"])
    assert err.value.code == 2


def test_bench_runs_each_pass_fewest_denoisers_first_and_saves_after_each(monkeypatch, tmp_path):
    from types import SimpleNamespace

    pipes = {
        "unclip": SimpleNamespace(denoiser_names=("prior", "decoder", "sr1", "sr2")),
        "latent_diffusion": SimpleNamespace(denoiser_names=("unet",)),
    }
    report = {"results": []}
    monkeypatch.setattr(bench, "run_bench", lambda *args: (report, pipes, {}))
    monkeypatch.setattr(
        bench,
        "bench_sweep",
        lambda *args: {
            "preset": "lab",
            "images": 1,
            "batch_size": 1,
            "naive_images_per_s": 1.0,
            "batched_images_per_s": 1.0,
            "speedup": 1.0,
        },
    )
    saved = []
    monkeypatch.setattr(bench, "write", lambda report, json_file: saved.append(json_file))
    done = []
    monkeypatch.setattr(
        bench, "add_speedup", lambda report, pipes, refs, name, speedup, repeats: done.append((name, speedup.label))
    )
    assert bench.main(["--compile", "--json", str(tmp_path / "b.json")]) == 0
    assert done == [("latent_diffusion", "compile (default)"), ("unclip", "compile (default)")]
    assert len(saved) == 1 + len(done)  # the eager table, then after every pass
