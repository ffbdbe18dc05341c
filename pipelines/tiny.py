"""Tiny, seeded, randomly initialised components of both architectures, built from configs.

The structure is Karlo's and SD's, scaled down so tests and benchmarks run in seconds on a CPU;
they use the real 49,408-token CLIP vocabulary, so the offline tokenizer feeds them as it would
feed real weights. `save_tiny(...)` writes them in diffusers' hub layout for the loaders.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from pipelines.latent_diffusion import LatentDiffusion
from pipelines.schedulers import SD_BETAS
from pipelines.stable_unclip import StableUnCLIP
from pipelines.tokenizer import offline_clip_tokenizer
from pipelines.unclip import UnCLIP

VOCAB_SIZE = 49408
EMBED_DIM = 32  # CLIP width and projection (Karlo: 768)
CROSS_ATTENTION_DIM = 64
BLOCK_CHANNELS = (32, 64)

_SD_SCHEDULERS = {
    "pndm": lambda: PNDMScheduler(**SD_BETAS, skip_prk_steps=True),
    "ddim": lambda: DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False),
    "euler": lambda: EulerDiscreteScheduler(**SD_BETAS),
    "euler_ancestral": lambda: EulerAncestralDiscreteScheduler(**SD_BETAS),
}
SD_SCHEDULERS = tuple(_SD_SCHEDULERS)


def _text_config(**extra) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=EMBED_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


def _perturb_(module: torch.nn.Module, names: tuple[str, ...], generator: torch.Generator) -> None:
    """Give parameters that start at zeros or ones (CLIP stats, CFG embedding) random values, so
    the tests would see a pipeline that used them wrongly."""
    for name in names:
        param = dict(module.named_parameters())[name]
        with torch.no_grad():
            param.copy_(param + 0.5 * torch.randn(param.shape, generator=generator).abs())


def build_tiny_unclip(seed: int = 0, image_variations: bool = False) -> UnCLIP:
    """A tiny Karlo: 32 px decoder, 64 px super-resolution."""
    torch.manual_seed(seed)  # module constructors draw their initial weights from the global RNG
    gen = torch.Generator().manual_seed(seed)
    time_embed_dim = BLOCK_CHANNELS[0] * 4
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=16, num_layers=2, embedding_dim=EMBED_DIM)
    _perturb_(prior, ("clip_mean", "clip_std"), gen)
    text_proj = UnCLIPTextProjModel(
        clip_embeddings_dim=EMBED_DIM, time_embed_dim=time_embed_dim, cross_attention_dim=CROSS_ATTENTION_DIM
    )
    _perturb_(text_proj, ("learned_classifier_free_guidance_embeddings",), gen)
    decoder = UNet2DConditionModel(
        sample_size=32,
        in_channels=3,
        out_channels=6,  # 6: noise and learned variance range
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=BLOCK_CHANNELS,
        layers_per_block=1,
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        resnet_time_scale_shift="scale_shift",
        class_embed_type="identity",
    )
    super_res = dict(
        sample_size=64,
        in_channels=6,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=BLOCK_CHANNELS,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
        up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
    )
    parts = dict(
        text_encoder=CLIPTextModelWithProjection(_text_config(projection_dim=EMBED_DIM)),
        tokenizer=offline_clip_tokenizer(),
        prior=prior,
        prior_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log", prediction_type="sample", clip_sample_range=5.0
        ),
        text_proj=text_proj,
        decoder=decoder,
        decoder_scheduler=UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_first=UNet2DModel(**super_res),
        super_res_last=UNet2DModel(**super_res),
        super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"),
    )
    if image_variations:
        vision = CLIPVisionConfig(
            hidden_size=EMBED_DIM,
            projection_dim=EMBED_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
        )
        parts |= dict(
            image_encoder=CLIPVisionModelWithProjection(vision),
            feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
        )
    return UnCLIP(**parts)


def build_tiny_latent_diffusion(seed: int = 0, scheduler: str = "pndm") -> LatentDiffusion:
    """A tiny SD: 64 px images through a 32x32x4 latent."""
    if scheduler not in _SD_SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SD_SCHEDULERS}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=BLOCK_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED_DIM,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=BLOCK_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    return LatentDiffusion(
        text_encoder=CLIPTextModel(_text_config()),
        tokenizer=offline_clip_tokenizer(),
        unet=unet,
        vae=vae,
        scheduler=_SD_SCHEDULERS[scheduler](),
    )


# The U-Net's own text encoder is another CLIP than the prior's, as in Stable unCLIP (OpenCLIP-H beside Karlo's
# CLIP-L): a width of its own, so that a pipeline mixing the two up fails.
UNET_TEXT_DIM = 48


def build_tiny_stable_unclip(seed: int = 0, scheduler: str = "ddim", prior_scheduler: str = "ddpm") -> StableUnCLIP:
    """A tiny Stable unCLIP: a tiny Karlo prior (and its CLIP) into a 64 px latent U-Net conditioned on the image
    embedding. `prior_scheduler`: "ddpm" (what diffusers' docs make of Karlo's) or "unclip" (Karlo's own)."""
    if prior_scheduler not in ("ddpm", "unclip"):
        raise ValueError(f"unknown prior scheduler {prior_scheduler!r}; choose ddpm or unclip")
    karlo = build_tiny_unclip(seed, image_variations=True)
    torch.manual_seed(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=EMBED_DIM)
    _perturb_(normalizer, ("mean", "std"), gen)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=BLOCK_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=UNET_TEXT_DIM,
        attention_head_dim=8,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * EMBED_DIM,  # the noised embedding and its noise level's embedding
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=BLOCK_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text = _text_config()
    text.hidden_size = UNET_TEXT_DIM
    karlo_prior_scheduler = karlo.prior_scheduler
    if prior_scheduler == "ddpm":
        karlo_prior_scheduler = DDPMScheduler.from_config(karlo.prior_scheduler.config)
    return StableUnCLIP(
        prior_tokenizer=karlo.tokenizer,
        prior_text_encoder=karlo.text_encoder,
        prior=karlo.prior,
        prior_scheduler=karlo_prior_scheduler,
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=offline_clip_tokenizer(),
        text_encoder=CLIPTextModel(text),
        unet=unet,
        scheduler=_SD_SCHEDULERS[scheduler](),
        vae=vae,
        image_encoder=karlo.image_encoder,
        feature_extractor=karlo.feature_extractor,
    )


def save_tiny(directory: str | Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Save a tiny unCLIP, a tiny latent diffusion and a tiny Stable unCLIP (the unCLIP's prior its own, shared, as
    stabilityai's repos leave Karlo's to Karlo's) in hub layout under `directory`."""
    directory = Path(directory)
    return (
        build_tiny_unclip(seed, image_variations=True).save_pretrained(directory / "unclip"),
        build_tiny_latent_diffusion(seed).save_pretrained(directory / "latent_diffusion"),
        build_tiny_stable_unclip(seed, prior_scheduler="unclip").save_pretrained(directory / "stable_unclip"),
    )
