"""Fixtures for tests against the Kubernetes API emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from . import KubeEmulator


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[KubeEmulator]:
    with KubeEmulator() as api:
        api.add_namespace("jhub", {"pod-security.kubernetes.io/enforce": "restricted"})
        api.write_kubeconfig(tmp_path / "kubeconfig", namespace="jhub")
        yield api


@pytest.fixture
async def kube(emulator: KubeEmulator, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    """The real kubernetes_asyncio client, configured from the emulator's kubeconfig."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(tmp_path / "kubeconfig"), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield api_client
