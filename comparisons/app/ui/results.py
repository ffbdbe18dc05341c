"""The Results tab: the run log filtered, a configuration chosen for its summary and plots, a gallery whose images
open their row and go back to Compare, and exports (comparisons.app.results)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from comparisons.app.results import TABLE_ROWS, Results, compare_values, png_details, row_details
from comparisons.app.ui.common import FIT, CompareInputs, choice_field, user_errors, visitor_of
from comparisons.app.views import (
    plot_order,
    table_view,
)
from comparisons.configurations import Choice, choose


def build(results: Results, tab: gr.Tab, inputs: CompareInputs, tabs: gr.Tabs) -> None:
    def summary_outputs(df: pd.DataFrame, choice: Choice | None) -> tuple:
        """The chosen configuration's summary (hidden when there is none to show: the note says why) and plots."""
        table, note, stages, scatter, memory = results.summary(df, choice)
        return gr.Dataframe(table, visible=table is not None), note, stages, scatter, memory

    def own(request: gr.Request | None) -> str:
        return visitor_of(results.session, request)

    @user_errors
    def results_view(architecture, prompt_contains, picked=None, request: gr.Request = None):
        """Everything, for the configuration the user picked if the filtered log still has it, else the newest.
        Computed when the tab is opened or refreshed, never on a page load; the exports when asked for."""
        df = results.runs(architecture, prompt_contains, own(request))
        options = results.configurations(df, (architecture, prompt_contains))
        choice = choose(options, picked)
        chooser = gr.Dropdown([c.label for c in options], value=choice.label if choice else None)
        items, paths = results.gallery(df)
        table = table_view(df.tail(TABLE_ROWS))
        if "image_path" in table.columns:  # named inside the results folder, never by the server's path
            table = table.assign(image_path=results.image_names(table["image_path"]))
        return (table, chooser, *summary_outputs(df, choice), items, paths)

    @user_errors
    def summary(architecture, prompt_contains, configuration, request: gr.Request = None):
        df = results.runs(architecture, prompt_contains, own(request))
        options = results.configurations(df, (architecture, prompt_contains))
        return (*summary_outputs(df, choose(options, configuration)), configuration)

    def exporter(fmt: str):
        @user_errors
        def export(architecture, prompt_contains, request: gr.Request = None):
            """The filtered table as a file, written now (named by its content: the same table, the same file)."""
            return str(results.export(results.runs(architecture, prompt_contains, own(request)), fmt))

        return export

    def pick(paths: list[str], evt: gr.SelectData) -> str:
        return results.image_name(paths[evt.index]) if paths and 0 <= evt.index < len(paths) else ""

    @user_errors
    def show_row(image, request: gr.Request = None):
        if not image:  # nothing selected yet
            return "", gr.Button(interactive=False)
        return row_details(results.row(image, own(request))), gr.Button(interactive=True)

    @user_errors
    def read_png(path, request: gr.Request = None):
        if not path:
            return "", gr.Button(interactive=False), None
        row, in_log = results.png(path, own(request))
        return png_details(row, in_log), gr.Button(interactive=True), row

    @user_errors
    def send_png(row, prompt, *values):
        if row is None:
            raise ValueError("PNG info: drop a PNG first")
        seed, settings = inputs.read(values)
        return (*inputs.values(*compare_values(row, settings)), gr.Tabs(selected="compare"))

    @user_errors
    def send_to_compare(request: gr.Request, image, prompt, *values):
        seed, settings = inputs.read(values)
        prompt, seed, settings = compare_values(results.row(image, own(request)), settings)
        return (*inputs.values(prompt, seed, settings), gr.Tabs(selected="compare"))

    with gr.Row():
        arch_filter = choice_field(
            gr.Dropdown(["all", *results.session.architectures], value="all", label="Architecture"), "Architecture"
        )
        prompt_filter = gr.Textbox(label="Prompt contains (Enter to filter)", elem_id="prompt-filter")
        refresh = gr.Button("Refresh")
    table = gr.Dataframe(
        label=f"Run log: one row per image, newest first, at most {TABLE_ROWS:,} (exports carry every row)",
        elem_id="runs",
    )
    configuration = gr.Dropdown(  # any label: an API caller's is looked up (the newest when it is unknown)
        [],
        label="Configuration (newest first): the summary and plots below are for it",
        allow_custom_value=True,
        elem_id="configuration",
    )
    summary_note = gr.Markdown(elem_id="summary-note")
    summary_table = gr.Dataframe(
        label="Side by side, paired by prompt and seed", elem_id="summary", wrap=True, elem_classes=FIT
    )
    with gr.Row():
        order = plot_order()
        stage_plot = gr.BarPlot(
            x="architecture",
            y="seconds",
            color="stage",
            title="Seconds per image, by stage (mean)",
            y_title="seconds (lower is faster)",
            sort=order,
        )
        scatter = gr.ScatterPlot(
            x="seconds_total",
            y="clip_score",
            color="architecture",
            title="CLIP score against seconds, one point per image",
            x_title="seconds per image",
            y_title="CLIP score, 0–100 (higher is better)",
        )
        memory = gr.BarPlot(
            x="architecture",
            y="peak_memory_mb",
            color="memory_kind",
            title="Peak memory of the busiest stage (mean)",
            y_title="MB (lower is better)",
            color_title="measured as",
            y_lim=[0, None],
            sort=order,
        )
    gallery = gr.Gallery(
        label="Images, newest first: click one for its row",
        columns=8,
        height=360,
        elem_id="gallery",
        elem_classes="pixels",
    )
    shown_paths = gr.State([])  # the gallery's items' image paths, in its order
    with gr.Row(equal_height=True):
        selected = gr.Textbox(
            label="Selected image (in the results folder)", interactive=False, elem_id="selected-image", scale=3
        )
        send = gr.Button("Send to Compare", interactive=False, elem_id="send-to-compare", scale=1)
    details = gr.Markdown(elem_id="row-details")
    with gr.Row():
        with gr.Column(scale=1, min_width=200):
            to_csv = gr.Button("Export CSV", elem_id="export-csv")
            to_parquet = gr.Button("Export Parquet", elem_id="export-parquet")
        exported = gr.File(
            label="Export: the filtered table, every row and column", elem_id="export-file", height=110, scale=3
        )
    with gr.Accordion("PNG info: read the settings of a PNG this app wrote", open=False):
        with gr.Row():
            png = gr.File(label="Drop one of the app's PNGs", file_types=[".png"], elem_id="png-info-file", scale=1)
            with gr.Column(scale=2):
                png_info = gr.Markdown(elem_id="png-info")
                png_send = gr.Button("Send its settings to Compare", interactive=False, elem_id="png-to-compare")
    png_row_state = gr.State(None)  # the row the PNG describes (the log's own when it has it)
    picked = gr.State(None)  # the configuration the user chose (not the newest the page chose for them)
    filters = [arch_filter, prompt_filter]
    plots = [summary_table, summary_note, stage_plot, scatter, memory]
    outputs = [table, configuration, *plots, gallery, shown_paths]
    # Nothing on a page load: the tab computes when opened or refreshed (every visitor's page load paid it before).
    refresh.click(results_view, [*filters, picked], outputs, api_name="results", show_progress_on=[table])
    for trigger in (arch_filter.change, prompt_filter.submit, tab.select):
        trigger(results_view, [*filters, picked], outputs, api_name=False, show_progress_on=[table])
    to_csv.click(exporter("csv"), filters, exported, api_name="export_csv", show_progress_on=[exported])
    to_parquet.click(exporter("parquet"), filters, exported, api_name="export_parquet", show_progress_on=[exported])
    configuration.input(
        summary, [*filters, configuration], [*plots, picked], api_name="summary", show_progress_on=[summary_table]
    )
    gallery.select(pick, shown_paths, selected, queue=False, show_progress="hidden", api_name=False)
    selected.change(show_row, selected, [details, send], api_name="gallery_row", show_progress="hidden")
    png.change(read_png, png, [png_info, png_send, png_row_state], api_name="png_info", show_progress="hidden")
    png_send.click(
        send_png,
        [png_row_state, *inputs.components],
        [*inputs.components, tabs],
        api_name=False,
        show_progress="hidden",
    )
    send.click(
        send_to_compare,
        [selected, *inputs.components],
        [*inputs.components, tabs],
        api_name="send_to_compare",
        show_progress="hidden",  # a refusal's pill would cover every Compare input
    )
