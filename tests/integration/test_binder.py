"""Binder's start script runs the jobs service standalone, and the example notebook works against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT, free_port

pytestmark = pytest.mark.integration

RUN_NOTEBOOK = """
import json, sys
import nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, kernel_name="python3", timeout=120).execute()
outputs = []
for cell in nb.cells:
    if cell.cell_type == "code":
        text = ""
        for out in cell.outputs:
            text += out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
        outputs.append(text)
print(json.dumps(outputs))
"""


def test_the_example_notebook_runs_under_binder_start(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "JHUB_EXT_JOBS_PORT": str(free_port()),
    }
    env.pop("JUPYTERHUB_API_TOKEN", None)
    process = subprocess.Popen(
        [
            str(ROOT / "binder" / "start"),
            sys.executable,
            "-c",
            RUN_NOTEBOOK,
            str(ROOT / "examples" / "scraper.ipynb"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the service runs in the background: one group to clean up
    )
    try:
        out, err = process.communicate(timeout=300)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
    assert process.returncode == 0, err[-3000:]
    outputs = json.loads(out.strip().splitlines()[-1])
    text = "\n".join(outputs)
    assert "Deployed scraper 'demo-scraper'" in text
    # no %load_ext: the kernel has the magics from the start
    assert "Deployed scraper 'demo-scraper'" in outputs[0]
    assert "demo-scraper" in outputs[1] and "scraper" in outputs[1]  # %jobs
    assert "fetched page" in outputs[2]  # %job_logs
    assert "demo-scraper: stopped" in outputs[3]
    assert "Deleted demo-scraper." in outputs[4]
    assert "Traceback" not in text
