"""Every setting of ours is a trait with help and an example (``--help-all`` shows them to admins)."""

from __future__ import annotations

import pytest
from traitlets import HasTraits

from jhub_ext.hub.demoauth import DemoAuthenticator
from jhub_ext.kubernetes.backend import KubernetesJobBackend
from jhub_ext.kubernetes.spawner import ProfileKubeSpawner
from jhub_ext.local.backend import LocalJobBackend
from jhub_ext.local.spawner import LocalProfileSpawner
from jhub_ext.service.app import JobsService
from jhub_ext.spawner.profiles import ProfileMenuMixin

CLASSES = [
    JobsService,
    LocalJobBackend,
    KubernetesJobBackend,
    ProfileMenuMixin,
    LocalProfileSpawner,
    ProfileKubeSpawner,
    DemoAuthenticator,
]
OWN_TRAITS = [
    pytest.param(cls, name, id=f"{cls.__name__}.{name}")
    for cls in CLASSES
    for name in sorted(cls.class_own_traits(config=True))
]


@pytest.mark.parametrize(("cls", "name"), OWN_TRAITS)
def test_every_setting_has_help_and_an_example(cls: type[HasTraits], name: str) -> None:
    help_text = cls.class_traits()[name].help
    assert len(help_text.split()) >= 5, f"{cls.__name__}.{name} needs help that says what it is for"
    assert "Example::" in help_text, f"{cls.__name__}.{name} needs an example"
    example = help_text.split("Example::", 1)[1]
    assert f".{name} = " in example, f"the example of {cls.__name__}.{name} should set it"


def test_every_class_has_settings() -> None:
    assert len(OWN_TRAITS) >= 25  # the parametrization above is not empty by accident
