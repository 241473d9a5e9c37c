"""The notebook images install only the researcher side: the client, jhub-jobs and the magics.

Each notebook image's Dockerfile copies the package and pip-installs it; here the same files are
copied and the same install runs in a fresh virtual environment, which then has the client, the
command and the magics working, and none of the hub's stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..chart import dockerfile_copies
from ..conftest import ROOT

NOTEBOOK_IMAGES = ("singleuser", "singleuser-r", "singleuser-gpu")
HUB_STACK = (
    "jupyterhub",
    "jupyterhub-kubespawner",
    "kubernetes-asyncio",
    "sqlalchemy",
    "tornado",
    "oauthenticator",
)


def pip_install_line(dockerfile: Path) -> str:
    match = re.search(r"^RUN pip install --no-cache-dir (\S+)", dockerfile.read_text(), re.M)
    assert match, f"{dockerfile} installs jhub_ext with one pip install line"
    return match.group(1).strip("\"'")


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with jhub_ext installed as the notebook images install it (plus IPython,
    which the Jupyter base images have)."""
    dockerfiles = [ROOT / "images" / name / "Dockerfile" for name in NOTEBOOK_IMAGES]
    targets = {pip_install_line(d) for d in dockerfiles}
    assert targets == {"/tmp/jhub_ext"}, targets  # noqa: S108 - the image's build directory
    work = tmp_path_factory.mktemp("image")
    context = work / "context"
    for source, dest in dockerfile_copies(dockerfiles[0]).items():
        if dest.startswith("/tmp/jhub_ext/"):  # noqa: S108
            target = context / dest.removeprefix("/tmp/jhub_ext/")  # noqa: S108
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(context), "ipython"], check=True, timeout=600)
    return venv


def test_the_notebook_images_get_none_of_the_hub_stack(notebook_env: Path) -> None:
    listed = subprocess.run(
        [str(notebook_env / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    installed = {line.split("==")[0].replace("_", "-") for line in listed.splitlines()}
    assert "jhub-ext" in installed
    assert not installed & set(HUB_STACK), sorted(installed & set(HUB_STACK))


def test_the_client_the_command_and_the_magics_work_there(notebook_env: Path) -> None:
    python = str(notebook_env / "bin" / "python")
    help_text = subprocess.run(
        [str(notebook_env / "bin" / "jhub-jobs"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "submit" in help_text
    script = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'jhub_ext.magics')\n"
        "assert 'deploy_scraper' in ip.magics_manager.magics['cell'], ip.magics_manager.magics['cell']\n"
        "assert 'jobs' in ip.magics_manager.magics['line']\n"
        "from jhub_ext.client import JobsClient\n"
        "print('ok', JobsClient(url='http://jobs.test/services/jobs/', token='t').url)\n"
    )
    result = subprocess.run([python, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok http://jobs.test/services/jobs/" in result.stdout


def test_every_ipython_there_has_the_magics_without_load_ext(notebook_env: Path, tmp_path: Path) -> None:
    script = tmp_path / "check.py"
    script.write_text("print(sorted({'jobs', 'quota'} & set(get_ipython().magics_manager.magics['line'])))\n")
    result = subprocess.run(
        [str(notebook_env / "bin" / "ipython"), "--no-banner", str(script)],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": str(notebook_env / "bin")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['jobs', 'quota']" in result.stdout
