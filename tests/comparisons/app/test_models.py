"""Any models from the app: flags and environment variables, switching without a restart, every row and the
status line naming the models, and a preset that cannot load saying why in one sentence with the lab one click away."""

import threading
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

import app
from comparisons.app.backends import Backends
from comparisons.app.compare import Compare
from comparisons.app.session import AppConfig, DeviceLock, Session
from comparisons.presets import LAB_WEIGHTS, get_preset, load_problem
from comparisons.settings import Settings

from helpers import browser_page, check_results_folder, free_port

FAST = Settings(
    prior_steps=2, decoder_steps=2, super_res_steps=2, steps=2, stable_unclip_prior_steps=2, stable_unclip_steps=2
)
PROMPT = "a red circle above a blue square"
KARLO = "kakaobrain/karlo-v1-alpha"
ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts"


def settle(session: Session, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not session.settled:
        assert time.monotonic() < end, session.status()
        time.sleep(0.05)


def one_sentence(text: str) -> bool:
    return len(text) <= 200 and text.count(". ") <= 1 and "\n" not in text and "Traceback" not in text


def test_flags_and_environment_variables_pick_the_models_and_the_judge(tmp_path):
    args = app.parse_args(["--latent-diffusion", "org/fine-tuned-sd", "--judge", "ViT-H-14"], environ={})
    config = app.config_from(args, {})
    assert config.models == {"latent_diffusion": "org/fine-tuned-sd"} and config.judge == "ViT-H-14"
    assert config.sources == {
        "unclip": str(LAB_WEIGHTS / "unclip"),
        "latent_diffusion": "org/fine-tuned-sd",
        "stable_unclip": str(LAB_WEIGHTS / "stable_unclip"),
    }
    args = app.parse_args(["--stable-unclip", "none"], environ={"T2I_LATENT_DIFFUSION": "org/sd"})
    assert list(app.config_from(args, {}).sources) == ["unclip", "latent_diffusion"]  # left out
    environ = {"T2I_STABLE_UNCLIP": "none"}
    assert "stable_unclip" not in app.config_from(app.parse_args([], environ=environ), environ).sources
    environ = {"T2I_PRESET": "pretrained", "T2I_UNCLIP": "/models/karlo", "T2I_JUDGE": "tiny", "SPACES_ZERO_GPU": "1"}
    config = app.config_from(app.parse_args([], environ=environ), environ)
    assert (config.preset, config.models, config.judge, config.zero_gpu) == (
        "pretrained",
        {"unclip": "/models/karlo"},
        "tiny",
        True,
    )
    with pytest.raises(SystemExit):
        app.parse_args(["--judge", "ViT-Q-99"], environ={})
    with pytest.raises(ValueError, match="unknown judge"):
        Session(AppConfig("lab", "cpu", tmp_path, judge="ViT-Q-99"))


def test_any_models_are_named_by_the_status_line_and_every_row(tmp_path):
    tiny_ld = str(Path(get_preset("tiny").models["latent_diffusion"]))
    # the lab's Stable unCLIP reads the lab LD's CLIP and VAE, so it is left out beside the tiny one
    models = {"latent_diffusion": tiny_ld, "stable_unclip": "none"}
    session = Session(AppConfig("lab", "cpu", tmp_path, models=models, judge="tiny"))
    rows, _ = Compare(session).run(PROMPT, "3", FAST)
    assert rows["latent_diffusion"]["model"] == tiny_ld and rows["unclip"]["model"] == str(LAB_WEIGHTS / "unclip")
    status = session.status()
    shown = str(Path(tiny_ld).relative_to(LAB_WEIGHTS.parent.parent))  # the project's own folders, relative
    assert "custom models" in status and f"LD `{shown}`" in status and "unCLIP `lab/weights/unclip`" in status
    assert "judge `tiny`" in status
    # the Shapes lab's checker reads the lab's models only: another model's image gets no verdict
    assert not any(k.startswith("check_") and v is not None for k, v in rows["latent_diffusion"].items())
    check_results_folder(tmp_path, expected_rows=2)


def test_switching_models_needs_no_restart(tmp_path):
    session = Session(AppConfig("lab", "cpu", tmp_path))
    compare = Compare(session)
    first, _ = compare.run(PROMPT, "1", FAST)
    assert "**tiny**" in session.switch("tiny")
    settle(session)
    assert session.status().startswith("**tiny** loaded on cpu")
    second, _ = compare.run(PROMPT, "1", FAST)
    assert session.switch("lab", {"unclip": "", "latent_diffusion": "  "}, judge="")  # blanks: the preset's own
    settle(session)
    third, _ = compare.run(PROMPT, "1", FAST)
    tiny = get_preset("tiny").models
    for rows, models in ((first, get_preset("lab").models), (second, tiny), (third, get_preset("lab").models)):
        assert {a: r["model"] for a, r in rows.items()} == models
    assert first["unclip"]["model_hash"] == third["unclip"]["model_hash"] != second["unclip"]["model_hash"]
    df = session.runs()
    assert len(df) == 9 and df.groupby("model").size().to_dict() == {
        str(LAB_WEIGHTS / "unclip"): 2,
        str(LAB_WEIGHTS / "latent_diffusion"): 2,
        str(LAB_WEIGHTS / "stable_unclip"): 2,
        tiny["unclip"]: 1,
        tiny["latent_diffusion"]: 1,
        tiny["stable_unclip"]: 1,
    }
    check_results_folder(tmp_path, expected_rows=9)


def test_a_switch_that_cannot_be_done_is_refused_and_changes_nothing(tmp_path):
    session = Session(AppConfig("lab", "cpu", tmp_path))
    session.harness()
    for args, message in [
        (("nope",), "Preset: “nope” is not one; choose lab, pretrained, tiny"),
        (("lab", {"dalle3": "org/x"}), "unknown architecture"),
        (("lab", None, "ViT-Q-99"), "unknown judge"),
        # the page was built with three columns: one left out needs a restart, and the message says how
        (("lab", {"stable_unclip": "none"}), r"the page shows unCLIP, LD, Stable unCLIP: .* \(--stable-unclip none"),
    ]:
        with pytest.raises(ValueError, match=message):
            session.switch(*args)
    assert session.config.preset == "lab" and session.status().startswith("**lab** loaded")
    session._loading.acquire()  # a load in progress
    try:
        with pytest.raises(ValueError, match="models are loading"):
            session.switch("tiny")
    finally:
        session._loading.release()


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No hub and an empty hub cache, as on this machine without HF_HUB_OFFLINE's warm cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_a_preset_that_cannot_load_says_why_in_one_sentence_and_the_lab_is_one_click_away(offline_hub, tmp_path):
    session = Session(AppConfig("pretrained", "cpu", tmp_path / "results"))
    session.start_loading()
    settle(session)
    status = session.status()
    assert session.load_failed and KARLO in status and "offline" in status and "lab preset" in status
    assert one_sentence(status.split(" could not load: ")[1]), status
    with pytest.raises(ValueError) as err:
        Compare(session).run(PROMPT, "0", FAST)  # every button says the same short sentence
    assert KARLO in str(err.value) and "offline" in str(err.value) and len(str(err.value)) < 200
    session.switch("lab")  # the app's "Switch to the lab preset" button
    settle(session)
    rows, _ = Compare(session).run(PROMPT, "0", FAST)
    assert not session.load_failed and rows["unclip"]["model"] == str(LAB_WEIGHTS / "unclip")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_pretrained_preset_says_so(tmp_path):
    session = Session(AppConfig("pretrained", "auto", tmp_path))
    with pytest.raises(ValueError, match="needs a GPU and this machine has none") as err:
        session.harness()
    assert one_sentence(str(err.value)) and session.load_failed


def test_load_problem_is_one_sentence_for_any_error():
    assert load_problem(ValueError("x" * 1000)).endswith("…") and len(load_problem(ValueError("x" * 1000))) == 158
    assert load_problem(ValueError("short and clear")) == "short and clear"


def test_in_the_browser_a_failed_preset_is_one_click_from_the_lab_and_the_picker_switches_models(
    offline_hub, tmp_path
):
    session = Session(AppConfig("pretrained", "cpu", tmp_path))
    session.start_loading()
    tabs = Backends.of(session)
    demo = app.build_app(tabs)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        **app.launch_options(None, free_port(), {}),
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(tmp_path)],
    )
    try:
        with browser_page(url) as page:
            page.locator("#status", has_text="could not load").wait_for(timeout=60_000)
            status = page.locator("#status").inner_text()
            assert KARLO in status and "offline" in status and len(status) < 250, status
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app-load-failed.png"))
            page.locator("#use-lab").click()  # the one click
            page.locator("#status", has_text="lab loaded on cpu").wait_for(timeout=60_000)
            assert not page.locator("#use-lab").is_visible()

            page.get_by_text("Models", exact=True).click()
            page.locator("#preset input").click()
            page.get_by_role("option", name="tiny").click()
            page.locator("#load-models").click()
            page.locator("#status", has_text="tiny loaded on cpu").wait_for(timeout=60_000)
            page.get_by_text("Advanced: steps and guidance per stage").click()
            for label in (
                "unCLIP prior steps",
                "unCLIP decoder steps",
                "unCLIP super-res steps",
                "Latent diffusion steps",
                "Stable unCLIP prior steps",
                "Stable unCLIP steps",
            ):
                page.get_by_label(label, exact=True).fill("2")
            page.locator("#generate").click()
            for arch in ("unclip", "latent_diffusion", "stable_unclip"):
                page.locator(f"#stats-{arch}", has_text="seed 0").wait_for(timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "app-switched-to-tiny.png"), full_page=True)
            rows = session.runs()

            # a switch refused (a sweep is running): a popup says why, and the picker stays usable, no error badge
            tabs.sweep.start("a red circle", "0-999", "2", "4", ["unclip", "latent_diffusion"], FAST)
            page.locator("#load-models").click()
            page.locator(".toast-body", has_text="a sweep is running").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "app-switch-refused.png"), full_page=True)
            assert page.locator("#preset input").is_visible()
            assert page.locator("#models [data-testid='status-tracker']:not(.hide) .error").count() == 0
            assert page.locator("#status [data-testid='status-tracker']:not(.hide) .error").count() == 0
            tabs.sweep.cancel()
            tabs.sweep.wait(120)
        assert len(rows) == 3 and set(rows["model"]) == set(get_preset("tiny").models.values())
        check_results_folder(tmp_path)
    finally:
        demo.close()


def test_a_request_waiting_for_the_device_goes_before_a_sweeps_next_batch():
    """The device lock: a sweep's batch waits while a request waits, and for a moment after its turn."""
    lock, order = DeviceLock(), []
    lock.GRACE = 0.2
    with lock:  # a request holds the device; a sweep's batch and then another request come to wait
        batch = threading.Thread(target=lambda: _turn(lock.background(), "batch", order))
        batch.start()
        time.sleep(0.05)
        request = threading.Thread(target=lambda: _turn(lock, "request", order))
        request.start()
        time.sleep(0.05)
    batch.join(5)
    request.join(5)
    assert order == ["request", "batch"]
    with lock:
        pass
    started = time.monotonic()
    with lock.background():
        assert time.monotonic() - started >= 0.15  # right after a request: the grace


def _turn(context, name: str, order: list[str]) -> None:
    with context:
        order.append(name)
