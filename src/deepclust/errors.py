"""User-facing errors: each says what went wrong and how to fix it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class DeepclustError(Exception):
    """Base class for errors caused by input (paths, names, configs, checkpoints)."""


class DeepclustWarning(UserWarning):
    """A note to the user (e.g. skipped files): the CLI shows it as one line, once."""


class DataError(DeepclustError):
    """A dataset is missing, empty, unreadable or has the wrong layout."""


class ConfigError(DeepclustError):
    """A config key or value is invalid."""


class CheckpointError(DeepclustError):
    """A checkpoint is missing, corrupt, or belongs to another run."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """Message for an unknown name that lists the valid ones and the closest match."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid)}."


# How each CLI command sets a config key, for messages that tell the user what to pass; the
# CLI names its command (`command`), Python callers get train's flags (and k_min / k_max).
_OPTIONS = {
    "train": {"k_min": "the MIN of --k-range", "k_max": "the MAX of --k-range"},
    "cluster": {
        "data.data_dir": "PHOTOS",
        "clusters": "--k",
        "k_min": "the MIN of --k-range",
        "k_max": "the MAX of --k-range",
    },
}
_DEFAULT_OPTIONS = {
    "data.data_dir": "--data-dir",
    "clusters": "--clusters",
    "encoder.name": "--encoder",
    "encoder.weights": "--set encoder.weights=",
}
_COMMAND: ContextVar[str | None] = ContextVar("deepclust_command", default=None)


@contextmanager
def command(name: str) -> Iterator[None]:
    """Messages raised inside name the options of CLI command `name` (see `option`)."""
    token = _COMMAND.set(name)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def option(key: str, value: object = None) -> str:
    """How the command in use sets config `key` (to `value`): '--clusters 10' under `train`,
    '--k 10' under `cluster`, '--set encoder.name=hf:x' where there is no --encoder."""
    used = _OPTIONS.get(_COMMAND.get() or "", {})
    name = used.get(key) or _DEFAULT_OPTIONS.get(key, key)
    if value is None:
        return name
    return f"{name}{'' if name.endswith('=') else ' '}{value}"


def counted(n: int, word: str, plural: str | None = None) -> str:
    """'1 image', '2 images', '1,000 images': a count with its noun in the right number."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


class OutputError(DeepclustError):
    """An output file or folder would overwrite something deepclust did not write."""


class RunFolderError(DeepclustError):
    """A run folder is in use, not a run, or does not match what is being resumed."""


class RunFileError(RunFolderError):
    """A file of a run folder is not what deepclust wrote (invalid JSON, a field of the wrong kind)."""


# OS errors a user can fix (paths, permissions, space), shown in one line.
USER_OS_ERRORS = {
    errno.ENOENT: "does not exist",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "already exists",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_error_line(e: OSError) -> str | None:
    """One line for an OS error on a user path, or None when it is not one of those."""
    if e.errno not in USER_OS_ERRORS:
        return None
    where = f"'{e.filename}': " if e.filename else ""
    return (
        f"{where}{USER_OS_ERRORS[e.errno]} ({e.strerror or e}). Check the path and its permissions."
    )


def report_failure(e: Exception | KeyboardInterrupt) -> int:
    """Print why a command failed and return its exit status (the CLI's one handler).

    DeepclustError and OS errors on user paths: one line, exit 2. Ctrl-C: one line, exit 130.
    Anything else is a bug: the traceback and a request to report it, exit 1.
    """
    if isinstance(e, KeyboardInterrupt):
        print("deepclust: interrupted", file=sys.stderr)
        return 130
    line = str(e) if isinstance(e, DeepclustError) else None
    if isinstance(e, OSError):
        line = os_error_line(e)
    if line is not None:
        print(f"deepclust: error: {line}", file=sys.stderr)
        return 2
    traceback.print_exception(e)
    print(
        "deepclust: this is a bug in deepclust, not in your input. Please report it on the "
        "deepclust issue tracker with the command you ran and the traceback above.",
        file=sys.stderr,
    )
    return 1
