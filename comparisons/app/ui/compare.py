"""The Compare tab: one prompt and seed, every architecture side by side with its stats (comparisons.app.compare), a
slider over any two of them, and a link that makes the comparison again (comparisons.app.links)."""

from __future__ import annotations

import gradio as gr

from comparisons.app.compare import Compare
from comparisons.app.inputs import parse_settings, random_seed
from comparisons.app.links import link_note, link_of_pngs, link_query, models_notice, read_link
from comparisons.app.ui.common import (
    DEVICE,
    GPU,
    CompareInputs,
    choice_field,
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

# The page's address, which only the browser knows, in place of the last input's value (the link box's).
PAGE_URL_JS = "(...values) => [...values.slice(0, -1), window.location.origin + window.location.pathname]"
# Where the browser lets the page write the clipboard; the box shows the link either way.
CLIPBOARD_JS = "(link) => { if (link && navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {}); }"


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
            copy = gr.Button("🔗 Copy link", size="sm", elem_id="copy-link")
            link = gr.Textbox(
                label="Link: opens Compare with these images' prompt, seed and settings, and makes them again",
                interactive=False,
                buttons=["copy"],
                elem_id="link",
            )
            from_link = gr.Markdown(elem_id="link-note")
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
    sides, slider = _slider(archs)
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

    @user_errors
    def slide(left: str, right: str, *paths: str | None) -> gr.ImageSlider:
        try:
            pair = slider_pair(left, right, dict(zip(archs, paths)))
        except ValueError as err:  # a choice half made, not a fault: said, and the slider waits for the other side
            gr.Warning(say(str(err)))
            return gr.ImageSlider(None, label=f"Slider: choose two architectures ({registry.get(left).short} twice)")
        return gr.ImageSlider(pair, label=_slider_label(left, right))

    @user_errors
    def copy_link(*values: str | None) -> str:
        *paths, page = values
        config = compare.session.config
        return f"{page}?{link_query(link_of_pngs([p for p in paths if p], config.preset, config.sources))}"

    def open_link(request: gr.Request) -> tuple | dict:
        """A page opened from a link: the Compare widgets filled from it, and a note over them, whose change makes
        the comparison again. Without a link: nothing changes and nothing runs."""
        names = [*inputs.texts, *inputs.numbers]
        opened = read_link(dict(request.query_params), names)
        if opened is None:
            return gr.skip()
        config = compare.session.config
        settings = {n: opened.settings.get(n, gr.skip()) for n in names}
        seed = gr.skip() if opened.seed is None else str(opened.seed)
        values = inputs.values(gr.skip() if opened.prompt is None else opened.prompt, seed, settings)
        return (*values, say(link_note(opened, models_notice(opened, config.preset, config.sources))))

    # no device, nothing made; queued all the same, as a refusal must be to reach the page as a popup
    quick = dict(api_name=False, show_progress="hidden")
    dice.click(lambda: str(random_seed()), outputs=seed, queue=False, api_name=False)
    compared = gr.on(
        [go.click, from_link.change],  # a link opened: its comparison made again, as Generate makes it
        generate,
        inputs.components,
        [x for a in archs for x in (images[a], stats[a])],
        api_name="compare",
        show_progress_on=list(images.values()),  # progress, or an error's pill, over the pictures, never the words
        **DEVICE,
    )
    copy.click(
        copy_link,
        [*images.values(), link],  # the box's value: the page's address (PAGE_URL_JS)
        link,
        js=PAGE_URL_JS,
        **quick,
    ).success(None, link, None, js=CLIPBOARD_JS)
    # triggers None and no inputs: the page's load alone; cheap, unqueued, and a no-op without a link
    gr.on(None, open_link, outputs=[*inputs.components, from_link], queue=False, **quick)
    if slider is not None:  # the slider from the images shown: after each comparison, and when a side changes
        compared.success(slide, [*sides, *images.values()], slider, **quick)
        gr.on([side.change for side in sides], slide, [*sides, *images.values()], slider, **quick)
    return inputs


def slider_pair(left: str, right: str, images: dict[str, str | None]) -> tuple[str, str] | None:
    """The slider's (left, right) images from the architectures' images shown; None before there are any."""
    if left == right:
        raise ValueError(
            f"Compare slider: both sides show {registry.get(left).short}; choose another architecture for one side"
        )
    if not images.get(left) or not images.get(right):
        return None
    return images[left], images[right]


def _slider(archs: tuple[str, ...]) -> tuple[list[gr.Dropdown], gr.ImageSlider | None]:
    """Two architectures' images under one slider, each side's chosen by a dropdown; none for one architecture."""
    if len(archs) < 2:
        return [], None
    choices = [(registry.get(a).short, a) for a in archs]
    with gr.Row():
        with gr.Column(scale=1, min_width=200):
            sides = [
                choice_field(gr.Dropdown(choices, value=a, label=label, elem_id=f"slider-{side}"), label)
                for a, side, label in zip(archs, ("left", "right"), ("Slider's left side", "Slider's right side"))
            ]
        slider = gr.ImageSlider(
            label=_slider_label(archs[0], archs[1]),
            type="filepath",
            format="png",
            interactive=False,
            max_height=420,
            elem_id="compare-slider",
            elem_classes="pixels",
            scale=3,
        )
    return sides, slider


def _slider_label(left: str, right: str) -> str:
    return f"Slider: {registry.get(left).short} on the left, {registry.get(right).short} on the right; drag it"


def _examples_label(compare: Compare) -> str:
    return f"Example prompts ({compare.session.config.preset} preset)"
