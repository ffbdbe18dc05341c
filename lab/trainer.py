"""Generic training machinery (minGPT's trainer, kept apart from the models): the loop, AdamW with
warmup and cosine decay, an EMA of the weights, a progress bar, a JSONL loss log, resumable
checkpoints and a record of the compute spent.

The trainer knows nothing of diffusion or CLIP: a part hands it a module, a loss function
`loss_fn(batch, step) -> {"loss": scalar, ...}` and an endless batch iterator. Every random draw of
step k comes from generators seeded by (seed, k) (see `lab.data`), so the only state a resume
needs is the weights, the optimiser, the schedule and the EMA, which the checkpoint holds.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Module constructors draw initial weights from torch's global RNG: seed it for one build only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


CHECKPOINT = "last.pt"
LOSS_LOG = "loss_log.jsonl"
BUDGET = "training_budget.json"

LossFn = Callable[[object, int], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainConfig:
    """How long and how fast one part trains."""

    steps: int  # optimiser steps in the whole run
    batch_size: int  # samples per step
    lr: float  # peak learning rate, reached after warmup
    warmup_steps: int = 100  # linear warmup from lr / warmup_steps
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at the last step
    weight_decay: float = 0.01  # AdamW decay of matrices and embeddings (not of biases and norms)
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW; beta2 < 0.999 adapts faster in short runs
    grad_clip: float = 1.0  # max global gradient norm
    ema_decay: float | None = None  # EMA of the weights (diffusion models); None keeps the raw weights
    seed: int = 0  # initial weights, data stream and per-step noise
    log_every: int = 25  # steps between loss-log lines
    checkpoint_every: int = 250  # steps between resumable checkpoints (and one at the end)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Budget:
    """The compute one part's training spent (written as training_budget.json beside its model)."""

    part: str
    steps: int
    batch_size: int
    samples_seen: int  # steps * batch_size
    wall_seconds: float  # summed over resumed runs, checkpointing included
    device: str
    parameters: int  # trainable parameters
    flops_per_step: int  # forward + backward of one step (frozen encoders' forwards included), FlopCounterMode
    training_flops: int  # flops_per_step * steps

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio (Loshchilov & Hutter 2017, SGDR)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; as in nanoGPT, only tensors of rank >= 2 decay (biases and norm gains would shrink for nothing)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA of the weights with a warmup of the decay, (1 + n) / (10 + n), so early steps are not frozen in."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _trim_log(path: Path, step: int) -> None:
    """Keep the loss-log lines up to `step`, so a resumed run does not log a stretch twice."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


def _stateful(model: nn.Module, optimizer, schedule, ema: nn.Module | None) -> dict[str, object]:
    """Everything a checkpoint restores, by name."""
    return {"model": model, "optimizer": optimizer, "schedule": schedule} | ({"ema": ema} if ema is not None else {})


def save_checkpoint(path: Path, step: int, wall: float, flops_per_step: int, objects: dict[str, object]) -> None:
    state = {"step": step, "wall_seconds": wall, "flops_per_step": flops_per_step}
    state |= {name: obj.state_dict() for name, obj in objects.items()}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a crash mid-save leaves the previous checkpoint whole


def load_checkpoint(path: Path, objects: dict[str, object], device: torch.device) -> tuple[int, float, int]:
    """Restore `objects` in place; returns (step, wall seconds, FLOPs per step) of the checkpoint."""
    state = torch.load(path, map_location=device, weights_only=True)
    for name, obj in objects.items():
        obj.load_state_dict(state[name])
    return state["step"], state["wall_seconds"], state["flops_per_step"]


def train(
    part: str,
    model: nn.Module,
    loss_fn: LossFn,
    batches: Callable[[int], Iterator[object]],
    config: TrainConfig,
    run_dir: Path,
    *,
    device: torch.device,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
) -> tuple[nn.Module, Budget]:
    """Train `model` for config.steps and return the weights to ship (the EMA's, if any) and the budget.

    `batches(start_step)` yields the batches from that step on. Checkpoints go to run_dir/last.pt;
    with resume=True a run continues from it. stop_at ends a run early after a checkpoint (the
    schedule still spans config.steps), as an interrupted run would.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    ema = copy.deepcopy(model).eval().requires_grad_(False) if config.ema_decay is not None else None
    objects = _stateful(model, optimizer, schedule, ema)
    ckpt_path, log_path = run_dir / CHECKPOINT, run_dir / LOSS_LOG
    start, wall, flops_per_step = 0, 0.0, 0
    if resume and ckpt_path.is_file():
        start, wall, flops_per_step = load_checkpoint(ckpt_path, objects, device)
        _trim_log(log_path, start)
    elif log_path.is_file():
        log_path.unlink()

    end = config.steps if stop_at is None else min(stop_at, config.steps)
    bar = tqdm(range(start, end), desc=part, initial=start, total=config.steps, disable=not progress, leave=True)
    data = batches(start)
    sums: dict[str, float] = {}  # loss terms summed since the last log line, over `logged` steps
    logged = 0
    tick = time.perf_counter()
    for step in bar:
        batch = next(data)
        # the first step of a run is counted (forward and backward), then trained on like any other
        counter = FlopCounterMode(display=False) if flops_per_step == 0 else contextlib.nullcontext()
        with counter:
            losses = loss_fn(batch, step)
            losses["loss"].backward()
        if flops_per_step == 0:
            flops_per_step = int(counter.get_total_flops())
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"{part}: loss is {losses['loss'].item()} at step {step}")
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        if ema is not None:
            ema_update(ema, model, config.ema_decay, step)
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.item()
        logged += 1
        done = step + 1
        if done % config.log_every == 0 or done == end:
            record = {"step": done, **{k: v / logged for k, v in sums.items()}, "lr": schedule.get_last_lr()[0]}
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            sums, logged = {}, 0
        if done % config.checkpoint_every == 0 or done == end:
            wall += time.perf_counter() - tick
            tick = time.perf_counter()
            save_checkpoint(ckpt_path, done, wall, flops_per_step, objects)
    bar.close()
    final = ema if ema is not None else model
    steps = max(start, end)
    budget = Budget(
        part=part,
        steps=steps,
        batch_size=config.batch_size,
        samples_seen=steps * config.batch_size,
        wall_seconds=round(wall, 2),
        device=str(device),
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        flops_per_step=flops_per_step,
        training_flops=flops_per_step * steps,
    )
    return final.eval(), budget
