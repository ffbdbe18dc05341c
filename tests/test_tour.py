"""A newcomer's tour (`make tour`): the app as `make run` starts it, driven in one chromium session through every
tab as a new user moves between them: Compare, a Compare image sent to Image in, Inside the models, Latent space, a
Sweep (run, rerun, cancelled), a Vote (blind, pairs made, diversity), Results with the votes' scores and the summary
of every configuration in its chooser, a gallery image sent to Compare, PNG info, Findings, a model switch and back,
a page reload. Any error popup or error badge on the page,
or any traceback in the server's log, fails it; each step leaves a screenshot in artifacts/tour-*.png."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import browser_page, free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
FAST = {"unCLIP prior steps": "2", "unCLIP decoder steps": "2", "unCLIP super-res steps": "2"}
FAST_LD = {"Latent diffusion steps": "2"}
FAST_STABLE = {"Stable unCLIP prior steps": "2", "Stable unCLIP steps": "2"}
ARCHS = ("unclip", "latent_diffusion", "stable_unclip")  # the lab preset's three columns


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py` on the lab preset (as `make run` starts it) on a free port, with a fresh results folder:
    (url, its log file, the results folder)."""
    folder = tmp_path_factory.mktemp("tour")
    log, port = folder / "server.log", free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "app.py", "--port", str(port), "--results", str(folder / "results")]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, url, log)
        yield url, log, folder / "results"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


class Tour:
    """The page, and the checks after every step: no error popup, no error badge, a screenshot."""

    def __init__(self, page, log: Path):
        self.page, self.log, self.step = page, log, 0
        self.warnings: list[str] = []

    def check(self, name: str) -> None:
        self.step += 1
        page = self.page
        time.sleep(0.3)  # a popup raised by the step's last event reaches the page
        popups = [t.inner_text() for t in page.locator(".toast-body").all()]
        errors = [p for p in popups if p.startswith("Error")]
        self.warnings += [p for p in popups if not p.startswith("Error")]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"tour-{self.step:02d}-{name}.png"), full_page=True)
        assert not errors, f"{name}: error popups {errors}"
        badges = page.locator("[data-testid='status-tracker']:not(.hide) .error")
        assert badges.count() == 0, f"{name}: {badges.count()} error badge(s) on the page"
        for close in page.locator(".toast-close").all():
            close.click()
        assert "Traceback" not in self.log.read_text(), f"{name}: a traceback in the server log"

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def fill(self, element_id: str, text: str) -> None:
        self.page.locator(f"#{element_id} textarea, #{element_id} input").first.fill(text)

    def choose(self, dropdown: str, option: str) -> None:
        box = self.page.locator(f"#{dropdown} input")
        box.click()
        box.fill(option)
        box.press("Enter")

    def wait(self, selector: str, text: str = "", timeout: float = 180) -> None:
        self.page.locator(selector, has_text=text).first.wait_for(timeout=timeout * 1000)


def test_a_newcomers_tour(server):
    url, log, results = server
    with browser_page(url) as page:
        tour = Tour(page, log)
        tour.wait("#status", "lab loaded")
        tour.check("opened")

        # Compare: a few steps each, a random seed (-1), Ctrl+Enter
        page.get_by_text("Advanced: steps and guidance per stage").click()
        for label, value in {**FAST, **FAST_LD, **FAST_STABLE}.items():
            page.get_by_label(label, exact=True).fill(value)
        tour.fill("prompt", "a red circle above a blue square")
        tour.fill("seed", "-1")
        page.locator("#prompt textarea").press("Control+Enter")
        for arch in ARCHS:
            tour.wait(f"#stats-{arch}", "CLIP")
        seed = re.search(r"seed (\d+)", page.locator("#stats-unclip").inner_text()).group(1)
        for arch in ARCHS[1:]:  # one random seed for all three
            assert f"seed {seed}" in page.locator(f"#stats-{arch}").inner_text()
        boxes = [page.locator(f"#image-{arch}").bounding_box() for arch in ARCHS]
        assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"] and len({round(b["y"]) for b in boxes}) == 1  # a row
        tour.wait("#figures-note", "Reading the figures")
        tour.check("compare")

        # a Compare image straight to Image in
        page.locator("#to-image-in-unclip").click()
        page.get_by_role("tab", name="Image in", selected=True).wait_for(timeout=30_000)
        page.locator("#source-image img").first.wait_for(timeout=30_000)
        tour.fill("image-in-prompt", "a red circle")
        page.locator("#image-in-generate").click()
        for arch in ARCHS:  # unCLIP's and Stable unCLIP's variations, latent diffusion's img2img
            tour.wait(f"#image-in-stats-{arch}", "seed 0")
        tour.check("image-in")

        tour.tab("Inside the models")
        page.locator("#look-inside").click()
        tour.wait("#components", "text_encoder")
        tour.wait("#components", "image_normalizer")  # Stable unCLIP's parts too
        tour.check("inside")

        tour.tab("Latent space")
        frames = page.locator("#walk-frames input[type=number]")
        frames.fill("8")
        frames.press("Enter")
        page.locator("#interpolate").click()
        tour.wait("#walk-note", "checker read every frame")
        for arch in ARCHS:  # all 8 frames' columns within the table's width
            table = page.locator(f"#walk-table-{arch}")
            tour.wait(f"#walk-table-{arch}", "t = 1.00")
            right = table.bounding_box()["x"] + table.bounding_box()["width"]
            last = table.locator("th", has_text="t = 1.00").first.bounding_box()
            assert last["x"] + last["width"] <= right + 1, f"{arch}'s table is cut"
        tour.check("latent-space")

        tour.tab("Sweep")
        tour.fill("sweep-prompts", "a green square\na yellow cross")
        tour.fill("sweep-seeds", "0-4")
        tour.fill("sweep-steps", "2")
        page.locator("#run-sweep").click()
        tour.wait("#sweep-status", "finished")
        tour.wait("#grid-note", "30/30 images made")
        tour.check("sweep")
        page.locator("#run-sweep").click()  # the same sweep again: nothing to make, and it says so
        tour.wait("#sweep-status", "nothing was made")
        tour.check("sweep-again")
        tour.fill("sweep-seeds", "100-139")
        page.locator("#run-sweep").click()
        tour.wait("#sweep-status", "running")
        page.locator("#cancel-sweep").click()
        tour.wait("#sweep-status", "cancelled after")
        tour.check("sweep-cancelled")

        # Vote: a blind pair from the sweep's rows, the names once voted; pairs made on the spot; diversity's sets
        tour.tab("Vote")
        page.locator("#vote-next").click()
        tour.wait("#vote-caption", "Caption")
        assert "Left:" not in page.locator("#vote-left").inner_text()
        page.locator("#vote-answer-left").click()
        tour.wait("#vote-reveal", "You chose the left one")
        tour.wait("#vote-left", "Left: ")
        tour.check("vote")
        page.get_by_text("Make pairs on the spot").click()
        tour.fill("vote-prompts", "a red circle")
        page.locator("#vote-make").click()
        tour.wait("#vote-made", "Made 12 images")  # 4 seeds x 3 architectures, with Compare's settings
        page.locator("#vote-question").get_by_text("varies more").click()
        tour.wait("#vote-caption", "varies more")
        page.locator("#vote-answer-tie").click()
        tour.wait("#vote-reveal", "spread")
        tour.check("vote-diversity")

        # Results: every configuration's summary, the votes' scores, a gallery image back to Compare
        tour.tab("Results")
        tour.wait("#runs", "a green square")
        tour.wait("#vote-scores-note", "2 votes")
        tour.wait("#vote-wins", "vs")
        options = page.locator("#configuration input")
        options.click()
        labels = [o.inner_text().split("\n")[-1].strip() for o in page.locator("ul[role=listbox] li").all()]
        options.press("Escape")
        assert len(labels) >= 2, labels
        for label in labels:
            tour.choose("configuration", label)
            tour.wait("#summary-note", label.split(" · ")[0])
            page.locator(".vega-embed").first.scroll_into_view_if_needed()  # plots draw once in view
            time.sleep(1.5)
            tour.check("results-configuration")
        page.locator("#gallery .thumbnail-item").first.click()
        tour.wait("#row-details", "seed ")
        shown = page.locator("#selected-image textarea, #selected-image input").first.input_value()
        assert shown.startswith("images/") and str(results) not in shown  # never the server's own path
        page.locator("#send-to-compare").click()
        page.get_by_role("tab", name="Compare", selected=True).wait_for(timeout=30_000)
        tour.check("sent-to-compare")

        # PNG info: one of the app's PNGs dropped back in
        tour.tab("Results")
        page.get_by_text("PNG info: read the settings of a PNG this app wrote").click()
        png = next((results / "images" / "latent_diffusion").glob("*.png"))
        page.locator("#png-info-file input[type=file]").set_input_files(str(png))
        tour.wait("#png-info", "This log has 1 row")
        page.locator("#png-to-compare").click()
        page.get_by_role("tab", name="Compare", selected=True).wait_for(timeout=30_000)
        tour.check("png-info")

        tour.tab("Findings")
        tour.wait("#findings-verdicts", "inconclusive")
        tour.choose("findings-claim", "2. guidance keeps unCLIP diverse")
        tour.wait("#findings-section", "guidance")
        tour.check("findings")

        # a model switch and back; the examples follow the preset
        page.get_by_text("Models", exact=True).click()
        tour.choose("preset", "tiny")
        page.locator("#load-models").click()
        tour.wait("#status", "tiny loaded")
        tour.wait("#status", "untrained")
        tour.tab("Compare")
        tour.wait(".gradio-container", "Example prompts (tiny preset)")
        tour.check("tiny")
        tour.choose("preset", "lab")
        page.locator("#load-models").click()
        tour.wait("#status", "lab loaded")
        tour.check("back-to-lab")

        page.reload()
        tour.wait("#status", "lab loaded")
        time.sleep(3)  # whatever the page asks for on load has answered
        tour.check("reloaded")
    assert "Traceback" not in log.read_text()
