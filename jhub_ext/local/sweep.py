"""Finding and ending the processes of local jobs by where they run, whatever the supervisor knows.

Every run of a local job starts in the job's directory (``<jobs_dir>/u-<user>/<name>/``: the
runner there, the command in its ``files/``) in a process group of its own. A process whose
working directory is in a job's directory (even one deleted meanwhile), and every process of its
group, belongs to that job. This finds them from ``/proc``, so that a stop or delete ends what a
run left (a run started while it was being stopped), and the reconciler finds work that no job
record owns. Processes the service may not look at (another user's, without root) are skipped.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from jhub_ext.core.names import user_of_dir
from jhub_ext.local import cgroups, confine, netns

Key = tuple[str, str]
_DELETED = " (deleted)"


def _owner(root: Path, cwd: str) -> Key | None:
    """The job whose directory under ``root`` holds ``cwd``, or None."""
    cwd = cwd.removesuffix(_DELETED)
    try:
        parts = Path(cwd).relative_to(root).parts
    except ValueError:
        return None
    user = user_of_dir(parts[0]) if len(parts) >= 2 else None
    return None if user is None else (user, parts[1])


def job_processes(jobs_dir: str) -> dict[Key, set[int]]:
    """The pids of every job's processes under ``jobs_dir``, by job: those working in its directory
    and the members of their process groups."""
    root = Path(os.path.realpath(jobs_dir))
    groups: dict[int, list[int]] = {}
    owners: dict[int, Key] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError):
            groups.setdefault(os.getpgid(pid), []).append(pid)
            key = _owner(root, os.readlink(f"/proc/{pid}/cwd"))
            if key is not None:
                owners[pid] = key
    found: dict[Key, set[int]] = {}
    for pid, key in owners.items():
        found.setdefault(key, set()).add(pid)
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
            if pgid != os.getpgid(0):  # never the service's own group
                found[key].update(groups.get(pgid, ()))
    return found


def end_processes(pids: set[int]) -> None:
    """SIGKILL ``pids`` and their process groups (not the service's own)."""
    own = os.getpgid(0)
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            pgid = os.getpgid(pid)
            if pgid != own:
                os.killpg(pgid, signal.SIGKILL)
            elif pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


#: a group this young, even empty, may be a run's that another service is starting on this machine
#: (its runner made it and is about to join it): an empty-only sweep leaves it alone
STARTING_SECONDS = 60.0


def end_groups(prefix: str, *, empty_only: bool = False) -> None:
    """End the confined runs whose names start with ``prefix``: their processes, control groups and
    network namespaces (with ``empty_only``, only those no process is left in and that are older
    than :data:`STARTING_SECONDS`: what a killed runner left behind)."""
    layout = cgroups.layout()
    for name in sorted({n for n in layout.names() | netns.names(prefix) if n.startswith(prefix)}):
        group = layout.group(name)
        if not (empty_only and (group.pids() or group.younger_than(STARTING_SECONDS))):
            confine.end(name)
