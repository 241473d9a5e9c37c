"""Control groups for local servers and job runs: their memory, CPUs and process count as a whole.

Each server and each run of a job gets a group of its own under the root ``jhub_ext`` (see
:mod:`jhub_ext.local.confine`), in the hierarchy that holds each controller: cgroup v2 where
the unified hierarchy has it (``memory.max``, ``cpu.max``, ``pids.max``, ``cgroup.kill``), else a
v1 hierarchy (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, ``pids.max``, the ``freezer``), as
machines with both ("hybrid") mount them. Writing a group needs root; :func:`layout` says which
controllers this machine offers and :meth:`Layout.missing` which it does not, for the admins' note.

The limits hold for the whole group: a run's processes share its memory and CPUs and cannot fork
past its process limit; an out-of-memory kill is counted by the kernel (``oom_kill``), so the run
reads ``out-of-memory`` as in Kubernetes mode; and :meth:`Cgroup.kill` ends every process in it,
``nohup``, ``setsid`` and double forks included.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the controllers a run is limited with, as the kernel names them
CONTROLLERS = ("memory", "cpu", "pids")
#: the CPU accounting period, in microseconds (the kernel's default)
CPU_PERIOD = 100_000
#: where the groups of jhub_ext go, under each hierarchy's root
ROOT = "jhub_ext"


@dataclass(frozen=True)
class Limits:
    """What a group may use: bytes of memory, CPUs (fractions allowed) and processes."""

    memory: int | None = None
    cpus: float | None = None
    tasks: int | None = None

    def files(self, version: int) -> dict[str, dict[str, str]]:
        """The control files to write, by controller, for a hierarchy of ``version`` (1 or 2), in order."""
        out: dict[str, dict[str, str]] = {}
        if self.memory:
            if version == 2:
                out["memory"] = {"memory.max": str(self.memory), "memory.swap.max": "0"}
            else:  # the limit first: memsw may not go below it
                out["memory"] = {
                    "memory.limit_in_bytes": str(self.memory),
                    "memory.memsw.limit_in_bytes": str(self.memory),
                }
        if self.cpus:
            quota = max(1000, round(self.cpus * CPU_PERIOD))
            if version == 2:
                out["cpu"] = {"cpu.max": f"{quota} {CPU_PERIOD}"}
            else:
                out["cpu"] = {"cpu.cfs_period_us": str(CPU_PERIOD), "cpu.cfs_quota_us": str(quota)}
        if self.tasks:
            out["pids"] = {"pids.max": str(self.tasks)}
        return out


def parse_mountinfo(text: str) -> tuple[Path | None, dict[str, Path]]:
    """The unified (v2) mount and the v1 mount of each controller, from ``/proc/self/mountinfo``."""
    unified: Path | None = None
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        fstype, options = after[0], after[2] if len(after) > 2 else ""
        mount = Path(fields[4])
        if fstype == "cgroup2" and unified is None:
            unified = mount
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in (*CONTROLLERS, "freezer"):
                    v1.setdefault(option, mount)
    return unified, v1


@dataclass(frozen=True)
class Layout:
    """Where each controller is on this machine: ``v2`` those of the unified hierarchy (at ``unified``),
    ``v1`` the mounts of the others (``freezer`` among them, for stopping a group at once)."""

    unified: Path | None
    v2: frozenset[str]
    v1: dict[str, Path] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """The controllers this machine does not offer (their limits do not apply)."""
        return [c for c in CONTROLLERS if c not in self.v2 and c not in self.v1]

    def group(self, name: str) -> Cgroup:
        """The group ``name`` (under :data:`ROOT`), whether it exists or not."""
        dirs: dict[str, Path] = {}
        for controller in CONTROLLERS:
            if controller in self.v2 and self.unified is not None:
                dirs[controller] = self.unified / ROOT / name
            elif controller in self.v1:
                dirs[controller] = self.v1[controller] / ROOT / name
        if self.unified is not None:  # its cgroup.kill ends a group at once, with or without controllers
            dirs["unified"] = self.unified / ROOT / name
        elif "freezer" in self.v1:
            dirs["freezer"] = self.v1["freezer"] / ROOT / name
        return Cgroup(name, dirs, self)

    def roots(self) -> list[Path]:
        """The directories the groups are made in, one per hierarchy used."""
        return sorted({d.parent for d in self.group("x").dirs.values()})

    def names(self) -> set[str]:
        """The names of the groups that exist now."""
        found: set[str] = set()
        for root in self.roots():
            with contextlib.suppress(OSError):
                found.update(e.name for e in os.scandir(root) if e.is_dir())
        return found


def layout(mountinfo: str | None = None) -> Layout:
    """This machine's layout (from ``mountinfo``, else ``/proc/self/mountinfo``)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    unified, v1 = parse_mountinfo(mountinfo)
    v2: frozenset[str] = frozenset()
    if unified is not None:
        with contextlib.suppress(OSError):
            v2 = frozenset((unified / "cgroup.controllers").read_text().split()) & set(CONTROLLERS)
    return Layout(unified, v2, {c: p for c, p in v1.items() if c not in v2})


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _enable(directory: Path, controllers: frozenset[str]) -> None:
    """Let ``directory``'s sub-groups use ``controllers`` (v2's ``cgroup.subtree_control``)."""
    have = set((directory / "cgroup.subtree_control").read_text().split())
    wanted = sorted(controllers - have)
    if wanted:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))


@dataclass(frozen=True)
class Cgroup:
    """One group: its directory in each hierarchy used, by controller (``unified``, ``freezer`` too)."""

    name: str
    dirs: dict[str, Path]
    layout: Layout

    def create(self, limits: Limits) -> None:
        """Make the group (and the root above it) with ``limits``; OSError if the kernel refuses."""
        if self.layout.unified is not None:
            (self.layout.unified / ROOT).mkdir(exist_ok=True)
            if self.layout.v2:
                _enable(self.layout.unified, self.layout.v2)
                _enable(self.layout.unified / ROOT, self.layout.v2)
        for directory in set(self.dirs.values()):
            directory.mkdir(parents=True, exist_ok=True)
        for controller, files in limits.files(2).items():
            if controller in self.layout.v2:
                self._set(self.dirs[controller], files)
        for controller, files in limits.files(1).items():
            if controller in self.layout.v1:
                self._set(self.dirs[controller], files)

    @staticmethod
    def _set(directory: Path, files: dict[str, str]) -> None:
        for name, value in files.items():
            path = directory / name
            if name in ("memory.swap.max", "memory.memsw.limit_in_bytes") and not path.exists():
                continue  # no swap accounting: there is no swap to limit
            _write(path, value)

    def join(self, pid: int = 0) -> None:
        """Put process ``pid`` (0: the caller) in the group, in every hierarchy."""
        for directory in set(self.dirs.values()):
            _write(directory / "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        """The processes in the group now."""
        found: set[int] = set()
        for directory in set(self.dirs.values()):
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        return found

    def exists(self) -> bool:
        """Whether the group is there (in any hierarchy)."""
        return any(d.is_dir() for d in self.dirs.values())

    def younger_than(self, seconds: float) -> bool:
        """Whether the group was made less than ``seconds`` ago (in any hierarchy)."""
        now = time.time()
        for directory in set(self.dirs.values()):
            with contextlib.suppress(OSError):
                if now - directory.stat().st_mtime < seconds:
                    return True
        return False

    def oom_kills(self) -> int:
        """How many of the group's processes the kernel killed for lack of memory."""
        directory = self.dirs.get("memory")
        if directory is None:
            return 0
        name = "memory.events" if "memory" in self.layout.v2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (directory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the group, until none is left (or ``timeout`` seconds passed).

        The unified hierarchy's ``cgroup.kill`` does it in one write; without it the group is frozen
        first where the v1 ``freezer`` is, so that nothing forks while it is being killed.
        """
        unified = self.dirs.get("unified")
        freezer = self.dirs.get("freezer")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                return
            if unified is not None and (unified / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(unified / "cgroup.kill", "1")
            if freezer is not None:
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "FROZEN")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "THAWED")
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left in the group and remove it (a group that is gone already is fine)."""
        self.kill()
        for directory in set(self.dirs.values()):
            for _ in range(50):  # the kernel frees a group a moment after its last process
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    time.sleep(0.02)
