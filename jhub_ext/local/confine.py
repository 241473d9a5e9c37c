"""Confinement of a local server or job run: its own control group, PID namespace and network.

Local mode's isolation boundary, when the hub and the jobs service run as root (as Kubernetes
gives each pod a cgroup and namespaces, and jupyterhub-systemdspawner a transient unit):

- a **control group** (:mod:`jhub_ext.local.cgroups`) holds the run's memory, CPUs and process
  count as a whole; its end ends every process in it;
- a **PID namespace**, with ``/proc`` mounted anew inside, so a run sees its own processes only
  (not other users' command lines); a small init is its process 1, forwards SIGTERM and SIGINT to
  the command and ends with it, and the kernel then kills whatever the command left (``nohup``,
  ``setsid``, double forks);
- a **network namespace** connected by pasta (:mod:`jhub_ext.local.netns`): the run cannot bind
  or reach the hub's, the proxy's or the service's ports; only the ports named are forwarded.

The process that sets this up (the *outer*: the jobs runner, or ``python -I -m
jhub_ext.local.confine`` for a server) stays outside, as root: it creates the group and the
namespace, forks the init (the *inner*) and waits for it, passes signals on, and removes both at
the end. If the outer is killed, the inner dies with it (``PR_SET_PDEATHSIG``) and what is left is
removed by :func:`end` (the spawner's stop, the jobs reconciler).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from jhub_ext.local import cgroups, linux, netns
from jhub_ext.local.logfile import note

#: processes a run may have at once unless its profile says otherwise (``resources.max_processes``)
DEFAULT_MAX_PROCESSES = 1024


def exit_status(returncode: int) -> int:
    """Shell convention: a command killed by signal N ends with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class CannotStart(Exception):
    """The command could not be started; the message says why, as the job's log says it."""


def start_as(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    uid: int | None,
    gid: int | None,
    stdout: int,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with exactly ``env`` (None: this process's), in ``cwd``, as ``uid``/``gid``
    with no other groups and umask 077 where ``uid`` is given, its output and errors to ``stdout``."""
    identity: dict[str, object] = {}
    if uid is not None:
        identity = {"user": uid, "group": gid, "extra_groups": [], "umask": 0o077}
    try:
        child: subprocess.Popen[bytes] = subprocess.Popen(  # noqa: S603 - the user's own command
            list(command),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            **identity,  # type: ignore[call-overload]
        )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CannotStart(f"cannot start {command[0]!r}: {reason}") from None
    return child


def forward_signals(
    send: Callable[[int], None], signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Pass ``signals``, when this process gets them, on with ``send``."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        send(signum)

    for signum in signals:
        signal.signal(signum, forward)


#: what the init and a server's outer pass on: a hangup too (a terminal closed on ``confine``)
PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True)
class Confinement:
    """How one server or run is confined: ``name`` names its group and its namespace."""

    name: str
    limits: cgroups.Limits = field(default_factory=cgroups.Limits)
    network: bool = True
    forward_in: tuple[int, ...] = ()
    forward_out: tuple[int, ...] = ()

    def args(self) -> list[str]:
        """This confinement as the outer's command-line options (see :func:`add_arguments`)."""
        out = [f"--confine={self.name}"]
        if self.limits.memory:
            out.append(f"--memory={self.limits.memory}")
        if self.limits.cpus:
            out.append(f"--cpus={self.limits.cpus}")
        if self.limits.tasks:
            out.append(f"--tasks={self.limits.tasks}")
        if not self.network:
            out.append("--shared-network")
        out += [f"--forward-in={p}" for p in self.forward_in]
        out += [f"--forward-out={p}" for p in self.forward_out]
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Confinement | None:
        """The confinement the options parsed into ``args`` describe (None without ``--confine``)."""
        if not args.confine:
            return None
        limits = cgroups.Limits(args.memory, args.cpus, args.tasks)
        return cls(
            args.confine, limits, not args.shared_network, tuple(args.forward_in), tuple(args.forward_out)
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that describe a :class:`Confinement`."""
    parser.add_argument(
        "--confine", metavar="NAME", help="confine the command (needs root): group and namespace name"
    )
    parser.add_argument("--memory", type=int, help="bytes of memory for the whole run")
    parser.add_argument("--cpus", type=float, help="CPUs for the whole run")
    parser.add_argument("--tasks", type=int, help="processes the run may have at once")
    parser.add_argument("--shared-network", action="store_true", help="no network namespace of its own")
    parser.add_argument("--forward-in", type=int, action="append", default=[], metavar="PORT")
    parser.add_argument("--forward-out", type=int, action="append", default=[], metavar="PORT")


# --- what this machine supports ------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """What confinement this machine gives (probed once): the parts and, for admins, what is missing."""

    cgroups: bool
    network: bool
    missing: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """Whether runs are confined at all (a PID namespace and a group at least)."""
        return self.cgroups

    def note(self) -> str | None:
        """What admins should know, or None when runs are fully confined."""
        if not self.missing:
            return None
        return "Local isolation is partial: " + "; ".join(self.missing) + "."


@functools.cache
def support() -> Support:
    """Probe, as this process, what confinement works here: a test group, a test namespace."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return Support(False, False, ("not running as root: no control groups or namespaces",))
    missing: list[str] = []
    layout = cgroups.layout()
    lacking = layout.missing()
    if lacking:
        missing.append(f"the kernel offers no {', '.join(lacking)} controller (no such limit applies)")
    try:
        probe = layout.group(f"probe-{os.getpid()}")
        probe.create(cgroups.Limits())
        probe.remove()
        has_groups = True
    except OSError as e:
        missing.append(f"cannot create control groups ({e}): give the hub a delegated cgroup")
        has_groups = False
    why_not = netns.available()
    if why_not is None:
        try:
            netns.Network(f"jhub-probe-{os.getpid()}").close()
        except (netns.NetnsError, OSError) as e:
            why_not = str(e)
    if why_not is not None:
        missing.append(f"no network namespaces ({why_not}): runs share the machine's network")
    return Support(has_groups, has_groups and why_not is None, tuple(missing))


# --- the outer and the inner ---------------------------------------------------------------------


def end(name: str) -> None:
    """Kill and remove what is left of the confinement ``name``: its group and its namespace."""
    cgroups.layout().group(name).remove()
    netns.delete(name)


class Confined:
    """A command started confined: :attr:`pid` is its init's (in this process's PID namespace)."""

    def __init__(
        self,
        confinement: Confinement,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
        uid: int | None,
        gid: int | None,
        stdout: int,
    ):
        self.confinement = confinement
        self.group = cgroups.layout().group(confinement.name)
        self.group.create(confinement.limits)
        self.network: netns.Network | None = None
        try:
            if confinement.network:  # the caller probed (support()) and decided
                self.network = netns.Network(
                    confinement.name, confinement.forward_in, confinement.forward_out
                )
            # every child of this process from now on is in the run's PID namespace; nothing else
            # is forked here after it (the init is the last child)
            linux.unshare(linux.CLONE_NEWPID)
        except BaseException:
            self._close()
            raise
        self.pid = os.fork()
        if self.pid == 0:
            net_path = self.network.path if self.network is not None else None
            _inner(self.group, net_path, command, env, cwd, uid=uid, gid=gid, stdout=stdout)

    def send_signal(self, signum: int) -> None:
        """Pass ``signum`` to the init, which passes it to the command."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def wait(self) -> int:
        """Wait for the run to end (its init, the command, then everything in the namespace) and
        remove its group and namespace; returns the exit status (128 + N for signal N)."""
        _, status = os.waitpid(self.pid, 0)
        self.oom_kills = self.group.oom_kills()
        self._close()
        return exit_status(os.waitstatus_to_exitcode(status))

    oom_kills = 0

    def _close(self) -> None:
        if self.network is not None:
            self.network.close()
        end(self.confinement.name)


def _inner(
    group: cgroups.Cgroup,
    net_path: Path | None,
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None,
    *,
    uid: int | None,
    gid: int | None,
    stdout: int,
) -> None:
    """Process 1 of the run's PID namespace: enter the group and the network, mount ``/proc`` for the
    namespace, start the command as ``uid``/``gid``, pass signals on, reap, and end with it."""
    status = 127
    try:
        linux.die_with_parent(signal.SIGKILL)
        group.join()
        if net_path is not None:
            linux.setns(net_path, linux.CLONE_NEWNET)
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        try:
            child = start_as(command, env=env, cwd=cwd, uid=uid, gid=gid, stdout=stdout)
        except CannotStart as e:
            os.write(stdout, note(str(e)))
            os._exit(127)

        def kill(signum: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)  # not send_signal: it may reap the child here

        forward_signals(kill, PASSED_ON)
        while True:
            pid, wait_status = os.waitpid(-1, 0)
            if pid == child.pid:
                status = exit_status(os.waitstatus_to_exitcode(wait_status))
                break
    except BaseException as e:  # nothing may return to the outer's code in this process
        with contextlib.suppress(BaseException):
            os.write(stdout, note(f"cannot confine the run: {e}"))
    finally:
        os._exit(status)  # the kernel ends every other process of the namespace


def main(argv: list[str]) -> int:
    """``python -I -m jhub_ext.local.confine --confine=NAME [options] -- COMMAND...``: run a
    server (or any command) confined, with this process's environment; ends with its status."""
    parser = argparse.ArgumentParser(prog="python -I -m jhub_ext.local.confine")
    add_arguments(parser)
    parser.add_argument("--user", type=int, help="run the command as this uid")
    parser.add_argument("--group", type=int, help="... and this gid, with no other groups")
    parser.add_argument("--cwd")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    confinement = Confinement.from_args(args)
    if confinement is None:
        parser.error("--confine is required")
    run = Confined(
        confinement,
        args.command,
        env=os.environ,
        cwd=args.cwd,
        uid=args.user,
        gid=args.group,
        stdout=sys.stdout.fileno(),
    )

    forward_signals(run.send_signal, PASSED_ON)
    return run.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
