"""Read ``profiles.yaml``, validate it, and build a :class:`~.model.Catalog`.

Validation has two layers. The JSON Schema shipped beside this module checks the
structure (and gives editors completion); the checks here cover what a schema cannot
say well: quantities, guarantees above limits, duplicate slugs, two defaults, groups
that were never declared, budgets that are not finite or that would stop running work
while new work starts. Every problem becomes one line that names the file, the
profile, the field and the fix, and all problems are reported at once.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import yaml

from jhub_ext.core.catalog.model import (
    DEFAULT_GPU_RESOURCE,
    DEFAULT_MAX_RUN_SECONDS,
    DEFAULT_WARN_AT,
    Budget,
    BudgetAction,
    Catalog,
    ImageChoice,
    Kind,
    Profile,
    Quota,
    Resources,
    freeze,
)
from jhub_ext.core.catalog.quantities import CPU_HINT, MEMORY_HINT, QuantityError, parse_cpu, parse_memory

SCHEMA_FILE = "profiles.schema.json"


class CatalogError(ValueError):
    """The catalog is invalid. ``problems`` holds one readable line per problem."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@cache
def catalog_schema() -> Mapping[str, Any]:
    """The JSON Schema of ``profiles.yaml``, as shipped in the package."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate the catalog at ``path``; raise :class:`CatalogError` if it is unusable."""
    source = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise CatalogError(
            [f"{source}: file not found; create it, or point the hub at the catalog you meant"]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CatalogError([f"{source}: cannot be read ({e}); check the file and its permissions"]) from None
    return parse_catalog(text, source)


def parse_catalog(text: str, source: str = "profiles.yaml") -> Catalog:
    """Validate the YAML ``text`` of a catalog and build it; ``source`` names it in errors."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise CatalogError([f"{source}: {_describe_yaml_error(e)}"]) from None
    if data is None:
        raise CatalogError(
            [f"{source}: the file is empty; start it with `version: 1` and a `profiles:` list"]
        )
    if not isinstance(data, dict):
        shape = _type_name(data)
        raise CatalogError(
            [f"{source}: the file must be a mapping with `version:` and `profiles:`, not a {shape}"]
        )
    problems = [f"{source}: {p}" for p in _schema_problems(data)]
    if problems:
        raise CatalogError(problems)
    builder = _Builder(source)
    catalog = builder.build(data)
    if builder.problems:
        raise CatalogError(builder.problems)
    return catalog


# --- YAML -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key '{key}' appears twice in the same block (first on line "
                    f"{seen[key].line + 1}); keep one of them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if "appears twice" in problem:
        return f"{where}{problem}"
    return f"{where}not valid YAML ({problem}); check the indentation and quoting there"


# --- schema ---------------------------------------------------------------------------------


def _schema_problems(data: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(catalog_schema())
    problems: list[str] = []
    seen_paths: set[tuple[Any, ...]] = set()
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        path = tuple(error.absolute_path)
        if path in seen_paths:  # one message per field is enough
            continue
        seen_paths.add(path)
        problems.append(_describe_schema_error(data, error))
    return problems


def _where(data: Mapping[str, Any], path: tuple[Any, ...]) -> tuple[str, str]:
    """Split a JSON path into the thing it is in (``profile 'gpu'``) and the field (``cpu.limit``)."""
    if len(path) >= 2 and path[0] == "profiles" and isinstance(path[1], int):
        return _profile_label(data["profiles"][path[1]], path[1]), _dotted(path[2:])
    if len(path) >= 2 and path[0] == "quotas":
        return f"quotas: group '{path[1]}'", _dotted(path[2:])
    if len(path) >= 2 and path[0] == "budgets":  # the whole path: budgets.researchers.warn_at
        return _dotted(path), ""
    return "", _dotted(path)


def _profile_label(profile: Any, index: int) -> str:
    slug = profile.get("slug") if isinstance(profile, dict) else None
    return f"profile '{slug}'" if isinstance(slug, str) and slug else f"profile #{index + 1}"


def _dotted(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _join(*parts: str) -> str:
    return ": ".join(p for p in parts if p)


def _describe_schema_error(data: Mapping[str, Any], error: jsonschema.ValidationError) -> str:
    where, field = _where(data, tuple(error.absolute_path))
    schema = error.schema if isinstance(error.schema, dict) else {}
    value: Any = error.instance
    kind = str(error.validator)
    rule: Any = error.validator_value
    if kind == "required":
        missing = [name for name in rule if name not in value]
        name = missing[0] if missing else "?"
        target = f"{field}." if field else ""
        return _join(where, f"missing {target}{name}; add `{name}:`")
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = [k for k in value if k not in allowed]
        name = unknown[0] if unknown else "?"
        target = f"{field}.{name}" if field else str(name)
        close = difflib.get_close_matches(str(name), allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"the fields are: {', '.join(allowed)}"
        return _join(where, f"unknown field '{target}'; {hint}")
    if kind in ("minItems", "minProperties", "minLength"):
        fix = schema.get("x-fix", "fill it in or remove it")
        return _join(where, f"{field or 'this entry' if where else field or 'the file'} is empty; {fix}")
    subject = f"{field} {_show(value)}" if field else _show(value)
    if kind in _X_PROBLEM_KEYWORDS and "x-problem" in schema:
        return _join(where, f"{subject} {schema['x-problem']}; {schema['x-fix']}")
    problem = _VALUE_PROBLEMS.get(kind)
    if problem is None:
        fix = schema.get("x-fix", "see the catalog reference in the docs")
        return _join(where, f"{subject} is invalid ({error.message}); {fix}")
    return _join(where, f"{subject} {problem(value, rule, schema)}")


#: the keywords a schema's own ``x-problem`` words, where it has one (ranges, for a value such as a
#: fraction whose every wrong value has the same fix)
_X_PROBLEM_KEYWORDS = frozenset(
    {"type", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
)


def _low(value: Any, rule: Any, schema: Mapping[str, Any], exclusive: bool) -> str:
    if exclusive:
        low = f"must be above {rule}"
    else:
        low = "is negative" if rule == 0 else f"is below the least allowed, {rule}"
    return f"{low}; {schema.get('x-fix', 'use zero or more')}"


#: what is wrong with a value, and the fix, for each JSON Schema keyword it failed
_VALUE_PROBLEMS: dict[str, Callable[[Any, Any, Mapping[str, Any]], str]] = {
    "type": lambda value, rule, schema: (
        f"is a {_type_name(value)}; use a {' or '.join(rule) if isinstance(rule, list) else rule}"
    ),
    "enum": lambda value, rule, schema: f"is not allowed; use one of: {', '.join(str(v) for v in rule)}",
    "const": lambda value, rule, schema: f"is not supported; {schema.get('x-fix', 'use ' + repr(rule))}",
    "uniqueItems": lambda value, rule, schema: "lists an entry twice; list each once",
    "minimum": lambda value, rule, schema: _low(value, rule, schema, exclusive=False),
    "exclusiveMinimum": lambda value, rule, schema: _low(value, rule, schema, exclusive=True),
}


def _show(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"(a {_type_name(value)})"
    return repr(value)


def _type_name(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "string",
        bool: "true/false value",
        int: "number",
        float: "number",
        type(None): "empty value",
    }.get(type(value), type(value).__name__)


# --- semantic checks and construction ---------------------------------------------------------


class _Builder:
    """Turns schema-valid data into a Catalog, collecting what the schema cannot check."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(_join(self.source, where, message))

    def build(self, data: Mapping[str, Any]) -> Catalog:
        declared = frozenset(data.get("groups", []))
        kueue_queues = dict(data.get("kueue", {}).get("queues", {}))
        for group in kueue_queues:
            self.check_declared(group, declared, "kueue.queues")
        # each profile knows the groups' queues, so that wherever it goes its work finds its queue
        group_queues = tuple(kueue_queues.items())
        profiles = tuple(
            self.profile(raw, i, declared, group_queues) for i, raw in enumerate(data["profiles"])
        )
        self.check_unique(profiles)
        quotas = {
            group: self.quota(raw, f"quotas: group '{group}'")
            for group, raw in data.get("quotas", {}).items()
        }
        for group in quotas:
            self.check_declared(group, declared, "quotas")
        budgets = {
            group: self.budget(raw, f"budgets.{group}") for group, raw in data.get("budgets", {}).items()
        }
        for group in budgets:
            self.check_declared(group, declared, "budgets")
        return Catalog(
            profiles=profiles,
            groups=declared,
            quotas=MappingProxyType(quotas),
            budgets=MappingProxyType(budgets),
            version=data["version"],
            currency=data.get("currency", "$"),
            source=self.source,
            kueue_queues=MappingProxyType(kueue_queues),
        )

    def check_declared(self, group: str, declared: frozenset[str], where: str) -> None:
        if group in declared:
            return
        close = difflib.get_close_matches(group, sorted(declared), n=1)
        hint = f"did you mean '{close[0]}'? Otherwise add" if close else "add"
        self.problem(where, f"group '{group}' is not declared; {hint} it to the top-level `groups:` list")

    def check_unique(self, profiles: tuple[Profile, ...]) -> None:
        seen: dict[str, int] = {}
        for i, profile in enumerate(profiles, start=1):
            if profile.slug in seen:
                self.problem(
                    f"profile '{profile.slug}'",
                    f"slug is used by profiles #{seen[profile.slug]} and #{i}; "
                    "give each profile its own slug",
                )
            seen.setdefault(profile.slug, i)
        defaults = [p.slug for p in profiles if p.default]
        if len(defaults) > 1:
            names = ", ".join(f"'{s}'" for s in defaults)
            self.problem("", f"profiles {names} are all marked `default: true`; keep it on one of them")

    def profile(
        self,
        raw: Mapping[str, Any],
        index: int,
        declared: frozenset[str],
        group_queues: tuple[tuple[str, str], ...] = (),
    ) -> Profile:
        where = _profile_label(raw, index)
        groups = raw.get("groups")
        for group in groups or ():
            self.check_declared(group, declared, where)
        return Profile(
            slug=raw["slug"],
            display_name=raw["display_name"],
            description=raw.get("description", ""),
            resources=self.resources(raw, where),
            images=self.images(raw.get("images", []), where),
            node_selector=freeze(raw.get("node_selector", {})),
            tolerations=freeze(raw.get("tolerations", [])),
            affinity=freeze(raw.get("affinity", {})),
            groups=frozenset(groups) if groups is not None else None,
            default=raw.get("default", False),
            cost_per_hour=float(raw.get("cost_per_hour", 0)),
            kinds=frozenset(Kind(k) for k in raw.get("kinds", [k.value for k in Kind])),
            max_run_seconds=int(raw.get("max_run_seconds", DEFAULT_MAX_RUN_SECONDS)),
            max_processes=int(raw["max_processes"]) if "max_processes" in raw else None,
            kueue_queue=raw.get("kueue_queue"),
            group_kueue_queues=group_queues,
        )

    def quantity(
        self,
        raw: Mapping[str, Any],
        key: str,
        parse: Callable[[object], Any],
        hint: str,
        *,
        where: str,
        field: str,
    ) -> Any:
        if key not in raw:
            return None
        try:
            return parse(raw[key])
        except QuantityError as e:
            self.problem(where, f"{field} {_show(raw[key])} {e}; {hint}")
            return None

    def resources(self, raw: Mapping[str, Any], where: str) -> Resources:
        cpu, memory, gpu = raw.get("cpu", {}), raw.get("memory", {}), raw.get("gpu")
        cpu_guarantee = self.quantity(
            cpu, "guarantee", parse_cpu, CPU_HINT, where=where, field="cpu.guarantee"
        )
        cpu_limit = self.quantity(cpu, "limit", parse_cpu, CPU_HINT, where=where, field="cpu.limit")
        mem_guarantee = self.quantity(
            memory, "guarantee", parse_memory, MEMORY_HINT, where=where, field="memory.guarantee"
        )
        mem_limit = self.quantity(
            memory, "limit", parse_memory, MEMORY_HINT, where=where, field="memory.limit"
        )
        for name, guarantee, limit in (
            ("cpu", cpu_guarantee, cpu_limit),
            ("memory", mem_guarantee, mem_limit),
        ):
            if guarantee is not None and limit is not None and guarantee > limit:
                section = cpu if name == "cpu" else memory
                self.problem(
                    where,
                    f"{name}.guarantee {_show(section['guarantee'])} is above {name}.limit "
                    f"{_show(section['limit'])}; lower the guarantee or raise the limit",
                )
        gpu_count = 0
        if gpu is not None:
            gpu_count = gpu["count"]
            if gpu_count < 1:
                self.problem(
                    where,
                    f"gpu.count {gpu_count!r} must be at least 1; remove `gpu:` for a profile without GPUs",
                )
        return Resources(
            cpu_guarantee=cpu_guarantee,
            cpu_limit=cpu_limit,
            mem_guarantee=mem_guarantee,
            mem_limit=mem_limit,
            gpu_count=gpu_count,
            gpu_type=(gpu or {}).get("type"),
            gpu_resource=(gpu or {}).get("resource", DEFAULT_GPU_RESOURCE),
        )

    def images(self, raw: list[Mapping[str, Any]], where: str) -> tuple[ImageChoice, ...]:
        choices = tuple(
            ImageChoice(c["slug"], c["display_name"], c["image"], c.get("default", False)) for c in raw
        )
        slugs = [c.slug for c in choices]
        for slug in sorted({s for s in slugs if slugs.count(s) > 1}):
            self.problem(where, f"images: slug '{slug}' is used twice; give each image its own slug")
        if sum(c.default for c in choices) > 1:
            self.problem(where, "images: more than one image is marked `default: true`; keep it on one")
        return choices

    def quota(self, raw: Mapping[str, Any], where: str) -> Quota:
        counts = {}
        for key in ("gpus", "servers", "jobs"):
            if key in raw:
                if raw[key] < 1:
                    self.problem(where, f"{key} {raw[key]!r} must be at least 1; remove it for no limit")
                counts[key] = raw[key]
        return Quota(
            cpu=self.quantity(raw, "cpu", parse_cpu, CPU_HINT, where=where, field="cpu"),
            memory=self.quantity(raw, "memory", parse_memory, MEMORY_HINT, where=where, field="memory"),
            **counts,
        )

    def budget(self, raw: Mapping[str, Any], where: str) -> Budget:
        """A group's budget: the schema has checked the types and ranges, except that YAML's
        ``.inf`` and ``.nan`` are numbers to it."""
        budget = Budget(
            monthly=float(raw["monthly"]),
            warn_at=float(raw.get("warn_at", DEFAULT_WARN_AT)),
            action=BudgetAction(raw.get("action", BudgetAction.WARN.value)),
            stop_running=raw.get("stop_running", False),
        )
        if not math.isfinite(budget.monthly):
            self.problem(
                f"{where}.monthly",
                f"{_show(raw['monthly'])} is not an amount; use the most the group may spend in a "
                "month, in the catalog's currency, such as 500",
            )
        if not math.isfinite(budget.warn_at):
            self.problem(
                f"{where}.warn_at",
                f"{_show(raw['warn_at'])} is not between 0 and 1; use a fraction such as 0.8 (for 80%)",
            )
        if budget.stop_running and budget.action is BudgetAction.WARN:
            self.problem(
                f"{where}.stop_running",
                "true would stop the group's running work while `action: warn` lets new work start; "
                "set `action: queue` or `action: refuse`, or remove stop_running",
            )
        return budget
