"""Kubernetes quantity strings, both ways: what we write into manifests and read back from nodes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from jhub_ext.core.catalog.quantities import QuantityError, parse_memory

_DECIMAL_SUFFIXES = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}


def cpu_quantity(cores: float) -> str:
    """Cores as the API writes them: 2.0 -> "2", 0.5 -> "500m"."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: int) -> str:
    """Bytes as the shortest exact quantity: 2**32 -> "4Gi", 4*10**9 -> "4G", else plain bytes."""
    units = [("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)]
    units += [("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)]
    exact = [f"{size // factor}{suffix}" for suffix, factor in units if size >= factor and size % factor == 0]
    return min(exact, key=len, default=str(size))


def parse_cpu_quantity(text: str | int | float) -> float:
    """A node's or pod's CPU quantity in cores ("3920m", "8", "250000000n")."""
    value = str(text).strip()
    suffix = value[-1] if value and value[-1] in "num" else ""
    number = value[: -1 if suffix else None]
    return float(Decimal(number) * _DECIMAL_SUFFIXES[suffix])


def parse_memory_quantity(text: str | int) -> int:
    """A node's or pod's memory quantity in bytes; accepts everything the API returns."""
    value = str(text).strip()
    if value.endswith("m"):  # milli-bytes: the API allows it, nobody means it
        return int(Decimal(value[:-1]) / 1000)
    try:
        return parse_memory(value)
    except QuantityError:
        if value in ("0", "0.0"):
            return 0
        raise


_SUFFIXES = {
    **_DECIMAL_SUFFIXES,
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]{0,2})$")


def parse_quantity(text: str | int | float) -> Decimal:
    """Any Kubernetes quantity ("100Gi", "1.5", "250m", "1e3", "2k") as a number."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
        if suffix in _SUFFIXES:
            return value * _SUFFIXES[suffix]
        if suffix[0] in "eE" and suffix[1:].lstrip("+-").isdigit():
            return value * Decimal(10) ** int(suffix[1:])
    except (InvalidOperation, IndexError):
        pass
    raise QuantityError(f"{text!r} is not a Kubernetes quantity")
