"""The Kubernetes jobs backend against the real control plane: workloads, status from watches, logs, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jhub_ext.core.catalog import load_catalog, parse_catalog
from jhub_ext.core.jobs.backend import JobRejected, Placement
from jhub_ext.core.jobs.model import JobStatus, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.names import object_name
from jhub_ext.kubernetes.backend import KubernetesJobBackend
from jhub_ext.kubernetes.workloads import build_manifests

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import wait_for
from ..kube import Namespace, eventually
from ..observations import Recorder

pytestmark = pytest.mark.integration
SMALL = load_catalog(SHIPPED_CATALOG).profile("small")
ALICE = Placement(
    user="alice", groups=frozenset({"researchers"}), profile=SMALL, image="example.org/python:3"
)


@pytest.fixture
def ns(kube_namespace: Namespace, monkeypatch: pytest.MonkeyPatch) -> Namespace:
    monkeypatch.setenv("KUBECONFIG", str(kube_namespace.kubeconfig))
    return kube_namespace


@pytest.fixture
async def backend(ns: Namespace) -> AsyncIterator[KubernetesJobBackend]:
    b = KubernetesJobBackend(namespace=ns.name, watch_timeout_seconds=30)
    b.on_change = Recorder()
    await b.start()
    yield b
    await b.shutdown()


def spec(name: str, kind: str, code: str, **extra: Any) -> Any:
    return parse_submission({"name": name, "kind": kind, "command": ["python", "-c", code], **extra})


async def test_a_batch_job_exiting_3_fails_after_its_retries_with_its_logs(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    await backend.submit(
        spec("exit-three", "batch", "print('working'); raise SystemExit(3)", retries=1), ALICE
    )
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    final = await seen.until(lambda o: o.status.finished)
    assert (final.status, final.exit_code, final.reason) == (JobStatus.FAILED, 3, Reason.EXIT_CODE)
    assert final.message == "exited with code 3 (2 attempts)"  # as local mode says it
    job = ns.admin.get("Job", object_name("alice", "exit-three"), ns.name)
    assert job is not None and job["spec"]["backoffLimit"] == 1 and job["status"]["failed"] == 2
    logs = "".join([chunk async for chunk in backend.logs("alice", "exit-three")])
    assert "working" in logs


async def test_a_scraper_runs_as_a_deployment_until_stopped(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    code = "import time\nprint('scraping', flush=True)\ntime.sleep(120)\n"
    job = spec("news", "scraper", code)
    await backend.submit(job, ALICE)
    await backend.submit(job, ALICE)  # idempotent: the same objects, nothing twice
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    name = object_name("alice", "news")
    assert len(ns.admin.list("Deployment", ns.name)) == 1
    pods = ns.pods(f"jhub-ext.io/job={name}")
    assert len(pods) == 1 and pods[0]["metadata"]["labels"]["jhub-ext.io/kind"] == "scraper"
    await backend.stop("alice", "news")
    assert backend.observed("alice", "news").status is JobStatus.STOPPED
    # foreground deletion: the Deployment goes once its pods have gone
    wait_for(
        lambda: ns.admin.find("Deployment", name, ns.name) is None and not ns.pods(f"jhub-ext.io/job={name}"),
        30,
        "the scraper's objects to go",
    )
    assert ns.admin.find("ConfigMap", name, ns.name) is None


async def test_a_restarted_service_finds_its_jobs_in_the_cluster(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    await backend.submit(spec("keeper", "scraper", "import time\ntime.sleep(120)\n"), ALICE)
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    second = KubernetesJobBackend(namespace=ns.name, watch_timeout_seconds=30)
    await second.start()
    try:
        observed = second.observed("alice", "keeper")
        assert observed is not None and observed.status is JobStatus.RUNNING
        assert len(ns.admin.list("Deployment", ns.name)) == 1  # nothing created again
    finally:
        await second.shutdown()


async def test_the_role_grants_exactly_what_the_jobs_backend_uses(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """hub_config/k8s/rbac.yaml's Role, compared with the requests the backend really makes."""
    import yaml

    from ..conftest import HUB_CONFIG

    seen: Recorder = backend.on_change  # type: ignore[assignment]

    async def submit(job: Any) -> None:  # as the service does: check, then create
        await backend.validate(job, ALICE)
        await backend.submit(job, ALICE)

    await submit(spec("once", "batch", "print('done')"))
    await seen.until(lambda o: o.status is JobStatus.SUCCEEDED)
    assert "done" in "".join([chunk async for chunk in backend.logs("alice", "once")])
    await submit(spec("nightly", "scheduled", "print(1)", schedule="@daily"))
    await submit(spec("scrape", "scraper", "import time; time.sleep(60)"))
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    # code left behind by a submit that never made its workload (the service died in between): the
    # backend reads it (get), finds it is this job's, replaces it and runs the job
    again = spec("again", "batch", "print('again')")
    ns.admin.create(build_manifests(again, ALICE, backend.site)[0])
    await submit(again)
    for _ in range(300):
        if (observed := backend.observed("alice", "again")) is not None and observed.status.finished:
            break
        await asyncio.sleep(0.1)
    assert observed is not None and observed.status is JobStatus.SUCCEEDED
    assert set(await backend.inventory()) >= {("alice", n) for n in ("once", "nightly", "again")}  # list
    for name in ("once", "nightly", "scrape", "again"):
        await backend.stop("alice", name)
        await backend.delete("alice", name)

    def resource(ref: dict[str, str]) -> str:  # "pods/log" for a subresource
        return f"{ref['resource']}/{ref['subresource']}" if ref.get("subresource") else ref["resource"]

    used = {
        (e["verb"], resource(e["objectRef"]))
        for e in ns.requests()
        if e.get("objectRef", {}).get("namespace") == ns.name
    }
    documents = list(yaml.safe_load_all((HUB_CONFIG / "k8s" / "rbac.yaml").read_text()))
    role = next(d for d in documents if d["kind"] == "Role")
    granted = {
        (verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]
    }
    # Kueue's Workloads are looked for (a list, answered 404 here) and watched only on clusters that
    # run Kueue (test_kueue.py shows that use)
    assert ("list", "workloads") in used
    granted -= {("watch", "workloads")}
    assert used == granted, f"used but not granted: {used - granted}; granted but unused: {granted - used}"


@pytest.mark.parametrize(("kind", "workloads"), [("batch", "jobs"), ("scraper", "deployments")])
async def test_stop_and_delete_touch_only_the_objects_of_the_jobs_kind(
    backend: KubernetesJobBackend, ns: Namespace, kind: str, workloads: str
) -> None:
    """One workload and its code, each deleted by uid: never a DELETE for kinds the job does not have."""
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await backend.submit(spec("only", kind, "import time\nprint('up', flush=True)\ntime.sleep(120)\n"), ALICE)
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    before = len(ns.requests())
    await backend.stop("alice", "only")
    await backend.delete("alice", "only")
    deletes = [e for e in ns.requests()[before:] if e["verb"] == "delete"]
    assert sorted(e["objectRef"]["resource"] for e in deletes) == sorted([workloads, "configmaps"])
    assert all(e["responseStatus"]["code"] == 200 for e in deletes)


async def test_a_scheduled_job_runs_when_the_cronjob_fires(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """The real CronJob controller, on the real clock: an every-minute schedule fires within a minute."""
    await backend.submit(
        spec("minutely", "scheduled", "print('tick')", schedule="* * * * *", timezone="Europe/Berlin"), ALICE
    )
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    cronjob = ns.admin.get("CronJob", object_name("alice", "minutely"), ns.name)
    assert cronjob["spec"]["timeZone"] == "Europe/Berlin"
    done = await seen.until(lambda o: o.exit_code == 0, timeout=150)
    assert done.status in (JobStatus.PENDING, JobStatus.RUNNING)  # waiting for its next run
    assert len(ns.admin.list("Job", ns.name)) >= 1
    assert "tick" in "".join([chunk async for chunk in backend.logs("alice", "minutely")])
    await backend.delete("alice", "minutely")
    ns.admin.wait_for("Namespace", ns.name, None, lambda _: not ns.admin.list("Job", ns.name))


async def collect(stream: AsyncIterator[str], timeout: float = 60) -> str:
    async def read() -> str:
        return "".join([chunk async for chunk in stream])

    return await asyncio.wait_for(read(), timeout)


async def test_a_finished_batch_job_runs_again_when_submitted_again(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """A restart of a finished job: the old run's objects make way, and a new run happens."""
    job = spec("twice", "batch", "print('run')")
    await backend.submit(job, ALICE)
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.SUCCEEDED)
    name = object_name("alice", "twice")
    first = ns.admin.get("Job", name, ns.name)["metadata"]["uid"]
    seen.seen.clear()
    await backend.submit(job, ALICE)
    await seen.until(lambda o: o.status is JobStatus.SUCCEEDED)
    second = ns.admin.get("Job", name, ns.name)
    assert second["metadata"]["uid"] != first and second["status"]["succeeded"] == 1
    code = ns.admin.get("ConfigMap", name, ns.name)  # the new code, recorded by uid on the new run
    assert second["metadata"]["annotations"]["jhub-ext.io/code-uid"] == code["metadata"]["uid"]
    assert len(ns.pods(f"jhub-ext.io/job={name}")) == 1  # the first run's pod went with its Job
    assert "run" in await collect(backend.logs("alice", "twice"))


async def test_following_logs_right_after_a_submit_waits_for_every_attempt(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """The API server answers 400 while a container is created; follow waits, then streams each retry."""
    code = "import time\nfor i in range(2):\n    print('line', i, flush=True)\n    time.sleep(0.3)\nexit(1)"
    await backend.submit(spec("chatty", "batch", code, retries=1), ALICE)
    text = await collect(backend.logs("alice", "chatty", follow=True))
    assert text.splitlines() == ["line 0", "line 1"] * 2


async def test_the_code_snapshot_runs_from_its_directory_and_outputs_persist(
    ns: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ConfigMap snapshot + init container + workingDir, and the output claim's per-user subPath."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "outputs", "namespace": ns.name},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    ns.admin.create(claim)
    backend = KubernetesJobBackend(namespace=ns.name, output_claim="outputs")
    backend.on_change = seen = Recorder()
    await backend.start()
    try:
        files = {
            "main.py": "import os\nfrom lib.util import ANSWER\n"
            "open(os.path.join(os.environ['JHUB_EXT_OUTPUT_DIR'], 'answer.txt'), 'w').write(str(ANSWER))\n"
            "print('answer', ANSWER, os.getuid())\n",
            "lib/util.py": "ANSWER = 42\n",
        }
        job = parse_submission(
            {"name": "snap", "kind": "batch", "command": ["python", "main.py"], "files": files}
        )
        await backend.submit(job, ALICE)
        final = await seen.until(lambda o: o.status.finished, timeout=60)
        logs = await collect(backend.logs("alice", "snap"))
        assert final.status is JobStatus.SUCCEEDED, logs
        assert "answer 42" in logs
        pvc = ns.admin.get("PersistentVolumeClaim", "outputs", ns.name)
        volume = ns.admin.get("PersistentVolume", pvc["spec"]["volumeName"])
        written = Path(volume["spec"]["hostPath"]["path"]).glob("*/answer.txt")
        assert [p.read_text() for p in written] == ["42"]
    finally:
        await backend.shutdown()


async def test_a_batch_job_past_its_deadline_fails_and_says_so(backend: KubernetesJobBackend) -> None:
    await backend.submit(spec("slow", "batch", "import time; time.sleep(120)", deadline_seconds=3), ALICE)
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    final = await seen.until(lambda o: o.status.finished, timeout=60)
    assert final.status is JobStatus.FAILED and "deadline of 3 s" in (final.message or "")
    assert final.reason is Reason.DEADLINE_EXCEEDED


async def test_a_job_over_its_memory_limit_is_oom_killed_and_says_so(backend: KubernetesJobBackend) -> None:
    tiny = parse_catalog(
        SHIPPED_CATALOG.read_text().replace(
            "memory: {guarantee: 1Gi, limit: 4Gi}", "memory: {guarantee: 64Mi, limit: 128Mi}"
        )
    ).profile("small")
    hungry = "import time\nblob = b'x' * (400 * 2**20)\ntime.sleep(30)\n"
    await backend.submit(spec("hungry", "batch", hungry, retries=0), Placement(user="alice", profile=tiny))
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    final = await seen.until(lambda o: o.status.finished, timeout=60)
    assert (final.status, final.exit_code, final.reason) == (JobStatus.FAILED, 137, Reason.OUT_OF_MEMORY)
    assert "ran out of memory" in (final.message or "") and "OOMKilled" not in (final.message or "")


async def test_a_job_the_cluster_would_refuse_is_refused_before_anything_exists(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """A profile over the namespace's LimitRange (16 CPUs a container): the pods would never be
    created. The dry run says so at submit time, and nothing is left behind."""
    greedy = parse_catalog(
        SHIPPED_CATALOG.read_text().replace(
            "cpu: {guarantee: 500m, limit: 1}", "cpu: {guarantee: 1, limit: 64}"
        )
    ).profile("small")
    job = spec("greedy", "batch", "print(1)")
    with pytest.raises(JobRejected) as refused:
        await backend.validate(job, Placement(user="alice", profile=greedy))
    assert "maximum cpu usage per Container is 16" in refused.value.message
    assert ns.admin.list("ConfigMap", ns.name, labels="jhub-ext.io/job") == []
    assert ns.admin.list("Job", ns.name) == []


async def test_concurrent_submits_all_land_despite_the_namespace_quota(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """The namespace's ResourceQuota is one object every create updates: concurrent creates meet 409
    Conflict (not AlreadyExists), which is retried, never taken for "it exists"."""
    jobs = [spec(f"many-{i}", "batch", "pass") for i in range(20)]
    await asyncio.gather(*(backend.submit(job, ALICE) for job in jobs))
    assert len(ns.admin.list("Job", ns.name)) == 20
    assert (
        len(
            [
                c
                for c in ns.admin.list("ConfigMap", ns.name)
                if c["metadata"]["name"].startswith("alice-many-")
            ]
        )
        == 20
    )


STRANGER = {"jhub-ext.io/user": "mallory", "jhub-ext.io/name": "x"}
NEVER = "0 0 1 1 *"  # a schedule that does not fire while a test runs


def stranger(ns: Namespace, kind: str, name: str, annotations: Any = None, labelled: bool = False) -> Any:
    """An object of someone else's under ``name``, created by the admin: labelled like a job's (so
    the backend's caches see it) or not, annotated for another owner or not at all."""
    meta: dict[str, Any] = {"name": name, "namespace": ns.name}
    if annotations is not None:
        meta["annotations"] = annotations
    if labelled:
        meta["labels"] = {"jhub-ext.io/job": name}
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x/y:1"}]}}
    bodies: dict[str, Any] = {
        "ConfigMap": {"apiVersion": "v1", "data": {"mine": "mallory's"}},
        "Job": {"apiVersion": "batch/v1", "spec": {"suspend": True, "template": template}},
        "CronJob": {
            "apiVersion": "batch/v1",
            "spec": {"schedule": NEVER, "suspend": True, "jobTemplate": {"spec": {"template": template}}},
        },
    }
    return ns.admin.create({"kind": kind, "metadata": meta, **bodies[kind]})


def untouched(ns: Namespace, obj: Any) -> bool:
    now = ns.admin.find(obj["kind"], obj["metadata"]["name"], ns.name)
    return (
        now is not None
        and now["metadata"]["uid"] == obj["metadata"]["uid"]
        and "deletionTimestamp" not in now["metadata"]
        and now["metadata"].get("annotations") == obj["metadata"].get("annotations")
        and now.get("data") == obj.get("data")
    )


async def test_a_name_held_by_someone_elses_object_is_refused_and_the_object_left_alone(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """Names are only where to look; annotations say whose an object is. A stranger's ConfigMap
    (no annotations), labelled Job (another owner's annotations; the caches see it) or unlabelled
    CronJob (the caches do not) under a job's object name: submit refuses the job (field "name"),
    and neither it nor stop and delete touch the object. (Validate asks only about the pod: the
    workload's create answers for its name.)"""
    squatters = {
        "squat-code": stranger(ns, "ConfigMap", object_name("alice", "squat-code")),
        "squat-job": stranger(ns, "Job", object_name("alice", "squat-job"), STRANGER, labelled=True),
        "squat-cron": stranger(ns, "CronJob", object_name("alice", "squat-cron"), {}),
    }
    jobs = {
        "squat-code": spec("squat-code", "batch", "print(1)"),
        "squat-job": spec("squat-job", "batch", "print(1)"),
        "squat-cron": spec("squat-cron", "scheduled", "print(1)", schedule=NEVER),
    }
    for name, job in jobs.items():
        with pytest.raises(JobRejected) as refused:
            await backend.submit(job, ALICE)
        assert refused.value.field == "name" and object_name("alice", name) in refused.value.message
        assert backend.observed("alice", name) is None
        await backend.stop("alice", name)
        await backend.delete("alice", name)
    for name, obj in squatters.items():
        assert untouched(ns, obj), name
    # nothing of alice's left behind: the code created before the CronJob's refusal went again
    assert ns.admin.list("ConfigMap", ns.name, labels="jhub-ext.io/job") == []
    assert [j["metadata"]["name"] for j in ns.admin.list("Job", ns.name)] == [
        object_name("alice", "squat-job")
    ]
    deleted = [
        (e["objectRef"]["resource"], e["objectRef"]["name"]) for e in ns.requests() if e["verb"] == "delete"
    ]
    assert deleted == [("configmaps", object_name("alice", "squat-cron"))]  # its own code, nothing else


async def test_a_jobs_name_taken_over_after_it_ran_is_refused_and_left_alone(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """The job ran and was stopped; then a stranger's CronJob took its object name (labelled, so the
    backend's caches hold it). A restart (stop, submit) is refused, and stop and delete of the job,
    which the backend knows as a CronJob, leave the stranger's alone. A workload deleted by someone
    else takes its code with it (the code is the job's by the uid the workload records)."""
    await backend.submit(spec("taken", "scheduled", "print(1)", schedule=NEVER), ALICE)
    name = object_name("alice", "taken")
    cronjob = ns.admin.get("CronJob", name, ns.name)
    code = ns.admin.get("ConfigMap", name, ns.name)
    assert cronjob["metadata"]["annotations"]["jhub-ext.io/code-uid"] == code["metadata"]["uid"]
    ns.admin.delete("CronJob", name, ns.name)  # an admin's clean-up: the code follows
    await eventually(lambda: ns.admin.find("ConfigMap", name, ns.name) is None, "the code to go")
    squatter = stranger(ns, "CronJob", name, STRANGER, labelled=True)
    await eventually(lambda: f"{ns.name}/{name}" in backend.caches["cronjobs"].objects, "the cache")
    await backend.stop("alice", "taken")
    with pytest.raises(JobRejected) as refused:
        await backend.submit(spec("taken", "scheduled", "print(1)", schedule=NEVER), ALICE)
    assert refused.value.field == "name"
    await backend.stop("alice", "taken")
    await backend.delete("alice", "taken")
    assert untouched(ns, squatter)
    assert ns.admin.find("ConfigMap", name, ns.name) is None


async def test_a_scheduled_jobs_live_runs_beyond_its_bound_are_deleted_newest_first(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """With concurrency_policy allow, a CronJob starts a run on every tick however many are alive:
    the backend deletes the newest beyond max_live_runs. Forbid (and replace) need no help."""
    runs: dict[str, list[str]] = {}
    for job in ("held", "free"):
        policy = "allow" if job == "free" else "forbid"
        await backend.submit(
            spec(job, "scheduled", "print(1)", schedule=NEVER, concurrency_policy=policy), ALICE
        )
        name = object_name("alice", job)
        cronjob = ns.admin.get("CronJob", name, ns.name)
        assert cronjob["metadata"]["annotations"]["jhub-ext.io/max-live-runs"] == "1"
        template = cronjob["spec"]["jobTemplate"]
        runs[job] = [f"{name}-2900000{i}" for i in range(3)]
        for run in runs[job]:  # as the CronJob controller creates runs; suspended: no pods needed
            owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": name, "controller": True}
            meta = {**template["metadata"], "name": run, "namespace": ns.name}
            meta["ownerReferences"] = [{**owner, "uid": cronjob["metadata"]["uid"]}]
            body = {"spec": {**template["spec"], "suspend": True}, "metadata": meta}
            ns.admin.create({"apiVersion": "batch/v1", "kind": "Job", **body})

    def live(job: str) -> list[str]:
        return sorted(
            j["metadata"]["name"]
            for j in ns.admin.list("Job", ns.name)
            if j["metadata"]["name"] in runs[job] and not j["metadata"].get("deletionTimestamp")
        )

    await eventually(lambda: live("free") == runs["free"][:1], "the newest runs to go")
    assert live("held") == runs["held"]  # (its events came first: nothing was done about them)


async def test_a_submit_asks_one_dry_run_and_a_burst_of_alike_submits_asks_it_once(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """A submit asks the API server three things: a dry run of the pod its workload will create,
    then the creates of its code and workload. Jobs that differ only in their names share the dry
    run's answer for a while; another shape of pod (another profile) is asked about again."""

    def asked(before: int) -> list[str]:
        return [
            f"{e['verb']} {e['objectRef']['resource']}"
            + (" (dry run)" if "dryRun=All" in e["requestURI"] else "")
            for e in ns.requests()[before:]
            if e["verb"] not in ("watch", "list")
        ]

    before = len(ns.requests())
    for name in ("alike-1", "alike-2"):
        job = spec(name, "batch", "print(1)")
        await backend.validate(job, ALICE)
        await backend.submit(job, ALICE)
    assert asked(before) == [
        "create pods (dry run)",
        "create configmaps",
        "create jobs",
        "create configmaps",  # alike-2: the pod's answer stands
        "create jobs",
    ]
    before = len(ns.requests())
    other = dataclasses.replace(ALICE, profile=load_catalog(SHIPPED_CATALOG).profile("large-memory"))
    await backend.validate(spec("other-shape", "batch", "print(1)"), other)
    assert asked(before) == ["create pods (dry run)"]


async def test_a_submit_builds_its_manifests_once_for_its_check_and_its_create(
    backend: KubernetesJobBackend, ns: Namespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service checks a job (a dry run) and then creates it, with the same spec and placement:
    its objects are built for the check and created as built."""
    import jhub_ext.kubernetes.backend as kube_backend

    built: list[str] = []

    def counted(job: Any, placement: Placement, site: Any) -> list[dict[str, Any]]:
        built.append(job.name)
        return build_manifests(job, placement, site)

    monkeypatch.setattr(kube_backend, "build_manifests", counted)
    once = spec("built-once", "batch", "print('done')")
    await backend.validate(once, ALICE)
    await backend.submit(once, ALICE)
    assert built == ["built-once"]
    job = ns.admin.get("Job", object_name("alice", "built-once"), ns.name)
    assert job is not None and job["metadata"]["annotations"]["jhub-ext.io/name"] == "built-once"
    other = spec("built-once", "batch", "print('changed')")  # another spec: built anew
    await backend.validate(other, ALICE)
    await backend.validate(spec("built-twice", "batch", "print(2)"), ALICE)
    await backend.submit(spec("built-twice", "batch", "print(2)"), ALICE)  # not the checked object
    assert built == ["built-once", "built-once", "built-twice", "built-twice"]


async def test_a_gpu_job_with_every_gpu_taken_waits_for_capacity_in_plain_words(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """The GPU machine has 4 GPUs: a fifth one-GPU job waits, saying so without a Kubernetes word,
    and the scheduler's own words go to admins; it starts once a GPU frees."""
    gpu = load_catalog(SHIPPED_CATALOG).profile("gpu-a100")
    bob = Placement(
        user="bob", groups=frozenset({"researchers", "gpu"}), profile=gpu, image="example.org/python:3"
    )
    names = [f"gpu-{i}" for i in range(5)]
    try:
        for name in names:
            await backend.submit(spec(name, "scraper", "import time; time.sleep(600)"), bob)

        def held() -> Any:
            found = [backend.observed("bob", name) for name in names]
            return next((o for o in found if o and o.reason is Reason.WAITING_FOR_CAPACITY), None)

        def running() -> list[str]:
            return [n for n in names if (o := backend.observed("bob", n)) and o.status is JobStatus.RUNNING]

        await eventually(
            lambda: held() and len(running()) == 4, "four GPU jobs to run, the fifth to wait", 90
        )
        waiting = held()
        assert waiting.status is JobStatus.PENDING
        assert waiting.message.startswith("waiting for room in the cluster: no machine has enough free GPUs")
        for word in ("node", "Insufficient", "taint", "FailedScheduling", "Unschedulable", "nvidia.com"):
            assert word not in waiting.message
        assert "nvidia.com/gpu" in (waiting.detail or "")  # the scheduler's words, for admins
        await backend.delete("bob", running()[0])  # a GPU frees: the waiting one starts by itself
        await eventually(lambda: held() is None and len(running()) == 4, "the waiting GPU job to start", 90)
    finally:
        for name in names:
            await backend.delete("bob", name)


async def test_a_job_says_its_image_is_being_downloaded_then_runs(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """An image new to its machine takes 8 seconds to pull (``registry.test/slow``, the node agent's
    stand-in for a registry): the job says so meanwhile, the kubelet's words only for admins, then
    runs."""
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    image = f"registry.test/slow/python:{uuid.uuid4().hex[:12]}"  # new to every machine, every run
    slow = dataclasses.replace(ALICE, image=image)
    await backend.submit(spec("fresh", "batch", "print('pulled and ran')"), slow)
    pulling = await seen.until(lambda o: o.reason is Reason.PULLING_IMAGE)
    assert pulling.status is JobStatus.PENDING
    assert pulling.message == (
        "downloading its software image onto a machine (the first start of an image there takes a while);"
        " it starts by itself once the download ends"
    )
    assert pulling.detail == f'Pulling image "{image}"'
    done = await seen.until(lambda o: o.status.finished, timeout=60)
    assert done.status is JobStatus.SUCCEEDED, done
    assert "pulled and ran" in "".join([chunk async for chunk in backend.logs("alice", "fresh")])


async def test_a_job_whose_image_does_not_exist_says_so_in_plain_words(
    backend: KubernetesJobBackend, ns: Namespace
) -> None:
    """A registry that does not have the image: the job waits, saying its image cannot be
    downloaded (no ErrImagePull for researchers; the cluster's words for admins), until deleted."""
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    missing = dataclasses.replace(ALICE, image="registry.test/missing/python:3")
    await backend.submit(spec("nowhere", "scraper", "print('never')"), missing)
    held = await seen.until(lambda o: o.reason is Reason.IMAGE_NOT_FOUND, timeout=60)
    assert held.status is JobStatus.PENDING
    assert held.message == "its image cannot be downloaded: check the image's name, or ask an admin"
    assert "ErrImagePull" not in (held.message or "") and "registry.test/missing/python:3" in (
        held.detail or ""
    )
    await backend.delete("alice", "nowhere")
    await eventually(
        lambda: not ns.pods(f"jhub-ext.io/job={object_name('alice', 'nowhere')}"), "its pod to go", 30
    )
