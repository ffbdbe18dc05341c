"""The Results tab: the run log filtered, a configuration chosen for its summary and plots, a gallery whose images
open their row and go back to Compare, and exports."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from comparisons.app.gallery import compare_values, find_row, gallery_items, row_details
from comparisons.app.session import Session
from comparisons.app.ui.common import CompareInputs, user_errors
from comparisons.app.views import chosen_summary, memory_bars, score_vs_seconds, stage_seconds_long, table_view
from comparisons.configurations import Choice, choices, choose


def build(session: Session, demo: gr.Blocks, tab: gr.Tab, inputs: CompareInputs, tabs: gr.Tabs) -> None:
    def summary_outputs(df: pd.DataFrame, choice: Choice | None) -> tuple:
        """The chosen configuration's summary (hidden when there is none to show: the note says why) and plots."""
        table, note = chosen_summary(df, choice)
        rows = df if choice is None else choice.rows(df)
        summary = gr.Dataframe(table, visible=table is not None)
        return summary, note, stage_seconds_long(rows), score_vs_seconds(rows), memory_bars(rows)

    @user_errors
    def results(architecture, prompt_contains, picked=None):
        """Everything, for the configuration the user picked if the filtered log still has it, else the newest."""
        df = session.runs(architecture, prompt_contains)
        options = choices(df)
        choice = choose(options, picked)
        chooser = gr.Dropdown([c.label for c in options], value=choice.label if choice else None)
        items, paths = gallery_items(df)
        exports = [session.export(df, fmt) if not df.empty else None for fmt in ("csv", "parquet")]
        return (table_view(df), chooser, *summary_outputs(df, choice), items, paths, *exports)

    @user_errors
    def summary(architecture, prompt_contains, configuration):
        df = session.runs(architecture, prompt_contains)
        return (*summary_outputs(df, choose(choices(df), configuration)), configuration)

    def pick(paths: list[str], evt: gr.SelectData) -> str:
        return paths[evt.index] if paths and 0 <= evt.index < len(paths) else ""

    @user_errors
    def show_row(image_path):
        if not image_path:  # nothing selected yet
            return "", gr.Button(interactive=False)
        return row_details(find_row(session.runs(), image_path)), gr.Button(interactive=True)

    @user_errors
    def send_to_compare(image_path, prompt, *values):
        seed, settings = inputs.read(values)
        prompt, seed, settings = compare_values(find_row(session.runs(), image_path), settings)
        return (*inputs.values(prompt, seed, settings), gr.Tabs(selected="compare"))

    with gr.Row():
        arch_filter = gr.Dropdown(["all", *session.architectures], value="all", label="Architecture")
        prompt_filter = gr.Textbox(label="Prompt contains (Enter to filter)", elem_id="prompt-filter")
        refresh = gr.Button("Refresh")
    table = gr.Dataframe(label="Run log (one row per image; downloads carry every column)", elem_id="runs")
    configuration = gr.Dropdown(  # any label: an API caller's is looked up (the newest when it is unknown)
        [],
        label="Configuration (newest first): the summary and plots below are for it",
        allow_custom_value=True,
        elem_id="configuration",
    )
    summary_note = gr.Markdown(elem_id="summary-note")
    summary_table = gr.Dataframe(label="Side by side, paired by prompt and seed", elem_id="summary")
    with gr.Row():
        stage_plot = gr.BarPlot(x="architecture", y="seconds", color="stage", title="Seconds per stage (mean)")
        scatter = gr.ScatterPlot(
            x="seconds_total", y="clip_score", color="architecture", title="CLIP similarity against seconds"
        )
        memory = gr.BarPlot(x="architecture", y="peak_memory_mb", title="Peak memory (MB, mean)", y_lim=[0, None])
    gallery = gr.Gallery(
        label="Images, newest first: click one for its row",
        columns=8,
        height=360,
        elem_id="gallery",
        elem_classes="pixels",
    )
    shown_paths = gr.State([])  # the gallery's items' image paths, in its order
    with gr.Row(equal_height=True):
        selected = gr.Textbox(label="Selected image", interactive=False, elem_id="selected-image", scale=3)
        send = gr.Button("Send to Compare", interactive=False, elem_id="send-to-compare", scale=1)
    details = gr.Markdown(elem_id="row-details")
    with gr.Row():
        csv = gr.DownloadButton("Download CSV", elem_id="download-csv")
        parquet = gr.DownloadButton("Download Parquet", elem_id="download-parquet")
    picked = gr.State(None)  # the configuration the user chose (not the newest the page chose for them)
    filters = [arch_filter, prompt_filter]
    plots = [summary_table, summary_note, stage_plot, scatter, memory]
    outputs = [table, configuration, *plots, gallery, shown_paths, csv, parquet]
    for trigger in (refresh.click, arch_filter.change, prompt_filter.submit, tab.select):
        trigger(results, [*filters, picked], outputs, api_name=False)
    demo.load(results, [*filters, picked], outputs, api_name="results")
    configuration.input(summary, [*filters, configuration], [*plots, picked], api_name="summary")
    gallery.select(pick, shown_paths, selected, queue=False, show_progress="hidden", api_name=False)
    selected.change(show_row, selected, [details, send], api_name="gallery_row")
    send.click(send_to_compare, [selected, *inputs.components], [*inputs.components, tabs], api_name="send_to_compare")
