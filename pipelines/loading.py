"""Reading and writing pipelines in diffusers' hub layout.

A pipeline directory holds `model_index.json` (component name -> [library, class]) and one
subfolder per component: the layout of `kakaobrain/karlo-v1-alpha` and of the Stable Diffusion
1.x/2.x repos. Weights load from safetensors only unless the caller opts in to pickle, since
unpickling a `.bin` file can run arbitrary code. Every failure names the file at fault.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import diffusers
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from safetensors import safe_open
from transformers import CLIPImageProcessor, CLIPTokenizer

from pipelines import schedulers
from pipelines.tokenizer import offline_clip_tokenizer

MODEL_INDEX = "model_index.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# diffusers models keep their weights in diffusion_pytorch_model.*, transformers models in model.*
_WEIGHT_STEMS = ("diffusion_pytorch_model", "model")


class ComponentLoadError(ValueError):
    """A component of a pipeline directory is missing or unreadable; the message names the file."""


def resolve_pipeline_dir(path_or_hub_id: str | Path, allow_pickle: bool = False) -> Path:
    """A local directory as it is; a hub id ("org/name") downloaded (or found in the HF cache)."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        if not (path / MODEL_INDEX).is_file():
            raise ValueError(f"{path} has no {MODEL_INDEX}: it is not a pipeline directory in diffusers' layout")
        return path
    if path.exists():
        raise ValueError(f"{path} is a file: give a pipeline directory (with {MODEL_INDEX}) or a hub id")
    if not _HUB_ID.match(str(path_or_hub_id)):
        raise ValueError(f"{path_or_hub_id!r} is neither an existing directory nor a hub id like 'org/name'")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors"] + (["*.bin"] if allow_pickle else [])
    try:
        return Path(snapshot_download(str(path_or_hub_id), allow_patterns=patterns))
    except Exception as err:  # offline, unknown repo, gated repo: all say the same to a user
        raise ValueError(f"could not fetch {path_or_hub_id!r} from the Hugging Face hub ({type(err).__name__}: {err})") from err


def read_model_index(directory: Path) -> dict[str, list]:
    index_file = directory / MODEL_INDEX
    try:
        index = json.loads(index_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ComponentLoadError(f"{index_file}: not readable JSON ({err})") from err
    return {k: v for k, v in index.items() if not k.startswith("_")}


def find_weights(subdir: Path, allow_pickle: bool, variant: str | None = None, expected_stem: str = _WEIGHT_STEMS[0]) -> Path:
    """The weights file (or shard index) of a model component, checked before anything loads it."""
    suffix = f".{variant}" if variant else ""
    for stem in _WEIGHT_STEMS:
        for name in (f"{stem}{suffix}.safetensors", f"{stem}.safetensors{suffix}.index.json", f"{stem}.safetensors.index.json"):
            if (subdir / name).is_file():
                weights = subdir / name
                if name.endswith(".safetensors"):
                    _check_safetensors(weights)
                return weights
    pickled = sorted(subdir.glob("*.bin"))
    if pickled and allow_pickle:
        return pickled[0]
    if pickled:
        raise ComponentLoadError(
            f"{pickled[0]} is a pickle file, which can run code when loaded; only safetensors load by default "
            "(pass allow_pickle=True if you trust its source)"
        )
    raise ComponentLoadError(f"{subdir / (expected_stem + suffix + '.safetensors')} is missing")


def _check_safetensors(path: Path) -> None:
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            if keys:  # reading one tensor catches a file truncated after its header
                f.get_slice(keys[-1])[:]
    except Exception as err:
        raise ComponentLoadError(f"{path} is corrupt or not a safetensors file ({err})") from err


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
    if issubclass(expected, (CLIPTokenizer, CLIPImageProcessor)):
        try:
            return expected.from_pretrained(str(subdir))
        except Exception as err:
            raise ComponentLoadError(f"{subdir}: cannot load {expected.__name__} ({err})") from err
    weights = find_weights(subdir, allow_pickle, variant, "diffusion_pytorch_model" if issubclass(expected, diffusers.ModelMixin) else "model")
    if not (subdir / "config.json").is_file():
        raise ComponentLoadError(f"{subdir / 'config.json'} is missing")
    is_diffusers = issubclass(expected, diffusers.ModelMixin)
    kwargs = {"torch_dtype" if is_diffusers else "dtype": dtype, "use_safetensors": not weights.suffix == ".bin"}
    if variant and f".{variant}." in weights.name:
        kwargs["variant"] = variant
    try:
        model = expected.from_pretrained(str(subdir), **kwargs)
    except Exception as err:
        raise ComponentLoadError(f"{weights}: cannot load {expected.__name__} ({type(err).__name__}: {err})") from err
    if torch.device(device).type != "cpu":
        return model.to(device)  # the copy to the device leaves the safetensors buffer behind
    # Loaded tensors can be views into the safetensors buffer at offsets that are not 64-byte
    # aligned; CPU kernels round differently on such memory, so a reloaded model would not give
    # bit-identical images. A copy into fresh (aligned) memory makes it do so.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return model


# Where a model_index.json's scheduler classes may come from: diffusers, or our own (never a module the
# file names: importing it would run code a downloaded repo chose)
_SCHEDULER_LIBRARIES = {"diffusers": diffusers, schedulers.__name__: schedulers}


def _load_scheduler(directory: Path, name: str) -> SchedulerMixin:
    config = directory / name / "scheduler_config.json"
    library, class_name = read_model_index(directory).get(name, [None, None])
    cls = getattr(_SCHEDULER_LIBRARIES.get(str(library), diffusers), str(class_name), None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ComponentLoadError(f"{directory / MODEL_INDEX}: {name!r} names {class_name!r}, not a scheduler of "
                                 f"{sorted(_SCHEDULER_LIBRARIES)}")
    try:
        return cls.from_config(json.loads(config.read_text()))
    except (OSError, json.JSONDecodeError) as err:
        raise ComponentLoadError(f"{config}: cannot read scheduler config ({err})") from err


def load_tokenizer(directory: Path, name: str = "tokenizer") -> CLIPTokenizer:
    """The model's own tokenizer folder wins; without one, the offline CLIP BPE tokenizer."""
    if (directory / name).is_dir():
        return load_component(directory, name, CLIPTokenizer)
    return offline_clip_tokenizer()


def library_of(obj: object) -> str:
    module = type(obj).__module__
    if module.startswith("transformers"):
        return "transformers"
    if ".unclip." in module:
        return "unclip"  # Karlo's model_index.json names text_proj this way
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
            kwargs = {} if isinstance(component, (CLIPTokenizer, CLIPImageProcessor)) else {"safe_serialization": True}
            component.save_pretrained(directory / name, **kwargs)
    (directory / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return directory
