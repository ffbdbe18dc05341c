"""The Shapes lab's models: one frozen config per trained part, and builders that turn a config
into the very classes Karlo and Stable Diffusion ship (transformers' CLIP, diffusers' PriorTransformer,
UnCLIPTextProjModel, UNet2DConditionModel, UNet2DModel, AutoencoderKL), so the same loaders load them.

Sizes are chosen for `make train` on a 2-core CPU, shipped weights (fp16) within 40 MB. Both
generators diffuse on a 16 x 16 grid: unCLIP's decoder in pixels (16 x 16 x 3, then a 16 -> 32
super-resolution), latent diffusion in a 16 x 16 x 4 VAE latent; their U-Nets have the same widths and
depths, so they differ in what they condition on and where they denoise, not in capacity. At 16 x 16
the first level's width sets the cost, hence the narrow first levels. The two generators get about the
same training compute; `--steps-scale` scales every part. Each part's measured cost, and what the
settings below were chosen against: lab/README.md ("The models", "Training").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import open_clip
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PriorTransformer,
    UnCLIPScheduler,
    UNet2DConditionModel,
    UNet2DModel,
)
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModelWithProjection,
)

from lab.data import IMAGE_SIZE
from lab.stable_unclip import StableUnclipConfig
from lab.trainer import TrainConfig, seeded
from pipelines.schedulers import KARLO_PREDICTION_TYPES, SD_BETAS, UnCLIPVScheduler, check_prediction_type
from pipelines.tokenizer import MODEL_MAX_LENGTH

VOCAB_SIZE = 49408  # the real CLIP BPE vocabulary (pipelines.tokenizer)
BOS_ID, EOS_ID = 49406, 49407  # <|startoftext|>, <|endoftext|>; the offline tokenizer pads with EOS
LOW_RES = IMAGE_SIZE // 2  # unCLIP's decoder works at half resolution, as Karlo's 64 px under 256 px


# ----------------------------------------------------------------------------- the two CLIPs


@dataclass(frozen=True)
class ClipConfig:
    """The generator CLIP: its text tower encodes prompts for both generators, its vision tower
    gives unCLIP its image embeddings."""

    width: int = 64  # text width = joint embedding size (PriorTransformer reads text states of its embedding_dim)
    text_layers: int = 4  # text transformer blocks
    text_heads: int = 4  # text attention heads
    vision_width: int = 96  # ViT width
    vision_layers: int = 4  # ViT blocks
    vision_heads: int = 4  # ViT attention heads
    patch_size: int = 8  # 4 x 4 patches: in equal time, 2x the steps and 2x the retrieval accuracy of 4 px patches
    p_swap: float = 0.25  # chance a two-object scene brings its swapped twin, so word order must be read
    # cost, and what 1,600 steps reached: see lab/README.md, "Training"
    train: TrainConfig = TrainConfig(steps=2000, batch_size=128, lr=1e-3, weight_decay=0.1)


@dataclass(frozen=True)
class JudgeConfig:
    """The judge: an open_clip CLIP of its own width, depth and seed, trained on the same world, used
    only to score generated images (the generators never see it)."""

    embed_dim: int = 48  # joint embedding size (the generator CLIP's: 64)
    text_width: int = 24  # text width; its own 49,408 x width token table dominates its size
    text_layers: int = 3  # text transformer blocks (generator: 4)
    text_heads: int = 3  # text attention heads
    vision_width: int = 64  # ViT width (generator: 96)
    vision_layers: int = 6  # ViT blocks (generator: 4)
    vision_head_width: int = 16  # open_clip sets heads = width / head_width
    patch_size: int = 8  # 32 px -> 4 x 4 patches
    max_noise: float = 0.1  # images get Gaussian noise of a random std up to this: it will judge imperfect samples
    # as ClipConfig.p_swap, higher: at 0.25 it reversed relations (see lab/README.md, "Training")
    p_swap: float = 0.5
    train: TrainConfig = TrainConfig(steps=1700, batch_size=128, lr=1e-3, weight_decay=0.1, seed=1)


def build_clip(config: ClipConfig) -> CLIPModel:
    text = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=config.width,
        intermediate_size=4 * config.width,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    vision = dict(
        hidden_size=config.vision_width,
        intermediate_size=4 * config.vision_width,
        image_size=IMAGE_SIZE,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        patch_size=config.patch_size,
    )
    with seeded(config.train.seed):
        return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=config.width))


def _tower(model_class: type, tower_config, clip: CLIPModel, prefix: str, projection_dim: int | None = None):
    """A tower of a trained CLIPModel as the stand-alone class the pipelines load. The towers with a
    projection share CLIPModel's state-dict keys; transformers 5's CLIPTextModel drops the `text_model.`
    prefix, hence the fallback."""
    config = copy.deepcopy(tower_config)
    if projection_dim is not None:
        config.projection_dim = projection_dim
    tower = model_class(config)
    state = clip.state_dict()
    tower.load_state_dict({k: state[k] if k in state else state[prefix + k] for k in tower.state_dict()})
    return tower.eval()


def text_encoder_of(clip: CLIPModel, with_projection: bool) -> CLIPTextModelWithProjection | CLIPTextModel:
    """unCLIP's text encoder (with projection) or latent diffusion's (hidden states only): same weights."""
    if with_projection:
        return _tower(
            CLIPTextModelWithProjection, clip.config.text_config, clip, "text_model.", clip.config.projection_dim
        )
    return _tower(CLIPTextModel, clip.config.text_config, clip, "text_model.")


def image_encoder_of(clip: CLIPModel) -> CLIPVisionModelWithProjection:
    return _tower(
        CLIPVisionModelWithProjection, clip.config.vision_config, clip, "vision_model.", clip.config.projection_dim
    )


def feature_extractor() -> CLIPImageProcessor:
    """Maps [0, 1] pixels to the [-1, 1] the vision tower trained on (not OpenAI's mean and std)."""
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=Image.Resampling.BICUBIC,
    )


def judge_open_clip_config(config: JudgeConfig) -> dict:
    """The judge's open_clip config file (the `local-dir:` layout open_clip loads)."""
    return {
        "model_cfg": {
            "embed_dim": config.embed_dim,
            "vision_cfg": {
                "image_size": IMAGE_SIZE,
                "layers": config.vision_layers,
                "width": config.vision_width,
                "head_width": config.vision_head_width,
                "patch_size": config.patch_size,
            },
            "text_cfg": {
                "context_length": MODEL_MAX_LENGTH,
                "vocab_size": VOCAB_SIZE,
                "width": config.text_width,
                "heads": config.text_heads,
                "layers": config.text_layers,
            },
        },
        "preprocess_cfg": {
            "size": IMAGE_SIZE,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }


def build_judge(config: JudgeConfig) -> open_clip.CLIP:
    with seeded(config.train.seed):
        return open_clip.CLIP(**judge_open_clip_config(config)["model_cfg"])


# ----------------------------------------------------------------------------- unCLIP


@dataclass(frozen=True)
class PriorConfig:
    """Karlo's prior scaled down: a causal transformer over [text tokens, text embedding, timestep,
    noisy image embedding, query] that predicts the clean CLIP image embedding ("sample")."""

    layers: int = 4  # transformer blocks (Karlo: 20)
    heads: int = 4  # attention heads (Karlo: 32)
    head_dim: int = 24  # inner width = heads * head_dim (Karlo: 2048)
    p_uncond: float = 0.1  # caption dropped to "" (the pipeline's unconditional prompt) for guidance
    stats_samples: int = 4096  # images whose CLIP image embeddings set clip_mean and clip_std
    train: TrainConfig = TrainConfig(steps=800, batch_size=64, lr=5e-4, ema_decay=0.999)


@dataclass(frozen=True)
class DecoderConfig:
    """Karlo's decoder scaled down: a GLIDE-style pixel U-Net at 16 x 16 conditioned on the CLIP image
    embedding through UnCLIPTextProjModel (extra context tokens and a time-embedding offset) and on
    the caption's hidden states, predicting v and a learned variance range (6 channels)."""

    block_out_channels: tuple[int, ...] = (32, 64, 128)  # 16 -> 8 -> 4 px (Karlo: 320 ... 1280)
    layers_per_block: int = 1  # ResNet blocks per level (Karlo: 3)
    head_dim: int = 32  # attention head width (Karlo: 64)
    cross_attention_dim: int = 128  # width of the context tokens (Karlo: 1536)
    extra_context_tokens: int = 4  # tokens made from the image embedding (Karlo: 4)
    p_uncond: float = 0.1  # image embedding -> learned CFG embedding and caption -> "": the pipeline's uncond
    p_drop_text: float = 0.1  # caption -> "" alone: what image variations condition on
    vlb_weight: float = 1.0  # weight of the variational bound term (see lab.losses.hybrid_vlb_term)
    # v (pipelines.schedulers.UnCLIPVScheduler), not Karlo's "epsilon": the noise left saturated colour
    # backgrounds (see lab/README.md, "What the denoisers predict")
    prediction_type: str = "v_prediction"
    # steps, not samples, were what it lacked (see lab/README.md, "unCLIP's decoder")
    train: TrainConfig = TrainConfig(steps=2400, batch_size=32, lr=1e-3, ema_decay=0.999)

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction_type)  # UnCLIPVScheduler samples all three


@dataclass(frozen=True)
class SuperResConfig:
    """Karlo's super-resolution scaled down: an attention-free U-Net taking the noisy 32 px image and
    the bicubic upscale of the 16 px one (6 channels); Karlo's first and last models share its weights."""

    block_out_channels: tuple[int, ...] = (32, 32, 64)  # 32 -> 16 -> 8 px
    layers_per_block: int = 1  # ResNet blocks per level (Karlo: 3)
    max_aug_noise: float = (
        0.15  # the low-res condition gets noise of a random std up to this (robust to decoder errors)
    )
    # the clean image: predicting the noise turned black backgrounds grey (lab/README.md, "What the denoisers predict")
    prediction_type: str = "sample"
    train: TrainConfig = TrainConfig(steps=600, batch_size=32, lr=5e-4, ema_decay=0.999)

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction_type, KARLO_PREDICTION_TYPES)  # super_res_scheduler is Karlo's


def build_prior(config: PriorConfig, embed_dim: int) -> PriorTransformer:
    with seeded(config.train.seed):
        prior = PriorTransformer(
            num_attention_heads=config.heads,
            attention_head_dim=config.head_dim,
            num_layers=config.layers,
            embedding_dim=embed_dim,
            num_embeddings=MODEL_MAX_LENGTH,
        )
    prior.clip_mean.requires_grad_(False)  # statistics of the data, set before training, not learned
    prior.clip_std.requires_grad_(False)
    return prior


def build_text_proj(config: DecoderConfig, embed_dim: int) -> UnCLIPTextProjModel:
    with seeded(config.train.seed):
        return UnCLIPTextProjModel(
            clip_extra_context_tokens=config.extra_context_tokens,
            clip_embeddings_dim=embed_dim,
            time_embed_dim=4 * config.block_out_channels[0],
            cross_attention_dim=config.cross_attention_dim,
        )


def build_decoder(config: DecoderConfig) -> UNet2DConditionModel:
    n = len(config.block_out_channels)
    with seeded(config.train.seed):
        return UNet2DConditionModel(
            sample_size=LOW_RES,
            in_channels=3,
            out_channels=6,  # 6: v and the variance interpolation
            down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("SimpleCrossAttnUpBlock2D",) * (n - 1) + ("ResnetUpsampleBlock2D",),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            cross_attention_dim=config.cross_attention_dim,
            attention_head_dim=config.head_dim,
            resnet_time_scale_shift="scale_shift",
            class_embed_type="identity",
        )


def build_super_res(config: SuperResConfig) -> UNet2DModel:
    n = len(config.block_out_channels)
    with seeded(config.train.seed):
        return UNet2DModel(
            sample_size=IMAGE_SIZE,
            in_channels=6,
            out_channels=3,
            layers_per_block=config.layers_per_block,
            block_out_channels=config.block_out_channels,
            add_attention=False,
            down_block_types=("ResnetDownsampleBlock2D",) * n,
            up_block_types=("ResnetUpsampleBlock2D",) * n,
        )


def prior_scheduler() -> UnCLIPScheduler:
    """Karlo's: cosine betas, predicts the clean embedding, clipped to +-5 (normalised units)."""
    return UnCLIPScheduler(
        variance_type="fixed_small_log", prediction_type="sample", clip_sample=True, clip_sample_range=5.0
    )


def decoder_scheduler(prediction_type: str = DecoderConfig.prediction_type) -> UnCLIPVScheduler:
    return UnCLIPVScheduler(
        variance_type="learned_range", prediction_type=prediction_type, clip_sample=True, clip_sample_range=1.0
    )


def super_res_scheduler(prediction_type: str = SuperResConfig.prediction_type) -> UnCLIPScheduler:
    return UnCLIPScheduler(
        variance_type="fixed_small_log", prediction_type=prediction_type, clip_sample=True, clip_sample_range=1.0
    )


# ----------------------------------------------------------------------------- latent diffusion


@dataclass(frozen=True)
class VaeConfig:
    """SD's AutoencoderKL scaled down: 32 px -> a 16 x 16 x 4 latent (f = 2)."""

    block_out_channels: tuple[int, ...] = (16, 32)  # one downsampling per extra level (SD: 128 ... 512, f = 8)
    layers_per_block: int = 1  # ResNet blocks per level (SD: 2)
    norm_groups: int = 8  # GroupNorm groups (diffusers' 32 would leave 16 channels one per group)
    kl_weight: float = 1e-6  # SD's: the latent stays near-deterministic, scaling_factor rescales it
    # the posterior's log variance starts here, not at 0: a short run cannot shrink a unit std by itself,
    # and a noisy latent is noise the U-Net can never predict (see lab/README.md, "The VAE's objective")
    init_logvar: float = -10.0
    foreground_weight: float = 10.0  # object pixels weigh this much more in the loss (lab.losses.foreground_weights)
    scaling_samples: int = 2048  # images whose latent std sets scaling_factor
    # small batches buy steps (see lab/README.md, "Training")
    train: TrainConfig = TrainConfig(steps=1800, batch_size=16, lr=2e-3)


@dataclass(frozen=True)
class LdUnetConfig:
    """SD's U-Net scaled down: the decoder's widths and depths, cross-attention on the caption's hidden states."""

    block_out_channels: tuple[int, ...] = (32, 64, 128)  # 16 -> 8 -> 4 latent px (SD: 320 ... 1280)
    layers_per_block: int = 1  # ResNet (+ transformer) blocks per level (SD: 2)
    heads: int = 4  # cross-attention heads (diffusers names this attention_head_dim for SD's U-Net)
    p_uncond: float = 0.1  # caption -> "" for classifier-free guidance
    # SD 2's v: SD 1's noise loss left stray strokes beside the object (lab/README.md, "What the denoisers predict")
    prediction_type: str = "v_prediction"
    train: TrainConfig = TrainConfig(steps=1550, batch_size=64, lr=5e-4, ema_decay=0.999)

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction_type)  # DDIMScheduler samples all three


def build_vae(config: VaeConfig) -> AutoencoderKL:
    n = len(config.block_out_channels)
    with seeded(config.train.seed):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            sample_size=IMAGE_SIZE,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_groups,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
        )
    # quant_conv, the 1 x 1 conv after the encoder, outputs (mean, log variance) per latent channel
    with torch.no_grad():
        channels = vae.config.latent_channels
        vae.quant_conv.weight[channels:].zero_()
        vae.quant_conv.bias[channels:].fill_(config.init_logvar)
    return vae


def build_ld_unet(
    config: LdUnetConfig, latent_size: int, cross_attention_dim: int, **conditioning
) -> UNet2DConditionModel:
    """SD's U-Net; `conditioning` adds to what it reads besides the caption (the third model: an image embedding)."""
    n = len(config.block_out_channels)
    with seeded(config.train.seed):
        return UNet2DConditionModel(
            sample_size=latent_size,
            in_channels=4,
            out_channels=4,
            layers_per_block=config.layers_per_block,
            block_out_channels=config.block_out_channels,
            cross_attention_dim=cross_attention_dim,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
            attention_head_dim=config.heads,
            **conditioning,
        )


def build_stable_unclip_unet(
    config: StableUnclipConfig, latent_size: int, cross_attention_dim: int, embed_dim: int
) -> UNet2DConditionModel:
    """Latent diffusion's U-Net builder, with the image embedding and its level projected into the time embedding."""
    return build_ld_unet(
        config,
        latent_size,
        cross_attention_dim,
        class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * embed_dim,
    )


def ld_scheduler(prediction_type: str = LdUnetConfig.prediction_type) -> DDIMScheduler:
    """SD's training betas; DDIM rather than SD's PNDM: deterministic and steadier with few steps on small models."""
    return DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, prediction_type=prediction_type)


# ----------------------------------------------------------------------------- all parts


@dataclass(frozen=True)
class LabConfig:
    """Every part's config; `lab.train` trains them in dependency order."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    vae: VaeConfig = field(default_factory=VaeConfig)
    ld_unet: LdUnetConfig = field(default_factory=LdUnetConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    super_res: SuperResConfig = field(default_factory=SuperResConfig)
    stable_unclip: StableUnclipConfig = field(default_factory=StableUnclipConfig)
