"""Which components each architecture loads from a pipeline in diffusers' layout, and its loader.

A `PipelineKind` names the components (model_index.json entries) and the class each loads as;
pipelines.loading reads them from a directory or, through pipelines.hub, from the hub, fetching only those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

from diffusers import AutoencoderKL, PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from pipelines.latent_diffusion import LatentDiffusion
from pipelines.loading import LoadOptions, ModelIndex, PipelineKind, is_listed, load_components, load_pipeline
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
