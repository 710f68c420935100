"""Writing files without following symbolic links (every writer into a run folder uses this).

A whole file is written by write_atomic / atomic_file: into a new hidden temporary file
(created with O_EXCL | O_NOFOLLOW, so a link planted at its name is never followed),
flushed, and renamed over the target. A rename replaces a link at the target rather than
writing through it, so a link's target is never touched, and a reader (or a kill) sees the
old file or the new one, never half. Files written in place (metrics.jsonl, the lock) are
opened with open_no_follow, which refuses a link in one line.

Temporary names are `.<name>.tmp-<pid>`; sweep_temp_files removes only those of the names
given (the files deepclust writes there), never a user's `.notes.tmp-2024`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

from deepclust.errors import RunFolderError

TEMP_MARK = ".tmp-"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp-\d+")


def temp_path(path: Path) -> Path:
    """The hidden temporary file `path` is written to before it is renamed into place."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def temp_file_of(name: str) -> str | None:
    """The file name a temporary file of ours was to become, or None when `name` is none."""
    found = _TEMP_NAME.fullmatch(name)
    return found["name"] if found else None


def sweep_temp_files(folder: Path, owned: Collection[str]) -> None:
    """Delete temporary files that a kill left behind for the `owned` names (lock held)."""
    for path in Path(folder).iterdir():
        if temp_file_of(path.name) in owned and not path.is_dir():
            path.unlink(missing_ok=True)  # a link is removed itself, its target kept


def open_no_follow(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open(path, flags) that refuses a symbolic link at `path` with one line."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise RunFolderError(
                f"'{path}' is a symbolic link, and deepclust never writes through links: "
                "remove the link (its target is kept) and run again."
            ) from None
        raise


@contextlib.contextmanager
def atomic_file(path: Path, before_replace: Callable[[], None] | None = None) -> Iterator[BinaryIO]:
    """`with atomic_file(path) as fh:` write fh; on success it replaces `path` (see above).

    before_replace runs after the data is on disk and before the rename (e.g. to keep the
    old file under another name). On failure the temporary file is removed.
    """
    path = Path(path)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # a stale one of an earlier process with our pid
    fd = open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` (str as UTF-8) to `path` atomically, replacing rather than following a link."""
    with atomic_file(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
