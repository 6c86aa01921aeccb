"""Writing user-visible files whole or not at all, and disk errors as one-line user errors.

A file is written to a temporary name beside its final one, synced, then renamed over it: a reader
sees the old file or the new one, never half of one, and a full or read-only disk leaves the old
file where it was.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dlrs_bench.errors import UserInputError

#: Prefix of the temporary files :func:`write_atomic` creates (hidden; removed on failure).
TEMP_PREFIX = ".tmp-"


def cannot_write(path: Path, error: OSError) -> UserInputError:
    """The user error for ``error`` raised while writing ``path``: the path and the OS's reason."""
    return UserInputError(f"cannot write {path}: {error.strerror or error}")


def make_folder(path: Path) -> None:
    """Create the folder ``path`` and its parents (nothing if it exists); a user error naming it
    when it cannot be made (a file in the way, a read-only or full disk, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserInputError(f"cannot write {path}: it is a file, not a folder") from None
    except OSError as e:
        raise cannot_write(path, e) from None


def write_temp(folder: Path, data: bytes | str, suffix: str = "") -> Path:
    """``data`` (text as UTF-8) in a new synced temporary file of ``folder``; its path. On any
    failure the file is removed and the ``OSError`` raised."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, temp = _create_temp(folder, suffix)
    try:
        try:
            _write_all(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _create_temp(folder: Path, suffix: str) -> tuple[int, Path]:
    """A new empty file of ``folder`` with a random hidden name, open for writing, with the permissions
    of any file the user creates (``tempfile.mkstemp`` would make it readable by its owner only)."""
    while True:
        temp = folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}{suffix}"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to the file descriptor ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def sync(path: Path) -> None:
    """Flush ``path`` to disk: a file's data (a full disk may refuse only now), or a folder's entries (the
    renames made in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` (text as UTF-8) whole or not at all: a synced temporary file
    renamed over it. Returns ``path``; raises a user error naming it when the disk refuses (the old
    file, if any, stays as it was and no temporary file is left)."""
    try:
        temp = write_temp(path.parent, data, suffix=path.suffix)
        try:
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        sync(path.parent)
    except OSError as e:
        raise cannot_write(path, e) from None
    return path
