"""A training run: where it goes (RunOptions), and what every part's recipe in lab.train shares: the frozen
generator CLIP (ClipEncoder), a finished part's weights, and `fit`, which hands a part to the generic loop
(lab.trainer, as minGPT's)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPModel

from lab.data import DataConfig, batches
from lab.trainer import BUDGET, TrainConfig, train
from pipelines.tokenizer import offline_clip_tokenizer, tokenize

STATS_SEED = 12345  # data seed of the batches that set CLIP statistics and the VAE's scaling factor


@dataclass(frozen=True)
class RunOptions:
    """Where and how a training run goes (the CLI's flags)."""

    out: Path = Path("lab/weights")  # shipped weights: judge/, unclip/, latent_diffusion/
    checkpoints: Path = Path("lab/checkpoints")  # per-part checkpoints, logs and fp32 weights (git-ignored)
    device: torch.device = torch.device("cpu")
    resume: bool = False  # continue each part from its last checkpoint
    steps: int | None = None  # overrides every part's default steps
    steps_scale: float = 1.0  # multiplies every part's default steps (a faster machine affords more)
    batch_size: int | None = None  # overrides every part's default batch size
    stop_at: int | None = None  # end each part early at this step, as an interruption would (tests)
    progress: bool = True  # tqdm bars

    def train_config(self, config: TrainConfig) -> TrainConfig:
        steps = self.steps or max(1, round(config.steps * self.steps_scale))
        return dataclasses.replace(
            config,
            steps=steps,
            batch_size=self.batch_size or config.batch_size,
            warmup_steps=min(config.warmup_steps, steps),
        )

    def part_dir(self, part: str) -> Path:
        return self.checkpoints / part


class ClipEncoder:
    """The trained generator CLIP, frozen: exactly what the pipelines' text and image encoders compute."""

    def __init__(self, clip: CLIPModel, device: torch.device):
        self.clip = clip.to(device).eval().requires_grad_(False)
        self.tokenizer = offline_clip_tokenizer()
        self.device = device
        self.embed_dim = clip.config.projection_dim

    @torch.no_grad()
    def text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(projected embedding (B, D), hidden states (B, 77, C), mask (B, 77)), padded to 77 as the pipelines do."""
        ids, mask = tokenize(self.tokenizer, captions)
        out = self.clip.text_model(ids.to(self.device))
        return self.clip.text_projection(out.pooler_output), out.last_hidden_state, mask.to(self.device)

    @torch.no_grad()
    def image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, D) of images in [-1, 1], as CLIPVisionModelWithProjection.image_embeds."""
        return self.clip.visual_projection(self.clip.vision_model(images.to(self.device)).pooler_output)


def load_part(opts: RunOptions, part: str, name: str, cls: type):
    """A finished part's model, or an error that says which part to train first."""
    path = opts.part_dir(part) / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m lab.train {part}` first")
    return cls.from_pretrained(str(path))


def load_encoder(opts: RunOptions) -> ClipEncoder:
    return ClipEncoder(load_part(opts, "clip", "clip", CLIPModel), opts.device)


def drop_captions(captions: list[str], drop: torch.Tensor) -> list[str]:
    """Dropped captions become "", the prompt the pipelines encode for classifier-free guidance."""
    return ["" if d else c for c, d in zip(captions, drop.tolist())]


def timesteps_and_noise(
    x0: torch.Tensor, generator: torch.Generator, num_timesteps: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform timesteps (B,) and Gaussian noise like x0, drawn on the CPU: the same on any device."""
    t = torch.randint(0, num_timesteps, (len(x0),), generator=generator)
    return t.to(x0.device), torch.randn(x0.shape, generator=generator).to(x0.device)


def fit(part: str, model: nn.Module, loss_fn, data: DataConfig, config: TrainConfig, opts: RunOptions) -> nn.Module:
    """Train one part, write its budget; returns the weights to keep."""
    final, budget = train(
        part,
        model,
        loss_fn,
        lambda start: batches(data, start),
        config,
        opts.part_dir(part),
        device=opts.device,
        resume=opts.resume,
        stop_at=opts.stop_at,
        progress=opts.progress,
    )
    budget.save(opts.part_dir(part) / BUDGET)
    return final


def save_models(opts: RunOptions, part: str, **models) -> None:
    for name, model in models.items():
        model.save_pretrained(str(opts.part_dir(part) / name))
