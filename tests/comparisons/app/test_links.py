"""Links that make a comparison again (comparisons.app.links): every setting, the prompt, the seed and the models
survive a link's round trip; a malformed link keeps what it can and says what it ignored, in words; a query without
a link's parameters is no link; a copied link carries the seed a comparison ran with (the one drawn for -1) and
names its models, and other models than the app's are said."""

from urllib.parse import parse_qsl

import numpy as np
import pytest

from comparisons.app.compare import Compare
from comparisons.app.inputs import parse_settings
from comparisons.app.links import Link, link_note, link_of_pngs, link_query, models_notice, read_link
from comparisons.app.session import AppConfig, Session
from comparisons.presets import LAB_WEIGHTS
from comparisons.settings import Settings
from pipelines import registry
from pipelines.registry import GUIDANCE, LEVEL, STEPS

from helpers import png_pixels

ALL = [s.name for s in registry.all_settings()]  # a page with every registered architecture's widgets
LAB = {a: str(LAB_WEIGHTS / a) for a in ("unclip", "latent_diffusion", "stable_unclip")}  # the lab preset's sources
LAB_SHOWN = {a: f"lab/weights/{a}" for a in LAB}  # as a PNG and a link name them
FAST = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)
PROMPT = "a red circle above a blue square"


def query(text: str) -> dict[str, str]:
    """A query string as the page's request reads it (blank values kept, as Starlette keeps them)."""
    return dict(parse_qsl(text, keep_blank_values=True))


def other_than_default(setting: registry.Setting) -> object:
    if setting.role in (STEPS, GUIDANCE):
        return setting.default + (1 if setting.role == STEPS else 0.25)
    return 5 if setting.role == LEVEL else "blurry & = #% “quoted”"


def test_every_setting_prompt_seed_and_model_survive_a_round_trip():
    link = Link(
        prompt="a red circle & a “blue” square?\nsecond line = #1 %20",
        seed=2**63 - 1,  # no float holds it: it travels as text
        settings={s.name: other_than_default(s) for s in registry.all_settings()},
        preset="lab",
        models={**LAB_SHOWN, "latent_diffusion": "org/fine-tuned-sd"},
    )
    assert set(link.settings) == set(ALL) and len(ALL) >= 14  # every setting of every architecture
    assert read_link(query(link_query(link)), ALL) == link
    empty = Link("p", 0, {"negative_prompt": "", "guidance": 0.1, "steps": 25})
    assert "negative_prompt=&" in link_query(empty) and "steps=25" in link_query(empty)  # 25, never 25.0
    assert read_link(query(link_query(empty)), ALL) == empty


def test_a_malformed_link_keeps_what_it_can_and_says_what_it_ignored():
    params = query(
        "prompt=a+red+circle&seed=x&prior_steps=2.5&decoder_steps=3&guidance=abc&prior_guidance=100"
        "&noise_level=-4&colour=red&stable_unclip_steps=2&__theme=dark&view=api"
    )
    names = [n for n in ALL if not n.startswith("stable_unclip")]  # a page without Stable unCLIP
    link = read_link(params, names)
    assert (link.prompt, link.seed, link.settings) == ("a red circle", None, {"decoder_steps": 3})
    assert link.ignored == (
        "Seed: “x” is not a whole number from 0 to 9,223,372,036,854,775,807, or -1 for a random one",
        "unCLIP prior steps must be a whole number of steps, got “2.5”",
        "Latent diffusion guidance must be a number, got “abc”",
        "unCLIP prior guidance must be at most 50, got 100: guidance that far beyond what the models were trained "
        "with only draws noise (1 turns guidance off)",
        "Stable unCLIP noise level must be a whole number from 0 to 999, got -4",
        "“colour”, which is no setting of this app",
        "Stable unCLIP steps (this app does not run its architecture)",
    )  # Gradio's own parameters (theme, API page) are never reported
    note = link_note(link, None)
    assert note.startswith("Opened from a link: ") and "Ignored: Seed: “x” is not" in note
    assert not any(code in note for code in ("`", "**", "None", "prior_steps"))  # the widgets' labels, in words
    assert read_link(query("seed=-1"), ALL).seed == -1  # typed by hand: a random seed, as the Seed box takes it


@pytest.mark.parametrize("text", ["", "__theme=dark", "view=api&deep_link=abc", "utm_source=mail&colour=red"])
def test_a_query_without_a_links_parameters_is_no_link(text):
    assert read_link(query(text), ALL) is None


def test_other_models_than_the_apps_are_said():
    same = Link("p", 1, preset="lab", models=LAB_SHOWN)
    assert models_notice(same, "lab", LAB) is None
    assert models_notice(Link("p", 1), "lab", LAB) is None  # a link typed by hand, naming no models
    other = Link("p", 1, preset="tiny", models={**LAB_SHOWN, "unclip": "kakaobrain/karlo-v1-alpha", "painter": "x"})
    notice = models_notice(other, "lab", LAB)
    assert notice == (
        "This link was made with other models (the “tiny” preset, this app's lab; unCLIP: the link's "
        "“kakaobrain/karlo-v1-alpha”, this app's lab/weights/unclip; “painter”: the link's “x”, which this app "
        "does not run): its images may differ. A link never switches models (Models, under the title, does)."
    )
    assert link_note(other, notice).endswith(notice)


@pytest.fixture(scope="module")
def compare(tmp_path_factory):
    return Compare(Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("links"))))  # a comparison in 0.4 s


def test_a_copied_link_carries_the_seed_drawn_every_setting_shown_and_the_models(compare):
    config = compare.session.config
    rows, _ = compare.run(PROMPT, "-1", FAST.replace(guidance=3.5, negative_prompt="blurry"))
    seed = rows["unclip"]["seed"]
    assert all(r["seed"] == seed for r in rows.values()) and seed != -1
    link = link_of_pngs([r["image_path"] for r in rows.values()], config.preset, config.sources)
    assert (link.prompt, link.seed, link.preset) == (PROMPT, seed, "lab")  # the seed drawn, never -1
    assert link.models == LAB_SHOWN
    assert link.settings == {
        s.name: "" if rows[a][s.name] is None else rows[a][s.name]
        for a in compare.session.architectures
        for s in registry.get(a).settings
    }
    assert (link.settings["guidance"], link.settings["negative_prompt"], link.settings["prior_steps"]) == (
        3.5,
        "blurry",
        2,
    )
    assert models_notice(link, config.preset, config.sources) is None
    tiny = {a: f"org/tiny-{a}" for a in LAB}  # hub ids
    assert "unCLIP: the link's “lab/weights/unclip”, this app's org/tiny-unclip" in models_notice(link, "tiny", tiny)
    opened = read_link(query(link_query(link)), ALL)
    assert (opened.prompt, opened.seed, opened.settings) == (link.prompt, link.seed, link.settings)
    again, _ = compare.run(opened.prompt, str(opened.seed), parse_settings(**opened.settings))  # as the page does
    for a, row in again.items():  # the same images: the same seed and settings on the same models
        assert row["seed"] == seed and np.array_equal(png_pixels(row["image_path"]), png_pixels(rows[a]["image_path"]))
    made_by_other_models = link_of_pngs([rows["unclip"]["image_path"]], "tiny", tiny)
    assert made_by_other_models.preset is None  # the app's preset is named only when its models made the images
    with pytest.raises(ValueError, match="Copy link: there are no images yet; Generate first"):
        link_of_pngs([], config.preset, config.sources)
