"""Job manifests: valid against the official Kubernetes schema and shaped as documented.

That the API server admits them (restricted Pod Security included) is tested against the real
control plane in tests/integration/test_kube_manifests.py."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from jhub_ext.core.catalog import load_catalog
from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.model import JobSpecError, Placement, parse_submission
from jhub_ext.core.names import object_name, output_subdir
from jhub_ext.kubernetes.workloads import (
    Site,
    admission_key,
    build_manifests,
    build_workload,
    pod_to_check,
)

from ..conftest import SHIPPED_CATALOG

KUBERNETES = "1.37.0"
CATALOG = load_catalog(SHIPPED_CATALOG)
GPU = CATALOG.profile("gpu-a100")
SMALL = CATALOG.profile("small")
PLACEMENT = Placement(user="alice@example.org", profile=SMALL, image="example.org/scipy:1")

SUBMISSIONS = {
    "batch": {
        "name": "count",
        "kind": "batch",
        "command": ["python", "count.py"],
        "retries": 2,
        "deadline_seconds": 600,
    },
    "scraper": {"name": "news", "kind": "scraper", "command": ["python", "scrape.py"]},
    "scheduled": {
        "name": "nightly",
        "kind": "scheduled",
        "command": ["python", "run.py"],
        "schedule": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "concurrency_policy": "replace",
        "history_limit": 5,
    },
}
FILES = {"count.py": "print(1)", "lib/util.py": "X = 1"}


def pod_spec_of(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", SUBMISSIONS)
@pytest.mark.parametrize("profile", [SMALL, GPU], ids=["small", "gpu"])
def test_every_manifest_passes_the_official_schema(kind: str, profile: Any) -> None:
    spec = parse_submission({**SUBMISSIONS[kind], "files": FILES})
    placement = Placement(user="alice", profile=profile, image="example.org/x:1", groups=frozenset({"gpu"}))
    for manifest in build_manifests(spec, placement):
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_a_batch_job_maps_retries_deadline_and_profile() -> None:
    spec = parse_submission({**SUBMISSIONS["batch"], "files": FILES})
    configmap, job = build_manifests(spec, PLACEMENT)
    name = object_name("alice@example.org", "count")
    assert job["kind"] == "Job" and job["metadata"]["name"] == name == configmap["metadata"]["name"]
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 600
    pod = pod_spec_of(job)
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["command"] == ["python", "count.py"] and container["workingDir"] == "/jhub-ext/work"
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "4Gi"},
    }
    assert configmap["data"] == {"f0": "print(1)", "f1": "X = 1"}
    assert pod["volumes"][0]["configMap"]["items"] == [
        {"key": "f0", "path": "count.py"},
        {"key": "f1", "path": "lib/util.py"},
    ]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["jhub-ext.io/user"] == "alice-example.org" and labels["jhub-ext.io/kind"] == "job"
    assert (
        job["metadata"]["annotations"]["jhub-ext.io/user"] == "alice@example.org"
    )  # exact, unlike the label


def test_a_scraper_is_a_single_replica_deployment_that_restarts_forever() -> None:
    deployment = build_workload(parse_submission(SUBMISSIONS["scraper"]), PLACEMENT)
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert pod_spec_of(deployment)["restartPolicy"] == "Always"
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )


def test_a_scheduled_job_is_a_cronjob_with_time_zone_and_policy() -> None:
    cronjob = build_workload(parse_submission(SUBMISSIONS["scheduled"]), PLACEMENT)
    assert cronjob["kind"] == "CronJob"
    assert {
        k: cronjob["spec"][k]
        for k in ("schedule", "timeZone", "concurrencyPolicy", "successfulJobsHistoryLimit")
    } == {
        "schedule": "0 2 * * *",
        "timeZone": "Europe/Berlin",
        "concurrencyPolicy": "Replace",
        "successfulJobsHistoryLimit": 5,
    }


def test_a_scheduled_jobs_runs_and_pods_carry_the_exact_owner_and_its_bound() -> None:
    body = {**SUBMISSIONS["scheduled"], "concurrency_policy": "allow"}
    placement = Placement(user="Jürgen.M", profile=SMALL, image="x/y:1")
    cronjob = build_workload(parse_submission(body), placement)
    owner = {"jhub-ext.io/user": "Jürgen.M", "jhub-ext.io/name": "nightly"}
    template = cronjob["spec"]["jobTemplate"]
    assert template["metadata"]["annotations"] == owner  # the Jobs it creates
    assert template["spec"]["template"]["metadata"]["annotations"] == owner  # and their pods
    assert cronjob["metadata"]["annotations"] == {**owner, "jhub-ext.io/max-live-runs": "1"}
    kubernetes_validate.validate(cronjob, KUBERNETES, strict=True)


def test_a_gpu_job_gets_the_gpu_limit_toleration_and_node_selector() -> None:
    placement = Placement(user="bob", profile=GPU, image="example.org/torch:1", groups=frozenset({"gpu"}))
    pod = pod_spec_of(build_workload(parse_submission(SUBMISSIONS["batch"]), placement))
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_object_names_are_unique_valid_and_short() -> None:
    names = {
        object_name(user, job) for user in ("alice", "Alice", "alice.x", "a" * 80) for job in ("n", "n" * 63)
    }
    assert len(names) == 8
    for name in names:
        assert len(name) <= 52 and name[0].isalnum() and name[-1].isalnum()
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}, KUBERNETES, strict=True
        )


def test_an_output_volume_is_mounted_per_user() -> None:
    placement = Placement(user="alice@example.org", profile=SMALL, image="x/y:1")
    job = build_workload(parse_submission(SUBMISSIONS["batch"]), placement, Site(output_claim="outputs"))
    kubernetes_validate.validate(job, KUBERNETES, strict=True)
    pod = pod_spec_of(job)
    assert {"name": "output", "persistentVolumeClaim": {"claimName": "outputs"}} in pod["volumes"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "output")
    assert mount == {
        "name": "output",
        "mountPath": "/jhub-ext/output",
        "subPath": output_subdir("alice@example.org"),
    }
    assert mount["subPath"].startswith("alice-example-org-")  # readable, and the user's alone
    assert {"name": "JHUB_EXT_OUTPUT_DIR", "value": "/jhub-ext/output"} in pod["containers"][0]["env"]
    assert all(m["name"] != "output" for m in pod["initContainers"][0]["volumeMounts"])


def test_job_pods_of_every_kind_pull_with_the_admins_secrets() -> None:
    site = Site(image_pull_secrets=("registry-credentials", "mirror"))
    for kind in ("batch", "scraper", "scheduled"):
        workload = build_workload(parse_submission(SUBMISSIONS[kind]), PLACEMENT, site)
        kubernetes_validate.validate(workload, KUBERNETES, strict=True)
        assert pod_spec_of(workload)["imagePullSecrets"] == [
            {"name": "registry-credentials"},
            {"name": "mirror"},
        ]
    assert "imagePullSecrets" not in pod_spec_of(
        build_workload(parse_submission(SUBMISSIONS["batch"]), PLACEMENT)
    )


def test_every_job_and_run_is_bounded_and_disruptions_are_not_retries() -> None:
    spec = lifecycle.bounded_deadline(parse_submission(SUBMISSIONS["batch"]), SMALL.max_run_seconds, "small")
    job = build_workload(spec, PLACEMENT, Site(finished_ttl_seconds=600))["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"], job["ttlSecondsAfterFinished"]) == (
        2,
        600,
        600,
    )
    ignore = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert job["podFailurePolicy"]["rules"] == [ignore]
    # a batch job submitted with defaults gets its profile's longest run as its deadline
    plain = parse_submission({"name": "x", "kind": "batch", "command": ["true"]})
    default = build_workload(lifecycle.bounded_deadline(plain, 3600, "small"), PLACEMENT)["spec"]
    assert default["activeDeadlineSeconds"] == 3600
    # each run of a schedule too, with no retries; and a run that is late starts only so late
    nightly = parse_submission(SUBMISSIONS["scheduled"])
    cronjob = build_workload(lifecycle.bounded_deadline(nightly, 7200, "small"), PLACEMENT)["spec"]
    run = cronjob["jobTemplate"]["spec"]
    assert (run["backoffLimit"], run["activeDeadlineSeconds"]) == (0, 7200)
    assert run["podFailurePolicy"]["rules"] == [ignore] and "ttlSecondsAfterFinished" not in run
    assert cronjob["startingDeadlineSeconds"] == 300
    for workload in (
        build_workload(spec, PLACEMENT),
        build_workload(lifecycle.bounded_deadline(nightly, 7200, "s"), PLACEMENT),
    ):
        kubernetes_validate.validate(workload, KUBERNETES, strict=True)


def test_a_deadline_over_the_profiles_longest_run_is_refused_naming_the_field() -> None:
    asked = parse_submission({**SUBMISSIONS["batch"], "deadline_seconds": 90000})
    with pytest.raises(JobSpecError) as refused:
        lifecycle.bounded_deadline(asked, 86400, "small")
    assert refused.value.field == "deadline_seconds" and "at most 86400 s" in str(refused.value)
    scraper = parse_submission(SUBMISSIONS["scraper"])
    assert lifecycle.bounded_deadline(scraper, 60, "small").deadline_seconds is None  # runs until stopped


def test_the_pod_a_dry_run_asks_about_is_the_workloads_named_like_the_job() -> None:
    for kind in ("batch", "scraper", "scheduled"):
        _, workload = build_manifests(parse_submission(SUBMISSIONS[kind]), PLACEMENT)
        pod = pod_to_check(workload)
        assert pod["kind"] == "Pod" and pod["metadata"]["name"] == workload["metadata"]["name"]
        assert pod["spec"] == pod_spec_of(workload)
        kubernetes_validate.validate(pod, KUBERNETES, strict=True)


def test_pods_alike_but_for_their_jobs_names_share_one_admission_key() -> None:
    """One dry run's answer may stand for jobs whose pods differ only in what names the job;
    anything else admission may judge (command, resources, image, owner) asks again."""

    def key(placement: Placement = PLACEMENT, **changes: Any) -> str:
        body = {**SUBMISSIONS["batch"], **changes}
        return admission_key(pod_to_check(build_manifests(parse_submission(body), placement)[1]))

    assert key(name="first") == key(name="second-with-a-longer-name")
    others = [
        key(command=["python", "-c", "print(2)"]),
        key(Placement(user="alice@example.org", profile=GPU, image="example.org/scipy:1")),
        key(Placement(user="alice@example.org", profile=SMALL, image="example.org/other:1")),
        key(Placement(user="bob", profile=SMALL, image="example.org/scipy:1")),
        key(env={"MODE": "fast"}),
    ]
    assert len({key(), *others}) == len(others) + 1
