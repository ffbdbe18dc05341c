"""A public app (a Space, a host other than loopback, or --public) as strangers meet it, through gradio_client on
loopback with the public mode forced on: no visitor switches the models, reads another's rows, images or exports,
or learns a server path; heavy requests are rate-limited per visitor, sweeps capped at once, the results folder
capped in size; and the browser shows no picker and only the visitor's own gallery."""

from __future__ import annotations

import io
import time

import pytest
from gradio_client import Client
from PIL import Image
from test_app import ARCHS, FAST, FAST_ARGS, TEXTS

from comparisons.app.access import Access, Limits, RateLimiter, Visitors, without_paths
from comparisons.app.backends import Backends
from comparisons.app.compare import Compare
from comparisons.app.session import AppConfig, Session
from comparisons.exports import read_csv, read_parquet
from comparisons.records import parse_infotext
from comparisons.schema import VISITOR
from comparisons.settings import Settings
from comparisons.store import LOG_NAME

from helpers import browser_page, serving

PUBLIC = Access(public=True, limits=Limits(per_minute=2, background_sweeps=1, results_cap_gb=None))


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """The lab app served publicly on loopback: (session, url)."""
    session = Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("public"), access=PUBLIC))
    with serving(Backends.of(session)) as url:
        yield session, url


def _compare(client: Client, prompt: str, seed: str) -> list:
    return client.predict(prompt, *TEXTS, seed, *FAST_ARGS, api_name="/compare")


def _results(client: Client) -> tuple:
    table, *_ = client.predict("all", "", api_name="/results")
    exports = []
    for fmt in ("csv", "parquet"):
        try:
            exports.append(client.predict("all", "", api_name=f"/export_{fmt}"))
        except Exception as err:  # noqa: BLE001 - an empty table: nothing to export, said in words
            assert "the table is empty" in str(err)
            exports.append(None)
    return table, *exports


# ----------------------------------------------------------------------------- the rules, alone


def test_the_mode_follows_the_host_the_space_and_the_flags():
    assert not Access.of(None, {}).public and not Access.of("127.0.0.1", {}).public
    assert Access.of("0.0.0.0", {}).public and Access.of(None, {"SPACE_ID": "me/app"}).public
    assert Access.of(None, {"T2I_PUBLIC": "1"}).public and Access.of(None, {}, public=True).public
    both = Access.of(None, {"T2I_ALLOWED_MODELS": "a/b, c/d"}, allowed_models="e/f")
    assert both.allowed_models == {"a/b", "c/d", "e/f"}
    with pytest.raises(ValueError, match="not a hub id"):
        Access.of(None, {}, allowed_models="/etc")
    assert Access.of(None, {}).switching and not PUBLIC.switching and PUBLIC.per_visitor
    assert not Access(public=True, shared_results=True).per_visitor


def test_a_switch_is_checked_against_what_the_owner_allows():
    Access().check_switch("tiny", {"unclip": "/etc"}, None)  # loopback: the owner's own machine
    with pytest.raises(ValueError, match="fixed on this public app") as fixed:
        PUBLIC.check_switch("lab", {}, None)
    assert str(fixed.value).count(".") == 1  # one sentence
    allowing = Access(public=True, allow_switching=True, allowed_models=frozenset({"org/model"}))
    allowing.check_switch("tiny", {"unclip": "org/model", "latent_diffusion": ""}, None)
    for source in ("/etc", "/root", "lab/weights/unclip", "some-user/huge-repo"):
        with pytest.raises(ValueError, match="owner allows") as refused:
            allowing.check_switch("lab", {"unclip": source}, None)
        assert source not in str(refused.value)  # nothing echoed: no answer says what a path holds


def test_visitor_ids_are_keyed_and_never_the_session_itself():
    visitors = Visitors(b"k" * 32)
    a = visitors.id_of("session-a")
    assert a == visitors.id_of("session-a") != visitors.id_of("session-b") and len(a) == 16
    assert a != Visitors(b"j" * 32).id_of("session-a") and "session-a" not in a
    with pytest.raises(ValueError, match="no session"):
        visitors.id_of(None)


def test_the_rate_is_per_visitor_and_kind_over_a_sliding_minute():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.take("a", "walk", "Latent walks")
    limiter.take("a", "walk", "Latent walks")
    with pytest.raises(ValueError, match=r"Latent walks: 2 a minute per visitor .* try again in 60 s"):
        limiter.take("a", "walk", "Latent walks")
    limiter.take("b", "walk", "Latent walks")  # another visitor
    limiter.take("a", "sweep", "Sweeps")  # another kind
    now[0] = 60.5
    limiter.take("a", "walk", "Latent walks")  # the first has left the window


def test_errors_on_a_public_page_name_no_server_path():
    assert without_paths("/work/main/lab/weights/unclip is missing") == "a file is missing"
    said = without_paths("see https://huggingface.co/org/name and org/name; /etc/passwd: no")
    assert said == "see https://huggingface.co/org/name and org/name; a file: no"


def test_a_full_results_folder_refuses_new_images_and_writes_nothing(tmp_path):
    full = Access(public=True, limits=Limits(results_cap_gb=1e-9))  # one byte
    session = Session(AppConfig("lab", "cpu", tmp_path, access=full))
    (tmp_path / "something.bin").write_bytes(b"xx")
    with pytest.raises(ValueError, match="results folder is full"):
        Compare(session).run("a red circle", "1", Settings(**FAST), visitor="v")
    assert not (tmp_path / LOG_NAME).exists() and not (tmp_path / "images").exists()
    backends = Backends.of(session)
    with pytest.raises(ValueError, match="results folder is full"):
        backends.sweep.start("a red circle", "0", "2", "7.5", ["unclip"], Settings(**FAST), visitor="v")
    assert not (tmp_path / LOG_NAME).exists()


# ----------------------------------------------------------------------------- strangers through gradio_client


def test_a_visitors_switch_is_refused_and_changes_nothing(public):
    session, url = public
    client = Client(url, verbose=False)
    before = session.config
    for preset, sources in (("tiny", ["", "", ""]), ("lab", ["/etc", "/root", "some-user/huge-repo"])):
        with pytest.raises(Exception, match="fixed on this public app") as refused:
            client.predict(preset, "", *sources, api_name="/switch_models")
        assert "/etc" not in str(refused.value) and "/root" not in str(refused.value)
    with pytest.raises(Exception, match="fixed on this public app"):
        client.predict(api_name="/use_lab")
    assert session.config == before
    assert len(_compare(client, "a red circle", "5")) == 2 * len(ARCHS)  # the models still serve


def test_two_visitors_never_see_each_others_rows_images_or_exports(public):
    session, url = public
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    png = _compare(alice, "a green triangle", "21")[0]
    assert not parse_infotext(Image.open(png).info["parameters"])["Model"].startswith("/")
    _compare(bob, "a yellow cross", "22")
    for client, mine, theirs in (
        (alice, "a green triangle", "a yellow cross"),
        (bob, "a yellow cross", "a green triangle"),
    ):
        table, csv, parquet = _results(client)
        prompts = {row[table["headers"].index("prompt")] for row in table["data"]}
        assert mine in prompts and theirs not in prompts
        exported = read_csv(csv, neutralised=True)
        assert mine in set(exported["prompt"])
        assert theirs not in set(exported["prompt"]) and theirs not in set(read_parquet(parquet)["prompt"])
        assert not exported["image_path"].str.startswith("/").any()  # named inside the results folder
        assert not exported["model"].str.startswith("/").any()  # the lab's weights inside the project
        assert not any(str(cell).startswith("/") for line in table["data"] for cell in line)  # nor on the page
        assert exported[VISITOR].nunique() == 1  # one visitor's rows
    runs = session.runs()
    bobs = runs[runs["prompt"] == "a yellow cross"]["image_path"].iloc[0]
    with pytest.raises(Exception, match="no row") as refused:
        alice.predict(bobs, api_name="/gallery_row")  # another's image, even by its whole path
    assert str(session.results_dir) not in str(refused.value)
    ids = {
        prompt: runs[runs["prompt"] == prompt][VISITOR].unique().tolist()
        for prompt in ("a green triangle", "a yellow cross")
    }
    assert (
        len(ids["a green triangle"]) == len(ids["a yellow cross"]) == 1
        and ids["a green triangle"] != ids["a yellow cross"]
    )


def test_a_forged_session_gets_nothing(public):
    session, url = public
    owner = Client(url, verbose=False)
    _compare(owner, "a blue circle", "31")
    runs = session.runs()
    their_id = runs[runs["prompt"] == "a blue circle"][VISITOR].iloc[0]
    for forged in (their_id, "0" * 11, "../../etc"):
        client = Client(url, verbose=False)
        client.session_hash = forged  # a made-up session, or the id another visitor's rows carry
        table, csv, parquet = _results(client)
        assert table["data"] in ([], [[""] * len(table["headers"])]) or not any(
            "a blue circle" in str(row) for row in table["data"]
        )
        assert csv is None and parquet is None


def test_limits_answer_in_words_and_the_next_request_is_served(public):
    _, url = public
    client = Client(url, verbose=False)
    walk = ("a red circle", "a blue square", 2, "prompts", *TEXTS, "9", *FAST_ARGS)
    client.predict(*walk, api_name="/interpolate")
    client.predict(*walk, api_name="/interpolate")
    with pytest.raises(Exception, match="Latent walks: 2 a minute per visitor on this public app; try again in"):
        client.predict(*walk, api_name="/interpolate")
    assert len(_compare(client, "a red square", "41")) == 2 * len(ARCHS)  # other requests are served
    Client(url, verbose=False).predict(*walk, api_name="/interpolate")  # and other visitors' walks


def test_sweeps_running_at_once_are_capped_for_all_visitors(public):
    session, url = public
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    grid = ("a red circle\na blue square\na green cross", "0-9", "2", "7.5", list(ARCHS), "prompt", "seed")
    message, *_ = first.predict(*grid, api_name="/sweep")
    assert "running" in message
    with pytest.raises(Exception, match="running on this public app, its owner's limit at once"):
        second.predict(*grid, api_name="/sweep")
    status, *_ = second.predict("prompt", "seed", api_name="/sweep_progress")
    assert status == "no sweep yet"  # the first visitor's sweep is not the second's to see
    first.predict("prompt", "seed", api_name="/cancel_sweep")
    end = time.monotonic() + 120
    while any(hold() for hold in session._holds) and time.monotonic() < end:  # until the batch under way is in
        time.sleep(0.2)
    message, *_ = second.predict(*grid, api_name="/sweep")  # the cap counts running sweeps only
    assert "running" in message
    second.predict("prompt", "seed", api_name="/cancel_sweep")


def test_the_browser_shows_no_picker_and_only_the_visitors_own_gallery(public):
    session, url = public
    _compare(Client(url, verbose=False), "a white diamond", "51")  # another visitor's
    with browser_page(url) as page:
        mode = page.locator("#public-mode").inner_text()
        assert mode.startswith("Public app: you see only your own results") and "2 a minute each per visitor" in mode
        assert not page.locator("#models").is_visible()
        page.locator("#seed textarea, #seed input").first.fill("52")
        page.locator("#prompt textarea").fill("a white square")
        page.locator("#generate").click()
        page.locator("#stats-unclip", has_text="seed 52").wait_for(timeout=120_000)
        page.get_by_role("tab", name="Results").click()
        page.get_by_role("button", name="Refresh", exact=True).click()
        page.locator("#gallery img").first.wait_for(timeout=60_000)
        captions = page.locator("#gallery").inner_text()
        assert "white square" in captions and "white diamond" not in captions
        shot = page.screenshot(full_page=True)
    assert Image.open(io.BytesIO(shot)).size[0] > 0
