"""The Findings tab's backend: the lab study's report (research/findings, by `python -m research.study`) read back as
a verdict table, one section per claim and its plot. Files only: the app never runs the study."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

FINDINGS_DIR = Path(__file__).resolve().parents[2] / "research" / "findings"
VERDICT_COLUMNS = ["claim", "verdict", "why", "paper"]  # the verdict first: the table is wider than the page


@dataclass(frozen=True)
class StudyReport:
    """What the report says, ready to show."""

    note: str  # when and how the study ran, or why there is nothing to show
    verdicts: pd.DataFrame  # VERDICT_COLUMNS, one row per claim
    sections: dict[str, str]  # claim label -> its section of REPORT.md, without the plot line
    plots: dict[str, Path]  # claim label -> its PNG


def _label(claim: str, title: str) -> str:
    return f"{claim}. {title}"


def read_findings(directory: Path = FINDINGS_DIR) -> StudyReport:
    """The study's findings under `directory`, or an empty StudyReport whose note says how to make them."""
    path, report = Path(directory) / "findings.json", Path(directory) / "REPORT.md"
    if not path.is_file() or not report.is_file():
        note = f"No findings under {directory}: run `python -m research.study` (15 min on 2 CPU cores) to write them."
        return StudyReport(note, pd.DataFrame(columns=VERDICT_COLUMNS), {}, {})
    data = json.loads(path.read_text())
    meta, texts = data["meta"], data["texts"]
    labels = {c: _label(c, texts[c]["title"]) for c in data["claims"]}
    verdicts = pd.DataFrame(
        [[labels[c], r["verdict"], r["because"], texts[c]["source"]] for c, r in data["claims"].items()],
        columns=VERDICT_COLUMNS,
    )
    chunks = re.split(r"\n(?=## \d+\. )", report.read_text())[1:]  # the sections after the verdict table
    sections = {}
    for chunk in chunks:
        claim = chunk[3:].split(".", 1)[0]
        body = re.sub(r"\n!\[claim \d+\]\([^)]*\)\n", "\n", chunk)  # the plot is shown beside, as an image
        sections[labels.get(claim, claim)] = body.replace("## ", "### ", 1)
    plots = {
        labels[c]: Path(directory) / r["plot"]
        for c, r in data["claims"].items()
        if (Path(directory) / r["plot"]).is_file()
    }
    kind = "quick run (a few prompts: the report's shape, not its verdicts)" if meta["quick"] else "full run"
    note = (
        f"The Shapes lab study ({kind}) of {meta['date'][:10]} on {meta['device']}, {meta['wall_minutes']:.0f} min: "
        "each claim of the DALL·E 2 and LDM papers tested against the lab's ground truth, with n, 95% intervals "
        "and a verdict. Full report: research/findings/REPORT.md; rerun with `python -m research.study`."
    )
    return StudyReport(note, verdicts, sections, plots)


class Findings:
    """The tab's backend: the report under `directory`, read again at each request (a rerun of the study shows at
    once). It needs nothing from the session: the app never runs the study."""

    def __init__(self, directory: Path = FINDINGS_DIR) -> None:
        self.directory = Path(directory)

    def read(self) -> StudyReport:
        return read_findings(self.directory)

    def claim(self, label: str) -> tuple[str, str | None]:
        """A claim's section of the report and its plot's path ("" and None for a claim the report lacks)."""
        report = self.read()
        path = report.plots.get(label)
        return report.sections.get(label, ""), str(path) if path else None
