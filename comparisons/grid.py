"""A sweep as one picture, like AUTOMATIC1111's X/Y plot: rows one axis (the prompt by default), columns another
(seed, steps or guidance), every architecture's image side by side in each cell, the axes labelled.

Cells not made yet are drawn as empty placeholders, so a grid drawn while a sweep runs fills as its batches land.
Swept axes that are neither rows nor columns are nested in the columns (e.g. "seed 0 · steps 10"), so no image
of the sweep is left out. Small images (the lab's are 32 px) are enlarged by a whole factor with NEAREST, so
every cell shows its pixels as they are. The PNG carries the sweep's parameters as JSON in its `sweep` text
chunk (`read_parameters`): prompts, seeds, steps, guidance, architectures, run id, axes and the other settings.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from comparisons.files import atomic_write
from pipelines import registry

AXES = ("prompt", "seed", "steps", "guidance")  # steps and guidance: each architecture's main loops and scale
TEXT_CHUNK = "sweep"  # the PNG text chunk holding the parameters as JSON
MIN_TILE, MAX_TILE, SMALLEST_TILE = 128, 256, 32  # pixels per image side in a cell: readable, not huge
MAX_TILES = 4096  # images in one grid picture: a bigger one is a mistake more often than a plan
MAX_PIXELS = 80_000_000  # under PIL's decompression-bomb warning (89M), so the PNG opens anywhere
PAD, GAP, INNER, LINE, FONT_SIZE = 8, 8, 2, 16, 13  # margins, gap between cells, between a cell's images, text
MAX_LABEL_WIDTH, HEADER_LINES = 200, 3  # a row label's pixels; the lines of a column's label per axis
WHITE, INK, MUTED, PLACEHOLDER = (255, 255, 255), (20, 20, 20), (110, 110, 110), (228, 228, 228)


@dataclass(frozen=True)
class GridSpec:
    """What a grid covers (the sweep's values per axis and its architectures) and which axes it lays out."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: tuple[int, ...]  # each architecture's main denoising steps (registry sweep_steps)
    guidance: tuple[float, ...]  # each architecture's main guidance (registry sweep_guidance)
    architectures: tuple[str, ...]  # in the order a cell shows them, left to right
    rows: str = "prompt"  # the axis down the left
    columns: str = "seed"  # the axis across the top
    run_id: str | None = None  # the sweep that drew it
    settings: dict = field(default_factory=dict, hash=False)  # the sweep's other settings, by name

    def __post_init__(self) -> None:
        for name in (self.rows, self.columns):
            if name not in AXES:
                raise ValueError(f"unknown grid axis {name!r}; choose one of {', '.join(AXES)}")
        if self.rows == self.columns:
            raise ValueError(f"rows and columns are both {self.rows!r}: pick two different axes")
        for axis in AXES:
            if not self.values(axis):
                raise ValueError(f"the grid has no {axis} values: nothing to draw")
        if not self.architectures:
            raise ValueError("the grid has no architectures: nothing to draw")
        for name in self.architectures:
            registry.get(name)
        if self.tiles > MAX_TILES:
            raise ValueError(
                f"the grid would hold {self.tiles:,} images; at most {MAX_TILES:,} in one picture: "
                "choose other axes or split the sweep"
            )

    def values(self, axis: str) -> tuple:
        return {"prompt": self.prompts, "seed": self.seeds, "steps": self.steps, "guidance": self.guidance}[axis]

    @property
    def column_axes(self) -> tuple[str, ...]:
        """The columns' axis, then every other swept axis with several values (nested in the columns)."""
        rest = [a for a in AXES if a not in (self.rows, self.columns) and len(self.values(a)) > 1]
        return (self.columns, *rest)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of cells."""
        return len(self.values(self.rows)), math.prod(len(self.values(a)) for a in self.column_axes)

    @property
    def tiles(self) -> int:
        return self.shape[0] * self.shape[1] * len(self.architectures)

    def parameters(self) -> dict:
        """The sweep's parameters as JSON-ready values: what the PNG's text chunk carries."""
        return {
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
            "steps": list(self.steps),
            "guidance": list(self.guidance),
            "architectures": list(self.architectures),
            "rows": self.rows,
            "columns": self.columns,
            "run_id": self.run_id,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_parameters(cls, parameters: dict) -> GridSpec:
        """The inverse of `parameters`."""
        lists = ("prompts", "seeds", "steps", "guidance", "architectures")
        return cls(**{k: tuple(v) if k in lists else v for k, v in parameters.items()})

    @classmethod
    def from_rows(cls, df: pd.DataFrame, rows: str = "prompt", columns: str = "seed", **options) -> GridSpec:
        """The values the rows hold on every axis: prompts in order of appearance, numbers ascending."""
        values = axis_frame(df)
        if values.empty:
            raise ValueError("no rows: nothing to draw a grid of")
        unique = {a: list(dict.fromkeys(values[a].dropna())) for a in AXES}
        return cls(
            tuple(unique["prompt"]),
            *(tuple(sorted(unique[a])) for a in ("seed", "steps", "guidance")),
            architectures=tuple(n for n in registry.names() if n in set(values["architecture"])),
            rows=rows,
            columns=columns,
            **options,
        )


def axis_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Each row's architecture, image and value on every axis (steps and guidance: its architecture's main ones,
    as a sweep's --steps and --guidance set them), as plain Python values, in the rows' order."""
    missing = [c for c in ("architecture", "prompt", "seed", "image_path") if c not in df.columns]
    if missing:
        raise ValueError(f"the rows lack the columns {missing}; are they a run log (comparisons.store.load_runs)?")
    names = [None if pd.isna(a) else str(a) for a in df["architecture"]]
    main = {"steps": [None] * len(df), "guidance": [None] * len(df)}
    for name in dict.fromkeys(n for n in names if n is not None):
        arch, mine = registry.get(name), [i for i, n in enumerate(names) if n == name]
        for axis, kind, settings in (("steps", int, arch.sweep_steps), ("guidance", float, arch.sweep_guidance)):
            if settings and settings[0] in df.columns:
                column = df[settings[0]].tolist()
                for i in mine:
                    main[axis][i] = None if pd.isna(column[i]) else kind(column[i])
    return pd.DataFrame(
        {
            "architecture": names,
            "prompt": [None if pd.isna(p) else str(p) for p in df["prompt"]],
            "seed": [None if pd.isna(s) else int(s) for s in df["seed"]],
            **main,
            "image_path": [None if pd.isna(p) else str(p) for p in df["image_path"]],
        },
        dtype=object,
    )


# ----------------------------------------------------------------------------- layout


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def font(size: int = FONT_SIZE) -> Font:
    """Pillow's own font: nothing to install, the same on every machine."""
    return ImageFont.load_default(size=size)


def printable(text: str) -> str:
    """Control characters (newlines, NUL, direction marks) as spaces: a label stays on the lines it is given."""
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(text)).strip()


def wrap(text: str, width: int, max_lines: int, face: Font | None = None) -> list[str]:
    """`text` wrapped to `width` pixels in at most `max_lines` lines, the last ending in … when it was cut."""
    face, lines, line = face or font(), [], ""
    for word in printable(text).split():
        if len(lines) > max_lines:
            break  # the rest is cut anyway
        candidate = f"{line} {word}".strip()
        if face.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while face.getlength(line) > width and len(line) > 1 and len(lines) <= max_lines:  # a word wider than a line
            cut = _fitting(line, width, face)
            lines.append(line[:cut])
            line = line[cut:]
    lines += [line] if line else []
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and face.getlength(last + "…") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last.rstrip() + "…"]
    return lines or [""]


def _fitting(word: str, width: int, face: Font) -> int:
    """How many of the word's first characters fit in `width` pixels (at least one)."""
    k = 1
    while k < len(word) and face.getlength(word[: k + 1]) <= width:
        k += 1
    return k


def axis_label(axis: str, value: object) -> str:
    """How a value reads on its axis: the prompt itself, "seed 3", "steps 25", "guidance 7.5"."""
    return printable(value) if axis == "prompt" else f"{axis} {value:g}" if axis == "guidance" else f"{axis} {value}"


@dataclass(frozen=True)
class Layout:
    """Where everything sits, in pixels: a label column, a title and column headers above, then the cells."""

    tile: int  # an image's side in a cell
    n_rows: int
    n_columns: int
    n_architectures: int
    label_width: int
    top: int  # the title and the column headers

    @property
    def cell_width(self) -> int:
        return self.n_architectures * self.tile + (self.n_architectures - 1) * INNER

    @property
    def size(self) -> tuple[int, int]:
        width = 2 * PAD + self.label_width + self.n_columns * (self.cell_width + GAP) - GAP
        return width, 2 * PAD + self.top + self.n_rows * (self.tile + GAP) - GAP

    def cell(self, row: int, column: int) -> tuple[int, int]:
        """The top-left corner of a cell."""
        return PAD + self.label_width + column * (self.cell_width + GAP), PAD + self.top + row * (self.tile + GAP)

    def box(self, row: int, column: int, architecture: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of one architecture's image in a cell."""
        x, y = self.cell(row, column)
        x += architecture * (self.tile + INNER)
        return x, y, x + self.tile, y + self.tile


def tile_side(native: int | None, fits: Callable[[int], bool]) -> int:
    """The side of a cell's images: small images enlarged by the largest whole factor that reaches MIN_TILE, big
    ones cut to MAX_TILE; smaller while the picture would pass MAX_PIXELS (`fits(tile)` says whether it does not)."""
    native = native or SMALLEST_TILE
    if native < MIN_TILE:
        options = [native * k for k in range(math.ceil(MIN_TILE / native), 0, -1)]
    else:
        options = [min(native, MAX_TILE) >> k for k in range(4)]
    for tile in options:
        if fits(tile):
            return tile
    raise ValueError(f"the grid is too big to draw even with {options[-1]} px images: choose other axes")


def layout_for(
    spec: GridSpec, native: int | None, face: Font | None = None
) -> tuple[Layout, list[list[str]], list[list[str]]]:
    """The layout, and the wrapped row and column labels."""
    face = face or font()
    n_rows, n_columns = spec.shape
    row_values = spec.values(spec.rows)
    widest = max(face.getlength(axis_label(spec.rows, v)) for v in row_values)
    label_width = int(min(MAX_LABEL_WIDTH, widest + 2 * INNER + 4))

    def build(tile: int) -> tuple[Layout, list[list[str]], list[list[str]]]:
        cell_width = len(spec.architectures) * tile + (len(spec.architectures) - 1) * INNER
        row_labels = [wrap(axis_label(spec.rows, v), label_width - 4, max(1, tile // LINE), face) for v in row_values]
        column_labels = [
            [
                line
                for axis, v in zip(spec.column_axes, key)
                for line in wrap(axis_label(axis, v), cell_width, HEADER_LINES, face)
            ]
            for key in _column_keys(spec)
        ]
        lines = max(len(c) for c in column_labels)
        top = LINE + 6 + lines * LINE + LINE + 4  # title, column labels, architecture names
        return Layout(tile, n_rows, n_columns, len(spec.architectures), label_width, top), row_labels, column_labels

    tile = tile_side(native, lambda t: math.prod(build(t)[0].size) <= MAX_PIXELS)
    return build(tile)


# ----------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class Grid:
    """A drawn grid: the picture, what it covers, where each image sits, how many of its images are made."""

    image: Image.Image
    spec: GridSpec
    layout: Layout
    made: int

    def save(self, path: str | Path) -> Path:
        """The PNG with the parameters in its `sweep` text chunk, written whole or not at all."""
        info = PngInfo()
        info.add_text(TEXT_CHUNK, json.dumps(self.spec.parameters(), ensure_ascii=False))
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", pnginfo=info)
        path = Path(path)
        atomic_write(path, lambda f: f.write(buffer.getvalue()))
        return path


def read_parameters(path: str | Path) -> dict:
    """The parameters a grid PNG carries (`GridSpec.parameters`)."""
    with Image.open(path) as im:
        text = im.text.get(TEXT_CHUNK)
    if text is None:
        raise ValueError(f"{path} has no `{TEXT_CHUNK}` text chunk: it is not a grid written by this tool")
    return json.loads(text)


def _images(df: pd.DataFrame) -> dict[tuple, str]:
    """(architecture, prompt, seed, steps, guidance) -> image path of the newest row there (rows in log order)."""
    values = axis_frame(df)
    return {tuple(r[:5]): r[5] for r in values[["architecture", *AXES, "image_path"]].itertuples(index=False)}


def _open(path: str | None, tile: int) -> Image.Image | None:
    """The image at `path` fitted to a tile (NEAREST when enlarging: its pixels as they are); None if unreadable."""
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError):
        return None
    scale = tile / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im if size == im.size else im.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def _native_side(paths: list[str]) -> int | None:
    """The largest side of the readable images (their headers only): what the tiles are sized from."""
    sides = []
    for path in paths:
        try:
            with Image.open(path) as im:
                sides.append(max(im.size))
        except (OSError, ValueError):
            continue
    return max(sides, default=None)


def _title(spec: GridSpec) -> str:
    """What the axes are, and the values of the axes that do not vary."""
    fixed = [axis_label(a, spec.values(a)[0]) for a in AXES if a not in spec.column_axes and a != spec.rows]
    run = f"sweep {spec.run_id}: " if spec.run_id else ""
    return f"{run}rows: {spec.rows} · columns: {', '.join(spec.column_axes)}" + "".join(f" · {f}" for f in fixed)


def _column_keys(spec: GridSpec) -> list[tuple]:
    return list(itertools.product(*(spec.values(a) for a in spec.column_axes)))


def _draw_headers(
    draw: ImageDraw.ImageDraw, spec: GridSpec, layout: Layout, labels: list[list[str]], face: Font
) -> None:
    """The title, each column's label and, over each image of a cell, its architecture's short name."""
    draw.text((PAD, PAD), wrap(_title(spec), layout.size[0] - 2 * PAD, 1, face)[0], fill=MUTED, font=face)
    shorts = [wrap(registry.get(a).short, layout.tile, 1, face)[0] for a in spec.architectures]
    for c, lines in enumerate(labels):
        x, _ = layout.cell(0, c)
        for i, line in enumerate(lines):
            draw.text((x, PAD + LINE + 6 + i * LINE), line, fill=INK, font=face)
        for a, short in enumerate(shorts):
            left, _, right, _ = layout.box(0, c, a)
            draw.text(((left + right) / 2, PAD + layout.top - 4), short, fill=MUTED, font=face, anchor="md")


def _draw_cells(image: Image.Image, spec: GridSpec, layout: Layout, found: dict[tuple, str]) -> int:
    """Every cell's images, or placeholders where none is made yet; returns how many images it drew."""
    draw, made = ImageDraw.Draw(image), 0
    for r, value in enumerate(spec.values(spec.rows)):
        for c, key in enumerate(_column_keys(spec)):
            point = {spec.rows: value, **dict(zip(spec.column_axes, key))}
            point = tuple(point.get(a, spec.values(a)[0]) for a in AXES)
            for a, arch in enumerate(spec.architectures):
                box = layout.box(r, c, a)
                tile = _open(found.get((arch, *point)), layout.tile)
                if tile is None:
                    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=PLACEHOLDER)
                else:
                    image.paste(tile, box[:2])
                    made += 1
    return made


def draw_grid(df: pd.DataFrame, spec: GridSpec) -> Grid:
    """The grid of `spec` with the images of the rows in `df` (a run log's; the newest row of a cell wins); cells
    no row fills are placeholders."""
    found = {k: v for k, v in _images(df).items() if k[0] in spec.architectures}
    face = font()
    layout, row_labels, column_labels = layout_for(spec, _native_side(list(found.values())), face)
    image = Image.new("RGB", layout.size, WHITE)
    draw = ImageDraw.Draw(image)
    _draw_headers(draw, spec, layout, column_labels, face)
    for r, lines in enumerate(row_labels):
        for i, line in enumerate(lines):
            draw.text((PAD, layout.cell(r, 0)[1] + i * LINE), line, fill=INK, font=face)
    return Grid(image, spec, layout, _draw_cells(image, spec, layout, found))
