"""Environment variables as documented shortcuts for traits' defaults.

Every setting of the jobs service and its backends is a trait with help and an example; a few also
take their default from an environment variable, so the demo, Binder and the hub's own config can
set them without a config file. :func:`env_default` writes that default once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from traitlets import default


def env_default(trait: str, variable: str, fallback: str = "", parse: Callable[[str], Any] = str) -> Any:
    """A ``@default(trait)`` handler: ``parse($variable)`` when it is set (even empty), else
    ``parse(fallback)``.

    Use it in a class body: ``_default_namespace = env_default("namespace", "JHUB_EXT_NAMESPACE", "jhub")``.
    """

    def from_environment(self: object) -> Any:
        return parse(os.environ.get(variable, fallback))

    from_environment.__name__ = f"_default_{trait}"
    from_environment.__doc__ = f"${variable}, else {fallback!r}."
    return default(trait)(from_environment)


def string_mapping(text: str) -> dict[str, str]:
    """A JSON object of strings, as an environment variable holds one; empty text is an empty one."""
    return {str(k): str(v) for k, v in json.loads(text or "{}").items()}


def names(text: str) -> list[str]:
    """Names separated by commas, as an environment variable holds a list (spaces and empty items dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]
