"""An exclusive lock on a run folder, held by one training process for the whole run.

The lock is `RUN_DIR/.deepclust.lock`: an flock on that file (released by the kernel when
the process dies, however it dies) plus the holder's pid, host and start time inside it,
to name the holder in the error and to report a stale lock left by a dead process. On file
systems without flock the pid and host decide: a lock whose process no longer runs on this
host is stale and is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from deepclust.engine.files import open_no_follow
from deepclust.errors import RunFolderError

LOCK = ".deepclust.lock"


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return None
        raise


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode()) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        holder = {}
    return holder if isinstance(holder, dict) else {}


def process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_alive(holder: dict[str, Any]) -> bool:
    """Without flock: a holder on another host, or a live process here, still holds the lock."""
    if not holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    return isinstance(holder.get("pid"), int) and process_alive(holder["pid"])


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("started", "an unknown time")
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')} (since {since})"


class RunLock:
    """`with RunLock(run_dir, "train"):` holds the folder's lock; RunFolderError if taken."""

    def __init__(self, run_dir: str | Path, command: str) -> None:
        self.path = Path(run_dir) / LOCK
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise RunFolderError naming the process that holds it."""
        for _ in range(5):  # retried only when the file was replaced while we opened it
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if self._take(fd):
                    self.fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise RunFolderError(f"could not lock '{self.path.parent}': its lock file keeps changing.")

    def _take(self, fd: int) -> bool:
        locked = _try_flock(fd)
        holder = _read_holder(fd)
        if locked is False or (locked is None and _holder_alive(holder)):
            raise RunFolderError(
                f"'{self.path.parent}' is in use by {_describe(holder)}, running "
                f"'{holder.get('command', '?')}'. Wait for it to finish, or use another --out; "
                f"if that process is gone for good, delete {self.path}."
            )
        if os.fstat(fd).st_ino != _inode(self.path):
            return False  # released and removed while we opened it: open the new file
        if holder:
            warnings.warn(
                f"taking over the lock of '{self.path.parent}' left by {_describe(holder)}, "
                "which no longer runs.",
                stacklevel=4,
            )
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        return True

    def release(self) -> None:
        """Remove the lock file and let go of the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == _inode(self.path):
                self.path.unlink()
        except OSError:
            pass  # the folder went away or turned read-only: the flock still ends below
        finally:
            os.close(self.fd)
            self.fd = None


def _inode(path: Path) -> int | None:
    with contextlib.suppress(OSError):
        return path.stat().st_ino
    return None
