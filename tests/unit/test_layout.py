"""The layout stays the house .importlinter describes: every module of the package has its place
in one of its layers, on the researcher side, or among the old paths kept for one release.
(Complexity rules in pyproject.toml, not a line count, decide where a module splits.)"""

from __future__ import annotations

import configparser
from pathlib import Path

import jhub_ext
from jhub_ext.moved import MOVED

ROOT = Path(jhub_ext.__file__).parent.parent
PACKAGE = Path(jhub_ext.__file__).parent
#: what runs in users' servers (its own import contract), and the package's entry point for IPython
RESEARCHER_SIDE = {"jhub_ext.client", "jhub_ext.cli", "jhub_ext.magics", "jhub_ext"}
#: the packages that only hold old paths (jhub_ext.moved), and that module itself
OLD_PATHS = {"jhub_ext.moved", "jhub_ext.backends", "jhub_ext.jobs", *MOVED}


def house_layers() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = config["importlinter:contract:house"]["layers"]
    return [name.strip() for line in layers.splitlines() for name in line.split("|") if name.strip()]


def test_every_module_has_its_place_in_the_house() -> None:
    layers = house_layers()
    assert layers[-1] == "jhub_ext.core" and {"jhub_ext.kubernetes", "jhub_ext.local"} <= set(layers)
    modules = {
        ".".join(("jhub_ext", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    }
    assert len(modules) > 60
    homeless = {
        module
        for module in modules
        if module not in RESEARCHER_SIDE | OLD_PATHS
        and not any(module == layer or module.startswith(f"{layer}.") for layer in layers)
    }
    assert homeless == set(), "give each a place in the house (.importlinter) or move it where it belongs"
