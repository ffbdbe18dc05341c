"""What every screen shares: the device queue, user errors as popups, the widgets built the same way everywhere,
and the Compare tab's inputs, which other tabs read (Inside the models) or fill (the Results gallery)."""

from __future__ import annotations

import functools
import html
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from comparisons.app.access import without_paths
from comparisons.app.inputs import shown
from comparisons.app.session import Session
from pipelines import registry
from pipelines.base import GPUOutOfMemoryError
from pipelines.registry import TEXT

GPU = Callable[[Callable, Callable[..., int]], Callable]  # (function, its duration in seconds) -> GPU function
DEVICE = dict(concurrency_limit=1, concurrency_id="device")  # one model call at a time on the device
# Lab images are 32 px: show them big, with crisp pixels rather than a blur. A sweep's grid keeps its cells' size,
# and scrolls, rather than squashing 20 columns to the page's width.
CSS = """
.pixels img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
#sweep-grid .image-container { overflow: auto; max-height: 760px; }
#sweep-grid .image-container > button { display: block; width: max-content; min-width: 100%; height: auto; }
#sweep-grid .image-frame { width: max-content; height: auto; }
#sweep-grid img { width: auto !important; height: auto !important; max-width: none !important;
  max-height: none !important; object-fit: none; }
.fit table { table-layout: fixed; width: 100% !important; }
.fit th, .fit td { white-space: normal !important; overflow-wrap: anywhere; }
"""
FIT = "fit"  # a table's class: every column within the page's width, long cells wrapped (CSS)
# Ctrl+Enter (⌘+Enter) runs the visible tab's main button, as in AUTOMATIC1111, ComfyUI and InvokeAI.
KEYS_JS = """
() => {
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const main = [...document.querySelectorAll("button.primary")].find((b) => b.offsetParent !== null && !b.disabled);
    if (main) { event.preventDefault(); main.click(); }
  });
}
"""


log = logging.getLogger("t2i.app")


def say(text: str) -> str:
    """Text for a popup or a Markdown box, shown as written: gradio renders both as HTML, where a caption grammar's
    “<colour> <shape>” (or a prompt's own angle brackets) would vanish with everything after it."""
    return html.escape(text, quote=False)


_PUBLIC = threading.Event()  # set by `serve_publicly`: errors shown name no server path


def serve_publicly() -> None:
    """From now on, the errors pages show name no server path (a public app's; the server log keeps them whole)."""
    _PUBLIC.set()


def user_errors(fn):
    """Bad input from the user (or a generation too big for the GPU) becomes a visible error, and one line in the
    server log (never a traceback); the app carries on. On a public app the error names no server path."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise  # said already, by the user_errors inside (a GPU function's)
        except (ValueError, GPUOutOfMemoryError) as err:
            log.warning("refused (%s): %s", fn.__name__, err)
            message = without_paths(str(err)) if _PUBLIC.is_set() else str(err)
            raise gr.Error(say(message), print_exception=False) from None

    return wrapped


def visitor_of(session: Session, request: gr.Request | None) -> str:
    """Who a request is from (Session.visitor): its browser session's anonymous id on a public app."""
    return session.visitor(getattr(request, "session_hash", None))


def number_field(value: float, label: str, **kwargs) -> gr.Number:
    """A gr.Number whose unusable API input (text, a list, an infinite step count) is the app's clear error, not
    gradio's generic one; the browser's number box never sends such values. (Wrapped, not subclassed: gradio
    writes a .pyi stub beside the module of every Component subclass.)"""
    return guarded(gr.Number(value, label=label, **kwargs), f"{label} must be a number")


def slider_field(minimum: float, maximum: float, value: float, label: str, **kwargs) -> gr.Slider:
    """A gr.Slider with number_field's clear error for API input that is not a number or is out of its range."""
    field = gr.Slider(minimum, maximum, value=value, label=label, **kwargs)
    return guarded(field, f"{label} must be a number from {minimum:g} to {maximum:g}")


def choice_field(component: gr.components.Component, label: str) -> gr.components.Component:
    """A dropdown, radio or checkbox group whose API input outside its choices gets a clear error."""
    choices = ", ".join(str(value) for _, value in component.choices)
    return guarded(component, f"{label}: choose among {choices}")


def guarded(field: gr.components.Component, problem: str) -> gr.components.Component:
    """`field` whose input gradio cannot take (what an API client, never the browser, sends) is refused with
    `problem` and what was sent, as a popup and one log line, never a traceback in the server log."""
    parse = field.preprocess

    def preprocess(payload):
        try:
            return parse(payload)
        except Exception:  # noqa: BLE001 - whatever gradio's own check raised, the user reads one sentence
            sent = shown(payload.get("orig_name") or "a file") if isinstance(payload, dict) else shown(payload)
            log.warning("refused input: %s, got %s", problem, sent)
            raise gr.Error(say(f"{problem}; got {sent}"), print_exception=False) from None

    field.preprocess = preprocess
    return field


def image_field(label: str, **kwargs) -> gr.Image:
    """An upload whose file is no readable picture gets a clear error (gradio decodes it before any handler)."""
    return guarded(gr.Image(label=label, **kwargs), f"{label}: not a picture this app can read (PNG, JPEG, WebP, GIF)")


def picture(label: str, **kwargs) -> gr.Image:
    """An output image shown big with crisp pixels, downloaded as PNG."""
    return gr.Image(label=label, interactive=False, format="png", elem_classes="pixels", **kwargs)


def settings_of(architectures: tuple[str, ...], text: bool) -> list[registry.Setting]:
    """The architectures' text settings (boxes under the prompt) or their numbers (the Advanced widgets), in order."""
    return [s for a in architectures for s in registry.get(a).settings if (s.role == TEXT) == text]


@dataclass
class CompareInputs:
    """The Compare tab's prompt, text settings, seed and number settings, in the order handlers receive them, and
    what other tabs take from it: its images and the buttons that send one to the Image in tab."""

    prompt: gr.Textbox
    texts: dict[str, gr.Textbox]  # setting name -> its box (the negative prompt)
    seed: gr.Textbox
    numbers: dict[str, gr.Number]  # setting name -> its field (steps and guidance per stage)
    images: dict[str, gr.Image] = field(default_factory=dict)  # architecture -> its image
    to_image_in: dict[str, gr.Button] = field(default_factory=dict)  # architecture -> "use it as Image in's source"

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.prompt, *self.texts.values(), self.seed, *self.numbers.values()]

    @property
    def settings(self) -> list[gr.components.Component]:
        """The text and number settings alone (the Image in tab has its own prompt and seed)."""
        return [*self.texts.values(), *self.numbers.values()]

    def read_settings(self, values: tuple) -> dict:
        """The values of `settings`, in order -> {setting: raw value}."""
        return dict(zip([*self.texts, *self.numbers], values))

    def read(self, values: tuple) -> tuple[object, dict]:
        """The values after the prompt, in `components` order -> (seed, {setting: raw value})."""
        n = len(self.texts)
        names = [*self.texts, *self.numbers]
        return values[n], dict(zip(names, [*values[:n], *values[n + 1 :]]))

    def values(self, prompt: str, seed: object, settings: dict[str, object]) -> list:
        """Every widget's value, in `components` order, from a prompt, a seed and {setting: value}: what fills it."""
        return [prompt, *(settings[n] for n in self.texts), seed, *(settings[n] for n in self.numbers)]
