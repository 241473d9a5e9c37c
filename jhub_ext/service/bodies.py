"""Request bodies of the jobs service, bounded while they arrive: kept up to 1 MiB, else a JSON 413."""

from __future__ import annotations

import json
from typing import Any

from tornado import web
from tornado.concurrent import Future

from jhub_ext.core.jobs.errors import TooLarge

MAX_BODY_BYTES = 1024 * 1024
#: An oversized body is read to its end and dropped (never kept) before its 413, so the answer reaches
#: the client through the proxy and the connection stays usable. Past this many bytes the 413 is sent
#: and the connection closed instead, so one request cannot keep the service reading for ever.
DRAIN_BODY_BYTES = 64 * MAX_BODY_BYTES
#: handlers that are not streaming (none of the service's own) buffer bodies up to this
READ_BODY_BYTES = MAX_BODY_BYTES


def body_too_large() -> TooLarge:
    """The 413 refusal for a request body past :data:`MAX_BODY_BYTES`."""
    return TooLarge(f"the request is larger than {MAX_BODY_BYTES // 1024} KiB; ship less code", "files")


@web.stream_request_body
class BoundedBody(web.RequestHandler):
    """Request bodies counted as they arrive and kept only up to :data:`MAX_BODY_BYTES`.

    A body past that is read to its end and dropped, and then answered with a JSON 413: the proxy
    passes an answer on only once it has sent the whole request (an answer cut off by a reset
    connection becomes its own 503). A body past :data:`DRAIN_BODY_BYTES` is answered at once (if
    its length says so) or when it gets there, and the connection is then closed. Whatever the
    method, it is not run. No body is ever buffered whole.
    """

    body: bytearray
    body_too_large = False
    discarding = False  # a refusal waits for the body's end (see refuse_after_body)
    body_seen = 0
    answered: Future[None] | None = None

    def initialize(self) -> None:
        """Start each request with an empty body buffer."""
        self.body = bytearray()

    def prepare(self) -> Any:
        """Mark a body announced too large; answer at once one that will not be read to its end."""
        # tornado's own limit (which cuts the connection) is lifted: data_received keeps the bound
        self.request.connection.set_max_body_size(2**62)  # type: ignore[union-attr]
        length = self.request.headers.get("Content-Length", "0")
        known = length.isascii() and length.isdigit()
        if not known or int(length) > MAX_BODY_BYTES:
            self.drop_body()
        if not known or int(length) > DRAIN_BODY_BYTES:
            self.answer_too_large()
        return None

    def data_received(self, chunk: bytes) -> None:
        """Keep each arriving piece of the body until it passes :data:`MAX_BODY_BYTES`."""
        self.body_seen += len(chunk)
        if self.body_seen > DRAIN_BODY_BYTES:
            connection = self.request.connection
            self.answer_too_large().add_done_callback(lambda _: connection.close())  # type: ignore[union-attr]
        elif self.body_too_large or self.discarding:
            return
        elif len(self.body) + len(chunk) > MAX_BODY_BYTES:
            self.drop_body()
        else:
            self.body += chunk

    def refuse_after_body(self, error: Exception) -> None:
        """Answer with ``error`` once the body has arrived, read and dropped: an answer sent while
        the client is still sending reaches it through the proxy as a reset connection (the proxy's
        own 503), not as this answer. Nothing of the body is kept; whatever the method, it is not run.
        """
        self.discarding = True
        self.body.clear()

        def refuse(*args: str) -> None:
            raise error

        setattr(self, (self.request.method or "get").lower(), refuse)

    def drop_body(self) -> None:
        """Keep nothing more of the body; the request's method, once it has all arrived, answers 413."""
        self.body_too_large = True
        self.body.clear()
        # whatever the method (tornado calls it once the body has been read), it only answers 413
        setattr(self, (self.request.method or "get").lower(), self._end_refusal)

    def flush(self, include_footers: bool = False) -> Future[None]:
        """Send what is written so far. An answer that starts before tornado has read the request
        to its end (a refusal in ``prepare``, or tornado's own 405) is the connection's last: tornado
        closes it after the answer. The answer then says so (``Connection: close``), so a client
        that keeps connections open, such as the hub's proxy, never sends its next request into
        the closing one, which it would pass on as its own 503."""
        if not self.request._body_future.done():
            self.set_header("Connection", "close")
        return super().flush(include_footers)

    def answer_too_large(self) -> Future[None]:
        """Send the 413 (once), before the request has been read to its end: its length is known."""
        if self.answered is None:
            answer = json.dumps(body_too_large().to_json()).encode()
            self.clear()
            self.set_status(413)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.set_header("Content-Length", str(len(answer)))
            self.write(answer)
            self.answered = self.flush()
        return self.answered

    def _end_refusal(self, *args: str) -> None:
        self.answer_too_large()
        self.finish()
