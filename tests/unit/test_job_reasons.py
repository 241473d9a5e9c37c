"""Reasons are part of the API: every code is documented, in openapi.yaml and for researchers."""

from __future__ import annotations

import re

from jhub_ext.core.catalog import load_catalog
from jhub_ext.core.catalog.model import Kind
from jhub_ext.core.catalog.quantities import format_memory
from jhub_ext.core.jobs.reasons import Reason, more_memory_hint, parse_reason, with_last_lines
from jhub_ext.service.handlers import openapi_document

from ..conftest import ROOT, SHIPPED_CATALOG


def test_every_reason_is_in_the_openapi_document_and_nothing_else() -> None:
    schema = openapi_document()["components"]["schemas"]["Job"]["properties"]["reason"]
    assert set(schema["enum"]) == {reason.value for reason in Reason} | {None}


def test_every_reason_is_explained_to_researchers() -> None:
    page = (ROOT / "docs" / "reference" / "job-reasons.md").read_text()
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", page, re.M))
    assert documented == {reason.value for reason in Reason}


def test_a_stored_code_this_release_does_not_know_reads_as_none() -> None:
    assert parse_reason("out-of-memory") is Reason.OUT_OF_MEMORY
    assert parse_reason("from-a-later-release") is None
    assert parse_reason(None) is None and parse_reason("") is None


def test_a_run_out_of_memory_is_told_the_next_profile_with_more_that_its_owner_may_use() -> None:
    catalog = load_catalog(SHIPPED_CATALOG)
    researchers = frozenset({"researchers"})
    assert more_memory_hint(catalog, "small", researchers, Kind.JOB) == (
        "Small has 4 GiB; Large memory has 32 GiB: submit it again with --profile large-memory"
    )
    largest = catalog.profile("large-memory")
    assert largest is not None
    assert more_memory_hint(catalog, "large-memory", researchers, Kind.JOB) == (
        f"Large memory has {format_memory(largest.resources.memory)}, the most you may use: ask an admin"
    )
    assert more_memory_hint(catalog, None, researchers, Kind.JOB) == "choose a profile with more memory"


def test_a_job_that_failed_is_told_with_the_last_lines_it_printed() -> None:
    log = "starting\n\n  reading input.csv\nTraceback (most recent call last):\nKeyError: 'date'\n\n"
    assert with_last_lines("exited with code 1 (1 attempt)", log) == (
        "exited with code 1 (1 attempt); it last printed: reading input.csv | "
        "Traceback (most recent call last): | KeyError: 'date'"
    )
    assert with_last_lines("exited with code 1 (1 attempt)", "\n \n") == "exited with code 1 (1 attempt)"
    long = with_last_lines("m", "x" * 1000)
    assert long == "m; it last printed: " + "x" * 159 + "…"
