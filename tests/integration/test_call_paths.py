"""#22's goal for how far a newcomer must read (see tests/callpaths.py for what a path is): a
submit reaches the cluster and the store through at most 15 of our functions in at most 7 files,
no file entered twice on the way to one effect, on the real control plane."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jhub_ext.service.app import JobsService
from jhub_ext.service.manager import JobManager

from ..callpaths import KUBERNETES, SQL, Step, check, record
from ..kube import Namespace

pytestmark = pytest.mark.integration
TOKEN = "call-paths-" + "x" * 16


async def test_a_submit_reaches_the_cluster_and_the_store_through_few_functions(
    kube_manager: JobManager, kube_namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/jobs/")
    service = JobsService(standalone_token=TOKEN, standalone_user="alice")
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(service.make_app(kube_manager))
    server.add_sockets(sockets)
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/services/jobs/api/jobs"

    async def submit(name: str) -> int:
        body = {"name": name, "kind": "batch", "command": ["python", "-c", "print(1)"]}
        headers = {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
        answer = await AsyncHTTPClient().fetch(
            url, method="POST", body=json.dumps(body), headers=headers, raise_error=False
        )
        return answer.code

    seen: list[tuple[str, list[Step]]] = []
    try:
        assert await submit("first") == 201  # connections, caches and the dry run's answer warm
        stop = record({"JobsHandler.post"}, lambda effect, path: seen.append((effect, path)))
        try:
            assert await submit("followed") == 201
        finally:
            stop()
    finally:
        server.stop()
    check(seen, functions=15, files=7, effects={KUBERNETES, SQL})
