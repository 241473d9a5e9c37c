"""The catalog's `budgets:` section: what a valid one means, and how each mistake is refused, naming
the field and the fix (the usage rules that read budgets are tested in test_usage.py)."""

from __future__ import annotations

import re
import textwrap

import jsonschema
import pytest
import yaml

from jhub_ext.core.catalog import CatalogError, catalog_schema, load_catalog, parse_catalog
from jhub_ext.core.catalog.model import Budget, BudgetAction

from ..conftest import SHIPPED_CATALOG

MINIMAL = """
version: 1
currency: EUR
groups: [researchers, gpu]
profiles:
  - {slug: small, display_name: Small, cost_per_hour: 0.05}
quotas:
  researchers: {cpu: 16}
"""


def with_budgets(budgets: str) -> str:
    return textwrap.dedent(MINIMAL) + textwrap.dedent(budgets).strip() + "\n"


def problems(budgets: str) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(with_budgets(budgets), "profiles.yaml")
    return caught.value.problems


def test_a_catalog_without_budgets_has_none() -> None:
    assert parse_catalog(textwrap.dedent(MINIMAL)).budgets == {}
    assert load_catalog(SHIPPED_CATALOG).budgets == {}  # the demo behaves as before


def test_budgets_become_immutable_budgets_with_their_defaults() -> None:
    catalog = parse_catalog(
        with_budgets(
            """
            budgets:
              researchers: {monthly: 500}
              gpu: {monthly: 1250.5, warn_at: 0.9, action: refuse, stop_running: true}
            """
        )
    )
    assert catalog.budgets == {
        "researchers": Budget(monthly=500.0, warn_at=0.8, action=BudgetAction.WARN, stop_running=False),
        "gpu": Budget(monthly=1250.5, warn_at=0.9, action=BudgetAction.REFUSE, stop_running=True),
    }
    assert isinstance(catalog.budgets["researchers"].monthly, float)
    assert catalog.quotas.keys() == {"researchers"}  # quotas and budgets are separate sections
    with pytest.raises(TypeError):
        catalog.budgets["gpu"] = Budget(monthly=1)  # type: ignore[index]
    with pytest.raises(AttributeError):
        catalog.budgets["gpu"].monthly = 1  # type: ignore[misc]


@pytest.mark.parametrize("action", ["warn", "queue", "refuse"])
def test_each_action_is_accepted(action: str) -> None:
    catalog = parse_catalog(with_budgets(f"budgets: {{researchers: {{monthly: 10, action: {action}}}}}"))
    assert catalog.budgets["researchers"].action is BudgetAction(action)


def test_actions_are_ordered_by_strictness() -> None:
    assert [a.strictness for a in (BudgetAction.WARN, BudgetAction.QUEUE, BudgetAction.REFUSE)] == [0, 1, 2]


@pytest.mark.parametrize("warn_at", ["1", "1.0", "0.01", "0.5"])
def test_warn_at_may_be_any_fraction_above_zero_up_to_one(warn_at: str) -> None:
    catalog = parse_catalog(with_budgets(f"budgets: {{researchers: {{monthly: 10, warn_at: {warn_at}}}}}"))
    assert catalog.budgets["researchers"].warn_at == float(warn_at)


@pytest.mark.parametrize(
    ("budgets", "expected"),
    [
        pytest.param(
            "budgets: {researchers: {monthly: 500, warn_at: 1.5}}",
            "profiles.yaml: budgets.researchers.warn_at: 1.5 is not between 0 and 1; "
            "use a fraction such as 0.8",
            id="warn-at-above-one",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 500, warn_at: 0}}",
            "profiles.yaml: budgets.researchers.warn_at: 0 is not between 0 and 1; "
            "use a fraction such as 0.8",
            id="warn-at-zero",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 500, warn_at: 80}}",
            "profiles.yaml: budgets.researchers.warn_at: 80 is not between 0 and 1; "
            "use a fraction such as 0.8 (for 80%)",
            id="warn-at-as-a-percentage",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 500, warn_at: high}}",
            "profiles.yaml: budgets.researchers.warn_at: 'high' is not between 0 and 1",
            id="warn-at-not-a-number",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 500, warn_at: .nan}}",
            "profiles.yaml: budgets.researchers.warn_at: nan is not between 0 and 1",
            id="warn-at-nan",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 0}}",
            "profiles.yaml: budgets.researchers.monthly: 0 is not an amount above zero; use the most the "
            "group may spend in a month, in the catalog's currency, such as 500",
            id="monthly-zero",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: -5}}",
            "profiles.yaml: budgets.researchers.monthly: -5 is not an amount above zero",
            id="monthly-negative",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: '500'}}",
            "profiles.yaml: budgets.researchers.monthly: '500' is not an amount above zero",
            id="monthly-a-string",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: true}}",
            "profiles.yaml: budgets.researchers.monthly: True is not an amount above zero",
            id="monthly-a-boolean",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: .inf}}",
            "profiles.yaml: budgets.researchers.monthly: inf is not an amount; use the most the group may",
            id="monthly-infinite",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: .nan}}",
            "profiles.yaml: budgets.researchers.monthly: nan is not an amount",
            id="monthly-nan",
        ),
        pytest.param(
            "budgets: {researchers: {warn_at: 0.5}}",
            "profiles.yaml: budgets.researchers: missing monthly; add `monthly:`",
            id="monthly-missing",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 5, action: stop}}",
            "profiles.yaml: budgets.researchers.action: 'stop' is not allowed; "
            "use one of: warn, queue, refuse",
            id="unknown-action",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 5, action: queue, stop_running: 'yes'}}",
            "profiles.yaml: budgets.researchers.stop_running: 'yes' is not true or false; use true or false",
            id="stop-running-not-a-boolean",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 5, stop_running: true}}",
            "profiles.yaml: budgets.researchers.stop_running: true would stop the group's running work "
            "while `action: warn` lets new work start; set `action: queue` or `action: refuse`, "
            "or remove stop_running",
            id="stop-running-with-warn",
        ),
        pytest.param(
            "budgets: {researchers: {monthly: 5, warn: 0.5}}",
            "profiles.yaml: budgets.researchers: unknown field 'warn'; did you mean 'warn_at'?",
            id="unknown-field",
        ),
        pytest.param(
            "budgets: {researchers: 500}",
            "profiles.yaml: budgets.researchers: 500 is not a budget; give the group a mapping such as "
            "`{monthly: 500, warn_at: 0.8, action: queue}`",
            id="a-number-for-a-budget",
        ),
        pytest.param(
            "budgets: [researchers]",
            "profiles.yaml: budgets (a list) is not a mapping of groups to budgets; give each group its "
            "budget, such as `researchers: {monthly: 500}`",
            id="a-list-of-budgets",
        ),
        pytest.param(
            "budgets: {reserchers: {monthly: 500}}",
            "profiles.yaml: budgets: group 'reserchers' is not declared; did you mean 'researchers'? "
            "Otherwise add it to the top-level `groups:` list",
            id="undeclared-group",
        ),
        pytest.param(
            "budgets: {'my group': {monthly: 500}}",
            "profiles.yaml: budgets 'my group' is not a group name; use the JupyterHub group's name",
            id="bad-group-name",
        ),
        pytest.param(
            "budget: {researchers: {monthly: 500}}",
            "profiles.yaml: unknown field 'budget'; did you mean 'budgets'?",
            id="misspelled-section",
        ),
    ],
)
def test_a_bad_budget_is_refused_naming_its_field_and_the_fix(budgets: str, expected: str) -> None:
    found = problems(budgets)
    assert any(p.startswith(expected) for p in found), found


def test_every_budget_problem_is_reported_at_once() -> None:
    found = problems(
        """
        budgets:
          researchers: {monthly: .inf, stop_running: true}
          students: {monthly: 5}
        """
    )
    assert [re.sub(r":.*", "", p.removeprefix("profiles.yaml: ")) for p in found] == [
        "budgets.researchers.monthly",
        "budgets.researchers.stop_running",
        "budgets",
    ]


def test_the_commented_example_in_the_shipped_catalog_is_valid_once_uncommented() -> None:
    text = SHIPPED_CATALOG.read_text()
    start = text.index("# budgets:")
    block = []
    for line in text[start:].splitlines():
        if not line.startswith("#"):
            break
        block.append(line.removeprefix("#").removeprefix(" "))
    example = "\n".join(block)
    catalog = parse_catalog(text + "\n" + example + "\n", "profiles.yaml")
    assert catalog.budgets and set(catalog.budgets) <= catalog.groups
    jsonschema.validate(yaml.safe_load(text + "\n" + example + "\n"), catalog_schema())


def test_the_schema_describes_budgets_for_editors() -> None:
    schema = catalog_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    budget = schema["$defs"]["budget"]
    assert budget["required"] == ["monthly"]
    assert set(budget["properties"]) == {"monthly", "warn_at", "action", "stop_running"}
    assert budget["properties"]["action"]["enum"] == [a.value for a in BudgetAction]
