from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.kubernetes.backend import KubernetesJobBackend
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import JobStore

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import HubProcess
from ..kube import Namespace
from ..receivers import Posts, webhook_receiver


@pytest.fixture(scope="module")
def posts() -> Iterator[tuple[Posts, int]]:
    """A real webhook receiver (what it was sent, and its port), for a module's tests."""
    with webhook_receiver() as running:
        yield running


@pytest.fixture(autouse=True)
def _restore_catalog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests may edit the running hub's catalog; put the one it started with back afterwards."""
    yield
    if "hub" in request.fixturenames:
        hub: HubProcess = request.getfixturevalue("hub")
        if hub.catalog.read_text() != hub.initial_catalog:
            hub.catalog.write_text(hub.initial_catalog)


@pytest.fixture
async def kube_manager(
    kube_namespace: Namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[JobManager]:
    """The jobs service's manager in this process, over the Kubernetes backend in a fresh namespace,
    with its queue's passes running as in the service (a job waiting for room starts by itself)."""
    monkeypatch.setenv("KUBECONFIG", str(kube_namespace.kubeconfig))
    backend = KubernetesJobBackend(namespace=kube_namespace.name, watch_timeout_seconds=30)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    manager = JobManager(store, backend, CatalogSource(SHIPPED_CATALOG), None)
    await backend.start()
    passes = asyncio.create_task(manager.queue.keep_dispatching(1))
    yield manager
    passes.cancel()
    stopped, _ = await asyncio.wait({passes}, timeout=30)
    assert stopped, "the queue's passes did not stop when cancelled"
    await backend.shutdown()
    store.close()
