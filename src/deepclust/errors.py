"""User-facing errors: each says what went wrong and how to fix it.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeepclustError(Exception):
    """Base class for errors caused by input (paths, names, configs, checkpoints)."""


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


class RunFolderError(DeepclustError):
    """A run folder is in use, not a run, or does not match what is being resumed."""
