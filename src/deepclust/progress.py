"""Progress bars and notes: what deepclust tells the user while it works.

`--no-progress` on any command sets DEEPCLUST_NO_PROGRESS=1, which every bar made here
obeys; bars also stay silent for work too short to be worth one. `note` is a
DeepclustWarning (tests and library users catch it like any warning); `one_line_notes`
makes the CLI print each as one `warning: ...` line to stderr, once per message.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

from deepclust.errors import DeepclustWarning

ENV = "DEEPCLUST_NO_PROGRESS"


def enabled() -> bool:
    """False when the user asked for no progress bars (DEEPCLUST_NO_PROGRESS set, not 0)."""
    return os.environ.get(ENV, "").strip() in ("", "0")


def disable_all() -> None:
    os.environ[ENV] = "1"


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    show: bool = True,
    leave: bool = False,
    initial: int = 0,
) -> Any:
    """A tqdm bar (rate and time left included), silent when `show` is False or bars are off.
    initial: work already done (a resumed job), counted in neither the rate nor the time left."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        disable=not (show and enabled()),
        dynamic_ncols=True,
        initial=initial,
    )


def note(message: str) -> None:
    """Tell the user something they should act on (a DeepclustWarning; see one_line_notes)."""
    warnings.warn(message, DeepclustWarning, stacklevel=2)


_shown_notes: set[str] = set()


def _one_line(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    if not issubclass(category, DeepclustWarning):
        return warnings._formatwarning_orig(message, category, *args, **kwargs)  # type: ignore[attr-defined]
    text = str(message)
    if text in _shown_notes:  # the same note from another call site (e.g. train, then report)
        return ""
    _shown_notes.add(text)
    return f"warning: {text}\n"


def one_line_notes() -> None:
    """Show notes as one `warning: ...` line each, no source line, each message once."""
    warnings.formatwarning = _one_line
