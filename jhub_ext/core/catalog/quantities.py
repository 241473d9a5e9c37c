"""Kubernetes-style resource quantities: CPU cores and memory bytes.

Admins write CPU as ``2``, ``0.5`` or ``500m`` and memory as ``4G``, ``512Mi`` or a
plain number of bytes, exactly as in a Kubernetes manifest, so the catalog reads the
same as the pods it produces.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CPU_HINT = "use a number of cores such as 2 or 500m"
MEMORY_HINT = "use a size with a unit such as 512Mi, 4G or 16Gi"

_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
_CPU_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")


class QuantityError(ValueError):
    """A value that is not a quantity of the expected kind; the message says why."""


def parse_cpu(value: object) -> float:
    """Return a CPU quantity in cores: ``2`` -> 2.0, ``"500m"`` -> 0.5."""
    if isinstance(value, bool):
        raise QuantityError("is not a CPU quantity")
    if isinstance(value, int | float):
        cores = Decimal(str(value))
    elif isinstance(value, str) and (match := _CPU_RE.match(value.strip())):
        number, milli = match.groups()
        cores = Decimal(number) / (1000 if milli else 1)
    else:
        raise QuantityError("is not a CPU quantity")
    if cores <= 0:
        raise QuantityError("must be more than zero")
    return float(cores)


def parse_memory(value: object) -> int:
    """Return a memory quantity in bytes: ``"4G"`` -> 4_000_000_000, ``"1Gi"`` -> 2**30."""
    if isinstance(value, bool):
        raise QuantityError("is not a memory size")
    if isinstance(value, int):
        size = Decimal(value)
    elif isinstance(value, str) and (match := _MEMORY_RE.match(value.strip())):
        number, unit = match.groups()
        try:
            size = Decimal(number) * _MEMORY_UNITS[unit or ""]
        except InvalidOperation:  # pragma: no cover - the pattern admits only digits
            raise QuantityError("is not a memory size") from None
    else:
        raise QuantityError("is not a memory size")
    if size <= 0:
        raise QuantityError("must be more than zero")
    return int(size)


def format_cpu(cores: float) -> str:
    """``2.0`` -> ``"2"``, ``0.5`` -> ``"0.5"``: how the menu shows cores."""
    return f"{cores:g}"


def format_memory(size: int) -> str:
    """Show bytes in the unit family the admin wrote: ``2**32`` -> "4 GiB", ``4 * 10**9`` -> "4 GB"."""
    binary = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
    decimal = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))
    candidates = [next(((u, f) for u, f in family if size >= f), None) for family in (binary, decimal)]
    fitting = [c for c in candidates if c is not None]
    if not fitting:
        return f"{size} B"
    unit, factor = next((c for c in fitting if size % c[1] == 0), fitting[0])
    return f"{size / factor:.3g} {unit}"
