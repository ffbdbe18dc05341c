"""Loading and saving pipelines in diffusers' hub layout, from a local directory or a hub id.

Which components and weights files load is decided in `pipelines.layout` (for a hub id, `pipelines.hub` fetches
exactly those first); here each component is read as the class its architecture expects. Every failure names the
file at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict, Unpack

import diffusers
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTokenizer

from pipelines import schedulers
from pipelines.hub import ProgressCallback, fetch_pipeline, is_repo_id
from pipelines.layout import (
    _LIBRARIES,
    _PROCESSORS,
    CONFIG,
    MODEL_INDEX,
    SCHEDULER_CONFIG,
    TOKENIZER,
    ComponentLoadError,
    PipelineKind,
    check_components,
    find_weights,
    is_listed,
    named_class,
    read_model_index,
)
from pipelines.tokenizer import offline_clip_tokenizer


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

    if not is_repo_id(str(path_or_hub_id)):
        raise ValueError(f"{path_or_hub_id!r} is neither an existing directory nor a hub id like 'org/name'")
    return fetch_pipeline(
        str(path_or_hub_id), kind, dtype, allow_pickle=allow_pickle, variant=variant, progress=progress
    )


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
