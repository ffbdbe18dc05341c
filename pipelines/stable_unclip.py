"""Stable unCLIP: unCLIP's prior into a latent U-Net. Text -> CLIP image embedding -> U-Net in a VAE's latent,
conditioned on the text and on the embedding, -> image.

The model between the other two (Ramesh et al. 2022 §2 for the prior; Rombach et al. 2022 for the latent U-Net;
Stability AI's stable-diffusion-2-1-unclip, which runs Karlo's prior): unCLIP and Stable unCLIP share the prior and
differ in the space they denoise; Stable unCLIP and latent diffusion share the space and differ in what the U-Net is
conditioned on. Mirrors diffusers' `pipelines/stable_diffusion/pipeline_stable_unclip.py` (text to image) and
`pipeline_stable_unclip_img2img.py` (variations) step for step; the parity tests hold us to it.

Stages, each a public method:
  1. encode_prompt   the prior's CLIP text encoder (embedding, hidden states, mask) and the U-Net's (hidden states)
  2. run_prior       PriorTransformer denoises a CLIP image embedding from the text one (unCLIP's own loop)
  3. denoise         the embedding noise-augmented to `noise_level` (image_normalizer + image_noising_scheduler) and
                     added to the U-Net's time embedding; the U-Net denoises the latent under both conditionings
  4. decode          VAE decoder: latent (B, 4, H/8, W/8) -> image (B, 3, H, W)
Variations take an image's CLIP embedding (`encode_image`) in place of the prior's.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PriorTransformer, UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from pipelines.base import DecodesLatents, Pipeline, Run, TakesImageEmbeddings, guide, oom_guard, prepare_latents, uses
from pipelines.checks import (
    check_count,
    check_finite,
    check_guidance,
    check_negative_prompts,
    check_prompts,
    check_size,
    check_steps,
    repeat_prompts,
)
from pipelines.latent_diffusion import HiddenStateConditioning, encode_hidden_states, predicted_original
from pipelines.loading import save_pipeline
from pipelines.outputs import PipelineOutput, StepCallback, StepState
from pipelines.prior import TextConditioning, denoise_prior, encode_clip_text
from pipelines.schedulers import min_inference_steps
from pipelines.seeds import Generators
from pipelines.settings import PipelineSettings, guidance, level, steps, text

MAX_NOISE_LEVEL = 999  # the image noising scheduler's last timestep (1000 training timesteps)


@dataclass(frozen=True)
class StableUnCLIPSettings(PipelineSettings):
    """Stable unCLIP's knobs: the prior's as Karlo's (25 steps, guidance 4), the rest diffusers' defaults."""

    stable_unclip_prior_steps: int = steps(
        25, "prior_num_inference_steps", "Stable unCLIP prior steps", "Stable unCLIP prior steps", "prior", 2
    )
    stable_unclip_prior_guidance: float = guidance(
        4.0, "prior_guidance_scale", "Stable unCLIP prior guidance", "Stable unCLIP prior CFG scale"
    )
    # how much noise is added to the image embedding before the U-Net reads it: 0 keeps it, more loosens it
    noise_level: int = level(0, "noise_level", "Stable unCLIP noise level", "Noise level", MAX_NOISE_LEVEL)
    stable_unclip_steps: int = steps(20, "num_inference_steps", "Stable unCLIP steps", "Stable unCLIP steps", "unet")
    stable_unclip_guidance: float = guidance(
        10.0, "guidance_scale", "Stable unCLIP guidance", "Stable unCLIP CFG scale"
    )
    stable_unclip_negative_prompt: str | None = text(
        None, "negative_prompt", "Negative prompt (Stable unCLIP)", "Stable unCLIP negative prompt"
    )


DEFAULTS = StableUnCLIPSettings()


def noise_image_embeddings(
    image_embeds: torch.Tensor,
    noise_level: int,
    normalizer: StableUnCLIPImageNormalizer,
    noising_scheduler: SchedulerMixin,
    generator: Generators,
) -> torch.Tensor:
    """The U-Net's class labels (B, 2D): the embedding noised to `noise_level` in CLIP's normalised space, beside a
    sinusoidal embedding of the level (diffusers' noise_image_embeddings: the same draw, the same arithmetic)."""
    noise = randn_tensor(image_embeds.shape, generator=generator, device=image_embeds.device, dtype=image_embeds.dtype)
    levels = torch.tensor([noise_level] * image_embeds.shape[0], device=image_embeds.device)
    normalizer.to(image_embeds.device)
    noised = normalizer.unscale(
        noising_scheduler.add_noise(normalizer.scale(image_embeds), timesteps=levels, noise=noise)
    )
    level_embeds = get_timestep_embedding(levels, noised.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    return torch.cat((noised, level_embeds.to(noised.dtype)), 1)  # (B, 2D)


class StableUnCLIP(DecodesLatents, TakesImageEmbeddings, Pipeline):
    """The Stable unCLIP pipeline: unCLIP's prior, then a latent U-Net conditioned on its embedding."""

    component_names = (
        "prior_tokenizer",
        "prior_text_encoder",
        "prior",
        "prior_scheduler",
        "image_normalizer",
        "image_noising_scheduler",
        "tokenizer",
        "text_encoder",
        "unet",
        "scheduler",
        "vae",
        "image_encoder",
        "feature_extractor",
    )
    denoiser_names = ("prior", "unet")
    # Its package is the layout of stabilityai's unCLIP repos, diffusers' image-variations pipeline: everything but
    # the prior, which is Karlo's (shared with the unCLIP pipeline: pipelines.components.load_stable_unclip).
    pipeline_class_name = "StableUnCLIPImg2ImgPipeline"
    package_names = (
        "feature_extractor",
        "image_encoder",
        "image_normalizer",
        "image_noising_scheduler",
        "tokenizer",
        "text_encoder",
        "unet",
        "scheduler",
        "vae",
    )

    def __init__(
        self,
        *,
        prior_tokenizer: CLIPTokenizer,
        prior_text_encoder: CLIPTextModelWithProjection,
        prior: PriorTransformer,
        prior_scheduler: SchedulerMixin,
        image_normalizer: StableUnCLIPImageNormalizer,
        image_noising_scheduler: SchedulerMixin,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModel,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        vae: AutoencoderKL,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
    ):
        self.prior_tokenizer, self.prior_text_encoder = prior_tokenizer, prior_text_encoder
        self.prior, self.prior_scheduler = prior, prior_scheduler
        self.image_normalizer, self.image_noising_scheduler = image_normalizer, image_noising_scheduler
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.unet, self.scheduler, self.vae = unet, scheduler, vae
        self.image_encoder, self.feature_extractor = image_encoder, feature_extractor
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        step_params = set(inspect.signature(scheduler.step).parameters)
        self._step_kwargs = {"eta": 0.0} if "eta" in step_params else {}
        self._step_takes_generator = "generator" in step_params
        self.borrowed: dict[str, str] = {}  # component -> the architecture it is shared with (pipelines.components)
        self._inference_only()

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    embedding_reader = "this U-Net"

    @property
    def clip_embedding_dim(self) -> int:
        """The CLIP image embedding width its U-Net reads, the prior's (TakesImageEmbeddings: variations)."""
        return self.prior.config.embedding_dim

    def save_pretrained(self, directory: str | Path, without: tuple[str, ...] = ()) -> Path:
        """Its package (package_names, less `without`: what a package leaves to the pipelines beside it)."""
        components = self.components()
        return save_pipeline(
            directory,
            self.pipeline_class_name,
            {name: components.get(name) for name in self.package_names if name not in without},
        )

    def _check_denoising(self, num_inference_steps: int, guidance_scale: float, noise_level: int):
        minimum = min_inference_steps(self.scheduler)
        steps_ = check_steps(num_inference_steps, "num_inference_steps", minimum, "Stable unCLIP's scheduler")
        top = self.image_noising_scheduler.config.num_train_timesteps - 1
        if isinstance(noise_level, bool) or not isinstance(noise_level, int) or not 0 <= noise_level <= top:
            raise ValueError(f"`noise_level` must be a whole number from 0 to {top}, got {noise_level!r:.40}")
        return steps_, check_guidance(guidance_scale, "guidance_scale")

    # ------------------------------------------------------------------ stages

    @torch.inference_mode()
    @uses("prior_text_encoder", "text_encoder")
    def encode_prompt(
        self, prompts: list[str], negative_prompts: list[str] | None, n: int = 1, with_prior_uncond: bool = True
    ) -> tuple[TextConditioning, HiddenStateConditioning]:
        """The prior's conditioning (with the empty prompt's for its guidance) and the U-Net's hidden states (with
        the negative prompts' for its guidance), one row per image."""
        prior_text = encode_clip_text(self.prior_text_encoder, self.prior_tokenizer, prompts, n, self.device)
        if with_prior_uncond:
            empty = encode_clip_text(
                self.prior_text_encoder, self.prior_tokenizer, [""] * len(prompts), n, self.device
            )
            prior_text = TextConditioning(prior_text.embeds, prior_text.hidden_states, prior_text.mask, empty)
        return prior_text, self.encode_unet_prompt(prompts, negative_prompts, n)

    @torch.inference_mode()
    def encode_unet_prompt(
        self, prompts: list[str], negative_prompts: list[str] | None, n: int = 1
    ) -> HiddenStateConditioning:
        cond = encode_hidden_states(self.text_encoder, self.tokenizer, prompts, self.device).repeat_interleave(
            n, dim=0
        )
        if negative_prompts is None:
            return HiddenStateConditioning(cond, None)
        uncond = encode_hidden_states(self.text_encoder, self.tokenizer, negative_prompts, self.device)
        return HiddenStateConditioning(cond, uncond.repeat_interleave(n, dim=0))

    @torch.inference_mode()
    @uses("prior")
    def run_prior(
        self,
        text: TextConditioning,
        generator: Generators,
        num_inference_steps: int = DEFAULTS.stable_unclip_prior_steps,
        guidance_scale: float = DEFAULTS.stable_unclip_prior_guidance,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Denoise a CLIP image embedding (B, D) conditioned on the text embedding: unCLIP's prior, its loop."""
        return denoise_prior(self, text, generator, num_inference_steps, guidance_scale, callback)

    @torch.inference_mode()
    def augment(self, image_embeds: torch.Tensor, noise_level: int, generator: Generators) -> torch.Tensor:
        """The U-Net's class labels (B, 2D): the embeddings noised to `noise_level`, beside the level's embedding."""
        return noise_image_embeddings(
            image_embeds, noise_level, self.image_normalizer, self.image_noising_scheduler, generator
        )

    @torch.inference_mode()
    @uses("unet")
    def denoise(
        self,
        text: HiddenStateConditioning,
        labels: torch.Tensor,
        generator: Generators,
        num_inference_steps: int = DEFAULTS.stable_unclip_steps,
        guidance_scale: float = DEFAULTS.stable_unclip_guidance,
        callback: StepCallback | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
    ) -> torch.Tensor:
        """Run the U-Net down the schedule from fresh noise, conditioned on the text (cross-attention) and on the
        augmented image embedding `labels` (augment's; added to the time embedding, zeros for guidance's
        unconditional half); returns the clean latent (B, 4, h, w)."""
        cfg = text.uncond is not None
        hidden = text.batched(cfg)  # (B', 77, C)
        labels = torch.cat([torch.zeros_like(labels), labels]) if cfg else labels
        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = scheduler.timesteps
        f = self.vae_scale_factor
        height, width = height or self.image_size, width or self.image_size
        shape = (text.cond.shape[0], self.unet.config.in_channels, height // f, width // f)
        latents = prepare_latents(shape, scheduler, generator, self.device, text.cond.dtype)
        step_kwargs = {**self._step_kwargs, **({"generator": generator} if self._step_takes_generator else {})}
        # The loop: predict the noise, perform guidance, compute the previous sample
        for i, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=hidden, class_labels=labels).sample
            if cfg:
                noise_pred = guide(noise_pred, guidance_scale)
            step = scheduler.step(noise_pred, t, latents, **step_kwargs)
            if callback is not None:
                denoised = predicted_original(scheduler, step, latents, noise_pred, t)
                callback(StepState("unet", i, len(timesteps), int(t), step.prev_sample, denoised))
            latents = step.prev_sample
        return latents

    # ------------------------------------------------------------------ text to image

    @oom_guard
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        negative_prompt: str | Sequence[str] | None = DEFAULTS.stable_unclip_negative_prompt,
        num_images_per_prompt: int = 1,
        prior_num_inference_steps: int = DEFAULTS.stable_unclip_prior_steps,
        prior_guidance_scale: float = DEFAULTS.stable_unclip_prior_guidance,
        noise_level: int = DEFAULTS.noise_level,
        num_inference_steps: int = DEFAULTS.stable_unclip_steps,
        guidance_scale: float = DEFAULTS.stable_unclip_guidance,
        height: int | None = None,
        width: int | None = None,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        # 1. Check inputs
        prompts = check_prompts(prompt)
        negatives = check_negative_prompts(negative_prompt, len(prompts))
        n = check_count(num_images_per_prompt, "num_images_per_prompt")
        prior_steps = check_steps(
            prior_num_inference_steps,
            "prior_num_inference_steps",
            min_inference_steps(self.prior_scheduler),
            "Stable unCLIP's prior",
        )
        prior_scale = check_guidance(prior_guidance_scale, "prior_guidance_scale")
        steps_, scale = self._check_denoising(num_inference_steps, guidance_scale, noise_level)
        height = check_size(height or self.image_size, self.vae_scale_factor, "height")
        width = check_size(width or self.image_size, self.vae_scale_factor, "width")
        run = self._begin(len(prompts) * n, seed, generator)

        # 2. Encode the prompt for the prior and for the U-Net (with what each guides against)
        with run.stage("text_encoder"):
            prior_text, text = self.encode_prompt(prompts, negatives if scale > 1.0 else None, n, prior_scale > 1.0)
        # 3. Prior: text embedding -> image embedding
        with run.stage("prior"):
            image_embeds = self.run_prior(prior_text, run.generator, prior_steps, prior_scale, callback)
        check_finite(image_embeds, "prior", {"prior_guidance_scale": prior_scale})
        # 4. U-Net in the latent, conditioned on the text and the noise-augmented embedding, and 5. decode
        image = self._generate(run, text, image_embeds, steps_, scale, noise_level, callback, height, width)
        return self._output(
            image,
            run,
            repeat_prompts(prompts, n),
            image_embeds=image_embeds.float().cpu(),
            text_embeds=prior_text.embeds.float().cpu(),
        )

    def _generate(
        self,
        run: Run,
        text: HiddenStateConditioning,
        image_embeds: torch.Tensor,
        steps_: int,
        scale: float,
        noise_level: int,
        callback: StepCallback | None,
        height: int,
        width: int,
    ) -> torch.Tensor:
        """A call's denoising and decoding stages, each timed and checked: embedding and text -> images."""
        with run.stage("unet"):
            labels = self.augment(image_embeds, noise_level, run.generator)  # (B, 2D)
            latents = self.denoise(text, labels, run.generator, steps_, scale, callback, height=height, width=width)
        check_finite(latents, "unet", {"guidance_scale": scale, "noise_level": noise_level})
        return self.decode_stage(run, latents)

    # ------------------------------------------------------------------ an image's embedding in place of the prior's

    @oom_guard
    def variations(
        self,
        prompt: str | Sequence[str],
        image: Image.Image,
        *,
        negative_prompt: str | Sequence[str] | None = DEFAULTS.stable_unclip_negative_prompt,
        num_images_per_prompt: int = 1,
        noise_level: int = DEFAULTS.noise_level,
        num_inference_steps: int = DEFAULTS.stable_unclip_steps,
        guidance_scale: float = DEFAULTS.stable_unclip_guidance,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        """Variations of an image (diffusers' StableUnCLIPImg2ImgPipeline): its CLIP image embedding, noised to
        `noise_level`, conditions the U-Net in place of the prior's; the prompt (may be empty) conditions it too."""
        # 1. Check inputs
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("`prompt` must be a string (it may be empty) or a non-empty list of strings")
        if not isinstance(image, Image.Image):
            raise ValueError(f"`image` must be a PIL image, got {type(image).__name__}")
        negatives = check_negative_prompts(negative_prompt, len(prompts))
        n = check_count(num_images_per_prompt, "num_images_per_prompt")
        steps_, scale = self._check_denoising(num_inference_steps, guidance_scale, noise_level)
        run = self._begin(len(prompts) * n, seed, generator)

        # 2. Encode the prompt for the U-Net, and the image
        with run.stage("text_encoder"):
            text = self.encode_unet_prompt(prompts, negatives if scale > 1.0 else None, n)
        with run.stage("image_encoder"):
            image_embeds = self.encode_image([image])  # (1, D), repeated with its noise below, as diffusers does
        # 3. U-Net and 4. decode, as for text to image, from the image's embedding
        with run.stage("unet"):
            labels = self.augment(image_embeds, noise_level, run.generator).repeat(len(run.seeds), 1)  # (B, 2D)
            latents = self.denoise(text, labels, run.generator, steps_, scale, callback)
        check_finite(latents, "unet", {"guidance_scale": scale, "noise_level": noise_level})
        out = self.decode_stage(run, latents)
        return self._output(out, run, repeat_prompts(prompts, n), image_embeds=image_embeds.float().cpu())

    @oom_guard
    def decode_embeddings(
        self,
        image_embeds: torch.Tensor,
        prompt: str | Sequence[str] | HiddenStateConditioning,
        *,
        negative_prompt: str | Sequence[str] | None = DEFAULTS.stable_unclip_negative_prompt,
        noise_level: int = DEFAULTS.noise_level,
        num_inference_steps: int = DEFAULTS.stable_unclip_steps,
        guidance_scale: float = DEFAULTS.stable_unclip_guidance,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        """The U-Net and the VAE from given CLIP image embeddings (B, D), each with its prompt (B, or one for all) or
        the U-Net's text conditioning itself (encode_unet_prompt's, B rows, with the negative prompt's for guidance):
        for embeddings no prior drew, as interpolations and the lab's study move them (DALL·E 2 §3)."""
        # 1. Check inputs
        dim = self.prior.config.embedding_dim
        if not isinstance(image_embeds, torch.Tensor) or image_embeds.ndim != 2 or image_embeds.shape[1] != dim:
            raise ValueError(f"`image_embeds` must be a tensor (B, {dim}), got {getattr(image_embeds, 'shape', None)}")
        steps_, scale = self._check_denoising(num_inference_steps, guidance_scale, noise_level)
        if isinstance(prompt, HiddenStateConditioning):
            if len(prompt.cond) != len(image_embeds) or (scale > 1.0 and prompt.uncond is None):
                raise ValueError("`prompt` must hold a row per embedding, and the negative's for guidance > 1")
            prompts = [""] * len(image_embeds)
        else:
            prompts = [prompt] * len(image_embeds) if isinstance(prompt, str) else list(prompt)
            if len(prompts) != len(image_embeds) or not all(isinstance(p, str) for p in prompts):
                raise ValueError(f"`prompt` must be one string or {len(image_embeds)} strings, one per embedding")
        negatives = check_negative_prompts(negative_prompt, len(prompts))
        run = self._begin(len(prompts), seed, generator)

        # 2. Encode the prompts for the U-Net, then 3. U-Net and 4. decode, as for text to image
        with run.stage("text_encoder"):
            if isinstance(prompt, HiddenStateConditioning):
                text = HiddenStateConditioning(prompt.cond, prompt.uncond if scale > 1.0 else None)
            else:
                text = self.encode_unet_prompt(prompts, negatives if scale > 1.0 else None)
        embeds = image_embeds.to(self.device, text.cond.dtype)
        image = self._generate(
            run, text, embeds, steps_, scale, noise_level, callback, self.image_size, self.image_size
        )
        return self._output(image, run, prompts, image_embeds=image_embeds.float().cpu())
