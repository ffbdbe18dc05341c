"""The "Latent space" tab: interpolations between two prompts (every architecture) and unCLIP's text diffs, each a
strip of frames over a table of what the Shapes checker read in them (comparisons.app.latent_space). Explorations, not
logged rows."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from comparisons.app.inputs import parse_settings
from comparisons.app.latent_space import (
    DECODER_TEXT,
    DEFAULT_FRAMES,
    DEFAULT_MAX_THETA,
    MAX_FRAMES,
    MIN_FRAMES,
    LatentSpace,
    WalkReport,
    parse_frames,
)
from comparisons.app.ui.common import (
    DEVICE,
    FIT,
    GPU,
    CompareInputs,
    choice_field,
    picture,
    slider_field,
    user_errors,
    visitor_of,
)
from comparisons.app.zerogpu import walk_duration
from pipelines import registry

INTRO = (
    "Walks through what each architecture conditions on, frame by frame, every frame from the same noise. "
    "**Interpolation**: unCLIP slerps between the prior's CLIP image embeddings of the two prompts (DALL·E 2, "
    "Fig. 4), latent diffusion interpolates the text encoder's hidden states, Stable unCLIP walks unCLIP's path "
    "(the same prior) through its latent U-Net; with the decoders reading the prompts, t = 0 and t = 1 are the "
    "Compare tab's images of the two prompts. **Text diff** (unCLIP, Fig. 5): a "
    "caption's image embedding turned towards *target − source* of two captions' text embeddings, θ from 0 to the "
    "largest θ. Seed, steps, guidance and negative prompt are the Compare tab's. These are explorations: frames "
    "are not logged (a frame is remade only by its whole walk)."
)


NO_TABLE = pd.DataFrame(columns=["read"])  # before a walk, and where the checker cannot read (the note says why)


def _shown(report: WalkReport, archs: tuple[str, ...]) -> list:
    """Each architecture's strip and checker table, in `archs` order."""
    tables = report.readings or {}
    return [x for a in archs for x in (report.walks[a].strip(), tables.get(a, NO_TABLE))]


def _strip_and_table(label: str, arch: str, prefix: str) -> list:
    """A strip under its title, and the checker's table under it: a column per frame, aligned with the strip."""
    gr.Markdown(f"**{label}**")
    strip = picture(label, show_label=False, elem_id=f"{prefix}-{arch}", height=200)
    table = gr.Dataframe(
        NO_TABLE, label="What the Shapes checker read", elem_id=f"{prefix}-table-{arch}", wrap=True, elem_classes=FIT
    )
    return [strip, table]


def build(latent: LatentSpace, gpu: GPU, inputs: CompareInputs) -> None:
    archs = latent.architectures
    walk = gpu(
        user_errors(latent.interpolate),
        lambda start, end, seed, frames, text, settings, *_: walk_duration(archs, settings, frames),
    )
    diff = gpu(
        user_errors(latent.text_diff),
        lambda c, s, t, seed, frames, theta, text, settings, *_: walk_duration(("unclip",), settings, frames),
    )
    (start_0, end_0), (caption_0, source_0, target_0) = latent.examples()
    frame_slider = dict(minimum=MIN_FRAMES, maximum=MAX_FRAMES, value=DEFAULT_FRAMES, label="Frames")
    decoder_text = dict(
        choices=list(DECODER_TEXT),
        value="prompts",
        label="unCLIP's decoder and Stable unCLIP's U-Net read (besides the embedding)",
        info="prompts: their text conditioning moves along; empty: the embedding alone, as Fig. 4 and variations",
    )

    @user_errors
    def interpolate(request: gr.Request, start, end, frames, text, *values, progress=gr.Progress()):
        seed, settings = inputs.read(values)
        visitor = visitor_of(latent.session, request)
        report = walk(start, end, seed, parse_frames(frames), text, parse_settings(**settings), progress, visitor)
        return (*_shown(report, archs), report.note)

    @user_errors
    def text_diff(request: gr.Request, caption, source, target, frames, theta, text, *values, progress=gr.Progress()):
        seed, settings = inputs.read(values)
        n, visitor = parse_frames(frames), visitor_of(latent.session, request)
        report = diff(caption, source, target, seed, n, theta, text, parse_settings(**settings), progress, visitor)
        return (*_shown(report, ("unclip",)), report.note)

    gr.Markdown(INTRO)
    with gr.Row():
        start = gr.Textbox(label="Start prompt (t = 0)", value=start_0, elem_id="walk-start")
        end = gr.Textbox(label="End prompt (t = 1)", value=end_0, elem_id="walk-end")
    with gr.Row():
        frames = slider_field(**frame_slider, step=1, elem_id="walk-frames")
        text = choice_field(gr.Radio(**decoder_text, elem_id="walk-decoder-text"), decoder_text["label"])
        go = gr.Button("Interpolate", variant="primary", elem_id="interpolate")
    walk_note = gr.Markdown(elem_id="walk-note")
    outputs = [x for a in archs for x in _strip_and_table(f"{registry.get(a).label}: t = 0 … 1", a, "walk")]
    go.click(
        interpolate,
        [start, end, frames, text, *inputs.components[1:]],
        [*outputs, walk_note],
        api_name="interpolate",
        show_progress_on=outputs[::2],  # the strips, not the tables or the note
        **DEVICE,
    )

    gr.Markdown("### Text diff (unCLIP)")
    with gr.Row():
        caption = gr.Textbox(label="Caption (θ = 0)", value=caption_0, elem_id="diff-caption")
        source = gr.Textbox(label="Source caption", value=source_0, elem_id="diff-source")
        target = gr.Textbox(label="Target caption", value=target_0, elem_id="diff-target")
    with gr.Row():
        diff_frames = slider_field(**frame_slider, step=1, elem_id="diff-frames")
        theta = slider_field(0.05, 1.0, DEFAULT_MAX_THETA, "Largest θ", step=0.05, elem_id="diff-theta")
        diff_decoder = dict(decoder_text, label="unCLIP's decoder reads (besides the embedding)")  # unCLIP's alone
        diff_text = choice_field(gr.Radio(**diff_decoder, elem_id="diff-decoder-text"), diff_decoder["label"])
        diff_go = gr.Button("Text diff", variant="primary", elem_id="text-diff")
    diff_note = gr.Markdown(elem_id="diff-note")
    diff_strip, diff_table = _strip_and_table("unCLIP: θ = 0 … the largest θ", "unclip", "diff")
    diff_go.click(
        text_diff,
        [caption, source, target, diff_frames, theta, diff_text, *inputs.components[1:]],
        [diff_strip, diff_table, diff_note],
        api_name="text_diff",
        show_progress_on=[diff_strip],
        **DEVICE,
    )
