"""What the tests share besides fixtures: tiny step counts, diffusers oracles and image checks, the checks of a
results folder (open what was written, not only count it), a tiny lab config and a dummy architecture."""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import pickle
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.deprecated.unclip import UnCLIPImageVariationPipeline, UnCLIPPipeline
from PIL import Image

import app
from comparisons.audit import audit, compare_png, regenerate_rows
from comparisons.grid import AXES, PLACEHOLDER, GridSpec, axis_frame, layout_for, read_parameters
from comparisons.regeneration import CLOSE, CLOSE_BOUND, EXACT, Regenerated, difference, regenerate, remake
from comparisons.sources import SOURCES, read_source
from comparisons.store import RunLog
from lab.models import (
    ClipConfig,
    DecoderConfig,
    JudgeConfig,
    LabConfig,
    LdUnetConfig,
    PriorConfig,
    SuperResConfig,
    VaeConfig,
)
from lab.stable_unclip import StableUnclipConfig
from lab.trainer import TrainConfig
from pipelines.base import Pipeline
from pipelines.checks import check_prompts, check_steps
from pipelines.outputs import StepState
from pipelines.registry import Architecture
from pipelines.settings import PipelineSettings, guidance, steps
from pipelines.tokenizer import offline_clip_tokenizer


def png_pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- tiny calls and their oracles

SEED = 0  # seed of the tiny components' weights


PARITY_ATOL = 1e-4  # max abs pixel difference (images in [0, 1]) we accept against diffusers


# Two steps per stage keeps a tiny call well under a second on a CPU.
UNCLIP_STEPS = dict(prior_num_inference_steps=2, decoder_num_inference_steps=2, super_res_num_inference_steps=2)


VARIATION_STEPS = dict(decoder_num_inference_steps=2, super_res_num_inference_steps=2)


LD_STEPS = dict(num_inference_steps=2)


# What UnCLIPImageVariationPipeline.__init__ takes: no prior.
VARIATION_COMPONENTS = (
    "decoder",
    "text_encoder",
    "tokenizer",
    "text_proj",
    "feature_extractor",
    "image_encoder",
    "super_res_first",
    "super_res_last",
    "decoder_scheduler",
    "super_res_scheduler",
)


def oracle_generators(seeds: list[int]) -> list[torch.Generator]:
    """The generators diffusers needs to reproduce an output of ours: one CPU generator per image."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def assert_images_close(ours: np.ndarray, reference: np.ndarray, atol: float = PARITY_ATOL) -> None:
    diff = max_abs_diff(ours, reference)
    assert diff <= atol, f"max abs pixel difference {diff:.3g} exceeds {atol:g}"


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def unclip_oracle(pipe) -> UnCLIPPipeline:
    return _quiet(UnCLIPPipeline(**pipe.components()))


def variations_oracle(pipe) -> UnCLIPImageVariationPipeline:
    components = pipe.components()
    return _quiet(UnCLIPImageVariationPipeline(**{name: components[name] for name in VARIATION_COMPONENTS}))


def sd_oracle(pipe, cls=StableDiffusionPipeline):
    """diffusers' SD pipeline (or its img2img) over our components, without a safety checker."""
    return _quiet(cls(**pipe.components(), safety_checker=None, feature_extractor=None, requires_safety_checker=False))


def random_image(size: int, seed: int) -> Image.Image:
    """A seeded RGB noise image: structureless, so any misuse of it changes the output."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ----------------------------------------------------------------------------- results folders


def check_results_folder(directory: Path, pipes: dict | None = None, expected_rows: int | None = None) -> list[dict]:
    """Every row has its own PNG, each PNG's infotext and size equal its row, every source image taken in is kept
    once under its hash (which its pixels have), the audit finds nothing, and (given `pipes`, architecture ->
    pipeline) every row keeps the promises of comparisons.regeneration (`check_regeneration`)."""
    rows = RunLog(directory).read_records()
    if expected_rows is not None:
        assert len(rows) == expected_rows, f"{len(rows)} rows, expected {expected_rows}"
    paths = [Path(r["image_path"]) for r in rows]
    assert len(set(paths)) == len(rows), f"{len(rows)} rows share {len(set(paths))} image files"
    sources_dir = directory / "images" / SOURCES
    on_disk = sorted(p for p in (directory / "images").rglob("*.png") if p.parent != sources_dir)
    assert sorted(p.resolve() for p in paths) == [p.resolve() for p in on_disk], (
        "images on disk are not the rows' images"
    )
    kept = {Path(r["source_image"]).resolve(): r["source_hash"] for r in rows if r.get("source_hash")}
    assert sorted(kept) == sorted(p.resolve() for p in sources_dir.glob("*")), "sources on disk are not the rows'"
    for path, sha in kept.items():
        assert path.name == f"{sha}.png" and read_source(path).sha256 == sha, f"{path.name} does not hold its hash"
    for row, path in zip(rows, paths):
        assert compare_png(path, row) == (None, None), f"{path.name} disagrees with its row"
    report = audit(directory)
    assert report.clean, [f"{p.kind}: {p.detail}" for p in report.problems]
    if pipes is not None:
        check_regeneration(directory, pipes)
    return rows


def check_regeneration(directory: Path, pipes: dict) -> None:
    """Every row of the folder made again in its batch, the way it was made, gives its PNG's pixels exactly; made
    again alone, within the close bound (what regeneration promises, comparisons.regeneration); and another seed's
    image lies beyond that bound, so the check cannot pass blind."""
    report = audit(directory)
    for line, result in regenerate_rows(report, pipes):
        assert isinstance(result, Regenerated), f"row {line}: {result}"
        assert result.case == EXACT and result.difference.max_levels == 0, f"row {line} made again: {result}"
        alone = regenerate(pipes[report.records[line - 1]["architecture"]], result.path)
        assert alone.case == (EXACT if report.records[line - 1]["batch_size"] == 1 else CLOSE), str(alone)
        assert alone.holds, f"row {line} made again alone: {alone}"
    row = report.records[0]
    other = remake(pipes[row["architecture"]], row["image_path"], seed=row["seed"] + 1)
    far = difference(np.asarray(other), png_pixels(row["image_path"]))
    assert not CLOSE_BOUND.admits(far), f"another seed is {far} from the image: the check is blind"


def check_grid_png(path: str | Path, rows: pd.DataFrame) -> dict:
    """The grid PNG at `path` carries its parameters, each of `rows` (the sweep's, as logged) is in its cell pixel for
    pixel (enlarged by a whole factor, NEAREST), and every other cell is an empty placeholder; returns the parameters.
    """
    parameters = read_parameters(path)
    spec = GridSpec.from_parameters(parameters)
    images = {p: png_pixels(p) for p in rows["image_path"]}
    layout = layout_for(spec, max((max(im.shape[:2]) for im in images.values()), default=None))[0]
    pixels = png_pixels(path)
    assert pixels.shape[:2] == layout.size[::-1], "the picture is not the size of its rows × columns of cells"
    columns = list(itertools.product(*(spec.values(a) for a in spec.column_axes)))
    filled = {}
    for point in axis_frame(rows).itertuples(index=False):
        value = dict(zip(AXES, (point.prompt, point.seed, point.steps, point.guidance)))
        r = spec.values(spec.rows).index(value[spec.rows])
        c = columns.index(tuple(value[a] for a in spec.column_axes))
        filled[(r, c, spec.architectures.index(point.architecture))] = images[point.image_path]
    for r, c, a in itertools.product(range(layout.n_rows), range(layout.n_columns), range(layout.n_architectures)):
        left, top, right, bottom = layout.box(r, c, a)
        cell = pixels[top:bottom, left:right]
        if (r, c, a) in filled:
            made = filled[(r, c, a)]
            factor = layout.tile // made.shape[0]
            assert np.array_equal(cell, made.repeat(factor, 0).repeat(factor, 1)), f"cell {(r, c, a)} is not its row"
        else:
            assert (cell == PLACEHOLDER).all(), f"cell {(r, c, a)} has no row but is not a placeholder"
    return parameters


# ----------------------------------------------------------------------------- serving the app


CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make test`; never a downloaded browser
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def browser_page(url: str):
    """A chromium page on the app at `url`, once its Generate button is there."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium with apt-get")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(backends, **launch):
    """The app of these backends on a free loopback port, queued as app.main queues it, serving the results folder
    (`launch`: more of launch_options', e.g. mcp=True): its URL, without a trailing slash."""
    demo = app.build_app(backends)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(
        **app.launch_options(None, free_port(), {}, **launch),
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(backends.session.results_dir)],
    )
    try:
        yield url.rstrip("/")
    finally:
        demo.close()


def wait_until_serving(process: subprocess.Popen, url: str, log: Path, seconds: float = 180) -> None:
    """Until `python app.py` (`process`, writing `log`) answers at `url`; fails with its log if it exits first."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"the app exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the app did not answer within {seconds:g} s"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)


# ----------------------------------------------------------------------------- ZeroGPU, as the spaces package runs it


@dataclass
class GPUCall:
    name: str
    duration: int  # the seconds it asked for
    pid: int  # the process it ran in


def _files(folder: Path | None) -> dict[str, tuple[int, int]]:
    if folder is None or not folder.exists():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def forked_gpu(calls: list[GPUCall], writes_nothing_in: Path | None = None):
    """A stand-in for `spaces.GPU` as ZeroGPU runs it (spaces/zero/wrappers.py): each call in a process forked from
    the caller, its arguments and result pickled across, so what it changes in memory stays in the child. (ZeroGPU
    keeps a worker between calls; forking afresh each time is stricter.) Records each call in `calls`; with
    `writes_nothing_in`, fails a call that wrote there (the serving process alone writes PNGs and the log)."""

    def gpu(fn: Callable, duration: Callable[..., int]) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            asked = duration(*args, **kwargs)
            payload = pickle.dumps((args, kwargs))  # ZeroGPU pickles them into its worker's queue
            ctx = multiprocessing.get_context("fork")
            receive, send = ctx.Pipe(duplex=False)
            before = _files(writes_nothing_in)
            child = ctx.Process(target=_gpu_child, args=(fn, payload, send), daemon=True)
            child.start()
            send.close()
            pid, ok, result = pickle.loads(receive.recv_bytes())
            child.join()
            calls.append(GPUCall(fn.__name__, asked, pid))
            assert _files(writes_nothing_in) == before, f"{fn.__name__} wrote files in its GPU worker"
            if not ok:
                raise result
            return result

        return run

    return gpu


def _gpu_child(fn: Callable, payload: bytes, send) -> None:
    try:
        args, kwargs = pickle.loads(payload)
        try:
            reply = (os.getpid(), True, fn(*args, **kwargs))
        except Exception as err:
            reply = (os.getpid(), False, err)
        try:
            data = pickle.dumps(reply)
        except Exception as err:  # ZeroGPU fails such a call too: what a GPU function returns must pickle
            data = pickle.dumps((os.getpid(), False, RuntimeError(f"the result does not pickle: {err}")))
        send.send_bytes(data)
    finally:
        os._exit(0)  # no atexit, no pytest teardown in the child


# ----------------------------------------------------------------------------- a dummy architecture


@dataclass(frozen=True)
class PainterSettings(PipelineSettings):
    """The painter's knobs: the dummy's own settings dataclass, as a real architecture's beside its pipeline."""

    coats: int = steps(3, "num_coats", "Painter coats", "Coats", "paint")  # how often it paints (a loop's steps)
    brightness: float = guidance(0.5, "brightness", "Painter brightness", "Brightness")  # how bright the colour is


class Painter(Pipeline):
    """An architecture that paints each image one flat colour drawn from its seed, brighter with `brightness`."""

    component_names = ("painter", "tokenizer")
    pipeline_class_name = "PainterPipeline"

    def __init__(self) -> None:
        self.painter, self.tokenizer = torch.nn.Linear(1, 3), offline_clip_tokenizer()
        self._inference_only()

    @torch.inference_mode()
    def __call__(
        self,
        prompt,
        *,
        num_coats: int = PainterSettings.coats,
        brightness: float = PainterSettings.brightness,
        seed=None,
        generator=None,
        callback=None,
    ):
        prompts = check_prompts(prompt)
        coats = check_steps(num_coats, "num_coats")
        run = self._begin(len(prompts), seed, generator)
        with run.stage("paint"):
            gens = run.generator if isinstance(run.generator, list) else [run.generator] * len(prompts)
            colours = torch.stack([torch.rand(3, generator=g) for g in gens]) * brightness  # (B, 3)
            image = (colours[:, :, None, None] * 2 - 1).expand(-1, -1, 16, 16)
            for i in range(coats):
                if callback is not None:
                    callback(StepState("paint", i, coats, coats - i, image, image))
        return self._output(image, run, prompts)


def load_painter(path_or_hub_id, *, device="cpu", dtype=torch.float32, progress=None) -> Painter:
    return Painter()


# one pipeline file's worth (above) and one registry row: all a new architecture takes
PAINTER = Architecture(
    name="painter",
    label="Painter (a dummy)",
    short="Painter",
    pipeline=Painter,
    settings_class=PainterSettings,
    load=load_painter,
    stages=("paint",),
    sweep_steps=("coats",),
    sweep_guidance=("brightness",),
)


# ----------------------------------------------------------------------------- a tiny lab


def tiny_train(**overrides) -> TrainConfig:
    return TrainConfig(
        **{
            "steps": 2,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup_steps": 1,
            "log_every": 1,
            "checkpoint_every": 1,
            "ema_decay": 0.9,
            **overrides,
        }
    )


TINY = LabConfig(
    clip=ClipConfig(
        width=32,
        text_layers=1,
        text_heads=2,
        vision_width=32,
        vision_layers=1,
        vision_heads=2,
        train=tiny_train(ema_decay=None),
    ),
    judge=JudgeConfig(
        embed_dim=16,
        text_width=16,
        text_layers=1,
        text_heads=2,
        vision_width=32,
        vision_layers=1,
        vision_head_width=16,
        train=tiny_train(ema_decay=None, seed=1),
    ),
    vae=VaeConfig(block_out_channels=(8, 16), scaling_samples=8, train=tiny_train(ema_decay=None)),
    ld_unet=LdUnetConfig(block_out_channels=(32, 32), heads=2, train=tiny_train()),
    prior=PriorConfig(layers=1, heads=2, head_dim=8, stats_samples=8, train=tiny_train()),
    decoder=DecoderConfig(block_out_channels=(32, 32), head_dim=16, cross_attention_dim=32, train=tiny_train()),
    super_res=SuperResConfig(block_out_channels=(32, 32), train=tiny_train()),
    stable_unclip=StableUnclipConfig(block_out_channels=(32, 32), heads=2, train=tiny_train()),
)
