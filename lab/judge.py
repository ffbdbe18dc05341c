"""The judge CLIP: an open_clip model trained on the Shapes world apart from the generators' CLIP,
used only to score their images. Stored in open_clip's `local-dir:` layout: the JSON config
(`open_clip_config.json`, model and preprocessing) beside a safetensors state dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

JUDGE_DIR = Path(__file__).parent / "weights" / "judge"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def save_judge(model: open_clip.CLIP, config: dict, directory: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write the config and the weights (in `dtype`; `load_judge` loads them as float32)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory


def load_judge(directory: str | Path = JUDGE_DIR, device: str | torch.device = "cpu"):
    """(model, preprocess, tokenizer): the model in eval mode, the PIL -> tensor transform it was
    trained for, and its tokenizer (open_clip's, context 77)."""
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name} is missing: train the judge with `python -m lab.train judge`")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{directory}", device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{directory}")
