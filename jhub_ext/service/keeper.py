"""A listening socket that never comes free: a small parent holds it and runs the server as its child.

The jobs service is a JupyterHub managed service, which the hub restarts only when it next polls
it (every 30 s). If the service itself held its socket, a crash would free its port for that long,
for any local process to take (and receive the requests, and tokens, meant for the service). So the
hub starts a *keeper*: it binds the port, then runs the service as a child that serves on the
inherited socket (``$JHUB_EXT_LISTEN_FD``), and starts it again at once whenever it ends unasked.
Meanwhile new connections wait in the socket's backlog instead of being refused. SIGTERM and SIGINT
are passed on, and the keeper ends with the child it asked to stop; the child ends with the keeper.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from types import FrameType

#: the environment variable that hands the inherited socket's descriptor to the server
LISTEN_FD = "JHUB_EXT_LISTEN_FD"
#: a run shorter than this counts as a crash in a row (the restarts then wait, doubling)
STABLE_SECONDS = 10.0
#: the longest wait between restarts of a server that keeps crashing, in seconds
MAX_DELAY = 5.0
#: how long a server asked to stop has before it is killed, in seconds
STOP_SECONDS = 20.0

log = logging.getLogger("jhub_ext.keeper")


def inherited_socket(env: Mapping[str, str] = os.environ) -> socket.socket | None:
    """The listening socket a keeper handed down, or None when there is no keeper."""
    fd = env.get(LISTEN_FD)
    if not fd:
        return None
    inherited = socket.socket(fileno=int(fd))
    inherited.setblocking(False)  # an event loop accepts until the socket would block
    return inherited


def restart_delay(crashes: int) -> float:
    """Seconds before starting the server again after ``crashes`` short runs in a row."""
    return 0.0 if crashes <= 1 else min(0.1 * 2 ** (crashes - 2), MAX_DELAY)


class _Child:
    """The server the keeper runs now, and when it must be gone by once the keeper was asked to stop."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.stop_by: float | None = None

    def ask_to_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.stop_by is None:
            self.stop_by = time.monotonic() + STOP_SECONDS
        if self.process is not None:
            self.process.send_signal(signum)

    def wait(self) -> int:
        """Wait for the server to end, killing it once it has outlived the stop it was asked for."""
        assert self.process is not None
        while True:
            try:
                return self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                if self.stop_by is not None and time.monotonic() > self.stop_by:
                    self.process.kill()


def keep(host: str, port: int, command: Sequence[str], env: Mapping[str, str]) -> int:
    """Hold ``host:port`` and run ``command`` (with ``env``) on it until asked to stop; returns the
    exit status of the last run."""
    server = socket.create_server((host, port), backlog=1024)
    server.set_inheritable(True)
    child_env = {**env, LISTEN_FD: str(server.fileno())}
    child = _Child()
    signal.signal(signal.SIGTERM, child.ask_to_stop)
    signal.signal(signal.SIGINT, child.ask_to_stop)
    crashes = 0
    while True:
        started = time.monotonic()
        child.process = subprocess.Popen(list(command), env=child_env, pass_fds=(server.fileno(),))
        if child.stop_by is not None:  # asked while it was being started
            child.process.terminate()
        code = child.wait()
        if child.stop_by is not None:
            return code
        crashes = crashes + 1 if time.monotonic() - started < STABLE_SECONDS else 1
        delay = restart_delay(crashes)
        log.error("The server ended unasked (status %s); starting it again in %gs", code, delay)
        time.sleep(delay)
