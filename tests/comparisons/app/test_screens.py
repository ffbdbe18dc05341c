"""What a newcomer meets on the screens, backend by backend: a sweep's status says what a rerun made (nothing) and
what a cancel kept; PNG info finds a PNG's row; pages name images inside the results folder, never the server's
path; the tiny preset says its images are noise; errors and notices are shown as written, one log line each."""

import logging
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from comparisons.app.backends import Backends
from comparisons.app.inputs import vocabulary_notice
from comparisons.app.results import png_details, png_row
from comparisons.app.session import AppConfig, Session
from comparisons.app.ui.common import say, user_errors
from comparisons.records import save_png
from comparisons.settings import Settings
from comparisons.sources import open_source

FAST = Settings(prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2)
PROMPTS = "a green square\na yellow cross"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Backends.of(Session(AppConfig("tiny", "cpu", tmp_path_factory.mktemp("tiny"))))


def test_a_sweep_run_again_says_it_made_nothing(tiny):
    first = tiny.sweep.start(PROMPTS, "0-1", "2", "4", ["unclip", "latent_diffusion"], FAST, batch_size=2)
    tiny.sweep.wait(120)
    assert first.message().startswith(f"sweep {first.run_id}: 8/8 images (8 made by this run), ")
    assert first.message().endswith(" s, finished")
    again = tiny.sweep.start(PROMPTS, "0-1", "2", "4", ["unclip", "latent_diffusion"], FAST)
    tiny.sweep.wait(120)
    assert again.message() == (
        f"sweep {again.run_id}: 8/8 images: all were in the log already, so nothing was made "
        "(other prompts, seeds, steps or guidance would be)"
    )
    more = tiny.sweep.start(PROMPTS, "0-2", "2", "4", ["unclip", "latent_diffusion"], FAST)
    tiny.sweep.wait(120)
    assert "12/12 images (4 made by this run, 8 of them already in the log)" in more.message()


def test_a_cancelled_sweep_stops_after_its_batch_and_a_rerun_makes_the_rest(tiny):
    status = tiny.sweep.start(PROMPTS, "10-29", "2", "4", ["unclip", "latent_diffusion"], FAST, batch_size=2)
    while status.done == status.before and status.running:  # its first batch lands
        time.sleep(0.02)
    tiny.sweep.cancel()
    tiny.sweep.wait(120)
    made = status.done - status.before
    assert not status.running and 0 < made < status.total and made % 2 == 0  # whole batches only
    assert status.message() == (
        f"sweep {status.run_id}: {status.done}/80 images: cancelled after {made} of its 80 new images; "
        "run the same sweep again to make the rest"
    )
    with pytest.raises(ValueError, match="no sweep is running"):
        tiny.sweep.cancel()
    rest = tiny.sweep.start(PROMPTS, "10-29", "2", "4", ["unclip", "latent_diffusion"], FAST, batch_size=8)
    tiny.sweep.wait(300)
    assert rest.before == made and rest.done == rest.total == 80  # nothing lost, nothing twice
    log = tiny.session.runs()
    assert log["sweep_key"].dropna().is_unique


def test_png_info_finds_the_row_a_png_describes_or_reads_its_own_settings(tiny, tmp_path):
    rows, _ = tiny.compare.run("a red circle", "5", FAST)
    row = rows["latent_diffusion"]
    found, in_log = png_row(row["image_path"], tiny.session.runs())
    assert in_log == 1 and found["image_path"] == row["image_path"] and found["seed"] == 5
    text = png_details(found, in_log)
    assert (
        text.startswith("This log has 1 row made with exactly these settings") and "Latent diffusion steps 2" in text
    )
    elsewhere = Session(AppConfig("tiny", "cpu", tmp_path))  # another results folder: the PNG's own settings
    found, in_log = png_row(row["image_path"], elsewhere.runs())
    assert in_log == 0 and (found["architecture"], found["prompt"], found["steps"]) == (
        "latent_diffusion",
        "a red circle",
        2,
    )
    assert found["batch_size"] == 1 and found["threads"] >= 1  # how it was made rides along
    assert png_details(found, 0).startswith("No row of this log was made with these settings")
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="“plain.png” carries no settings this app wrote"):
        png_row(tmp_path / "plain.png", tiny.session.runs())


def test_pages_name_images_inside_the_results_folder(tiny):
    rows, _ = tiny.compare.run("a red circle", "6", FAST)
    path = rows["unclip"]["image_path"]
    name = tiny.results.image_name(path)
    assert name.startswith("images/unclip/") and str(tiny.session.results_dir) not in name
    assert tiny.results.image_path(name) == path and tiny.results.image_path(path) == path


def test_the_tiny_preset_says_its_images_are_noise(tiny):
    tiny.session.harness()
    status = tiny.session.status()
    assert "**tiny** loaded on cpu" in status and "untrained random weights: every image is noise" in status


def test_notices_and_errors_show_as_written_and_leave_one_log_line(caplog):
    notice = vocabulary_notice("red a circle", "lab")
    assert "“red a circle” is not a Shapes caption" in notice and "<" not in notice
    assert say("a <colour> <shape>") == "a &lt;colour&gt; &lt;shape&gt;"  # gradio renders popups as HTML

    @user_errors
    def refuse():
        raise ValueError("the <b>prompt</b> is empty")

    with caplog.at_level(logging.WARNING, logger="t2i.app"), pytest.raises(gr.Error) as caught:
        refuse()
    assert caught.value.message == "the &lt;b&gt;prompt&lt;/b&gt; is empty"
    assert [r.getMessage() for r in caplog.records] == ["refused (refuse): the <b>prompt</b> is empty"]


def test_a_png_sent_back_keeps_its_image_in_columns(tiny, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(source)
    made, _, _ = tiny.image_in.make(open_source(str(source)), "a red circle", "3", 0.5, FAST)
    rows = tiny.image_in.record(made)
    found, in_log = png_row(rows["latent_diffusion"]["image_path"], tiny.session.runs())
    assert in_log == 1 and found["mode"] == "img2img" and found["strength"] == 0.5
    assert "made from an image (img2img)" in png_details(found, in_log)
    copy = save_png(
        Image.open(rows["latent_diffusion"]["image_path"]), tmp_path / "copy.png", rows["latent_diffusion"]
    )
    assert png_row(Path(copy), tiny.session.runs())[1] == 1  # named anything: found by its settings
