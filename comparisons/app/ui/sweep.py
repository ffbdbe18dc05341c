"""The Sweep tab: a grid of prompts × seeds × steps × guidance for the chosen architectures, with its rows as they
land. In the background off ZeroGPU; on ZeroGPU the click's own handler runs one GPU call per batch."""

from __future__ import annotations

import gradio as gr

from comparisons.app.session import Session
from comparisons.app.ui.common import GPU, user_errors
from comparisons.app.views import table_view
from comparisons.app.work import batch_duration


def build(session: Session, gpu: GPU) -> None:
    archs = session.architectures
    make_batch = gpu(user_errors(session.make_sweep_batch), lambda batch, run_id: batch_duration(batch))

    @user_errors
    def start_sweep(prompts, seeds, steps, guidance, architectures):
        status = session.start_sweep(prompts, seeds, steps, guidance, architectures)
        return status.message(), table_view(session.sweep_rows()), gr.Timer(active=True)

    def sweep_here(prompts, seeds, steps, guidance, architectures):
        """ZeroGPU's way: this handler runs the batches one decorated call at a time and shows each as it lands."""
        try:
            status, todo = session.plan_sweep(prompts, seeds, steps, guidance, architectures)
        except ValueError as err:
            raise gr.Error(str(err), print_exception=False) from None
        yield status.message(), table_view(session.sweep_rows()), gr.Timer(active=False)
        for status in session.sweep_steps(status, todo, make=make_batch):
            yield status.message(), table_view(session.sweep_rows()), gr.Timer(active=False)

    def sweep_progress():
        status = session.sweep
        if status is None:
            return "no sweep yet", table_view(session.sweep_rows()), gr.Timer(active=False)
        return status.message(), table_view(session.sweep_rows()), gr.Timer(active=status.running)

    with gr.Row():
        prompts = gr.Textbox(label="Prompts, one per line", lines=6, value="\n".join(session.examples(4)))
        with gr.Column():
            seeds = gr.Textbox(label="Seeds (e.g. 0-9 or 1,5,7)", value="0-3")
            steps = gr.Textbox(label="Steps (comma-separated)", value="25")
            guidance = gr.Textbox(label="Guidance (comma-separated)", value="7.5")
            chosen = gr.CheckboxGroup(list(archs), value=list(archs), label="Architectures")
            zero = session.config.zero_gpu
            run = gr.Button("Run sweep" if zero else "Run sweep in the background", variant="primary")
    status = gr.Markdown()
    table = gr.Dataframe(label="This sweep's rows, as they land")
    timer = gr.Timer(1.0, active=False)
    run.click(
        sweep_here if zero else start_sweep,
        [prompts, seeds, steps, guidance, chosen],
        [status, table, timer],
        api_name="sweep",
    )
    timer.tick(sweep_progress, outputs=[status, table, timer], show_progress="hidden", api_name="sweep_progress")
