"""The spawn menu's HTML, rendered from the catalog's JSON shape (no hub needed)."""

from __future__ import annotations

import re

from jhub_ext.core.catalog import parse_catalog
from jhub_ext.core.catalog.reload import CatalogProblem
from jhub_ext.local.limits import cpu_set
from jhub_ext.spawner.profiles import OPTION_PREFIX, _templates

CATALOG = parse_catalog(
    """
version: 1
currency: "€"
profiles:
  - slug: small
    display_name: "<script>alert('x')</script>"
    description: "Uses <b>bold</b> claims"
    cost_per_hour: 0.05
    cpu: {limit: 2}
    memory: {limit: 4Gi}
    images:
      - {slug: scipy, display_name: SciPy, image: example.org/scipy:1}
      - {slug: r, display_name: R, image: example.org/r:1}
  - {slug: big, display_name: Big, cost_per_hour: 1}
"""
)


def render(selected: dict[str, str], problem: CatalogProblem | None = None) -> str:
    return _templates.get_template("profile_form.html").render(
        profiles=[p.to_json() for p in CATALOG.profiles],
        availability={"small": "3 of 8 free", "big": None},
        selected=selected,
        currency=CATALOG.currency,
        catalog_problem=problem,
        catalog_problem_since="2026-01-01 00:00:00",
        catalog_path="/etc/profiles.yaml",
        option_prefix=OPTION_PREFIX,
    )


def test_fields_use_kubespawner_names_and_the_choice_is_preselected() -> None:
    html = render({"profile": "small", "image": "r"})
    assert re.findall(r'name="profile" value="([^"]+)"', html) == ["small", "big"]
    assert 'name="profile-option-small--image"' in html
    assert re.search(r'value="small"\s+id="profile-item-small"\s+checked', html)
    assert re.search(r'<option value="r"\s+selected>', html)
    assert "€0.05 per hour" in html and "2 CPUs · 4 GiB" in html and "3 of 8 free" in html


def test_the_default_image_is_selected_for_a_profile_not_chosen_last_time() -> None:
    html = render({"profile": "big"})
    assert re.search(r'value="big"\s+id="profile-item-big"\s+checked', html)
    assert re.search(r'<option value="scipy"\s+selected>', html)


def test_catalog_text_is_escaped() -> None:
    html = render({})
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html


def test_the_catalog_problem_is_shown_when_given() -> None:
    assert "jhub-ext-catalog-error" not in render({})
    html = render({}, CatalogProblem("profiles.yaml: profile 'x': cpu.limit 'lots' is bad", 0.0))
    assert "The profile catalog has errors" in html and "cpu.limit &#39;lots&#39; is bad" in html


def test_cpu_limits_become_whole_cores_capped_to_the_machine() -> None:
    assert cpu_set(None, {0, 1}) is None
    assert cpu_set(0.5, {0, 1, 2, 3}) == {0}
    assert cpu_set(2, {0, 1, 2, 3}) == {0, 1}
    assert cpu_set(2.5, {4, 5, 6, 7}) == {4, 5, 6}
    assert cpu_set(64, {0, 1}) == {0, 1}


def test_different_users_get_different_cores() -> None:
    four = {0, 1, 2, 3}
    picks = {
        frozenset(cpu_set(1, four, spread=name) or ()) for name in ("alice", "bob", "carol", "dave", "erin")
    }
    assert len(picks) > 1  # not everyone on core 0
    assert all(len(p) == 1 and p <= four for p in picks)
    assert cpu_set(1, four, spread="alice") == cpu_set(1, four, spread="alice")  # stable per user
    assert len(cpu_set(3, four, spread="bob") or ()) == 3
