"""Kubernetes objects for a job, as plain dicts: a ConfigMap with the code snapshot, and a workload.

Every object is bounded, so nothing runs or stays for ever unless it is meant to:

- ``batch`` -> a ``batch/v1`` Job: ``backoffLimit`` retries (the Job controller backs off
  exponentially), ``activeDeadlineSeconds`` (the job's deadline, at most its profile's
  ``max_run_seconds``), ``ttlSecondsAfterFinished`` (the service keeps the log when it finishes),
  and a ``podFailurePolicy`` under which a pod lost to a drained or failed node is not a retry.
- ``scraper`` -> an ``apps/v1`` Deployment of one replica with the ``Recreate`` strategy: restarted
  forever (with the kubelet's backoff), rescheduled when its node is drained, never two at once.
- ``scheduled`` -> a ``batch/v1`` CronJob with ``timeZone``, ``concurrencyPolicy``,
  ``startingDeadlineSeconds`` and history limits; each run is a Job with a deadline, no retries
  and the same failure policy.

Every pod runs under the "restricted" Pod Security Standard, without a service-account token,
with its profile's resources and scheduling, and labels that attribute it to its user, kind,
profile and groups. The snapshot is copied from the read-only ConfigMap into a writable work
directory by an init container, so jobs can write files next to their code.

On a namespace Kueue manages, the workload of a job whose profile or group names a Kueue LocalQueue
in the catalog (``kueue_queue``, ``kueue.queues``) carries the label ``kueue.x-k8s.io/queue-name``:
the Job, the Deployment (Kueue passes it on to its pods), and the CronJob's job template (so each
run's Job). Kueue then holds it (a suspended Job, gated pods) until its queue admits it.

Identity: every object is named by :func:`~jhub_ext.core.names.object_name` from the exact (user,
job name), with a
64-bit hash of the pair, and carries that pair exactly in its annotations ``jhub-ext.io/user`` and
``jhub-ext.io/name`` (pods and a CronJob's Jobs too, through their templates). Those annotations
are what says whose an object is. Labels (``jhub-ext.io/user`` and the rest) are sanitised and
lossy (``jürgen`` and ``jörgen`` share one): they select objects (watches, quotas), never identify.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from jhub_ext.core.jobs.model import ConcurrencyPolicy, JobSpec, Placement
from jhub_ext.core.names import object_name, output_subdir
from jhub_ext.kubernetes.pods import (
    DEFAULT_GID,
    DEFAULT_UID,
    LABEL_PREFIX,
    RESTRICTED_CONTAINER_SECURITY_CONTEXT,
    PodPlan,
    pod_plan,
    pod_security_context,
)

CODE_DIR = "/jhub-ext/code"
WORK_DIR = "/jhub-ext/work"
OUTPUT_DIR = "/jhub-ext/output"
JOB_LABEL = f"{LABEL_PREFIX}/job"
#: the environment variable that tells a job's process its job's name
JOB_NAME_ENV = "JHUB_EXT_JOB"
#: the exact owner and job name of an object: what identifies it (labels are lossy)
USER_ANNOTATION = f"{LABEL_PREFIX}/user"
NAME_ANNOTATION = f"{LABEL_PREFIX}/name"
#: on a CronJob: how many of its runs may be alive at once (the backend deletes the newest extra ones)
MAX_LIVE_RUNS_ANNOTATION = f"{LABEL_PREFIX}/max-live-runs"
#: on a workload (set by the backend when it creates one): the uid of the ConfigMap it runs, so that
#: only that very object is ever deleted as the job's code
CODE_UID_ANNOTATION = f"{LABEL_PREFIX}/code-uid"
#: the label that puts a workload (a Job, a Deployment, a server's pod) in a Kueue LocalQueue
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
_POLICIES = {
    ConcurrencyPolicy.FORBID: "Forbid",
    ConcurrencyPolicy.REPLACE: "Replace",
    ConcurrencyPolicy.ALLOW: "Allow",
}


@dataclass(frozen=True)
class Site:
    """What every job's objects share, set by the backend's configuration: the namespace, the user
    and group pods run as, the image of a job that has none, and an optional output volume."""

    namespace: str = "jhub"
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_GID
    default_image: str = "quay.io/jupyter/scipy-notebook:2024-12-09"
    output_claim: str | None = None  # a PersistentVolumeClaim for outputs; each user gets a sub-directory
    #: how long a finished Job is kept (the service keeps its log when it finishes); a CronJob's
    #: runs are bounded by its history limits instead
    finished_ttl_seconds: int = 24 * 3600
    #: how late a scheduled run may still start (after the controller manager was down, say)
    starting_deadline_seconds: int = 300
    #: Secrets in the namespace with the credentials to pull images from a private registry
    image_pull_secrets: tuple[str, ...] = ()


#: pods that fail because their node was drained, lost or preempted do not count against retries
IGNORE_DISRUPTIONS = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}


def _plan(spec: JobSpec, placement: Placement) -> PodPlan:
    """The profile's part of the job's pods: the same translation as for servers."""
    if placement.profile is None:
        raise ValueError("a job's placement names its profile (the service always chooses one)")
    env = {**placement.env, **spec.env, JOB_NAME_ENV: spec.name, "JHUB_EXT_JOB_KIND": spec.kind.value}
    return pod_plan(
        placement.profile, user=placement.user, kind=spec.kind.profile_kind, groups=placement.groups, env=env
    )


def _labels(spec: JobSpec, placement: Placement, plan: PodPlan) -> dict[str, str]:
    """Labels to select by (watches, quotas, ``kubectl``): sanitised, so they say nothing certain
    about whose an object is; the annotations do."""
    labels = dict(plan.labels)
    labels[f"{LABEL_PREFIX}/job-kind"] = spec.kind.value
    labels[JOB_LABEL] = object_name(placement.user, spec.name)
    return labels


def kueue_labels(queue: str | None) -> dict[str, str]:
    """The label that hands a workload to Kueue's LocalQueue ``queue`` (none where there is no queue)."""
    return {KUEUE_QUEUE_LABEL: queue} if queue else {}


def _workload_labels(spec: JobSpec, placement: Placement, plan: PodPlan) -> dict[str, str]:
    """A workload's own labels: its pods' (:func:`_labels`), and its Kueue LocalQueue's if the catalog
    names one for its profile or its owner's groups (Kueue reads it on the workload, not its pods)."""
    assert placement.profile is not None
    return {
        **_labels(spec, placement, plan),
        **kueue_labels(placement.profile.kueue_queue_for(placement.groups)),
    }


def _annotations(spec: JobSpec, placement: Placement) -> dict[str, str]:
    # labels are sanitised and lossy; the exact owner and name, which identify the job, live here
    return {USER_ANNOTATION: placement.user, NAME_ANNOTATION: spec.name}


def _metadata(spec: JobSpec, placement: Placement, site: Site, plan: PodPlan) -> dict[str, Any]:
    return {
        "name": object_name(placement.user, spec.name),
        "namespace": site.namespace,
        "labels": _labels(spec, placement, plan),
        "annotations": _annotations(spec, placement),
    }


def build_configmap(
    spec: JobSpec, placement: Placement, site: Site = Site(), plan: PodPlan | None = None
) -> dict[str, Any]:
    """The code snapshot. Keys are ``f0``, ``f1``, ...: ConfigMap keys cannot hold paths."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec, placement, site, plan or _plan(spec, placement)),
        "data": {f"f{i}": text for i, text in enumerate(spec.files.values())},
        "immutable": True,
    }


def _pod_template(
    spec: JobSpec, placement: Placement, site: Site, plan: PodPlan, restart_policy: str
) -> dict[str, Any]:
    name = object_name(placement.user, spec.name)
    image = placement.image or site.default_image
    security = dict(RESTRICTED_CONTAINER_SECURITY_CONTEXT)
    tmp = "/tmp"  # noqa: S108 - an emptyDir of the pod's own
    volume_mounts = [{"name": "work", "mountPath": WORK_DIR}, {"name": "tmp", "mountPath": tmp}]
    pod_spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(site.uid, site.gid),
        "initContainers": [
            {
                "name": "code",
                "image": image,
                "command": ["sh", "-c", f"cp -RL {CODE_DIR}/. {WORK_DIR}/"],
                "securityContext": security,
                "resources": {
                    "requests": {"cpu": "50m", "memory": "32Mi"},
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                },
                "volumeMounts": [
                    {"name": "code", "mountPath": CODE_DIR, "readOnly": True},
                    dict(volume_mounts[0]),
                ],
            }
        ],
        "containers": [
            {
                "name": "job",
                "image": image,
                "command": list(spec.command),
                "workingDir": WORK_DIR,
                "env": [{"name": key, "value": value} for key, value in sorted(plan.env.items())],
                "resources": plan.resources,
                "securityContext": security,
                "volumeMounts": [dict(mount) for mount in volume_mounts],
            }
        ],
        "volumes": [
            {
                "name": "code",
                "configMap": {
                    "name": name,
                    "items": [{"key": f"f{i}", "path": path} for i, path in enumerate(spec.files)],
                },
            },
            {"name": "work", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if site.output_claim:
        # outputs outlive the job; users see only their own sub-directory of the admin's volume
        pod_spec["volumes"].append(
            {"name": "output", "persistentVolumeClaim": {"claimName": site.output_claim}}
        )
        job_container = pod_spec["containers"][0]
        job_container["volumeMounts"].append(
            {"name": "output", "mountPath": OUTPUT_DIR, "subPath": output_subdir(placement.user)}
        )
        job_container["env"] = sorted(
            [*job_container["env"], {"name": "JHUB_EXT_OUTPUT_DIR", "value": OUTPUT_DIR}],
            key=lambda e: e["name"],
        )
    if site.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": secret} for secret in site.image_pull_secrets]
    if plan.node_selector:
        pod_spec["nodeSelector"] = plan.node_selector
    if plan.tolerations:
        pod_spec["tolerations"] = plan.tolerations
    if plan.affinity:
        pod_spec["affinity"] = plan.affinity
    return {
        "metadata": {"labels": _labels(spec, placement, plan), "annotations": _annotations(spec, placement)},
        "spec": pod_spec,
    }


def build_workload(
    spec: JobSpec, placement: Placement, site: Site = Site(), plan: PodPlan | None = None
) -> dict[str, Any]:
    """The Job, Deployment or CronJob that runs ``spec`` (``plan``: its profile's part, if known)."""
    plan = plan or _plan(spec, placement)
    metadata = {**_metadata(spec, placement, site, plan), "labels": _workload_labels(spec, placement, plan)}
    selector = {"matchLabels": {JOB_LABEL: metadata["name"]}}
    resource = spec.kind.rules.workload
    if resource == "deployments":
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "revisionHistoryLimit": 1,
                "selector": selector,
                "template": _pod_template(spec, placement, site, plan, "Always"),
            },
        }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.retries if spec.kind.rules.takes_retries else 0,
        "podFailurePolicy": IGNORE_DISRUPTIONS,
        "template": _pod_template(spec, placement, site, plan, "Never"),
    }
    if spec.deadline_seconds is not None:  # the service always sets one (see lifecycle.bounded_deadline)
        job_spec["activeDeadlineSeconds"] = spec.deadline_seconds
    if resource == "jobs":
        job_spec["ttlSecondsAfterFinished"] = site.finished_ttl_seconds
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
    schedule = spec.schedule
    assert schedule is not None
    metadata["annotations"][MAX_LIVE_RUNS_ANNOTATION] = str(schedule.max_live_runs)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata,
        "spec": {
            "schedule": schedule.cron,
            "timeZone": schedule.timezone,
            "concurrencyPolicy": _POLICIES[schedule.concurrency_policy],
            "startingDeadlineSeconds": site.starting_deadline_seconds,
            "successfulJobsHistoryLimit": schedule.history_limit,
            "failedJobsHistoryLimit": schedule.history_limit,
            # its Jobs carry the exact owner too
            "jobTemplate": {
                "metadata": {
                    "labels": _workload_labels(spec, placement, plan),
                    "annotations": _annotations(spec, placement),
                },
                "spec": job_spec,
            },
        },
    }


def build_manifests(spec: JobSpec, placement: Placement, site: Site = Site()) -> list[dict[str, Any]]:
    """Everything to create for a job, in order: the code first, then what runs it."""
    plan = _plan(spec, placement)  # the profile's part: the translation servers use too
    return [build_configmap(spec, placement, site, plan), build_workload(spec, placement, site, plan)]


def pod_to_check(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod that ``workload``'s controller will create, named like the job's objects: what a
    dry run asks about. Pod Security, the LimitRange and the ResourceQuota judge pods, so the
    workload's own create cannot answer for them (its controller meets them later, unseen)."""
    template = (workload["spec"].get("jobTemplate") or workload)["spec"]["template"]
    metadata = {**template["metadata"], "name": workload["metadata"]["name"]}
    return {"apiVersion": "v1", "kind": "Pod", **template, "metadata": metadata}


def admission_key(pod: dict[str, Any]) -> str:
    """A digest of ``pod`` without what names its job: the pod's name, the job's annotation and
    label, the code volume's ConfigMap and ``$JHUB_EXT_JOB``. Two jobs that differ only in their
    names are let in or refused alike, so one answer may stand for both."""
    shape = copy.deepcopy(pod)
    meta = shape["metadata"]
    meta.pop("name", None)
    (meta.get("annotations") or {}).pop(NAME_ANNOTATION, None)
    (meta.get("labels") or {}).pop(JOB_LABEL, None)
    for volume in shape["spec"].get("volumes") or []:
        if "configMap" in volume:
            volume["configMap"].pop("name", None)
    for container in shape["spec"].get("containers") or []:
        container["env"] = [e for e in container.get("env") or [] if e.get("name") != JOB_NAME_ENV]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
