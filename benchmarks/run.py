"""Run the benchmarks and write benchmarks/results.json (see benchmarks/README.md).

``python benchmarks/run.py`` runs every one; ``python benchmarks/run.py jobs kube_scale`` only those
named (``make bench BENCH="jobs kube_scale"``), keeping the other figures already in results.json.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import jobs_kube, scale_kube, spawn_kube  # noqa: E402

#: each benchmark by the prefix of its figures
BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "kube_spawn": spawn_kube.main,
    "jobs": jobs_kube.main,
    "kube_scale": scale_kube.main,
}


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - BENCHMARKS.keys())
    if unknown:
        sys.exit(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    chosen = names or list(BENCHMARKS)
    path = HERE / "results.json"
    kept = json.loads(path.read_text()) if names and path.exists() else {}
    results = {name: row for name, row in kept.items() if name.split(".")[0] not in chosen}
    for name in chosen:
        results.update(BENCHMARKS[name]())
    path.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(name) for name in results)
    print(f"{'figure'.ljust(width)}  {'ours':>10}  {'baseline':>10}  {'ratio':>7}  goal")
    for name, row in results.items():
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(
            f"{name.ljust(width)}  {row['ours']:>10.4g}  {row['baseline']:>10.4g}  {ratio:>7}  {row['goal']}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
