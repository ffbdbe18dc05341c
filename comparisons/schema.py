"""The run log's schema: each column's kind (string, int, float, bool, datetime) from its name, and how rows become
JSON lines and typed frames. The settings and stage columns come from the registered architectures.

Types are derived from column names (`column_kind`), never guessed from values; CSV needs them to restore dtypes.
Columns outside the schema are typed from their JSON values when the log is loaded.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines import registry
from pipelines.registry import GUIDANCE, LEVEL, STEPS, TEXT

STRING, INT, FLOAT, BOOL, DATETIME = "string", "int", "float", "bool", "datetime"
DTYPES = {
    STRING: pd.StringDtype(),
    INT: pd.Int64Dtype(),  # nullable: seeds up to 2**63 - 1 stay exact, absent values are <NA>
    FLOAT: np.dtype("float64"),
    BOOL: pd.BooleanDtype(),  # checker verdicts: True / False / <NA> where no checker ran
    DATETIME: pd.DatetimeTZDtype("us", "UTC"),  # microseconds, as Python datetimes carry
}
ARROW_TYPES = {
    STRING: pa.large_string(),
    INT: pa.int64(),
    FLOAT: pa.float64(),
    BOOL: pa.bool_(),
    DATETIME: pa.timestamp("us", tz="UTC"),
}

_KINDS = {int: INT, float: FLOAT, str: STRING}

# The columns of an image taken in (the "Image in" tab: unCLIP's variations, latent diffusion's img2img), here once:
MODE = "mode"  # registry.TEXT_TO_IMAGE or an ImageIn's mode, so that summaries never pair the one with the other
SOURCE_HASH = "source_hash"  # comparisons.sources.source_hash of the image taken in
SOURCE_IMAGE = "source_image"  # where the results folder keeps it: images/sources/<source_hash>.png
SOURCE_COSINE = "source_cosine"  # the judge's cosine between the image made and the image taken in
VISITOR = "visitor"  # who made the row on a public app: an anonymous id (comparisons.app.access); "" for the owner
TIMING = "timing"  # how a row's seconds were measured:
ISOLATED, CONCURRENT = "isolated", "concurrent"  # one architecture at a time; all of one comparison at once


def core_schema() -> dict[str, str]:
    """Column -> kind of every column the log knows, in the order frames show them; the settings and stage columns
    come from the registered architectures (pipelines.registry)."""
    return _core_schema(registry.names())


@functools.cache
def _core_schema(architectures: tuple[str, ...]) -> dict[str, str]:  # one per set of registered architectures
    settings, stages = registry.all_settings(), registry.all_stages()
    roles = (TEXT, STEPS, GUIDANCE, LEVEL)
    by_role = {role: {s.name: _KINDS[s.kind] for s in settings if s.role == role} for role in roles}
    return {
        # identity
        "run_id": STRING,
        VISITOR: STRING,
        "created_at": DATETIME,
        "architecture": STRING,
        MODE: STRING,
        "model": STRING,
        # what was asked
        "prompt": STRING,
        **by_role[TEXT],
        "seed": INT,
        "height": INT,
        "width": INT,
        **by_role[STEPS],
        **by_role[GUIDANCE],
        **by_role[LEVEL],
        SOURCE_HASH: STRING,
        SOURCE_IMAGE: STRING,
        **{s.name: _KINDS[s.kind] for s in registry.strength_settings()},
        # what ran: the schedule's steps of each denoising loop (img2img's: int(steps × strength))
        **{f"steps_{stage}": INT for stage in registry.denoising_stages()},
        # how it was made: what making it again needs to give the same pixels (comparisons.records.MADE_HOW)
        "batch_size": INT,
        "batch_pos": INT,
        "batch_id": STRING,
        "dtype": STRING,
        "device": STRING,
        "device_name": STRING,
        "threads": INT,
        "cpu_kernels": STRING,
        "cpu_speed": STRING,
        # what it cost
        **{f"seconds_{s}": FLOAT for s in stages},
        "seconds_total": FLOAT,
        **{f"peak_memory_mb_{s}": FLOAT for s in stages},
        "peak_memory_mb": FLOAT,
        "memory_kind": STRING,
        TIMING: STRING,  # ISOLATED or CONCURRENT: the architectures measured one at a time, or side by side
        "peak_rss_mb": FLOAT,
        # how good it is
        "clip_score": FLOAT,
        "clip_cosine": FLOAT,
        "prior_image_cosine": FLOAT,
        SOURCE_COSINE: FLOAT,
        "image_path": STRING,
    }


def core_columns() -> tuple[str, ...]:
    return tuple(core_schema())


# Name rules for columns outside core_schema(), first match wins: (prefix, suffix, kind). Columns
# that match none are typed from their values on load and read back from CSV as strings.
NAME_RULES: tuple[tuple[str, str, str], ...] = (
    ("check_", "_correct", BOOL),  # checker verdicts, e.g. check_colour_correct, check_object1_shape_correct
    ("check_", "_read", STRING),  # what the checker read in a caption object's place, e.g. check_object1_shape_read
    ("check_n_", "", INT),
    ("", "_confidence", FLOAT),  # the checker's object counts and margins
    ("seconds_", "", FLOAT),
    ("peak_memory_mb", "", FLOAT),  # stages such as vae_encode
    ("", "_steps", INT),
    ("", "_seed", INT),
    ("", "_size", INT),
    ("", "_guidance", FLOAT),
    ("", "_scale", FLOAT),
    ("", "_cosine", FLOAT),
    ("", "_score", FLOAT),
    ("", "_version", STRING),
    ("", "_hash", STRING),
    ("", "_at", DATETIME),
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def column_kind(name: str) -> str | None:
    """The schema kind of a column (STRING, INT, ...), or None for a column the schema does not know."""
    schema = core_schema()
    if name in schema:
        return schema[name]
    for prefix, suffix, kind in NAME_RULES:
        if name.startswith(prefix) and name.endswith(suffix):
            return kind
    return None


# ----------------------------------------------------------------------------- encoding rows


def _scalar_kind(column: str, value: object) -> str:
    if isinstance(value, (bool, np.bool_)):  # before int: bool is an int
        return BOOL
    for kind, types in (
        (INT, (int, np.integer)),
        (FLOAT, (float, np.floating)),
        (DATETIME, dt.datetime),
        (STRING, str),
    ):
        if isinstance(value, types):
            return kind
    raise ValueError(
        f"column {column!r}: {type(value).__name__} values cannot be logged; use str, int, "
        "float, bool, a tz-aware datetime or None (log a dict as json.dumps(d))"
    )


def _encode_value(column: str, value: object) -> object:
    """A JSON-ready value, checked against the column's schema kind."""
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, (float, np.floating)) and math.isnan(value))
    ):
        return None
    given, kind = _scalar_kind(column, value), column_kind(column)
    if kind == BOOL and given in (INT, FLOAT) and value in (0, 1):
        given = BOOL  # the checker's CheckResult.as_dict gives verdicts as 1.0 / 0.0 / NaN
    elif kind == INT and given == FLOAT and float(value).is_integer() and abs(value) <= 2**53:
        given = INT  # e.g. 25.0 from a frame where NaN made the column float; exact up to 2**53
    elif kind == FLOAT and given == INT:
        given = FLOAT
    if kind not in (None, given):
        raise ValueError(f"column {column!r} takes {kind} values, got the {given} {value!r}")
    if given == INT and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"column {column!r}: {value} does not fit in a 64-bit signed integer")
    if given == FLOAT and not math.isfinite(value):
        raise ValueError(f"column {column!r}: {value} is not a finite number (JSON has no infinity)")
    if given == DATETIME:
        if value.tzinfo is None:
            raise ValueError(f"column {column!r}: {value} has no time zone; use e.g. datetime.now(timezone.utc)")
        return pd.Timestamp(value).tz_convert("UTC").isoformat()
    return {BOOL: bool, INT: int, FLOAT: float, STRING: str}[given](value)


def encode_rows(rows: Sequence[dict]) -> bytes:
    """The rows as one JSON Lines block, each line ending in "\\n"; raises ValueError on bad rows."""
    if isinstance(rows, dict) or not isinstance(rows, Sequence):
        raise ValueError(f"rows must be a list of dicts, got {type(rows).__name__}")
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
            raise ValueError(f"row {i} must be a dict with string keys, got {row!r:.80}")
        record = {k: _encode_value(k, v) for k, v in row.items()}
        # ensure_ascii=False keeps prompts readable; "\n" inside strings is still escaped
        lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n")
    return "".join(lines).encode("utf-8")


# ----------------------------------------------------------------------------- typed frames


def inferred_kind(values: list) -> str | None:
    """Kind of a column outside the schema, from the JSON types it was logged with (None: mixed)."""
    types = {type(v) for v in values if v is not None}
    if types == {bool}:
        return BOOL
    if types == {int}:
        return INT if all(INT64_MIN <= v <= INT64_MAX for v in values if v is not None) else None
    if types and types <= {int, float}:
        return FLOAT
    if types == {str} or not types:
        return STRING
    return None


def typed_column(name: str, values: list, kind: str | None) -> pd.api.extensions.ExtensionArray | np.ndarray:
    try:
        if kind == DATETIME:
            return (
                pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
                .astype(DTYPES[DATETIME])
                .array
            )
        if kind == FLOAT:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        if kind is None:
            return np.array(values, dtype=object)
        return pd.array(values, dtype=DTYPES[kind])
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {name!r} holds values that are not {kind}: {err}") from err


def frame_from_records(records: list[dict]) -> pd.DataFrame:
    """Decoded JSON records as a typed frame: core columns in schema order, then extra ones sorted."""
    core = core_columns()
    extra = sorted({k for r in records for k in r} - set(core))
    columns = {}
    for name in (*core, *extra):
        values = [r.get(name) for r in records]
        kind = column_kind(name) or inferred_kind(values)
        columns[name] = typed_column(name, values, kind)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with every column the schema knows cast to its dtype; others as they are."""
    out = df.copy()
    for name in out.columns:
        kind = column_kind(name)
        if kind is not None and out[name].dtype != DTYPES[kind]:
            try:
                out[name] = out[name].astype(DTYPES[kind])
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"column {name!r} ({out[name].dtype}) cannot be stored as {DTYPES[kind]}: {err}"
                ) from err
    return out
