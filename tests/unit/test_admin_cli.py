from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..conftest import SHIPPED_CATALOG


def run(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "jhub-ext"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def test_validate_catalog_lists_a_valid_catalog() -> None:
    result = run("validate-catalog", str(SHIPPED_CATALOG))
    assert result.returncode == 0, result.stderr
    assert "valid, 3 profile(s)" in result.stdout
    assert "small (default): 1 CPU · 4 GiB; for everyone" in result.stdout
    assert "gpu-a100: 8 CPUs · 64 GiB · 1 × NVIDIA-A100-SXM4-80GB GPU; for gpu" in result.stdout


def test_validate_catalog_prints_the_problems_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(
        "version: 1\nprofiles:\n  - {slug: gpu-a100, display_name: A, cpu: {limit: 2 GB}}\n"
        "  - {slug: gpu-a100, display_name: B}\n"
    )
    before = path.read_text()
    result = run("validate-catalog", str(path))
    assert result.returncode == 1
    assert f"{path}: profile 'gpu-a100': cpu.limit '2 GB' is not a CPU quantity" in result.stderr
    assert path.read_text() == before


def test_validate_catalog_needs_a_path() -> None:
    result = run("validate-catalog")
    assert result.returncode == 2
    assert "path" in result.stderr
