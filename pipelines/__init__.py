"""Our implementations of the two text-to-image architectures, and how their weights load."""

from pipelines.components import load_latent_diffusion, load_unclip
from pipelines.latent_diffusion import LatentDiffusion
from pipelines.outputs import PipelineOutput, StageStats, StepState
from pipelines.unclip import UnCLIP

__all__ = [
    "LatentDiffusion",
    "PipelineOutput",
    "StageStats",
    "StepState",
    "UnCLIP",
    "load_latent_diffusion",
    "load_unclip",
]
