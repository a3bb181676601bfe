"""Progress bars: shown where a caller asks for them (``progress=True``), hidden everywhere when the environment
sets ``TQDM_DISABLE`` (as CI and the stored chapters do), so a chapter prints the same with a cold or warm cache."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm.auto import tqdm


def hidden_by_environment() -> bool:
    """True when ``TQDM_DISABLE`` is set to anything but empty, ``0`` or ``false``."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")


def progress_bar(iterable: Iterable | None = None, *, show: bool, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, shown if ``show`` and not hidden by the environment."""
    return tqdm(iterable, disable=not show or hidden_by_environment(), **kwargs)
