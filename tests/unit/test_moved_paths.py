"""The module paths that configs and commands named before the regrouping still work, for one
release, each with a warning that names the new path."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import jhub_ext.spawner
from jhub_ext.moved import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_module_path_warns_and_hands_out_the_new_modules_names(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} moved to {new}"):
        shim = importlib.import_module(old)
    module = importlib.import_module(new)
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    assert public and all(getattr(shim, name) is getattr(module, name) for name in public)


def test_the_spawner_configs_named_still_resolves_as_jupyterhub_imports_it() -> None:
    from traitlets.utils.importstring import import_item

    from jhub_ext.kubernetes.spawner import ProfileKubeSpawner
    from jhub_ext.local.spawner import LocalProfileSpawner

    with pytest.warns(FutureWarning, match="jhub_ext.local.spawner.LocalProfileSpawner"):
        assert import_item("jhub_ext.spawner.LocalProfileSpawner") is LocalProfileSpawner
    sys.modules.pop("jhub_ext.spawner.kube", None)
    with pytest.warns(FutureWarning):
        assert import_item("jhub_ext.spawner.kube.ProfileKubeSpawner") is ProfileKubeSpawner
    with pytest.raises(AttributeError):
        jhub_ext.spawner.NoSuchSpawner  # noqa: B018


def test_the_jobs_service_still_starts_by_its_old_module_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jhub_ext.jobs.app", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "scrapers, batch jobs and scheduled jobs" in result.stdout
    assert "jhub_ext.jobs.app moved to jhub_ext.service.app" in result.stderr
