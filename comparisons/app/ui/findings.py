"""The Findings tab: the lab study's verdict table, and each claim's figures, verdict, limits and plot
(comparisons.app.findings)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.findings import Findings
from comparisons.app.ui.common import FIT, choice_field, user_errors


def build(findings: Findings) -> None:
    found = findings.read()
    first = next(iter(found.sections), None)
    gr.Markdown(found.note, elem_id="findings-note")
    gr.Dataframe(
        found.verdicts, label="Verdicts", wrap=True, elem_id="findings-verdicts", interactive=False, elem_classes=FIT
    )
    claim = choice_field(
        gr.Dropdown(list(found.sections), value=first, label="Claim", elem_id="findings-claim"), "Claim"
    )
    with gr.Row():
        section = gr.Markdown(found.sections.get(first, ""), elem_id="findings-section")
        plot = gr.Image(
            str(found.plots[first]) if first in found.plots else None,
            label="Plot",
            interactive=False,
            format="png",
            elem_id="findings-plot",
        )

    claim.change(user_errors(findings.claim), claim, [section, plot], api_name="findings", show_progress_on=[plot])
