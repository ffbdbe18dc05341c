"""Sweep grids: every cell holds its rows' images (enlarged with NEAREST, pixel for pixel), missing cells are
placeholders, the PNG carries the parameters, labels wrap, and bad axes or input are refused clearly."""

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from comparisons import grid
from comparisons.grid import GAP, PAD, PLACEHOLDER, GridSpec, draw_grid, read_parameters, wrap

from helpers import png_pixels, random_image

PROMPTS = ("a red circle", "a blue square above a green cross")
SEEDS = (0, 1, 2)


def make_rows(tmp_path, prompts=PROMPTS, seeds=SEEDS, steps=(2,), size=32) -> pd.DataFrame:
    """One row per (architecture, steps, prompt, seed), each with a PNG of its own noise, as a run log has them."""
    records = []
    points = itertools.product(("unclip", "latent_diffusion"), steps, enumerate(prompts), seeds)
    for k, (arch, n, (p, prompt), seed) in enumerate(points):
        path = tmp_path / f"{arch}-{n}-{p}-{seed}.png"
        random_image(size, seed=k).save(path)
        main = {"prior_steps": n, "decoder_guidance": 7.5} if arch == "unclip" else {"steps": n, "guidance": 7.5}
        records.append({"architecture": arch, "prompt": prompt, "seed": seed, "image_path": str(path), **main})
    return pd.DataFrame(records)


def spec_for(prompts=PROMPTS, seeds=SEEDS, steps=(2,), **options) -> GridSpec:
    return GridSpec(prompts, seeds, steps, (7.5,), ("unclip", "latent_diffusion"), **options)


def cell_pixels(picture: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(picture.convert("RGB").crop(box))


def enlarged(path: str, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(png_pixels(path), factor, axis=0), factor, axis=1)


def image_of(df: pd.DataFrame, arch: str, prompt: str, seed: int, steps: int | None = None) -> str:
    column = "prior_steps" if arch == "unclip" else "steps"
    hit = (df.architecture == arch) & (df.prompt == prompt) & (df.seed == seed)
    if steps is not None:
        hit &= df[column] == steps
    (path,) = df.loc[hit, "image_path"]
    return path


def test_every_cell_holds_both_architectures_images_pixel_for_pixel(tmp_path):
    df = make_rows(tmp_path)
    result = draw_grid(df, spec_for())
    layout = result.layout
    assert layout.tile == 128 and (layout.n_rows, layout.n_columns) == (2, 3)
    width, height = result.image.size
    assert (width, height) == layout.size
    assert width - 2 * PAD - layout.label_width + GAP == 3 * (layout.cell_width + GAP)  # 3 columns of cells
    assert height - 2 * PAD - layout.top + GAP == 2 * (layout.tile + GAP)  # 2 rows
    for (r, prompt), (c, seed), (a, arch) in itertools.product(
        enumerate(PROMPTS), enumerate(SEEDS), enumerate(("unclip", "latent_diffusion"))
    ):
        expected = enlarged(image_of(df, arch, prompt, seed), 4)  # 32 px, 4 × NEAREST
        assert np.array_equal(cell_pixels(result.image, layout.box(r, c, a)), expected), (prompt, seed, arch)
    assert result.made == 12


def test_a_missing_cell_is_a_placeholder_and_the_png_carries_the_parameters(tmp_path):
    df = make_rows(tmp_path)
    gone = (df.architecture == "latent_diffusion") & (df.prompt == PROMPTS[1]) & (df.seed == 2)
    spec = spec_for(run_id="abc123", settings={"super_res_steps": 7, "negative_prompt": None})
    result = draw_grid(df[~gone], spec)
    assert result.made == 11
    path = result.save(tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == result.layout.size
    opened = png_pixels(path)
    assert np.array_equal(opened, np.asarray(result.image))
    left, top, right, bottom = result.layout.box(1, 2, 1)
    assert (opened[top:bottom, left:right] == PLACEHOLDER).all()  # not made yet
    left, top, right, bottom = result.layout.box(1, 2, 0)
    assert np.array_equal(opened[top:bottom, left:right], enlarged(image_of(df, "unclip", PROMPTS[1], 2), 4))
    parameters = read_parameters(path)
    assert parameters == {
        "prompts": list(PROMPTS),
        "seeds": [0, 1, 2],
        "steps": [2],
        "guidance": [7.5],
        "architectures": ["unclip", "latent_diffusion"],
        "rows": "prompt",
        "columns": "seed",
        "run_id": "abc123",
        "settings": {"super_res_steps": 7, "negative_prompt": None},
    }
    assert GridSpec.from_parameters(parameters) == spec


def test_rows_off_the_grid_are_not_drawn(tmp_path):
    df = make_rows(tmp_path)
    df.loc[df.architecture == "unclip", "decoder_guidance"] = 8.0  # unCLIP's main guidance: not the grid's 7.5
    assert draw_grid(df, spec_for()).made == len(PROMPTS) * len(SEEDS)  # latent diffusion's alone
    assert draw_grid(df[df.architecture == "unclip"], spec_for()).made == 0


def test_with_nothing_made_every_cell_is_a_placeholder(tmp_path):
    result = draw_grid(make_rows(tmp_path).iloc[:0], spec_for())
    assert result.made == 0 and result.layout.tile == 128
    for r, c, a in itertools.product(range(2), range(3), range(2)):
        assert (cell_pixels(result.image, result.layout.box(r, c, a)) == PLACEHOLDER).all()


def test_other_swept_axes_nest_in_the_columns_and_axes_can_swap(tmp_path):
    df = make_rows(tmp_path, steps=(2, 3))
    spec = spec_for(steps=(2, 3))
    assert spec.column_axes == ("seed", "steps") and spec.shape == (2, 6)
    result = draw_grid(df, spec)
    # columns run seed-major: (seed 0, steps 2), (seed 0, steps 3), (seed 1, steps 2), ...
    box = result.layout.box(1, 3, 1)  # prompt 1, seed 1 at steps 3, latent diffusion
    assert np.array_equal(
        cell_pixels(result.image, box), enlarged(image_of(df, "latent_diffusion", PROMPTS[1], 1, 3), 4)
    )

    swapped = draw_grid(df, spec_for(steps=(2, 3), rows="steps", columns="prompt"))
    assert swapped.spec.shape == (2, 2 * 3)  # steps × (prompt × seed)
    box = swapped.layout.box(1, 2, 0)  # steps 3; prompt 0, seed 2; unCLIP
    assert np.array_equal(cell_pixels(swapped.image, box), enlarged(image_of(df, "unclip", PROMPTS[0], 2, 3), 4))


def test_the_newest_row_of_a_cell_wins_and_big_images_are_cut_to_the_tile(tmp_path):
    df = make_rows(tmp_path, prompts=PROMPTS[:1], seeds=(0,))
    again = df.iloc[[0]].assign(image_path=str(tmp_path / "again.png"))
    random_image(32, seed=99).save(again.iloc[0]["image_path"])
    result = draw_grid(pd.concat([df, again], ignore_index=True), spec_for(PROMPTS[:1], (0,)))
    assert np.array_equal(
        cell_pixels(result.image, result.layout.box(0, 0, 0)), enlarged(again.iloc[0]["image_path"], 4)
    )

    (tmp_path / "big").mkdir()
    big = make_rows(tmp_path / "big", PROMPTS[:1], (0,), size=512)
    result = draw_grid(big, spec_for(PROMPTS[:1], (0,)))
    assert result.layout.tile == grid.MAX_TILE and result.made == 2


def test_spec_from_rows_reads_every_axis(tmp_path):
    df = make_rows(tmp_path, steps=(3, 2))
    spec = GridSpec.from_rows(df, rows="seed", columns="steps")
    assert spec.prompts == PROMPTS and spec.seeds == SEEDS and spec.steps == (2, 3) and spec.guidance == (7.5,)
    assert spec.architectures == ("unclip", "latent_diffusion") and (spec.rows, spec.columns) == ("seed", "steps")


def test_long_prompt_labels_wrap_and_are_cut_with_an_ellipsis():
    face = grid.font()
    long = "a large yellow circle above a large blue diamond " * 6
    lines = wrap(long, 150, 3, face)
    assert len(lines) == 3 and lines[-1].endswith("…") and all(face.getlength(line) <= 150 for line in lines)
    assert wrap("a red circle", 150, 3, face) == ["a red circle"]
    assert all(face.getlength(line) <= 60 for line in wrap("x" * 5000, 60, 2, face))  # one huge word, cut
    assert wrap("line one\nline\x00two\u202e", 400, 3, face) == ["line one line two"]  # control characters


def test_a_long_prompt_row_label_stays_in_its_row(tmp_path):
    long = "a large yellow circle above a large blue diamond " * 6
    df = make_rows(tmp_path, prompts=(long.strip(), "a red circle"), seeds=(0,))
    result = draw_grid(df, GridSpec.from_rows(df))
    layout = result.layout
    assert layout.label_width == grid.MAX_LABEL_WIDTH
    label = np.asarray(result.image)[layout.cell(0, 0)[1] : layout.cell(1, 0)[1], PAD : PAD + layout.label_width]
    ink_rows = np.flatnonzero((label < 200).any(axis=(1, 2)))
    assert ink_rows.size and ink_rows.max() < layout.tile  # the wrapped label ends within its row's height


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(rows="colour"), "unknown grid axis 'colour'; choose one of prompt, seed, steps, guidance"),
        (dict(columns="prompt"), "rows and columns are both 'prompt': pick two different axes"),
        (dict(seeds=()), "the grid has no seed values"),
        (dict(architectures=()), "no architectures"),
        (dict(architectures=("gan",)), "unknown architecture 'gan'"),
        (dict(seeds=tuple(range(5000))), "at most 4,096 in one picture"),
    ],
)
def test_bad_specs_are_refused_clearly(options, message):
    values = dict(prompts=PROMPTS, seeds=SEEDS, steps=(2,), guidance=(7.5,), architectures=("unclip",))
    with pytest.raises(ValueError, match=message):
        GridSpec(**{**values, **options})


def test_empty_or_foreign_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="no rows: nothing to draw a grid of"):
        GridSpec.from_rows(make_rows(tmp_path).iloc[:0])
    with pytest.raises(ValueError, match=r"lack the columns \['image_path'\]"):
        draw_grid(pd.DataFrame({"architecture": ["unclip"], "prompt": ["x"], "seed": [0]}), spec_for())
    with pytest.raises(ValueError, match="has no `sweep` text chunk"):
        random_image(8, seed=0).save(tmp_path / "plain.png")
        read_parameters(tmp_path / "plain.png")


AWKWARD = ["", "\x00", "\u202eright to left", "🐱" * 50, "猫 ネコ", "a\nb\r\nc\t", "x" * 5000]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompts=st.lists(st.one_of(st.sampled_from(AWKWARD), st.text(max_size=300)), min_size=1, max_size=3))
def test_any_prompt_text_draws_a_grid_with_its_labels_inside_it(tmp_path_factory, prompts):
    folder = tmp_path_factory.mktemp("fuzz")
    prompts = tuple(dict.fromkeys(prompts))
    df = make_rows(folder, prompts=prompts, seeds=(0,))
    result = draw_grid(df, GridSpec.from_rows(df))
    assert result.made == 2 * len(prompts) and result.image.size == result.layout.size
    assert result.layout.label_width <= grid.MAX_LABEL_WIDTH
    grid_png = result.save(folder / "grid.png")
    assert read_parameters(grid_png)["prompts"] == list(prompts)  # non-Latin text survives the PNG chunk
