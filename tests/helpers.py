"""Checks shared by the tests that write results folders: open what was written, not only count it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comparisons.audit import audit, compare_png
from comparisons.records import settings_from_png
from comparisons.store import RunLog
from pipelines.base import Pipeline
from pipelines.checks import check_prompts, check_steps
from pipelines.outputs import StepState
from pipelines.registry import Architecture, guidance, steps
from pipelines.tokenizer import offline_clip_tokenizer


def png_pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# A row made in a batch and regenerated alone differs by float32 rounding of the batch's composition: at most
# one level in about 1e-5 to 1e-4 of the pixel values (measured on 48 rows each of the tiny and lab presets).
# Another prompt or seed differs in most of them.
REGENERATION_LEVELS, REGENERATION_FRACTION = 1, 1e-3


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float32 rounding of batching (REGENERATION_*)."""
    diff = np.abs(a.astype(int) - b.astype(int))
    return a.shape == b.shape and diff.max() <= REGENERATION_LEVELS and (diff > 0).mean() < REGENERATION_FRACTION


def check_results_folder(directory: Path, pipes: dict | None = None, expected_rows: int | None = None) -> list[dict]:
    """Every row has its own PNG, each PNG's infotext and size equal its row, the audit finds nothing, and
    (given `pipes`, architecture -> pipeline) each row regenerated alone from its PNG gives the same pixels
    (`same_pixels`), which another seed does not."""
    rows = RunLog(directory).read_records()
    if expected_rows is not None:
        assert len(rows) == expected_rows, f"{len(rows)} rows, expected {expected_rows}"
    paths = [Path(r["image_path"]) for r in rows]
    assert len(set(paths)) == len(rows), f"{len(rows)} rows share {len(set(paths))} image files"
    on_disk = sorted((directory / "images").rglob("*.png"))
    assert sorted(p.resolve() for p in paths) == [p.resolve() for p in on_disk], (
        "images on disk are not the rows' images"
    )
    for row, path in zip(rows, paths):
        assert compare_png(path, row) == (None, None), f"{path.name} disagrees with its row"
    report = audit(directory)
    assert report.clean, [f"{p.kind}: {p.detail}" for p in report.problems]
    if pipes is not None:
        for row, path in zip(rows, paths):
            architecture, prompt, seed, settings = settings_from_png(path)
            again = pipes[architecture]([prompt], seed=[seed], **settings.pipeline_kwargs(architecture)).pil_images()[
                0
            ]
            assert same_pixels(np.asarray(again), png_pixels(path)), f"{path.name} does not regenerate"
        row, path = rows[0], paths[0]
        architecture, prompt, seed, settings = settings_from_png(path)
        other = pipes[architecture]([prompt], seed=[seed + 1], **settings.pipeline_kwargs(architecture)).pil_images()[
            0
        ]
        assert not same_pixels(np.asarray(other), png_pixels(path)), (
            "another seed gives the same image: the check is blind"
        )
    return rows


# ----------------------------------------------------------------------------- a dummy architecture


class Painter(Pipeline):
    """An architecture that paints each image one flat colour drawn from its seed, brighter with `brightness`."""

    component_names = ("painter", "tokenizer")
    pipeline_class_name = "PainterPipeline"

    def __init__(self) -> None:
        self.painter, self.tokenizer = torch.nn.Linear(1, 3), offline_clip_tokenizer()
        self._inference_only()

    @torch.inference_mode()
    def __call__(
        self, prompt, *, num_coats: int = 3, brightness: float = 0.5, seed=None, generator=None, callback=None
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


PAINTER = Architecture(
    name="painter",
    label="Painter (a dummy)",
    short="Painter",
    pipeline=Painter,
    load=load_painter,
    stages=("paint",),
    settings=(
        steps(Painter, "coats", "num_coats", "Painter coats", "Coats", "paint"),
        guidance(Painter, "brightness", "brightness", "Painter brightness", "Brightness"),
    ),
    sweep_steps=("coats",),
    sweep_guidance=("brightness",),
)
