"""The agent tools: compare, sweep, sweep_status and results_summary (comparisons.app.tools), as API endpoints that
`python app.py --mcp` also serves as MCP tools at /gradio_api/mcp/. Gradio names a tool after its function, describes
it from the docstring (the summary, each `Args:` line, `Returns:`) and types its inputs from the type hints. Each goes
through its tab's backend as the page does: the same checks, the device queue, the run log's rows, and the visitor
id of a public app (an MCP call reaches it through gradio's own client, so every agent is one visitor there).

Gradio lists the tabs' own endpoints as tools too; the MCP URL with `?tools=` (MCP_QUERY) offers these alone.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from comparisons.app.backends import Backends
from comparisons.app.inputs import parse_text
from comparisons.app.tools import (
    chosen,
    comparison_report,
    settings_from,
    settings_help,
    summary_report,
    sweep_report,
)
from comparisons.app.ui.common import DEVICE, GPU, user_errors, visitor_of
from comparisons.app.zerogpu import batch_duration, compare_duration

TOOLS = ("compare", "sweep", "sweep_status", "results_summary")  # the tools' names: their functions'
MCP_QUERY = "?tools=" + ",".join(TOOLS)  # after /gradio_api/mcp/: these tools alone, without the tabs' endpoints


def served(path: Path) -> dict:
    """An image as gradio serves a file: the caller gets its URL (gradio_client downloads it)."""
    return gr.FileData(path=str(path), orig_name=path.name, mime_type="image/png").model_dump()


def build(backends: Backends, gpu: GPU) -> None:
    """The tools' endpoints (call inside the page's gr.Blocks); `gpu` decorates the model calls, as on the tabs."""
    session, results, sweeps = backends.session, backends.results, backends.sweep
    archs = session.architectures
    # GPU work may run in a forked worker: it returns what it made, and this process records it.
    make_compare = gpu(
        user_errors(backends.compare.make_compare), lambda p, s, settings, *_: compare_duration(archs, settings)
    )
    make_batch = gpu(user_errors(sweeps.make_sweep_batch), lambda batch, *_: batch_duration(batch))

    @user_errors
    def compare(
        request: gr.Request, prompt: str, seed: int = 0, settings: dict[str, float | str | None] | None = None
    ) -> dict:
        """Make one image with each of the app's text-to-image architectures from the same prompt and seed, side by
        side, as the Compare tab does; every image is logged in the run log with its seed, settings and figures.

        Args:
            prompt: what the images should show (in the Shapes lab a caption like "a red circle above a blue square")
            seed: the random seed, a whole number from 0 (-1 draws one); the same seed makes the same images
            settings: steps, guidance and negative prompts by name; those left out keep their defaults: SETTINGS

        Returns:
            a dict: "prompt", "seed" (the one used), "run_id", "notices" and "architectures"
            "architectures": for each one its "image" (a file: fetch its "url"), "image_name", "width_px", "height_px"
            its "settings", "seconds_total" and "seconds_<stage>" per stage, "peak_memory_mb", "memory_kind"
            "clip_score" (0 to 100, higher is better), "stats" (the figures in one line) and in the lab "checker"
        """
        visitor = visitor_of(session, request)
        made, notices = make_compare(prompt, seed, settings_from(settings), None, visitor)
        return comparison_report(backends.compare.record(made), notices, results.image_name, served)

    @user_errors
    def sweep(
        request: gr.Request,
        prompts: str,
        seeds: str = "0-3",
        steps: str = "25",
        guidance: str = "7.5",
        architectures: list[str] | None = None,
        settings: dict[str, float | str | None] | None = None,
    ) -> dict:
        """Start a sweep, as the Sweep tab does: the chosen architectures on every prompt × seed × steps × guidance,
        logged as its batches land; images already in the run log are not made again. It runs in the background:
        ask sweep_status how far it is, then results_summary for the figures.

        Args:
            prompts: the prompts, one per line
            seeds: seeds as a range, a list or both, e.g. "0-9", "1,5,7" or "0-3,10"
            steps: the step counts of each architecture's main denoising loops to try, comma-separated, e.g. "10,25"
            guidance: the guidance scales to try, comma-separated, e.g. "4,7.5"
            architectures: which to run, among ARCHITECTURES (default: all of them)
            settings: every other setting by name, as compare takes them (steps and guidance above replace theirs)

        Returns:
            the sweep's status, as sweep_status gives it (its "run_id" tags its rows in the run log)
        """
        visitor = visitor_of(session, request)
        chosen_archs, base = list(archs) if architectures is None else architectures, settings_from(settings)
        if session.config.zero_gpu:  # GPU work runs only in decorated calls: this call runs the batches itself
            status, todo = sweeps.plan(prompts, seeds, steps, guidance, chosen_archs, base, visitor=visitor)
            for status in sweeps.steps(status, todo, make=make_batch):
                pass
        else:
            status = sweeps.start(prompts, seeds, steps, guidance, chosen_archs, base, visitor=visitor)
        return sweep_report(status, *sweeps.picture(visitor=visitor), served)

    @user_errors
    def sweep_status(request: gr.Request) -> dict:
        """How far your latest sweep is: images done of its total, running or not, any error, and its grid picture
        so far (a row per prompt, a column per seed; grey cells are still to come).

        Returns:
            a dict: "run_id", "running", "images_total", "images_done", "images_in_log_before", "cancelled", "error"
            "seconds_elapsed", "message" (all of it in words), "grid" (a file: fetch its "url") and "grid_note"
        """
        visitor = visitor_of(session, request)
        return sweep_report(sweeps.status_of(visitor), *sweeps.picture(visitor=visitor), served)

    @user_errors
    def results_summary(request: gr.Request, configuration: str = "", prompt_contains: str = "") -> dict:
        """The Results tab's summary of the run log: for one configuration (each architecture's settings), the
        architectures side by side on the prompts and seeds they share: each measure's means, their difference with
        its 95% interval and how often each was better; without such pairs, each architecture's statistics.

        Args:
            configuration: which configuration, by a label from "configurations" in an earlier answer (default: newest)
            prompt_contains: only the rows whose prompt contains this text (any case)

        Returns:
            a dict: "configuration" (its label), "paired", "pairs" (how many prompt and seed pairs), "note"
            "configurations" (every label there is, newest first) and "table" (one dict per row)
        """
        contains = parse_text(prompt_contains, "prompt filter")
        df = results.runs("all", contains, visitor_of(session, request))
        options = results.configurations(df, ("all", contains))
        choice = chosen(options, configuration)
        table, note, *_ = results.summary(df, choice)
        return summary_report(options, choice, table, note)

    # the settings' names and defaults, and the architectures loaded, come from the registry and the session
    compare.__doc__ = compare.__doc__.replace("SETTINGS", settings_help())
    sweep.__doc__ = sweep.__doc__.replace("ARCHITECTURES", ", ".join(archs))
    gr.api(compare, api_name="tool_compare", **DEVICE)
    gr.api(sweep, api_name="tool_sweep")
    gr.api(sweep_status, api_name="tool_sweep_status")
    gr.api(results_summary, api_name="tool_results_summary")
