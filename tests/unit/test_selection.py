"""Resolving user_options: group filtering, defaults, refusals, and last-choice pre-selection."""

from __future__ import annotations

import pytest

from jhub_ext.core.catalog import Kind, load_catalog
from jhub_ext.core.catalog.selection import SelectionError, preselect, resolve_selection

from ..conftest import SHIPPED_CATALOG

ALICE = frozenset({"researchers"})
BOB = frozenset({"researchers", "gpu"})
NOBODY: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    return load_catalog(SHIPPED_CATALOG)


def slugs(profiles) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.slug for p in profiles]


def test_groups_decide_the_menu(catalog) -> None:  # type: ignore[no-untyped-def]
    assert slugs(catalog.visible_to(ALICE)) == ["small", "large-memory"]
    assert slugs(catalog.visible_to(BOB)) == ["small", "large-memory", "gpu-a100"]
    assert slugs(catalog.visible_to(NOBODY)) == ["small"]


def test_kinds_decide_the_menu_too() -> None:
    from jhub_ext.core.catalog import parse_catalog

    catalog = parse_catalog(
        "version: 1\nprofiles:\n"
        "  - {slug: a, display_name: A, kinds: [server]}\n"
        "  - {slug: b, display_name: B, kinds: [job, scraper]}\n"
    )
    assert slugs(catalog.visible_to(NOBODY, Kind.SERVER)) == ["a"]
    assert slugs(catalog.visible_to(NOBODY, Kind.SCRAPER)) == ["b"]
    assert catalog.default_for(NOBODY, Kind.JOB).slug == "b"


def test_empty_options_give_the_default_profile_and_image(catalog) -> None:  # type: ignore[no-untyped-def]
    selection = resolve_selection(catalog, {}, ALICE)
    assert selection.profile.slug == "small"
    assert selection.image is not None and selection.image.slug == "scipy"
    assert selection.to_user_options() == {"profile": "small", "image": "scipy"}


def test_an_allowed_choice_is_resolved(catalog) -> None:  # type: ignore[no-untyped-def]
    selection = resolve_selection(catalog, {"profile": "gpu-a100"}, BOB)
    assert selection.profile.resources.gpu_count == 1
    assert selection.image is not None and selection.image.slug == "pytorch"
    assert resolve_selection(catalog, {"profile": "small", "image": "r"}, ALICE).image.slug == "r"


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        (
            {"profile": "gpu-a100"},
            "profile",
            "there is no profile 'gpu-a100' that you can use; choose one of: small, large-memory",
        ),
        ({"profile": "nope"}, "profile", "there is no profile 'nope' that you can use"),
        ({"profile": 3}, "profile", "profile must be a profile's slug"),
        (
            {"profile": "small", "image": "evil/x:1"},
            "image",
            "image 'evil/x:1' is not offered by profile 'small'; choose one of: scipy, r",
        ),
        (
            {"profile": "large-memory", "image": "scipy"},
            "image",
            "profile 'large-memory' offers no choice of image",
        ),
        ({"profile": "small", "image": ["r"]}, "image", "image 'that value' is not offered"),
        (
            {"profile": "small", "mem_limit": "1T"},
            "mem_limit",
            "unknown option 'mem_limit'; the options are: profile, image",
        ),
        (["small"], "user_options", "options must be an object"),
    ],
)
def test_choices_outside_the_menu_are_refused(catalog, options, field, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SelectionError) as caught:
        resolve_selection(catalog, options, ALICE)
    assert caught.value.field == field
    assert str(caught.value).startswith(message)


def test_a_forbidden_and_an_unknown_profile_read_the_same(catalog) -> None:  # type: ignore[no-untyped-def]
    def message(slug: str) -> str:
        with pytest.raises(SelectionError) as caught:
            resolve_selection(catalog, {"profile": slug}, ALICE)
        return str(caught.value).replace(slug, "X")

    assert message("gpu-a100") == message("no-such")


def test_last_choice_is_preselected_while_valid(catalog) -> None:  # type: ignore[no-untyped-def]
    assert preselect(catalog, {"profile": "large-memory"}, ALICE).profile.slug == "large-memory"
    last = preselect(catalog, {"profile": "small", "image": "r"}, ALICE)
    assert last.to_user_options() == {"profile": "small", "image": "r"}


def test_a_stale_last_choice_falls_back_to_the_default(catalog) -> None:  # type: ignore[no-untyped-def]
    # bob left the gpu group, or the profile was removed: the menu still opens, on the default
    assert preselect(catalog, {"profile": "gpu-a100"}, ALICE).profile.slug == "small"
    assert preselect(catalog, {"profile": "small", "image": "gone"}, ALICE).image.slug == "scipy"
    assert preselect(catalog, None, ALICE).profile.slug == "small"


def test_the_default_is_skipped_when_the_user_may_not_use_it() -> None:
    from jhub_ext.core.catalog import parse_catalog

    catalog = parse_catalog(
        "version: 1\ngroups: [gpu]\nprofiles:\n"
        "  - {slug: gpu, display_name: GPU, default: true, groups: [gpu]}\n"
        "  - {slug: cpu, display_name: CPU}\n"
    )
    assert resolve_selection(catalog, {}, NOBODY).profile.slug == "cpu"
    assert resolve_selection(catalog, {}, {"gpu"}).profile.slug == "gpu"


def test_no_profile_at_all_is_a_clear_refusal() -> None:
    from jhub_ext.core.catalog import parse_catalog

    catalog = parse_catalog(
        "version: 1\ngroups: [gpu]\nprofiles:\n  - {slug: g, display_name: G, groups: [gpu]}\n"
    )
    with pytest.raises(SelectionError, match="no profile is available to you for a server; ask an admin"):
        resolve_selection(catalog, {}, NOBODY)
    assert preselect(catalog, {}, NOBODY) is None
