"""The Sweep tab: a grid of prompts × seeds × steps × guidance for the chosen architectures, with its rows and its
grid picture as they land (comparisons.app.sweep). In the background off ZeroGPU; on ZeroGPU the click's own handler
runs one GPU call per batch."""

from __future__ import annotations

import gradio as gr

from comparisons.app.sweep import Sweep
from comparisons.app.ui.common import GPU, choice_field, picture, user_errors, visitor_of
from comparisons.app.views import table_view
from comparisons.app.zerogpu import batch_duration
from comparisons.grid import AXES
from pipelines import registry


def build(sweep: Sweep, gpu: GPU) -> None:
    archs = sweep.session.architectures
    make_batch = gpu(user_errors(sweep.make_sweep_batch), lambda batch, *_: batch_duration(batch))

    def shown(message: str, rows_axis: str, columns_axis: str, running: bool | None, visitor: str) -> tuple:
        """What every update shows: the status, the rows, the grid (picture, file, what it is), the timer."""
        path, note = sweep.picture(rows_axis, columns_axis, visitor)
        timer = gr.Timer(active=bool(running))
        return message, table_view(sweep.rows(visitor)), path, path, note, timer

    def own(request: gr.Request | None) -> str:
        return visitor_of(sweep.session, request)

    @user_errors
    def start_sweep(
        prompts,
        seeds,
        steps,
        guidance,
        architectures,
        rows_axis="prompt",
        columns_axis="seed",
        request: gr.Request = None,
    ):
        visitor = own(request)
        status = sweep.start(prompts, seeds, steps, guidance, architectures, visitor=visitor)
        return shown(status.message(), rows_axis, columns_axis, True, visitor)

    def sweep_here(
        prompts,
        seeds,
        steps,
        guidance,
        architectures,
        rows_axis="prompt",
        columns_axis="seed",
        request: gr.Request = None,
    ):
        """ZeroGPU's way: this handler runs the batches one decorated call at a time and shows each as it lands."""
        visitor = own(request)
        try:
            status, todo = sweep.plan(prompts, seeds, steps, guidance, architectures, visitor=visitor)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        yield shown(status.message(), rows_axis, columns_axis, False, visitor)
        for status in sweep.steps(status, todo, make=make_batch):
            yield shown(status.message(), rows_axis, columns_axis, False, visitor)

    def sweep_progress(rows_axis="prompt", columns_axis="seed", request: gr.Request = None):
        visitor = own(request)
        status = sweep.status_of(visitor)
        if status is None:
            return shown("no sweep yet", rows_axis, columns_axis, False, visitor)
        return shown(status.message(), rows_axis, columns_axis, status.running, visitor)

    @user_errors
    def cancel(rows_axis="prompt", columns_axis="seed", request: gr.Request = None):
        visitor = own(request)
        status = sweep.cancel(visitor)
        return shown(status.message(), rows_axis, columns_axis, status.running, visitor)

    def grid_only(rows_axis="prompt", columns_axis="seed", request: gr.Request = None):
        path, note = sweep.picture(rows_axis, columns_axis, own(request))
        return path, path, note

    with gr.Row():
        prompts = gr.Textbox(
            label="Prompts, one per line", lines=6, value="\n".join(sweep.examples(4)), elem_id="sweep-prompts"
        )
        with gr.Column():
            seeds = gr.Textbox(label="Seeds (e.g. 0-9 or 1,5,7)", value="0-3", elem_id="sweep-seeds")
            steps = gr.Textbox(label="Steps (comma-separated)", value="25", elem_id="sweep-steps")
            guidance = gr.Textbox(label="Guidance (comma-separated)", value="7.5")
            chosen = choice_field(
                # named as every other screen names them; the API takes and gives their ids
                gr.CheckboxGroup(
                    [(registry.get(a).short, a) for a in archs], value=list(archs), label="Architectures"
                ),
                "Architectures",
            )
            zero = sweep.session.config.zero_gpu
            run = gr.Button(
                "Run sweep" if zero else "Run sweep in the background", variant="primary", elem_id="run-sweep"
            )
            stop = gr.Button("Cancel the sweep (after its current batch)", size="sm", elem_id="cancel-sweep")
    status = gr.Markdown(elem_id="sweep-status")
    with gr.Row():
        rows_axis = choice_field(
            gr.Dropdown(list(AXES), value="prompt", label="Grid rows", elem_id="grid-rows"), "Grid rows"
        )
        columns_axis = choice_field(
            gr.Dropdown(list(AXES), value="seed", label="Grid columns", elem_id="grid-columns"), "Grid columns"
        )
        download = gr.DownloadButton("Download grid PNG", elem_id="download-grid")
    grid_note = gr.Markdown(elem_id="grid-note")
    # the note above says what it is: a label would float over the picture's title
    grid = picture("The sweep's grid", show_label=False, elem_id="sweep-grid")
    table = gr.Dataframe(label="This sweep's rows, as they land")
    timer = gr.Timer(1.0, active=False)
    axes = [rows_axis, columns_axis]
    outputs = [status, table, grid, download, grid_note, timer]
    sweep_inputs = [prompts, seeds, steps, guidance, chosen, *axes]
    run.click(sweep_here if zero else start_sweep, sweep_inputs, outputs, api_name="sweep", show_progress_on=[grid])
    # both the background sweep and ZeroGPU's (run in its handler) check, before each batch, whether they are told
    stop.click(cancel, axes, outputs, api_name="cancel_sweep", show_progress="hidden")
    timer.tick(sweep_progress, axes, outputs, show_progress="hidden", api_name="sweep_progress")
    for axis in axes:
        axis.input(grid_only, axes, [grid, download, grid_note], api_name="sweep_grid" if axis is rows_axis else False)
