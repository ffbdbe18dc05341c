"""The Compare tab: one prompt and seed, every architecture side by side with its stats (comparisons.app.compare)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.compare import Compare
from comparisons.app.inputs import parse_settings, random_seed
from comparisons.app.ui.common import (
    DEVICE,
    GPU,
    CompareInputs,
    number_field,
    picture,
    say,
    settings_of,
    user_errors,
    visitor_of,
)
from comparisons.app.views import FIGURES_NOTE, stats_line
from comparisons.app.zerogpu import compare_duration
from pipelines import registry


def build(compare: Compare, gpu: GPU, switched: list) -> CompareInputs:
    """The tab; `switched`: the header's model-switch events, after which the example prompts follow the preset."""
    archs = compare.session.architectures
    # GPU work may run in a forked worker: it returns what it made, and this process records it.
    make_compare = gpu(user_errors(compare.make_compare), lambda p, s, settings, *_: compare_duration(archs, settings))

    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt", value=compare.examples(1)[0])
            notice = gr.Markdown(elem_id="notice")
            texts = {s.name: gr.Textbox(label=s.label, elem_id=s.name) for s in settings_of(archs, text=True)}
        with gr.Column(scale=1):
            seed = gr.Textbox(label="Seed (-1: a random one)", value="0", elem_id="seed")
            dice = gr.Button("🎲 Random seed", size="sm")
            go = gr.Button("Generate (Ctrl+Enter)", variant="primary", elem_id="generate")
    with gr.Accordion("Advanced: steps and guidance per stage", open=False):
        numbers = {}
        for a in archs:
            with gr.Row():
                for s in settings_of((a,), text=False):
                    # no precision=0 for steps: gradio would round 1.5 to 2 without a word; parse_settings refuses it
                    numbers[s.name] = number_field(s.default, label=s.label, elem_id=s.name)
    inputs = CompareInputs(prompt, texts, seed, numbers)
    with gr.Row():
        images, stats = inputs.images, {}
        for arch in archs:
            with gr.Column():
                images[arch] = picture(registry.get(arch).label, type="filepath", elem_id=f"image-{arch}", height=320)
                stats[arch] = gr.Markdown(elem_id=f"stats-{arch}")
                inputs.to_image_in[arch] = gr.Button(
                    "Use as the Image in source", size="sm", elem_id=f"to-image-in-{arch}"
                )
    gr.Markdown(FIGURES_NOTE, elem_id="figures-note")
    examples = gr.Examples([[p] for p in compare.examples()], inputs=[prompt], label=_examples_label(compare))
    for event in switched:
        event.then(
            lambda: gr.Dataset(samples=[[p] for p in compare.examples()], label=_examples_label(compare)),
            outputs=examples.dataset,
            api_name=False,
            show_progress="hidden",
        )

    @user_errors
    def generate(request: gr.Request, prompt, *values, progress=gr.Progress()):
        seed, settings = inputs.read(values)
        visitor = visitor_of(compare.session, request)
        made, notices = make_compare(prompt, seed, parse_settings(**settings), progress, visitor)
        rows = compare.record(made)
        for notice in notices:
            gr.Warning(say(notice))
        return tuple(x for a in archs for x in (rows[a]["image_path"], stats_line(rows[a])))

    prompt.change(
        lambda p: say(compare.notice(p) or ""),
        prompt,
        notice,
        queue=False,
        show_progress="hidden",
        api_name=False,
    )
    dice.click(lambda: str(random_seed()), outputs=seed, queue=False, api_name=False)
    go.click(
        generate,
        inputs.components,
        [x for a in archs for x in (images[a], stats[a])],
        api_name="compare",
        show_progress_on=list(images.values()),  # progress, or an error's pill, over the pictures, never the words
        **DEVICE,
    )
    return inputs


def _examples_label(compare: Compare) -> str:
    return f"Example prompts ({compare.session.config.preset} preset)"
