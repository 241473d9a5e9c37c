"""Kueue for the tests of clusters that run it: a cluster of its own with Kueue's controller running.

Kueue's pod webhook sees every pod of its cluster, so these tests never share the session's cluster
(``tests/conftest.py``): :func:`cluster_with_kueue` starts another one, starts Kueue on it
(``devcluster.kueue``) and stops both afterwards. Where Kueue is not built (``make kueue``) the test
is skipped, saying so.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from devcluster.cluster import LocalCluster
from devcluster.kueue import Kueue, KueueUnavailable, kueue_dir, module_dir


@contextmanager
def cluster_with_kueue() -> Iterator[tuple[LocalCluster, Kueue]]:
    """A fresh local cluster with Kueue running on it (the test is skipped where Kueue is not built)."""
    try:
        binaries = kueue_dir()
        module_dir()
    except KueueUnavailable as e:
        pytest.skip(str(e))
    # not under pytest's 0700 temp root: pods run as their own user and must reach their directories
    directory = Path(tempfile.mkdtemp(prefix="jhub-ext-kueue-cluster-"))
    try:
        with (
            LocalCluster(directory, restart_backoff=(1.0, 10.0)) as cluster,
            Kueue(cluster, directory / "kueue", binaries) as kueue,
        ):
            yield cluster, kueue
    finally:
        shutil.rmtree(directory, ignore_errors=True)
