"""A stand-in for jupyterhub-singleuser in spawn benchmarks: answers HTTP where the hub expects the server.

200 real JupyterLab servers would measure Python start-up on two cores, not the spawner. This
listens on the host and port of $JUPYTERHUB_SERVICE_URL (the pod IP, as the emulated kubelet
rewrites it) and answers 200 to everything, which is all the hub checks before calling a
server ready.
"""

from __future__ import annotations

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    ThreadingHTTPServer((url.hostname or "127.0.0.1", url.port or 8888), Ok).serve_forever()


if __name__ == "__main__":
    main()
