"""Helpers for tests against the local control plane (see ``devcluster``).

One cluster serves the whole test session; each test module or test gets namespaces of its own,
prepared from ``hub_config/k8s/`` exactly as an admin would, with the hub's ServiceAccount
kubeconfig. Tests look at the cluster as an admin (``cluster.admin``) and read what the product
asked the API server from its audit log.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.cluster import LocalCluster
from devcluster.rest import KubeClient

_numbers = itertools.count(1)


@dataclass(frozen=True)
class Namespace:
    name: str
    kubeconfig: Path  # the hub's ServiceAccount, bound to the Roles in hub_config/k8s/
    cluster: LocalCluster

    @property
    def admin(self) -> KubeClient:
        return self.cluster.admin

    @property
    def hub_user(self) -> str:
        return f"system:serviceaccount:{self.name}:hub"

    def pods(self, labels: str = "") -> list[dict]:  # type: ignore[type-arg]
        return self.admin.list("Pod", self.name, labels=labels)

    def requests(self) -> list[dict]:  # type: ignore[type-arg]
        """What the hub's ServiceAccount asked the API server, from the audit log: one event per
        request, in the order they were made. A long-running request (a watch, a log read) is
        logged twice, when it starts and when it ends; it is counted once, when it starts."""
        log = self.cluster.control_plane.audit_log  # type: ignore[union-attr]
        events, seen = [], set()
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("user", {}).get("username") == self.hub_user and event["auditID"] not in seen:
                seen.add(event["auditID"])
                events.append(event)
        return events


@contextmanager
def namespace(cluster: LocalCluster, prefix: str = "t", wait: bool = False) -> Iterator[Namespace]:
    """A fresh namespace, deleted afterwards (with ``wait``: until its pods are gone)."""
    name = f"{prefix}-{next(_numbers)}"
    kubeconfig = cluster.prepare_namespace(name)
    try:
        yield Namespace(name, kubeconfig, cluster)
    finally:
        cluster.delete_namespace(name, wait=wait)


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 30) -> None:
    """Wait for ``predicate`` without blocking the event loop: the backend under test must run."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)
