"""How far a newcomer must read: the functions of ours a request passes through to reach what it does.

The path of a request is every function of ``jhub_ext`` on the stack at the moment one of its
effects is made (a call of the Kubernetes client, an SQL statement), outermost first, for stacks
that pass through the request's entry point; what watches do afterwards in their own tasks is the
events' path, not the request's. Helpers that return before any effect (parsing, quota arithmetic,
manifest building) are not on it: a reader follows them only to learn what they compute.

A path goes on into the tasks it starts (``asyncio.wait_for`` makes one for its coroutine, as
KubeSpawner does around each API call): an effect made in a task is seen with the functions that
were on the stack where the task was made, and theirs in turn.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

PACKAGE = str(Path(__file__).resolve().parents[1] / "jhub_ext") + "/"
KUBERNETES, SQL = "kubernetes_asyncio/client/api_client.py", "sqlalchemy/engine/base.py"
#: where requests act on the world: the Kubernetes client's one entry, and every SQL statement
EFFECTS = {(KUBERNETES, "call_api"), (SQL, "execute")}
Step = tuple[str, str]  # (file under jhub_ext/, qualified function name)


def record(entries: set[str], found: Callable[[str, list[Step]], None]) -> Callable[[], None]:
    """From now on, in this thread (and the tasks of its running event loop), call
    ``found(effect, path)`` for every effect reached through a function whose qualified name is in
    ``entries`` (``effect``: the library file it is made in); returns the function that stops
    recording."""
    started_by: weakref.WeakKeyDictionary[asyncio.Task[Any], tuple[bool, list[Step]]]
    started_by = weakref.WeakKeyDictionary()

    def here(frame: FrameType | None) -> tuple[bool, list[Step]]:
        """Whether the stack from ``frame`` outwards (into the tasks that started its task) passes
        an entry, and the functions of ours on it, outermost first."""
        path: list[Step] = []
        through = False
        while frame is not None:
            through = through or frame.f_code.co_qualname in entries
            if frame.f_code.co_filename.startswith(PACKAGE):
                path.append((frame.f_code.co_filename[len(PACKAGE) :], frame.f_code.co_qualname))
            frame = frame.f_back
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop in this thread
            task = None
        outer_through, outer = started_by.get(task, (False, [])) if task is not None else (False, [])
        return through or outer_through, outer + path[::-1]

    def profile(frame: FrameType, event: str, _arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        effect = next((f for f, n in EFFECTS if code.co_filename.endswith(f) and code.co_name == n), None)
        if effect is None:
            return
        through, path = here(frame.f_back)
        if through:
            found(effect, path)

    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    factory = loop.get_task_factory() if loop is not None else None

    def make_task(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = factory(loop, coro, **kwargs) if factory else asyncio.Task(coro, loop=loop, **kwargs)
        started_by[task] = here(sys._getframe(1))
        return task  # type: ignore[return-value]

    if loop is not None:
        loop.set_task_factory(make_task)  # type: ignore[arg-type]
    sys.setprofile(profile)

    def stop() -> None:
        sys.setprofile(None)
        if loop is not None:
            loop.set_task_factory(factory)

    return stop


def files_entered_again(path: list[Step]) -> list[str]:
    """Files that one path leaves and then enters again (A -> B -> A)."""
    runs = [file for i, (file, _) in enumerate(path) if i == 0 or path[i - 1][0] != file]
    return sorted({file for i, file in enumerate(runs) if file in runs[:i]})


def check(seen: list[tuple[str, list[Step]]], functions: int, files: int, effects: set[str]) -> None:
    """At most ``functions`` of ours in at most ``files`` files on all paths together, no file
    entered twice on one path, and every one of ``effects`` (library files) made (they were followed)."""
    paths = [path for _, path in seen]
    visited = {step for path in paths for step in path}
    report = "\n".join(" -> ".join(f"{file}:{name}" for file, name in path) for path in paths if path)
    made = {effect for effect, _ in seen}
    assert effects <= made, f"not all effects were followed: {sorted(made)}\n{report}"
    assert len(visited) <= functions, f"{len(visited)} functions:\n{report}"
    in_files = sorted({file for file, _ in visited})
    assert len(in_files) <= files, f"{len(in_files)} files: {in_files}\n{report}"
    for path in paths:
        assert not files_entered_again(path), report
