"""A real webhook receiver for the tests: an HTTP server on loopback that keeps what it is sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Posts:
    """What a real webhook receiver was sent, by path."""

    def __init__(self) -> None:
        self.by_path: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def texts(self, path: str) -> list[str]:
        with self.lock:
            return [post["text"] for post in self.by_path.get(path, [])]


def receiver(posts: Posts) -> ThreadingHTTPServer:
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with posts.lock:
                posts.by_path.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def webhook_receiver() -> Iterator[tuple[Posts, int]]:
    """A receiver running on a free loopback port: what it was sent, and its port."""
    found = Posts()
    server = receiver(found)
    try:
        yield found, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
