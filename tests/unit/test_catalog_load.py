"""Loading and validating profiles.yaml: the shipped file, and every kind of mistake an admin can make."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jsonschema
import pytest

from jhub_ext.core.catalog import CatalogError, Kind, catalog_schema, load_catalog, parse_catalog

from ..conftest import SHIPPED_CATALOG

MINIMAL = """
version: 1
groups: [researchers, gpu]
profiles:
  - slug: small
    display_name: Small
    default: true
    cpu: {guarantee: 500m, limit: 2}
    memory: {guarantee: 1Gi, limit: 4G}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(textwrap.dedent(text), "profiles.yaml")
    return caught.value.problems


def with_profile(extra: str) -> str:
    """MINIMAL plus one more profile, given as the lines under its ``- `` item."""
    body = textwrap.indent(textwrap.dedent(extra).strip(), "    ")
    return textwrap.dedent(MINIMAL) + "  - " + body.lstrip() + "\n"


def test_the_shipped_catalog_is_valid_and_meets_the_contract() -> None:
    catalog = load_catalog(SHIPPED_CATALOG)
    small = catalog.profile("small")
    assert small is not None and small.default and small.groups is None
    gpu = [p for p in catalog.profiles if p.resources.gpu_count]
    assert gpu and all(p.groups == frozenset({"gpu"}) for p in gpu)
    assert any(p.resources.memory >= 16 * 2**30 for p in catalog.profiles if p.groups != {"gpu"})


def test_the_shipped_catalog_also_passes_the_json_schema_alone() -> None:
    import yaml

    jsonschema.Draft202012Validator.check_schema(catalog_schema())
    jsonschema.validate(yaml.safe_load(SHIPPED_CATALOG.read_text()), catalog_schema())


def test_fields_become_immutable_profiles() -> None:
    catalog = parse_catalog(
        with_profile(
            """
            slug: gpu-a100
            display_name: A100
            description: Deep learning.
            cost_per_hour: 2.5
            kinds: [server, job]
            groups: [gpu]
            cpu: {limit: 8}
            memory: {limit: 64Gi}
            gpu: {count: 2, type: NVIDIA-A100, resource: nvidia.com/gpu}
            images:
              - {slug: torch, display_name: PyTorch, image: example.org/torch:1}
              - {slug: jax, display_name: JAX, image: example.org/jax:1, default: true}
            node_selector: {pool: gpu}
            tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
            """
        )
    )
    small, gpu = catalog.profiles
    assert small.resources.cpu_guarantee == 0.5 and small.resources.mem_limit == 4_000_000_000
    assert small.kinds == frozenset(Kind)
    assert gpu.resources.gpu_count == 2 and gpu.resources.cpu_limit == 8.0
    assert gpu.resources.mem_limit == 64 * 2**30
    assert gpu.kinds == {Kind.SERVER, Kind.JOB}
    assert gpu.default_image is not None and gpu.default_image.slug == "jax"
    assert gpu.node_selector["pool"] == "gpu"
    assert gpu.tolerations[0]["effect"] == "NoSchedule"
    with pytest.raises(TypeError):
        gpu.node_selector["pool"] = "cpu"  # type: ignore[index]
    with pytest.raises(AttributeError):
        gpu.slug = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            "slug: gpu-a100\ndisplay_name: A100\ncpu: {limit: 2 GB}",
            "profiles.yaml: profile 'gpu-a100': cpu.limit '2 GB' is not a CPU quantity; "
            "use a number of cores such as 2 or 500m",
            id="cpu-not-a-quantity",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nmemory: {limit: 4 gigs}",
            "profiles.yaml: profile 'big': memory.limit '4 gigs' is not a memory size; "
            "use a size with a unit such as 512Mi, 4G or 16Gi",
            id="memory-not-a-quantity",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ncpus: 4",
            "profiles.yaml: profile 'big': unknown field 'cpus'; did you mean 'cpu'?",
            id="unknown-field",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ncpu: {limit: 2, burst: 4}",
            "profiles.yaml: profile 'big': unknown field 'cpu.burst'; the fields are: guarantee, limit",
            id="unknown-nested-field",
        ),
        pytest.param(
            "display_name: Nameless",
            "profiles.yaml: profile #2: missing slug; add `slug:`",
            id="missing-slug",
        ),
        pytest.param(
            "slug: Big Box\ndisplay_name: Big",
            "profiles.yaml: profile 'Big Box': slug 'Big Box' is not a valid slug; use lowercase letters, "
            "digits and '-', starting and ending with a letter or digit, at most 63 characters",
            id="bad-slug",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ncpu: {guarantee: 4, limit: 2}",
            "profiles.yaml: profile 'big': cpu.guarantee 4 is above cpu.limit 2; "
            "lower the guarantee or raise the limit",
            id="cpu-guarantee-above-limit",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nmemory: {guarantee: 8Gi, limit: 4Gi}",
            "profiles.yaml: profile 'big': memory.guarantee '8Gi' is above memory.limit '4Gi'; "
            "lower the guarantee or raise the limit",
            id="memory-guarantee-above-limit",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ncpu: {limit: 0}",
            "profiles.yaml: profile 'big': cpu.limit 0 must be more than zero; "
            "use a number of cores such as 2 or 500m",
            id="zero-cpu",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ncpu: {limit: -2}",
            "profiles.yaml: profile 'big': cpu.limit -2 must be more than zero; "
            "use a number of cores such as 2 or 500m",
            id="negative-cpu",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nmemory: {limit: 0Gi}",
            "profiles.yaml: profile 'big': memory.limit '0Gi' must be more than zero; "
            "use a size with a unit such as 512Mi, 4G or 16Gi",
            id="zero-memory",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ngpu: {count: 0}",
            "profiles.yaml: profile 'big': gpu.count 0 must be at least 1; "
            "remove `gpu:` for a profile without GPUs",
            id="zero-gpus",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ncost_per_hour: -1",
            "profiles.yaml: profile 'big': cost_per_hour -1 is negative; use a number such as 0.25",
            id="negative-cost",
        ),
        pytest.param(
            "slug: small\ndisplay_name: Small again",
            "profiles.yaml: profile 'small': slug is used by profiles #1 and #2; "
            "give each profile its own slug",
            id="duplicate-slug",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ndefault: true",
            "profiles.yaml: profiles 'small', 'big' are all marked `default: true`; keep it on one of them",
            id="two-defaults",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ngroups: [gpus]",
            "profiles.yaml: profile 'big': group 'gpus' is not declared; did you mean 'gpu'? "
            "Otherwise add it to the top-level `groups:` list",
            id="undeclared-group",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nkinds: [server, notebook]",
            "profiles.yaml: profile 'big': kinds[1] 'notebook' is not allowed; "
            "use one of: server, job, scraper",
            id="unknown-kind",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nimages:\n  - {slug: a, display_name: A, image: x/a:1}\n"
            "  - {slug: a, display_name: B, image: x/b:1}",
            "profiles.yaml: profile 'big': images: slug 'a' is used twice; give each image its own slug",
            id="duplicate-image",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nimages:\n"
            "  - {slug: a, display_name: A, image: x/a:1, default: true}\n"
            "  - {slug: b, display_name: B, image: x/b:1, default: true}",
            "profiles.yaml: profile 'big': images: more than one image is marked `default: true`; "
            "keep it on one",
            id="two-default-images",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ngroups: []",
            "profiles.yaml: profile 'big': groups is empty; "
            "name at least one group, or remove `groups` to allow everyone",
            id="empty-groups",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nnode_selector: {pool: high memory}",
            "profiles.yaml: profile 'big': node_selector.pool 'high memory' is not a Kubernetes label value",
            id="node-selector-value",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ngpu: {count: 1, type: A100 80GB}",
            "profiles.yaml: profile 'big': gpu.type 'A100 80GB' is not a Kubernetes label value; "
            "use at most 63",
            id="gpu-type-not-a-label-value",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\ntolerations: [{key: gpu, operator: Maybe}]",
            "profiles.yaml: profile 'big': tolerations[0].operator 'Maybe' is not allowed; "
            "use one of: Exists, Equal",
            id="toleration-operator",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\naffinity: {nodeAffinity: {requiredDuringScheduling: {}}}",
            "profiles.yaml: profile 'big': unknown field 'affinity.nodeAffinity.requiredDuringScheduling'; "
            "did you mean 'requiredDuringSchedulingIgnoredDuringExecution'?",
            id="affinity-typo",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nmax_processes: 8",
            "profiles.yaml: profile 'big': max_processes 8 is below the least allowed, 16; "
            "use a whole number from 16 to 4194304",
            id="too-few-processes",
        ),
        pytest.param(
            "slug: big\ndisplay_name: Big\nhost_network: true",
            "profiles.yaml: profile 'big': unknown field 'host_network'; the fields are:",
            id="no-host-network",
        ),
    ],
)
def test_a_bad_profile_is_refused_naming_file_profile_field_and_fix(extra: str, expected: str) -> None:
    found = problems(with_profile(extra))
    assert any(p.startswith(expected) for p in found), found


def test_a_profile_may_set_its_process_limit_and_others_keep_the_sites() -> None:
    catalog = parse_catalog(
        with_profile("slug: build\ndisplay_name: Build\nmax_processes: 4096"), "profiles.yaml"
    )
    limits = {p.slug: p.max_processes for p in catalog.profiles}
    assert limits == {"small": None, "build": 4096}


@pytest.mark.parametrize(
    ("quotas", "expected"),
    [
        pytest.param(
            "quotas: {reserchers: {cpu: 4}}",
            "profiles.yaml: quotas: group 'reserchers' is not declared; did you mean 'researchers'? "
            "Otherwise add it to the top-level `groups:` list",
            id="unknown-group",
        ),
        pytest.param(
            "quotas: {researchers: {cpu: 0}}",
            "profiles.yaml: quotas: group 'researchers': cpu 0 must be more than zero",
            id="zero-cpu",
        ),
        pytest.param(
            "quotas: {researchers: {gpus: -1}}",
            "profiles.yaml: quotas: group 'researchers': gpus -1 must be at least 1; remove it for no limit",
            id="negative-gpus",
        ),
        pytest.param(
            "quotas: {researchers: {servers: 1.5}}",
            "profiles.yaml: quotas: group 'researchers': servers 1.5 is not a whole number",
            id="fractional-servers",
        ),
        pytest.param(
            "quotas: {researchers: {}}",
            "profiles.yaml: quotas: group 'researchers': this entry is empty; fill it in or remove it",
            id="empty-quota",
        ),
        pytest.param(
            "quotas: {researchers: {disk: 10}}",
            "profiles.yaml: quotas: group 'researchers': unknown field 'disk'; "
            "the fields are: cpu, gpus, jobs, memory, servers",
            id="unknown-quota-field",
        ),
    ],
)
def test_a_bad_quota_is_refused(quotas: str, expected: str) -> None:
    found = problems(textwrap.dedent(MINIMAL) + quotas + "\n")
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "profiles.yaml: the file is empty", id="empty"),
        pytest.param("- a\n- b\n", "profiles.yaml: the file must be a mapping", id="a-list"),
        pytest.param(
            "version: 1\nprofiles:\n  - slug: a\n   display_name: A\n",
            "profiles.yaml: line 4, column 4: not valid YAML",
            id="bad-indentation",
        ),
        pytest.param(
            "version: 1\nprofiles:\n  - slug: a\n    slug: b\n    display_name: A\n",
            "profiles.yaml: line 4, column 5: the key 'slug' appears twice in the same block "
            "(first on line 3); keep one of them",
            id="duplicate-key",
        ),
        pytest.param(
            "version: 2\nprofiles: []\n", "profiles.yaml: version 2 is not supported; set `version: 1`"
        ),
        pytest.param(
            "version: 1\nprofiles: []\n",
            "profiles.yaml: profiles is empty; list at least one profile",
            id="none",
        ),
        pytest.param("profiles: []\n", "profiles.yaml: missing version; add `version:`", id="no-version"),
    ],
)
def test_a_broken_file_is_refused_with_its_reason(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        with_profile(
            "slug: a\ndisplay_name: A\ncpu: {guarantee: 4, limit: 2}\nmemory: {limit: 0}\ngroups: [nope]"
        )
    )
    assert len(found) == 3, found


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"nowhere\.yaml: file not found; create it"):
        load_catalog(tmp_path / "nowhere.yaml")


def test_the_readme_example_catalog_is_valid() -> None:
    readme = (SHIPPED_CATALOG.parent.parent / "docs" / "reference" / "catalog-rules.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    catalog = parse_catalog(example, "catalog-rules.md")
    assert [p.slug for p in catalog.profiles] == ["small", "large-memory", "gpu-a100"]
    assert catalog.currency == "€"
