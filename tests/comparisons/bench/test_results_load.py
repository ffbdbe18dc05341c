"""The Results benchmark's run logs: synthetic rows whose images exist (copies of real lab rows), read back whole;
and the format of its report."""

from pathlib import Path

from comparisons.bench.results_load import backend_phases, build_log, format_results_load, seed_rows
from comparisons.store import load_runs


def test_a_synthetic_log_holds_its_rows_each_with_its_own_image(tmp_path):
    rows = seed_rows(tmp_path / "seed")
    assert {r["architecture"] for r in rows} == {"unclip", "latent_diffusion", "stable_unclip"}
    log = tmp_path / "log"
    log.mkdir()
    build_log(log, 50, rows)
    df = load_runs(log)
    assert len(df) == 50 and df["image_path"].is_unique and df["prompt"].nunique() > len(rows) // 3
    assert all(Path(p).is_file() and Path(p).is_relative_to(log) for p in df["image_path"])
    phases = backend_phases(log)
    assert phases["rows"] == 50 and all(phases[k] > 0 for k in ("read_log_cold_s", "configurations_s"))
    report = {
        "date": "2026-12-07",
        "machine": {"cores": 2},
        "sizes": {"50": {"backend": phases} | {k: {"median_s": 0.1} for k in ("page", "results", "summary")}},
    }
    assert "| 50 | 0.100 | 0.100 | 0.100 |" in format_results_load(report)
