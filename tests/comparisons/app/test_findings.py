"""The Findings tab's backend reads the lab study's committed report back: a verdict per claim, as findings.json
says, each claim's section of REPORT.md and its plot; without findings, a note that says how to make them."""

import json

from comparisons.app.findings import FINDINGS_DIR, VERDICT_COLUMNS, Findings, read_findings


def test_the_committed_findings_read_back_claim_by_claim():
    found = read_findings()
    data = json.loads((FINDINGS_DIR / "findings.json").read_text())
    assert not data["meta"]["quick"], "the committed findings are the full run's"
    assert list(found.verdicts.columns) == VERDICT_COLUMNS and len(found.verdicts) == len(data["claims"]) == 6
    assert list(found.verdicts["verdict"]) == [r["verdict"] for r in data["claims"].values()]
    assert list(found.sections) == list(found.verdicts["claim"]) == list(found.plots)
    for label, section in found.sections.items():
        claim = label.split(".")[0]
        assert section.startswith(f"### {label}") and f"**Verdict: {data['claims'][claim]['verdict']}.**" in section
        assert "![claim" not in section  # the plot is shown as an image beside it
        assert found.plots[label].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "full run" in found.note and data["meta"]["date"][:10] in found.note


def test_no_findings_say_how_to_make_them(tmp_path):
    found = read_findings(tmp_path)
    assert "python -m research.study" in found.note and found.verdicts.empty and not found.sections and not found.plots


def test_the_tabs_backend_shows_a_claims_section_and_plot_read_again_at_each_request(tmp_path):
    findings = Findings()
    first = next(iter(findings.read().sections))
    section, plot = findings.claim(first)
    assert section.startswith(f"### {first}") and plot == str(read_findings().plots[first])
    assert findings.claim("no such claim") == ("", None)
    assert Findings(tmp_path).claim(first) == ("", None) and Findings(tmp_path).read().verdicts.empty
