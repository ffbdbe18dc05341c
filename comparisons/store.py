"""The run log: one row per generated image, kept in an append-only JSON Lines file.

`RunLog(directory).append(rows)` adds rows to `directory/runs.jsonl`; `load_runs(directory)`
reads them back as a typed DataFrame (the schema: comparisons.schema); `done_keys` tells a resumed sweep
what is already done. Exports: comparisons.exports.

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
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from comparisons.files import fsync_dir
from comparisons.schema import (
    column_kind,
    conform,
    core_columns,
    encode_rows,
    frame_from_records,
    inferred_kind,
    typed_column,
)

LOG_NAME = "runs.jsonl"
LOCK_NAME = "runs.lock"

_thread_locks: dict[Path, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


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
        return (
            f"rolling it back failed too ({err}): readers ignore its unterminated tail and the "
            "next append cuts it, but rows it completed stay"
        )
    return "the log is unchanged"


def append_block(path: Path, lock_path: Path, block: bytes, count: int) -> None:
    """Append `block` (`count` whole, newline-terminated JSON lines) to `path` atomically, as the module docstring
    tells: under `lock_path`'s exclusive lock, after cutting a torn tail, in one O_APPEND write, fsync'd, rolled
    back if the write or the fsync fails (OSError). Shared by every append-only log (comparisons.votes too)."""
    with _thread_lock(path.resolve()), _file_lock(lock_path, exclusive=True):
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _drop_torn_tail(fd)
            start = os.fstat(fd).st_size  # the lock guarantees nobody else appends meanwhile
            try:
                view = memoryview(block)
                while view:  # one write in practice; a short write only happens when the disk fills
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException as err:
                outcome = _roll_back(fd, start)
                if not isinstance(err, OSError):
                    raise
                raise OSError(
                    err.errno,
                    f"could not append {count} row(s) to {path}: {err.strerror or err}; {outcome}",
                ) from err
        finally:
            os.close(fd)
        if created:
            fsync_dir(path.parent)


def read_committed(
    path: Path, lock_path: Path, offset: int = 0, first_line: int = 1, identity: tuple | None = None
) -> tuple[list[dict], int, tuple, bool]:
    """The committed lines of the log at `path` as records, read under `lock_path`'s shared lock: those after byte
    `offset` (line `first_line` on), the offset after them, the file's identity (device, inode), and whether it was
    read from the start instead: when the file is another than `identity` or shorter than `offset` (replaced or
    rewritten)."""
    if not path.exists():  # no log yet: nothing to read, and no lock file to leave in a folder only read
        return [], 0, (), True
    with _file_lock(lock_path, exclusive=False):
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                now = (stat.st_dev, stat.st_ino)
                restart = now != identity or stat.st_size < offset
                if restart:
                    offset, first_line = 0, 1
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], 0, (), True
    end = data.rfind(b"\n") + 1  # the piece after the last "\n" was never committed
    return _parse(path, data[:end], first_line), offset + end, now, restart


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
        if block:
            append_block(self.path, self.lock_path, block, len(rows))

    def read_records(self) -> list[dict]:
        """Every committed row as decoded JSON; an unterminated last line is ignored."""
        return self._read_from(0, 1, None)[0]

    def _read_from(self, offset: int, first_line: int, identity: tuple | None) -> tuple[list[dict], int, tuple, bool]:
        """`read_committed` of this log."""
        return read_committed(self.path, self.lock_path, offset, first_line, identity)

    def load(self) -> pd.DataFrame:
        """All rows as a typed frame (see `load_runs`), reading only what was appended since this process last read
        this log: a refresh of a 100,000-row log costs its new rows, not the whole file."""
        return _frames.load(self)

    def done_keys(self, key_columns: Sequence[str]) -> set[tuple]:
        """See `done_keys`."""
        return _keys(self.load(), key_columns)


def _parse(path: Path, data: bytes, first_line: int) -> list[dict]:
    """Whole lines of the log as records; a line that is not a JSON object is corruption, named by its number."""
    lines = data.split(b"\n")[:-1]
    records = []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ValueError(
                f"{path}, line {number}, is corrupt ({err}); only an unterminated last line can come from a crash"
            ) from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}, is not a JSON object")
        records.append(record)
    return records


@dataclass
class _Read:
    """What this process has read of one log: up to `offset` of the file `identity`, as `records` and `frame`."""

    identity: tuple
    offset: int
    records: list[dict]
    frame: pd.DataFrame


class _Frames:
    """Each log's frame as last read, grown by the rows appended since: the log only grows, at line ends, and a reader
    never sees a batch being appended or rolled back (both happen under the exclusive lock)."""

    def __init__(self) -> None:
        self._read: dict[Path, _Read] = {}
        self._lock = threading.Lock()

    def load(self, log: RunLog) -> pd.DataFrame:
        key = log.path.resolve()
        with self._lock:
            last = self._read.get(key)
        if last is None:
            new, end, now, _ = log._read_from(0, 1, None)
            records, frame = new, frame_from_records(new)
        else:
            new, end, now, restart = log._read_from(last.offset, len(last.records) + 1, last.identity)
            if restart:  # replaced or rewritten: read whole
                records, frame = new, frame_from_records(new)
            elif not new:
                return last.frame.copy(deep=False)
            else:
                records = last.records + new
                frame = _grown(last.frame, frame_from_records(new), records)
        with self._lock:
            self._read[key] = _Read(now, end, records, frame)
        return frame.copy(deep=False)


def _grown(old: pd.DataFrame, new: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """`old` with `new`'s rows after it, typed as frame_from_records types them all together: core columns in schema
    order, then every extra column sorted, typed by what all its values are (those columns alone are read again)."""
    frame = pd.concat([old, new], ignore_index=True)
    core = [c for c in core_columns() if c in frame.columns]
    extra = sorted(set(frame.columns) - set(core))
    frame = conform(frame[core + extra])
    for name in extra:
        if column_kind(name) is None:
            values = [r.get(name) for r in records]
            frame[name] = typed_column(name, values, inferred_kind(values))
    return frame


_frames = _Frames()


def forget_reads() -> None:
    """Forget what this process has read of every log: the next load reads each whole (a benchmark's cold read)."""
    with _frames._lock:
        _frames._read.clear()


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
        return set()  # single comparisons): no key is done
    rows = df[list(key_columns)].astype(object).itertuples(index=False, name=None)
    return {tuple(None if pd.isna(v) else v for v in row) for row in rows}


def done_keys(directory: str | os.PathLike, key_columns: Sequence[str]) -> set[tuple]:
    """The key tuples already logged, e.g. ("architecture", "prompt", "seed"); <NA> becomes None; none
    while no row has one of the columns."""
    return _existing_log(directory).done_keys(key_columns)
