"""The images of the node agent's nodes: what each node has pulled, and pulls as the kubelet makes them.

No registry exists here: a pull only takes the time an image's entry in the agent's configuration
gives it (``pull_seconds``), or fails as a registry's "not found" does (``missing``). What each node
has pulled is kept per node in the agent's state directory (``images.json``), so a restarted agent
keeps its nodes' images, as a node keeps its image store across kubelet restarts. Pulls of one
image onto one node at the same time are one pull; pulls of different images run side by side (the
kubelet with ``serializeImagePulls: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

Json = dict[str, Any]


class PullError(Exception):
    """An image that cannot be pulled; the message is the container runtime's error."""


def pull_policy(container: Json) -> str:
    """The container's ``imagePullPolicy``, defaulted as the API server does: ``Always`` for a
    ``:latest`` tag or none (a digest counts as a tag), ``IfNotPresent`` otherwise."""
    explicit = container.get("imagePullPolicy")
    if explicit:
        return str(explicit)
    image = str(container.get("image") or "")
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def go_duration(seconds: float) -> str:
    """A duration as Go prints a ``time.Duration`` truncated to the millisecond (the kubelet's
    event messages): ``0s``, ``512ms``, ``2.5s``, ``1m2.05s``, ``1h0m3s``."""
    ms = max(int(seconds * 1000), 0)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    whole, fraction = divmod(ms, 1000)
    text = f"{whole % 60}" + (f".{fraction:03d}".rstrip("0") if fraction else "") + "s"
    if whole >= 3600:
        return f"{whole // 3600}h{whole // 60 % 60}m{text}"
    if whole >= 60:
        return f"{whole // 60}m{text}"
    return text


def not_found(image: str) -> str:
    """containerd's error for an image its registry does not have."""
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
        f'failed to resolve reference "{image}": {image}: not found'
    )


class ImageStore:
    """The images present on each node, kept in a JSON file, and the pulls under way."""

    def __init__(self, path: Path):
        self.path = path
        self.nodes: dict[str, set[str]] = {}
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            stored = json.loads(path.read_text())
            self.nodes = {str(node): {str(i) for i in images} for node, images in stored.items()}
        self._pulls: dict[tuple[str, str], asyncio.Task[float]] = {}

    def present(self, node: str, image: str) -> bool:
        """Whether ``node`` has pulled ``image``."""
        return image in self.nodes.get(node, ())

    def pull(self, node: str, image: str, seconds: float, missing: bool) -> asyncio.Task[float]:
        """The pull of ``image`` onto ``node``: a task that ends with the pull's duration in seconds,
        or raises :class:`PullError`. A pull already under way is shared, not started again; it goes
        on when its waiters leave (a deleted pod), as a node's pull does."""
        key = (node, image)
        task = self._pulls.get(key)
        if task is None:
            task = asyncio.create_task(
                self._pull(node, image, seconds, missing), name=f"pull {image} on {node}"
            )
            self._pulls[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return task

    async def _pull(self, node: str, image: str, seconds: float, missing: bool) -> float:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        if seconds > 0:
            await asyncio.sleep(seconds)
        if missing:
            raise PullError(not_found(image))
        self.nodes.setdefault(node, set()).add(image)
        self._save()
        return loop.time() - begun

    def _finished(self, key: tuple[str, str], task: asyncio.Task[float]) -> None:
        if self._pulls.get(key) is task:
            del self._pulls[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have left

    def _save(self) -> None:
        stored = {node: sorted(images) for node, images in sorted(self.nodes.items())}
        partial = self.path.with_name(self.path.name + ".partial")
        # a state directory that is gone (the agent is stopping) is no error: the memory still knows
        with contextlib.suppress(OSError):
            partial.write_text(json.dumps(stored, indent=1) + "\n")
            os.replace(partial, self.path)
