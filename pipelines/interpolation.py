"""Paths through a conditioning space: linear and spherical interpolation, and DALL·E 2's text diffs.

Small pure functions on tensors (vectors along the last axis), computed in float64 and returned in the input's
dtype. Spherical interpolation is Shoemake 1985 ("Animating rotation with quaternion curves"), the way DALL·E 2
moves between CLIP embeddings (Ramesh et al. 2022, arXiv:2204.06125, §3.2 and Fig. 4); text diffs are its §3.3
and Fig. 5. Every path starts exactly at its first input (bit for bit), so a walk's first frame is the image
the unmoved conditioning gives.
"""

from __future__ import annotations

import math

import numpy as np
import torch

PARALLEL = 1e-6  # 1 - |cos| below which two directions count as (anti)parallel: sin(angle) is too small to divide by


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t) a + t b; exactly a at t = 0 and b at t = 1."""
    return (a.double() * (1 - t) + b.double() * t).to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation along the last axis (Shoemake 1985): the great-circle arc from a to b, at constant
    angular speed; unit vectors stay unit. lerp where a and b are (anti)parallel and the arc is not defined."""
    a64, b64 = a.double(), b.double()
    norms = a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(dim=-1, keepdim=True) / norms.clamp_min(1e-300)).clamp(-1, 1)
    angle = torch.arccos(cos)
    sin = torch.sin(angle)
    # sin((1 - 0) angle) / sin(angle) is exactly 1 and sin(0) exactly 0: the endpoints are the inputs, bit for bit
    arc = (torch.sin((1 - t) * angle) / sin) * a64 + (torch.sin(t * angle) / sin) * b64
    parallel = (1 - cos.abs() < PARALLEL) | (norms == 0)
    return torch.where(parallel, a64 * (1 - t) + b64 * t, arc).to(a.dtype)


def unit(v: torch.Tensor) -> torch.Tensor:
    """v scaled to norm 1 along the last axis."""
    return v / v.norm(dim=-1, keepdim=True)


def text_direction(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DALL·E 2's text diff vector (§3.3): the normalised difference of two captions' CLIP text embeddings,
    target minus source, each normalised first (CLIP compares embeddings by angle)."""
    difference = unit(target.double()) - unit(source.double())
    if bool((difference.norm(dim=-1) < 1e-6).any()):
        raise ValueError("the two captions have the same CLIP text embedding: there is no direction to move along")
    return unit(difference).to(target.dtype)


def text_diff(image_embeds: torch.Tensor, direction: torch.Tensor, theta: float) -> torch.Tensor:
    """An image embedding moved towards a text diff direction (§3.3, Fig. 5: z_θ = slerp(z_i, z_d, θ)); the
    direction takes the embedding's norm, so the path keeps it, as the decoder was trained on such norms."""
    norm = image_embeds.double().norm(dim=-1, keepdim=True)
    return slerp(image_embeds, (direction.double() * norm).to(image_embeds.dtype), theta)


def positions(num_frames: int, end: float = 1.0) -> list[float]:
    """`num_frames` evenly spaced positions from 0 to `end`, both included."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise ValueError(f"a walk needs a whole number of at least 2 frames, got {num_frames!r:.40}")
    if isinstance(end, bool) or not isinstance(end, (int, float)) or not math.isfinite(end) or end <= 0:
        raise ValueError(f"a walk's end must be a number > 0, got {end!r:.40}")
    return [float(x) for x in np.linspace(0.0, end, int(num_frames))]
