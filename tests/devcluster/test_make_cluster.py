"""``make cluster`` (python -m devcluster): up, working kubeconfigs, nothing left after SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from devcluster.rest import KubeClient, KubeError

pytestmark = pytest.mark.integration


def processes_under(directory: Path) -> list[str]:
    """Command lines of the processes that name ``directory`` (the control plane's and the agent's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(directory) in command and "pytest" not in command:
                found.append(command)
    return found


def test_make_cluster_runs_in_the_foreground_and_stops_everything_on_sigterm() -> None:
    state = Path(tempfile.mkdtemp(prefix="jhub-ext-make-cluster-"))
    process = subprocess.Popen(
        [sys.executable, "-m", "devcluster", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 180
        output = ""
        while "Ctrl-C stops everything" not in output:
            line = process.stdout.readline()
            assert line and time.monotonic() < deadline, output
            output += line
        hub = KubeClient(state / "hub.kubeconfig")
        admin = KubeClient(state / "admin.kubeconfig")
        try:
            assert hub.list("Pod", "jhub") == []  # the hub may look at its namespace...
            with pytest.raises(KubeError) as refused:  # ...and no further
                hub.list("Secret", "kube-system")
            assert refused.value.status == 403
            labels = admin.get("Namespace", "jhub")["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
            nodes = {n["metadata"]["name"]: n for n in admin.list("Node")}
            assert set(nodes) == {"cpu-1", "cpu-2", "highmem-1", "gpu-1"}
            assert nodes["gpu-1"]["status"]["allocatable"]["nvidia.com/gpu"] == "4"
            assert nodes["highmem-1"]["metadata"]["labels"]["node.kubernetes.io/instance-type"] == "highmem"
        finally:
            hub.close()
            admin.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        time.sleep(0.5)
        assert processes_under(state) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(state, ignore_errors=True)
