"""The pure rules of local confinement: where controllers are, what is written, what pasta forwards."""

from __future__ import annotations

import argparse
from pathlib import Path

from jhub_ext.local import cgroups, confine, netns
from jhub_ext.service import keeper

HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
30 29 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
31 29 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 29 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 29 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
34 29 0:30 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
"""
UNIFIED = "30 29 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_a_hybrid_machine_keeps_each_controller_where_it_is_mounted() -> None:
    unified, v1 = cgroups.parse_mountinfo(HYBRID)
    assert unified == Path("/sys/fs/cgroup/unified")
    assert v1 == {
        "memory": Path("/sys/fs/cgroup/memory"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }
    layout = cgroups.Layout(unified, frozenset(), v1)
    group = layout.group("job-x-1")
    assert group.dirs == {
        "memory": Path("/sys/fs/cgroup/memory/jhub_ext/job-x-1"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct/jhub_ext/job-x-1"),
        "pids": Path("/sys/fs/cgroup/pids/jhub_ext/job-x-1"),
        "unified": Path("/sys/fs/cgroup/unified/jhub_ext/job-x-1"),  # for cgroup.kill
    }
    assert layout.missing() == []


def test_a_unified_machine_puts_the_whole_group_in_one_directory() -> None:
    unified, v1 = cgroups.parse_mountinfo(UNIFIED)
    layout = cgroups.Layout(unified, frozenset({"memory", "cpu", "pids"}), v1)
    assert set(layout.group("srv-a").dirs.values()) == {Path("/sys/fs/cgroup/jhub_ext/srv-a")}
    assert cgroups.Layout(unified, frozenset({"memory"}), {}).missing() == ["cpu", "pids"]


def test_limits_are_written_as_each_version_names_them() -> None:
    limits = cgroups.Limits(memory=4 * 2**30, cpus=0.5, tasks=1024)
    assert limits.files(2) == {
        "memory": {"memory.max": "4294967296", "memory.swap.max": "0"},
        "cpu": {"cpu.max": "50000 100000"},
        "pids": {"pids.max": "1024"},
    }
    assert limits.files(1) == {
        "memory": {"memory.limit_in_bytes": "4294967296", "memory.memsw.limit_in_bytes": "4294967296"},
        "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"},
        "pids": {"pids.max": "1024"},
    }
    assert cgroups.Limits().files(2) == {}


def test_pasta_forwards_only_the_named_ports_never_its_automatic_defaults() -> None:
    command = netns.pasta_command("srv-a", [40001], [8081, 8000], Path("/run/netns/.srv-a.pasta"))
    assert "auto" not in command  # pasta's default follows every port bound on either side
    assert command[command.index("--tcp-ports") + 1] == "127.0.0.1/40001"
    assert command[command.index("--tcp-ns") + 1] == "8000,8081"
    assert command[command.index("--udp-ports") + 1] == command[command.index("--udp-ns") + 1] == "none"
    assert "--no-map-gw" in command  # the gateway's address is not this machine's loopback
    job = netns.pasta_command("job-a-1", [], [], Path("/run/netns/.job-a-1.pasta"))
    assert job[job.index("--tcp-ports") + 1] == job[job.index("--tcp-ns") + 1] == "none"


def test_a_server_reaches_the_loopback_ports_of_its_hub_urls_only() -> None:
    env = {
        "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
        "JHUB_EXT_JOBS_URL": "http://localhost:8000/services/jobs/",
        "JUPYTERHUB_ACTIVITY_URL": "https://hub.example.org/hub/api/users/alice/activity",
        "OTHER_URL": "http://127.0.0.1:9999/",
    }
    assert netns.loopback_ports(env) == [8000, 8081]


def test_a_confinement_survives_its_command_line() -> None:
    confinement = confine.Confinement(
        "srv-a", cgroups.Limits(2**30, 1.5, 64), network=False, forward_in=(4000,), forward_out=(8000, 8081)
    )
    parser = argparse.ArgumentParser()
    confine.add_arguments(parser)
    assert confine.Confinement.from_args(parser.parse_args(confinement.args())) == confinement
    assert confine.Confinement.from_args(parser.parse_args([])) is None


def test_a_crashing_service_is_started_again_at_once_then_less_often() -> None:
    delays = [keeper.restart_delay(n) for n in range(1, 10)]
    assert delays[0] == 0.0 and delays[1] == 0.1
    assert delays == sorted(delays) and delays[-1] == keeper.MAX_DELAY
