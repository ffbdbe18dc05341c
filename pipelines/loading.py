"""Reading and writing pipelines in diffusers' hub layout.

A pipeline directory holds `model_index.json` (component name -> [library, class]) and one
subfolder per component: the layout of `kakaobrain/karlo-v1-alpha` and of the Stable Diffusion
1.x/2.x repos. Weights load from safetensors only unless the caller opts in to pickle, since
unpickling a `.bin` file can run arbitrary code. Every failure names the file at fault.

Which files a loader reads is decided here once, for a local directory and for a hub repo alike
(`pipelines.hub` plans a download with the same functions): `check_components` says which
components an architecture loads and checks each against the class model_index.json names, and
`choose_weights` picks each model's weights file among those its folder holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

import diffusers
import diffusers.pipelines.deprecated.unclip
import diffusers.pipelines.stable_diffusion
import torch
import transformers
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors import safe_open
from transformers import CLIPImageProcessor, CLIPTokenizer

from pipelines import schedulers
from pipelines.tokenizer import offline_clip_tokenizer

if TYPE_CHECKING:
    from pipelines.hub import ProgressCallback

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


def resolve_pipeline_dir(
    path_or_hub_id: str | Path,
    kind: PipelineKind,
    *,
    dtype: torch.dtype = torch.float32,
    variant: str | None = None,
    allow_pickle: bool = False,
    progress: ProgressCallback | None = None,
) -> Path:
    """A local directory as it is; a hub id ("org/name") fetched into the HF cache, only the files `kind`'s loader
    reads in `dtype` (pipelines.hub; the whole of SD 1.5's repo is 11 times what a half-precision load reads)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        if not (path / MODEL_INDEX).is_file():
            raise ValueError(f"{path} has no {MODEL_INDEX}: it is not a pipeline directory in diffusers' layout")
        return path
    if path.exists():
        raise ValueError(f"{path} is a file: give a pipeline directory (with {MODEL_INDEX}) or a hub id")
    from pipelines.hub import fetch_pipeline, is_repo_id

    if not is_repo_id(str(path_or_hub_id)):
        raise ValueError(f"{path_or_hub_id!r} is neither an existing directory nor a hub id like 'org/name'")
    return fetch_pipeline(
        str(path_or_hub_id), kind, dtype, allow_pickle=allow_pickle, variant=variant, progress=progress
    )


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


# ----------------------------------------------------------------------------- loading


def load_component(
    directory: Path,
    name: str,
    expected: type,
    *,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    variant: str | None = None,
    device: str | torch.device = "cpu",
) -> object:
    """Load `directory/name` as `expected` on `device` (schedulers: the class `model_index.json` names)."""
    subdir = directory / name
    if not subdir.is_dir():
        raise ComponentLoadError(f"{subdir} is missing (component {name!r} of {directory / MODEL_INDEX})")
    if issubclass(expected, SchedulerMixin):
        return _load_scheduler(directory, name)
    if issubclass(expected, _PROCESSORS):
        try:
            return expected.from_pretrained(str(subdir))
        except Exception as err:
            raise ComponentLoadError(f"{subdir}: cannot load {expected.__name__} ({err})") from err
    weights = find_weights(subdir, expected, dtype, variant, allow_pickle)
    if not (subdir / CONFIG).is_file():
        raise ComponentLoadError(f"{subdir / CONFIG} is missing")
    is_diffusers = issubclass(expected, diffusers.ModelMixin)
    kwargs = {
        "torch_dtype" if is_diffusers else "dtype": dtype,
        "use_safetensors": not weights.pickle,
        "variant": weights.variant,
    }  # so that from_pretrained reads the files choose_weights picked
    try:
        model = expected.from_pretrained(str(subdir), **kwargs)
    except Exception as err:
        raise ComponentLoadError(
            f"{subdir / weights.files[0]}: cannot load {expected.__name__} ({type(err).__name__}: {err})"
        ) from err
    if torch.device(device).type != "cpu":
        return model.to(device)  # the copy to the device leaves the safetensors buffer behind
    # Loaded tensors can be views into the safetensors buffer at offsets that are not 64-byte
    # aligned; CPU kernels round differently on such memory, so a reloaded model would not give
    # bit-identical images. A copy into fresh (aligned) memory makes it do so.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return model


def _load_scheduler(directory: Path, name: str) -> SchedulerMixin:
    config = directory / name / SCHEDULER_CONFIG
    entry = read_model_index(directory).get(name, [None, None])
    cls = named_class(entry) if is_listed(entry) else None
    if not (cls is not None and issubclass(cls, SchedulerMixin)):
        raise ComponentLoadError(
            f"{directory / MODEL_INDEX}: {name!r} names {entry}, not a scheduler of {sorted(_LIBRARIES)}"
        )
    try:
        return cls.from_config(json.loads(config.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise ComponentLoadError(f"{config}: cannot read scheduler config ({err})") from err


def load_tokenizer(directory: Path, name: str = TOKENIZER) -> CLIPTokenizer:
    """The model's own tokenizer folder wins; without one, the offline CLIP BPE tokenizer."""
    if (directory / name).is_dir():
        return load_component(directory, name, CLIPTokenizer)
    return offline_clip_tokenizer()


class LoadOptions(TypedDict, total=False):
    """How a pipeline loads (the keyword arguments of load_unclip and load_latent_diffusion)."""

    device: str | torch.device  # where the weights go (default "cpu")
    dtype: torch.dtype  # what they are cast to (default float32); float16 reads a repo's fp16 files where it has them
    allow_pickle: bool  # also read .bin weights, which can run code when unpickled (default False)
    variant: str | None  # a weights variant to prefer, e.g. "fp16"
    progress: ProgressCallback | None  # (repo_id, done_bytes, total_bytes) while a hub id downloads


def load_pipeline(cls: type, kind: PipelineKind, path_or_hub_id: str | Path, **options: Unpack[LoadOptions]):
    """`cls` from a directory in diffusers' layout or a hub id, fetching only what `kind` loads."""
    return cls(**load_components(kind, path_or_hub_id, **options))


def load_components(kind: PipelineKind, path_or_hub_id: str | Path, **options: Unpack[LoadOptions]) -> dict:
    """The components `kind` loads (name -> object) from a directory or a hub id, fetching only those: a whole
    pipeline's, or some of one (unCLIP's image encoder alone, pipelines.unclip.load_image_encoder)."""
    dtype, variant = options.get("dtype", torch.float32), options.get("variant")
    allow_pickle = options.get("allow_pickle", False)
    directory = resolve_pipeline_dir(
        path_or_hub_id, kind, dtype=dtype, variant=variant, allow_pickle=allow_pickle, progress=options.get("progress")
    )
    return load_pipeline_components(
        directory, kind, dtype=dtype, allow_pickle=allow_pickle, variant=variant, device=options.get("device", "cpu")
    )


def load_pipeline_components(
    directory: Path,
    kind: PipelineKind,
    *,
    dtype: torch.dtype,
    allow_pickle: bool,
    variant: str | None,
    device: str | torch.device,
) -> dict[str, object]:
    """Every component `kind` loads from `directory`, its tokenizer included when it reads one (`load_tokenizer`)."""
    components = check_components(read_model_index(directory), kind, directory / MODEL_INDEX)
    loaded: dict[str, object] = {
        name: load_component(
            directory, name, cls, dtype=dtype, allow_pickle=allow_pickle, variant=variant, device=device
        )
        for name, cls in components.items()
        if name != TOKENIZER
    }
    return {**loaded, TOKENIZER: load_tokenizer(directory)} if kind.tokenizer else loaded


def library_of(obj: object) -> str:
    module = type(obj).__module__
    if module.startswith("transformers"):
        return "transformers"
    if ".unclip." in module:
        return "unclip"  # Karlo's model_index.json names text_proj this way
    if ".stable_diffusion." in module:
        return "stable_diffusion"  # as stabilityai's unCLIP repos name the image normalizer
    if module == schedulers.__name__:
        return module  # the full module path: diffusers finds a library outside its own by it in sys.modules
    return "diffusers"


def save_pipeline(directory: str | Path, class_name: str, components: dict[str, object]) -> Path:
    """Write components in diffusers' hub layout (safetensors), loadable by our loaders and diffusers'."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, object] = {"_class_name": class_name, "_diffusers_version": diffusers.__version__}
    for name, component in components.items():
        if component is None:
            index[name] = [None, None]
            continue
        index[name] = [library_of(component), type(component).__name__]
        if isinstance(component, SchedulerMixin):
            component.save_config(directory / name)
        elif hasattr(component, "save_pretrained"):
            kwargs = {} if isinstance(component, _PROCESSORS) else {"safe_serialization": True}
            component.save_pretrained(directory / name, **kwargs)
    (directory / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return directory
