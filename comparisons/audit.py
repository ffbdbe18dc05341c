"""Audit a results folder: does every row have its own image, and does every image say what its row says?

    python -m comparisons.audit DIR [--prune] [--regenerate [--preset lab] [--unclip ID_OR_DIR ...] [--device cpu]]

Reads `DIR/runs.jsonl` and every file under `DIR/images/`, and reports, row by row:
  - missing: the row's image does not exist;
  - shared: the row's image is also another row's (a folder written before images were named per row:
    only the last writer's picture is in it);
  - unreadable: the PNG cannot be decoded (a torn or truncated write);
  - mismatch: the PNG's infotext (prompt, negative prompt, seed, architecture, size, model, steps, guidance;
    an image taken in: mode, source hash, strength) or its pixel size disagrees with the row;
  - an image taken in (unCLIP's variations, img2img): its source under images/sources/ is missing, unreadable,
    or its pixels do not hash to the row's source_hash (mismatch);
and, file by file:
  - unreferenced: an image (or source) no row points to (a run killed between writing its images and logging them);
  - unfinished: a temporary file of an interrupted write.
It prints a summary and exits 1 when anything is wrong, 0 when the folder is clean, 2 when DIR holds no
run log. `--prune` deletes the unreferenced images and unfinished files (never a row, never a row's image).

`--regenerate` also makes every sound row's image again with the preset's models (or those named) and says, row by
row, which promise of comparisons.regeneration applies and whether it is kept: rows whose whole batch is in the log
are made again in their batch, the way they were made (exact); the others alone (close). Each line gives the row's
largest difference in uint8 levels and its PSNR; a row not as promised, or whose weights were not loaded, is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from comparisons.files import TEMP_SUFFIX
from comparisons.presets import DEFAULT_PRESET, FAST_CPU, add_model_flags, load_models, models_from_flags
from comparisons.records import infotext, parse_infotext, weights_hash
from comparisons.regeneration import CLOSE, EXACT, Regenerated, regenerate_batch
from comparisons.schema import SOURCE_HASH, SOURCE_IMAGE
from comparisons.sources import read_source, source_path
from comparisons.store import LOG_NAME, RunLog
from pipelines.base import Pipeline
from pipelines.cpu_speed import CPUSpeed
from pipelines.tokenizer import excerpt

KINDS = ("missing", "shared", "unreadable", "mismatch", "unreferenced", "unfinished")
IMAGES = "images"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a row (`row`: its 1-based line in runs.jsonl) or with a file (`row` None)."""

    kind: str  # one of KINDS
    path: Path
    detail: str
    row: int | None = None


@dataclass
class AuditReport:
    directory: Path
    records: list[dict]  # the log's rows as JSON, in order
    images: int  # PNG files under images/
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)


def row_image(directory: Path, recorded: str) -> Path:
    """Where a row's image is: its recorded path, or the same path under `directory` if the folder was moved."""
    path = Path(recorded)
    if path.is_absolute() and path.exists():
        return path
    if not path.is_absolute() and (Path.cwd() / path).exists():
        return (Path.cwd() / path).resolve()
    parts = path.parts
    if IMAGES in parts:  # .../images/<architecture>/<name>: the folder's own copy
        moved = directory.joinpath(*parts[len(parts) - 1 - parts[::-1].index(IMAGES) :])
        if moved.exists():
            return moved.resolve()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def _strings(row: dict) -> dict:
    """A logged row's infotext fields as parse_infotext gives them, for a like-for-like comparison."""
    return parse_infotext(infotext({k: v for k, v in row.items() if v is not None}))


def compare_png(path: Path, row: dict) -> tuple[str | None, str | None]:
    """(why the file is unreadable, how it disagrees with the row), each None when fine."""
    try:
        with Image.open(path) as im:
            im.load()  # decodes every pixel: a truncated file fails here
            text, size = im.text.get("parameters"), im.size
    except Exception as err:  # noqa: BLE001 - any decoding failure means the same to the user
        return f"cannot decode it ({type(err).__name__}: {err})", None
    if text is None:
        return None, "it has no `parameters` infotext"
    found, expected = parse_infotext(text), _strings(row)
    differ = [
        f"{key}: row {excerpt(str(expected.get(key)), 40)}, image {excerpt(str(found.get(key)), 40)}"
        for key in sorted(set(found) | set(expected))
        if found.get(key) != expected.get(key)
    ]
    if (row.get("width"), row.get("height")) != size:
        differ.append(f"size: row {row.get('width')}x{row.get('height')}, image {size[0]}x{size[1]}")
    return None, "; ".join(differ) or None


def check_source(path: Path, sha256: str) -> tuple[str | None, str | None]:
    """(why a kept source is unreadable, how it disagrees with its row's hash), each None when fine."""
    try:
        found = read_source(path).sha256
    except Exception as err:  # noqa: BLE001 - any decoding failure means the same to the user
        return f"cannot decode the source image ({type(err).__name__}: {err})", None
    return None, None if found == sha256 == path.stem else f"the source's pixels hash to {found}, not {sha256}"


def audit(directory: str | Path) -> AuditReport:
    """Every problem of the folder's rows and images (see the module docstring)."""
    directory = Path(directory).resolve()
    if not (directory / LOG_NAME).is_file():
        raise ValueError(f"{directory} has no {LOG_NAME}: it is not a results folder")
    records = RunLog(directory).read_records()
    files = sorted((directory / IMAGES).rglob("*")) if (directory / IMAGES).is_dir() else []
    report = AuditReport(directory, records, sum(1 for f in files if f.suffix == ".png"))
    owners: dict[Path, list[int]] = defaultdict(list)
    sources: dict[Path, str | None] = {}  # a kept source -> why it is wrong (None: fine), checked once
    for line, row in enumerate(records, start=1):
        if row.get(SOURCE_HASH):
            recorded = row.get(SOURCE_IMAGE) or str(source_path(directory, row[SOURCE_HASH]))
            source = row_image(directory, recorded).resolve()
            if source not in sources:
                sources[source] = _source_problem(source, row[SOURCE_HASH])
            if sources[source] is not None:
                kind, detail = sources[source]
                report.problems.append(Problem(kind, source, detail, line))
        if not row.get("image_path"):
            report.problems.append(Problem("missing", directory, "the row names no image", line))
            continue
        path = row_image(directory, row["image_path"])
        owners[path].append(line)
        if not path.is_file():
            report.problems.append(Problem("missing", path, "the row's image does not exist", line))
            continue
        unreadable, mismatch = compare_png(path, row)
        if unreadable:
            report.problems.append(Problem("unreadable", path, unreadable, line))
        elif mismatch:
            report.problems.append(Problem("mismatch", path, mismatch, line))
    for path, lines in owners.items():
        if len(lines) > 1:
            for line in lines:
                others = ", ".join(str(n) for n in lines if n != line)
                report.problems.append(Problem("shared", path, f"also the image of row(s) {others}", line))
    for path in files:
        if path.name.endswith(TEMP_SUFFIX):
            report.problems.append(Problem("unfinished", path, "a temporary file of an interrupted write"))
        elif path.suffix == ".png" and path.resolve() not in owners and path.resolve() not in sources:
            report.problems.append(Problem("unreferenced", path, "no row points to this image"))
    report.problems.sort(key=lambda p: (p.row is None, p.row or 0, KINDS.index(p.kind), str(p.path)))
    return report


def _source_problem(path: Path, sha256: str) -> tuple[str, str] | None:
    """(kind, detail) of what is wrong with a row's kept source image, None when it is there and right."""
    if not path.is_file():
        return "missing", "the row's source image does not exist"
    unreadable, mismatch = check_source(path, sha256)
    return ("unreadable", unreadable) if unreadable else ("mismatch", mismatch) if mismatch else None


def prune(report: AuditReport) -> list[Path]:
    """Delete the report's unreferenced images and unfinished files; returns what was deleted."""
    gone = [p.path for p in report.problems if p.kind in ("unreferenced", "unfinished")]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def format_report(report: AuditReport) -> str:
    """The summary line, then one line per problem, rows first (each with its architecture, seed and prompt)."""
    counts = report.counts()
    head = f"{report.directory}: {len(report.records)} rows, {report.images} images: " + (
        "clean" if report.clean else ", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k])
    )
    lines = [head]
    for p in report.problems:
        where = f"row {p.row}" if p.row is not None else "file"
        about = ""
        if p.row is not None:
            row = report.records[p.row - 1]
            about = f" [{row.get('architecture')}, seed {row.get('seed')}, {excerpt(str(row.get('prompt')), 40)}]"
        lines.append(f"  {p.kind:<12} {where}{about}: {p.path.name}: {p.detail}")
    return "\n".join(lines)


# The CPU speed-ups a row may name (its cpu_speed), so that it is made again with them.
SPEEDS_BY_LABEL = {speed.label: speed for speed in (CPUSpeed(), FAST_CPU)}


def regenerate_rows(report: AuditReport, pipes: dict[str, Pipeline]) -> list[tuple[int, Regenerated | str]]:
    """(line, its image made again, or why it could not be) for each row without problems: in its batch when the
    log holds the whole batch, each with the CPU speed-ups its rows name (when known), else alone."""
    sound = {p.row for p in report.problems if p.row is not None}
    batches: dict[str, list[int]] = defaultdict(list)
    for line, row in enumerate(report.records, start=1):
        if line not in sound:
            batches[row.get("batch_id") or f"line {line}"].append(line)
    results: list[tuple[int, Regenerated | str]] = []
    for lines in batches.values():
        rows = [report.records[n - 1] for n in lines]
        pipe = pipes.get(rows[0]["architecture"])
        problem = _cannot_make(rows[0], pipe)
        if problem:
            results += [(n, problem) for n in lines]
            continue
        whole = [r.get("batch_pos") for r in rows] == list(range(rows[0].get("batch_size") or 0))
        groups = [lines] if whole else [[n] for n in lines]
        speed = SPEEDS_BY_LABEL.get(rows[0].get("cpu_speed"))
        if speed is not None and pipe.device.type == "cpu":
            pipe.optimize_cpu(speed)
        for group in groups:
            paths = [row_image(report.directory, report.records[n - 1]["image_path"]) for n in group]
            results += list(zip(group, regenerate_batch(pipe, paths)))
    return sorted(results, key=lambda item: item[0])


def _cannot_make(row: dict, pipe: Pipeline | None) -> str | None:
    """Why a row's image cannot be made again with `pipe`, or None."""
    if pipe is None:
        return f"no {row['architecture']} model was loaded"
    image_in = bool(row.get(SOURCE_HASH))
    if row.get("model_hash") != weights_hash(pipe, with_borrowed=image_in):
        return f"the loaded {row['architecture']} weights are not this row's ({row.get('model')}): name its model"
    return None


def format_regenerated(report: AuditReport, results: list[tuple[int, Regenerated | str]]) -> str:
    """A summary line, then one line per row made again."""
    made = [r for _, r in results if isinstance(r, Regenerated)]
    kept = sum(r.holds for r in made)
    cases = Counter(r.case for r in made)
    head = (
        f"made again: {len(made)} of {len(results)} rows; {kept} as promised "
        f"({cases[EXACT]} {EXACT}, {cases[CLOSE]} {CLOSE}), {len(results) - kept} not"
    )
    lines = [head]
    for line, result in results:
        row = report.records[line - 1]
        about = (
            f"row {line} [{row.get('architecture')}, seed {row.get('seed')}, {excerpt(str(row.get('prompt')), 40)}]"
        )
        lines.append(f"  {about}: {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check that every row of a results folder has its own, matching image."
    )
    parser.add_argument("directory", type=Path, help="a results folder (holds runs.jsonl and images/)")
    parser.add_argument("--prune", action="store_true", help="delete unreferenced images and unfinished files")
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="also make every row's image again and say whether it is as comparisons.regeneration promises",
    )
    parser.add_argument("--preset", default=None, help="--regenerate's models: lab (default), tiny or pretrained")
    add_model_flags(parser)
    parser.add_argument("--device", default="cpu", help="--regenerate's device (default: cpu)")
    args = parser.parse_args(argv)
    try:
        report = audit(args.directory)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.prune:
        for path in prune(report):
            print(f"deleted {path}")
        report = audit(args.directory)
    if not args.regenerate:
        return 0 if report.clean else 1
    try:
        pipes = load_models(
            args.preset or DEFAULT_PRESET, models=models_from_flags(args), device=args.device, fast_cpu=False
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = regenerate_rows(report, pipes)
    print(format_regenerated(report, results))
    kept = all(isinstance(r, Regenerated) and r.holds for _, r in results)
    return 0 if report.clean and kept else 1


if __name__ == "__main__":
    sys.exit(main())
