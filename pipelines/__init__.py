"""Our implementations of the two text-to-image architectures, and how their weights load."""

from pipelines.latent_diffusion import LatentDiffusion, load_latent_diffusion
from pipelines.outputs import PipelineOutput, StageStats, StepState
from pipelines.unclip import UnCLIP, load_unclip

__all__ = [
    "LatentDiffusion",
    "PipelineOutput",
    "StageStats",
    "StepState",
    "UnCLIP",
    "load_latent_diffusion",
    "load_unclip",
]
