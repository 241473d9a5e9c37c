"""Quota arithmetic: servers and jobs together, per group, every group of the user."""

from __future__ import annotations

import pytest

from jhub_ext.core.catalog import Kind, parse_catalog
from jhub_ext.core.catalog.quota import QuotaExceeded, Usage, Workload, check_quota, usage_by_group

CATALOG_TEXT = """
version: 1
groups: [researchers, gpu]
profiles:
  - {slug: small, display_name: S, cpu: {guarantee: 1, limit: 2}, memory: {limit: 4Gi}}
  - {slug: lean, display_name: L, cpu: {guarantee: 500m}, memory: {guarantee: 1Gi}}
  - {slug: gpu, display_name: G, groups: [gpu], cpu: {limit: 8}, memory: {limit: 32Gi}, gpu: {count: 2}}
quotas:
  researchers: {cpu: 10, memory: 40Gi, servers: 3, jobs: 2}
  gpu: {gpus: 3}
"""
CATALOG = parse_catalog(CATALOG_TEXT)
SMALL, LEAN, GPU = CATALOG.profiles
ALICE = frozenset({"researchers"})
BOB = frozenset({"researchers", "gpu"})


def test_a_workload_counts_its_limits_or_else_its_guarantees() -> None:
    assert Usage.of(SMALL) == Usage(cpu=2, memory=4 * 2**30, servers=1)
    assert Usage.of(LEAN) == Usage(cpu=0.5, memory=2**30, servers=1)
    assert Usage.of(GPU, Kind.SCRAPER) == Usage(cpu=8, memory=32 * 2**30, gpus=2, jobs=1)


def test_usage_is_summed_per_group_over_its_members() -> None:
    running = [
        Workload(ALICE, Usage.of(SMALL)),
        Workload(BOB, Usage.of(GPU)),
        Workload(BOB, Usage.of(SMALL, Kind.JOB)),
        Workload(frozenset({"other"}), Usage.of(SMALL)),
    ]
    totals = usage_by_group(running, ["researchers", "gpu"])
    assert totals["researchers"] == Usage(cpu=12, memory=40 * 2**30, gpus=2, servers=2, jobs=1)
    assert totals["gpu"] == Usage(cpu=10, memory=36 * 2**30, gpus=2, servers=1, jobs=1)


def test_a_request_that_fits_passes() -> None:
    check_quota(CATALOG, ALICE, Usage.of(SMALL), {"researchers": Usage(cpu=8, memory=36 * 2**30, servers=2)})


def test_exactly_at_the_limit_passes() -> None:
    check_quota(CATALOG, ALICE, Usage.of(SMALL), {"researchers": Usage(cpu=8, servers=2)})


def test_a_request_over_the_limit_says_usage_and_limit() -> None:
    with pytest.raises(QuotaExceeded) as caught:
        check_quota(CATALOG, ALICE, Usage.of(SMALL), {"researchers": Usage(cpu=9, servers=3)})
    assert caught.value.problems == [
        "group 'researchers' may use 10 CPUs at once and uses 9; this needs 2 more",
        "group 'researchers' may use 3 servers at once and uses 3; this needs 1 more",
    ]
    assert str(caught.value).endswith("Stop a server or job you no longer need, or choose a smaller profile.")


def test_jobs_and_servers_count_against_the_same_resources() -> None:
    in_use = {"researchers": Usage(cpu=2, memory=4 * 2**30, servers=1, jobs=2)}
    with pytest.raises(QuotaExceeded, match="may use 2 jobs at once and uses 2"):
        check_quota(CATALOG, ALICE, Usage.of(LEAN, Kind.JOB), in_use)
    check_quota(CATALOG, ALICE, Usage.of(LEAN, Kind.SERVER), in_use)


def test_every_group_of_the_user_must_have_room() -> None:
    plenty = {"researchers": Usage(), "gpu": Usage(gpus=2)}
    with pytest.raises(
        QuotaExceeded, match="group 'gpu' may use 3 GPUs at once and uses 2; this needs 2 more"
    ):
        check_quota(CATALOG, BOB, Usage.of(GPU), plenty)


def test_memory_is_shown_readably() -> None:
    with pytest.raises(
        QuotaExceeded, match="may use 40 GiB memory at once and uses 38 GiB; this needs 4 GiB more"
    ):
        check_quota(CATALOG, ALICE, Usage.of(SMALL), {"researchers": Usage(memory=38 * 2**30)})


def test_groups_without_a_quota_are_unlimited() -> None:
    check_quota(CATALOG, {"other"}, Usage(cpu=1000, gpus=100, servers=100), {})


def test_a_limit_of_one_reads_in_the_singular() -> None:
    catalog = parse_catalog(
        "version: 1\ngroups: [g]\nprofiles:\n  - {slug: s, display_name: S}\nquotas: {g: {servers: 1}}\n"
    )
    with pytest.raises(
        QuotaExceeded, match="group 'g' may use 1 server at once and uses 1; this needs 1 more"
    ):
        check_quota(catalog, {"g"}, Usage.of(catalog.profiles[0]), {"g": Usage(servers=1)})


def test_a_request_larger_than_a_quota_allows_at_all_can_never_fit_and_says_what_would() -> None:
    tight = parse_catalog(CATALOG_TEXT.replace("gpu: {gpus: 3}", "gpu: {gpus: 1}"))
    with pytest.raises(QuotaExceeded) as caught:
        check_quota(tight, BOB, Usage.of(tight.profiles[2]), {})  # 2 GPUs where 1 is the most
    assert caught.value.never
    assert caught.value.problems == [
        "group 'gpu' may use 1 GPU at once; this needs 2, more than it may ever use"
    ]
    # the largest profile bob may use that fits his groups' quotas on its own
    assert str(caught.value).endswith(
        "It can never start as it is: choose a smaller profile, such as 'small'."
    )
    # whatever runs now: nothing that stops would make room
    with pytest.raises(QuotaExceeded) as again:
        check_quota(tight, BOB, Usage.of(tight.profiles[2]), {"gpu": Usage(gpus=1)})
    assert again.value.never


def test_a_request_that_fits_a_quota_alone_is_not_called_never() -> None:
    with pytest.raises(QuotaExceeded) as caught:
        check_quota(CATALOG, BOB, Usage.of(GPU), {"gpu": Usage(gpus=2)})
    assert not caught.value.never
    assert caught.value.problems == ["group 'gpu' may use 3 GPUs at once and uses 2; this needs 2 more"]


def test_a_refusal_names_the_owners_own_work_in_the_full_groups_only() -> None:
    running = [
        Workload(ALICE, Usage.of(SMALL), "alice", "default server"),
        Workload(ALICE, Usage.of(SMALL, Kind.JOB), "alice", "job 'news'"),
        Workload(ALICE, Usage.of(SMALL, Kind.JOB), "carol", "job 'hers'"),
        Workload(frozenset({"gpu"}), Usage(gpus=1), "alice", "job 'gpu-only'"),
    ]
    with pytest.raises(QuotaExceeded) as caught:
        check_quota(CATALOG, ALICE, Usage.of(SMALL), {"researchers": Usage(cpu=9, servers=1)})
    assert caught.value.groups == {"researchers"}
    named = caught.value.naming("alice", running)
    assert str(named) == (
        "group 'researchers' may use 10 CPUs at once and uses 9; this needs 2 more. "
        "Yours that count there: default server, job 'news'. "
        "Stop one you no longer need, or choose a smaller profile."
    )
    assert caught.value.naming("dave", running) is caught.value  # nothing of dave's counts there
