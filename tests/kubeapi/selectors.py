"""Label and field selectors as the Kubernetes API parses them (the subset clients use)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_SET = re.compile(r"^\s*(!?)([^\s!=,()]+)\s*(?:(in|notin)\s*\(([^)]*)\)|(==|=|!=)\s*([^,\s]*))?\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate on an object's labels; raises ValueError for a selector it cannot parse."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(text or ""):
        match = _SET.match(term)
        if not match:
            raise ValueError(f"unable to parse requirement: {term!r}")
        negate, key, set_op, values, op, value = match.groups()
        if set_op:
            options = {v.strip() for v in values.split(",") if v.strip()}
            if set_op == "in":
                checks.append(lambda labels, k=key, o=options: labels.get(k) in o)
            else:
                checks.append(lambda labels, k=key, o=options: labels.get(k) not in o)
        elif op in ("=", "=="):
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif negate:
            checks.append(lambda labels, k=key: k not in labels)
        else:
            checks.append(lambda labels, k=key: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector(text: str | None) -> Callable[[dict[str, Any]], bool]:
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_terms(text or ""):
        if "!=" in term:
            path, value = (part.strip() for part in term.split("!=", 1))
            checks.append(lambda obj, p=path, v=value: _field(obj, p) != v)
        elif "=" in term:
            path, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            checks.append(lambda obj, p=path, v=value: _field(obj, p) == v)
        else:
            raise ValueError(f"invalid field selector: {term!r}")
    return lambda obj: all(check(obj) for check in checks)
