"""Hot reload with keep-last-good, on real files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from jhub_ext.core.catalog import CatalogError
from jhub_ext.core.catalog.reload import CatalogSource

GOOD = "version: 1\nprofiles:\n  - {slug: small, display_name: Small}\n"
RENAMED = "version: 1\nprofiles:\n  - {slug: small, display_name: Renamed}\n"
BROKEN = "version: 1\nprofiles:\n  - {slug: small, display_name: Small, cpu: {limit: lots}}\n"


def write(path: Path, text: str) -> None:
    """Write and move the modification time on, as a later edit would."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def name(source: CatalogSource) -> str:
    return source.current().profiles[0].display_name


def test_an_edit_is_served_on_the_next_use(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    write(path, GOOD)
    source = CatalogSource(path)
    assert name(source) == "Small"
    write(path, RENAMED)
    assert name(source) == "Renamed"


def test_an_invalid_edit_keeps_the_last_good_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "profiles.yaml"
    write(path, GOOD)
    source = CatalogSource(path)
    write(path, BROKEN)
    with caplog.at_level(logging.ERROR, "jhub_ext.core.catalog"):
        assert name(source) == "Small"
        assert name(source) == "Small"
    assert source.error is not None
    assert "cpu.limit 'lots' is not a CPU quantity" in source.error.message
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, not on every page view
    assert "still serving the last valid version" in errors[0].getMessage()

    write(path, RENAMED)
    assert name(source) == "Renamed"
    assert source.error is None


def test_a_deleted_file_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    write(path, GOOD)
    source = CatalogSource(path)
    path.unlink()
    assert name(source) == "Small"
    assert source.error is not None and "file not found" in source.error.message


def test_a_configmap_style_symlink_swap_is_noticed(tmp_path: Path) -> None:
    """Kubernetes updates a mounted ConfigMap by pointing ..data at a new directory."""
    for version, text in (("v1", GOOD), ("v2", RENAMED)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "profiles.yaml").write_text(text)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "profiles.yaml").symlink_to("..data/profiles.yaml")
    source = CatalogSource(tmp_path / "profiles.yaml")
    assert name(source) == "Small"
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic swap the kubelet does
    assert name(source) == "Renamed"


def test_a_broken_or_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    with pytest.raises(CatalogError, match="file not found"):
        CatalogSource(path)
    write(path, BROKEN)
    with pytest.raises(CatalogError, match="is not a CPU quantity"):
        CatalogSource(path)


def test_shared_sources_are_one_per_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    write(path, GOOD)
    assert CatalogSource.shared(path) is CatalogSource.shared(str(path))
