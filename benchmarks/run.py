"""Run every benchmark and write benchmarks/results.json (see benchmarks/README.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import jobs_kube, scale_kube, spawn_kube  # noqa: E402


def main() -> None:
    results = {}
    results.update(spawn_kube.main())
    results.update(jobs_kube.main())
    results.update(scale_kube.main())
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(name) for name in results)
    print(f"{'figure'.ljust(width)}  {'ours':>10}  {'baseline':>10}  {'ratio':>7}  goal")
    for name, row in results.items():
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(
            f"{name.ljust(width)}  {row['ours']:>10.4g}  {row['baseline']:>10.4g}  {ratio:>7}  {row['goal']}"
        )


if __name__ == "__main__":
    main()
