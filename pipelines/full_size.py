"""Karlo, Stable Diffusion 1.5 and the CLIP judge at full size, built from their configs with random weights.

The configs are the hub repos' `config.json` / `scheduler_config.json` files, kept in
`pipelines/configs/` (its README says where each came from; Karlo's are rebuilt from the script
that made its hub repo), so nothing is downloaded. Built on the meta device a model allocates
nothing: count its parameters, read its structure. Built on a GPU its weights are random, each
component's drawn from `seed`: good for timing and memory, never for images.
The judge is open_clip's ViT-L-14, from the model config open_clip ships.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, CLIPTextModelWithProjection, PreTrainedModel

from pipelines.latent_diffusion import LatentDiffusion
from pipelines.tokenizer import offline_clip_tokenizer
from pipelines.unclip import UnCLIP

CONFIGS = Path(__file__).parent / "configs"
KARLO = "karlo-v1-alpha"  # kakaobrain/karlo-v1-alpha
SD15 = "stable-diffusion-v1-5"  # stable-diffusion-v1-5 (formerly runwayml/)
JUDGE = "ViT-L-14"  # open_clip's model name; its config: open_clip.get_model_config(JUDGE)
KARLO_MODELS = ("text_encoder", "prior", "text_proj", "decoder", "super_res_first", "super_res_last")
KARLO_SCHEDULERS = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")
SD15_MODELS = ("text_encoder", "unet", "vae")
MODEL_CLASSES = (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PriorTransformer,
    UnCLIPTextProjModel,
    UNet2DConditionModel,
    UNet2DModel,
    AutoencoderKL,
)
SCHEDULER_CLASSES = (UnCLIPScheduler, PNDMScheduler)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the models can be built in
_CONFIG_FILES = ("config.json", "scheduler_config.json")


def read_config(repo: str, component: str) -> dict:
    """The hub config of `repo/component` (a model's config.json or a scheduler's scheduler_config.json)."""
    for name in _CONFIG_FILES:
        path = CONFIGS / repo / component / name
        if path.is_file():
            return json.loads(path.read_text())
    known = sorted(p.parent.relative_to(CONFIGS).as_posix() for p in CONFIGS.glob("*/*/*.json"))
    raise ValueError(f"no config for {repo}/{component}; known: {', '.join(known)}")


def _check(device: str | torch.device, dtype: torch.dtype) -> torch.device:
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{device!r} is not a torch device (try 'meta', 'cpu' or 'cuda')") from err
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}, not {dtype}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but this machine has no CUDA GPU")
    return device


@contextmanager
def _building(device: torch.device, dtype: torch.dtype, seed: int) -> Iterator[None]:
    """Construct modules directly on `device` in `dtype`, their initial weights drawn from `seed`.

    Constructors take their device, dtype and random numbers from global state, so it is set
    here and given back afterwards: the caller's RNG (forked) and default dtype are untouched.
    Building in `dtype` avoids a float32 copy, as `from_pretrained(torch_dtype=...)` does.
    """
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous_dtype)


def _class_of(config: dict, classes: tuple[type, ...]) -> type:
    """The class a config names: diffusers writes `_class_name`, transformers `architectures`."""
    name = config.get("_class_name") or config.get("architectures", [None])[0]
    by_name = {cls.__name__: cls for cls in classes}
    if name not in by_name:
        raise ValueError(f"config names class {name!r}; full_size builds only {', '.join(by_name)}")
    return by_name[name]


def build_component(
    repo: str, component: str, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32, seed: int = 0
) -> torch.nn.Module:
    """One model of `repo` (e.g. `build_component(KARLO, "decoder")`) at full size, random weights."""
    device = _check(device, dtype)
    config = read_config(repo, component)
    cls = _class_of(config, MODEL_CLASSES)
    with _building(device, dtype, seed):
        if issubclass(cls, PreTrainedModel):
            hf_config = cls.config_class.from_dict(config)
            hf_config.dtype = dtype  # the file says float32, and transformers builds sub-models in it
            return cls(hf_config)
        return cls.from_config(config)


def build_scheduler(repo: str, component: str) -> SchedulerMixin:
    config = read_config(repo, component)
    return _class_of(config, SCHEDULER_CLASSES).from_config(config)


def build_full_size_unclip(
    device: str | torch.device = "meta", dtype: torch.dtype = torch.float32, seed: int = 0
) -> UnCLIP:
    """Karlo v1 alpha: CLIP ViT-L/14 text encoder, 1B prior, 64 px decoder, two 256 px super-res U-Nets."""
    return UnCLIP(
        **{name: build_component(KARLO, name, device, dtype, seed) for name in KARLO_MODELS},
        **{name: build_scheduler(KARLO, name) for name in KARLO_SCHEDULERS},
        tokenizer=offline_clip_tokenizer(),
    )


def build_full_size_latent_diffusion(
    device: str | torch.device = "meta", dtype: torch.dtype = torch.float32, seed: int = 0
) -> LatentDiffusion:
    """Stable Diffusion 1.5: CLIP ViT-L/14 text encoder, 860M U-Net on a 64x64x4 latent, KL VAE, PNDM."""
    return LatentDiffusion(
        **{name: build_component(SD15, name, device, dtype, seed) for name in SD15_MODELS},
        scheduler=build_scheduler(SD15, "scheduler"),
        tokenizer=offline_clip_tokenizer(),
    )


def build_judge(
    device: str | torch.device = "meta", dtype: torch.dtype = torch.float32, seed: int = 0
) -> open_clip.CLIP:
    """open_clip's ViT-L-14 (image and text towers) without pretrained weights."""
    device = _check(device, dtype)
    # open_clip builds on the CPU, then moves; under the device context it skips that 1.7 GB
    # float32 CPU copy (and on meta allocates nothing at all).
    with _building(device, dtype, seed):
        return open_clip.create_model(JUDGE, pretrained=None, device=device)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts() -> dict[str, int]:
    """Parameters per component, built on the meta device.

    `text_encoder` is SD 1.5's CLIPTextModel; Karlo's is the same tower plus a 768x768
    projection, listed as `text_encoder_with_projection`.
    """
    unclip, latent_diffusion = build_full_size_unclip(), build_full_size_latent_diffusion()
    counts = {name: parameter_count(m) for name, m in latent_diffusion.modules().items()}
    counts["text_encoder_with_projection"] = parameter_count(unclip.text_encoder)
    counts |= {name: parameter_count(m) for name, m in unclip.modules().items() if name != "text_encoder"}
    counts["judge"] = parameter_count(build_judge())
    return counts
