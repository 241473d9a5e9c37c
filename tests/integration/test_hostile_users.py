"""The jobs service against hostile and careless users, behind a real hub in local mode.

Every refusal is a 4xx naming the field and leaves the user's jobs as they were; nothing a
user sends makes the service answer 5xx; quotas hold when many starts race; rate limits answer
429 with Retry-After.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from jhub_ext.service.handlers import openapi_document

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import HubProcess, wait_for
from .test_jobs_service import Jobs, service_pid, token_for

pytestmark = pytest.mark.integration

USERS = {
    "mallory": ["researchers"],
    "fuzz": ["researchers"],
    "spammer": ["researchers"],
    "racer": ["racers"],
    "frugal": ["researchers", "frugal"],
    "carol": ["lab"],
    "dave": ["lab"],
    "erin": ["lab"],
}
#: quotas small enough to race for: 3 CPUs (the "small" profile's limit is 1 CPU)
QUOTAS = (
    "quotas:\n  researchers: {jobs: 50}\n  racers: {cpu: 3}\n  lab: {cpu: 3}\n  gpu: {gpus: 2}\n"
    "  frugal: {cpu: 2}\n"
)
SLEEPER = ["python", "-c", "import time; time.sleep(600)"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("hostile"))
    catalog = SHIPPED_CATALOG.read_text().split("\nquotas:")[0]
    catalog = catalog.replace("groups: [researchers, gpu]", "groups: [researchers, gpu, racers, lab, frugal]")
    config = (
        "c.JobsService.submits_per_minute = 40\n"
        "c.JobsService.actions_per_minute = 40\n"
        "c.JobsService.follows_per_user = 5\n"
    )
    with HubProcess(
        workdir,
        catalog_text=catalog + "\n" + QUOTAS,
        extra_env={"JHUB_EXT_DEMO_USERS": json.dumps(USERS)},
        jobs_config=config,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def users(hub: HubProcess) -> dict[str, Jobs]:
    jobs = {name: Jobs(hub, token_for(hub, name)) for name in USERS}
    wait_for(jobs["mallory"].answers, 30, "the jobs service")
    return jobs


def job_names(user: Jobs) -> list[str]:
    return [job["name"] for job in user.call("GET", "/jobs").json()["jobs"]]


BASE: dict[str, Any] = {"name": "evil", "kind": "batch", "command": ["true"]}
SCHEDULED: dict[str, Any] = {**BASE, "kind": "scheduled", "schedule": "@daily"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**BASE, "command": ["python", "-c", "print(1)\u0000"]}, "command"),
        ({**BASE, "command": ["python", "\ud800"]}, "command"),
        ({**BASE, "env": {"X": "a\u0000b"}}, "env.X"),
        ({**BASE, "env": {"X": "\udc80"}}, "env.X"),
        ({**BASE, "env": {"LD_AUDIT": "/tmp/x.so"}}, "env.LD_AUDIT"),
        ({**BASE, "env": {"PYTHONINSPECT": "1"}}, "env.PYTHONINSPECT"),
        ({**BASE, "env": {"path": "/tmp"}}, "env.path"),
        ({**BASE, "name": "evil\n"}, "name"),
        ({**BASE, "files": {"a": "x", "a/b": "y"}}, "files.a"),
        ({**SCHEDULED, "schedule": "0 0 31 2 *"}, "schedule"),
        ({**SCHEDULED, "schedule": "0 0 L * *"}, "schedule"),
        ({**SCHEDULED, "timezone": "America"}, "timezone"),
        ({**SCHEDULED, "timezone": "Europe/" + "x" * 5000}, "timezone"),
        ({**SCHEDULED, "timezone": "../../../../etc/passwd"}, "timezone"),
        ({**SCHEDULED, "concurrency_policy": "allow", "max_live_runs": 100}, "max_live_runs"),
        (b'{"name": "evil", "kind": "batch", "command": ["true"], "retries": 1' + b"0" * 5000 + b"}", "body"),
        (b'{"name": "evil", "kind": "batch", "command": ["true"], "retries": NaN}', "retries"),
        (b'{"name": "evil", "kind": "batch", "command": ["\xff"]}', "body"),  # not UTF-8
    ],
)
def test_what_would_wedge_a_job_is_refused_and_changes_nothing(
    users: dict[str, Jobs], body: dict[str, Any] | bytes, field: str
) -> None:
    mallory = users["mallory"]
    before = job_names(mallory)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = mallory.call("POST", "/jobs", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert job_names(mallory) == before


def test_deep_and_huge_bodies_are_4xx_not_500(users: dict[str, Jobs], hub: HubProcess) -> None:
    mallory = users["mallory"]
    deep = b"[" * 100_000 + b"]" * 100_000
    response = mallory.call("POST", "/jobs", data=deep, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 413) and response.json()["field"] in ("body", "files")
    huge = mallory.call("POST", "/jobs", data=b" " * (2 * 1024 * 1024))
    assert huge.status_code == 413 and huge.json()["field"] == "files"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        for _ in range(40):
            yield b" " * 65536

    chunked = mallory.call("POST", "/jobs", data=chunks())
    assert chunked.status_code == 413
    assert "Traceback" not in hub.log()


def test_the_service_never_buffers_a_body_it_refuses(users: dict[str, Jobs], hub: HubProcess) -> None:
    """A client that announces 1 GB gets its 413 at once, before sending anything (asked directly:
    the proxy in front sends nothing on before the body's first bytes)."""
    service = users["mallory"]
    with socket.create_connection(("127.0.0.1", int(hub.env["JHUB_EXT_JOBS_PORT"])), timeout=30) as sock:
        sock.sendall(
            b"POST /services/jobs/api/jobs HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {service.headers['Authorization']}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_every_mutating_endpoint_is_rate_limited_with_retry_after(users: dict[str, Jobs]) -> None:
    spammer = users["spammer"]
    answers = [spammer.call("POST", "/jobs", json={"name": 1}).status_code for _ in range(41)]
    assert answers[:40] == [400] * 40 and answers[40] == 429
    limited = spammer.call("POST", "/jobs", json=BASE)
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert job_names(spammer) == []
    stops = [spammer.call("POST", "/jobs/nothing/stop").status_code for _ in range(40)]
    assert set(stops) == {404}
    for method, path in (("POST", "/jobs/nothing/stop"), ("DELETE", "/jobs/nothing")):
        response = spammer.call(method, path)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    restart = spammer.call("POST", "/jobs/nothing/restart")  # restarts share the submissions' budget
    assert restart.status_code == 429


def test_concurrent_follow_streams_are_bounded(users: dict[str, Jobs]) -> None:
    mallory = users["mallory"]
    talk = ["python", "-c", "import time; print('up', flush=True); time.sleep(600)"]
    assert mallory.submit(name="talker", kind="scraper", command=talk).status_code == 201
    wait_for(lambda: "up" in mallory.call("GET", "/jobs/talker/logs").text, 30, "the job's first words")
    url = f"{mallory.base}/jobs/talker/logs?follow=1"
    opened = [requests.get(url, headers=mallory.headers, stream=True, timeout=60) for _ in range(5)]
    try:
        assert [r.status_code for r in opened] == [200] * 5
        sixth = mallory.call("GET", "/jobs/talker/logs?follow=1")
        assert sixth.status_code == 429 and sixth.json()["field"] == "follow"
        assert mallory.call("GET", "/jobs/talker/logs").status_code == 200  # reading is not following
    finally:
        for response in opened:
            response.close()
    # a closed stream frees its place (the service notices when it next writes or the job ends)
    assert mallory.call("POST", "/jobs/talker/stop").status_code == 200
    wait_for(
        lambda: mallory.call("GET", "/jobs/talker/logs?follow=1").status_code == 200, 30, "a free follow slot"
    )
    assert mallory.call("DELETE", "/jobs/talker").status_code == 204


def test_oversized_bodies_get_a_json_413_through_the_proxy_and_nobody_else_notices(
    users: dict[str, Jobs], hub: HubProcess
) -> None:
    """Past 1 MiB, on every endpoint, however large: a JSON 413 (not the proxy's 503, not a reset
    connection), and the requests of other users right after go through."""
    mallory, spammer = users["mallory"], users["fuzz"]
    with ThreadPoolExecutor(4) as pool:
        others = [pool.submit(spammer.call, "GET", "/jobs") for _ in range(3)]
        huge = mallory.call("POST", "/jobs", data=b" " * (20 * 1024 * 1024))
        assert huge.status_code == 413 and huge.json()["field"] == "files", huge.text[:300]
        assert [f.result().status_code for f in others] == [200] * 3
    for _ in range(5):
        assert spammer.call("GET", "/jobs").status_code == 200
    # past what the service reads to the end: answered, and the connection closed
    past = mallory.call("POST", "/jobs", data=b" " * (100 * 1024 * 1024))
    assert past.status_code == 413 and past.json()["field"] == "files"
    assert spammer.call("GET", "/jobs").status_code == 200
    two = b"x" * (2 * 1024 * 1024)
    for method, path in (("POST", "/jobs/x/stop"), ("POST", "/jobs/x/restart"), ("DELETE", "/jobs/x")):
        response = mallory.call(method, path, data=two)
        assert response.status_code == 413 and response.json()["field"] == "files", (method, path)
    assert mallory.call("GET", "/jobs").status_code == 200
    assert "Traceback" not in hub.log()


def test_a_refusal_of_a_request_with_a_body_reaches_the_client_through_the_proxy(
    users: dict[str, Jobs], hub: HubProcess
) -> None:
    """A request refused before its body is read (no token, a bad one) still gets its JSON answer
    through the proxy, not the proxy's 503 for a connection reset under it: the body is read and
    dropped first. Every endpoint, every size up to what the service drains."""
    base, anonymous = users["fuzz"].base, {"Authorization": "token not-a-token"}
    for size in (1, 64 * 1024, 512 * 1024, 3 * 1024 * 1024):
        endpoints = (("GET", "/quota"), ("POST", "/jobs"), ("GET", "/jobs"), ("POST", "/jobs/x/stop"))
        for method, path in endpoints:
            for headers in (anonymous, {}):
                answer = requests.request(
                    method, f"{base}{path}", headers=headers, data=b"x" * size, timeout=60
                )
                assert answer.status_code in (401, 403, 413), (method, path, size, answer.status_code)
                assert answer.headers["Content-Type"].startswith("application/json"), answer.text[:200]
    assert users["fuzz"].call("GET", "/jobs").status_code == 200


def test_the_service_closes_a_connection_only_after_an_answer_that_says_so(
    users: dict[str, Jobs], hub: HubProcess
) -> None:
    """The hub's proxy keeps its connections to the service open and sends the next request,
    anyone's, into one. Had the service closed a connection without saying so, that request would
    get the proxy's 503 whenever it lost the race with the close. So on a connection straight to
    the service, after each kind of answer (early refusals included, with and without a body),
    either the answer says ``Connection: close`` or the same connection answers the next request."""
    api, token = "/services/jobs/api", users["fuzz"].headers["Authorization"]
    cases: list[tuple[str, str, dict[str, str], bytes]] = [
        ("GET", f"{api}/jobs", {}, b""),
        ("GET", f"{api}/jobs", {"Authorization": "token not-a-token"}, b""),
        ("POST", f"{api}/jobs", {}, b"{}"),
        ("POST", f"{api}/jobs/x/stop", {"Authorization": "token not-a-token"}, b"x" * 70000),
        ("GET", f"{api}/jobs", {"Authorization": token}, b""),
        ("GET", f"{api}/jobs?limit=x", {"Authorization": token}, b""),
        ("PUT", f"{api}/jobs", {"Authorization": token}, b"{}"),
        ("PATCH", f"{api}/nowhere", {}, b""),
        ("GET", "/services/jobs/", {}, b""),  # the dashboard sends a visitor to log in
        ("POST", f"{api}/jobs", {"Authorization": token}, b" " * (2 * 1024 * 1024)),
    ]
    port = int(hub.env["JHUB_EXT_JOBS_PORT"])
    for method, path, headers, body in cases:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            answer.read()
            assert answer.status < 500, (method, path, answer.status)
            if answer.will_close:
                continue
            connection.request("GET", f"{api}/openapi.json")
            again = connection.getresponse()
            again.read()
            assert again.status == 200, (method, path, answer.status)
        except (ConnectionError, http.client.HTTPException) as e:
            raise AssertionError(f"{method} {path}: the service closed the connection unannounced") from e
        finally:
            connection.close()


def open_follow(hub: HubProcess, user: Jobs, name: str) -> tuple[socket.socket, bytes]:
    """A follow stream through the proxy, on a raw socket: the socket and the head of the answer."""
    sock = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    sock.sendall(
        f"GET /services/jobs/api/jobs/{name}/logs?follow=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {user.headers['Authorization']}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536) or b"\r\n\r\n"
    return sock, head


def test_a_quiet_follow_answers_at_once_and_abandoned_ones_free_their_slots(
    users: dict[str, Jobs], hub: HubProcess
) -> None:
    erin = users["erin"]
    assert erin.submit(name="quiet", kind="scraper", command=SLEEPER).status_code == 201
    erin.wait_status("quiet", "running")
    url = f"{erin.base}/jobs/quiet/logs?follow=1"

    def follow_status() -> int:  # the headers come at once, though the job says nothing
        with requests.get(url, headers=erin.headers, stream=True, timeout=5) as response:
            return response.status_code

    assert follow_status() == 200
    wait_for(lambda: follow_status() == 200, 10, "the first stream's slot")
    streams = [open_follow(hub, erin, "quiet") for _ in range(5)]
    assert all(head.startswith(b"HTTP/1.1 200") for _, head in streams), [h for _, h in streams]
    assert follow_status() == 429
    for sock, _ in streams:  # abandoned: closed without a word, while the job says nothing
        sock.close()
    wait_for(lambda: follow_status() == 200, 10, "the abandoned streams to free their slots", interval=0.5)
    assert erin.call("DELETE", "/jobs/quiet").status_code == 204


@pytest.mark.parametrize("wait", [False, True], ids=["refused", "queued"])
def test_twenty_concurrent_submits_never_exceed_the_quota(users: dict[str, Jobs], wait: bool) -> None:
    """Those that find no room are refused (``wait: false``) or queued, reserving nothing."""
    racer = users["racer"]
    with ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(
                lambda i: racer.submit(
                    name=f"race-{i}", kind="scraper", command=SLEEPER, profile="small", wait=wait
                ),
                range(20),
            )
        )
    codes = sorted(a.status_code for a in answers)
    others = 202 if wait else 403
    assert codes.count(201) == 3 and codes.count(others) == 17, codes
    other = next(a for a in answers if a.status_code == others).json()
    if wait:
        assert other["reason"] == "queued" and "may use 3 CPUs at once" in other["message"]
        places = sorted(a.json()["queue_position"] for a in answers if a.status_code == 202)
        assert places == list(range(1, 18))  # as they are now; each was its place when it came
    else:
        assert other["field"] == "profile" and "may use 3 CPUs at once" in other["error"]
    (group,) = racer.call("GET", "/quota").json()["groups"]
    assert group["group"] == "racers" and group["usage"]["cpu"] == 3
    assert group["waiting"]["cpu"] == (17 if wait else 0)
    queued_first = sorted(racer.call("GET", "/jobs").json()["jobs"], key=lambda j: j["reason"] != "queued")
    for job in queued_first:  # the queued ones first, so that none starts as the others go
        assert racer.call("DELETE", f"/jobs/{job['name']}").status_code == 204


def test_a_job_larger_than_its_groups_quota_allows_at_all_is_refused_at_once(users: dict[str, Jobs]) -> None:
    """'frugal' may use 2 CPUs at once; 'large-memory' has 4: no stop would ever make room."""
    frugal = users["frugal"]
    refused = frugal.submit(name="too-big", kind="batch", command=["true"], profile="large-memory")
    assert refused.status_code == 403 and refused.json()["field"] == "profile"
    assert refused.json()["error"] == (
        "group 'frugal' may use 2 CPUs at once; this needs 4, more than it may ever use. "
        "It can never start as it is: choose a smaller profile, such as 'small'."
    )
    assert job_names(frugal) == []


def test_spawns_and_submits_together_never_exceed_the_quota(hub: HubProcess, users: dict[str, Jobs]) -> None:
    """Three servers and three jobs of one CPU each, all at once, in a group that may use 3 CPUs."""
    people = ["carol", "dave", "erin"]
    clients = {name: hub.client(name) for name in people}
    for client in clients.values():
        client.login()
    barrier = threading.Barrier(6)

    def spawn(name: str) -> int:
        barrier.wait()
        return clients[name].api("POST", f"/users/{name}/server", json={"profile": "small"}).status_code

    def submit(name: str) -> int:
        barrier.wait()
        return users[name].submit(name="race", kind="scraper", command=SLEEPER, profile="small").status_code

    with ThreadPoolExecutor(6) as pool:
        spawns = [pool.submit(spawn, name) for name in people]
        submits = [pool.submit(submit, name) for name in people]
        started = sum(f.result() in (201, 202) for f in spawns) + sum(f.result() == 201 for f in submits)
    assert started <= 3, (started, [f.result() for f in spawns], [f.result() for f in submits])
    assert started >= 1  # refusing everything would also "hold" the quota
    for name in people:
        if clients[name].server() is not None:
            clients[name].wait_ready()
    (group,) = users["carol"].call("GET", "/quota").json()["groups"]
    assert group["usage"]["cpu"] <= 3
    for name in people:
        if clients[name].server() is not None:
            clients[name].stop_server()
        if "race" in job_names(users[name]):
            assert users[name].call("DELETE", "/jobs/race").status_code == 204


# --- generated input: schemathesis against the service's own OpenAPI document --------------------


OPERATIONS = [
    result.ok() for result in schemathesis.openapi.from_dict(openapi_document()).get_all_operations()
]
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_no_request_makes_the_service_fail(operation: Any, hub: HubProcess, users: dict[str, Jobs]) -> None:
    """Valid and invalid requests generated from the OpenAPI document: never a 5xx, always the
    documented statuses and shapes, and a refused submission stores nothing."""
    fuzz = users["fuzz"]
    submitting = operation.label == "POST /jobs"

    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )
    )
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        derandomize=True,  # the same few hundred requests on every run
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def request(case: Any) -> None:
        if isinstance(case.body, dict) and isinstance(case.body.get("command"), list):
            case.body["command"] = ["true"]  # whatever is accepted runs a harmless program
        before = job_names(fuzz) if submitting else None
        response = case.call(base_url=f"{hub.url}/services/jobs/api", headers=fuzz.headers, timeout=60)
        case.validate_response(response, checks=CHECKS)
        if submitting and response.status_code >= 400:
            assert job_names(fuzz) == before  # a refusal stores nothing

    request()


def test_generated_jobs_can_all_be_deleted(users: dict[str, Jobs]) -> None:
    fuzz = users["fuzz"]
    for name in job_names(fuzz):
        wait_for(lambda n=name: fuzz.call("DELETE", f"/jobs/{n}").status_code in (204, 404), 90, "delete")
    assert job_names(fuzz) == []


def test_while_the_service_is_down_api_clients_get_a_json_503_with_retry_after(
    users: dict[str, Jobs], hub: HubProcess
) -> None:
    """The proxy's own answer for a service that is not there: JSON for the API, the hub's page for
    browsers (the hub restarts the service at once, so the window is short: asked until it is seen)."""
    mallory = users["mallory"]
    os.kill(service_pid(hub), signal.SIGKILL)
    seen: list[requests.Response] = []

    def down() -> bool:
        try:
            response = requests.get(f"{mallory.base}/jobs", headers=mallory.headers, timeout=10)
        except requests.ConnectionError:
            return False
        if response.status_code == 503:
            seen.append(response)
            page = requests.get(f"{hub.url}/services/jobs/", headers={"Accept": "text/html"}, timeout=10)
            seen.append(page)
            return True
        assert response.status_code == 200, response.text[:300]
        return False

    wait_for(down, 20, "a 503 from the proxy", interval=0.01)
    answer, page = seen
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text[:300]
    assert answer.json()["field"] is None and "jobs service" in answer.json()["error"]
    assert int(answer.headers["Retry-After"]) >= 1
    if page.status_code == 503:  # still down: a browser gets the hub's error page
        assert page.headers["Content-Type"].startswith("text/html")
    # the keeper of the service's socket was killed: the hub starts it again when it next polls its
    # services (every 30 s, JupyterHub's Spawner.poll_interval, which it does not let us change)
    wait_for(mallory.answers, 90, "the hub to start the service again")
