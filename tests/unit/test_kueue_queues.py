"""Kueue LocalQueues in the catalog (``kueue_queue`` on a profile, ``kueue.queues`` per group), the
label they put on workloads and server pods, and what a pod or job Kueue holds says.

Real Kueue holding and admitting them is tested in tests/integration/test_kueue.py."""

from __future__ import annotations

import textwrap
from typing import Any

import kubernetes_validate
import pytest

from jhub_ext.core.catalog import CatalogError, Kind, parse_catalog
from jhub_ext.core.catalog.selection import resolve_selection
from jhub_ext.core.jobs.model import JobStatus, Placement, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.kubernetes.pods import pod_plan
from jhub_ext.kubernetes.spawner import kubespawner_traits
from jhub_ext.kubernetes.status import derive_status, event_in_words
from jhub_ext.kubernetes.workloads import KUEUE_QUEUE_LABEL, build_manifests

CATALOG = """
version: 1
groups: [researchers, gpu, guests]
profiles:
  - slug: small
    display_name: Small
    cpu: {limit: 1}
  - slug: notebook
    display_name: Notebook
    kueue_queue: interactive
    cpu: {limit: 1}
kueue:
  queues:
    gpu: gpu-queue
    researchers: research
"""
QUEUED = parse_catalog(textwrap.dedent(CATALOG))
SMALL, NOTEBOOK = QUEUED.profiles
HELD = "held by the cluster's queue: it starts by itself when the queue admits it"


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(textwrap.dedent(text), "profiles.yaml")
    return caught.value.problems


# --- the catalog ------------------------------------------------------------------------------------


def test_a_profiles_own_queue_wins_else_the_first_listed_group_of_the_user() -> None:
    assert QUEUED.kueue_queues == {"gpu": "gpu-queue", "researchers": "research"}
    assert NOTEBOOK.kueue_queue_for(frozenset({"researchers"})) == "interactive"
    assert NOTEBOOK.kueue_queue_for(frozenset()) == "interactive"
    assert SMALL.kueue_queue_for(frozenset({"researchers"})) == "research"
    # a member of both groups: the group listed first under kueue.queues
    assert SMALL.kueue_queue_for(frozenset({"researchers", "gpu"})) == "gpu-queue"
    # no queue for this group, or no kueue section at all: not labelled for Kueue
    assert SMALL.kueue_queue_for(frozenset({"guests"})) is None
    plain = parse_catalog("version: 1\nprofiles: [{slug: a, display_name: A}]\n")
    assert plain.kueue_queues == {} and plain.profiles[0].kueue_queue_for(frozenset({"x"})) is None


FIX = (
    "use the name of a LocalQueue in the hub's namespace: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit, at most 63 characters (a DNS-1123 label)"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CATALOG.replace("kueue_queue: interactive", "kueue_queue: Interactive_1"),
            "profiles.yaml: profile 'notebook': kueue_queue 'Interactive_1' is not a Kueue LocalQueue "
            f"name; {FIX}",
        ),
        (
            CATALOG.replace("kueue_queue: interactive", "kueue_queue: 7"),
            f"profiles.yaml: profile 'notebook': kueue_queue 7 is not a Kueue LocalQueue name; {FIX}",
        ),
        (
            CATALOG.replace("researchers: research", "researchers: " + "q" * 64),
            f"profiles.yaml: kueue.queues.researchers '{'q' * 64}' is not a Kueue LocalQueue name; {FIX}",
        ),
        (
            CATALOG.replace("researchers: research", "researcher: research"),
            "profiles.yaml: kueue.queues: group 'researcher' is not declared; did you mean 'researchers'? "
            "Otherwise add it to the top-level `groups:` list",
        ),
        (
            CATALOG.replace("  queues:\n    gpu: gpu-queue\n    researchers: research\n", "  queues: {}\n"),
            "profiles.yaml: kueue.queues is empty; name a group and its LocalQueue, such as "
            "`researchers: research`, or remove `queues`",
        ),
        (
            CATALOG.replace("  queues:", "  queue:"),
            "profiles.yaml: unknown field 'kueue.queue'; did you mean 'queues'?",
        ),
    ],
)
def test_a_bad_queue_is_refused_naming_the_field_and_the_fix(text: str, expected: str) -> None:
    assert problems(text) == [expected]


# --- the label on workloads and server pods ----------------------------------------------------------

SUBMISSIONS: dict[str, dict[str, Any]] = {
    "batch": {"name": "count", "kind": "batch", "command": ["python", "count.py"]},
    "scraper": {"name": "news", "kind": "scraper", "command": ["python", "scrape.py"]},
    "scheduled": {"name": "nightly", "kind": "scheduled", "command": ["true"], "schedule": "@daily"},
}


def manifests(kind: str, groups: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = parse_submission(SUBMISSIONS[kind])
    placement = Placement(user="alice", groups=groups, profile=SMALL, image="example.org/scipy:1")
    configmap, workload = build_manifests(spec, placement)
    return configmap, workload


@pytest.mark.parametrize("kind", SUBMISSIONS)
def test_a_jobs_workload_carries_its_groups_queue_and_its_pods_do_not(kind: str) -> None:
    """Kueue reads the label on the Job (each run's, through a CronJob's job template) or the
    Deployment (it passes it on to its pods itself); the code's ConfigMap and the pod template,
    which the service's dry run submits as a pod, stay unlabelled."""
    configmap, workload = manifests(kind, frozenset({"researchers"}))
    labelled = workload["spec"]["jobTemplate"] if kind == "scheduled" else workload
    assert labelled["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "research"
    template = labelled["spec"]["template"]
    assert KUEUE_QUEUE_LABEL not in template["metadata"]["labels"]
    assert KUEUE_QUEUE_LABEL not in configmap["metadata"]["labels"]
    kubernetes_validate.validate(workload, "1.37.0", strict=True)


@pytest.mark.parametrize("kind", SUBMISSIONS)
def test_a_job_no_queue_is_named_for_is_not_labelled_for_kueue(kind: str) -> None:
    _, workload = manifests(kind, frozenset({"guests"}))
    assert KUEUE_QUEUE_LABEL not in str(workload)


def test_a_server_pod_carries_its_profiles_queue() -> None:
    """The pod itself is the workload of a server (Kueue's pod integration reads the label on it)."""
    groups = frozenset({"researchers"})
    for profile, queue in ((NOTEBOOK, "interactive"), (SMALL, "research")):
        selection = resolve_selection(QUEUED, {"profile": profile.slug}, groups, Kind.SERVER)
        plan = pod_plan(profile, user="alice", kind=Kind.SERVER, groups=groups)
        traits = kubespawner_traits(plan, selection, profile.kueue_queue_for(groups))
        assert traits["extra_labels"] == {**plan.labels, KUEUE_QUEUE_LABEL: queue}
    assert KUEUE_QUEUE_LABEL not in kubespawner_traits(plan, selection)["extra_labels"]


# --- what a job or server Kueue holds says ------------------------------------------------------------


def test_a_job_kueue_holds_says_so_and_tells_admins_its_queue() -> None:
    """Kueue's webhook suspends the labelled Job at once; the Job controller's Suspended condition
    follows a moment later."""
    job = {"metadata": {"labels": {KUEUE_QUEUE_LABEL: "research"}}, "spec": {"suspend": True}}
    observed = derive_status("jobs", job, [])
    assert (observed.status, observed.reason, observed.message) == (
        JobStatus.PENDING,
        Reason.HELD_BY_CLUSTER_QUEUE,
        HELD,
    )
    assert observed.detail == "Job suspended; in Kueue LocalQueue 'research' (its Workload object says why)"
    gated = {
        "metadata": {"name": "p", "labels": {KUEUE_QUEUE_LABEL: "research"}},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "SchedulingGated",
                    "message": "Scheduling is blocked due to non-empty scheduling gates",
                }
            ],
        },
    }
    observed = derive_status("deployments", {"metadata": {}}, [gated])
    assert observed.reason is Reason.HELD_BY_CLUSTER_QUEUE and observed.message == HELD
    assert observed.detail is not None and "Kueue LocalQueue 'research'" in observed.detail


def test_kueues_events_on_a_server_pod_are_said_in_plain_words() -> None:
    def said(reason: str, component: str, message: str) -> str:
        return event_in_words({"reason": reason, "message": message, "source": {"component": component}})

    assert said("CreatedWorkload", "pod-kueue-controller", "Created Workload: hub/pod-jupyter-a-1") == HELD
    assert said("Started", "pod-kueue-controller", "Admitted by clusterQueue team") == (
        "the cluster's queue admitted it"
    )
    assert said("Stopped", "pod-kueue-controller", "Preempted to accommodate a higher priority Workload") == (
        "the cluster's queue took its place back for other work; it waits in the queue again"
    )
    # the kubelet's own "Started" still means its container started
    assert said("Started", "kubelet", "Started container notebook").startswith("it started")
