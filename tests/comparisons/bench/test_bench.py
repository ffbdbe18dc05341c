"""The benchmark of our pipelines against diffusers' (python -m comparisons.bench), on tiny models."""

import json

import pytest
import torch

from comparisons.bench import cli as bench
from comparisons.bench import pipelines as bench_pipelines


def test_bench_compares_ours_with_diffusers(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(
        bench_pipelines.SETTINGS,
        "tiny",
        {
            "unclip": dict(
                prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2
            ),
            "latent_diffusion": dict(num_inference_steps=2, guidance_scale=7.5),
            "stable_unclip": dict(prior_num_inference_steps=2, num_inference_steps=2),
        },
    )
    assert bench.main(["--repeats", "1", "--json", str(tmp_path / "b.json")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert [r["architecture"] for r in report["results"]] == ["unclip", "latent_diffusion", "stable_unclip"]
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
