"""How the researcher side says a group's quota: in the units the spawn page uses."""

from __future__ import annotations

import pytest

from jhub_ext.client import QuotaLine, amount


@pytest.mark.parametrize(
    ("resource", "value", "said"),
    [
        ("memory", 0, "0 bytes"),
        ("memory", 512, "512 bytes"),
        ("memory", 512 * 2**20, "512 MiB"),
        ("memory", 8 * 2**30, "8 GiB"),
        ("memory", 1.5 * 2**30, "1.5 GiB"),
        ("memory", 128 * 2**30, "128 GiB"),
        ("memory", 3 * 2**40, "3 TiB"),
        ("cpu", 2.5, "2.5"),
        ("cpu", 16.0, "16"),
        ("gpus", 2, "2"),
        ("jobs", 20, "20"),
    ],
)
def test_amounts_read_as_the_spawn_page_says_them(resource: str, value: float, said: str) -> None:
    assert amount(resource, value) == said


def test_a_quota_answer_becomes_one_line_per_limit_set() -> None:
    groups = [
        {
            "group": "researchers",
            "limits": {"cpu": 16, "memory": 128 * 2**30, "gpus": None, "servers": 10, "jobs": 20},
            "usage": {"cpu": 2.5, "memory": 8 * 2**30, "gpus": 0, "servers": 1, "jobs": 1},
        },
        {"group": "gpu", "limits": {"gpus": 2}, "usage": {}},
    ]
    lines = QuotaLine.from_json(groups)
    said = [(line.group, line.resource, line.in_use_text(), line.limit_text()) for line in lines]
    assert said == [
        ("researchers", "cpu", "2.5", "16"),
        ("researchers", "memory", "8 GiB", "128 GiB"),
        ("researchers", "servers", "1", "10"),
        ("researchers", "jobs", "1", "20"),
        ("gpu", "gpus", "0", "2"),
    ]
