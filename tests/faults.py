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


def roomy_catalog(text: str, **quota: int | str) -> str:
    """The catalog ``text`` with the researchers' quota raised (full-size runs need more room than the
    shipped quota gives a whole group)."""
    shipped = "  researchers: {cpu: 16, memory: 128Gi, servers: 10, jobs: 20}"
    assert shipped in text, "the shipped catalog's quota line changed; update tests/faults.py"
    fields = {"cpu": 16, "memory": "128Gi", "servers": 10, "jobs": 20, **quota}
    return text.replace(shipped, "  researchers: {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}")
