"""The usage ledger: one counting rule, and the jobs' reservations read alike by the hub and the service."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from jhub_ext.admission.reservations import JobReservations
from jhub_ext.core.catalog import Kind, parse_catalog
from jhub_ext.core.catalog.ledger import UsageLedger, job_reservation, server_reservation
from jhub_ext.core.catalog.quota import Usage, Workload
from jhub_ext.core.jobs.model import JobStatus, parse_submission
from jhub_ext.service.store import JobStore

CATALOG = parse_catalog(
    """
version: 1
groups: [researchers, gpu]
profiles:
  - {slug: small, display_name: S, cpu: {guarantee: 1, limit: 2}, memory: {limit: 4Gi}}
  - {slug: gpu, display_name: G, groups: [gpu], cpu: {limit: 8}, memory: {limit: 32Gi}, gpu: {count: 2}}
quotas:
  researchers: {cpu: 10, memory: 40Gi, servers: 3, jobs: 4}
  gpu: {gpus: 3}
"""
)
SMALL, GPU = CATALOG.profiles
RESEARCHERS = frozenset({"researchers"})


def test_a_server_counts_its_recorded_reservation_even_after_the_catalog_changed() -> None:
    recorded = Usage(cpu=1, memory=2**30, servers=1).to_json()  # what it reserved when it started
    assert server_reservation(CATALOG, recorded, {"profile": "small"}, RESEARCHERS) == Usage(
        cpu=1, memory=2**30, servers=1
    )


def test_a_starting_server_counts_what_its_options_ask_now() -> None:
    assert server_reservation(CATALOG, None, {"profile": "small"}, RESEARCHERS) == Usage.of(SMALL)
    # a record from another release that does not parse: the options decide
    assert server_reservation(CATALOG, {"cores": 3}, {}, RESEARCHERS) == Usage.of(SMALL)


def test_a_server_whose_options_no_longer_resolve_counts_as_one_server() -> None:
    # gpu is not for researchers-only members; a profile removed from the catalog is the same case
    assert server_reservation(CATALOG, None, {"profile": "gpu"}, RESEARCHERS) == Usage(servers=1)
    assert server_reservation(CATALOG, None, {"profile": "gone"}, RESEARCHERS) == Usage(servers=1)


def test_a_job_reserves_its_profile_once_per_live_run() -> None:
    assert job_reservation(GPU, Kind.JOB) == Usage(cpu=8, memory=32 * 2**30, gpus=2, jobs=1)
    assert job_reservation(SMALL, Kind.JOB, 3) == Usage(cpu=6, memory=12 * 2**30, jobs=1)


class Listed:
    """A usage source with fixed workloads."""

    def __init__(self, *workloads: Workload):
        self.found = list(workloads)
        self.asked: list[frozenset[str]] = []

    async def workloads(self, catalog: object, groups: frozenset[str]) -> list[Workload]:
        self.asked.append(groups)
        return [w for w in self.found if w.groups & groups]


async def test_the_ledger_sums_its_sources_for_quota_groups_only() -> None:
    servers = Listed(Workload(RESEARCHERS, Usage.of(SMALL)), Workload(frozenset({"gpu"}), Usage.of(GPU)))
    jobs = Listed(Workload(frozenset({"researchers", "gpu"}), job_reservation(GPU, Kind.JOB)))
    ledger = UsageLedger(servers, jobs)
    usage = await ledger.usage(CATALOG, frozenset({"researchers", "no-quota"}))
    assert usage == {"researchers": Usage.of(SMALL) + job_reservation(GPU, Kind.JOB)}
    assert servers.asked == jobs.asked == [RESEARCHERS]  # a group without a quota is not even asked for
    assert await UsageLedger(servers).usage(CATALOG, frozenset({"no-quota"})) == {}


async def test_jobs_reservations_are_read_from_what_the_store_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    store = JobStore(url)
    try:
        for name, groups, status in [
            ("running", RESEARCHERS, JobStatus.RUNNING),
            ("pending", frozenset({"researchers", "gpu"}), None),
            ("finished", RESEARCHERS, JobStatus.FAILED),
            ("others", frozenset({"physics"}), None),
        ]:
            spec = parse_submission({"name": name, "kind": "batch", "command": ["true"]})
            usage = job_reservation(SMALL, Kind.JOB)
            store.create("alice", spec, "small", groups=groups, usage=usage.to_json())
            if status is JobStatus.FAILED:
                store.set_status("alice", name, JobStatus.RUNNING)
            if status is not None:
                store.set_status("alice", name, status)
        # the hub's reader: its own engine on the same file, as the spawner opens it
        reader = JobReservations(create_engine(url))
        found = await reader.workloads(CATALOG, RESEARCHERS)
        assert sorted(sorted(w.groups) for w in found) == [["gpu", "researchers"], ["researchers"]]
        assert all(w.usage == job_reservation(SMALL, Kind.JOB) for w in found)
        (gpu_job,) = await reader.workloads(CATALOG, frozenset({"gpu"}))
        assert gpu_job.groups == frozenset({"researchers", "gpu"})
    finally:
        store.close()


async def test_no_jobs_database_yet_counts_no_jobs(tmp_path: Path) -> None:
    reader = JobReservations(create_engine(f"sqlite:///{tmp_path / 'not-yet.sqlite'}"))
    assert await reader.workloads(CATALOG, RESEARCHERS) == []
