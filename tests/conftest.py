"""Shared fixtures: paths, free ports (``free_port``, re-exported), the cluster, and catalog text."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devcluster.controlplane import free_port as free_port  # re-exported for the tests

ROOT = Path(__file__).resolve().parent.parent
HUB_CONFIG = ROOT / "hub_config"
SHIPPED_CATALOG = HUB_CONFIG / "profiles.yaml"


@pytest.fixture
def shipped_catalog_text() -> str:
    return SHIPPED_CATALOG.read_text()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real hub (and proxy, and jobs service) for a test module, from hub_config/ in local mode."""
    from .hubprocess import HubProcess

    process = HubProcess(Path(tmp_path_factory.mktemp("hub"))).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """The real control plane (etcd, kube-apiserver, controller manager, scheduler) and node agents,
    started once for the session. Built from Go modules on first use (scripts/build-control-plane.sh)."""
    from devcluster.cluster import LocalCluster

    # not under pytest's 0700 temp root: pods run as their own user and must reach their directories
    directory = Path(tempfile.mkdtemp(prefix="jhub-ext-cluster-"))
    try:
        with LocalCluster(directory, restart_backoff=(1.0, 10.0)) as started:
            yield started
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def kube_namespace(cluster: Any) -> Iterator[Any]:
    """A fresh namespace set up from hub_config/k8s/, with the hub's kubeconfig for it."""
    from .kube import namespace

    with namespace(cluster) as created:
        yield created
