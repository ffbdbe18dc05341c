"""Every generated image becomes one row, and one PNG that carries its own generation parameters.

The PNG's `parameters` text chunk holds AUTOMATIC1111's infotext format
("prompt\\nNegative prompt: ...\\nSteps: 50, Seed: 1, ..."), so any image can be traced back to
its settings and regenerated exactly (`settings_from_png`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comparisons.files import write_new_file
from comparisons.schema import MODE, SOURCE_COSINE, SOURCE_HASH
from comparisons.settings import Settings
from pipelines import PipelineOutput, registry
from pipelines.base import Pipeline
from pipelines.devices import device_name
from pipelines.measure import TENSORS_AND_WEIGHTS
from pipelines.registry import TEXT, TEXT_TO_IMAGE


def row_key(architecture: str, prompt: str, seed: int, settings: Settings, image_in: dict | None = None) -> str:
    """What identifies an image: architecture, prompt, seed and the settings that apply to it (JSON); an image
    taken in adds its mode, source hash and strength (`image_in`, its columns)."""
    if image_in is None:
        return json.dumps([architecture, prompt, seed, settings.for_architecture(architecture)], sort_keys=True)
    mode = image_in[MODE]
    strengths = {s.name: image_in.get(s.name) for s in registry.strength_settings() if s.name in image_in}
    which = {MODE: mode, SOURCE_HASH: image_in[SOURCE_HASH], **strengths}
    return json.dumps(
        [architecture, prompt, seed, settings.for_architecture(architecture, mode), which], sort_keys=True
    )


def key_digest(key: str) -> str:
    """A short, file-name-safe digest of a `row_key`."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def image_name(run_id: str, key: str) -> str:
    """`<run id>-<key digest>.png`: unique per row (a new run id per compare, sweep process and resume)."""
    return f"{run_id}-{key_digest(key)}.png"


_IMAGE_NAME = re.compile(r"-([0-9a-f]{16})(?:-\d+)?\.png(?:\..*)?$")  # also a temp file's `.<name>.png.<x>.tmp`


def digest_of(file_name: str) -> str | None:
    """The key digest in an image's (or its temp file's) name, as `image_name` wrote it; None for other files."""
    match = _IMAGE_NAME.search(file_name)
    return match.group(1) if match else None


def weights_hash(pipe: Pipeline, with_borrowed: bool = False) -> str:
    """A short sha256 of every weight tensor, computed once per pipeline object and set of components. Components
    attached from another repo (`pipe.borrowed`: Karlo's image encoder) count only `with_borrowed` (the rows that
    use them), so that a text-to-image row's hash never changes when they are attached."""
    borrowed = () if with_borrowed else getattr(pipe, "borrowed", {})
    modules = {name: m for name, m in pipe.modules().items() if name not in borrowed}
    cache = pipe.__dict__.setdefault("_weights_hashes", {})
    key = tuple(sorted(modules))
    if key not in cache:
        digest = hashlib.sha256()
        for name, module in sorted(modules.items()):
            for k, tensor in sorted(module.state_dict().items()):
                digest.update(f"{name}.{k}".encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        cache[key] = digest.hexdigest()[:12]
    return cache[key]


# How a call computed, beyond its settings and weights: what a row made again needs to give the same pixels
# (comparisons.regeneration), each with its infotext key ("Batch size" and "Batch pos" as AUTOMATIC1111 writes them).
MADE_HOW = {
    "batch_size": "Batch size",  # images in the call
    "batch_pos": "Batch pos",  # this image's place among them, from 0
    "batch_id": "Batch id",  # the call's: its rows share it
    "device": "Device",
    "device_name": "Device name",  # the GPU, or the processor
    "dtype": "Dtype",
    "threads": "Threads",  # torch's intra-op threads
    "cpu_kernels": "CPU kernels",  # pipelines.devices.cpu_kernels
    "cpu_speed": "CPU speed-ups",  # pipelines.cpu_speed.CPUSpeed.label
    "torch_version": "Torch",
    "transformers_version": "Transformers",
}
MADE_HOW_INTS = ("batch_size", "batch_pos", "threads")


def made_how(output: PipelineOutput) -> dict:
    """What the call's rows share of MADE_HOW (each row adds its batch_pos), and the diffusers version."""
    return {
        "batch_size": len(output.seeds),
        "batch_id": uuid.uuid4().hex[:12],
        "device": output.device,
        "device_name": device_name(output.device),
        "dtype": output.dtype,
        "threads": output.threads,
        "cpu_kernels": output.cpu_kernels,
        "cpu_speed": output.cpu_speed,
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        "transformers_version": transformers.__version__,
    }


MEMORY_KINDS = {"cuda_max_allocated": "VRAM", "process_peak_rss": "peak RSS", TENSORS_AND_WEIGHTS: "tensors + weights"}


def cost_columns(output: PipelineOutput, stage_memory: dict[str, int] | None = None) -> dict:
    """Seconds per image (a batched call's time shared by its images) and the call's peak memory per stage: the
    call's own (VRAM, or peak RSS on a CPU), or `stage_memory`'s (a TensorMeter pass: what each stage allocates),
    with the CPU's peak RSS kept as `peak_rss_mb`."""
    n = len(output.seeds)
    row = {f"seconds_{s.name}": s.seconds / n for s in output.stages}
    row["seconds_total"] = output.total_seconds / n
    memory = stage_memory or {s.name: s.peak_memory_bytes for s in output.stages}
    row |= {f"peak_memory_mb_{name}": b / 2**20 for name, b in memory.items()}
    row["peak_memory_mb"] = max(memory.values()) / 2**20
    kind = output.stages[0].memory_kind
    row["memory_kind"] = MEMORY_KINDS[TENSORS_AND_WEIGHTS if stage_memory else kind]
    rss = [s.peak_memory_bytes for s in output.stages if s.memory_kind == "process_peak_rss"]
    row["peak_rss_mb"] = max(rss) / 2**20 if rss else None
    return row


def build_rows(
    output: PipelineOutput,
    *,
    architecture: str,
    model: str,
    model_hash: str,
    settings: Settings,
    run_id: str,
    image_paths: list[str],
    clip_cosine: np.ndarray | None,
    prior_image_cosine: np.ndarray | None = None,
    checks: list[dict] | None = None,
    image_in: dict | None = None,
    source_cosine: np.ndarray | None = None,
    prompts: list[str] | None = None,
    stage_memory: dict[str, int] | None = None,
) -> list[dict]:
    """One row per image of a pipeline call. An image taken in gives its columns (`image_in`: mode, source hash
    and image, strength), the judge's cosine to it, and the prompts scored against (variations draw from none);
    without a prompt there is no CLIP score. `stage_memory`: see cost_columns."""
    created = datetime.now(timezone.utc)
    mode = (image_in or {}).get(MODE, TEXT_TO_IMAGE)
    values = settings.for_architecture(architecture, mode)
    strength = next((image_in[s.name] for s in registry.strength_settings() if s.name in (image_in or {})), None)
    loops = registry.get(architecture).steps_of_stages(values, mode, strength)
    shared = {
        "run_id": run_id,
        "created_at": created,
        "architecture": architecture,
        MODE: mode,
        "model": model,
        "model_hash": model_hash,
        **values,
        **(image_in or {}),
        **{f"steps_{stage}": n for stage, n in loops.items()},
        **made_how(output),
        **cost_columns(output, stage_memory),
    }
    rows = []
    for i, (prompt, seed) in enumerate(zip(prompts or output.prompts, output.seeds)):
        cosine = None if clip_cosine is None else float(clip_cosine[i])
        row = {
            **shared,
            "prompt": prompt,
            "seed": seed,
            "batch_pos": i,
            "height": int(output.images.shape[1]),
            "width": int(output.images.shape[2]),
            "clip_cosine": cosine,
            "clip_score": None if cosine is None else float(100 * max(cosine, 0.0)),
            "prior_image_cosine": float(prior_image_cosine[i]) if prior_image_cosine is not None else None,
            **({SOURCE_COSINE: float(source_cosine[i])} if source_cosine is not None else {}),
            "image_path": image_paths[i],
        }
        row |= {f"check_{k}": v for k, v in (checks[i] if checks else {}).items()}
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- PNG infotext


def _labelled() -> dict[str, registry.Setting]:
    """Infotext key -> the registered setting it carries; text settings (the negative prompt) are lines apart."""
    return {s.infotext: s for s in registry.all_settings()}


def _quote(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if re.search(r'[,:"\n]', text) else text


PROJECT = Path(__file__).resolve().parents[1]


def model_shown(model: object) -> object:
    """A model as a PNG or an export names it, never by a server path: a directory inside the project relative to
    it (lab/weights/unclip), another directory by its name, a hub id as it is (the run log keeps the path whole)."""
    if not isinstance(model, str) or not model.startswith("/"):
        return model
    path = Path(model)
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else path.name


def infotext(row: dict) -> str:
    """AUTOMATIC1111's `parameters` text for a row."""
    settings = _labelled()
    lines = [row["prompt"]]
    lines += [f"{label}: {row[s.name]}" for label, s in settings.items() if s.role == TEXT and row.get(s.name)]
    params = {label: row[s.name] for label, s in settings.items() if s.role != TEXT and row.get(s.name) is not None}
    params |= {
        "Seed": row["seed"],
        "Size": f"{row['width']}x{row['height']}",
        "Model hash": row["model_hash"],
        "Model": model_shown(row["model"]),
        "Architecture": row["architecture"],
    }
    if row.get(MODE, TEXT_TO_IMAGE) != TEXT_TO_IMAGE:  # an image taken in: what and how far (A1111's key)
        params |= {"Mode": row[MODE], "Source hash": row[SOURCE_HASH]}
        params |= {s.infotext: row[s.name] for s in registry.strength_settings() if row.get(s.name) is not None}
    params |= {label: row[name] for name, label in MADE_HOW.items() if row.get(name) is not None}
    params["Version"] = f"diffusers {row['diffusers_version']}"
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in params.items()))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict[str, str | None]:
    """The inverse of `infotext`: the prompt, each text setting by name (None when absent) and every `Key: value`."""
    *head, params = text.split("\n")
    texts = {f"{label}: ": s.name for label, s in _labelled().items() if s.role == TEXT}
    out: dict[str, str | None] = dict.fromkeys(texts.values())
    prompt = []
    for line in head:
        start = next((t for t in texts if line.startswith(t)), None)
        if start is None:
            prompt.append(line)
        else:
            out[texts[start]] = line.removeprefix(start)
    out = {"prompt": "\n".join(prompt), **out}
    for match in re.finditer(r'\s*([\w -]+):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)', params):
        key, value = match.group(1).strip(), match.group(2).strip()
        out[key] = json.loads(value) if value.startswith('"') else value
    return out


def save_png(image: Image.Image, path: Path, row: dict, sync_dir: bool = True) -> Path:
    """Write the image with the row's infotext as a new file (never over another image); returns its path,
    `path` or, if that is taken, the first free `<stem>-<k>.png`."""
    info = PngInfo()
    info.add_text("parameters", infotext(row))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_new_file(path, buffer.getvalue(), sync_dir)


def settings_from_png(path: str | Path) -> tuple[str, str, int, Settings]:
    """(architecture, prompt, seed, settings) that regenerate the image at `path`."""
    with Image.open(path) as im:
        text = im.text.get("parameters")
    if text is None:
        raise ValueError(f"{path} has no `parameters` text chunk: it was not written by this tool")
    p = parse_infotext(text)
    values = {s.name: s.kind(p[label]) for label, s in _labelled().items() if s.role != TEXT and label in p}
    values |= {s.name: p[s.name] for s in _labelled().values() if s.role == TEXT}
    return p["Architecture"], p["prompt"], int(p["Seed"]), Settings(**values)


def made_how_from_png(path: str | Path) -> dict:
    """How the image at `path` was made: MADE_HOW's columns its infotext has, diffusers_version and model_hash."""
    with Image.open(path) as im:
        p = parse_infotext(im.text.get("parameters") or "")
    found = {name: p[label] for name, label in MADE_HOW.items() if label in p}
    found |= {name: int(found[name]) for name in MADE_HOW_INTS if name in found}
    if "Version" in p:
        found["diffusers_version"] = p["Version"].removeprefix("diffusers ")
    if "Model hash" in p:
        found["model_hash"] = p["Model hash"]
    return found
