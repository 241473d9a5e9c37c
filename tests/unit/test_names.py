"""Object names and output sub-directories: one per exact (user, job name), valid wherever used.

(The API server's own check of these names runs in tests/integration/test_kube_jobs.py.)"""

from __future__ import annotations

import re

import pytest

from jhub_ext.kubernetes.workloads import object_name, output_subdir

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
USERS = [
    "alice",
    "Alice",
    "ALICE",
    "alice.x",
    "alice_x",
    "alice-x",
    "alice@example.org",
    "jürgen",
    "jörgen",
    "Jürgen.Müller@uni-köln.de",
    "a" * 200,
    "a" * 199 + "b",
    "...",
    "-",
    "ü",
    "用户",
    "x\u200by",
    "İstanbul",
]
JOB_NAMES = ["n", "news", "a-b", "n" * 63, "n" * 62 + "m", "x" * 40 + "-" + "y" * 22]


def test_users_that_sanitise_alike_get_different_names() -> None:
    assert object_name("jürgen", "x") != object_name("jörgen", "x")
    assert object_name("alice.x", "j") != object_name("alice_x", "j") != object_name("alice-x", "j")
    assert object_name("Alice", "j") != object_name("alice", "j")
    assert output_subdir("jürgen") != output_subdir("jörgen")


def test_names_that_differ_only_after_the_readable_prefix_differ() -> None:
    long_job = "n" * 60
    assert object_name("u", long_job + "aaa") != object_name("u", long_job + "aab")
    assert object_name("a" * 100 + "1", "j") != object_name("a" * 100 + "2", "j")
    # the prefixes alike, the hash tells them apart
    assert object_name("u", long_job + "aaa")[:-17] == object_name("u", long_job + "aab")[:-17]


def test_the_pair_is_hashed_unambiguously() -> None:
    assert object_name("ab", "c") != object_name("a", "bc")
    assert object_name("a-b", "c") != object_name("a", "b-c")


def test_the_hash_has_at_least_64_bits() -> None:
    for user in USERS:
        digest = object_name(user, "job").rsplit("-", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{16,}", digest)
        assert re.fullmatch(r"[0-9a-f]{16,}", output_subdir(user).rsplit("-", 1)[1])


@pytest.mark.parametrize("user", USERS)
def test_names_are_dns_labels_short_enough_for_a_cronjobs_runs(user: str) -> None:
    for job in JOB_NAMES:
        name = object_name(user, job)
        assert len(name) <= 52 and DNS_LABEL.fullmatch(name), name
        run = f"{name}-{2**32}"  # the name of a Job a CronJob creates (minutes since the epoch)
        assert len(run) <= 63 and DNS_LABEL.fullmatch(run)


def test_names_are_readable_and_stable() -> None:
    assert object_name("alice", "news").startswith("alice-news-")
    assert object_name("Alice@Example.org", "nightly-report").startswith("alice-exampl-nightly-report-")
    assert object_name("ü", "x").startswith("u-x-")  # nothing readable in the user: a placeholder
    assert object_name("alice", "news") == object_name("alice", "news")


def test_every_user_and_job_gets_a_name_of_its_own() -> None:
    pairs = [(user, job) for user in USERS for job in JOB_NAMES]
    assert len({object_name(user, job) for user, job in pairs}) == len(pairs)


def test_output_subdirs_are_one_per_user_and_safe_as_a_sub_path() -> None:
    subdirs = [output_subdir(user) for user in USERS]
    assert len(set(subdirs)) == len(USERS)
    for subdir in subdirs:
        assert DNS_LABEL.fullmatch(subdir) and len(subdir) <= 63  # no '/', no '..', no leading '.'
    assert output_subdir("alice@example.org").startswith("alice-example-org-")
