"""The served app keeps its memory, open files and threads over many requests (the short soak; the long one
is `python -m comparisons.bench --soak 100`)."""

import json

from comparisons.bench import cli as bench


def test_a_short_soak_leaks_nothing(tmp_path, capsys):
    out = tmp_path / "soak.json"
    assert bench.main(["--soak", "12", "--soak-fast", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    before, after = report["before"], report["after"]
    assert report["requests"] == 12 and report["median_request_s"] > 0
    assert after["rss_mb"] - before["rss_mb"] < 25, report  # measured: +0 MB over 30 requests
    assert after["open_files"] <= before["open_files"] and after["threads"] <= before["threads"], report
    assert "server RSS" in capsys.readouterr().out
