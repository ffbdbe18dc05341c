"""Files written whole or not at all: a kill mid-write leaves the old file or a temp file, never a torn one."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed directory entry durable (POSIX needs the directory fsync'd too)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
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
