"""Karlo's scheduler for a decoder that predicts v.

diffusers' UnCLIPScheduler samples from a model that predicts the noise ("epsilon") or the clean
image ("sample"). A small pixel decoder needs neither: on Karlo's cosine schedule the noise's first
step (t = 999) gives the clean image as a noise error over sqrt(a_999) = 5e-5, and the clean-image
output must copy x_t almost exactly at the last steps. v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans &
Ho 2022; SD 2's "v_prediction") is minus the clean image at the first step and the noise at the last.
"""

from __future__ import annotations

import torch
from diffusers import SchedulerMixin, UnCLIPScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_unclip import UnCLIPSchedulerOutput

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")  # what a denoiser predicts, in diffusers' scheduler terms
KARLO_PREDICTION_TYPES = PREDICTION_TYPES[:2]  # what diffusers' UnCLIPScheduler samples
# Stable Diffusion's training noise schedule, as its scheduler configs state it: every SD-style scheduler here uses it
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
# diffusers' from_pretrained looks a component's base class up in the module model_index.json names
# ("pipelines.schedulers") to choose how to load it: it must find SchedulerMixin here
__all__ = [
    "KARLO_PREDICTION_TYPES",
    "PREDICTION_TYPES",
    "SD_BETAS",
    "SchedulerMixin",
    "UnCLIPVScheduler",
    "check_prediction_type",
    "clean_image_from_v",
    "min_inference_steps",
]
# UnCLIPScheduler spaces its timesteps as (T - 1) / (steps - 1): one step divides by zero. The other
# schedulers in use (DDIM, PNDM, Euler, DPM-Solver) take a single step.
UNCLIP_MIN_STEPS = 2


def min_inference_steps(scheduler: SchedulerMixin) -> int:
    """The fewest inference steps `scheduler.set_timesteps` accepts."""
    return UNCLIP_MIN_STEPS if isinstance(scheduler, UnCLIPScheduler) else 1


def check_prediction_type(prediction_type: str, allowed: tuple[str, ...] = PREDICTION_TYPES) -> None:
    if prediction_type not in allowed:
        raise ValueError(f"prediction_type must be one of {allowed}, not {prediction_type!r}")


def clean_image_from_v(v: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x0 = sqrt(a) x_t - sqrt(1 - a) v, which v = sqrt(a) eps - sqrt(1 - a) x0 and x_t imply; exact even
    where a = 2.4e-9, unlike a detour through the noise."""
    return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * v


class UnCLIPVScheduler(UnCLIPScheduler):
    """UnCLIPScheduler that also takes prediction_type="v_prediction": the v part of the model output
    becomes the clean image it implies, and UnCLIPScheduler's own "sample" step (clipping, posterior
    mean, fixed or learned variance) does the rest, so the two cannot drift apart."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        variance_type: str = "fixed_small_log",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        beta_schedule: str = "squaredcos_cap_v2",
    ) -> None:
        check_prediction_type(prediction_type)
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            variance_type=variance_type,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            prediction_type=prediction_type,
            beta_schedule=beta_schedule,
        )
        # the step that follows the clean image: same betas, clipping and variance
        config = {**self.config, "prediction_type": "sample"}
        self._clean_image_step = (
            UnCLIPScheduler.from_config(config).step if prediction_type == "v_prediction" else None
        )

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        prev_timestep: int | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> UnCLIPSchedulerOutput | tuple:
        if self._clean_image_step is None:
            return super().step(model_output, timestep, sample, prev_timestep, generator, return_dict)
        channels = sample.shape[1]
        a = self.alphas_cumprod[timestep].to(sample.device, sample.dtype)
        x0 = clean_image_from_v(model_output[:, :channels], sample, a)
        return self._clean_image_step(
            torch.cat([x0, model_output[:, channels:]], dim=1), timestep, sample, prev_timestep, generator, return_dict
        )
