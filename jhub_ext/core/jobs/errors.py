"""The jobs domain's refusals: what is wrong and which field to fix, with no HTTP in them.

The API maps each kind to its status in one place (:data:`jhub_ext.service.handlers.STATUS_OF`).
"""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """A request the service refuses; ``field`` names what to fix, ``retry_after`` when to try again,
    ``reason`` (a :class:`~jhub_ext.core.jobs.reasons.Reason` code) why, where a code says it."""

    def __init__(
        self,
        message: str,
        field: str | None = None,
        retry_after: int | None = None,
        reason: str | None = None,
    ):
        self.field = field
        self.retry_after = retry_after  # seconds
        self.reason = reason
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        """The refusal as the API sends it."""
        body: dict[str, Any] = {"error": str(self), "field": self.field}
        if self.reason:
            body["reason"] = self.reason
        return body


class Invalid(Refusal):
    """The request is malformed, or asks for what would fail later."""


class NotLoggedIn(Refusal):
    """The request carries no valid token or session."""


class NotAllowed(Refusal):
    """The caller may not do this: another user's job, another group's profile, a full quota."""


class NoSuchJob(Refusal):
    """The caller (or the user an admin named) has no job of that name."""


class Conflict(Refusal):
    """The job's name is taken, or the job cannot run any more as it was submitted."""


class TooLarge(Refusal):
    """The request's body is larger than the service takes."""


class TooMany(Refusal):
    """Over a rate limit; ``retry_after`` says when to try again."""


class Unavailable(Refusal):
    """The hub or the cluster does not answer; nothing was changed."""
