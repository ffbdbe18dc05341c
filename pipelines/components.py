"""Which components each architecture loads from a pipeline in diffusers' layout, and its loader.

A `PipelineKind` names the components (model_index.json entries) and the class each loads as;
pipelines.loading reads them from a directory or, through pipelines.hub, from the hub, fetching only those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from diffusers import AutoencoderKL, PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import (
    CLIPImageProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from pipelines.latent_diffusion import LatentDiffusion
from pipelines.layout import ModelIndex, PipelineKind, is_listed
from pipelines.loading import LoadOptions, load_components, load_pipeline
from pipelines.stable_unclip import StableUnCLIP
from pipelines.unclip import UnCLIP

# ----------------------------------------------------------------------------- unCLIP

_UNCLIP_MODELS: dict[str, type] = {
    "text_encoder": CLIPTextModelWithProjection,
    "prior": PriorTransformer,
    "prior_scheduler": UnCLIPScheduler,
    "text_proj": UnCLIPTextProjModel,
    "decoder": UNet2DConditionModel,
    "decoder_scheduler": UnCLIPScheduler,
    "super_res_first": UNet2DModel,
    "super_res_last": UNet2DModel,
    "super_res_scheduler": UnCLIPScheduler,
}
# Present in Karlo's image-variations repo, which has no prior.
_OPTIONAL: dict[str, type] = {"image_encoder": CLIPVisionModelWithProjection, "feature_extractor": CLIPImageProcessor}


def unclip_components(index: ModelIndex) -> dict[str, type]:
    """The components load_unclip reads from a pipeline with this model_index.json: Karlo's, with the image
    encoder where the index lists one; without a prior where it lists an image encoder instead (image variations)."""
    listed = {name for name, entry in index.items() if is_listed(entry)}
    skip = set(_OPTIONAL) - listed
    if "prior" not in listed and "image_encoder" in listed:
        skip |= {"prior", "prior_scheduler"}
    return {name: cls for name, cls in (_UNCLIP_MODELS | _OPTIONAL).items() if name not in skip}


UNCLIP = PipelineKind("unclip", unclip_components)
# The image encoder and its processor alone, from a repo that has them (Karlo's image variations): not its decoder,
# super-resolution or text encoder, which a text-to-image model has already.
IMAGE_ENCODER = PipelineKind("unCLIP image encoder", lambda index: dict(_OPTIONAL), tokenizer=False)


def load_unclip(path_or_hub_id: str | Path = "kakaobrain/karlo-v1-alpha", **options: Unpack[LoadOptions]) -> UnCLIP:
    """Load an unCLIP pipeline from a directory in diffusers' layout or a hub id (pipelines.loading.LoadOptions)."""
    return load_pipeline(UnCLIP, UNCLIP, path_or_hub_id, **options)


def load_image_encoder(
    path_or_hub_id: str | Path = "kakaobrain/karlo-v1-alpha-image-variations", **options: Unpack[LoadOptions]
) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    """The image encoder and feature extractor of an unCLIP pipeline, fetching those two components only (for
    `UnCLIP.attach_image_encoder`)."""
    loaded = load_components(IMAGE_ENCODER, path_or_hub_id, **options)
    return loaded["image_encoder"], loaded["feature_extractor"]


# ----------------------------------------------------------------------------- latent diffusion

_LD_MODELS: dict[str, type] = {
    "text_encoder": CLIPTextModel,
    "unet": UNet2DConditionModel,
    "vae": AutoencoderKL,
    "scheduler": SchedulerMixin,
}
# The safety checker (and its feature extractor) the SD repos list are not loaded: this is a research tool that
# shows what the architecture itself produces.
LATENT_DIFFUSION = PipelineKind("latent_diffusion", lambda index: dict(_LD_MODELS))


def load_latent_diffusion(
    path_or_hub_id: str | Path = "stable-diffusion-v1-5/stable-diffusion-v1-5", **options: Unpack[LoadOptions]
) -> LatentDiffusion:
    """Load a Stable Diffusion 1.x/2.x pipeline from a directory in diffusers' layout or a hub id
    (pipelines.loading.LoadOptions). The SD repos' safety checker is not loaded."""
    return load_pipeline(LatentDiffusion, LATENT_DIFFUSION, path_or_hub_id, **options)


# ----------------------------------------------------------------------------- Stable unCLIP

_STABLE_UNCLIP_MODELS: dict[str, type] = {
    "image_normalizer": StableUnCLIPImageNormalizer,
    "image_noising_scheduler": SchedulerMixin,
    "text_encoder": CLIPTextModel,
    "unet": UNet2DConditionModel,
    "scheduler": SchedulerMixin,
    "vae": AutoencoderKL,
}
# What a package may leave to the pipelines it is loaded beside (pipelines.registry: `shares`): the lab's package
# holds its U-Net alone and takes latent diffusion's CLIP and VAE, which it was trained with.
MAY_SHARE = ("text_encoder", "vae")


# A package's own prior: diffusers' StableUnCLIPPipeline saves one; stabilityai's repos have none
_PRIOR_MODELS: dict[str, type] = {
    "prior_tokenizer": CLIPTokenizer,
    "prior_text_encoder": CLIPTextModelWithProjection,
    "prior": PriorTransformer,
    "prior_scheduler": SchedulerMixin,
}


def stable_unclip_components(index: ModelIndex) -> dict[str, type]:
    """The components load_stable_unclip reads from a pipeline with this model_index.json: the U-Net, its
    schedulers, the image normalizer and, where the index lists them, its text encoder and VAE, and a prior of its
    own (stabilityai's unCLIP repos have none: Karlo's comes from the unCLIP pipeline in memory, `shares`). Never
    the image encoder (read on first use, for variations alone: load_image_encoder)."""
    listed = {name for name, entry in index.items() if is_listed(entry)}
    own_prior = {n: cls for n, cls in _PRIOR_MODELS.items() if n in listed} if "prior" in listed else {}
    return {n: cls for n, cls in _STABLE_UNCLIP_MODELS.items() if n not in MAY_SHARE or n in listed} | own_prior


STABLE_UNCLIP = PipelineKind("stable_unclip", stable_unclip_components)


def load_stable_unclip(
    path_or_hub_id: str | Path = "stabilityai/stable-diffusion-2-1-unclip-small",
    *,
    shared: dict[str, object] | None = None,
    **options: Unpack[LoadOptions],
) -> StableUnCLIP:
    """Load a Stable unCLIP pipeline from a directory in diffusers' layout or a hub id (pipelines.loading.LoadOptions),
    fetching only what it reads; `shared` holds what it takes from the pipelines loaded beside it (component ->
    object: Karlo's prior and its CLIP, and whatever the package lacks of MAY_SHARE), never loaded twice."""
    loaded = load_components(STABLE_UNCLIP, path_or_hub_id, **options)
    given = {name: obj for name, obj in (shared or {}).items() if name not in loaded}
    needed = {"prior", "prior_text_encoder", "prior_tokenizer", "prior_scheduler", *MAY_SHARE} - set(loaded)
    missing = sorted(needed - set(given))
    if missing:
        raise ValueError(
            f"{path_or_hub_id} has no {', '.join(missing)} and no pipeline beside it shares one: Stable unCLIP loads "
            "with an unCLIP pipeline (its prior) and, for a package without its own text encoder or VAE, a latent "
            "diffusion one"
        )
    parts = {**given, **loaded}
    encoder = parts.get("image_encoder")
    if encoder is not None and _embedding_dim(parts) != encoder.config.projection_dim:
        # a lent image encoder of another CLIP would embed images where this U-Net never looked: variations then
        # read the package's own on first use, or say there is none
        parts.pop("image_encoder"), parts.pop("feature_extractor", None)
    _check_fits(parts, set(given), path_or_hub_id)
    return StableUnCLIP(**parts)


def _embedding_dim(parts: dict[str, object]) -> int:
    """The CLIP image embedding width the package's U-Net reads (its image normalizer's)."""
    return int(parts["image_normalizer"].mean.shape[-1])


def _check_fits(parts: dict[str, object], lent: set[str], source: str | Path) -> None:
    """A ValueError, in one sentence, when a part does not fit its U-Net (another preset's unCLIP or latent diffusion
    beside the lab's Stable unCLIP, say): when loading, not as a shape error in the middle of an image."""
    unet = parts["unet"].config
    checks = [  # (part, what, as the U-Net needs it, as the part has it)
        ("prior", "prior embedding width", _embedding_dim(parts), parts["prior"].config.embedding_dim),
        ("text_encoder", "text encoder width", unet.cross_attention_dim, parts["text_encoder"].config.hidden_size),
        ("vae", "VAE with latent channels", unet.in_channels, parts["vae"].config.latent_channels),
    ]
    lender = {
        "prior": "the unCLIP model",
        "text_encoder": "the latent diffusion model",
        "vae": "the latent diffusion model",
    }
    for part, what, needed, has in checks:
        if needed != has:
            whose = f"{lender[part]} loaded beside it lends one of {has}" if part in lent else f"its own has {has}"
            raise ValueError(
                f"Stable unCLIP from {source} needs a {what} of {needed}, and {whose}: load it beside the unCLIP and "
                "latent diffusion models it was made with, or leave it out (none in its Models field, "
                "--stable-unclip none)"
            )
