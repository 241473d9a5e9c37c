"""Capacity arithmetic from nodes and pods as the API returns them."""

from __future__ import annotations

from typing import Any

import pytest

from jhub_ext.core.catalog import Kind, load_catalog, parse_catalog
from jhub_ext.core.catalog.quota import Usage
from jhub_ext.core.jobs.model import ROOMY, Room
from jhub_ext.kubernetes.capacity import (
    availability,
    node_matches,
    pod_limits,
    pod_requests,
    pod_workload,
    room_for,
)
from jhub_ext.kubernetes.pods import resource_requirements, workload_labels
from jhub_ext.kubernetes.quantities import (
    cpu_quantity,
    memory_quantity,
    parse_cpu_quantity,
    parse_memory_quantity,
    parse_quantity,
)

from ..conftest import SHIPPED_CATALOG

CATALOG = load_catalog(SHIPPED_CATALOG)
SMALL = CATALOG.profile("small")
GPU = CATALOG.profile("gpu-a100")
A100 = "NVIDIA-A100-SXM4-80GB"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def node(name: str, cpu: str = "8", memory: str = "32Gi", gpus: int = 0, **extra: Any) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, **extra.get("labels", {})}
    # as real nodes report them: ephemeral storage and huge pages besides CPU and memory
    allocatable = {
        "cpu": cpu,
        "memory": memory,
        "pods": "110",
        "ephemeral-storage": "95551679124",
        "hugepages-2Mi": "0",
        "hugepages-1Gi": "0",
    }
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
        labels["nvidia.com/gpu.product"] = A100
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": extra.get("taints", [])}
        | ({"unschedulable": True} if extra.get("cordoned") else {}),
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "False" if extra.get("not_ready") else "True"}],
        },
    }


def pod(node_name: str, requests: dict[str, str], phase: str = "Running", **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": meta.get("name", "p"), "namespace": "jhub", "labels": meta.get("labels", {})},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": {"requests": requests}}]},
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100Gi", 100 * 2**30),
        ("1.5", 1.5),
        ("250m", 0.25),
        ("1e3", 1000),
        ("2k", 2000),
        ("1Ei", 2**60),
        ("2E3", 2000),
        ("95551679124", 95551679124),
    ],
)
def test_every_quantity_form_the_api_returns_parses(text: str, value: float) -> None:
    assert float(parse_quantity(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "1Xi", "", "1e", "Gi"])
def test_what_is_not_a_quantity_is_refused(text: str) -> None:
    from jhub_ext.core.catalog.quantities import QuantityError

    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_quantities_round_trip() -> None:
    assert cpu_quantity(0.5) == "500m" and cpu_quantity(2.0) == "2" and cpu_quantity(1.25) == "1250m"
    assert memory_quantity(4 * 2**30) == "4Gi" and memory_quantity(4 * 10**9) == "4G"
    assert memory_quantity(1000 * 2**20 + 1) == str(1000 * 2**20 + 1)
    assert parse_cpu_quantity("3920m") == pytest.approx(3.92)
    assert parse_cpu_quantity("250000000n") == pytest.approx(0.25)
    assert parse_memory_quantity("32Gi") == 32 * 2**30
    assert parse_memory_quantity("16416268Ki") == 16416268 * 1024


def test_resource_requirements_from_a_profile() -> None:
    assert resource_requirements(GPU.resources) == {
        "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
    }
    assert resource_requirements(SMALL.resources)["requests"] == {"cpu": "500m", "memory": "1Gi"}


def test_labels_attribute_user_kind_profile_and_groups() -> None:
    labels = workload_labels("alice@example.org", SMALL, Kind.SCRAPER, {"researchers", "gpu"})
    assert labels == {
        "app.kubernetes.io/managed-by": "jhub-ext",
        "jhub-ext.io/user": "alice-example.org",
        "jhub-ext.io/kind": "scraper",
        "jhub-ext.io/profile": "small",
        "group.jhub-ext.io/gpu": "true",
        "group.jhub-ext.io/researchers": "true",
    }


def test_a_gpu_profile_needs_a_gpu_node_it_tolerates() -> None:
    assert node_matches(GPU, node("g1", gpus=4, taints=[GPU_TAINT]))
    assert not node_matches(GPU, node("c1"))  # no nvidia.com/gpu.product label
    assert not node_matches(SMALL, node("g1", gpus=4, taints=[GPU_TAINT]))  # the taint keeps CPU work off
    assert node_matches(SMALL, node("c1"))
    assert not node_matches(SMALL, node("c2", cordoned=True))
    assert not node_matches(SMALL, node("c3", not_ready=True))


def test_required_node_affinity_is_honoured() -> None:
    catalog = parse_catalog(
        "version: 1\nprofiles:\n  - slug: spot\n    display_name: Spot\n    affinity:\n"
        "      nodeAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution:\n"
        "          nodeSelectorTerms:\n            - matchExpressions:\n"
        "                - {key: pool, operator: In, values: [spot, cheap]}\n"
    )
    spot = catalog.profiles[0]
    assert node_matches(spot, node("a", labels={"pool": "cheap"}))
    assert not node_matches(spot, node("b", labels={"pool": "on-demand"}))


def test_pod_requests_count_a_lone_limit_as_the_request() -> None:
    p = {"spec": {"containers": [{"resources": {"limits": {"cpu": "2", "nvidia.com/gpu": "1"}}}]}}
    assert pod_requests(p) == {"cpu": 2.0, "nvidia.com/gpu": 1.0}
    both = {"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}}]}}
    assert pod_requests(both) == {"cpu": 1.0} and pod_limits(both) == {"cpu": 2.0}


def test_gpu_availability_counts_free_gpus_on_matching_nodes() -> None:
    nodes = [node("g1", gpus=4, taints=[GPU_TAINT]), node("g2", gpus=4, taints=[GPU_TAINT]), node("c1")]
    pods = [
        pod("g1", {"cpu": "1", "nvidia.com/gpu": "3"}),
        pod("g2", {"nvidia.com/gpu": "2"}),
        pod("g2", {"nvidia.com/gpu": "4"}, phase="Succeeded"),  # finished pods free their GPUs
    ]
    result = availability(GPU, nodes, pods)
    assert (result.matching_nodes, result.gpus_free, result.gpus_total, result.fits_now) == (2, 3, 8, True)
    assert result.describe(GPU) == f"3 of 8 {A100} GPUs free · starts now"


def test_a_profile_that_fits_no_node_now_waits_for_a_new_one() -> None:
    nodes = [node("g1", cpu="8", memory="64Gi", gpus=1, taints=[GPU_TAINT])]
    full = availability(GPU, nodes, [pod("g1", {"nvidia.com/gpu": "1"})])
    assert not full.fits_now and full.describe(GPU) == f"0 of 1 {A100} GPUs free · waits for a new machine"
    low_memory = availability(GPU, [node("g1", memory="16Gi", gpus=1, taints=[GPU_TAINT])], [])
    assert not low_memory.fits_now  # 32Gi guarantee does not fit 16Gi
    none = availability(GPU, [node("c1")], [])
    assert none.describe(GPU).startswith("No machine of this kind is running now")
    assert availability(SMALL, [node("c1")], []).describe(SMALL) == "Starts now"


def test_pods_count_against_their_groups_quota() -> None:
    labels = workload_labels("bob", GPU, Kind.SERVER, {"researchers", "gpu"})
    running = pod("g1", {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"}, labels=labels)
    running["spec"]["containers"][0]["resources"]["limits"] = {
        "cpu": "8",
        "memory": "64Gi",
        "nvidia.com/gpu": "1",
    }
    workload = pod_workload(running, ["gpu", "other"], ["nvidia.com/gpu"])
    assert workload is not None and workload.groups == {"gpu"}
    assert workload.usage == Usage(cpu=8, memory=64 * 2**30, gpus=1, servers=1)
    assert workload.usage == Usage.of(GPU, Kind.SERVER)  # same arithmetic as the catalog's
    assert pod_workload(pod("g1", {"cpu": "1"}), ["gpu"], ["nvidia.com/gpu"]) is None  # not ours


def test_orphan_server_pods_are_ours_unknown_to_the_hub_and_past_their_grace() -> None:
    from datetime import UTC, datetime

    from jhub_ext.kubernetes.capacity import orphan_server_pods

    ours = {"component": "singleuser-server", "jhub-ext.io/kind": "server"}

    def server(name: str, user: str, created: str, **meta: Any) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": meta.pop("namespace", "jhub"),
                "creationTimestamp": created,
                "labels": meta.pop("labels", ours),
                "annotations": {"hub.jupyter.org/username": user, "hub.jupyter.org/servername": ""},
                **meta,
            }
        }

    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    pods = [
        server("orphan", "dave", "2026-11-26T11:00:00Z"),
        server("running", "alice", "2026-11-26T11:00:00Z"),  # the hub knows it
        server("young", "erin", "2026-11-26T11:59:30Z"),  # within the grace period
        server("elsewhere", "frank", "2026-11-26T11:00:00Z", namespace="other"),
        server("going", "gina", "2026-11-26T11:00:00Z", deletionTimestamp="2026-11-26T11:59:00Z"),
        server("job", "hal", "2026-11-26T11:00:00Z", labels={"jhub-ext.io/kind": "job"}),
        server("stock", "ivy", "2026-11-26T11:00:00Z", labels={"component": "singleuser-server"}),
    ]
    found = orphan_server_pods(pods, "jhub", {("alice", "")}, 600, now)
    assert [p["metadata"]["name"] for p in found] == ["orphan"]


def test_whether_a_job_has_room_on_a_machine_now_or_ever_and_what_is_short() -> None:
    gpu_node = node("gpu-1", cpu="32", memory="256Gi", gpus=4, taints=[GPU_TAINT])
    gpu_node["metadata"]["labels"]["nvidia.com/gpu.count"] = "4"
    busy = [pod("gpu-1", {"cpu": "1", "nvidia.com/gpu": "1"}, name=f"g{i}") for i in range(4)]
    assert room_for(GPU, [gpu_node], busy[:3]) == ROOMY
    taken = room_for(GPU, [gpu_node], busy)
    assert (taken.now, taken.ever) == (False, True)
    assert taken.short == "0 of 4 NVIDIA-A100-SXM4-80GB GPUs are free, and it needs 1"
    # no machine of its kind at all: it waits (an autoscaler may add one), it is not refused
    assert room_for(GPU, [node("cpu-1")], []) == Room(
        now=False, short="no machine of its kind is running now"
    )
    # machines of its kind, all too small even empty: it can never start there
    tiny = room_for(SMALL, [node("cpu-1", cpu="100m", memory="64Mi")], [])
    assert (tiny.now, tiny.ever) == (False, False)
    assert tiny.short == "no machine of its kind is that large (0.1 CPUs and 64 MiB of memory)"
    # CPUs taken by others: what it needs, in words
    full = room_for(SMALL, [node("cpu-1", cpu="1", memory="8Gi")], [pod("cpu-1", {"cpu": "900m"})])
    assert (full.now, full.ever) == (False, True)
    assert full.short.startswith("no machine of its kind has ") and full.short.endswith(" free now")
