"""The Python environment users' processes run in when they run as accounts of their own.

Local mode as root runs each user's servers and jobs as that user's system account, and a
Kubernetes pod on the development cluster runs as its ``runAsUser``: neither may be able to
execute the project's own ``.venv`` (it may sit under a home directory other users cannot enter,
and its interpreter too, as pyenv's does under /root). So, as root, users get a separate
environment made from the system's Python under ``/var/cache/jhub_ext`` (readable by everyone),
with the dependencies of ``jhub_ext[local]`` installed, keyed by ``setup.cfg``; the current
jhub_ext source is copied beside it and put first on ``PYTHONPATH``. Without root, the project's
own environment is the users' environment.

``python -m jhub_ext.local.userenv`` builds it ahead of time (``make demo`` and ``make test`` do).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the source checkout (with setup.cfg)
SYSTEM_PYTHON = Path("/usr/bin/python3.11")
CACHE = Path(os.environ.get("JHUB_EXT_IMAGE_CACHE", "/var/cache/jhub_ext"))


@dataclass(frozen=True)
class UserEnvironment:
    """An environment users' processes can run in: a Python prefix and, maybe, a source overlay."""

    prefix: Path  # the environment: prefix/bin is first on PATH
    overlay: Path | None  # a copy of the jhub_ext source, first on PYTHONPATH

    def env(self) -> dict[str, str]:
        """``PATH`` (and ``PYTHONPATH``) for a process that runs in this environment."""
        env = {"PATH": f"{self.prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin"}
        if self.overlay is not None:
            env["PYTHONPATH"] = str(self.overlay)
        return env


def _say(text: str) -> None:
    print(f"jhub_ext: {text}", file=sys.stderr, flush=True)


def separate_environment_needed() -> bool:
    """Whether users need an environment apart from ours.

    They do when we run as root from a source checkout and the system Python is there to build it from.
    """
    return os.geteuid() == 0 and SYSTEM_PYTHON.exists() and (ROOT / "setup.cfg").exists()


def build_prefix() -> Path:
    """The shared environment under the cache, built once per ``setup.cfg`` (a file lock keeps
    two processes from building it at once)."""
    key = hashlib.sha256((ROOT / "setup.cfg").read_bytes() + SYSTEM_PYTHON.name.encode()).hexdigest()[:12]
    prefix = CACHE / f"node-image-{key}"
    if (prefix / ".complete").exists():
        return prefix
    CACHE.mkdir(parents=True, exist_ok=True)
    CACHE.chmod(0o755)
    with (CACHE / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (prefix / ".complete").exists():
            return prefix
        _say(f"building the users' Python environment in {prefix} (once)")
        for stale in CACHE.glob("node-image-*"):  # environments of earlier setup.cfg versions
            shutil.rmtree(stale, ignore_errors=True)
        umask = os.umask(0o022)  # everyone must be able to run it, whatever the caller's umask
        try:
            subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(prefix)], check=True)  # noqa: S603
            pip = [
                str(prefix / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ]
            subprocess.run([*pip, f"{ROOT}[local]"], check=True, cwd=ROOT)  # noqa: S603
        finally:
            os.umask(umask)
        (prefix / ".complete").write_text("ok\n")
    return prefix


def user_environment(overlay_dir: Path) -> UserEnvironment:
    """The environment users' processes run in (see the module's docstring); the current source is
    copied to ``overlay_dir`` (readable by everyone)."""
    if not separate_environment_needed():
        return UserEnvironment(Path(sys.prefix), None)
    prefix = build_prefix()
    overlay = Path(overlay_dir)
    shutil.rmtree(overlay, ignore_errors=True)
    shutil.copytree(ROOT / "jhub_ext", overlay / "jhub_ext", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (overlay, *overlay.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return UserEnvironment(prefix, overlay)


if __name__ == "__main__":
    if separate_environment_needed():
        print(build_prefix())
