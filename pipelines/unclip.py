"""unCLIP (DALL·E 2) as Karlo ships it: text -> CLIP image embedding -> 64 px image -> 256 px.

Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP Latents"
(arXiv:2204.06125), in the form of kakaobrain/karlo-v1-alpha. Mirrors diffusers'
`pipelines/deprecated/unclip/pipeline_unclip.py` (and `pipeline_unclip_image_variation.py`)
step for step, so that the same weights, prompt and generators give the same image; the parity
tests hold us to it.

Stages, each a public method:
  1. encode_prompt   CLIP text encoder -> projected text embedding, hidden states, mask
  2. run_prior       PriorTransformer denoises a CLIP *image* embedding from the text one
  3. run_decoder     UnCLIPTextProjModel + UNet2DConditionModel denoise a small image in pixel space
  4. run_super_res   UNet2DModel (first for all steps but the last, last for the last) upsamples
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer, UnCLIPScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.pipelines.deprecated.unclip import UnCLIPTextProjModel
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

from pipelines.base import Pipeline, Run, TakesImageEmbeddings, guide, oom_guard, prepare_latents, uses
from pipelines.checks import (
    check_count,
    check_finite,
    check_guidance,
    check_prompts,
    check_steps,
    repeat_prompts,
)
from pipelines.outputs import PipelineOutput, StepCallback, StepState
from pipelines.prior import TextConditioning, denoise_prior, encode_clip_text
from pipelines.schedulers import UNCLIP_MIN_STEPS, min_inference_steps
from pipelines.seeds import Generators
from pipelines.settings import PipelineSettings, guidance, steps


@dataclass(frozen=True)
class UnCLIPSettings(PipelineSettings):
    """unCLIP's knobs, Karlo's defaults (kakaobrain/karlo-v1-alpha's 25/25/7 steps, guidance 4 and 8)."""

    # denoising steps of the prior (text -> image embedding), the decoder (-> 64 px) and super-resolution (-> 256 px)
    prior_steps: int = steps(
        25, "prior_num_inference_steps", "unCLIP prior steps", "Prior steps", "prior", UNCLIP_MIN_STEPS
    )
    decoder_steps: int = steps(
        25, "decoder_num_inference_steps", "unCLIP decoder steps", "Decoder steps", "decoder", UNCLIP_MIN_STEPS
    )
    super_res_steps: int = steps(
        7, "super_res_num_inference_steps", "unCLIP super-res steps", "Super-res steps", "super_res", UNCLIP_MIN_STEPS
    )
    # classifier-free guidance of the prior and of the decoder (super-resolution takes none)
    prior_guidance: float = guidance(4.0, "prior_guidance_scale", "unCLIP prior guidance", "Prior CFG scale")
    decoder_guidance: float = guidance(8.0, "decoder_guidance_scale", "unCLIP decoder guidance", "Decoder CFG scale")


DEFAULTS = UnCLIPSettings()


def uses_guidance(prior_guidance_scale: float, decoder_guidance_scale: float) -> bool:
    """Whether text to image guides (and so encodes the empty prompt): any stage's scale above 1 turns it on."""
    return prior_guidance_scale > 1.0 or decoder_guidance_scale > 1.0


class UnCLIP(TakesImageEmbeddings, Pipeline):
    """The unCLIP pipeline: prior, decoder and super-resolution, each usable alone."""

    component_names = (
        "text_encoder",
        "tokenizer",
        "prior",
        "prior_scheduler",
        "text_proj",
        "decoder",
        "decoder_scheduler",
        "super_res_first",
        "super_res_last",
        "super_res_scheduler",
        "image_encoder",
        "feature_extractor",
    )
    denoiser_names = ("prior", "decoder", "super_res_first", "super_res_last")
    pipeline_class_name = "UnCLIPPipeline"

    def __init__(
        self,
        *,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_proj: UnCLIPTextProjModel,
        decoder: UNet2DConditionModel,
        decoder_scheduler: UnCLIPScheduler,
        super_res_first: UNet2DModel,
        super_res_last: UNet2DModel,
        super_res_scheduler: UnCLIPScheduler,
        prior: PriorTransformer | None = None,
        prior_scheduler: UnCLIPScheduler | None = None,
        image_encoder: CLIPVisionModelWithProjection | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
    ):
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.prior, self.prior_scheduler = prior, prior_scheduler
        self.text_proj, self.decoder, self.decoder_scheduler = text_proj, decoder, decoder_scheduler
        self.super_res_first, self.super_res_last, self.super_res_scheduler = (
            super_res_first,
            super_res_last,
            super_res_scheduler,
        )
        self.image_encoder, self.feature_extractor = image_encoder, feature_extractor
        self.borrowed: dict[str, str] = {}  # component -> the repo it came from, when not this model's own
        self._inference_only()

    @property
    def image_size(self) -> int:
        return self.super_res_first.config.sample_size

    embedding_reader = "this decoder"

    @property
    def clip_embedding_dim(self) -> int:
        """The CLIP image embedding width its decoder reads (TakesImageEmbeddings: variations)."""
        return self.text_proj.config.clip_embeddings_dim

    def _check_stage_steps(self, steps: int, stage: str) -> int:
        """A stage's step count, at least what its scheduler can take (UnCLIPScheduler: 2)."""
        scheduler = getattr(self, f"{stage}_scheduler")
        return check_steps(
            steps, f"{stage}_num_inference_steps", min_inference_steps(scheduler), f"unCLIP's {stage} stage"
        )

    # ------------------------------------------------------------------ stages

    @torch.inference_mode()
    @uses("text_encoder")
    def encode_prompt(
        self, prompts: list[str], num_images_per_prompt: int = 1, with_uncond: bool = True
    ) -> TextConditioning:
        """CLIP text embeddings, one row per image; with the empty prompt's for guidance."""
        # Two forwards, not one batched: a different batch composition changes float32 rounding,
        # and we want diffusers' numbers to the bit.
        cond = self._encode_text(prompts, num_images_per_prompt)
        uncond = self._encode_text([""] * len(prompts), num_images_per_prompt) if with_uncond else None
        return TextConditioning(cond.embeds, cond.hidden_states, cond.mask, uncond)

    def _encode_text(self, prompts: list[str], num_images_per_prompt: int) -> TextConditioning:
        return encode_clip_text(self.text_encoder, self.tokenizer, prompts, num_images_per_prompt, self.device)

    @torch.inference_mode()
    @uses("prior")
    def run_prior(
        self,
        text: TextConditioning,
        generator: Generators,
        num_inference_steps: int = DEFAULTS.prior_steps,
        guidance_scale: float = DEFAULTS.prior_guidance,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Denoise a CLIP image embedding (B, D) conditioned on the text embedding."""
        if self.prior is None:
            raise ValueError("this unCLIP model has no prior (an image-variations checkpoint): use `variations`")
        return denoise_prior(self, text, generator, num_inference_steps, guidance_scale, callback)

    @torch.inference_mode()
    @uses("text_proj", "decoder")
    def run_decoder(
        self,
        image_embeds: torch.Tensor,
        text: TextConditioning,
        generator: Generators,
        num_inference_steps: int = DEFAULTS.decoder_steps,
        guidance_scale: float = DEFAULTS.decoder_guidance,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Denoise a small image (B, 3, h, w) in [-1, 1] from the image embedding (GLIDE-style decoder)."""
        cfg = text.uncond is not None  # see TextConditioning.uncond
        embeds, hidden, mask = text.batched(cfg)
        hidden, time_embeds = self.text_proj(
            image_embeddings=image_embeds,
            prompt_embeds=embeds,
            text_encoder_hidden_states=hidden,
            do_classifier_free_guidance=cfg,
        )  # (B', extra + 77, C), (B', T)
        # The extra context tokens made from the image embedding are always attended to.
        mask = F.pad(mask, (self.text_proj.clip_extra_context_tokens, 0), value=True)
        scheduler = self.decoder_scheduler
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = scheduler.timesteps
        size = self.decoder.config.sample_size
        shape = (image_embeds.shape[0], self.decoder.config.in_channels, size, size)
        latents = prepare_latents(shape, scheduler, generator, self.device, hidden.dtype)
        channels = shape[1]
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if cfg else latents
            pred = self.decoder(
                sample=model_input,
                timestep=t,
                encoder_hidden_states=hidden,
                class_labels=time_embeds,
                attention_mask=mask,
            ).sample
            if cfg:
                # The decoder predicts noise (or v) and a learned variance range; guidance acts on the
                # prediction only, and the conditional half's variance is kept (Nichol & Dhariwal 2021).
                variance = pred[:, channels:].chunk(2)[1]
                pred = torch.cat([guide(pred[:, :channels], guidance_scale), variance], dim=1)
            prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
            step = scheduler.step(pred, t, latents, prev_timestep=prev_t, generator=generator)
            latents = step.prev_sample
            if callback is not None:
                callback(StepState("decoder", i, len(timesteps), int(t), latents, step.pred_original_sample))
        return latents.clamp(-1, 1)

    @torch.inference_mode()
    @uses("super_res_first", "super_res_last")
    def run_super_res(
        self,
        image_small: torch.Tensor,
        generator: Generators,
        num_inference_steps: int = DEFAULTS.super_res_steps,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Upsample (B, 3, h, w) -> (B, 3, H, W) in [-1, 1], conditioned on a bicubic upscale."""
        scheduler = self.super_res_scheduler
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = scheduler.timesteps
        size = self.super_res_first.config.sample_size
        shape = (image_small.shape[0], self.super_res_first.config.in_channels // 2, size, size)
        latents = prepare_latents(shape, scheduler, generator, self.device, image_small.dtype)
        upscaled = F.interpolate(image_small, size=[size, size], mode="bicubic", align_corners=False, antialias=True)
        for i, t in enumerate(timesteps):
            # Karlo trains a separate model for the last, least noisy step.
            unet = self.super_res_last if i == len(timesteps) - 1 else self.super_res_first
            pred = unet(sample=torch.cat([latents, upscaled], dim=1), timestep=t).sample
            prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
            step = scheduler.step(pred, t, latents, prev_timestep=prev_t, generator=generator)
            latents = step.prev_sample
            if callback is not None:
                callback(StepState("super_res", i, len(timesteps), int(t), latents, step.pred_original_sample))
        return latents

    # ------------------------------------------------------------------ text to image

    @oom_guard
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        num_images_per_prompt: int = 1,
        prior_num_inference_steps: int = DEFAULTS.prior_steps,
        decoder_num_inference_steps: int = DEFAULTS.decoder_steps,
        super_res_num_inference_steps: int = DEFAULTS.super_res_steps,
        prior_guidance_scale: float = DEFAULTS.prior_guidance,
        decoder_guidance_scale: float = DEFAULTS.decoder_guidance,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        # 1. Check inputs
        prompts = check_prompts(prompt)
        n = check_count(num_images_per_prompt, "num_images_per_prompt")
        if self.prior is None:
            raise ValueError("this unCLIP model has no prior (an image-variations checkpoint): use `variations`")
        prior_steps = self._check_stage_steps(prior_num_inference_steps, "prior")
        decoder_steps = self._check_stage_steps(decoder_num_inference_steps, "decoder")
        sr_steps = self._check_stage_steps(super_res_num_inference_steps, "super_res")
        prior_scale = check_guidance(prior_guidance_scale, "prior_guidance_scale")
        decoder_scale = check_guidance(decoder_guidance_scale, "decoder_guidance_scale")
        run = self._begin(len(prompts) * n, seed, generator)

        # 2. Encode the prompt
        with run.stage("text_encoder"):
            text = self.encode_prompt(prompts, n, with_uncond=uses_guidance(prior_scale, decoder_scale))
        # 3. Prior: text embedding -> image embedding
        with run.stage("prior"):
            image_embeds = self.run_prior(text, run.generator, prior_steps, prior_scale, callback)
        check_finite(image_embeds, "prior", {"prior_guidance_scale": prior_scale})
        # 4. Decoder: image embedding -> small image, and 5. super-resolution: small image -> full-size image
        image = self._decode(run, image_embeds, text, decoder_steps, decoder_scale, sr_steps, callback)

        return self._output(
            image,
            run,
            repeat_prompts(prompts, n),
            image_embeds=image_embeds.float().cpu(),
            text_embeds=text.embeds.float().cpu(),
        )

    # ------------------------------------------------------------------ from image embeddings: variations, walks

    @oom_guard
    def variations(
        self,
        image: Image.Image | Sequence[Image.Image],
        *,
        num_images_per_prompt: int = 1,
        decoder_num_inference_steps: int = DEFAULTS.decoder_steps,
        super_res_num_inference_steps: int = DEFAULTS.super_res_steps,
        decoder_guidance_scale: float = DEFAULTS.decoder_guidance,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        """Variations of given images: their CLIP image embedding replaces the prior's, the prompt is empty."""
        # 1. Check inputs
        if self.image_encoder is None or self.feature_extractor is None:
            raise ValueError("this unCLIP model has no image_encoder/feature_extractor, so it cannot make variations")
        images = [image] if isinstance(image, Image.Image) else list(image)
        if not images or not all(isinstance(im, Image.Image) for im in images):
            raise ValueError("`image` must be a PIL image or a non-empty list of PIL images")
        n = check_count(num_images_per_prompt, "num_images_per_prompt")
        decoder_steps = self._check_stage_steps(decoder_num_inference_steps, "decoder")
        sr_steps = self._check_stage_steps(super_res_num_inference_steps, "super_res")
        decoder_scale = check_guidance(decoder_guidance_scale, "decoder_guidance_scale")
        run = self._begin(len(images) * n, seed, generator)

        # 2. Encode the empty prompt and the images
        with run.stage("text_encoder"):
            text = self.encode_prompt([""] * len(images), n, with_uncond=decoder_scale > 1.0)
        with run.stage("image_encoder"):
            image_embeds = self.encode_image(images).repeat_interleave(n, dim=0)  # (B*n, D)
        # 3. Decoder and 4. super-resolution, as for text to image
        out = self._decode(run, image_embeds, text, decoder_steps, decoder_scale, sr_steps, callback)
        return self._output(out, run, [""] * len(run.seeds), image_embeds=image_embeds.float().cpu())

    @oom_guard
    def decode_embeddings(
        self,
        image_embeds: torch.Tensor,
        text: TextConditioning,
        *,
        decoder_num_inference_steps: int = DEFAULTS.decoder_steps,
        super_res_num_inference_steps: int = DEFAULTS.super_res_steps,
        decoder_guidance_scale: float = DEFAULTS.decoder_guidance,
        seed: int | Sequence[int] | None = None,
        generator: Generators | None = None,
        callback: StepCallback | None = None,
    ) -> PipelineOutput:
        """Decoder and super-resolution from given CLIP image embeddings (B, D) and text conditioning (encode_prompt's,
        B rows): for embeddings moved where no prompt leads, as interpolations and text diffs do (DALL·E 2 §3)."""
        # 1. Check inputs
        dim = self.text_proj.embedding_proj.in_features
        if not isinstance(image_embeds, torch.Tensor) or image_embeds.ndim != 2 or image_embeds.shape[1] != dim:
            raise ValueError(f"`image_embeds` must be a tensor (B, {dim}), got {getattr(image_embeds, 'shape', None)}")
        if not isinstance(text, TextConditioning) or len(text.embeds) != len(image_embeds):
            raise ValueError("`text` must be encode_prompt's TextConditioning, one row per image embedding")
        decoder_steps = self._check_stage_steps(decoder_num_inference_steps, "decoder")
        sr_steps = self._check_stage_steps(super_res_num_inference_steps, "super_res")
        decoder_scale = check_guidance(decoder_guidance_scale, "decoder_guidance_scale")
        if decoder_scale > 1.0 and text.uncond is None:
            raise ValueError("decoder guidance > 1 needs text.uncond: encode the prompt with with_uncond=True")
        run = self._begin(image_embeds.shape[0], seed, generator)

        # 2. Decoder and 3. super-resolution, as for text to image
        embeds = image_embeds.to(self.device, self.dtype)
        image = self._decode(run, embeds, text, decoder_steps, decoder_scale, sr_steps, callback)
        return self._output(image, run, [""] * len(run.seeds), image_embeds=image_embeds.float().cpu())

    def _decode(
        self, run: Run, embeds: torch.Tensor, text: TextConditioning, steps: int, scale: float, sr_steps: int, callback
    ) -> torch.Tensor:
        """A call's decoder and super-resolution stages, each timed and checked: image embedding -> full-size image."""
        with run.stage("decoder"):
            image_small = self.run_decoder(embeds, text, run.generator, steps, scale, callback)
        check_finite(image_small, "decoder", {"decoder_guidance_scale": scale})
        with run.stage("super_res"):
            image = self.run_super_res(image_small, run.generator, sr_steps, callback)
        return check_finite(image, "super_res", {})
