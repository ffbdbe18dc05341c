"""The agent tools over MCP (`python app.py --mcp`, comparisons.app.ui.tools): the lab app served on loopback with
gradio's MCP server, and an MCP client (the `mcp` package, streamable HTTP) that lists the tools with their
descriptions and typed inputs and calls them. A comparison's images reach the client as PNGs and its rows land in
the run log as the Compare tab's do; a sweep runs in the background and its status and the summary follow; bad
input is refused in words. Then --mcp and T2I_MCP reach the launch."""

from __future__ import annotations

import ast
import asyncio
import io
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from PIL import Image
from test_app import ARCHS, FAST, PROMPT

import app
from comparisons.app.backends import Backends
from comparisons.app.session import AppConfig, Session
from comparisons.app.tools import chosen, plain, settings_from
from comparisons.app.ui.tools import MCP_QUERY, TOOLS
from comparisons.settings import Settings
from comparisons.store import load_runs

from helpers import png_pixels, serving

MCP = "/gradio_api/mcp/"  # gradio's streamable HTTP transport (its SSE one is at /gradio_api/mcp/sse)
VALUES = {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]}  # a setting's, in the input schema


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The lab app on loopback with its MCP server: (session, the MCP URL offering the agent tools alone)."""
    session = Session(AppConfig("lab", "cpu", tmp_path_factory.mktemp("mcp")))
    with serving(Backends.of(session), mcp=True) as url:
        yield session, url + MCP + MCP_QUERY


def with_client(url: str, work: Callable[[ClientSession], Awaitable]):
    """`work` done by an MCP client session on `url`."""

    async def run():
        async with streamable_http_client(url) as (read, write, _):
            async with ClientSession(read, write) as client:
                await client.initialize()
                return await work(client)

    return asyncio.run(run())


def call(url: str, tool: str, **arguments) -> dict:
    """The tool's answer, a dict (gradio's MCP server sends a dict as Python's repr of it); its error as ValueError."""
    result = with_client(url, lambda client: client.call_tool(tool, arguments))
    text = " ".join(c.text for c in result.content if c.type == "text")
    if result.isError:
        raise ValueError(text)
    return ast.literal_eval(text)


def fetched_png(file: dict) -> Image.Image:
    """The image a tool's answer names, fetched by its URL as a client would, checked to be a PNG."""
    with urllib.request.urlopen(file["url"], timeout=30) as response:
        image = Image.open(io.BytesIO(response.read()))
    assert image.format == "PNG"
    return image


def test_the_tools_are_listed_with_their_descriptions_and_typed_inputs(served):
    _, url = served
    tools = {t.name: t for t in with_client(url, lambda client: client.list_tools()).tools}
    assert sorted(tools) == sorted(TOOLS)  # the query offers these alone
    compare, sweep = tools["compare"], tools["sweep"]
    assert compare.description.startswith("Make one image with each of the app's text-to-image architectures")
    assert '"clip_score" (0 to 100, higher is better)' in compare.description
    inputs, by_name = compare.inputSchema["properties"], {"type": "object", "additionalProperties": VALUES}
    assert compare.inputSchema["required"] == ["prompt"] and list(inputs) == ["prompt", "seed", "settings"]
    assert inputs["prompt"]["type"] == "string" and inputs["seed"]["type"] == "integer"
    assert inputs["settings"]["oneOf"] == [{"type": "null"}, by_name]
    assert "prior_steps=25 (unCLIP prior steps)" in inputs["settings"]["description"]  # the registry's defaults
    inputs = sweep.inputSchema["properties"]
    assert "among unclip, latent_diffusion, stable_unclip" in inputs["architectures"]["description"]
    assert inputs["seeds"] == {
        "type": "string",
        "description": 'seeds as a range, a list or both, e.g. "0-9", "1,5,7" or "0-3,10"',
        "default": "0-3",
    }
    assert tools["sweep_status"].inputSchema["properties"] == {}  # the request is gradio's, never an input
    assert "95% interval" in tools["results_summary"].description
    # without the query, the tabs' endpoints too: none of them takes a tool's name (gradio would rename ours)
    names = [t.name for t in with_client(url.removesuffix(MCP_QUERY), lambda client: client.list_tools()).tools]
    assert set(TOOLS) <= set(names) and not [n for n in names if n.rstrip("_0123456789") in TOOLS and n not in TOOLS]


def test_compare_gives_each_architectures_png_and_figures_and_logs_its_rows(served):
    session, url = served
    answer = call(url, "compare", prompt=PROMPT, seed=2027, settings=FAST)
    assert (answer["prompt"], answer["seed"], answer["notices"]) == (PROMPT, 2027, [])
    assert tuple(answer["architectures"]) == ARCHS
    runs = load_runs(session.results_dir)
    mine = runs[(runs["prompt"] == PROMPT) & (runs["seed"] == 2027)]
    assert tuple(mine["architecture"]) == ARCHS and set(mine["run_id"]) == {answer["run_id"]}
    for (arch, made), (_, row) in zip(answer["architectures"].items(), mine.iterrows()):
        assert made["architecture"] == row["architecture"] == arch
        image = fetched_png(made["image"])
        assert image.size == (made["width_px"], made["height_px"]) == (row["width"], row["height"]) == (32, 32)
        assert np.array_equal(np.asarray(image.convert("RGB")), png_pixels(row["image_path"]))  # the logged image
        assert session.results_dir / made["image_name"] == Path(row["image_path"])
        assert made["seconds_total"] == pytest.approx(row["seconds_total"]) and made["seconds_total"] > 0
        assert 0 <= made["clip_score"] <= 100 and made["peak_memory_mb"] > 0
        assert made["stats"].startswith("seed 2027 · ") and made["checker"].startswith("checker: ")
    assert answer["architectures"]["latent_diffusion"]["settings"] == {
        "steps": 2,
        "guidance": 7.5,
        "negative_prompt": None,
    }
    assert "seconds_unet" in answer["architectures"]["latent_diffusion"] and "image_path" not in str(answer)


def test_a_sweep_runs_in_the_background_then_its_status_and_the_summary_follow(served):
    session, url = served
    started = call(
        url, "sweep", prompts="a blue square", seeds="5", steps="2", architectures=["latent_diffusion"], settings=FAST
    )
    assert started["images_total"] == 1 and started["message"].startswith(f"sweep {started['run_id']}: ")
    deadline = time.monotonic() + 30
    status = started
    while status["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
        status = call(url, "sweep_status")
    assert (status["run_id"], status["running"], status["images_done"], status["error"]) == (
        started["run_id"],
        False,
        1,
        None,
    )
    assert fetched_png(status["grid"]).width > 0 and "1/1 images made" in status["grid_note"]
    runs = load_runs(session.results_dir)
    assert list(runs[runs["run_id"] == started["run_id"]]["prompt"]) == ["a blue square"]
    newest = call(url, "results_summary")
    assert newest["configuration"] == newest["configurations"][0] and newest["table"]
    for label in newest["configurations"]:
        summary = call(url, "results_summary", configuration=label)
        assert summary["configuration"] == label and summary["note"].startswith(label)
    paired = call(url, "results_summary", prompt_contains="RED CIRCLE")  # the compare's: every architecture, paired
    assert paired["paired"] and {"measure", "better", "pairs"} <= set(paired["table"][0])
    with pytest.raises(ValueError, match="no configuration “a made-up one” in the run log; choose one of: "):
        call(url, "results_summary", configuration="a made-up one")


@pytest.mark.parametrize(
    "arguments, error",
    [
        (dict(prompt=" "), "the prompt is empty"),
        (dict(prompt=PROMPT, seed=-2), "Seed: “-2” is out of range"),
        (dict(prompt=PROMPT, settings={"steps": 1.5}), "Latent diffusion steps must be a whole number of steps"),
        (dict(prompt=PROMPT, settings={"stepz": 2}), "unknown settings: stepz"),
        (dict(prompt=PROMPT, settings=[2]), "Input validation error"),  # the MCP server checks the input schema
    ],
)
def test_bad_input_is_refused_in_words_and_logs_nothing(served, arguments, error):
    session, url = served
    before = len(session.runs())
    with pytest.raises(ValueError, match=error):
        call(url, "compare", **arguments)
    assert len(session.runs()) == before


def test_what_the_endpoints_take_besides_the_schema_is_refused_in_words():
    """gradio_client callers reach the tools' endpoints without the MCP server's schema check."""
    assert settings_from(None) == Settings() and settings_from({"steps": 3.0}) == Settings(steps=3)
    with pytest.raises(ValueError, match="settings must be an object of setting names and values, got “\\[2\\]”"):
        settings_from([2])
    with pytest.raises(ValueError, match="the configuration must be text, got “3”"):
        chosen([], 3)
    assert chosen([], "") is None and plain({"a": [np.float64("nan"), np.int64(2)]}) == {"a": [None, 2]}


def test_mcp_flag_and_environment_variable_reach_the_launch(monkeypatch, tmp_path):
    assert not app.parse_args([], environ={}).mcp and app.parse_args(["--mcp"], environ={}).mcp
    assert app.parse_args([], environ={"T2I_MCP": "1"}).mcp and not app.parse_args([], environ={"T2I_MCP": "0"}).mcp
    assert app.launch_options(None, 7860, {}, mcp=True)["mcp_server"] is True
    assert app.launch_options(None, 7860, {"SPACE_ID": "me/app"}, mcp=True)["mcp_server"] is True
    assert "mcp_server" not in app.launch_options(None, 7860, {})  # not named: gradio reads GRADIO_MCP_SERVER
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda demo, **options: launched.update(options))
    monkeypatch.setattr(Session, "start_loading", lambda session: None)  # the launch is what this checks
    for name in ("T2I_MCP", "SPACE_ID", "SPACES_ZERO_GPU", "T2I_HOST"):
        monkeypatch.delenv(name, raising=False)
    app.main(["--mcp", "--results", str(tmp_path)])
    assert launched["mcp_server"] is True and launched["server_name"] == "127.0.0.1"
    monkeypatch.setenv("T2I_MCP", "1")
    launched.clear()
    app.main(["--results", str(tmp_path)])
    assert launched["mcp_server"] is True
