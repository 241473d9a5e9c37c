"""One pod on a node, from binding to deletion, the way a kubelet runs it.

Init containers run in order, each to success (a failure is retried unless the pod's
restartPolicy is Never); then every container starts, and is restarted as restartPolicy says,
with exponential backoff (CrashLoopBackOff in between). Before each start of a container its image
is pulled as ``imagePullPolicy`` says (:mod:`.images`), with the kubelet's events and waiting
reasons; an image that cannot be pulled is retried with back-off (ImagePullBackOff) and keeps the
pod Pending. ``spec.activeDeadlineSeconds`` ends the
pod as Failed/DeadlineExceeded. Deletion sends SIGTERM, waits the grace period, then SIGKILL,
and removes the pod from the API. Status goes to the ``pods/status`` subresource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.agent.api import ApiError
from devcluster.agent.images import PullError, go_duration, pull_policy
from devcluster.agent.podfiles import NotReady, PodFiles
from devcluster.agent.runtime import (
    LogWriter,
    Running,
    expand,
    give,
    identity,
    now_rfc3339,
    rewrite_value,
    start_process,
)
from jhub_ext.kubernetes.quantities import parse_memory_quantity

if TYPE_CHECKING:
    from devcluster.agent.agent import NodeAgent

Json = dict[str, Any]
log = logging.getLogger("jhub_ext.nodeagent")


@dataclass
class ContainerState:
    """One container of a pod, as the agent tracks it: its spec, state, restarts and process."""

    spec: Json
    init: bool
    restarts: int = 0
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    running: Running | None = None
    ready: bool = False
    pulled_for: int | None = None  # the start (restart count) its image was last made sure of for

    @property
    def field_path(self) -> str:
        """How the kubelet's events name the container: ``spec.containers{name}`` and the like."""
        return f"spec.{'initContainers' if self.init else 'containers'}{{{self.spec['name']}}}"

    def status(self, image_id: str, pod_uid: str) -> Json:
        """The container's entry in the pod's ``containerStatuses`` (or ``initContainerStatuses``)."""
        return {
            "name": self.spec["name"],
            "image": self.spec.get("image", ""),
            "imageID": image_id,
            "containerID": f"local://{pod_uid}/{self.spec['name']}/{self.restarts}",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "started": "running" in self.state,
            "restartCount": self.restarts,
        }

    @property
    def terminated(self) -> Json | None:
        """The container's ``terminated`` state, or ``None`` while it has not ended."""
        return self.state.get("terminated")


class PodWorker:
    """Runs one pod bound to our node: volumes, init containers, containers and restarts.

    It reports the pod's status to the API server as it changes, and ends it on deletion.
    """

    def __init__(self, agent: NodeAgent, pod: Json, pod_ip: str):
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.uid = meta["uid"]
        self.ip = pod_ip
        self.directory = agent.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.files = PodFiles(agent.api, pod, self.directory, agent.pv_root, pod_ip)
        spec = pod["spec"]
        self.init = [ContainerState(c, True) for c in spec.get("initContainers") or []]
        self.main = [ContainerState(c, False) for c in spec["containers"]]
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.initialized = not self.init
        self.started_at = now_rfc3339()
        self.stopping = asyncio.Event()
        self.deleted = False
        self._report_lock = asyncio.Lock()
        self._report_pending = False
        self.task = asyncio.create_task(self.run(), name=f"pod {self.key}")

    # --- events from the watch -------------------------------------------------------------------------

    def update(self, pod: Json) -> None:
        """Take the pod as the watch last saw it; start a graceful termination once it is being deleted."""
        self.pod = pod
        self.files.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.stopping.is_set():
            grace = int(pod["metadata"].get("deletionGracePeriodSeconds", 30))
            asyncio.create_task(self.terminate(grace, delete=True))

    def gone(self) -> None:
        """The pod left the API (force deletion): stop everything now."""
        self.deleted = True
        if not self.stopping.is_set():
            asyncio.create_task(self.terminate(0, delete=False))

    # --- running --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """The pod's whole life: prepare volumes, run init containers, then the containers.

        Enforces ``activeDeadlineSeconds``; any failure of the agent itself fails the pod with ``AgentError``.
        """
        await self.report()
        try:
            if not await self._prepare():
                return  # deleted while its volumes were awaited
            if not await self._run_init():
                return
            self.initialized = True
            await self.report()
            deadline = self.pod["spec"].get("activeDeadlineSeconds")
            runners = [asyncio.create_task(self._run_main(c)) for c in self.main]
            done = asyncio.gather(*runners)
            if deadline is None:
                await done
            else:
                try:
                    await asyncio.wait_for(asyncio.shield(done), float(deadline))
                except TimeoutError:
                    self.reason, self.message = (
                        "DeadlineExceeded",
                        ("Pod was active on the node longer than the specified deadline"),
                    )
                    await self._kill_all(int(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
                    await done
                    self.phase = "Failed"
                    await self.report()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("pod %s failed in the agent", self.key)
            self.reason, self.message = "AgentError", str(e)
            self.phase = "Failed"
            await self.report()

    async def _prepare(self) -> bool:
        """Volumes, retried while what they reference does not exist (FailedMount, as a kubelet);
        whether they are ready (False: the pod is being stopped first)."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                await self.files.materialise(self._who(self.main[0].spec))
                return True
            except NotReady as e:
                for c in (*self.init, *self.main):
                    c.state = {"waiting": {"reason": "ContainerCreating", "message": f"MountVolume: {e}"}}
                await self.report()
                await self.agent.event(self.pod, "FailedMount", f"MountVolume.SetUp failed: {e}", "Warning")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 10)
        return False

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; whether the pod started stopping meanwhile."""
        if seconds > 0 and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), seconds)
        return self.stopping.is_set()

    async def _container_event(
        self, c: ContainerState, reason: str, message: str, kind: str = "Normal"
    ) -> None:
        await self.agent.event(self.pod, reason, message, kind, field_path=c.field_path)

    async def _waiting(self, c: ContainerState, reason: str, message: str | None = None) -> None:
        """Put the container in a waiting state and report it, where that changes its state."""
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if c.state != state:
            c.state = state
            await self.report()

    async def _ensure_image(self, c: ContainerState) -> bool:
        """The kubelet's EnsureImageExists, before a start of a container: its image is on the node,
        pulled if ``imagePullPolicy`` asks for it. Failed pulls are retried with back-off (the agent's
        ``restart_backoff``, as the kubelet's 10 s doubling to 300 s), ``ErrImagePull`` then
        ``ImagePullBackOff``; an absent image with policy Never waits as ``ErrImageNeverPull``.
        True once the image is there; False if the pod started stopping first."""
        name = str(c.spec.get("image") or "")
        policy = pull_policy(c.spec)
        node = str(self.pod["spec"].get("nodeName") or "")
        store = self.agent.images
        initial, ceiling = self.agent.restart_backoff
        failures = 0
        while not self.stopping.is_set():
            present = store.present(node, name)
            if present and policy != "Always":
                await self._container_event(
                    c, "Pulled", f'Container image "{name}" already present on machine'
                )
                return True
            if policy == "Never":
                message = f'Container image "{name}" is not present with pull policy of Never'
                await self._waiting(c, "ErrImageNeverPull", message)
                await self._container_event(c, "ErrImageNeverPull", message, "Warning")
                await self._container_event(c, "Failed", "Error: ErrImageNeverPull", "Warning")
                if await self._stopped_within(min(initial * 2**failures, ceiling)):
                    return False
                failures += 1
                continue
            if (c.state.get("waiting") or {}).get("reason") == "ContainerCreating":
                await self._waiting(c, "ContainerCreating")  # without a message of mounts done since
            # (otherwise the state stays as it was, as the kubelet's does until the pull ends: a
            # CrashLoopBackOff before a restart, an ImagePullBackOff before another try)
            await self._container_event(c, "Pulling", f'Pulling image "{name}"')
            image = self.agent.image(name)
            begun = asyncio.get_running_loop().time()
            pull = store.pull(node, name, image.pull_seconds, image.missing)
            stop = asyncio.create_task(self.stopping.wait())
            try:
                await asyncio.wait({pull, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
            if not pull.done():
                return False  # stopping; the pull itself goes on (the image may serve another pod)
            try:
                took = pull.result()
            except PullError as e:
                await self._container_event(c, "Failed", f'Failed to pull image "{name}": {e}', "Warning")
                await self._container_event(c, "Failed", "Error: ErrImagePull", "Warning")
                await self._waiting(c, "ErrImagePull", str(e))
                delay = min(initial * 2**failures, ceiling)
                failures += 1
                # ErrImagePull until the kubelet's next look at the pod, then the back-off
                shown = min(1.0, delay / 2)
                if await self._stopped_within(shown):
                    return False
                message = f'Back-off pulling image "{name}"'
                await self._waiting(c, "ImagePullBackOff", message)
                await self._container_event(c, "BackOff", message)
                await self._container_event(c, "Failed", "Error: ImagePullBackOff", "Warning")
                if await self._stopped_within(delay - shown):
                    return False
                continue
            waited = asyncio.get_running_loop().time() - begun
            await self._container_event(
                c,
                "Pulled",
                f'Successfully pulled image "{name}" in {go_duration(took)}'
                f" ({go_duration(waited)} including waiting). Image size: 0 bytes.",
            )
            return True
        return False

    def _who(self, container: Json) -> Any:
        who = identity(self.pod, container)
        return who if self.agent.switch_users else type(who)(None, None, [])

    async def _start(self, c: ContainerState) -> Running | None:
        """Start one container; on a configuration error, set its waiting state and return None."""
        container = c.spec
        who = self._who(container)
        log_path = self.directory / "logs" / container["name"] / f"{c.restarts}.log"
        writer = LogWriter(log_path)
        try:
            mounts = self.files.mounts(container, who)
            image = self.agent.image(container.get("image", ""))
            base = {**image.env, "HOSTNAME": self.pod["metadata"]["name"], **self.agent.base_env}
            home = self.directory / "home"
            if not home.exists():
                give(home, who, 0o755)
            base.setdefault("HOME", str(home))
            env = await self.files.environment(container, base, mounts)
            command = image.command(container)
            command = [rewrite_value(expand(part, env), mounts, self.ip) for part in command]
            if not command:
                raise NotReady(f"image {container.get('image')!r} has no command on this node agent")
            if who.uid is None and self.agent.is_root and Path(command[0]).name == "jupyterhub-singleuser":
                command.append("--allow-root")
            workdir = Path(mounts.rewrite(container.get("workingDir") or str(home)))
            if not workdir.is_dir():
                give(workdir, who, 0o755)
            if self.stopping.is_set():  # deleted while it was being set up: it never starts
                writer.close()
                return None
            running = await start_process(command, env, workdir, writer, who)
            if self.stopping.is_set():  # deleted while it was starting: it ends now
                running.kill(signal.SIGKILL)
        except (NotReady, OSError) as e:
            reason = "CreateContainerConfigError" if isinstance(e, NotReady) else "StartError"
            writer.note(f"{reason}: {e}")
            writer.close()
            c.state = {"waiting": {"reason": reason, "message": str(e)}}
            if isinstance(e, OSError):
                c.state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": str(e),
                        "startedAt": now_rfc3339(),
                        "finishedAt": now_rfc3339(),
                    }
                }
            await self.report()
            return None
        c.running = running
        c.state = {"running": {"startedAt": running.started_at}}
        c.ready = not c.init
        await self.report()
        return running

    async def _run_once(self, c: ContainerState) -> int | None:
        """One start of a container, to its end: its exit code (None: it could not start)."""
        if c.pulled_for != c.restarts:  # not again for a start retried after a configuration error
            if not await self._ensure_image(c):
                return None
            c.pulled_for = c.restarts
        if self.stopping.is_set():
            return None
        running = await self._start(c)
        if running is None:
            if self.stopping.is_set() or "waiting" in c.state:
                return None
            return int(c.state["terminated"]["exitCode"])
        limit = ((c.spec.get("resources") or {}).get("limits") or {}).get("memory")
        code = await running.wait(parse_memory_quantity(limit) if limit else None)
        c.running = None
        c.ready = False
        reason = "OOMKilled" if running.oom_killed else ("Completed" if code == 0 else "Error")
        c.state = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": running.started_at,
                "finishedAt": now_rfc3339(),
                "containerID": f"local://{self.uid}/{c.spec['name']}/{c.restarts}",
            }
        }
        await self.report()
        return code

    async def _backoff(self, c: ContainerState) -> bool:
        """Wait before a restart (CrashLoopBackOff); False if the pod is stopping meanwhile."""
        initial, ceiling = self.agent.restart_backoff
        delay = min(initial * 2 ** max(c.restarts - 1, 0), ceiling) if c.restarts else 0
        c.last_state = {"terminated": c.state["terminated"]} if c.terminated else c.last_state
        if delay:
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:g}s restarting failed container={c.spec['name']}",
                }
            }
            await self.report()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
        c.restarts += 1
        return not self.stopping.is_set()

    async def _run_init(self) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for c in self.init:
            while not self.stopping.is_set():
                code = await self._run_once(c)
                if code == 0:
                    break
                if code is not None and policy == "Never":
                    self.phase = "Failed"
                    await self.report()
                    return False
                if code is None:  # a configuration error: retried (or the pod is stopping)
                    if await self._stopped_within(1):
                        return False
                    continue
                if not await self._backoff(c):
                    return False
            if self.stopping.is_set():
                return False
        return not self.stopping.is_set()

    async def _run_main(self, c: ContainerState) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while not self.stopping.is_set():
            code = await self._run_once(c)
            if self.stopping.is_set():
                return
            if code is None:
                await asyncio.sleep(1)
                continue
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self._settle_phase()
                await self.report()
                return
            if not await self._backoff(c):
                return

    def _settle_phase(self) -> None:
        if all(c.terminated for c in self.main):
            failed = any(c.terminated and c.terminated.get("exitCode") for c in self.main)
            self.phase = "Failed" if failed else "Succeeded"

    # --- stopping -------------------------------------------------------------------------------------

    async def _kill_all(self, grace: int) -> None:
        self.stopping.set()
        running = [c.running for c in (*self.init, *self.main) if c.running is not None]
        for r in running:
            r.kill(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(r.process.wait() for r in running)), max(grace, 0.1))
        for r in running:
            if r.process.returncode is None:
                r.kill(signal.SIGKILL)
        await asyncio.gather(*(r.process.wait() for r in running))

    async def terminate(self, grace: int, delete: bool) -> None:
        """Graceful deletion: SIGTERM, the grace period, SIGKILL, then the pod leaves the API."""
        await self._kill_all(grace)
        # however the pod's run ends (even cancelled), the pod must still leave the API
        await asyncio.wait({self.task}, timeout=10)
        for c in (*self.init, *self.main):
            if "running" in c.state:
                c.state = {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now_rfc3339()}}
            elif "waiting" in c.state:  # never started (pulling, backing off): a failure, as the kubelet
                c.state = {  # says, so that a pod deleted before it ran does not count as a success
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                        "finishedAt": now_rfc3339(),
                    }
                }
            c.ready = False
        if self.phase not in ("Succeeded", "Failed"):
            self._settle_phase()
        if delete and not self.deleted:
            await self.report()
            ns, name = self.key.split("/")
            await self.agent.remove_pod(ns, name, self.uid)
        self.agent.forget(self)

    # --- status ---------------------------------------------------------------------------------------

    def status(self) -> Json:
        """The pod's status as a kubelet reports it: phase, conditions, IPs and container statuses."""
        ready = self.initialized and all(c.ready for c in self.main) and self.phase == "Running"
        if self.phase not in ("Succeeded", "Failed"):
            active = any("running" in c.state for c in self.main) or any(c.restarts for c in self.main)
            self.phase = "Running" if self.initialized and active else "Pending"
            ready = self.initialized and all(c.ready for c in self.main) and self.phase == "Running"
        stamp = now_rfc3339()
        ours = {
            "PodReadyToStartContainers": True,
            "Initialized": self.initialized,
            "ContainersReady": ready,
            "Ready": ready,
        }
        conditions = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        for kind, value in ours.items():
            text = "True" if value else "False"
            previous = conditions.get(kind)
            if previous is None or previous.get("status") != text:
                conditions[kind] = {
                    "type": kind,
                    "status": text,
                    "lastTransitionTime": stamp,
                    "lastProbeTime": None,
                }
                if not value and kind in ("ContainersReady", "Ready"):
                    conditions[kind]["reason"] = (
                        "PodCompleted" if self.phase in ("Succeeded", "Failed") else ("ContainersNotReady")
                    )
        image_id = f"local://{self.agent.image_root}"
        status: Json = {
            "phase": self.phase,
            "conditions": list(conditions.values()),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            "containerStatuses": [c.status(image_id, self.uid) for c in self.main],
            "reason": self.reason or None,
            "message": self.message or None,
        }
        if self.init:
            status["initContainerStatuses"] = [c.status(image_id, self.uid) for c in self.init]
        return status

    async def report(self) -> None:
        """Send the current status; coalesces bursts into one request."""
        if self._report_pending or self.deleted:
            return
        self._report_pending = True
        async with self._report_lock:
            self._report_pending = False
            ns, name = self.key.split("/")
            try:
                await self.agent.api.merge_patch(
                    f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": self.status()}
                )
            except ApiError as e:
                if e.status == 404:
                    self.deleted = True
                else:
                    log.warning("pod %s: status update failed: %s", self.key, e)
            except Exception as e:  # the API may be paused or gone; the next change reports again
                log.warning("pod %s: status update failed: %s", self.key, e)
