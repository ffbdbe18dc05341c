"""Images taken in (unCLIP's variations, latent diffusion's img2img): checked, made canonical, named by a hash of
their pixels and kept once in the results folder, so that every row made from one regenerates from its PNG.

The canonical form is 8-bit RGB, upright (its EXIF orientation applied), transparency flattened onto white.
`source_hash` is the sha256 of those pixels: the ASCII header `RGB <width>x<height>\\n`, then the RGB bytes
row by row from the top (PIL's `tobytes()`). Pixels rather than file bytes: the same picture hashes alike
whichever file it came in, and however a PNG encoder compresses it. The folder keeps it as
`images/sources/<source_hash>.png`; an image-in row names it (`source_image`), its PNG's infotext says its
hash, mode and strength (`image_in_from_png`), and comparisons.regeneration makes any row's image again.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from comparisons.files import atomic_write
from comparisons.records import parse_infotext
from comparisons.settings import Settings
from pipelines import PipelineOutput, registry
from pipelines.base import Pipeline
from pipelines.checks import check_strength
from pipelines.outputs import StepCallback
from pipelines.tokenizer import excerpt

MIN_SIDE, MAX_SIDE = 16, 4096  # pixels a side: fewer has nothing to see; more is a photo to shrink first
SOURCES = "sources"  # the folder under images/ that keeps them
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Source:
    """An image taken in, in canonical form, and its hash."""

    image: Image.Image  # RGB, upright
    sha256: str  # source_hash(image)


def source_hash(image: Image.Image) -> str:
    """sha256 of an RGB image's pixels, prefixed by its size (see the module docstring)."""
    if image.mode != "RGB":
        raise ValueError(f"source_hash takes an RGB image, got mode {image.mode}: make it canonical first")
    digest = hashlib.sha256(f"RGB {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def canonical(image: Image.Image) -> Image.Image:
    """The image upright, as 8-bit RGB: transparency onto white, 16-bit and float greys scaled to 8 bits."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(flat, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ValueError(f"an image in mode {image.mode} cannot be made RGB ({err})") from None


def _check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"the image is {width}x{height} pixels: too small, each side needs at least {MIN_SIDE}")
    if max(width, height) > MAX_SIDE:
        raise ValueError(
            f"the image is {width}x{height} pixels: too large, at most {MAX_SIDE} a side (shrink it first; the "
            "models see its centre square at their own size anyway)"
        )


def open_source(image: str | Path | Image.Image | None) -> Source:
    """An uploaded image (a file's path, or a PIL image) checked and made canonical, with its hash. Its size is
    read from the file's header before any pixel is decoded, so a huge file is refused at no cost."""
    if image is None or (isinstance(image, str) and not image.strip()):
        raise ValueError("no image: upload one (PNG, JPEG, WebP, ...) to make variations and img2img from")
    if isinstance(image, Image.Image):
        _check_size(*image.size)
        return _source(canonical(image))
    if not isinstance(image, (str, Path)):
        raise ValueError(f"the image must be a PIL image or a file's path, got {type(image).__name__}")
    unreadable = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError)
    try:
        opened = Image.open(image)
    except (*unreadable, ValueError):  # ValueError: a path with a NUL in it
        raise ValueError(
            f"{excerpt(Path(image).name)} is not a picture this app can read (PNG, JPEG, WebP, GIF)"
        ) from None
    with opened:
        _check_size(*opened.size)
        try:
            opened.load()  # every pixel decoded: a truncated file fails here
        except unreadable:
            raise ValueError(f"{excerpt(Path(image).name)} is a damaged picture: part of it cannot be read") from None
        return _source(canonical(opened))


def _source(image: Image.Image) -> Source:
    return Source(image, source_hash(image))


def fitted(image: Image.Image, size: int) -> Image.Image:
    """What a model is given: the image's centre square at the model's own size (every model here is square)."""
    return ImageOps.fit(image, (size, size), Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------- kept in the results folder


def source_path(out_dir: Path, sha256: str) -> Path:
    return Path(out_dir) / "images" / SOURCES / f"{sha256}.png"


def save_source(source: Source, out_dir: Path) -> Path:
    """Keep the source under its hash, written whole or not at all; once: a file of that name holds these pixels."""
    path = source_path(out_dir, source.sha256)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        source.image.save(buffer, format="PNG")
        atomic_write(path, lambda f: f.write(buffer.getvalue()))  # a concurrent twin writes the same bytes
    return path


def read_source(path: str | Path) -> Source:
    """A kept source, its hash computed again from its pixels (not trusted from its name)."""
    with Image.open(path) as im:
        return _source(canonical(im))


# ----------------------------------------------------------------------------- calls and regeneration


def call_image_in(
    pipe: Pipeline,
    architecture: str,
    image: Image.Image,
    prompt: str,
    seeds: Sequence[int],
    settings: Settings,
    strength: float | None = None,
    callback: StepCallback | None = None,
) -> PipelineOutput:
    """One image-in call of the architecture's method (registry.ImageIn) on the image's centre square, with the
    settings its mode takes and, for img2img, the strength; the one way rows are made and regenerated."""
    image_in = registry.get(architecture).image_in
    if image_in is None:
        raise ValueError(f"{registry.get(architecture).short} takes no image in")
    kwargs = settings.pipeline_kwargs(architecture, image_in.mode)
    if image_in.strength is not None:
        kwargs[image_in.strength.argument] = check_strength(strength, image_in.strength.name)
    square = fitted(image, pipe.image_size)
    args = (prompt, square) if image_in.takes_prompt else (square,)
    return getattr(pipe, image_in.method)(*args, seed=list(seeds), callback=callback, **kwargs)


@dataclass(frozen=True)
class ImageInPng:
    """What an image-in PNG's infotext says beyond `settings_from_png`."""

    mode: str  # an ImageIn's mode
    source_hash: str
    source_image: Path  # where the PNG's results folder keeps the source
    strength: float | None  # img2img's


def image_in_from_png(path: str | Path) -> ImageInPng | None:
    """The mode, source and strength of an image-in PNG; None for a text-to-image one."""
    with Image.open(path) as im:
        text = im.text.get("parameters")
    if text is None:
        raise ValueError(f"{path} has no `parameters` text chunk: it was not written by this tool")
    p = parse_infotext(text)
    if p.get("Mode", registry.TEXT_TO_IMAGE) == registry.TEXT_TO_IMAGE:
        return None
    strength = next((float(p[s.infotext]) for s in registry.strength_settings() if s.infotext in p), None)
    folder = Path(path).resolve().parent.parent  # images/<architecture>/<name>.png -> images/
    return ImageInPng(p["Mode"], p["Source hash"], folder / SOURCES / f"{p['Source hash']}.png", strength)
