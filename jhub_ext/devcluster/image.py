"""The "image" the node agent runs every container in: a Python environment with jhub_ext's runtime.

No container runtime exists here, so images are not pulled. Where the agent runs as root it runs
containers as the pod's ``runAsUser``, and that user must be able to execute the environment: the
project's own ``.venv`` may sit under a home directory other users cannot enter, and its
interpreter may too (pyenv under /root). So, as root, the image is a separate environment made
from the system's Python under ``/var/cache/jhub_ext`` (readable by everyone), with the
dependencies of ``jhub_ext[local]`` installed, keyed by ``setup.cfg``; the current jhub_ext source
is copied beside it on every cluster start and put first on ``PYTHONPATH``. Without root, the
project's own environment is the image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .controlplane import ROOT

SYSTEM_PYTHON = Path("/usr/bin/python3.11")
CACHE = Path(os.environ.get("JHUB_EXT_IMAGE_CACHE", "/var/cache/jhub_ext"))


@dataclass(frozen=True)
class NodeImage:
    prefix: Path  # the environment: prefix/bin is first on PATH
    overlay: Path | None  # a copy of the jhub_ext source, first on PYTHONPATH

    def env(self) -> dict[str, str]:
        env = {"PATH": f"{self.prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin"}
        if self.overlay is not None:
            env["PYTHONPATH"] = str(self.overlay)
        return env


def _say(text: str) -> None:
    print(f"devcluster: {text}", file=sys.stderr, flush=True)


def node_image(directory: Path) -> NodeImage:
    """The environment containers run in (built once as root; see the module's docstring)."""
    if os.geteuid() != 0 or not SYSTEM_PYTHON.exists():
        return NodeImage(Path(sys.prefix), None)
    key = hashlib.sha256((ROOT / "setup.cfg").read_bytes() + SYSTEM_PYTHON.name.encode()).hexdigest()[:12]
    prefix = CACHE / f"node-image-{key}"
    if not (prefix / ".complete").exists():
        _say(f"building the node image (a Python environment for containers) in {prefix}")
        CACHE.mkdir(parents=True, exist_ok=True)
        for stale in CACHE.glob("node-image-*"):  # images of earlier setup.cfg versions
            shutil.rmtree(stale, ignore_errors=True)
        CACHE.chmod(0o755)
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
        (prefix / ".complete").write_text("ok\n")
    overlay = directory / "image-overlay"
    shutil.rmtree(overlay, ignore_errors=True)
    shutil.copytree(ROOT / "jhub_ext", overlay / "jhub_ext", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (overlay, *overlay.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return NodeImage(prefix, overlay)
