"""The CLI and the notebook magics, as a researcher uses them, against a real hub with the jobs service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from ..hubprocess import HubProcess, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_env(hub: HubProcess) -> dict[str, str]:
    """The environment a spawned server gives its notebooks: the service's URL and a token."""
    client = hub.client("alice")
    client.login()
    token = client.api("POST", "/users/alice/tokens", json={"note": "tools"}).json()["token"]
    env = {"JHUB_EXT_JOBS_URL": f"{hub.url}/services/jobs/", "JUPYTERHUB_API_TOKEN": token}
    import requests

    wait_for(
        lambda: (
            requests.get(
                f"{hub.url}/services/jobs/api/jobs", headers={"Authorization": f"token {token}"}, timeout=10
            ).ok
        ),
        30,
        "the jobs service",
    )
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "jhub-jobs"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, env={"PATH": str(exe.parent), **env}
    )


def test_cli_lifecycle_with_json_and_exit_codes(server_env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "count.py"
    script.write_text("for i in range(3):\n    print('row', i)\n")
    submitted = cli(server_env, "submit", "counter", "--file", str(script))
    assert submitted.returncode == 0, submitted.stderr
    assert "Submitted batch job 'counter'" in submitted.stdout

    def finished() -> dict[str, Any] | None:
        job = json.loads(cli(server_env, "status", "counter", "--json").stdout)
        return job if job["status"] in ("succeeded", "failed") else None

    assert wait_for(finished, 30, "the job to finish")["exit_code"] == 0
    listed = json.loads(cli(server_env, "list", "--json").stdout)
    assert [job["name"] for job in listed] == ["counter"]
    assert "counter" in cli(server_env, "list").stdout and "succeeded" in cli(server_env, "list").stdout
    assert cli(server_env, "logs", "counter").stdout == "row 0\nrow 1\nrow 2\n"
    assert cli(server_env, "logs", "counter", "--tail", "1").stdout == "row 2\n"
    assert "small" in cli(server_env, "profiles").stdout
    assert "researchers" in cli(server_env, "quota").stdout
    assert cli(server_env, "delete", "counter").returncode == 0


def test_cli_follow_prints_until_the_end(server_env: dict[str, str]) -> None:
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)\n"
    cli(server_env, "submit", "ticker", "--", "python", "-c", code)
    followed = cli(server_env, "logs", "ticker", "-f")
    assert followed.returncode == 0 and "tick 2" in followed.stdout
    cli(server_env, "delete", "ticker")


def test_cli_exit_codes_scripts_can_rely_on(server_env: dict[str, str]) -> None:
    refused = cli(server_env, "submit", "Bad_Name", "--", "python", "-c", "pass")
    assert refused.returncode == 1
    assert (
        refused.stderr.startswith("jhub-jobs: 'Bad_Name' is not a valid job name")
        and "(field: name)" in refused.stderr
    )
    assert cli(server_env, "status", "no-such-job").returncode == 1
    assert cli(server_env, "frobnicate").returncode == 2
    unreachable = cli({**server_env, "JHUB_EXT_JOBS_URL": f"http://127.0.0.1:{free_port()}/"}, "list")
    assert unreachable.returncode == 3 and "cannot reach the jobs service" in unreachable.stderr


def test_a_notebook_has_the_magics_at_once_and_quota_speaks_in_gib(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """A kernel as a local-mode server starts one (this environment's): no %load_ext first, and
    memory in the units the spawn page uses."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, **server_env, "HOME": str(tmp_path)}
    kernel, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    printed: list[str] = []

    def output(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    try:
        reply = client.execute_interactive("%quota", output_hook=output, timeout=60)
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)
    text = "".join(printed)
    assert reply["content"]["status"] == "ok", text
    # the shipped catalog: researchers may use 128Gi of memory
    assert re.search(r"researchers: .*memory \S+ (bytes|KiB|MiB|GiB) of 128 GiB", text), text


@pytest.fixture
def shell(server_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real IPython shell with the environment of a spawned server."""
    from IPython.core.interactiveshell import InteractiveShell

    for key, value in server_env.items():
        monkeypatch.setenv(key, value)
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext jhub_ext")
    yield ip
    InteractiveShell.clear_instance()


def test_magics_deploy_list_watch_and_stop_a_scraper(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell(
        "%%deploy_scraper headlines\nimport time\nprint('scraping page 1', flush=True)\ntime.sleep(120)\n"
    )
    assert "Deployed scraper 'headlines'" in capsys.readouterr().out

    shell.run_cell("table = %jobs")
    table = shell.user_ns["table"]
    assert "headlines" in repr(table) and "<code>headlines</code>" in table._repr_html_()

    def logged() -> bool:
        shell.run_cell("%job_logs headlines")
        return "scraping page 1" in capsys.readouterr().out

    wait_for(logged, 30, "the scraper's output")
    shell.run_cell("%job_status headlines")
    assert "headlines: running" in capsys.readouterr().out
    shell.run_cell("%stop_job headlines")
    assert "headlines: stopped" in capsys.readouterr().out
    shell.run_cell("%delete_job headlines")
    assert "Deleted headlines." in capsys.readouterr().out


def test_magics_report_problems_in_one_line(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("%%deploy_scraper Bad_Name\nprint(1)\n")
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "'Bad_Name' is not a valid job name" in err
    assert "Traceback" not in err
    shell.run_cell("%%submit_job empty\n\n")
    assert "the cell is empty" in capsys.readouterr().err
    shell.run_cell("%job_logs")
    err = capsys.readouterr().err
    assert "job_logs:" in err and "Traceback" not in err
    shell.run_cell("%job_status nothing-here")
    assert "there is no job 'nothing-here'" in capsys.readouterr().err


def test_magics_take_help(shell: Any, capsys: pytest.CaptureFixture[str]) -> None:
    shell.run_cell("%job_logs --help")
    out = capsys.readouterr()
    assert "--follow" in out.out + out.err
    shell.run_cell("%%deploy_scraper --help\npass\n")
    out = capsys.readouterr()
    assert "--schedule" in out.out and "Deployed" not in out.out  # help only: nothing was deployed


def test_following_shows_exactly_what_the_job_printed(
    shell: Any, capsys: pytest.CaptureFixture[str], server_env: dict[str, str]
) -> None:
    """A follow stream starts with a byte order mark (so the proxy passes its headers on at once):
    the magics and the CLI show nothing of it."""
    shell.run_cell(
        "%%submit_job said\nimport time\ntime.sleep(1)\nprint('first', flush=True)\nprint('second')\n"
    )
    assert "Submitted batch job 'said'" in capsys.readouterr().out
    shell.run_cell("%job_logs said --follow")
    assert capsys.readouterr().out == "first\nsecond\n"
    followed = cli(server_env, "logs", "said", "-f")
    assert followed.returncode == 0 and followed.stdout == "first\nsecond\n", followed
    shell.run_cell("%delete_job said")
    assert "Deleted said." in capsys.readouterr().out
