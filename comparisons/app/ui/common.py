"""What every screen shares: the device queue, user errors as popups, the widgets built the same way everywhere,
and the Compare tab's inputs, which other tabs read (Inside the models) or fill (the Results gallery)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from pipelines import registry
from pipelines.base import GPUOutOfMemoryError
from pipelines.registry import TEXT

GPU = Callable[[Callable, Callable[..., int]], Callable]  # (function, its duration in seconds) -> GPU function
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
    return _clear_errors(gr.Number(value, label=label, **kwargs), label)


def slider_field(minimum: float, maximum: float, value: float, label: str, **kwargs) -> gr.Slider:
    """A gr.Slider with number_field's clear error for API input that is not a number."""
    return _clear_errors(gr.Slider(minimum, maximum, value=value, label=label, **kwargs), label)


def _clear_errors(field, label: str):
    parse = field.preprocess

    def preprocess(payload):
        try:
            return parse(payload)
        except gr.Error:  # gradio's own, clear already (a slider's value out of its range)
            raise
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


@dataclass
class CompareInputs:
    """The Compare tab's prompt, text settings, seed and number settings, in the order handlers receive them."""

    prompt: gr.Textbox
    texts: dict[str, gr.Textbox]  # setting name -> its box (the negative prompt)
    seed: gr.Textbox
    numbers: dict[str, gr.Number]  # setting name -> its field (steps and guidance per stage)

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
