"""The Results tab: the run log filtered, the paired summary, plots and exports."""

from __future__ import annotations

import gradio as gr

from comparisons.app.session import Session
from comparisons.app.ui.common import user_errors
from comparisons.app.views import memory_bars, score_vs_seconds, stage_seconds_long, summary_frame, table_view


def build(session: Session, demo: gr.Blocks, tab: gr.Tab) -> None:
    @user_errors
    def results(architecture, prompt_contains):
        df = session.runs(architecture, prompt_contains)
        summary, note = summary_frame(df)
        exports = [session.export(df, fmt) if not df.empty else None for fmt in ("csv", "parquet")]
        return (table_view(df), summary, note, stage_seconds_long(df), score_vs_seconds(df), memory_bars(df), *exports)

    with gr.Row():
        arch_filter = gr.Dropdown(["all", *session.architectures], value="all", label="Architecture")
        prompt_filter = gr.Textbox(label="Prompt contains (Enter to filter)", elem_id="prompt-filter")
        refresh = gr.Button("Refresh")
    table = gr.Dataframe(label="Run log (one row per image; downloads carry every column)", elem_id="runs")
    summary_note = gr.Markdown()
    summary = gr.Dataframe(label="Side by side, paired by prompt and seed")
    with gr.Row():
        stage_plot = gr.BarPlot(x="architecture", y="seconds", color="stage", title="Seconds per stage (mean)")
        scatter = gr.ScatterPlot(
            x="seconds_total", y="clip_score", color="architecture", title="CLIP similarity against seconds"
        )
        memory = gr.BarPlot(x="architecture", y="peak_memory_mb", title="Peak memory (MB, mean)", y_lim=[0, None])
    with gr.Row():
        csv = gr.DownloadButton("Download CSV", elem_id="download-csv")
        parquet = gr.DownloadButton("Download Parquet", elem_id="download-parquet")
    outputs = [table, summary, summary_note, stage_plot, scatter, memory, csv, parquet]
    for trigger in (refresh.click, arch_filter.change, prompt_filter.submit, tab.select):
        trigger(results, [arch_filter, prompt_filter], outputs, api_name=False)
    demo.load(results, [arch_filter, prompt_filter], outputs, api_name="results")
