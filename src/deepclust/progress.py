"""Progress bars: one switch for every bar in deepclust.

`--no-progress` on any command sets DEEPCLUST_NO_PROGRESS=1, which every bar made here
obeys; bars also stay silent for work too short to be worth one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

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
