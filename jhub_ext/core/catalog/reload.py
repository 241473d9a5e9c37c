"""Hot reload with keep-last-good.

:class:`CatalogSource` re-reads the catalog when its file changes and otherwise hands
out the catalog it already has. It checks the file with one ``stat`` per use, so there
is no thread and no timer, and an edit is seen by the very next spawn. ``stat`` follows
symlinks, so the swap Kubernetes does when it updates a mounted ConfigMap (the
``..data`` link moves to a new directory) counts as a change.

An edit that does not validate never takes effect: the last valid catalog keeps
serving, the problem is logged once, and :attr:`CatalogSource.error` holds it for the
spawn page to show to admins.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jhub_ext.core.catalog.load import CatalogError, load_catalog
from jhub_ext.core.catalog.model import Catalog

log = logging.getLogger("jhub_ext.core.catalog")

_Signature = tuple[int, int, int, int]


@dataclass(frozen=True)
class CatalogProblem:
    """Why the file on disk is not being served."""

    message: str
    since: float  # time.time() when it was first seen


def _signature(path: str) -> _Signature:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class CatalogSource:
    """The current catalog of one file, re-read when the file changes."""

    _shared: dict[str, CatalogSource] = {}
    _shared_lock = threading.Lock()

    def __init__(
        self,
        path: str | Path,
        loader: Callable[[str], Catalog] = load_catalog,
        logger: logging.Logger | None = None,
    ):
        """Load ``path`` now; a missing or invalid file raises :class:`CatalogError`."""
        self.path = str(path)
        self._loader = loader
        self.log = logger or log
        self._lock = threading.Lock()
        self.error: CatalogProblem | None = None
        signature = self._stat_or_raise()
        self._catalog = loader(self.path)
        self._signature: _Signature | None = signature
        self.loaded_at = time.time()

    @classmethod
    def shared(cls, path: str | Path) -> CatalogSource:
        """One source per file for the whole process, so every spawner sees the same catalog."""
        key = os.path.abspath(path)
        with cls._shared_lock:
            source = cls._shared.get(key)
            if source is None:
                source = cls._shared[key] = cls(path)
            return source

    def _stat_or_raise(self) -> _Signature:
        try:
            return _signature(self.path)
        except OSError:
            raise CatalogError(
                [f"{self.path}: file not found; create it, or point the hub at the catalog you meant"]
            ) from None

    def current(self) -> Catalog:
        """The catalog to use now: the file's, if it changed and is valid; else the last good one."""
        try:
            signature: _Signature | None = _signature(self.path)
        except OSError:
            signature = None
        if signature == self._signature:
            return self._catalog
        with self._lock:
            if signature != self._signature:
                self._reload(signature)
        return self._catalog

    def _reload(self, signature: _Signature | None) -> None:
        self._signature = signature
        try:
            catalog = self._loader(self.path)
        except CatalogError as e:
            self._keep_last_good(str(e))
            return
        self._catalog = catalog
        self.loaded_at = time.time()
        if self.error is not None:
            self.log.info("Profile catalog %s is valid again and now serves", self.path)
        else:
            self.log.info("Profile catalog %s reloaded", self.path)
        self.error = None

    def _keep_last_good(self, message: str) -> None:
        if self.error is None or self.error.message != message:
            self.log.error(
                "Profile catalog %s has errors; still serving the last valid version. %s",
                self.path,
                message,
            )
            self.error = CatalogProblem(message, time.time())
