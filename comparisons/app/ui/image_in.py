"""The "Image in" tab: an uploaded image to unCLIP's variations and latent diffusion's img2img, side by side, each
image logged like any comparison (its source kept once under its hash); steps and guidance are the Compare tab's
(comparisons.app.image_in)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.image_in import ImageIn, image_in_stats, prepare_progress, source_line
from comparisons.app.inputs import parse_settings
from comparisons.app.ui.common import (
    DEVICE,
    GPU,
    CompareInputs,
    image_field,
    picture,
    say,
    slider_field,
    user_errors,
    visitor_of,
)
from comparisons.app.views import FIGURES_NOTE
from comparisons.app.zerogpu import image_in_duration
from comparisons.sources import open_source
from pipelines import registry

INTRO = (
    "One image in, every architecture out. **unCLIP makes variations**: the image's CLIP embedding takes the place "
    "of the prior's, and the decoder and super-resolution draw from it (no prompt). **Latent diffusion runs "
    "img2img**: the image's latent is noised to the strength and denoised under the prompt. **Stable unCLIP makes "
    "variations** too: the image's CLIP embedding, noised to the noise level, conditions its latent U-Net (with the "
    "prompt, if there is one). The prompt is optional (img2img needs one); the judge scores every image against it, "
    "and against the source. Steps, guidance and the "
    "negative prompt are the Compare tab's (Advanced). Every image is a row of the run log, with the source's hash; "
    "the source is kept once in the results folder."
)


def build(image_in: ImageIn, gpu: GPU, inputs: CompareInputs, tab: gr.Tab, tabs: gr.Tabs) -> None:
    archs = image_in.session.architectures
    # GPU work may run in a forked worker: it returns what it made, and this process records it.
    make = gpu(
        user_errors(image_in.make),
        lambda source, prompt, seed, strength, settings, *_: image_in_duration(archs, settings, strength),
    )
    strength_setting = next(iter(registry.strength_settings()), None)

    gr.Markdown(INTRO)
    abilities = gr.Markdown(image_in.describe(), elem_id="image-in-abilities")
    with gr.Row():
        with gr.Column(scale=2):
            image = image_field(
                "Source image",
                type="filepath",  # read here: its size is checked before its pixels are decoded
                image_mode=None,  # made RGB here (transparency onto white), not by gradio
                sources=["upload", "clipboard"],
                elem_id="source-image",
                elem_classes="pixels",  # a lab-sized picture shown big, its pixels crisp
                height=260,
            )
        with gr.Column(scale=3):
            prompt = gr.Textbox(
                label="Prompt (optional: img2img needs one; the judge scores every image against it)",
                lines=2,
                elem_id="image-in-prompt",
            )
            strength = slider_field(  # from 0, not a minimum the browser would clamp to without a word
                0.0,
                1.0,
                strength_setting.default if strength_setting else 0.8,
                strength_setting.label if strength_setting else "strength",
                step=0.05,
                info="how far the image is noised: 1 starts from pure noise; steps × strength of them denoise",
                elem_id="strength",
            )
            seed = gr.Textbox(label="Seed (-1: a random one)", value="0", elem_id="image-in-seed")
            go = gr.Button("Generate from the image", variant="primary", elem_id="image-in-generate")
    source_info = gr.Markdown(elem_id="source-info")
    with gr.Row():
        images, stats = {}, {}
        for arch in archs:
            a = registry.get(arch)
            label = f"{a.label}: {a.image_in.mode}" if a.image_in is not None else a.label
            with gr.Column():
                images[arch] = picture(label, type="filepath", elem_id=f"image-in-{arch}", height=320)
                stats[arch] = gr.Markdown(elem_id=f"image-in-stats-{arch}")
    gr.Markdown(FIGURES_NOTE)

    @user_errors
    def generate(request: gr.Request, image, prompt, strength, seed, *values, progress=gr.Progress()):
        source = open_source(image)  # in this process: a forked GPU worker receives the checked, canonical image
        image_in.prepare(prepare_progress(progress))  # a borrowed image encoder, attached here (first use)
        settings = parse_settings(**inputs.read_settings(values))
        visitor = visitor_of(image_in.session, request)
        made, skipped, notices = make(source, prompt, seed, strength, settings, progress, visitor)
        rows = image_in.record(made)
        for notice in notices:
            gr.Warning(say(notice))
        shown = [
            x
            for a in archs
            for x in (
                (rows[a]["image_path"], image_in_stats(rows[a])) if a in rows else (None, f"*Not run: {skipped[a]}.*")
            )
        ]
        return (source_line(rows, source), *shown, image_in.describe())

    outputs = [source_info, *(x for a in archs for x in (images[a], stats[a])), abilities]
    go.click(
        generate,
        [image, prompt, strength, seed, *inputs.settings],
        outputs,
        api_name="image_in",
        show_progress_on=list(images.values()),  # not over the words above them
        **DEVICE,
    )
    tab.select(image_in.describe, outputs=abilities, queue=False, show_progress="hidden", api_name=False)

    @user_errors
    def take(made: str | None):
        """A Compare image as this tab's source, the tab shown."""
        if not made:
            raise ValueError("Compare has no image there yet: generate one first")
        return made, gr.Tabs(selected="image-in")

    for arch, button in inputs.to_image_in.items():
        button.click(take, inputs.images[arch], [image, tabs], api_name=False, show_progress="hidden")
