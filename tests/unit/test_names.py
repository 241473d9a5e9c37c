"""Names made from users' input (jhub_ext.core.names): one per exact input, valid wherever used, and
the same as the names of what exists already.

(The API server's own check of object names runs in tests/integration/test_kube_jobs.py.)"""

from __future__ import annotations

import re

import pytest

from jhub_ext.core.names import (
    account_name,
    label_value,
    object_name,
    output_subdir,
    server_confinement,
    user_dir,
    user_of_dir,
)

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


#: names of what exists already (accounts, objects, directories, control groups), as made before
#: the rules moved to one module: a rule that changes any of these needs a migration
#: user, object_name(user, "news-scraper"), output_subdir, account_name, server_confinement(user, ""),
#: label_value
PINNED = [
    (
        "alice",
        "alice-news-scraper-d29ea802cd0d598a",
        "alice-2bd806c97f0e00af",
        "jupyter-alice",
        "srv-bfebef88e4b36874",
        "alice",
    ),
    (
        "Alice",
        "alice-news-scraper-d91779b96f56a9a9",
        "alice-3bc51062973c458d",
        "jupyter-alice_3bc51062973c458d",
        "srv-634e9b99727edfa4",
        "Alice",
    ),
    (
        "alice.x",
        "alice-x-news-scraper-fcb12e73ad7c6b21",
        "alice-x-25206cb344cc4218",
        "jupyter-alice-x_25206cb344cc4218",
        "srv-e1e7c5984117602d",
        "alice.x",
    ),
    (
        "Jürgen.Müller@uni-köln.de",
        "j-rgen-m-lle-news-scraper-34923731377dac96",
        "j-rgen-m-ller-uni-k-ln-de-22487a26d572fc0c",
        "jupyter-j-rgen-_22487a26d572fc0c",
        "srv-4aa36c3c31bc3179",
        "J-rgen.M-ller-uni-k-ln.de",
    ),
    (
        "a" * 200,
        "aaaaaaaaaaaa-news-scraper-36e356243a560e28",
        "a" * 40 + "-c2a908d98f5df987",
        "jupyter-aaaaaaa_c2a908d98f5df987",
        "srv-42069f2b626980a6",
        "a" * 63,
    ),
    (
        "...",
        "u-news-scraper-069beb99ca9f0738",
        "u-ab5df625bc76dbd4",
        "jupyter-_ab5df625bc76dbd4",
        "srv-2c2b93ab063d64d7",
        "x",
    ),
    (
        "用户",
        "u-news-scraper-876990e5414b1ff2",
        "u-0d0e1a86b3aa7877",
        "jupyter-_0d0e1a86b3aa7877",
        "srv-dd0ace043b86085b",
        "x",
    ),
    (
        "abcdef-ghi jk",
        "abcdef-ghi-j-news-scraper-bef2500462d7203c",
        "abcdef-ghi-jk-7e8cf9f015cb1e98",
        "jupyter-abcdef-_7e8cf9f015cb1e98",
        "srv-07115367b8997580",
        "abcdef-ghi-jk",
    ),
    (
        "x\u200by",
        "x-y-news-scraper-d4c671ca4f3a120d",
        "x-y-2d1f7ee9bcd94bc9",
        "jupyter-x-y_2d1f7ee9bcd94bc9",
        "srv-f82e516a371a2fb7",
        "x-y",
    ),
    (
        "İstanbul",
        "i-stanbul-news-scraper-73afe21665770514",
        "i-stanbul-24ec8f72b5eac459",
        "jupyter-i-stanb_24ec8f72b5eac459",
        "srv-31473ce8887a6a1d",
        "stanbul",
    ),
]


@pytest.mark.parametrize("pinned", PINNED, ids=lambda row: repr(row[0][:20]))
def test_every_name_is_the_one_that_exists_already(pinned: tuple[str, ...]) -> None:
    user = pinned[0]
    made = (
        object_name(user, "news-scraper"),
        output_subdir(user),
        account_name(user),
        server_confinement(user, ""),
        label_value(user),
    )
    assert made == pinned[1:]


@pytest.mark.parametrize("user", [*USERS, "u-x", "a/b", "../..", "%2F", ""])
def test_a_users_directory_is_one_path_component_and_says_whose_it_is(user: str) -> None:
    directory = user_dir(user)
    assert "/" not in directory and directory not in (".", "..")
    assert user_of_dir(directory) == user
    assert user_of_dir(user) is None or user.startswith("u-")
