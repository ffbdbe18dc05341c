"""Links that make a comparison again: its prompt, seed, every setting and the models that made it, as a URL's query
parameters (`?prompt=…&seed=…&prior_steps=…&preset=lab&model.unclip=…`), and back.

The Compare tab's Copy link writes one from the PNGs it shows (each carries its row's infotext: the seed drawn for
-1, not the -1); a page opened from one fills its widgets and generates again, the same images where the models
are the same (the same seed and settings). Gradio-free: the ui module reads the page's query and fills the widgets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from PIL import Image

from comparisons.app.inputs import RANDOM_SEED, parse_seed, parse_settings, parse_text, shown
from comparisons.records import model_shown, parse_infotext, settings_from_png
from pipelines import registry

PROMPT, SEED, PRESET = "prompt", "seed", "preset"
MODEL = "model."  # + an architecture: the model that made its image ("model.unclip=lab/weights/unclip")
# The query parameters Gradio 6.31's page reads itself (`?view=api`; `__theme` and the like start with "__"): never a
# link's, never reported.
GRADIO_KEYS = frozenset({"view", "deep_link", "ui", "write_token"})


@dataclass(frozen=True)
class Link:
    """A comparison as a link carries it; what a link leaves out (None, absent) leaves the page's widget as it is."""

    prompt: str | None = None
    seed: int | None = None  # RANDOM_SEED only in a link typed by hand; a copied link has the seed drawn
    settings: dict[str, str | int | float] = field(default_factory=dict)  # setting name -> value
    preset: str | None = None  # the preset whose models made it (None: models of the app's own choosing)
    models: dict[str, str] = field(default_factory=dict)  # architecture -> its model, as model_shown names it
    ignored: tuple[str, ...] = ()  # what reading it left out, each in words


def link_query(link: Link) -> str:
    """The link's query string, without the `?`: prompt, seed, settings, then preset and models."""
    pairs = [(PROMPT, link.prompt), (SEED, link.seed), *link.settings.items(), (PRESET, link.preset)]
    pairs += [(MODEL + architecture, model) for architecture, model in link.models.items()]
    return urlencode([(key, _text(value)) for key, value in pairs if value is not None])


def _text(value: object) -> str:
    """A value as a link writes it: 25, not 25.0; 7.5; 0.1 exactly as Python reads it back."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def read_link(params: Mapping[str, str], names: Sequence[str]) -> Link | None:
    """A page's query parameters as a link: every value it could use, and in `ignored` what it could not and why;
    `names` are the settings the page has widgets for. None when the query has none of a link's parameters."""
    known = {s.name: s for s in registry.all_settings()}
    ours = [k for k in params if k in (PROMPT, SEED, PRESET) or k in known or k.startswith(MODEL)]
    if not ours:
        return None
    prompt, seed, preset, settings, models, ignored = None, None, None, {}, {}, []
    for key, value in params.items():
        try:
            if key == PROMPT:
                prompt = parse_text(value, PROMPT, "Prompt")
            elif key == SEED:
                seed = RANDOM_SEED if value.strip() == str(RANDOM_SEED) else parse_seed(value)
            elif key == PRESET:
                preset = value
            elif key.startswith(MODEL):
                models[key.removeprefix(MODEL)] = value
            elif key in known and key not in names:
                ignored.append(f"{known[key].label} (this app does not run its architecture)")
            elif key in known:
                settings[key] = _setting(key, value)
            elif not key.startswith("__") and key not in GRADIO_KEYS:
                ignored.append(f"{shown(key)}, which is no setting of this app")
        except ValueError as err:
            ignored.append(str(err))
    return Link(prompt, seed, settings, preset, models, tuple(ignored))


def _setting(name: str, value: str) -> str | int | float:
    """One setting's value from a link, checked as its widget's would be (a ValueError names the widget)."""
    parsed = parse_settings(**{name: value}).value(name)
    return "" if parsed is None else parsed  # an empty negative prompt: the box empty


def link_of_pngs(paths: Iterable[str | Path], preset: str, sources: Mapping[str, str]) -> Link:
    """The link of one comparison's PNGs (one per architecture, as the Compare tab shows them), read from their own
    infotext: its prompt, the seed it ran with, each architecture's settings and model. `preset` and `sources`
    (architecture -> model) are the app's: the preset is named when the PNGs were made by its models."""
    prompt, seed, settings, models = None, None, {}, {}
    for path in paths:
        architecture, prompt, seed, made_with = settings_from_png(path)
        settings |= {k: "" if v is None else v for k, v in made_with.for_architecture(architecture).items()}
        with Image.open(path) as im:
            models[architecture] = parse_infotext(im.text["parameters"]).get("Model")
    if prompt is None:
        raise ValueError("Copy link: there are no images yet; Generate first (a link makes the images shown again)")
    same = models == {a: model_shown(s) for a, s in sources.items() if a in models}
    return Link(prompt, seed, settings, preset if same else None, models)


def models_notice(link: Link, preset: str, sources: Mapping[str, str]) -> str | None:
    """What to say when a link's models are not this app's (`preset`, `sources`: its images may then differ)."""
    ours = {a: model_shown(s) for a, s in sources.items()}
    differ = [f"the {shown(link.preset)} preset, this app's {preset}"] if link.preset not in (None, preset) else []
    for architecture, model in link.models.items():
        if ours.get(architecture) != model:
            name = registry.get(architecture).short if architecture in ours else shown(architecture)
            here = f"this app's {ours[architecture]}" if architecture in ours else "which this app does not run"
            differ.append(f"{name}: the link's {shown(model, 80)}, {here}")
    if not differ:
        return None
    return (
        f"This link was made with other models ({'; '.join(differ)}): its images may differ. A link never switches "
        "models (Models, under the title, does)."
    )


def link_note(link: Link, notice: str | None) -> str:
    """The words over a page opened from a link: what it fills in, what it ignored, and the models `notice`."""
    lines = ["Opened from a link: the prompt, seed and settings it gives are filled in, and the images made again."]
    if link.ignored:
        lines.append(f"Ignored: {'; '.join(link.ignored)}.")
    if notice:
        lines.append(notice)
    return " ".join(lines)
