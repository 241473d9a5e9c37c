"""A network namespace of its own for a local server or job run, with user-mode networking by pasta.

A run in its own namespace cannot bind or reach the machine's loopback ports: the hub's, the
proxy's and the jobs service's doors stay theirs whether those are up or down. Debian's ``passt``
package (``pasta``) gives the namespace outbound access through ordinary sockets of the machine
(no address is added to the machine's own network) and forwards only the ports named here:

- ``forward_in``: a port of the machine's loopback that reaches the same port inside (how the proxy
  reaches a server);
- ``forward_out``: ports inside that reach the machine's loopback (how a server reaches the hub's API
  and the public proxy).

Nothing else is forwarded either way (pasta's default would follow every port bound on either side),
and the gateway's address is not mapped to the machine's loopback (``--no-map-gw``). pasta runs in
the foreground as a child of the process that made the namespace, and ends with it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from jhub_ext.local import linux

#: where ``ip netns`` keeps named namespaces
NETNS_DIR = Path("/run/netns")
#: the servers' environment variables whose URLs a server must reach on this machine
REACHED_URLS = ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL", "JHUB_EXT_JOBS_URL")
#: how long pasta may take to be ready, in seconds
READY_SECONDS = 10.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def loopback_ports(env: Mapping[str, str], names: Iterable[str] = REACHED_URLS) -> list[int]:
    """The ports of this machine's loopback that the URLs in ``env[names]`` point at."""
    ports: set[int] = set()
    for name in names:
        url = urlsplit(env.get(name) or "")
        if url.hostname in _LOOPBACK:
            ports.add(url.port or (443 if url.scheme == "https" else 80))
    return sorted(ports)


def pasta_command(
    name: str, forward_in: Iterable[int], forward_out: Iterable[int], pid_file: Path
) -> list[str]:
    """The pasta command that connects the namespace ``name`` as the module says."""
    inbound = ",".join(str(p) for p in sorted(forward_in))
    outbound = ",".join(str(p) for p in sorted(forward_out))
    return [
        "pasta",
        "--quiet",
        "--foreground",
        "--runas",
        "0:0",  # it must enter the namespace; it sandboxes itself (seccomp, no capabilities) after
        "--config-net",
        "--no-map-gw",
        "--tcp-ports",
        f"127.0.0.1/{inbound}" if inbound else "none",
        "--udp-ports",
        "none",
        "--tcp-ns",
        outbound or "none",
        "--udp-ns",
        "none",
        "--pid",
        str(pid_file),
        "--netns",
        name,
    ]


class NetnsError(RuntimeError):
    """The namespace could not be made or connected; the message says why."""


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    if done.returncode:
        raise NetnsError(f"{' '.join(command[:4])}: {(done.stderr or done.stdout).strip()[-500:]}")


def available() -> str | None:
    """Why namespaces cannot be used here, or None if they can."""
    for tool, package in (("pasta", "passt"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (Debian package {package})"
    return None


class Network:
    """The namespace ``name`` (its loopback up), connected by a pasta that is this process's child."""

    def __init__(self, name: str, forward_in: Iterable[int] = (), forward_out: Iterable[int] = ()):
        self.name = name
        self.path = NETNS_DIR / name
        delete(name)
        _run(["ip", "netns", "add", name])
        self.pasta: subprocess.Popen[bytes] | None = None
        try:
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
            self._connect(forward_in, forward_out)
        except BaseException:
            self.close()
            raise

    def _connect(self, forward_in: Iterable[int], forward_out: Iterable[int]) -> None:
        pid_file = NETNS_DIR / f".{self.name}.pasta"
        pid_file.unlink(missing_ok=True)
        with tempfile.TemporaryFile() as errors:
            self.pasta = subprocess.Popen(
                pasta_command(self.name, forward_in, forward_out, pid_file),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                preexec_fn=lambda: linux.die_with_parent(signal.SIGTERM),  # noqa: PLW1509 - only prctl
            )
            deadline = time.monotonic() + READY_SECONDS
            while not pid_file.exists():  # written once it is ready
                if self.pasta.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    why = errors.read().decode(errors="replace").strip()[-500:]
                    raise NetnsError(f"pasta did not start: {why or 'no answer'}")
                time.sleep(0.005)
        pid_file.unlink(missing_ok=True)

    def close(self) -> None:
        """End pasta and delete the namespace (system calls only: no fork is needed)."""
        if self.pasta is not None:
            with contextlib.suppress(ProcessLookupError):
                self.pasta.terminate()
            try:
                self.pasta.wait(5)
            except subprocess.TimeoutExpired:
                self.pasta.kill()
                self.pasta.wait()
        delete(self.name)


def delete(name: str) -> None:
    """Delete the namespace ``name``, as ``ip netns delete`` does; nothing if there is none."""
    path = NETNS_DIR / name
    with contextlib.suppress(OSError):
        linux.umount(str(path))
    path.unlink(missing_ok=True)


def names(prefix: str) -> set[str]:
    """The namespaces whose names start with ``prefix``."""
    with contextlib.suppress(OSError):
        return {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}
    return set()
