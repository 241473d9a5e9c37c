"""The jobs service behind a real hub in local mode: lifecycle, logs, authorization, bad input, restarts."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from jhub_ext.service.handlers import openapi_document

from ..hubprocess import HubProcess, wait_for

pytestmark = pytest.mark.integration
PY = "python"


class Jobs:
    """A user's view of the jobs API, with a token from the hub."""

    def __init__(self, hub: HubProcess, token: str | None):
        self.base = f"{hub.url}/services/jobs/api"
        self.headers = {"Authorization": f"token {token}"} if token else {}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = requests.request(method, f"{self.base}{path}", headers=headers, timeout=60, **kwargs)
        check_against_openapi(method, path, response)
        return response

    def answers(self) -> bool:
        """Whether the service is up (while it restarts, the proxy answers 503: not an API answer)."""
        try:
            return requests.get(f"{self.base}/jobs", headers=self.headers, timeout=10).status_code == 200
        except requests.ConnectionError:
            return False

    def submit(self, **body: Any) -> requests.Response:
        return self.call("POST", "/jobs", json=body)

    def wait_status(self, name: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.call("GET", f"/jobs/{name}").json()
            return job if job["status"] in statuses else None

        return wait_for(reached, timeout, f"job {name} to become {statuses}")  # type: ignore[no-any-return]


def check_against_openapi(method: str, path: str, response: requests.Response) -> None:
    """Every JSON answer must match the response schema the OpenAPI document declares."""
    document = openapi_document()
    template = path.split("?")[0]
    for route in document["paths"]:
        if re.fullmatch(route.replace("{name}", "[^/]+"), template):
            operation = document["paths"][route][method.lower()]
            break
    else:
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")
    declared = operation["responses"].get(str(response.status_code))
    assert declared is not None, f"{method} {path} answered {response.status_code}, which is not documented"
    if "$ref" in declared:
        declared = document["components"]["responses"][declared["$ref"].rsplit("/", 1)[1]]
    content = declared.get("content")
    if not content:
        return
    media = response.headers["Content-Type"].split(";")[0]
    assert media in content, f"{method} {path} answered {media}"
    if media == "application/json":
        # the document's components ride along in the root, so "#/components/..." references resolve
        schema = {**content[media]["schema"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(response.json())


def token_for(hub: HubProcess, user: str) -> str:
    client = hub.client(user)
    client.login()
    return str(client.api("POST", f"/users/{user}/tokens", json={"note": "tests"}).json()["token"])


@pytest.fixture(scope="module")
def users(hub: HubProcess) -> dict[str, Jobs]:
    jobs = {name: Jobs(hub, token_for(hub, name)) for name in ("alice", "bob", "admin")}
    wait_for(jobs["alice"].answers, 30, "the jobs service")
    return jobs


def test_a_batch_job_exiting_3_fails_and_keeps_its_logs(users: dict[str, Jobs]) -> None:
    alice = users["alice"]
    code = "print('collecting'); raise SystemExit(3)"
    created = alice.submit(name="exit-three", kind="batch", command=[PY, "-c", code], retries=0)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending" and created.json()["user"] == "alice"
    # a job just submitted says it is starting, and when it will run
    assert (created.json()["reason"], created.json()["message"]) == (
        "starting",
        "starting: it runs in a moment",
    )
    job = alice.wait_status("exit-three", "failed")
    assert (job["exit_code"], job["reason"]) == (3, "exit-code")
    assert "detail" not in job  # the platform's own words are for admins

    def told() -> str | None:  # once its log is kept, its last lines say why
        message = alice.call("GET", "/jobs/exit-three").json()["message"]
        return message if "last printed" in message else None

    assert wait_for(told, 20, "the job's last lines") == (
        "exited with code 3 (1 attempt); it last printed: collecting"
    )
    logs = alice.call("GET", "/jobs/exit-three/logs")
    assert logs.headers["Content-Type"].startswith("text/plain") and "collecting" in logs.text
    # a browser must never sniff a log into a page, nor run anything in it
    assert logs.headers["X-Content-Type-Options"] == "nosniff"
    assert logs.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert created.headers["X-Content-Type-Options"] == "nosniff"


def test_a_scraper_with_its_code_snapshot_runs_until_stopped(users: dict[str, Jobs]) -> None:
    alice = users["alice"]
    files = {
        "scraper.py": "import time, helper\nhelper.say()\ntime.sleep(120)\n",
        "helper.py": "def say():\n    print('scraping', flush=True)\n",
    }
    assert (
        alice.submit(name="news", kind="scraper", command=[PY, "scraper.py"], files=files).status_code == 201
    )
    alice.wait_status("news", "running")
    wait_for(lambda: "scraping" in alice.call("GET", "/jobs/news/logs").text, 20, "the scraper's output")
    stopped = alice.call("POST", "/jobs/news/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert (stopped.json()["reason"], stopped.json()["message"]) == ("stopped-by-user", "stopped")
    restarted = alice.call("POST", "/jobs/news/restart")
    assert restarted.status_code == 200 and restarted.json()["restarts"] >= 1
    assert restarted.json()["reason"] != "stopped-by-user"  # the old reason went with the old run
    running = alice.wait_status("news", "running")
    assert running["reason"] is None
    assert alice.call("DELETE", "/jobs/news").status_code == 204
    assert alice.call("GET", "/jobs/news").status_code == 404


def test_follow_streams_until_the_job_ends(users: dict[str, Jobs]) -> None:
    alice = users["alice"]
    code = "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(0.4)\n"
    alice.submit(name="ticker", kind="batch", command=[PY, "-c", code])
    alice.wait_status("ticker", "running")
    started = time.monotonic()
    with requests.get(
        f"{alice.base}/jobs/ticker/logs?follow=1", headers=alice.headers, stream=True, timeout=60
    ) as r:
        chunks = [c.decode() for c in r.iter_content(chunk_size=None)]
    assert "tick 3" in "".join(chunks) and len(chunks) >= 2
    assert time.monotonic() - started > 0.5  # it waited for the job, it did not just read a file
    assert alice.call("GET", "/jobs/ticker").json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "status", "field", "words"),
    [
        ({"name": "Bad_Name", "kind": "batch", "command": ["x"]}, 400, "name", "is not a valid job name"),
        ({"name": "k", "kind": "nightly", "command": ["x"]}, 400, "kind", "kind must be one of"),
        ({"name": "k", "kind": "batch", "command": []}, 400, "command", "non-empty list"),
        (
            {"name": "k", "kind": "batch", "command": ["x"], "profile": "gpu-a100"},
            403,
            "profile",
            "no profile",
        ),
        (
            {"name": "k", "kind": "scheduled", "command": ["x"], "schedule": "every day"},
            400,
            "schedule",
            "is not a cron schedule",
        ),
        (  # Kubernetes' weekdays are 0-6; the same refusal in both modes
            {"name": "k", "kind": "scheduled", "command": ["x"], "schedule": "0 6 * * 7"},
            400,
            "schedule",
            "the day of week goes from 0 to 6",
        ),
        (
            {
                "name": "k",
                "kind": "scheduled",
                "command": ["x"],
                "schedule": "@daily",
                "timezone": "localtime",
            },
            400,
            "timezone",
            "is not a time zone",
        ),
        (
            {
                "name": "k",
                "kind": "scheduled",
                "command": ["x"],
                "schedule": "@daily",
                "timezone": "Moon/Base",
            },
            400,
            "timezone",
            "is not a time zone",
        ),
        (
            {"name": "k", "kind": "batch", "command": ["x"], "files": {"../x": "a"}},
            400,
            "files.../x",
            "relative",
        ),
        (
            {"name": "k", "kind": "batch", "command": ["x"], "files": {"/etc/x": "a"}},
            400,
            "files./etc/x",
            "relative",
        ),
        (
            {"name": "k", "kind": "batch", "command": ["x"], "files": {"a": "x" * 600_000}},
            400,
            "files",
            "snapshot",
        ),
        (
            {"name": "k", "kind": "batch", "command": ["x"], "env": {"JUPYTERHUB_API_TOKEN": "x"}},
            400,
            "env.JUPYTERHUB_API_TOKEN",
            "cannot be overridden",
        ),
        (
            {"name": "k", "kind": "batch", "command": ["x"], "env": {"2X": "x"}},
            400,
            "env",
            "not a valid variable name",
        ),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    users: dict[str, Jobs], body: dict[str, Any], status: int, field: str, words: str
) -> None:
    alice = users["alice"]
    before = alice.call("GET", "/jobs").json()["jobs"]
    response = alice.submit(**body)
    assert response.status_code == status
    assert response.json()["field"] == field and words in response.json()["error"]
    assert alice.call("GET", "/jobs").json()["jobs"] == before


def test_a_body_that_is_not_json_or_too_large_is_refused(users: dict[str, Jobs]) -> None:
    alice = users["alice"]
    response = alice.call("POST", "/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["field"] == "body"
    huge = alice.call("POST", "/jobs", data=b"x" * (1024 * 1024 + 1))
    assert huge.status_code == 413
    # a key given twice: which one was meant cannot be known, so neither is taken
    before = alice.call("GET", "/jobs").json()["jobs"]
    twice = b'{"name": "one", "kind": "batch", "command": ["true"], "name": "two"}'
    response = alice.call("POST", "/jobs", data=twice, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["field"] == "name"
    assert "given twice" in response.json()["error"]
    assert alice.call("GET", "/jobs").json()["jobs"] == before


def test_a_taken_name_is_refused(users: dict[str, Jobs]) -> None:
    bob = users["bob"]
    assert bob.submit(name="twice", kind="batch", command=[PY, "-c", "pass"]).status_code == 201
    again = bob.submit(name="twice", kind="batch", command=[PY, "-c", "pass"])
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert len([j for j in bob.call("GET", "/jobs").json()["jobs"] if j["name"] == "twice"]) == 1


def test_authorization_matrix(hub: HubProcess, users: dict[str, Jobs]) -> None:
    alice, bob, admin = users["alice"], users["bob"], users["admin"]
    assert alice.submit(name="private", kind="batch", command=[PY, "-c", "pass"]).status_code == 201
    nobody, forged = Jobs(hub, None), Jobs(hub, "not-a-real-token")
    routes = [
        ("GET", "/jobs/private"),
        ("GET", "/jobs/private/logs"),
        ("POST", "/jobs/private/stop"),
        ("POST", "/jobs/private/restart"),
    ]
    for method, path in routes:
        assert alice.call(method, path).status_code == 200, path  # the owner
        assert bob.call(method, path).status_code == 404, path  # bob has no job of that name
        assert bob.call(method, f"{path}?user=alice").status_code == 403, path  # and may not ask for alice's
        assert admin.call(method, f"{path}?user=alice").status_code == 200, path  # admins may
        assert nobody.call(method, path).status_code in (401, 403), path
        assert forged.call(method, path).status_code in (401, 403), path
    # a job an admin stops says so, to its owner too
    sleeper = [PY, "-c", "import time; time.sleep(120)"]
    assert alice.submit(name="held", kind="scraper", command=sleeper).status_code == 201
    by_admin = admin.call("POST", "/jobs/held/stop?user=alice").json()
    assert (by_admin["status"], by_admin["reason"]) == ("stopped", "stopped-by-admin")
    assert by_admin["message"] == "stopped by an admin (admin)" and "detail" in by_admin  # (none here)
    assert alice.call("GET", "/jobs/held").json()["reason"] == "stopped-by-admin"
    assert alice.call("DELETE", "/jobs/held").status_code == 204
    for path in ("/jobs", "/profiles", "/quota"):
        assert nobody.call("GET", path).status_code in (401, 403)
        assert forged.call("GET", path).status_code in (401, 403)
    assert bob.call("GET", "/jobs?user=*").status_code == 403
    everyone = admin.call("GET", "/jobs?user=*").json()["jobs"]
    assert {"alice", "bob"} <= {job["user"] for job in everyone}
    assert all(job["user"] == "bob" for job in bob.call("GET", "/jobs").json()["jobs"])
    assert bob.call("DELETE", "/jobs/private?user=alice").status_code == 403
    assert admin.call("DELETE", "/jobs/private?user=alice").status_code == 204


def test_profiles_and_quota_are_the_callers(users: dict[str, Jobs]) -> None:
    alice_profiles = [p["slug"] for p in users["alice"].call("GET", "/profiles").json()["profiles"]]
    bob_profiles = [p["slug"] for p in users["bob"].call("GET", "/profiles").json()["profiles"]]
    assert alice_profiles == ["small", "large-memory"] and bob_profiles == [
        "small",
        "large-memory",
        "gpu-a100",
    ]
    quota = users["bob"].call("GET", "/quota").json()["groups"]
    assert [q["group"] for q in quota] == ["gpu", "researchers"]
    assert next(q for q in quota if q["group"] == "gpu")["limits"]["gpus"] == 2


def test_a_running_servers_own_token_works(hub: HubProcess, users: dict[str, Jobs]) -> None:
    bob = hub.client("bob")
    bob.login()
    assert bob.submit_spawn_form({"profile": "small"}).status_code == 200
    try:
        bob.wait_ready()
        admin = hub.client("admin")
        admin.login()
        pid = admin.api("GET", "/users/bob").json()["servers"][""]["state"]["pid"]
        server_env = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item
        )
        from_notebook = Jobs(hub, server_env["JUPYTERHUB_API_TOKEN"])
        created = from_notebook.submit(name="from-notebook", kind="batch", command=[PY, "-c", "print(1)"])
        assert created.status_code == 201 and created.json()["user"] == "bob"
    finally:
        bob.stop_server()


def service_pid(hub: HubProcess) -> int:
    assert hub.process is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == hub.process.pid and b"jhub_ext.service.app" in cmdline:
            return int(entry.name)
    raise AssertionError("the jobs service is not running")


def test_kill_9_of_the_service_loses_and_duplicates_nothing(hub: HubProcess, users: dict[str, Jobs]) -> None:
    alice = users["alice"]
    code = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"
    alice.submit(name="survivor", kind="scraper", command=[PY, "-c", code])
    alice.submit(
        name="short",
        kind="batch",
        command=[PY, "-c", "import time; time.sleep(2); raise SystemExit(5)"],
        retries=0,
    )
    alice.wait_status("survivor", "running")
    before = {j["name"]: j for j in alice.call("GET", "/jobs").json()["jobs"]}

    old = service_pid(hub)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: service_pid_or_none(hub) not in (None, old), 30, "the hub to restart the service")
    wait_for(alice.answers, 30, "the service to answer again")

    after = {j["name"]: j for j in alice.call("GET", "/jobs").json()["jobs"]}
    assert after.keys() == before.keys()  # nothing lost, nothing duplicated
    assert (
        after["survivor"]["status"] == "running"
        and after["survivor"]["started"] == before["survivor"]["started"]
    )
    assert alice.wait_status("short", "failed")["exit_code"] == 5  # ended while the service was down
    assert alice.call("GET", "/jobs/survivor/logs").text.count("started") == 1  # not started twice
    alice.call("DELETE", "/jobs/survivor")


def service_pid_or_none(hub: HubProcess) -> int | None:
    try:
        return service_pid(hub)
    except AssertionError:
        return None


def test_servers_and_jobs_count_against_one_quota(hub: HubProcess, users: dict[str, Jobs]) -> None:
    shipped = hub.catalog.read_text()
    hub.catalog.write_text(shipped.replace("researchers: {cpu: 16,", "researchers: {cpu: 2,"))
    alice = users["alice"]
    sleeper = [PY, "-c", "import time; time.sleep(120)"]
    bob_web = hub.client("bob")
    bob_web.login()
    try:
        assert alice.submit(name="quota-a", kind="scraper", command=sleeper).status_code == 201  # 1 CPU
        assert bob_web.submit_spawn_form({"profile": "small"}).status_code == 200  # 1 CPU: 2 of 2
        bob_web.wait_ready()
        refused = alice.submit(name="quota-b", kind="scraper", command=sleeper, wait=False)
        assert refused.status_code == 403 and refused.json()["field"] == "profile"
        # the refusal names alice's own work that counts there (bob's server is not hers to stop)
        assert refused.json()["error"] == (
            "group 'researchers' may use 2 CPUs at once and uses 2; this needs 1 more. "
            "Yours that count there: job 'quota-a'. Stop one you no longer need, or choose a smaller profile."
        )
        alice_web = hub.client("alice")
        alice_web.login()
        page = alice_web.submit_spawn_form({"profile": "small"})  # the spawner counts the job too
        assert page.status_code == 403
        assert "may use 2 CPUs at once and uses 2; this needs 1 more" in page.text
        assert "Yours that count there: job &#39;quota-a&#39;." in page.text
        quota = next(q for q in alice.call("GET", "/quota").json()["groups"] if q["group"] == "researchers")
        assert quota["usage"]["cpu"] == 2 and quota["usage"]["jobs"] == 1 and quota["usage"]["servers"] == 1
    finally:
        hub.catalog.write_text(shipped)
        bob_web.stop_server()
        alice.call("DELETE", "/jobs/quota-a")


def test_a_full_quota_queues_jobs_that_start_by_themselves_in_order_once_even_across_a_restart(
    hub: HubProcess, users: dict[str, Jobs]
) -> None:
    shipped = hub.catalog.read_text()
    hub.catalog.write_text(shipped.replace("researchers: {cpu: 16,", "researchers: {cpu: 2,"))
    alice = users["alice"]
    sleeper = [PY, "-c", "import time; time.sleep(120)"]
    said = "import time; print('ran', flush=True); time.sleep(1)"
    queued = [f"next-{i}" for i in (1, 2, 3)]
    try:
        for name in ("hold-1", "hold-2"):  # 1 CPU each: 2 of 2
            assert alice.submit(name=name, kind="scraper", command=sleeper).status_code == 201
        answers = [alice.submit(name=n, kind="batch", command=[PY, "-c", said], retries=0) for n in queued]
        assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
        first = answers[0].json()
        assert [a.json()["queue_position"] for a in answers] == [1, 2, 3]
        assert (first["status"], first["reason"], first["queue"]) == ("pending", "queued", "researchers")
        assert first["message"] == (
            "1st in the queue of group 'researchers': group 'researchers' may use 2 CPUs at once and "
            "uses 2; this needs 1 more; it starts by itself as soon as there is room"
        )
        impatient = alice.submit(name="impatient", kind="batch", command=["true"], wait=False)
        assert impatient.status_code == 403 and impatient.json()["field"] == "wait"
        quota = next(q for q in alice.call("GET", "/quota").json()["groups"] if q["group"] == "researchers")
        assert (quota["usage"]["cpu"], quota["waiting"]["cpu"], quota["waiting"]["jobs"]) == (2, 3, 3)

        old = service_pid(hub)  # the queue is kept in the service's database
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: service_pid_or_none(hub) not in (None, old), 30, "the hub to restart the service")
        wait_for(alice.answers, 30, "the service to answer again")
        assert alice.call("GET", "/jobs/next-1").json()["queue_position"] == 1

        assert alice.call("DELETE", "/jobs/hold-1").status_code == 204  # room for one at a time
        ended = [alice.wait_status(name, "succeeded", timeout=60) for name in queued]
        for before, after in zip(ended, ended[1:], strict=False):  # in order, one after the other
            assert before["finished"] <= after["started"], (before, after)
        for name in queued:  # each started once
            assert alice.call("GET", f"/jobs/{name}/logs").text.count("ran") == 1
            assert alice.call("GET", f"/jobs/{name}").json()["restarts"] == 0
    finally:
        hub.catalog.write_text(shipped)
        for name in ("hold-1", "hold-2", *queued):
            alice.call("DELETE", f"/jobs/{name}")


def test_job_lists_come_in_pages(users: dict[str, Jobs]) -> None:
    alice = users["alice"]
    own = [f"page-{i}" for i in range(3)]  # at least three, whatever earlier tests left
    for name in own:
        assert alice.submit(name=name, kind="batch", command=[PY, "-c", "pass"]).status_code == 201
    try:
        everything = alice.call("GET", "/jobs").json()
        first = alice.call("GET", "/jobs?limit=2").json()
        assert first["total"] == everything["total"] >= 3 and len(first["jobs"]) == 2 and first["next"] == 2
        second = alice.call("GET", "/jobs?limit=2&offset=2").json()
        paged = [j["name"] for j in first["jobs"] + second["jobs"]]
        assert paged == [j["name"] for j in everything["jobs"][:4]]
        refused = alice.call("GET", "/jobs?limit=0")
        assert refused.status_code == 400 and refused.json()["field"] == "limit"
    finally:
        for name in own:
            alice.call("DELETE", f"/jobs/{name}")


def test_submissions_are_rate_limited_per_user(users: dict[str, Jobs]) -> None:
    bob, alice = users["bob"], users["alice"]
    answers = [bob.submit(name="Not Valid", kind="batch", command=["x"]).status_code for _ in range(31)]
    assert answers[-1] == 429 and set(answers[:-1]) <= {400, 429} and 429 in answers
    limited = bob.submit(name="Not Valid", kind="batch", command=["x"])
    assert limited.status_code == 429 and "too many submissions" in limited.json()["error"]
    assert (
        alice.submit(name="Not Valid", kind="batch", command=["x"]).status_code == 400
    )  # others are not limited
