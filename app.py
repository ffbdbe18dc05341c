"""unCLIP vs latent diffusion, side by side: the Gradio app (Hugging Face Spaces runs this file).

    python app.py                      # the Shapes lab on CPU, http://127.0.0.1:7860
    python app.py --preset pretrained  # Karlo + Stable Diffusion 1.5 + a ViT-L-14 judge, fp16 on a GPU
    python app.py --preset pretrained --latent-diffusion stabilityai/stable-diffusion-2-1-base --judge ViT-H-14
    python app.py --host 0.0.0.0       # listen on every interface (or T2I_HOST=0.0.0.0)

Layout and wiring only: every handler calls `comparisons.app.session.Session`, which checks the raw
widget values, runs the models and reads the run log. Its ValueErrors become gr.Error popups.

On ZeroGPU (SPACES_ZERO_GPU set on the Space) a GPU is attached only while a `spaces.GPU` function runs, in a
forked worker: the models load in the main thread before launch, the GPU functions only generate (the serving
process writes PNGs and rows), and a sweep is a sequence of such calls, each asking for the seconds its steps need.
"""

from __future__ import annotations

try:  # first: on ZeroGPU it virtualises CUDA, which must happen before torch touches it
    import spaces
except ImportError:
    spaces = None

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from comparisons.app.inputs import parse_settings, random_seed, vocabulary_notice
from comparisons.app.session import AppConfig, Session
from comparisons.app.views import (
    memory_bars,
    prior_summary,
    score_vs_seconds,
    stage_seconds_long,
    stats_line,
    summary_frame,
    table_view,
)
from comparisons.app.work import batch_duration, compare_duration
from comparisons.presets import DEFAULT_PRESET, JUDGES, PRESETS, add_model_flags, models_from_flags
from pipelines import registry
from pipelines.base import GPUOutOfMemoryError
from pipelines.registry import STEPS, TEXT

GPU = Callable[[Callable, Callable[..., int]], Callable]  # (function, its duration in seconds) -> GPU function


def on_gpu(fn: Callable, duration: Callable[..., int]) -> Callable:
    """`spaces.GPU` with a duration computed from the call's arguments; off ZeroGPU spaces.GPU returns fn as is."""
    return fn if spaces is None else spaces.GPU(duration=duration)(fn)


def zero_gpu(environ: dict[str, str]) -> bool:
    """On a ZeroGPU Space (the spaces package reads the same variable)."""
    return environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


DEVICE = dict(concurrency_limit=1, concurrency_id="device")  # one model call at a time on the device
# Lab images are 32 px: show them big, with crisp pixels rather than a blur.
CSS = ".pixels img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


def user_errors(fn):
    """Bad input from the user (or a generation too big for the GPU) becomes a visible error; the app carries on."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, GPUOutOfMemoryError) as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapped


def number_field(value: float, label: str, **kwargs) -> gr.Number:
    """A gr.Number whose unusable API input (text, a list, an infinite step count) is the app's clear error, not
    gradio's generic one; the browser's number box never sends such values. (Wrapped, not subclassed: gradio
    writes a .pyi stub beside the module of every Component subclass.)"""
    field = gr.Number(value, label=label, **kwargs)
    parse = field.preprocess

    def preprocess(payload):
        try:
            return parse(payload)
        except (TypeError, ValueError, OverflowError):
            raise gr.Error(f"{label} must be a number, got {payload!r:.40}", print_exception=False) from None

    field.preprocess = preprocess
    return field


def picture(label: str, **kwargs) -> gr.Image:
    """An output image shown big with crisp pixels, downloaded as PNG."""
    return gr.Image(label=label, interactive=False, format="png", elem_classes="pixels", **kwargs)


def settings_of(architectures: tuple[str, ...], text: bool) -> list[registry.Setting]:
    """The architectures' text settings (boxes under the prompt) or their numbers (the Advanced widgets), in order."""
    return [s for a in architectures for s in registry.get(a).settings if (s.role == TEXT) == text]


def build_app(session: Session, gpu: GPU = on_gpu) -> gr.Blocks:
    """The page. `gpu` decorates every function that runs the models (spaces.GPU; tests fork, as ZeroGPU does)."""
    archs = session.architectures
    texts, numbers = settings_of(archs, text=True), settings_of(archs, text=False)

    def read(values: tuple) -> tuple[str, dict]:
        """The widgets after the prompt, in order: text settings, the seed, then the numbers -> (seed, settings)."""
        seed = values[len(texts)]
        return seed, {
            s.name: v for s, v in zip([*texts, *numbers], [*values[: len(texts)], *values[len(texts) + 1 :]])
        }

    # The GPU work: it may run in a forked worker, so it returns what it made and the serving process records it.
    make_compare = gpu(user_errors(session.make_compare), lambda p, s, settings, *_: compare_duration(archs, settings))
    look_inside = gpu(user_errors(session.explain), lambda p, s, settings: compare_duration(archs, settings))
    make_batch = gpu(user_errors(session.make_sweep_batch), lambda batch, run_id: batch_duration(batch))

    @user_errors
    def generate(prompt, *values, progress=gr.Progress()):
        seed, settings = read(values)
        made, notices = make_compare(prompt, seed, parse_settings(**settings), progress)
        rows = session.record(made)
        for notice in notices:
            gr.Warning(notice)
        return tuple(x for a in archs for x in (rows[a]["image_path"], stats_line(rows[a])))

    @user_errors
    def explain(prompt, *values):
        seed, settings = read(values)
        report = look_inside(prompt, seed, parse_settings(**settings))
        u, ld = report.unclip, report.latent_diffusion
        return (
            u.decoder_strip,
            u.super_res_strip,
            ld.unet_strip,
            prior_summary(u),
            ld.latent_channels,
            [(image, token) for token, image in ld.token_overlays],
            report.components,
            report.shapes,
        )

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

    def status_now():
        return session.status(), gr.Timer(active=not session.settled), gr.Button(visible=session.load_failed)

    @user_errors
    def switch_models(preset, judge, *sources):
        session.switch(preset, dict(zip(archs, sources)), judge or None)
        return (*status_now(), preset)

    @user_errors
    def results(architecture, prompt_contains):
        df = session.runs(architecture, prompt_contains)
        summary, note = summary_frame(df)
        exports = [session.export(df, fmt) if not df.empty else None for fmt in ("csv", "parquet")]
        return (table_view(df), summary, note, stage_seconds_long(df), score_vs_seconds(df), memory_bars(df), *exports)

    @user_errors
    def use_lab():
        session.switch("lab")
        return (*status_now(), "lab", *[""] * len(archs))

    with gr.Blocks(title="unCLIP vs latent diffusion", analytics_enabled=False) as demo:
        gr.Markdown(
            "# unCLIP vs latent diffusion\nOne prompt, both architectures: DALL·E 2's prior → decoder → "
            "super-resolution against Stable Diffusion's U-Net in a VAE latent. Every image is logged with its "
            "seed, the time of every stage, peak memory and CLIP similarity."
        )
        with gr.Row(equal_height=True):
            status = gr.Markdown(session.status(), elem_id="status")
            lab_button = gr.Button(
                "Switch to the lab preset", visible=session.load_failed, size="sm", scale=0, elem_id="use-lab"
            )
        status_timer = gr.Timer(1.0)
        status_outputs = [status, status_timer, lab_button]
        status_timer.tick(status_now, outputs=status_outputs, queue=False, show_progress="hidden", api_name=False)
        with gr.Accordion("Models", open=False, elem_id="models"):
            locked = " (fixed on ZeroGPU: set T2I_PRESET, T2I_UNCLIP, ... in the Space's settings)"
            with gr.Row():
                preset_box = gr.Dropdown(
                    sorted(PRESETS),
                    value=session.config.preset,
                    label="Preset" + (locked if session.config.zero_gpu else ""),
                    elem_id="preset",
                    interactive=not session.config.zero_gpu,
                )
                source_boxes = [
                    gr.Textbox(
                        label=f"{registry.get(a).short} model: hub id or directory (empty: the preset's)",
                        value=session.config.models.get(a, ""),
                        placeholder="e.g. " + PRESETS["pretrained"].models.get(a, "org/name"),
                        elem_id=f"model-{a}",
                        interactive=not session.config.zero_gpu,
                    )
                    for a in archs
                ]
                judge_box = gr.Dropdown(
                    ["", *JUDGES],
                    value=session.config.judge or "",
                    label="Judge (empty: the preset's)",
                    elem_id="judge",
                    interactive=not session.config.zero_gpu,
                )
            load_button = gr.Button(
                "Load these models", elem_id="load-models", interactive=not session.config.zero_gpu
            )
        load_button.click(
            switch_models,
            [preset_box, judge_box, *source_boxes],
            [*status_outputs, preset_box],
            api_name="switch_models",
            **DEVICE,
        )
        lab_button.click(use_lab, None, [*status_outputs, preset_box, *source_boxes], api_name="use_lab", **DEVICE)

        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                with gr.Column(scale=3):
                    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt", value=session.examples(1)[0])
                    notice = gr.Markdown(elem_id="notice")
                    text_boxes = [gr.Textbox(label=s.label, elem_id=s.name) for s in texts]
                with gr.Column(scale=1):
                    seed = gr.Textbox(label="Seed", value="0", elem_id="seed")
                    dice = gr.Button("🎲 Random seed", size="sm")
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Accordion("Advanced: steps and guidance per stage", open=False):
                fields = {}
                for a in archs:
                    with gr.Row():
                        for s in (s for s in numbers if s in registry.get(a).settings):
                            fields[s.name] = number_field(
                                s.default, label=s.label, precision=0 if s.role == STEPS else None, elem_id=s.name
                            )
            inputs = [prompt, *text_boxes, seed, *fields.values()]
            with gr.Row():
                images, stats = {}, {}
                for arch in archs:
                    with gr.Column():
                        images[arch] = picture(
                            registry.get(arch).label, type="filepath", elem_id=f"image-{arch}", height=320
                        )
                        stats[arch] = gr.Markdown(elem_id=f"stats-{arch}")
            gr.Examples(
                [[p] for p in session.examples()], inputs=[prompt], label=f"Example prompts ({session.config.preset})"
            )
            prompt.change(
                lambda p: vocabulary_notice(p or "", session.config.preset) or "",
                prompt,
                notice,
                queue=False,
                show_progress="hidden",
                api_name=False,
            )
            dice.click(lambda: str(random_seed()), outputs=seed, queue=False, api_name=False)
            go.click(generate, inputs, [x for a in archs for x in (images[a], stats[a])], api_name="compare", **DEVICE)

        with gr.Tab("Inside the models", id="inside"):
            gr.Markdown(
                "An instrumented run of the Compare tab's prompt, negative prompt, seed and settings (not logged: "
                "the hooks change the timings). Trajectories show the predicted clean image x₀ at evenly spaced steps."
            )
            look = gr.Button("Look inside", variant="primary", elem_id="look-inside")
            # A strip is 8 frames wide: one per row, so its frames are big enough to see.
            decoder_strip = picture("unCLIP decoder: x₀ per step (pixels, half size)", height=150)
            super_res_strip = picture("unCLIP super-resolution: x₀ per step", height=150)
            unet_strip = picture("Latent diffusion: x₀ per step, decoded by the VAE", height=150)
            with gr.Row():
                prior_info = gr.Markdown(elem_id="prior-info")
                latent_channels = picture("Latent diffusion's final latent, one panel per channel", height=300)
            attention = gr.Gallery(
                label="Cross-attention per prompt token (mean over heads, layers and steps)",
                columns=6,
                elem_id="attention",
                elem_classes="pixels",
            )
            with gr.Row():
                components = gr.Dataframe(label="Components (parameters read from the loaded models)")
                shapes = gr.Dataframe(label="Tensor shapes at each stage of this run")
            look.click(
                explain,
                inputs,
                [
                    decoder_strip,
                    super_res_strip,
                    unet_strip,
                    prior_info,
                    latent_channels,
                    attention,
                    components,
                    shapes,
                ],
                api_name="explain",
                **DEVICE,
            )

        with gr.Tab("Sweep", id="sweep"):
            with gr.Row():
                sweep_prompts = gr.Textbox(
                    label="Prompts, one per line", lines=6, value="\n".join(session.examples(4))
                )
                with gr.Column():
                    sweep_seeds = gr.Textbox(label="Seeds (e.g. 0-9 or 1,5,7)", value="0-3")
                    sweep_steps = gr.Textbox(label="Steps (comma-separated)", value="25")
                    sweep_guidance = gr.Textbox(label="Guidance (comma-separated)", value="7.5")
                    sweep_archs = gr.CheckboxGroup(list(archs), value=list(archs), label="Architectures")
                    run = gr.Button(
                        "Run sweep" if session.config.zero_gpu else "Run sweep in the background", variant="primary"
                    )
            sweep_status = gr.Markdown()
            sweep_table = gr.Dataframe(label="This sweep's rows, as they land")
            sweep_timer = gr.Timer(1.0, active=False)
            run.click(
                sweep_here if session.config.zero_gpu else start_sweep,
                [sweep_prompts, sweep_seeds, sweep_steps, sweep_guidance, sweep_archs],
                [sweep_status, sweep_table, sweep_timer],
                api_name="sweep",
            )
            sweep_timer.tick(
                sweep_progress,
                outputs=[sweep_status, sweep_table, sweep_timer],
                show_progress="hidden",
                api_name="sweep_progress",
            )

        with gr.Tab("Results", id="results") as results_tab:
            with gr.Row():
                arch_filter = gr.Dropdown(["all", *archs], value="all", label="Architecture")
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
                memory = gr.BarPlot(
                    x="architecture", y="peak_memory_mb", title="Peak memory (MB, mean)", y_lim=[0, None]
                )
            with gr.Row():
                csv = gr.DownloadButton("Download CSV", elem_id="download-csv")
                parquet = gr.DownloadButton("Download Parquet", elem_id="download-parquet")
            outputs = [table, summary, summary_note, stage_plot, scatter, memory, csv, parquet]
            for trigger in (refresh.click, arch_filter.change, prompt_filter.submit, results_tab.select):
                trigger(results, [arch_filter, prompt_filter], outputs, api_name=False)
            demo.load(results, [arch_filter, prompt_filter], outputs, api_name="results")
    return demo


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> argparse.Namespace:
    """The flags; each defaults to its environment variable (T2I_PRESET, T2I_UNCLIP, ...), as a Space sets them."""
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(description="unCLIP vs latent diffusion, side by side")
    parser.add_argument("--preset", default=environ.get("T2I_PRESET", DEFAULT_PRESET), choices=sorted(PRESETS))
    parser.add_argument("--device", default=environ.get("T2I_DEVICE", "auto"))
    parser.add_argument("--results", type=Path, default=Path(environ.get("T2I_RESULTS", "results")))
    parser.add_argument(
        "--host", default=environ.get("T2I_HOST"), help="default 127.0.0.1; 0.0.0.0 to listen on every interface"
    )
    parser.add_argument("--port", type=int, default=int(environ.get("T2I_PORT", 7860)))
    add_model_flags(parser, environ)
    parser.add_argument(
        "--judge",
        default=environ.get("T2I_JUDGE") or None,
        choices=JUDGES,
        help="the open_clip model that scores every image (or T2I_JUDGE); default: the preset's",
    )
    return parser.parse_args(argv)


def launch_options(host: str | None, port: int, environ: dict[str, str]) -> dict:
    """Loopback unless a host is asked for; on Spaces (SPACE_ID set) its own host and port. Never a share link."""
    if "SPACE_ID" in environ and host is None:
        return dict(
            server_name=None, server_port=None, share=False, css=CSS
        )  # Gradio reads GRADIO_SERVER_NAME / _PORT
    return dict(server_name=host or "127.0.0.1", server_port=port, share=False, css=CSS)


def config_from(args: argparse.Namespace, environ: dict[str, str]) -> AppConfig:
    return AppConfig(
        args.preset, args.device, args.results, models_from_flags(args), args.judge, zero_gpu=zero_gpu(environ)
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    session = Session(config_from(args, dict(os.environ)))
    if session.config.zero_gpu:  # in the main thread, before launch: ZeroGPU packs the weights it saw placed on CUDA
        try:
            session.harness()
        except ValueError as err:
            print(err)  # the page says it too, with the lab preset one click away
    else:
        session.start_loading()
    demo = build_app(session)
    demo.queue(default_concurrency_limit=4)
    demo.launch(**launch_options(args.host, args.port, dict(os.environ)), allowed_paths=[str(session.results_dir)])


if __name__ == "__main__":
    main()
