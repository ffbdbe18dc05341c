"""Latent diffusion (Stable Diffusion): a text-conditioned U-Net denoising inside a VAE's latent.

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
(arXiv:2112.10752), in the form of the Stable Diffusion 1.x/2.x repos. Mirrors diffusers'
`pipelines/stable_diffusion/pipeline_stable_diffusion.py` (text to image) and
`pipeline_stable_diffusion_img2img.py` step for step, so that the same weights, prompt and
generators give the same image; the parity tests hold us to it.

Stages, each a public method:
  1. encode_prompt  CLIP text encoder -> per-token hidden states (the U-Net attends to them)
  2. encode_image   (img2img) VAE encoder -> the image's clean latent
  3. denoise        UNet2DConditionModel with cross-attention, classifier-free guidance, from noise it
                    draws (text to image) or from the image's latent it noises to `strength` (img2img)
  4. decode         VAE decoder: latent (B, 4, H/8, W/8) -> image (B, 3, H, W)
Like unCLIP's stages, `denoise` sets its scheduler's timesteps and draws its own starting noise.
Entry points: `__call__` (text to image), `img2img`, and `generate_from_hidden_states` (stages 3-4 on given
hidden states, e.g. between two prompts').
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from pipelines.base import DecodesLatents, Pipeline, Run, guide, oom_guard, prepare_latents, uses
from pipelines.checks import (
    check_count,
    check_finite,
    check_guidance,
    check_negative_prompts,
    check_prompts,
    check_size,
    check_steps,
    check_strength,
    repeat_prompts,
)
from pipelines.loading import save_pipeline
from pipelines.outputs import PipelineOutput, StepCallback, StepState
from pipelines.schedulers import clean_image_from_v, min_inference_steps
from pipelines.seeds import Generators
from pipelines.settings import PipelineSettings, guidance, steps, text
from pipelines.tokenizer import tokenize


@dataclass(frozen=True)
class LatentDiffusionSettings(PipelineSettings):
    """Latent diffusion's knobs, Stable Diffusion's defaults (50 steps, guidance 7.5)."""

    steps: int = steps(50, "num_inference_steps", "Latent diffusion steps", "Steps", "unet")  # the U-Net's steps
    guidance: float = guidance(7.5, "guidance_scale", "Latent diffusion guidance", "CFG scale")
    # what guidance steers away from (the empty prompt when none)
    negative_prompt: str | None = text(
        None, "negative_prompt", "Negative prompt (latent diffusion only)", "Negative prompt"
    )


DEFAULTS = LatentDiffusionSettings()
STRENGTH = 0.8  # img2img's default: the fraction of the schedule that denoises (1 starts from pure noise)


@dataclass(frozen=True)
class HiddenStateConditioning:
    """The text encoder's hidden states a U-Net reads by cross-attention, one row per image: unCLIP's
    TextConditioning's convention (`uncond` present: guided; `batched` puts it first)."""

    cond: torch.Tensor  # (B, 77, C) the prompts' hidden states
    uncond: torch.Tensor | None  # (B, 77, C) the negative prompts'; its presence turns guidance on

    def batched(self, cfg: bool) -> torch.Tensor:
        """The hidden states a U-Net reads, batched as [uncond, cond] when guiding: (B or 2B, 77, C)."""
        return torch.cat([self.uncond, self.cond]) if cfg else self.cond


def encode_hidden_states(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompts: list[str], device: torch.device
) -> torch.Tensor:
    """A CLIP text encoder's last hidden states (B, 77, C) of `prompts`: what a latent U-Net attends to."""
    ids, mask = tokenize(tokenizer, prompts)
    # SD 1.x/2.x text encoders were trained without a padding mask; only some configs ask for one.
    use_mask = getattr(text_encoder.config, "use_attention_mask", False)
    return text_encoder(ids.to(device), attention_mask=mask.to(device) if use_mask else None)[0]


def predicted_original(
    scheduler: SchedulerMixin, step_output, sample: torch.Tensor, noise_pred: torch.Tensor, t
) -> torch.Tensor:
    """x_0 at this step: the scheduler's own estimate, else from the noise prediction (DDPM eq. 15)."""
    x0 = getattr(step_output, "pred_original_sample", None)
    if x0 is not None:
        return x0
    alpha = scheduler.alphas_cumprod.to(sample.device)[int(t)].to(sample.dtype)
    if scheduler.config.prediction_type == "v_prediction":
        return clean_image_from_v(noise_pred, sample, alpha)
    return (sample - (1 - alpha).sqrt() * noise_pred) / alpha.sqrt()


def kept_steps(num_inference_steps: int, strength: float) -> int:
    """How many of the schedule's steps img2img runs at `strength`: the least noisy ones (diffusers' get_timesteps)."""
    return min(int(num_inference_steps * strength), num_inference_steps)


class LatentDiffusion(DecodesLatents, Pipeline):
    """The latent-diffusion pipeline: text to image and image to image."""

    component_names = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")
    denoiser_names = ("unet",)
    pipeline_class_name = "StableDiffusionPipeline"

    def __init__(
        self,
        *,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: SchedulerMixin,
    ):
        self.text_encoder, self.tokenizer, self.unet, self.vae, self.scheduler = (
            text_encoder,
            tokenizer,
            unet,
            vae,
            scheduler,
        )
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        step_params = set(inspect.signature(scheduler.step).parameters)
        self._step_takes_generator = "generator" in step_params
        self._step_takes_eta = "eta" in step_params
        self._inference_only()

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    def save_pretrained(self, directory: str | Path) -> Path:
        # SD repos list a safety checker and feature extractor; we load neither, and say so.
        return save_pipeline(
            directory,
            self.pipeline_class_name,
            self.components() | {"safety_checker": None, "feature_extractor": None},
        )

    def enable_vae_slicing(self) -> None:
        """Decode a batch one image at a time: less peak memory for large batches."""
        self.vae.enable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode large images in overlapping tiles: memory that no longer grows with image area."""
        self.vae.enable_tiling()

    # ------------------------------------------------------------------ stages

    @torch.inference_mode()
    @uses("text_encoder")
    def encode_prompt(
        self, prompts: list[str], negative_prompts: list[str] | None, num_images_per_prompt: int = 1
    ) -> HiddenStateConditioning:
        """Hidden states of the prompts (and negative prompts, for guidance), one row per image."""
        n = num_images_per_prompt
        cond = self._encode_text(prompts).repeat_interleave(n, dim=0)
        uncond = None if negative_prompts is None else self._encode_text(negative_prompts).repeat_interleave(n, dim=0)
        return HiddenStateConditioning(cond, uncond)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        return encode_hidden_states(self.text_encoder, self.tokenizer, prompts, self.device)

    @torch.inference_mode()
    @uses("vae")
    def encode_image(self, image: torch.Tensor, generator: Generators, batch_size: int) -> torch.Tensor:
        """img2img's clean latent: VAE-encode (1 or B, 3, H, W) in [-1, 1] and sample the posterior,
        one sample per image -> (batch_size, 4, H/8, W/8), scaled as the U-Net expects."""
        if isinstance(generator, list):
            # One posterior sample per image from its own generator, so each image is reproducible alone.
            image = image.repeat(batch_size // image.shape[0], 1, 1, 1)
            latents = torch.cat(
                [self.vae.encode(image[i : i + 1]).latent_dist.sample(g) for i, g in enumerate(generator)]
            )
        else:
            latents = self.vae.encode(image).latent_dist.sample(generator)
            latents = latents.repeat(batch_size // latents.shape[0], 1, 1, 1)
        return latents * self.vae.config.scaling_factor  # (B, 4, H/8, W/8)

    @torch.inference_mode()
    @uses("unet")
    def denoise(
        self,
        text: HiddenStateConditioning,
        generator: Generators,
        num_inference_steps: int = DEFAULTS.steps,
        guidance_scale: float = DEFAULTS.guidance,
        callback: StepCallback | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        image_latents: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> torch.Tensor:
        """Run the U-Net down the schedule; returns the clean latent (B, 4, h, w).

        Text to image starts from noise it draws for `height` x `width` pixels (default: the model's size).
        img2img starts from `image_latents` (encode_image's): the noisiest (1 - strength) of the schedule is
        skipped and the latents are noised to the first timestep kept, with noise drawn after the posterior
        sample, as diffusers draws it.
        """
        # Timesteps, and the starting latent: fresh noise, or the image's latent noised to the first timestep kept
        if image_latents is None:
            timesteps = self._prepare_timesteps(num_inference_steps)
            latents = self._prepare_noise(text, generator, height, width)
        else:
            timesteps = self._prepare_timesteps(num_inference_steps, strength)
            latents = self._noise_to(image_latents, timesteps[:1], generator)
        # The loop: predict the noise, perform guidance, compute the previous sample
        cfg = text.uncond is not None
        hidden = text.batched(cfg)  # (B', 77, C)
        step_kwargs = {}
        if self._step_takes_generator:
            step_kwargs["generator"] = generator
        if self._step_takes_eta:
            step_kwargs["eta"] = 0.0
        scheduler = self.scheduler
        for i, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=hidden).sample
            if cfg:
                noise_pred = guide(noise_pred, guidance_scale)
            step = scheduler.step(noise_pred, t, latents, **step_kwargs)
            if callback is not None:
                denoised = predicted_original(scheduler, step, latents, noise_pred, t)
                callback(StepState("unet", i, len(timesteps), int(t), step.prev_sample, denoised))
            latents = step.prev_sample
        return latents

    def _prepare_timesteps(self, num_inference_steps: int, strength: float | None = None) -> torch.Tensor:
        """Set the scheduler's timesteps and return them; with a `strength`, only the last kept_steps of them."""
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        if strength is None:
            return self.scheduler.timesteps
        t_start = (num_inference_steps - kept_steps(num_inference_steps, strength)) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start)
        return self.scheduler.timesteps[t_start:]

    def _prepare_noise(
        self, text: HiddenStateConditioning, generator: Generators, height: int | None, width: int | None
    ) -> torch.Tensor:
        """Text to image's starting latent: noise at the scheduler's initial scale, one row per image."""
        height = self.image_size if height is None else height
        width = self.image_size if width is None else width
        f = self.vae_scale_factor
        shape = (text.cond.shape[0], self.unet.config.in_channels, height // f, width // f)
        return prepare_latents(shape, self.scheduler, generator, self.device, text.cond.dtype)

    def _noise_to(self, latents: torch.Tensor, timestep: torch.Tensor, generator: Generators) -> torch.Tensor:
        """img2img's starting latent: the clean latents noised to `timestep` (1,) by the forward process."""
        noise = randn_tensor(latents.shape, generator=generator, device=self.device, dtype=latents.dtype)
        return self.scheduler.add_noise(latents, noise, timestep.repeat(latents.shape[0]))

    # ------------------------------------------------------------------ entry points

    def _check_common(self, prompt, negative_prompt, num_images_per_prompt, num_inference_steps, guidance_scale):
        prompts = check_prompts(prompt)
        negatives = check_negative_prompts(negative_prompt, len(prompts))
        n = check_count(num_images_per_prompt, "num_images_per_prompt")
        return prompts, negatives, n, *self._check_denoising(num_inference_steps, guidance_scale)

    def _check_denoising(self, num_inference_steps: int, guidance_scale: float) -> tuple[int, float]:
        minimum = min_inference_steps(self.scheduler)
        steps = check_steps(num_inference_steps, "num_inference_steps", minimum, "latent diffusion's scheduler")
        return steps, check_guidance(guidance_scale, "guidance_scale")

    @oom_guard
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = DEFAULTS.steps,
        guidance_scale: float = DEFAULTS.guidance,
        height: int | None = None,
        width: int | None = None,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        # 1. Check inputs
        prompts, negatives, n, steps, scale = self._check_common(
            prompt, negative_prompt, num_images_per_prompt, num_inference_steps, guidance_scale
        )
        height = check_size(self.image_size if height is None else height, self.vae_scale_factor, "height")
        width = check_size(self.image_size if width is None else width, self.vae_scale_factor, "width")
        run = self._begin(len(prompts) * n, seed, generator)

        # 2. Encode the prompt (and the negative prompt when guiding)
        with run.stage("text_encoder"):
            text = self.encode_prompt(prompts, negatives if scale > 1.0 else None, n)
        # 3. Denoising loop, from noise drawn in the latent, and 4. decode
        image = self._generate(run, text, steps, scale, callback, height, width)
        return self._output(image, run, repeat_prompts(prompts, n))

    @oom_guard
    def generate_from_hidden_states(
        self,
        text: HiddenStateConditioning,
        *,
        num_inference_steps: int = DEFAULTS.steps,
        guidance_scale: float = DEFAULTS.guidance,
        height: int | None = None,
        width: int | None = None,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        """Text to image from given text-encoder hidden states (encode_prompt's, B rows; guidance needs the negative
        prompt's, `text.uncond`): the U-Net reads nothing else of the text, so a walk between prompts moves these."""
        # 1. Check inputs
        width_c = self.unet.config.cross_attention_dim
        if not isinstance(text, HiddenStateConditioning) or text.cond.ndim != 3 or text.cond.shape[-1] != width_c:
            raise ValueError(
                f"`text` must be encode_prompt's HiddenStateConditioning, hidden states (B, 77, {width_c})"
            )
        steps, scale = self._check_denoising(num_inference_steps, guidance_scale)
        if scale > 1.0 and (text.uncond is None or text.uncond.shape != text.cond.shape):
            raise ValueError(
                "guidance > 1 needs the negative prompt's hidden states, text.uncond, shaped as text.cond"
            )
        height = check_size(self.image_size if height is None else height, self.vae_scale_factor, "height")
        width = check_size(self.image_size if width is None else width, self.vae_scale_factor, "width")
        run = self._begin(len(text.cond), seed, generator)

        # 2. Denoising loop, from noise drawn in the latent, and 3. decode, as for text to image
        cond, uncond = (None if x is None else x.to(self.device, self.dtype) for x in (text.cond, text.uncond))
        text = HiddenStateConditioning(
            cond, uncond if scale > 1.0 else None
        )  # guidance only when asked for, as __call__
        image = self._generate(run, text, steps, scale, callback, height, width)
        return self._output(image, run, [""] * len(run.seeds))

    def _generate(
        self,
        run: Run,
        text: HiddenStateConditioning,
        steps: int,
        scale: float,
        callback: StepCallback | None,
        height: int,
        width: int,
    ) -> torch.Tensor:
        """A call's denoising and decoding stages, each timed and checked: hidden states -> images (B, 3, H, W)."""
        with run.stage("unet"):
            latents = self.denoise(text, run.generator, steps, scale, callback, height=height, width=width)
        check_finite(latents, "unet", {"guidance_scale": scale})
        return self.decode_stage(run, latents)

    @oom_guard
    def img2img(
        self,
        prompt: str | Sequence[str],
        image: Image.Image | torch.Tensor,
        *,
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int = DEFAULTS.steps,
        strength: float = STRENGTH,
        guidance_scale: float = DEFAULTS.guidance,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        """Start from `image` noised to `strength` (1.0: pure noise, small: close to the image)."""
        # 1. Check inputs
        prompts, negatives, n, steps, scale = self._check_common(
            prompt, negative_prompt, num_images_per_prompt, num_inference_steps, guidance_scale
        )
        strength = check_strength(strength)
        if kept_steps(steps, strength) < 1:
            raise ValueError(f"strength {strength} of {steps} steps leaves no denoising step: raise one of them")
        if not isinstance(image, (Image.Image, torch.Tensor)):
            raise ValueError(
                f"`image` must be a PIL image or a (B, 3, H, W) tensor in [-1, 1], got {type(image).__name__}"
            )
        run = self._begin(len(prompts) * n, seed, generator)

        # 2. Encode the prompt
        with run.stage("text_encoder"):
            text = self.encode_prompt(prompts, negatives if scale > 1.0 else None, n)
        # 3. Encode the image: a posterior sample of its latent per image
        pixels = self.image_processor.preprocess(image).to(self.device, text.cond.dtype)  # (1, 3, H, W)
        with run.stage("vae_encode"):
            image_latents = self.encode_image(pixels, run.generator, len(run.seeds))
        # 4. Denoising loop, from the latent noised to the first timestep that `strength` keeps
        with run.stage("unet"):
            latents = self.denoise(
                text, run.generator, steps, scale, callback, image_latents=image_latents, strength=strength
            )
        check_finite(latents, "unet", {"guidance_scale": scale, "strength": float(strength)})
        # 5. Decode
        out = self.decode_stage(run, latents)

        return self._output(out, run, repeat_prompts(prompts, n))
