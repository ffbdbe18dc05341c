"""The Compare tab's backend (comparisons.app.compare) on the tiny preset, called directly: every architecture on one
prompt and seed, made without writing anything and then recorded, one row and PNG each; examples and notices follow
the preset; bad input is refused in words before any model runs. Then its screen (comparisons.app.ui.compare) on the
lab preset: the slider over any two architectures, a page opened from a link filled in, and in a browser a slider
that moves and a copied link that makes the same images in another browser."""

import io
import re
from pathlib import Path
from urllib.parse import parse_qsl

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from comparisons.app.backends import Backends
from comparisons.app.compare import Compare
from comparisons.app.inputs import vocabulary_notice
from comparisons.app.session import AppConfig, Session
from comparisons.app.ui.compare import slider_pair
from comparisons.settings import Settings
from pipelines import registry

from helpers import browser_page, free_port

FAST = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)
PROMPT = "a red circle above a blue square"


@pytest.fixture(scope="module")
def compare(tmp_path_factory):
    return Compare(Session(AppConfig("tiny", "cpu", tmp_path_factory.mktemp("compare"))))


def test_made_writes_nothing_and_recorded_logs_one_row_and_png_per_architecture(compare):
    session = compare.session
    seen = []
    made, notices = compare.make_compare(PROMPT, "4", FAST, lambda fraction, what: seen.append(fraction))
    assert [m.architecture for m in made] == list(session.architectures) and notices == []
    assert session.runs().empty and not any(Path(m.rows[0]["image_path"]).exists() for m in made)
    assert seen[-1] == pytest.approx(1.0)  # one progress bar over every architecture's steps, to its end
    rows = compare.record(made)
    assert list(rows) == list(session.architectures) and all(r["seed"] == 4 for r in rows.values())
    assert all(Path(r["image_path"]).is_file() for r in rows.values())
    assert len(session.runs()) == len(rows)
    again, _ = compare.run(PROMPT, "5", FAST)  # both halves in one call
    assert len(session.runs()) == 2 * len(rows) and {r["seed"] for r in again.values()} == {5}


@pytest.mark.parametrize(
    "prompt, seed, error",
    [("  ", "0", "the prompt is empty"), (PROMPT, "-2", "Seed: “-2” is out of range"), (PROMPT, "x", "Seed: “x”")],
)
def test_bad_input_is_refused_before_any_model_runs(compare, prompt, seed, error):
    before = len(compare.session.runs())
    with pytest.raises(ValueError, match=error):
        compare.run(prompt, seed, FAST)
    assert len(compare.session.runs()) == before


def test_examples_and_notices_follow_the_preset(compare, tmp_path):
    assert compare.notice("a cat on a sofa") is None  # outside the lab nothing is out of vocabulary
    lab = Compare(Session(AppConfig("lab", "cpu", tmp_path)))  # nothing loads: examples come from prompt files
    assert all(vocabulary_notice(p, "lab") is None for p in lab.examples(4)) and len(lab.examples(4)) == 4
    assert "cat" in lab.notice("a cat on a sofa") and lab.notice(None) is not None
    assert len(compare.examples(3)) == 3 and compare.examples(3) != lab.examples(3)


# ----------------------------------------------------------------------------- the screen: slider and links

ARCHS = ("unclip", "latent_diffusion", "stable_unclip")  # the lab preset's, in the page's order
FAST_LINK = "prior_steps=2&decoder_steps=2&super_res_steps=2&steps=2&stable_unclip_prior_steps=2&stable_unclip_steps=2"


def test_the_slider_shows_two_different_architectures_images_shown():
    shown = {"unclip": "u.png", "latent_diffusion": "ld.png", "stable_unclip": None}
    assert slider_pair("latent_diffusion", "unclip", shown) == ("ld.png", "u.png")
    assert slider_pair("unclip", "stable_unclip", shown) is None  # nothing made yet: an empty slider, no word
    with pytest.raises(ValueError, match="Compare slider: both sides show LD; choose another architecture"):
        slider_pair("latent_diffusion", "latent_diffusion", shown)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The lab app's tabs' backends, nothing loaded (building the page loads no model)."""
    return Backends.of(Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("lab"))))


def _dependency(demo: gr.Blocks, event: str, elem_id: str | None = None) -> dict:
    """The one dependency `event` of the component `elem_id` (of the page, "load", without one) triggers."""
    ids = {b.elem_id: i for i, b in demo.blocks.items() if getattr(b, "elem_id", None)}
    (found,) = [
        d
        for d in demo.get_config_file()["dependencies"]
        if any(e == event and (elem_id is None or t == ids[elem_id]) for t, e in d["targets"])
    ]
    return found


def test_a_link_fills_every_widget_it_can_and_says_what_it_ignored_and_which_models_differ(lab):
    demo = app.build_app(lab)
    load = _dependency(demo, "load")
    query = f"prompt=a+green+cross&seed=42&{FAST_LINK}&guidance=lots&colour=red&preset=tiny&model.unclip=org%2Fkarlo"
    values = demo.fns[load["id"]].fn(gr.Request(query_params=dict(parse_qsl(query))))
    filled = {b.elem_id: v for b, v in zip(demo.fns[load["id"]].outputs, values) if v != gr.skip()}
    assert filled.pop("link-note") == (
        "Opened from a link: the prompt, seed and settings it gives are filled in, and the images made again. "
        "Ignored: Latent diffusion guidance must be a number, got “lots”; “colour”, which is no setting of this app. "
        "This link was made with other models (the “tiny” preset, this app's lab; unCLIP: the link's “org/karlo”, "
        "this app's lab/weights/unclip): its images may differ. A link never switches models (Models, under the "
        "title, does)."
    )
    fast = {name: 2 for name in FAST_LINK.replace("=2", "").split("&")}
    assert filled == {"prompt": "a green cross", "seed": "42", **fast}  # the rest as the page has it
    compare = _dependency(demo, "click", "generate")
    assert compare["api_name"] == "compare" and _dependency(demo, "change", "link-note") == compare  # then made


def test_the_slider_and_copy_link_are_private_and_leave_the_compare_api_as_it_was(lab):
    demo = app.build_app(lab)
    for event, elem_id in [("change", "slider-left"), ("change", "slider-right"), ("click", "copy-link")]:
        dependency = _dependency(demo, event, elem_id)
        assert dependency["api_visibility"] == "private" and dependency["backend_fn"], elem_id
    compare = _dependency(demo, "click", "generate")
    (slide,) = [d for d in demo.get_config_file()["dependencies"] if d["trigger_after"] == compare["id"]]
    assert slide["trigger_only_on_success"] and slide["api_visibility"] == "private"
    assert len(compare["outputs"]) == 2 * len(ARCHS)  # the /compare API's outputs: an image and its stats each


@pytest.fixture(scope="module")
def served(lab):
    """The lab app on loopback: its url."""
    demo = app.build_app(lab)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        **app.launch_options(None, free_port(), {}),
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(lab.session.results_dir)],
    )
    yield url.rstrip("/")
    demo.close()


def _pixels(page, selector: str) -> np.ndarray:
    """The pixels of the image `selector` shows, fetched as the browser fetches it."""
    body = page.request.get(page.locator(selector).get_attribute("src")).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _choose(page, elem_id: str, option: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill(option)
    box.press("Enter")


def _clip(page) -> float:
    """How far from the left the slider's right-hand image starts, in percent of its width."""
    style = page.locator("#compare-slider img.fixed").get_attribute("style")
    return float(re.search(r"inset\([^)]*?([\d.]+)%\)", style).group(1))


def test_in_a_browser_the_slider_moves_and_a_copied_link_makes_the_same_images_again(served):
    settings = [s.name for a in ARCHS for s in registry.get(a).settings]
    with browser_page(served) as page:
        page.get_by_text("Advanced: steps and guidance per stage").click()
        for name in FAST_LINK.replace("=2", "").split("&"):
            page.locator(f"#{name} input").fill("2")
        page.locator("#prompt textarea").fill("a red circle above a blue square")
        page.locator("#seed textarea, #seed input").first.fill("-1")  # a random seed: the link has the one drawn
        page.locator("#generate").click()
        page.locator("#stats-stable_unclip", has_text="seed ").wait_for(timeout=60_000)
        seed = re.search(r"seed (\d+)", page.locator("#stats-unclip").inner_text()).group(1)

        # the slider: unCLIP on the left, latent diffusion on the right, the images shown above it
        slider = "#compare-slider img[data-testid=imageslider-image]"
        page.locator(f"{slider}.fixed").wait_for(timeout=30_000)
        assert page.locator(slider).count() == 2
        assert np.array_equal(_pixels(page, f"{slider} >> nth=0"), _pixels(page, "#image-unclip img"))
        assert np.array_equal(_pixels(page, f"{slider} >> nth=1"), _pixels(page, "#image-latent_diffusion img"))
        assert _clip(page) == pytest.approx(50)
        page.locator("#compare-slider").scroll_into_view_if_needed()
        handle = page.locator("#compare-slider [data-testid=slider]").bounding_box()
        x, y = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x - 120, y, steps=6)
        page.mouse.up()
        assert _clip(page) < 40  # dragged left: more of the right-hand image
        before = page.locator(f"{slider} >> nth=1").get_attribute("src")
        _choose(page, "slider-right", "Stable unCLIP")
        page.wait_for_function(
            f"document.querySelectorAll('{slider}')[1].getAttribute('src') !== {before!r}", timeout=30_000
        )
        assert np.array_equal(_pixels(page, f"{slider} >> nth=1"), _pixels(page, "#image-stable_unclip img"))
        page.locator("#compare-slider", has_text="unCLIP on the left, Stable unCLIP on the right").wait_for()
        _choose(page, "slider-left", "Stable unCLIP")
        page.locator(".toast-body", has_text="both sides show Stable unCLIP").wait_for(timeout=30_000)
        page.locator("#compare-slider", has_text="choose two architectures").wait_for()  # not the old pair's names

        # Copy link: into the clipboard and the box; opened in a new browser context, the same images
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served)
        page.locator("#copy-link").click()
        box = page.locator("#link textarea, #link input").first
        page.wait_for_function(
            "document.querySelector('#link textarea, #link input').value.includes('seed=')", timeout=30_000
        )
        link = box.input_value()
        assert link.startswith(served) and f"seed={seed}&" in link and "seed=-1" not in link
        assert page.evaluate("navigator.clipboard.readText()") == link
        other = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        other.goto(link)
        other.locator("#stats-stable_unclip", has_text=f"seed {seed} ").wait_for(timeout=60_000)
        assert "Opened from a link" in other.locator("#link-note").inner_text()
        assert "other models" not in other.locator("#link-note").inner_text()
        for arch in ARCHS:
            assert np.array_equal(_pixels(other, f"#image-{arch} img"), _pixels(page, f"#image-{arch} img")), arch
        other.get_by_text("Advanced: steps and guidance per stage").click()
        for name in ["prompt", *settings]:
            field = f"#{name} textarea, #{name} input"
            assert other.locator(field).first.input_value() == page.locator(field).first.input_value(), name
        assert other.locator("#seed textarea, #seed input").first.input_value() == seed  # the first page's is -1
