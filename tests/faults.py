"""How big the fault-injection tests run: short in ``make test``, at the issue's full size in
``make test-faults`` (which sets ``JHUB_EXT_FAULTS=full``)."""

from __future__ import annotations

import os


def full() -> bool:
    """Whether the fault tests run at full size."""
    return os.environ.get("JHUB_EXT_FAULTS", "short") == "full"


def size(short: int, full_size: int) -> int:
    """``full_size`` when the fault tests run at full size, else ``short``."""
    return full_size if full() else short
