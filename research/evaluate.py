"""Evaluate the Shapes lab's shipped weights: `python -m research.evaluate [--weights lab/weights] [--n-single 200]
[--n-two 200] [--seed 0] [--batch-size 25] [--json FILE] [--device auto]`.

What it measures, each a proportion with its 95% Wilson score interval (Wilson 1927):
  - single-object held-out prompts (`lab/prompts/heldout_single.txt`): colour, shape, and size and
    position where the caption states them, per architecture, read back by `lab.checker`;
  - the same measures on their seen twins (`lab/prompts/seen_single.txt`: each line's colour swapped
    for one its shape trains with), so held-out against seen is the cost of the unseen pairing alone;
  - two-object held-out prompts (`lab/prompts/heldout_two.txt`): colour and shape of each object,
    relation, count and all-correct, per architecture (the lab's headline finding);
  - text -> image retrieval top-1 among 100 held-out scenes rendered by the world (clean ground
    truth), each caption true of its own scene only, for the judge CLIP and for the generator CLIP
    (unCLIP's text and image encoders).
One image per prompt, seed = base seed + prompt index, at the pipelines' default steps, made and scored by the
comparison harness (comparisons.harness: the rows' `check_*` columns are the app's) with the intervals of
comparisons.summary; like app.py, this entry point sits above the engine it runs. The issue's
bars are printed beside the measures; the two-object measures have none. After the table, per
architecture, the shapes drawn for each shape asked, held-out and seen: what a miss drew instead.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from comparisons.harness import Harness
from comparisons.intervals import Proportion, proportion
from comparisons.metrics import Judge, lab_judge
from comparisons.settings import Settings
from lab.captions import parse_caption
from lab.prompt_files import read_prompts
from lab.world import SHAPES, Scene, caption_is_true_of, sample_scene
from pipelines import registry
from pipelines.devices import pick_device

MAX_PROMPTS = 200  # lines of each held-out prompt file
RETRIEVAL_PAIRS = 100
# measure -> the harness row's checker column; NaN rows (the caption does not ask) are left out
SINGLE_COLUMNS = {
    "colour": "check_object1_colour_correct",
    "shape": "check_object1_shape_correct",
    "size": "check_object1_size_correct",
    "position": "check_position_correct",
}
TWO_COLUMNS = {
    "colour 1": "check_object1_colour_correct",
    "colour 2": "check_object2_colour_correct",
    "shape 1": "check_object1_shape_correct",
    "shape 2": "check_object2_shape_correct",
    "relation": "check_relation_correct",
    "count": "check_count_correct",
    "all correct": "check_all_correct",
}
NOTHING = "none"  # shapes_drawn's column for a caption object with no detection in its place
# measure name -> minimum accuracy the issue asks for (every architecture must reach it)
BARS = {"single/colour": 0.90, "single/shape": 0.80, "retrieval/judge": 0.90, "retrieval/generator": 0.90}


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation run does (the CLI's flags)."""

    weights: Path = Path("lab/weights")  # holds unclip/, latent_diffusion/ and judge/
    n_single: int = MAX_PROMPTS  # first n single-object held-out prompts, and as many of their seen twins
    n_two: int = MAX_PROMPTS  # first n two-object held-out prompts
    seed: int = 0  # prompt i gets seed + i; also seeds the retrieval scenes
    batch_size: int = 25  # prompts per pipeline call
    device: str = "auto"  # auto (CUDA if present), cpu, cuda, ...
    settings: Settings = Settings()  # steps and guidance: the pipelines' defaults unless a test asks for fewer

    def __post_init__(self) -> None:
        for name in ("n_single", "n_two"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROMPTS:
                raise ValueError(
                    f"{name} must be an int in [1, {MAX_PROMPTS}] (the prompt file's length), got {value!r}"
                )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**62:
            raise ValueError(f"seed must be an int in [0, 2**62), got {self.seed!r}")
        pick_device(self.device)  # an unknown device is refused here, before any weights load
        missing = [p for p in ("unclip", "latent_diffusion", "judge") if not (Path(self.weights) / p).is_dir()]
        if missing:
            raise ValueError(f"no weights for {', '.join(missing)} under {self.weights}: run `make train` first")


@dataclass(frozen=True)
class Measure:
    """One line of the table: a measure's proportion per column (an architecture, or `shared`)."""

    name: str  # "<group>/<measure>", e.g. "two/relation"
    n: int
    values: dict[str, Proportion | None]  # None where n is 0 (no caption asks)
    bar: float | None = None
    passed: bool | None = None  # every value >= bar; None without a bar


@dataclass(frozen=True)
class Evaluation:
    """Everything one run measured."""

    measures: list[Measure]  # the table's lines, in order
    shapes_drawn: dict[str, dict[str, dict[str, dict[str, int]]]]  # arch -> group -> shapes_drawn(rows)


@dataclass(frozen=True)
class Group:
    """One block of the table: a prompt file and the measures read from its images."""

    prompt_file: str  # a stem of lab/prompts
    columns: Mapping[str, str]  # measure -> checker column
    one_object: bool  # its prompts name one object: EvalConfig.n_single of them, and the shapes drawn are counted


GROUPS = {
    "single": Group("heldout_single", SINGLE_COLUMNS, True),
    "seen": Group("seen_single", SINGLE_COLUMNS, True),
    "two": Group("heldout_two", TWO_COLUMNS, False),
}


# ----------------------------------------------------------------------------- pure helpers


def retrieval_top1(text_emb: torch.Tensor, image_emb: torch.Tensor) -> float:
    """Fraction of texts whose most cosine-similar image is their own (row i pairs with row i)."""
    if text_emb.ndim != 2 or text_emb.shape != image_emb.shape or len(text_emb) == 0:
        raise ValueError(
            f"need two non-empty (N, D) embeddings of the same shape, got {tuple(text_emb.shape)} "
            f"and {tuple(image_emb.shape)}"
        )
    t = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    i = torch.nn.functional.normalize(image_emb.float(), dim=-1)
    best = (t @ i.T).argmax(dim=1)  # (N,) index of each text's best image
    return (best == torch.arange(len(t))).float().mean().item()


def accuracy_table(rows: Sequence[Mapping[str, float]], columns: Mapping[str, str]) -> dict[str, Proportion | None]:
    """Accuracy of each measure over the rows that ask for it (checker rows; NaN = not asked)."""
    table = {}
    for measure, column in columns.items():
        verdicts = [float(row[column]) for row in rows if not math.isnan(float(row[column]))]
        table[measure] = proportion(int(sum(verdicts)), len(verdicts)) if verdicts else None
    return table


def shapes_drawn(rows: Sequence[Mapping[str, object]]) -> dict[str, dict[str, int]]:
    """Shape asked -> {shape read in its place, or NOTHING -> count} over the one-object rows: a
    confusion table whose off-diagonal says what a miss drew instead (a circle asked, a square drawn)."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        spec = parse_caption(str(row["prompt"]))
        if len(spec.objects) != 1:
            continue
        read = row["check_object1_shape_read"] or NOTHING
        counts = table.setdefault(spec.objects[0].shape, {})
        counts[read] = counts.get(read, 0) + 1
    return table


def retrieval_scenes(n: int, seed: int) -> list[Scene]:
    """n held-out scenes, each caption true of its own scene only. Distinct captions are not enough:
    "a blue triangle" is as true of the scene captioned "a large blue triangle at the bottom", and
    retrieving that image is no error of the CLIP's (most misses on merely distinct captions were such:
    lab/README.md, "Evaluation")."""
    rng, scenes, specs = np.random.default_rng(seed), [], []
    while len(scenes) < n:
        scene = sample_scene(rng, "heldout")
        spec = scene.spec()
        if not any(
            caption_is_true_of(spec, other) or caption_is_true_of(other_spec, scene)
            for other, other_spec in zip(scenes, specs)
        ):
            scenes.append(scene)
            specs.append(spec)
    return scenes


def weights_hash(directory: Path) -> str:
    """sha256 over a package's weight files (names and contents), to tie figures to weights."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.safetensors")):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- model runs


def architectures_in(weights: Path) -> tuple[str, ...]:
    """The registered architectures whose pipeline the package holds (a folder with model_index.json), in order."""
    return tuple(a for a in registry.names() if (Path(weights) / a / "model_index.json").is_file())


def lab_harness(weights: Path, device: torch.device) -> Harness:
    """The package's pipelines and judge in a harness that scores with the checker and writes nothing."""
    pipes = registry.load_all(
        {a: str(weights / a) for a in architectures_in(weights)}, device=device, dtype=torch.float32
    )
    return Harness(
        pipes,
        judge=lab_judge(weights / "judge", device),
        out_dir=Path(tempfile.gettempdir()),
        use_checker=True,
        log=None,
    )


def generate_and_check(
    harness: Harness,
    architecture: str,
    prompts: list[str],
    seed: int,
    batch_size: int,
    settings: Settings = Settings(),
) -> list[dict]:
    """One image per prompt (prompt i with seed + i), in batches; the harness's row for each, not saved."""
    rows = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        rows += harness.make(architecture, batch, [seed + start + j for j in range(len(batch))], settings).rows
    return rows


def retrieval_accuracies(harness: Harness, seed: int) -> dict[str, float]:
    """Text -> image retrieval top-1 among RETRIEVAL_PAIRS held-out scenes, for the judge and for the generator
    CLIP as unCLIP uses it (its text encoder's projected embedding, its image encoder)."""
    scenes = retrieval_scenes(RETRIEVAL_PAIRS, seed)
    images = [Image.fromarray(scene.render()) for scene in scenes]
    captions = [scene.caption() for scene in scenes]
    judge: Judge = harness.judge
    unclip = harness.pipeline("unclip")
    generator = (unclip.encode_prompt(captions, with_uncond=False).embeds.cpu(), unclip.encode_image(images).cpu())
    embeddings = {"judge": (judge.embed_texts(captions), judge.embed_images(images)), "generator": generator}
    return {name: retrieval_top1(text_emb, image_emb) for name, (text_emb, image_emb) in embeddings.items()}


def with_bar(name: str, n: int, values: dict[str, Proportion | None]) -> Measure:
    bar = BARS.get(name)
    passed = None if bar is None else all(v is not None and v.value >= bar for v in values.values())
    return Measure(name, n, values, bar, passed)


def evaluate(config: EvalConfig) -> Evaluation:
    """Every measure of the module docstring, in table order, and the shapes drawn."""
    device = pick_device(config.device)
    weights = Path(config.weights)
    prompts = {
        name: read_prompts(g.prompt_file)[: config.n_single if g.one_object else config.n_two]
        for name, g in GROUPS.items()
    }
    tables: dict[str, dict[str, dict[str, Proportion | None]]] = {name: {} for name in GROUPS}
    counts: dict[str, dict[str, int]] = {name: {} for name in GROUPS}
    drawn: dict[str, dict[str, dict[str, dict[str, int]]]] = {}
    harness = lab_harness(weights, device)
    for arch in harness.architectures:
        for name, group in GROUPS.items():
            rows = generate_and_check(harness, arch, prompts[name], config.seed, config.batch_size, config.settings)
            for measure, value in accuracy_table(rows, group.columns).items():
                tables[name].setdefault(measure, {})[arch] = value
                counts[name][measure] = value.n if value else 0
            if group.one_object:
                drawn.setdefault(arch, {})[name] = shapes_drawn(rows)
    measures = [
        with_bar(f"{group}/{m}", counts[group][m], tables[group][m]) for group in tables for m in tables[group]
    ]

    for name, accuracy in retrieval_accuracies(harness, config.seed).items():
        k = round(accuracy * RETRIEVAL_PAIRS)
        measures.append(with_bar(f"retrieval/{name}", RETRIEVAL_PAIRS, {"shared": proportion(k, RETRIEVAL_PAIRS)}))
    return Evaluation(measures, drawn)


# ----------------------------------------------------------------------------- report


def _cell(value: Proportion | None) -> str:
    return "-" if value is None else f"{value.value:6.1%} [{value.low:.1%}, {value.high:.1%}]"


def format_table(measures: Sequence[Measure]) -> str:
    """One line per measure: measure, n, a column per architecture, bar, pass. Retrieval rows have one value,
    shared by every architecture (the judge scores all; the generators share the CLIP text encoder)."""
    archs = list(dict.fromkeys(a for m in measures for a in m.values if a != "shared"))
    lines = [f"{'measure':<22} {'n':>4}  " + " ".join(f"{a:<26}" for a in archs) + f" {'bar':>5}  pass"]
    for m in measures:
        cells = (
            [_cell(m.values["shared"])] + ["(shared)"] * (len(archs) - 1)
            if "shared" in m.values
            else [_cell(m.values.get(arch)) for arch in archs]
        )
        bar = "-" if m.bar is None else f"{m.bar:.0%}"
        verdict = "-" if m.passed is None else ("PASS" if m.passed else "FAIL")
        lines.append(f"{m.name:<22} {m.n:>4}  " + " ".join(f"{c:<26}" for c in cells) + f" {bar:>5}  {verdict}")
    return "\n".join(lines)


def format_shapes_drawn(drawn: Mapping[str, Mapping[str, Mapping[str, Mapping[str, int]]]]) -> str:
    """Per architecture and group, one line per shape asked: how many of its images drew each shape."""
    columns = (*SHAPES, NOTHING)
    lines = ["shapes drawn for one-object prompts (rows: the shape asked; columns: the shape read in its place)"]
    for arch, groups in drawn.items():
        for group, table in groups.items():
            lines.append(f"{arch + ', ' + group:<26} {'n':>4}  " + " ".join(f"{c:>8}" for c in columns))
            for asked in (s for s in SHAPES if s in table):
                row = table[asked]
                lines.append(
                    f"  {asked:<24} {sum(row.values()):>4}  " + " ".join(f"{row.get(c, 0):>8}" for c in columns)
                )
    return "\n".join(lines)


def report(config: EvalConfig, evaluation: Evaluation) -> dict:
    """The JSON record: settings, provenance, every measure and the shapes drawn."""
    weights = Path(config.weights)

    def plain(value: object) -> object:
        return str(value) if isinstance(value, Path) else dict(value.items()) if isinstance(value, Settings) else value

    settings = {f.name: plain(getattr(config, f.name)) for f in fields(config)}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(pick_device(config.device)),
        "settings": {**settings, "retrieval_pairs": RETRIEVAL_PAIRS, "interval": "Wilson score, 95%"},
        "weights_sha256": {p: weights_hash(weights / p) for p in (*architectures_in(weights), "judge")},
        "measures": [asdict(m) for m in evaluation.measures],
        "shapes_drawn": evaluation.shapes_drawn,
    }


def main(argv: list[str] | None = None, settings: Settings = Settings()) -> Evaluation:
    """The CLI. `settings` is for tests, which cannot afford the default steps."""
    parser = argparse.ArgumentParser(description="Evaluate the Shapes lab's shipped weights on held-out prompts.")
    parser.add_argument(
        "--weights", type=Path, default=EvalConfig.weights, help="holds unclip/, latent_diffusion/, judge/"
    )
    parser.add_argument(
        "--n-single",
        type=int,
        default=MAX_PROMPTS,
        help=f"single-object prompts (and as many seen twins), 1-{MAX_PROMPTS}",
    )
    parser.add_argument("--n-two", type=int, default=MAX_PROMPTS, help=f"two-object prompts, 1-{MAX_PROMPTS}")
    parser.add_argument("--seed", type=int, default=0, help="prompt i is generated with seed + i")
    parser.add_argument("--batch-size", type=int, default=25, help="prompts per pipeline call")
    parser.add_argument("--json", type=Path, help="also write the figures, settings and provenance here")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    try:
        config = EvalConfig(args.weights, args.n_single, args.n_two, args.seed, args.batch_size, args.device, settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    evaluation = evaluate(config)
    print(format_table(evaluation.measures))
    print()
    print(format_shapes_drawn(evaluation.shapes_drawn))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report(config, evaluation), indent=2) + "\n")
    return evaluation


if __name__ == "__main__":
    main()
