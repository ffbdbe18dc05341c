"""Which files a pipeline in diffusers' layout loads, decided once for a local directory and a hub repo alike.

A pipeline directory holds `model_index.json` (component name -> [library, class]) and one
subfolder per component: the layout of `kakaobrain/karlo-v1-alpha` and of the Stable Diffusion
1.x/2.x repos. `check_components` says which components an architecture loads and checks each against
the class model_index.json names; `choose_weights` picks each model's weights file among those its folder
holds (safetensors only unless the caller opts in to pickle, since unpickling a `.bin` file can run
arbitrary code); `plan_download` applies both to a hub repo's listing, so `pipelines.hub` fetches exactly
what `pipelines.loading` reads. Every failure names the file at fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import diffusers
import diffusers.pipelines.deprecated.unclip
import diffusers.pipelines.stable_diffusion
import torch
import transformers
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors import safe_open
from transformers import CLIPImageProcessor, CLIPTokenizer

from pipelines import schedulers

MODEL_INDEX = "model_index.json"
CONFIG = "config.json"  # a model's config
SCHEDULER_CONFIG = "scheduler_config.json"
TOKENIZER = "tokenizer"  # every pipeline reads its repo's tokenizer folder when it has one (see load_tokenizer)
ModelIndex = dict[str, list]  # model_index.json without its "_" keys: component -> [library, class]

# Where model_index.json's classes may come from: these modules only, never a module the file names
# (importing it would run code a downloaded repo chose). Karlo's hub index names unCLIP's text projection
# ["unclip", "UnCLIPTextProjModel"]; diffusers' own save_pretrained writes ["diffusers", "UnCLIPTextProjModel"], a
# class its top-level module does not export, so "diffusers" also looks in the unCLIP module.
_LIBRARIES = {
    "diffusers": (diffusers, diffusers.pipelines.deprecated.unclip),
    "transformers": (transformers,),
    "unclip": (diffusers.pipelines.deprecated.unclip,),
    "stable_diffusion": (diffusers.pipelines.stable_diffusion,),  # stabilityai's unCLIP repos' image_normalizer
    schedulers.__name__: (schedulers,),
}
_PROCESSORS = (CLIPTokenizer, CLIPImageProcessor)  # components that are files of settings, no weights


class ComponentLoadError(ValueError):
    """A component of a pipeline directory is missing or unreadable; the message names the file."""


@dataclass(frozen=True)
class PipelineKind:
    """What one architecture's loader reads from a pipeline directory or hub repo."""

    name: str  # "unclip", "latent_diffusion": for messages
    components: Callable[[ModelIndex], dict[str, type]]  # model_index.json -> each component loaded, as what class
    tokenizer: bool = True  # also the repo's tokenizer folder where it has one (a whole pipeline; not a part of one)


@dataclass(frozen=True)
class Weights:
    """The weights files of one model component, as its library's from_pretrained reads them."""

    files: tuple[str, ...]  # names in the component's folder: one file, or a shard index and its shards
    variant: str | None  # e.g. "fp16" for model.fp16.safetensors: what from_pretrained is told, so it reads `files`
    pickle: bool  # .bin files, read only with allow_pickle


def parse_model_index(text: str, where: str | Path) -> ModelIndex:
    try:
        index = json.loads(text)
    except json.JSONDecodeError as err:
        raise ComponentLoadError(f"{where}: not readable JSON ({err})") from err
    if not isinstance(index, dict):
        raise ComponentLoadError(f"{where}: not a JSON object of components")
    return {k: v for k, v in index.items() if not k.startswith("_")}


def read_model_index(directory: Path) -> ModelIndex:
    index_file = directory / MODEL_INDEX
    try:
        text = index_file.read_text()
    except OSError as err:
        raise ComponentLoadError(f"{index_file}: not readable JSON ({err})") from err
    return parse_model_index(text, index_file)


def is_listed(entry: object) -> bool:
    """Whether a model_index.json entry names a component ([library, class]); [null, null] says there is none."""
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def named_class(entry: list) -> type | None:
    """The class a model_index.json entry names, looked up in the libraries we trust only."""
    library, class_name = entry
    found = (getattr(module, str(class_name), None) for module in _LIBRARIES.get(str(library), ()))
    return next((cls for cls in found if isinstance(cls, type)), None)


def check_components(index: ModelIndex, kind: PipelineKind, where: str | Path) -> dict[str, type]:
    """The components `kind` loads from a pipeline with this model_index.json, each checked against the class the
    index names: a repo of another architecture, or a class we cannot load, fails here, before any weights are
    read or downloaded. The tokenizer is among them when the index lists one."""
    components = kind.components(index)
    if kind.tokenizer and is_listed(index.get(TOKENIZER)):
        components = {**components, TOKENIZER: CLIPTokenizer}
    for name, expected in components.items():
        entry = index.get(name)
        if not is_listed(entry):
            raise ComponentLoadError(
                f"{where} lists no {name!r}, which the {kind.name} loader needs: is it a {kind.name} pipeline?"
            )
        cls = named_class(entry)
        if cls is None or not issubclass(cls, expected):
            what = "scheduler" if issubclass(expected, SchedulerMixin) else expected.__name__
            raise ComponentLoadError(
                f"{where}: {name!r} names {entry[0]}.{entry[1]}, which is not a {what} of "
                f"{sorted(_LIBRARIES)} (the {kind.name} loader loads {name!r} as "
                f"{expected.__name__})"
            )
    return components


# ----------------------------------------------------------------------------- weights files


def weight_variants(dtype: torch.dtype | None, variant: str | None = None) -> tuple[str | None, ...]:
    """The variants a model's weights are read from, in order of preference: an explicit `variant`, else in half
    precision the fp16 files (the repo's own half-precision copy, not fp32 cast down), then the fp32 files."""
    if variant:
        return (variant, None)
    return ("fp16", None) if dtype == torch.float16 else (None,)


def _stems(expected: type) -> tuple[str, str]:
    """(safetensors, pickle) file stems: diffusers writes diffusion_pytorch_model.*, transformers model.safetensors
    and pytorch_model.bin."""
    if issubclass(expected, diffusers.ModelMixin):
        return "diffusion_pytorch_model", "diffusion_pytorch_model"
    return "model", "pytorch_model"


def _candidates(stem: str, ext: str, variant: str | None, names: Collection[str]) -> list[tuple[str, ...]]:
    """The single file, then the shard index with its shards, of one stem, format and variant, where present."""
    v = f".{variant}" if variant else ""
    found = []
    if f"{stem}{v}.{ext}" in names:
        found.append((f"{stem}{v}.{ext}",))
    # transformers and diffusers name a variant's index model.safetensors.index.fp16.json; older diffusers wrote
    # model.safetensors.fp16.index.json
    if variant:
        indexes = [f"{stem}.{ext}.index.{variant}.json", f"{stem}.{ext}.{variant}.index.json"]
    else:
        indexes = [f"{stem}.{ext}.index.json"]
    shard = re.compile(rf"{re.escape(stem + v)}-\d+-of-\d+\.{ext}")
    for index in indexes:
        if index in names:
            found.append((index, *sorted(n for n in names if shard.fullmatch(n))))
            break
    return found


def choose_weights(
    names: Collection[str],
    expected: type,
    dtype: torch.dtype | None,
    variant: str | None = None,
    allow_pickle: bool = False,
) -> Weights | None:
    """The weights among a component folder's file `names` that load as `expected` in `dtype`: the one rule the hub
    planner and the loader share, so that a download holds exactly what is read.

    Safetensors before pickle (read only with `allow_pickle`), the preferred variant (`weight_variants`) before
    the next, and of a single file and a shard index the one the library's from_pretrained takes (diffusers the
    index, transformers the file). None when the folder has no such weights."""
    safe_stem, pickle_stem = _stems(expected)
    index_first = issubclass(expected, diffusers.ModelMixin)
    for pickle in (False, True) if allow_pickle else (False,):
        stem, ext = (pickle_stem, "bin") if pickle else (safe_stem, "safetensors")
        for v in weight_variants(dtype, variant):
            found = _candidates(stem, ext, v, names)
            if found:
                return Weights(found[-1] if index_first else found[0], v, pickle)
    return None


def find_weights(
    subdir: Path,
    expected: type,
    dtype: torch.dtype | None = None,
    variant: str | None = None,
    allow_pickle: bool = False,
) -> Weights:
    """The weights of a model component (`choose_weights`), checked before anything loads them."""
    names = {p.name for p in subdir.iterdir() if p.is_file()} if subdir.is_dir() else set()
    weights = choose_weights(names, expected, dtype, variant, allow_pickle)
    if weights is None:
        pickled = choose_weights(names, expected, dtype, variant, allow_pickle=True)
        if pickled is not None:
            raise ComponentLoadError(
                f"{subdir / pickled.files[0]} is a pickle file, which can run code when loaded; only safetensors load "
                "by default (pass allow_pickle=True if you trust its source)"
            )
        raise ComponentLoadError(f"{subdir / (_stems(expected)[0] + '.safetensors')} is missing")
    for name in weights.files:
        if name.endswith(".safetensors"):
            _check_safetensors(subdir / name)
    return weights


def _check_safetensors(path: Path) -> None:
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if keys:  # reading one tensor catches a file truncated after its header
                f.get_slice(keys[-1])[:]
    except Exception as err:
        raise ComponentLoadError(f"{path} is corrupt or not a safetensors file ({err})") from err


# ----------------------------------------------------------------------------- a hub repo's files


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repo."""

    path: str  # in the repo, "/"-separated
    size: int  # bytes, as the hub lists it


def _folders(listing: Mapping[str, int]) -> dict[str, set[str]]:
    """Top-level folder -> the names of the files directly in it (a component's files)."""
    folders: dict[str, set[str]] = {}
    for path in listing:
        parts = PurePosixPath(path).parts
        if len(parts) == 2:
            folders.setdefault(parts[0], set()).add(parts[1])
    return folders


def _component_files(
    name: str, cls: type, names: set[str], dtype: torch.dtype, variant: str | None, allow_pickle: bool, where: str
) -> list[str]:
    """The files of one component folder its loader reads: a scheduler's config; a tokenizer's or image processor's
    settings (a missing tokenizer folder is allowed: the offline tokenizer stands in); a model's config and weights."""
    if issubclass(cls, SchedulerMixin):
        files = [SCHEDULER_CONFIG] if SCHEDULER_CONFIG in names else []
    elif issubclass(cls, (CLIPTokenizer, CLIPImageProcessor)):
        files = sorted(n for n in names if n.endswith((".json", ".txt")))
        if name == TOKENIZER and not files:
            return []
    else:
        weights = choose_weights(names, cls, dtype, variant, allow_pickle)
        if weights is None and choose_weights(names, cls, dtype, variant, allow_pickle=True) is not None:
            raise ValueError(
                f"{where}: {name}/ holds only pickle (.bin) weights, which can run code when loaded; "
                "pass allow_pickle=True if you trust its source"
            )
        files = [CONFIG, *weights.files] if weights is not None and CONFIG in names else []
    if not files:
        raise ValueError(
            f"{where}: the repo lists {name!r} but its {name}/ folder lacks the files a {cls.__name__} "
            f"loads from (it holds {sorted(names) or 'nothing'})"
        )
    return files


def plan_download(
    model_index: ModelIndex,
    listing: Mapping[str, int],
    kind: PipelineKind,
    dtype: torch.dtype,
    allow_pickle: bool = False,
    variant: str | None = None,
    *,
    where: str = MODEL_INDEX,
) -> list[HubFile]:
    """The files `kind`'s loader reads from a repo with this model_index.json and file listing, loading in `dtype`.

    model_index.json, then for each component the pipeline loads: a model's config.json and the weights
    pipelines.loading.choose_weights picks (the fp16 files in half precision where the repo has them, else fp32;
    never .bin without allow_pickle; a shard index with its shards), a scheduler's config, a tokenizer's or
    image processor's files. Nothing else: no safety checker, no root single-file checkpoint, no copy in the
    other precision. Raises ValueError (naming `where`) for a repo the loader could not load.
    """
    if MODEL_INDEX not in listing:
        raise ValueError(f"{where}: the repo has no {MODEL_INDEX}, so it is not a pipeline in diffusers' layout")
    folders = _folders(listing)
    paths = [MODEL_INDEX]
    for name, cls in check_components(model_index, kind, where).items():
        files = _component_files(name, cls, folders.get(name, set()), dtype, variant, allow_pickle, where)
        paths += [f"{name}/{f}" for f in files]
    return [HubFile(p, listing[p]) for p in paths]
