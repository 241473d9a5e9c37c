"""#22's goal for how far a newcomer must read (see tests/callpaths.py for what a path is), on the
real control plane: a submit reaches the cluster and the store through at most 15 of our functions
in at most 7 files, a spawn through at most 12 in at most 5, no file entered twice on the way to
one effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jhub_ext.service.app import JobsService
from jhub_ext.service.manager import JobManager

from ..callpaths import KUBERNETES, SQL, Step, check, record
from ..hubprocess import HubProcess
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


#: hub configuration that records, from its start, the paths of every spawn (JupyterHub's
#: ``User.spawn``, and KubeSpawner's ``_start``, which runs in a task of its own) to a file
RECORDING = """
import json as _json, sys as _sys
_sys.path.insert(0, {root!r})
from tests.callpaths import record as _record
_paths = open({out!r}, "a")
def _found(effect, path):
    _paths.write(_json.dumps([effect, path]) + "\\n")
    _paths.flush()
_record({{"User.spawn", "KubeSpawner._start"}}, _found)
"""


def test_a_spawn_reaches_the_cluster_and_the_hubs_database_through_few_functions(
    kube_namespace: Namespace, tmp_path: Path
) -> None:
    out = tmp_path / "paths.jsonl"
    root = str(Path(__file__).resolve().parents[2])
    hub = HubProcess.kubernetes(
        tmp_path,
        kube_namespace,
        {"alice": ["researchers"]},
        extra_config=RECORDING.format(root=root, out=str(out)),
    )
    hub.start()
    try:
        alice = hub.client("alice")
        alice.login()
        for _ in range(2):  # the first spawn starts the hub's caches and connections; the second is followed
            out.write_text("")
            assert alice.api("POST", "/users/alice/server", json={"profile": "small"}).status_code in (
                201,
                202,
            )
            alice.wait_ready(timeout=180)
            seen = [
                (effect, [tuple(step) for step in path])
                for effect, path in map(json.loads, out.read_text().splitlines())
            ]
            alice.stop_server()
    finally:
        hub.stop()
    check(seen, functions=12, files=5, effects={KUBERNETES, SQL})
