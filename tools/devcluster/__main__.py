"""``make cluster``: the local control plane and node agent in the foreground, until Ctrl-C or SIGTERM.

Writes ``<state>/admin.kubeconfig`` (cluster admin) and ``<state>/hub.kubeconfig`` (the hub's
ServiceAccount in namespace ``jhub``, bound to exactly the Roles in ``hub_config/k8s/``). Then, in
another terminal::

    JHUB_EXT_MODE=kubernetes KUBECONFIG=state/cluster/hub.kubeconfig make demo
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from devcluster.cluster import LocalCluster


def main(argv: list[str] | None = None) -> int:
    """Start the local cluster and the hub's namespace, and keep them up until Ctrl-C or SIGTERM.

    Returns 1 if the cluster fails to start or a component dies, else 0.
    """
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path("state/cluster"), help="directory for its files")
    parser.add_argument("--namespace", default="jhub", help="the hub's namespace (default: jhub)")
    args = parser.parse_args(argv)
    state: Path = args.state.resolve()

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    cluster = LocalCluster(state)
    try:
        print(f"devcluster: starting in {state} (the first start builds Kubernetes: minutes)", flush=True)
        cluster.start()
        hub = cluster.prepare_namespace(args.namespace, state / "hub.kubeconfig")
        nodes = ", ".join(n["name"] for n in cluster.nodes)
        print(
            f"devcluster: ready. API server {cluster.control_plane.server if cluster.control_plane else ''}\n"
            f"  nodes: {nodes}\n"
            f"  admin: KUBECONFIG={cluster.admin_kubeconfig}\n"
            f"  hub:   KUBECONFIG={hub} (namespace {args.namespace})\n"
            f"  try:   JHUB_EXT_MODE=kubernetes KUBECONFIG={hub} make demo\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not stop.wait(1):
            if cluster.control_plane is not None:
                cluster.control_plane.check()
            for agent in cluster.agents:
                if agent.process is not None and agent.process.poll() is not None:
                    raise RuntimeError(f"the node agent exited; see {agent.log}")
    except (RuntimeError, TimeoutError) as e:
        print(f"devcluster: {e}", file=sys.stderr)
        return 1
    finally:
        print("devcluster: stopping", flush=True)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
