"""When a scheduled job may run: the cron grammar and the time zones Kubernetes takes, for both modes.

A Kubernetes CronJob's ``schedule`` is read by robfig/cron's standard parser, and its ``timeZone`` must
be a name of the tz database. The local backend computes runs itself (with croniter, which takes more:
a weekday 7, reversed ranges, any step), so the service checks every submission here, whatever the
mode: what one mode runs, the other runs too, and what one refuses, both refuse, with the same words.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from zoneinfo import available_timezones

from croniter import croniter

#: robfig/cron's descriptors (Kubernetes also takes ``@every``, which no cron line can say: left out)
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@functools.cache
def _fields() -> tuple[tuple[str, int, int, dict[str, int]], ...]:
    """Each field's name, range and names, as robfig/cron's standard parser has them."""
    return (
        ("minute", 0, 59, {}),
        ("hour", 0, 23, {}),
        ("day of month", 1, 31, {}),
        ("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, start=1)}),
        ("day of week", 0, 6, {name: number for number, name in enumerate(_WEEKDAYS)}),
    )


#: the largest integer robfig/cron reads (Go's int on the 64-bit machines Kubernetes runs on)
_GO_INT_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]+")


class CronError(ValueError):
    """Why a cron line is not one Kubernetes would take (a part of the message :func:`parse_cron` gives)."""


def _number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not _DIGITS.fullmatch(text) or int(text) > _GO_INT_MAX:
        raise CronError(f"'{text[:20]}' is not a number{' or a name' if names else ''}")
    return int(text)


def _check_item(item: str, field: tuple[str, int, int, dict[str, int]]) -> None:
    """One item of a field's comma list: ``*``/``?``, a value or a range, each with an optional ``/step``."""
    name, low, high, names = field
    range_text, *steps = item.split("/")
    if len(steps) > 1:
        raise CronError(f"'{item[:20]}' has two steps")
    if range_text in ("*", "?"):
        if range_text == "?" and name not in ("day of month", "day of week"):
            raise CronError("'?' is for the day of month or of week only")
        start, end = low, high
    else:
        bounds = range_text.split("-")
        if len(bounds) > 2:
            raise CronError(f"'{range_text[:20]}' is not a range")
        start = _number(bounds[0], names)
        end = _number(bounds[1], names) if len(bounds) == 2 else start
    if steps and (not _DIGITS.fullmatch(steps[0]) or not 0 < int(steps[0]) <= _GO_INT_MAX):
        raise CronError(f"the step '{steps[0][:20]}' is not a whole number above 0")
    if start < low or end > high:
        raise CronError(f"the {name} goes from {low} to {high}")
    if start > end:
        raise CronError(f"the range '{range_text[:20]}' runs backwards")


def parse_cron(value: Any) -> str:
    """A cron line Kubernetes' CronJob takes, with its whitespace made single; else ValueError saying
    what is wrong and what to write instead."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError('a scheduled job needs a cron schedule such as "0 6 * * *" (06:00 daily)')
    cron = " ".join(value.split())
    if cron in CRON_MACROS:
        return cron
    fields = cron.split(" ")
    try:
        if len(fields) != 5:
            raise CronError(f"it has {len(fields)} fields, not five")
        for text, field in zip(fields, _fields(), strict=True):
            for item in text.split(","):
                _check_item(item, field)
        if not croniter.is_valid(cron):  # the local backend must be able to compute its runs
            raise CronError("it cannot be computed")
    except CronError as e:
        shown = cron[:70].encode("unicode_escape").decode()
        raise ValueError(
            f"'{shown}' is not a cron schedule ({e}); use five fields (minute hour day month weekday, "
            'the weekday from 0 = Sunday to 6) such as "*/30 * * * *" or "0 6 * * 1-5", or @hourly/@daily'
        ) from None
    return cron


#: names the tz database's zone files carry that are no place's time zone (the machine's own
#: ``localtime``, ``Factory``'s placeholder), which Kubernetes refuses
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def time_zones() -> frozenset[str]:
    """The tz database's zone names, as a CronJob's ``timeZone`` takes them."""
    return frozenset(available_timezones()) - _NOT_ZONES


def parse_timezone(timezone: Any) -> str:
    """A time zone name of the tz database (as Kubernetes' CronJob ``timeZone`` takes), or UTC; else
    ValueError."""
    if timezone is None or timezone == "":
        return "UTC"
    if isinstance(timezone, str) and timezone in time_zones():
        return timezone
    shown = str(timezone)[:70].encode("unicode_escape").decode()
    raise ValueError(f"'{shown}' is not a time zone; use a tz database name such as Europe/Berlin or UTC")
