"""Processes tied to the hub: they end when the process that started them ends (Linux only).

The hub starts the proxy and the jobs service as processes of their own, and stops them when it
shuts down cleanly. A hub stopped during its start-up, or killed, cannot: they would stay, holding
their ports, and the next start would fail. :func:`die_with_parent` asks the kernel to send a
signal when the parent goes (``PR_SET_PDEATHSIG``), and checks that the parent has not gone
already. Run as ``python -m jhub_ext.local.tied PARENT_PID COMMAND...`` it does that, then
becomes ``COMMAND`` (the setting survives ``exec``), which is how the proxy is started.

Job runners are not tied: they outlive the service on purpose, and its next start re-adopts them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Get ``sig`` when the process ``parent`` (this one's parent) ends; at once if it has already."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it went before the kernel was asked to tell us
        os.kill(os.getpid(), sig)


def main(argv: list[str] | None = None) -> None:
    """``tied PARENT_PID COMMAND...``: tie this process to ``PARENT_PID``, then run ``COMMAND``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or not args[0].isdigit():
        sys.exit("usage: python -m jhub_ext.local.tied PARENT_PID COMMAND [ARGS...]")
    die_with_parent(int(args[0]))
    os.execvp(args[1], args[1:])  # noqa: S606 - becoming the given command is the point


if __name__ == "__main__":
    main()
