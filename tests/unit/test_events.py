"""One events seam: what happens to jobs reaches every observer, in order, after the store has it;
a failing observer stops nothing; an observation the store refuses reaches no one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from jhub_ext.core.events import Dropped, Event, Events, Happened, Subject, resolve_observers
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import JobStore

from .managers import ALICE, FakeBackend, Make, batch


def event(happened: Happened = Happened.STARTED) -> Event:
    return Event(Subject.JOB, happened, "alice", "news")


async def test_observers_are_called_in_order_and_a_failing_one_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[str] = []

    def first(e: Event) -> None:
        heard.append("first")

    def broken(e: Event) -> None:
        raise RuntimeError("the mail server is down")

    async def last(e: Event) -> None:
        heard.append(f"last:{e.happened}")

    with caplog.at_level(logging.ERROR):
        assert await Events([first, broken, last]).publish(event()) is True
    assert heard == ["first", "last:started"]
    assert "the mail server is down" in caplog.text and "broken" in caplog.text


async def test_an_observer_that_drops_an_event_ends_it_there() -> None:
    heard: list[Event] = []

    def recorder(e: Event) -> None:
        raise Dropped

    events = Events([recorder])
    events.subscribe(heard.append)
    assert await events.publish(event()) is False and heard == []


class Counter:
    """An observer given as a class: made with no arguments."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, e: Event) -> None:
        self.events.append(e)


def test_observers_are_named_by_import_strings_and_a_bad_one_is_left_out_with_the_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        found = resolve_observers(
            [f"{__name__}.Counter", "no.such.module.notify", f"{__name__}.ALICE", print],
            "c.JobsService.event_observers",
        )
    assert isinstance(found[0], Counter) and found[1] is print and len(found) == 2
    assert caplog.text.count("c.JobsService.event_observers") >= 2
    assert "no.such.module.notify" in caplog.text and "not callable" in caplog.text


@pytest.fixture
def heard() -> list[Event]:
    return []


@pytest.fixture
def manager(make: Make, store: JobStore, heard: list[Event]) -> JobManager:
    def observer(e: Event) -> None:  # what the store says when an observer hears of the event
        record = store.get(e.user, e.name)
        heard.append(e)
        assert record is None or e.happened is Happened.DELETED or record.status == e.status

    broken: Any = lambda e: 1 / 0  # noqa: E731 - an observer that always fails
    return make(events=Events([broken, observer]))


async def test_a_jobs_life_reaches_the_observers_after_the_store_has_it(
    manager: JobManager, backend: FakeBackend, heard: list[Event]
) -> None:
    await manager.submit(ALICE, batch("news", profile="small"))
    await backend.report("alice", "news", JobStatus.PENDING, message="waiting for room")
    await backend.report("alice", "news", JobStatus.RUNNING)
    await backend.report("alice", "news", JobStatus.RUNNING)  # nothing new: nothing published
    await backend.report("alice", "news", JobStatus.FAILED, exit_code=3, message="exited with code 3")
    await manager.restart(ALICE, "alice", "news")
    await manager.delete(ALICE, "alice", "news")
    assert [(e.happened, e.status, e.actor) for e in heard] == [
        (Happened.SUBMITTED, JobStatus.PENDING, "alice"),
        (Happened.WAITING, JobStatus.PENDING, None),
        (Happened.STARTED, JobStatus.RUNNING, None),
        (Happened.ENDED, JobStatus.FAILED, None),
        (Happened.RESTARTED, JobStatus.PENDING, "alice"),
        (Happened.DELETED, JobStatus.PENDING, "alice"),
    ]
    waiting, ended = heard[1], heard[3]
    assert waiting.message == "waiting for room"
    assert (ended.exit_code, ended.message) == (3, "exited with code 3")
    assert all(
        (e.subject, e.user, e.name, e.kind, e.profile, e.groups)
        == (Subject.JOB, "alice", "news", "batch", "small", ALICE.groups)
        for e in heard
    )


async def test_an_observation_after_a_stop_is_out_of_date_and_reaches_no_one(
    manager: JobManager, backend: FakeBackend, store: JobStore, heard: list[Event]
) -> None:
    await manager.submit(ALICE, batch("news"))
    await manager.stop(ALICE, "alice", "news")
    await backend.report("alice", "news", JobStatus.RUNNING)  # a watch that had not caught up
    assert [(e.happened, e.status, e.actor) for e in heard] == [
        (Happened.SUBMITTED, JobStatus.PENDING, "alice"),
        (Happened.ENDED, JobStatus.STOPPED, "alice"),
    ]
    record = store.get("alice", "news")
    assert record is not None and record.status is JobStatus.STOPPED
