"""The run log: one row per generated image, kept in an append-only JSON Lines file.

`RunLog(directory).append(rows)` adds rows to `directory/runs.jsonl`; `load_runs(directory)`
reads them back as a typed DataFrame; `done_keys` tells a resumed sweep what is already done;
`export_csv` / `export_parquet` and `read_csv` / `read_parquet` round-trip a frame exactly.

Why an append-only log: an append never rewrites earlier rows, so a crash, a full disk or two
app users writing at once can at worst lose the rows being appended, never the ones before.

How an append stays atomic (see `RunLog.append`):
  1. every row of the batch is validated and encoded first, so bad input touches nothing;
  2. writers take an exclusive `fcntl.flock` on `runs.lock` (plus a `threading.Lock` for
     threads of one process), so there is one writer at a time across processes;
  3. the batch is one complete, newline-terminated block written with `os.write` on a file
     opened with O_APPEND, then fsync'd;
  4. if the write or the fsync fails (ENOSPC, EIO, an interrupt), the file is truncated back
     to its size before the append, so a failed batch leaves no trace, and the error is raised.

A line counts as committed only when it ends with "\\n"; readers ignore an unterminated tail.
Such a tail can only come from an append that never returned (the process died mid-write or
the rollback in step 4 itself failed), so no caller was told it succeeded. Before appending,
a writer (holding the lock) truncates such a tail back to the last "\\n" instead of terminating
it: terminating would turn the fragment into a garbage line in the middle of the log, and
readers would then have to skip bad lines anywhere, hiding real corruption. After a crash the
complete lines a dead batch did write are kept: each is a whole, valid row, and a resumed sweep
sees them through `done_keys`, so nothing is run twice. Readers take a shared lock so they never
see a tail being truncated under them.

Types: the schema is derived from column names (`column_kind`), never guessed from values;
CSV needs it to restore dtypes. Columns outside the schema are typed from their JSON values
when the log is loaded, but come back from CSV as strings (Parquet keeps every dtype).
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import fcntl
import functools
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pipelines import registry
from pipelines.registry import GUIDANCE, STEPS, TEXT

LOG_NAME = "runs.jsonl"
LOCK_NAME = "runs.lock"

STRING, INT, FLOAT, BOOL, DATETIME = "string", "int", "float", "bool", "datetime"
DTYPES = {
    STRING: pd.StringDtype(),
    INT: pd.Int64Dtype(),  # nullable: seeds up to 2**63 - 1 stay exact, absent values are <NA>
    FLOAT: np.dtype("float64"),
    BOOL: pd.BooleanDtype(),  # checker verdicts: True / False / <NA> where no checker ran
    DATETIME: pd.DatetimeTZDtype("us", "UTC"),  # microseconds, as Python datetimes carry
}
ARROW_TYPES = {STRING: pa.large_string(), INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(),
               DATETIME: pa.timestamp("us", tz="UTC")}

_KINDS = {int: INT, float: FLOAT, str: STRING}


def core_schema() -> dict[str, str]:
    """Column -> kind of every column the log knows, in the order frames show them; the settings and stage columns
    come from the registered architectures (pipelines.registry)."""
    return _core_schema(registry.names())


@functools.cache
def _core_schema(architectures: tuple[str, ...]) -> dict[str, str]:  # one per set of registered architectures
    settings, stages = registry.all_settings(), registry.all_stages()
    by_role = {role: {s.name: _KINDS[s.kind] for s in settings if s.role == role} for role in (TEXT, STEPS, GUIDANCE)}
    return {
        # identity
        "run_id": STRING, "created_at": DATETIME, "architecture": STRING, "model": STRING,
        # what was asked
        "prompt": STRING, **by_role[TEXT], "seed": INT, "height": INT, "width": INT, **by_role[STEPS], **by_role[GUIDANCE],
        # where it ran
        "dtype": STRING, "device": STRING, "device_name": STRING, "versions": STRING,
        # what it cost
        **{f"seconds_{s}": FLOAT for s in stages}, "seconds_total": FLOAT,
        **{f"peak_memory_mb_{s}": FLOAT for s in stages}, "peak_memory_mb": FLOAT, "memory_kind": STRING,
        # how good it is
        "clip_score": FLOAT, "clip_cosine": FLOAT, "prior_image_cosine": FLOAT,
        "image_path": STRING,
    }


def core_columns() -> tuple[str, ...]:
    return tuple(core_schema())


# Name rules for columns outside core_schema(), first match wins: (prefix, suffix, kind). Columns
# that match none are typed from their values on load and read back from CSV as strings.
NAME_RULES: tuple[tuple[str, str, str], ...] = (
    ("check_", "_correct", BOOL),  # checker verdicts, e.g. check_colour_correct, check_object1_shape_correct
    ("check_", "_read", STRING),  # what the checker read in a caption object's place, e.g. check_object1_shape_read
    ("check_n_", "", INT), ("", "_confidence", FLOAT),  # the checker's object counts and margins
    ("seconds_", "", FLOAT), ("peak_memory_mb", "", FLOAT),  # stages such as vae_encode
    ("", "_steps", INT), ("", "_seed", INT), ("", "_size", INT),
    ("", "_guidance", FLOAT), ("", "_scale", FLOAT), ("", "_cosine", FLOAT), ("", "_score", FLOAT),
    ("", "_version", STRING), ("", "_hash", STRING), ("", "_at", DATETIME),
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


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
    for kind, types in ((INT, (int, np.integer)), (FLOAT, (float, np.floating)), (DATETIME, dt.datetime), (STRING, str)):
        if isinstance(value, types):
            return kind
    raise ValueError(f"column {column!r}: {type(value).__name__} values cannot be logged; use str, int, "
                     "float, bool, a tz-aware datetime or None (log a dict as json.dumps(d))")


def _encode_value(column: str, value: object) -> object:
    """A JSON-ready value, checked against the column's schema kind."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, (float, np.floating)) and math.isnan(value)):
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


def _inferred_kind(values: list) -> str | None:
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


def _typed_column(name: str, values: list, kind: str | None) -> pd.api.extensions.ExtensionArray | np.ndarray:
    try:
        if kind == DATETIME:
            return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601").astype(DTYPES[DATETIME]).array
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
        kind = column_kind(name) or _inferred_kind(values)
        columns[name] = _typed_column(name, values, kind)
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
                raise ValueError(f"column {name!r} ({out[name].dtype}) cannot be stored as {DTYPES[kind]}: {err}") from err
    return out


# ----------------------------------------------------------------------------- locks and files


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.Lock())


@contextmanager
def _file_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """flock on `path`: exclusive for writers, shared for readers; released when the fd closes."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if exclusive or err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield  # a read-only log (e.g. a copy on a read-only share) has no writers to wait for
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry durable (POSIX needs the directory fsync'd too)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_tail(fd: int) -> None:
    """Truncate an unterminated last line (never committed: see the module docstring)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:  # scan back in chunks for the last "\n"; the tail is at most one batch long
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    os.ftruncate(fd, end)
    os.fsync(fd)


def _roll_back(fd: int, size: int) -> str:
    """Cut a failed append off the log; says what state the log is left in."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as err:
        return (f"rolling it back failed too ({err}): readers ignore its unterminated tail and the "
                "next append cuts it, but rows it completed stay")
    return "the log is unchanged"


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through a temp file in the same directory, fsync and os.replace: readers see
    the old file or the whole new one, never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; an export is meant to be read by others
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


TEMP_SUFFIX = ".tmp"  # a file being written: `.<name>.<random><TEMP_SUFFIX>` beside its final name


def temp_prefix(name: str) -> str:
    """The start of the temporary file names of a file being written as `name`."""
    return f".{name}."


def write_new_file(path: str | os.PathLike, data: bytes, sync_dir: bool = True) -> Path:
    """Write `data` to a file that did not exist, through a temp file and a hard link, never over another file.

    Readers see no file or the whole file: a kill mid-write leaves only a temp file (named by `temp_prefix`).
    If `path` is taken, the data goes to the first free `<stem>-<k><suffix>`; the path written is returned.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        target, k = path, 0
        while not _claim(tmp, target):
            k += 1
            target = path.with_name(f"{path.stem}-{k}{path.suffix}")
    finally:
        Path(tmp).unlink(missing_ok=True)
    if sync_dir:  # the new name survives a power cut (callers writing many files sync their folder once)
        fsync_dir(path.parent)
    return target


def _claim(tmp: str, target: Path) -> bool:
    """Give the finished temp file the name `target` unless a file has it; False when one has."""
    try:
        os.link(tmp, target)  # fails if `target` exists, unlike a rename: no file ever replaces another
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    # A file system without hard links: reserve the name, then rename over the reservation (a kill between
    # the two leaves an empty file, which comparisons.audit reports as unreadable).
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    os.replace(tmp, target)
    return True


# ----------------------------------------------------------------------------- the log


class RunLog:
    """Append-only run log in `directory` (created if missing): `runs.jsonl` plus its lock file."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"{self.directory} is a file; a run log needs a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / LOG_NAME
        self.lock_path = self.directory / LOCK_NAME

    def append(self, rows: Sequence[dict]) -> None:
        """Append rows after the existing ones, which are never touched.

        Raises ValueError for rows that cannot be logged (nothing is written) and OSError when
        the disk refuses the write (the batch is rolled back: the log is as before the call).
        Only a crash mid-write can keep part of a batch: its complete lines, each a whole row.
        """
        block = encode_rows(rows)
        if not block:
            return
        with _thread_lock(self.path.resolve()), _file_lock(self.lock_path, exclusive=True):
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _drop_torn_tail(fd)
                start = os.fstat(fd).st_size  # the lock guarantees nobody else appends meanwhile
                try:
                    view = memoryview(block)
                    while view:  # one write in practice; a short write only happens when the disk fills
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException as err:
                    outcome = _roll_back(fd, start)
                    if not isinstance(err, OSError):
                        raise
                    raise OSError(err.errno, f"could not append {len(rows)} row(s) to {self.path}: "
                                             f"{err.strerror or err}; {outcome}") from err
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.directory)

    def read_records(self) -> list[dict]:
        """Every committed row as decoded JSON; an unterminated last line is ignored."""
        if not self.path.exists():  # no log yet: nothing to read, and no lock file to leave in a folder only read
            return []
        with _file_lock(self.lock_path, exclusive=False):
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return []
        lines = data.split(b"\n")[:-1]  # the piece after the last "\n" was never committed
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{self.path}, line {number}, is corrupt ({err}); only an "
                                 "unterminated last line can come from a crash") from err
            if not isinstance(record, dict):
                raise ValueError(f"{self.path}, line {number}, is not a JSON object")
            records.append(record)
        return records

    def load(self) -> pd.DataFrame:
        """All rows as a typed frame (see `load_runs`)."""
        return frame_from_records(self.read_records())

    def done_keys(self, key_columns: Sequence[str]) -> set[tuple]:
        """See `done_keys`."""
        return _keys(self.load(), key_columns)


def _existing_log(directory: str | os.PathLike) -> RunLog:
    if not Path(directory).is_dir():
        raise ValueError(f"no run log directory at {directory}")
    return RunLog(directory)


def load_runs(directory: str | os.PathLike) -> pd.DataFrame:
    """All rows of the log in `directory`: core_columns() first, then extra columns sorted; strings
    as "string", created_at as datetime64[us, UTC], ints as Int64, verdicts as "boolean"."""
    return _existing_log(directory).load()


def _keys(df: pd.DataFrame, key_columns: Sequence[str]) -> set[tuple]:
    if isinstance(key_columns, str) or not key_columns:
        raise ValueError(f"key_columns must be a non-empty list of column names, got {key_columns!r}")
    if df.empty:
        return set()
    if any(c not in df.columns for c in key_columns):  # no row has that column yet (a sweep's key in a log of
        return set()                                      # single comparisons): no key is done
    rows = df[list(key_columns)].astype(object).itertuples(index=False, name=None)
    return {tuple(None if pd.isna(v) else v for v in row) for row in rows}


def done_keys(directory: str | os.PathLike, key_columns: Sequence[str]) -> set[tuple]:
    """The key tuples already logged, e.g. ("architecture", "prompt", "seed"); <NA> becomes None; none
    while no row has one of the columns."""
    return _existing_log(directory).done_keys(key_columns)


# ----------------------------------------------------------------------------- exports


def export_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the frame (not its index) to Parquet atomically."""
    table = _arrow_table(df)
    _atomic_write(path, lambda f: pq.write_table(table, f))


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    """A frame written by `export_parquet`, with the schema's dtypes."""
    return conform(pd.read_parquet(path))


# OWASP's CSV injection advice: a spreadsheet runs a text cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"  # prefixed to such a cell (and to one that starts with it, so the prefix can be taken off again)


def _starts(values: pd.Series, prefixes: tuple[str, ...]) -> pd.Series:
    return values.str.startswith(prefixes).fillna(False).astype(bool)


def _neutralised(values: pd.Series) -> pd.Series:
    """Text cells a spreadsheet shows as text: `'` before a formula start (and before a leading `'`)."""
    return values.mask(_starts(values, (*FORMULA_STARTS, QUOTE)), QUOTE + values)


def _restored(values: pd.Series) -> pd.Series:
    """The inverse of `_neutralised`."""
    rest = values.str[1:]
    return values.mask(_starts(values, (QUOTE,)) & _starts(rest, (*FORMULA_STARTS, QUOTE)), rest)


def _text_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if isinstance(df[c].dtype, pd.StringDtype)]


def export_csv(df: pd.DataFrame, path: str | os.PathLike, *, neutralise_formulas: bool = False) -> None:
    """Write the frame (not its index) to CSV atomically.

    Every value is quoted and a missing one is an empty unquoted field, so an empty prompt
    ("") and a missing one stay apart; timestamps are ISO 8601 in UTC. With `neutralise_formulas`
    (files handed to a browser, which a spreadsheet may open) text cells get `neutralise`d;
    `read_csv(path, neutralised=True)` gives the frame back exactly. Numbers are never touched.
    """
    df = conform(df)
    if neutralise_formulas:
        df = df.assign(**{c: _neutralised(df[c]) for c in _text_columns(df)})
    table = _arrow_table(df)
    options = pa_csv.WriteOptions(quoting_style="all_valid")
    _atomic_write(path, lambda f: pa_csv.write_csv(table, f, options))


def read_csv(path: str | os.PathLike, *, neutralised: bool = False) -> pd.DataFrame:
    """A frame written by `export_csv` (`neutralised`: with neutralise_formulas). Dtypes come from the column
    names (`column_kind`); columns outside the schema are read as strings."""
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    types = {name: ARROW_TYPES[column_kind(name) or STRING] for name in header}
    table = pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["true"], false_values=["false"]),
    )
    mapping = {pa.large_string(): DTYPES[STRING], pa.string(): DTYPES[STRING], pa.int64(): DTYPES[INT], pa.bool_(): DTYPES[BOOL]}
    df = conform(table.to_pandas(types_mapper=mapping.get))
    if neutralised:
        df = df.assign(**{c: _restored(df[c]) for c in _text_columns(df)})
    return df


def _arrow_table(df: pd.DataFrame) -> pa.Table:
    if not df.columns.is_unique or not all(isinstance(c, str) for c in df.columns):
        raise ValueError("a frame to export needs unique string column names")
    df = conform(df)
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as err:
        raise ValueError(f"the frame cannot be exported: {err}") from err
