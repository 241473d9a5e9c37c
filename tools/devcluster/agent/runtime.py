"""How the node agent runs one container as a local process, in place of a container runtime.

- Nothing is downloaded: every image maps to the local Python environment (its ``bin`` first on
  ``PATH``); the image name is recorded in the container's status. An image's default command,
  where a container names none, comes from the agent's configuration.
- Pulls are played as a kubelet makes them (:mod:`.images`): each node keeps the set of images it
  has pulled (in the agent's state directory, so it outlasts a restart of the agent), and before
  each start of a container its ``imagePullPolicy`` is applied (defaulted as the API server does),
  with the kubelet's events on the container (``Pulling``, ``Pulled``, ``Failed``, ``BackOff``,
  ``ErrImageNeverPull``) and waiting reasons (``ContainerCreating`` while pulling, ``ErrImagePull``,
  ``ImagePullBackOff``, ``ErrImageNeverPull``). A pull takes the ``pull_seconds`` of the image's
  entry in the configuration (default 0) or, where the entry says ``missing``, fails as "not
  found" and is retried with the restart back-off; the pod stays Pending meanwhile.
- Volumes are directories under the pod's directory (PersistentVolumeClaims under the agent's, so
  they outlive pods). Without mount namespaces a mount cannot appear at its ``mountPath``, so the
  agent rewrites every mount path wherever it stands in the command, the arguments (a shell
  command line included), ``workingDir`` and env values into the local directory. Paths written
  inside files a container reads are not rewritten: jobs find their directories in env variables.
- A pod shares the machine's network; it gets an address of its own on the loopback range
  (127.x.y.z), and a bind to 0.0.0.0 in arguments or env values is rewritten to it.
- Output goes through pipes into a CRI-format log file (``<RFC3339Nano time> <stream> F <line>``),
  one file per container restart, served back by the agent's log server.
- Where the agent runs as root, the process runs as the pod's ``runAsUser``/``runAsGroup``, with
  ``fsGroup`` and ``supplementalGroups`` as supplementary groups; volumes are given to ``fsGroup``.
- Memory over the container's limit ends it as ``OOMKilled`` (exit code 137), measured as the
  resident size of its process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Json = dict[str, Any]
PR_SET_PDEATHSIG = 1
DEFAULT_UID = 1000  # the jupyter images' user (jovyan), when a pod names none
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def now_rfc3339(precise: bool = False) -> str:
    """The current UTC time in RFC 3339, to the second or (``precise``) to the microsecond."""
    moment = datetime.datetime.now(datetime.UTC)
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables are replaced, $$ is a literal $."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(one, text)


@dataclass
class Mounts:
    """Container paths -> local directories."""

    paths: dict[str, Path] = field(default_factory=dict)
    _pattern: re.Pattern[str] | None = None

    def add(self, container_path: str, local: Path) -> None:
        """Mount ``local`` at ``container_path``; a longer mount path wins over one it lies under."""
        self.paths[container_path.rstrip("/") or "/"] = local
        longest_first = sorted(self.paths, key=len, reverse=True)
        alternatives = "|".join(re.escape(p) for p in longest_first)
        self._pattern = re.compile(r"(?<![\w.\-/])(" + alternatives + r")(?![\w.\-])")

    def rewrite(self, text: str) -> str:
        """Every mount path in ``text`` (a path, a flag's value, a shell command line) made local."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: str(self.paths[m.group(1)]), text)


def rewrite_value(text: str, mounts: Mounts, pod_ip: str) -> str:
    """A command-line word or env value as the local process must see it."""
    return mounts.rewrite(text.replace("0.0.0.0", pod_ip))  # noqa: S104 - rewritten, not bound


def _pdeathsig() -> None:
    """In the child: die with the agent, as a node's containers stop when the node does."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Identity:
    """The user, group and supplementary groups a container's process runs as (``None``: ours)."""

    uid: int | None
    gid: int | None
    groups: list[int]


def identity(pod: Json, container: Json) -> Identity:
    """Who the container runs as (only applied where the agent is root)."""
    pod_context = pod["spec"].get("securityContext") or {}
    context = {**pod_context, **(container.get("securityContext") or {})}
    if os.geteuid() != 0:
        return Identity(None, None, [])
    uid = int(context.get("runAsUser", DEFAULT_UID))
    gid = int(context.get("runAsGroup", pod_context.get("fsGroup", 100)))
    groups = [int(g) for g in pod_context.get("supplementalGroups") or []]
    if "fsGroup" in pod_context:
        groups.append(int(pod_context["fsGroup"]))
    return Identity(uid, gid, sorted(set(groups)))


def give(path: Path, who: Identity, mode: int) -> None:
    """Make a directory the container's, as the kubelet applies fsGroup to volumes."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and who.uid is not None:
        group = who.groups[-1] if who.groups else who.gid
        os.chown(path, who.uid, group if group is not None else -1)
    path.chmod(mode)


class LogWriter:
    """Copies a process's stdout and stderr into one CRI-format log file, line by line."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("ab", buffering=0)

    async def pump(self, stream: asyncio.StreamReader, name: str) -> None:
        """Copy ``stream`` (``stdout`` or ``stderr``) into the log until it ends, a stamped line at a time.

        A line too long for the reader's buffer is written in pieces marked partial, as the CRI does.
        """
        prefix_name = name.encode()
        while True:
            try:
                line = await stream.readuntil(b"\n")
                tag = b"F"
            except asyncio.IncompleteReadError as e:
                line, tag = e.partial, b"F"
                if not line:
                    return
            except asyncio.LimitOverrunError as e:
                line, tag = await stream.readexactly(e.consumed), b"P"
            stamp = now_rfc3339(precise=True).encode()
            body = line[:-1] if line.endswith(b"\n") else line
            self.file.write(b" ".join((stamp, prefix_name, tag, body)) + b"\n")

    def note(self, text: str) -> None:
        """A line from the agent itself (why a container could not start, and so on)."""
        stamp = now_rfc3339(precise=True).encode()
        self.file.write(stamp + b" stderr F " + text.encode() + b"\n")

    def close(self) -> None:
        """Close the log file."""
        self.file.close()


def group_rss(pgid: int) -> int:
    """Resident bytes of all processes in a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after the name: state ppid pgrp ...
                continue
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss in pages
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass
class Running:
    """A started container process."""

    process: asyncio.subprocess.Process
    log: LogWriter
    pumps: list[asyncio.Task[None]]
    started_at: str
    oom_killed: bool = False

    async def wait(self, memory_limit: int | None, on_tick: Callable[[], None] | None = None) -> int:
        """The exit code, 128+signal for a signal, 137 after an OOM kill."""
        while True:
            try:
                code = await asyncio.wait_for(asyncio.shield(self.process.wait()), 0.5)
                break
            except TimeoutError:
                if memory_limit and group_rss(self.process.pid) > memory_limit:
                    self.oom_killed = True
                    self.kill(signal.SIGKILL)
                if on_tick is not None:
                    on_tick()
        for pump in self.pumps:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump, 2)
        self.log.close()
        return 128 - code if code < 0 else code

    def kill(self, signum: int) -> None:
        """Send ``signum`` to the container's whole process group, if it is still there."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


async def start_process(
    command: list[str], env: dict[str, str], cwd: Path, log: LogWriter, who: Identity
) -> Running:
    """Start a container's process in a session of its own, its output piped into ``log``."""
    kwargs: dict[str, Any] = {}
    if who.uid is not None:
        kwargs = {"user": who.uid, "group": who.gid, "extra_groups": who.groups}
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_pdeathsig,  # noqa: PLW1509 - only calls prctl
        limit=1 << 20,
        **kwargs,
    )
    assert process.stdout is not None and process.stderr is not None
    pumps = [
        asyncio.create_task(log.pump(process.stdout, "stdout")),
        asyncio.create_task(log.pump(process.stderr, "stderr")),
    ]
    return Running(process, log, pumps, now_rfc3339())


def python_environment() -> Path:
    """The local environment that stands in for every image."""
    return Path(sys.prefix)
