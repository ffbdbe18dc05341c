"""Training data for the Shapes lab: an endless, seeded stream of train-split scenes as tensors.

Batch `step` of a stream is a pure function of (seed, step): no sampler state needs saving, a
resumed run draws exactly the batches an uninterrupted one would, and every part trained with
the same seed and batch size sees the same scenes (both generators learn from the same data).
Scenes come from `lab.world.sample_scene(split="train")`, so no held-out combination is ever
drawn; images are rendered at 32 px and scaled to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count

import numpy as np
import torch
import torch.nn.functional as F

from lab.world import Scene, SceneObject, sample_scene, split_of

IMAGE_SIZE = 32  # the lab's image side in pixels
MAX_DRAWS_PER_ITEM = 50  # draws per batch item before a unique-caption batch settles for a repeat


@dataclass(frozen=True)
class DataConfig:
    """How a batch is drawn from the world."""

    batch_size: int  # scenes per batch
    seed: int  # the stream's seed; batch `step` depends on (seed, step) only
    unique_captions: bool = False  # CLIP: no caption twice in a batch (a repeat would be a false negative)
    p_swap: float = 0.0  # CLIP: chance that a two-object scene brings its swapped twin (a hard negative)


@dataclass(frozen=True)
class Batch:
    """Captioned images."""

    images: torch.Tensor  # (B, 3, 32, 32) float32 in [-1, 1], on the CPU
    captions: list[str]  # B captions, true of their images


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for one step of one random stream (data, noise, ...), independent across streams."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_generator(seed: int, step: int, stream: int = 1) -> torch.Generator:
    """The CPU torch.Generator of one training step: its noise, timesteps and condition dropout."""
    return torch.Generator().manual_seed(step_seed(seed, step, stream))


def swapped(scene: Scene) -> Scene | None:
    """The scene with its two objects' places exchanged ("A left of B" -> "B left of A"), or None
    when there is no second object or the swap would be a held-out combination."""
    if len(scene.objects) != 2:
        return None
    a, b = scene.objects
    twin = Scene(
        (
            SceneObject(b.colour, b.shape, b.size, a.centre, b.scale),
            SceneObject(a.colour, a.shape, a.size, b.centre, a.scale),
        ),
        scene.relation,
        scene.says_size,
    )
    return twin if split_of(twin.spec()) == "train" else None


def draw_scenes(config: DataConfig, step: int) -> list[Scene]:
    """The scenes of batch `step`."""
    rng = np.random.default_rng(step_seed(config.seed, step, stream=0))
    scenes: list[Scene] = []
    seen: set[str] = set()
    draws = 0
    while len(scenes) < config.batch_size:
        scene = sample_scene(rng, "train")
        draws += 1
        twin = swapped(scene) if config.p_swap and rng.random() < config.p_swap else None
        group = [scene] + ([twin] if twin is not None and len(scenes) + 2 <= config.batch_size else [])
        captions = {s.caption() for s in group}
        # Short captions ("a red circle") are few, so a unique batch skips some repeats of them;
        # the draw cap keeps a batch larger than the caption space from looping forever.
        if config.unique_captions and captions & seen and draws < MAX_DRAWS_PER_ITEM * config.batch_size:
            continue
        scenes += group
        seen |= captions
    return scenes


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) images -> (B, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def sample_batch(config: DataConfig, step: int) -> Batch:
    scenes = draw_scenes(config, step)
    return Batch(to_tensor([s.render(IMAGE_SIZE) for s in scenes]), [s.caption() for s in scenes])


def batches(config: DataConfig, start_step: int = 0) -> Iterator[Batch]:
    """The endless stream from batch `start_step` on."""
    for step in count(start_step):
        yield sample_batch(config, step)


def downsample(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Box-filter downsampling: at 16 px this is the world's own anti-aliased render, to rounding."""
    return F.avg_pool2d(images, factor)


def upsample_like_pipeline(images: torch.Tensor, size: int) -> torch.Tensor:
    """The bicubic upscale `UnCLIP.run_super_res` conditions on, so training sees what sampling feeds."""
    return F.interpolate(images, size=[size, size], mode="bicubic", align_corners=False, antialias=True)
