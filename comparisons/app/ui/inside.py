"""The "Inside the models" tab: an instrumented, unlogged run of the Compare tab's inputs (comparisons.app.inside)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.inputs import parse_settings
from comparisons.app.inside import Inside
from comparisons.app.ui.common import DEVICE, FIT, GPU, CompareInputs, picture, user_errors
from comparisons.app.views import prior_summary
from comparisons.app.zerogpu import compare_duration


def build(inside: Inside, gpu: GPU, inputs: CompareInputs) -> None:
    archs = inside.session.architectures
    look_inside = gpu(user_errors(inside.explain), lambda p, s, settings: compare_duration(archs, settings))

    @user_errors
    def explain(prompt, *values):
        seed, settings = inputs.read(values)
        report = look_inside(prompt, seed, parse_settings(**settings))
        u, ld, su = report.unclip, report.latent_diffusion, report.stable_unclip
        return (
            u.decoder_strip,
            u.super_res_strip,
            ld.unet_strip,
            *([su.unet_strip] if stable else []),
            prior_summary(u, su),
            ld.latent_channels,
            [(image, token) for token, image in ld.token_overlays],
            report.components,
            report.shapes,
        )

    gr.Markdown(
        "An instrumented run of the Compare tab's prompt, negative prompt, seed and settings (not logged: "
        "the hooks change the timings). Trajectories show the predicted clean image x₀ at evenly spaced steps."
    )
    look = gr.Button("Look inside", variant="primary", elem_id="look-inside")
    # A strip is 8 frames wide: one per row, so its frames are big enough to see.
    decoder_strip = picture("unCLIP decoder: x₀ per step (pixels, half size)", height=150)
    super_res_strip = picture("unCLIP super-resolution: x₀ per step", height=150)
    unet_strip = picture("Latent diffusion: x₀ per step, decoded by the VAE", height=150)
    stable = "stable_unclip" in archs
    stable_strip = [picture("Stable unCLIP: x₀ per step, decoded by the VAE", height=150)] if stable else []
    with gr.Row():
        prior_info = gr.Markdown(elem_id="prior-info")
        latent_channels = picture("Latent diffusion's final latent, one panel per channel", height=300)
    attention = gr.Gallery(
        label="Cross-attention per prompt token (mean over heads, layers and steps)",
        columns=6,
        elem_id="attention",
        elem_classes="pixels",
    )
    components = gr.Dataframe(
        label="Components (parameters read from the loaded models)", wrap=True, elem_classes=FIT, elem_id="components"
    )
    shapes = gr.Dataframe(label="Tensor shapes at each stage of this run", wrap=True, elem_classes=FIT)
    outputs = [
        decoder_strip,
        super_res_strip,
        unet_strip,
        *stable_strip,
        prior_info,
        latent_channels,
        attention,
        components,
        shapes,
    ]
    pictures = [decoder_strip, super_res_strip, unet_strip, *stable_strip, latent_channels]
    look.click(explain, inputs.components, outputs, api_name="explain", show_progress_on=pictures, **DEVICE)
