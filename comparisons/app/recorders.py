"""What a pipeline computes on the way to its image, recorded as it runs, with nothing in the pipelines changed:
a step callback keeps the predicted clean image x_0 at the steps a strip shows (k-diffusion's `denoised` view of
sampling), attention processors sum a U-Net's cross-attention per prompt token (averaged over heads, attn2 layers
and steps, conditional half only), as in prompt-to-prompt (Hertz et al. 2022, arXiv:2208.01626), and a forward
hook reads the tensor shapes between stages. The "Inside the models" tab (comparisons.app.inside) reads them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from pipelines.outputs import StepState
from pipelines.tokenizer import tokenize

# ----------------------------------------------------------------------------- trajectory


def frame_steps(num_steps: int, num_frames: int) -> list[int]:
    """Up to `num_frames` evenly spaced step indices of a loop of `num_steps`, ending at the last."""
    k = min(num_frames, num_steps)
    return sorted({int(round(s)) for s in np.linspace(num_steps - 1, 0, k)})


@functools.cache
def _kept_steps(num_steps: int, num_frames: int) -> frozenset[int]:
    """frame_steps as a set, computed once per loop length rather than at every step of it."""
    return frozenset(frame_steps(num_steps, num_frames))


@dataclass
class TrajectoryRecorder:
    """A step callback that keeps x_0 (detached, on the CPU) at the steps a strip shows, and each stage's last x_t."""

    stages: tuple[str, ...]  # the stages whose frames to keep
    num_frames: int = 8
    frames: dict[str, list[tuple[int, torch.Tensor]]] = field(
        default_factory=dict
    )  # stage -> [(step, x_0 of the first image)]
    final: dict[str, torch.Tensor] = field(default_factory=dict)  # stage -> x_t after its last step

    def __call__(self, state: StepState) -> None:
        if state.step == state.num_steps - 1:
            self.final[state.stage] = state.sample.detach().to("cpu", copy=True)
        if state.stage in self.stages and state.step in _kept_steps(state.num_steps, self.num_frames):
            self.frames.setdefault(state.stage, []).append(
                (state.step, state.denoised[:1].detach().to("cpu", copy=True))
            )

    def steps(self, stage: str) -> list[int]:
        return [step for step, _ in self.frames.get(stage, [])]

    def stacked(self, stage: str) -> torch.Tensor:
        """(F, ...) the kept x_0 (first image) of a stage, in step order."""
        if stage not in self.frames:
            raise ValueError(f"no frames of stage {stage!r} were recorded; recorded: {sorted(self.frames)}")
        return torch.cat([x0 for _, x0 in self.frames[stage]])


# ----------------------------------------------------------------------------- cross-attention


def grid_size(tokens: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a U-Net level with `tokens` positions, halving the latent `size` as strided convs do (ceil)."""
    h, w = size
    while h * w > tokens:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    if h * w != tokens:
        raise ValueError(f"{tokens} attention positions match no downsampling of a {size} latent")
    return h, w


class AttentionRecorder:
    """Sums the conditional images' head-averaged cross-attention over calls (layers x steps), at the latent's size."""

    def __init__(self, size: tuple[int, int], batch_size: int = 1):
        self.size = size  # (h, w) of the latent: maps of every level are resized to it
        self.batch_size = batch_size  # conditional images per call; guidance batches them last, after the uncond ones
        self.total: torch.Tensor | None = None  # (T, h, w)
        self.count = 0

    def add(self, probs: torch.Tensor, heads: int) -> None:
        """probs (B' * heads, N, T) softmax over the T text tokens, batch-major as head_to_batch_dim lays it out."""
        probs = probs.float().unflatten(0, (-1, heads))[-self.batch_size :].mean(dim=(0, 1))  # (N, T)
        h, w = grid_size(probs.shape[0], self.size)
        maps = probs.T.reshape(-1, 1, h, w)  # (T, 1, h, w)
        maps = F.interpolate(maps, size=self.size, mode="bilinear", align_corners=False)[:, 0]
        self.total = maps if self.total is None else self.total + maps
        self.count += 1

    def mean(self) -> torch.Tensor:
        if self.total is None:
            raise ValueError("no cross-attention was recorded: run the U-Net inside recording_cross_attention")
        return (self.total / self.count).cpu()  # (T, h, w)


class RecordingAttnProcessor:
    """diffusers' `AttnProcessor` (explicit softmax, so the probabilities exist), handing them to a recorder."""

    def __init__(self, recorder: AttentionRecorder):
        self.recorder = recorder

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if hidden_states.ndim != 3 or attn.spatial_norm is not None:
            raise ValueError("the recording processor supports token-sequence attention (a U-Net's attn2) only")
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B * heads, N, d)
        key = attn.head_to_batch_dim(attn.to_k(context))  # (B * heads, T, d)
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B * heads, N, T)
        self.recorder.add(probs, attn.heads)
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(probs, value))))  # linear, dropout
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def cross_attention_layers(unet: torch.nn.Module) -> dict[str, Attention]:
    """Every attn2 (image queries, text keys) of a U-Net, by module name."""
    layers = {name: m for name, m in unet.named_modules() if name.endswith("attn2") and isinstance(m, Attention)}
    if not layers:
        raise ValueError(f"{type(unet).__name__} has no attn2 cross-attention layers to record")
    return layers


@contextmanager
def recording_cross_attention(unet: torch.nn.Module, recorder: AttentionRecorder) -> Iterator[AttentionRecorder]:
    """Install a recording processor on every attn2 for the block; the original processors come back even on error."""
    layers = cross_attention_layers(unet)
    originals = {name: m.processor for name, m in layers.items()}
    processor = RecordingAttnProcessor(recorder)
    try:
        for m in layers.values():
            m.set_processor(processor)
        yield recorder
    finally:
        for name, m in layers.items():
            m.set_processor(originals[name])


def prompt_tokens(tokenizer, prompt: str) -> list[tuple[int, str]]:
    """(position, text) of each BPE token of the prompt, without start, end and padding tokens."""
    ids = tokenize(tokenizer, [prompt])[0][0].tolist()
    special = set(tokenizer.all_special_ids)
    return [(i, tokenizer.decode([t]).strip()) for i, t in enumerate(ids) if t not in special]


def token_maps(mean_attention: torch.Tensor, tokens: list[tuple[int, str]]) -> list[tuple[str, np.ndarray]]:
    """(text, (h, w) map min-max normalised to [0, 1]) for each token; a flat map is all zeros."""
    maps = []
    for position, text in tokens:
        m = mean_attention[position].numpy().astype(np.float64)
        span = m.max() - m.min()
        maps.append((text, (m - m.min()) / span if span > 0 else np.zeros_like(m)))
    return maps


# ----------------------------------------------------------------------------- shapes


@contextmanager
def first_output_shapes(module: torch.nn.Module) -> Iterator[dict[str, tuple[int, ...]]]:
    """Shapes of the tensors in a module's first output during the block (the prompt's pass, not the uncond one)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def hook(_module, _args, output) -> None:
        if not shapes:
            items = (
                output.items()
                if isinstance(output, Mapping)
                else enumerate(output if isinstance(output, tuple) else (output,))
            )
            shapes.update({str(k): tuple(v.shape) for k, v in items if isinstance(v, torch.Tensor)})

    handle = module.register_forward_hook(hook)
    try:
        yield shapes
    finally:
        handle.remove()
