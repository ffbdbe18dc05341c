"""unCLIP's text conditioning and prior, shared by unCLIP and Stable unCLIP (which runs Karlo's very prior).

DALL·E 2's prior (Ramesh et al. 2022, section 2.1, the diffusion prior) denoises a CLIP *image* embedding
conditioned on the caption's CLIP text embedding and hidden states, as diffusers' `pipeline_unclip.py` and
`pipeline_stable_unclip.py` run Karlo's `PriorTransformer`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from pipelines.base import Pipeline, guide, prepare_latents
from pipelines.outputs import StepCallback, StepState
from pipelines.seeds import Generators
from pipelines.tokenizer import tokenize


@dataclass(frozen=True)
class TextConditioning:
    """The CLIP text encoder's output for a batch of prompts (one row per image)."""

    embeds: torch.Tensor  # (B, D) projected, pooled text embedding
    hidden_states: torch.Tensor  # (B, 77, C) last hidden state
    mask: torch.Tensor  # (B, 77) bool attention mask
    # The empty prompt's conditioning. Its presence turns classifier-free guidance on in every
    # stage, as in diffusers: when any stage's scale is > 1, a stage at scale 1 still runs the
    # guided batch (uncond + 1 * (cond - uncond)), which keeps us equal to diffusers.
    uncond: TextConditioning | None = None

    def batched(self, cfg: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embeds, hidden_states, mask), batched as [uncond, cond] when guiding."""
        if not cfg:
            return self.embeds, self.hidden_states, self.mask
        u = self.uncond
        return (
            torch.cat([u.embeds, self.embeds]),
            torch.cat([u.hidden_states, self.hidden_states]),
            torch.cat([u.mask, self.mask]),
        )


def encode_clip_text(
    text_encoder: CLIPTextModelWithProjection,
    tokenizer: CLIPTokenizer,
    prompts: list[str],
    num_images_per_prompt: int,
    device: torch.device,
) -> TextConditioning:
    """A CLIP text encoder's conditioning of `prompts`, one row per image: what priors and unCLIP's decoder read."""
    ids, mask = tokenize(tokenizer, prompts)
    out = text_encoder(ids.to(device))
    n = num_images_per_prompt
    return TextConditioning(
        out.text_embeds.repeat_interleave(n, dim=0),  # (B*n, D)
        out.last_hidden_state.repeat_interleave(n, dim=0),  # (B*n, 77, C)
        mask.to(device).repeat_interleave(n, dim=0),  # (B*n, 77)
    )


def denoise_prior(
    pipe: Pipeline,
    text: TextConditioning,
    generator: Generators,
    num_inference_steps: int,
    guidance_scale: float,
    callback: StepCallback | None,
) -> torch.Tensor:
    """DALL·E 2's prior: a CLIP image embedding (B, D) denoised from noise, conditioned on the text's. unCLIP's and
    Stable unCLIP's one loop: Karlo's UnCLIPScheduler is told each step's next timestep (as diffusers' unCLIP
    pipeline tells it); a scheduler that takes no such argument (the DDPMScheduler diffusers' Stable unCLIP docs
    make of Karlo's config) is stepped as diffusers' Stable unCLIP steps it. `pipe`: its prior, prior_scheduler
    and device."""
    prior, scheduler, device = pipe.prior, pipe.prior_scheduler, pipe.device
    cfg = text.uncond is not None  # see TextConditioning.uncond
    embeds, hidden, mask = text.batched(cfg)
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    latents = prepare_latents(
        (text.embeds.shape[0], prior.config.embedding_dim), scheduler, generator, device, embeds.dtype
    )
    step_takes = set(inspect.signature(scheduler.step).parameters)
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
        pred = prior(
            model_input, timestep=t, proj_embedding=embeds, encoder_hidden_states=hidden, attention_mask=mask
        ).predicted_image_embedding
        if cfg:
            pred = guide(pred, guidance_scale)
        kwargs = {"generator": generator} if "generator" in step_takes else {}
        if "prev_timestep" in step_takes:
            kwargs["prev_timestep"] = timesteps[i + 1] if i + 1 < len(timesteps) else None
        step = scheduler.step(pred, timestep=t, sample=latents, **kwargs)
        latents = step.prev_sample
        if callback is not None:
            callback(StepState("prior", i, len(timesteps), int(t), latents, step.pred_original_sample))
    return prior.post_process_latents(latents)  # (B, D) un-normalised by CLIP's mean and std
