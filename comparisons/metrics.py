"""Scores of generated images: CLIP similarity from a judge that never generates.

The judge is an open_clip model separate from both generators' CLIP, so neither architecture is
scored in the embedding space it was trained in: the Shapes lab's own judge in the lab preset,
ViT-L-14 (OpenAI weights) or ViT-H-14 (LAION-2B) for real models, a seeded random judge for
the tiny preset (its scores are meaningless; the machinery is the same).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from PIL import Image

from lab.judge import JUDGE_DIR
from lab.judge import load_judge as load_lab_judge
from pipelines.hub import ProgressCallback, fetch_file

# name -> (open_clip architecture, pretrained tag)
PRETRAINED_JUDGES = {"ViT-L-14": ("ViT-L-14", "openai"), "ViT-H-14": ("ViT-H-14", "laion2b_s32b_b79k")}
TINY_JUDGE_CONFIG = dict(
    embed_dim=32,
    vision_cfg={"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16},
    text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
)


@dataclass
class Judge:
    """An open_clip model that embeds images and prompts for scoring."""

    name: str
    model: torch.nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device

    @torch.inference_mode()
    def embed_images(self, images: np.ndarray | Sequence[Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings (N, D); `images` float (N, H, W, 3) in [0, 1] or PIL."""
        pils = [
            Image.fromarray((im * 255).round().astype(np.uint8)) if isinstance(im, np.ndarray) else im for im in images
        ]
        pixels = torch.stack([self.preprocess(im) for im in pils]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1).cpu()

    @torch.inference_mode()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()

    def cosine(self, images: np.ndarray | Sequence[Image.Image], prompts: Sequence[str]) -> np.ndarray:
        """Cosine between each image and its prompt, (N,)."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        return (self.embed_images(images) * self.embed_texts(prompts)).sum(-1).numpy()


def clip_score(cosine: np.ndarray | float) -> np.ndarray | float:
    """CLIPScore (Hessel et al. 2021) without its 2.5 weight: 100 * max(cos, 0)."""
    return 100 * np.maximum(cosine, 0)


def embedding_cosine(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise cosine between two (N, D) embedding batches."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).numpy()


def tiny_judge(seed: int = 1, device: str | torch.device = "cpu") -> Judge:
    """A seeded random open_clip judge for the tiny preset."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.CLIP(**TINY_JUDGE_CONFIG).eval().to(device)
    preprocess = open_clip.image_transform(TINY_JUDGE_CONFIG["vision_cfg"]["image_size"], is_train=False)
    return Judge("tiny", model, preprocess, open_clip.tokenize, torch.device(device))


def judge_weights(arch: str, tag: str, progress: ProgressCallback | None = None) -> Path:
    """The safetensors weights of an open_clip pretrained tag, fetched alone from the hub repo open_clip names for
    it (open_clip itself would fall back to its pickle file, the same 1.7-3.9 GB again, on any error)."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg.get("hf_hub"):
        raise ValueError(f"open_clip has no hub repo for {arch} {tag!r}")
    # open_clip's "org/name/" means its default file; "org/name/file.bin" names one, whose safetensors twin it prefers
    repo_id, filename = os.path.split(cfg["hf_hub"])
    safe = HF_SAFE_WEIGHTS_NAME if filename in ("", HF_WEIGHTS_NAME) else Path(filename).stem + ".safetensors"
    return fetch_file(repo_id, [safe], progress=progress)


def lab_judge(directory: str | Path | None = None, device: str | torch.device = "cpu") -> Judge:
    """The Shapes lab's trained judge, from `directory` (default: the shipped one in lab/weights/judge)."""

    try:
        model, preprocess, tokenizer = load_lab_judge(directory or JUDGE_DIR, device=device)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from None
    return Judge("lab", model, preprocess, tokenizer, torch.device(device))


def load_judge(name: str, device: str | torch.device = "cpu", progress: ProgressCallback | None = None) -> Judge:
    """`tiny`, `lab` (the Shapes lab's trained judge) or a pretrained open_clip judge by name; `progress` follows
    the download of a pretrained judge's weights (see pipelines.hub)."""
    device = torch.device(device)
    if name == "tiny":
        return tiny_judge(device=device)
    if name == "lab":
        return lab_judge(device=device)
    if name not in PRETRAINED_JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose tiny, lab or one of {sorted(PRETRAINED_JUDGES)}")
    arch, tag = PRETRAINED_JUDGES[name]
    weights = judge_weights(arch, tag, progress)
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    try:  # the tag's settings, which open_clip applies itself only when it downloads the weights
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch,
            pretrained=str(weights),
            device=device,
            force_quick_gelu=cfg.get("quick_gelu", False),
            image_mean=cfg.get("mean"),
            image_std=cfg.get("std"),
            image_interpolation=cfg.get("interpolation"),
            image_resize_mode=cfg.get("resize_mode"),
        )
    except Exception as err:  # a corrupt file: one clear line for the user
        raise ValueError(
            f"could not load the {name} judge ({arch}, {tag}) from {weights}: {type(err).__name__}: {err}"
        ) from err
    return Judge(name, model.eval(), preprocess, open_clip.get_tokenizer(arch), device)
