from __future__ import annotations

import pytest

from jhub_ext.core.catalog.quantities import QuantityError, format_memory, parse_cpu, parse_memory


@pytest.mark.parametrize(("text", "cores"), [(2, 2.0), (0.5, 0.5), ("500m", 0.5), ("1.5", 1.5), ("4", 4.0)])
def test_cpu_quantities(text: object, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 * 10**9),
        ("4Gi", 4 * 2**30),
        ("512Mi", 512 * 2**20),
        (1024, 1024),
        ("1.5Gi", 3 * 2**29),
        ("2k", 2000),
    ],
)
def test_memory_quantities(text: object, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("value", ["2 GB", "two", "", True, None, [1], "-1", "1.5.2"])
def test_not_cpu(value: object) -> None:
    with pytest.raises(QuantityError):
        parse_cpu(value)


@pytest.mark.parametrize("value", ["4 gigs", "4GB", "", False, 1.5, "-4G", "4g"])
def test_not_memory(value: object) -> None:
    with pytest.raises(QuantityError):
        parse_memory(value)


def test_memory_is_shown_in_the_unit_family_it_was_written_in() -> None:
    assert format_memory(4 * 2**30) == "4 GiB"
    assert format_memory(4 * 10**9) == "4 GB"
    assert format_memory(512 * 2**20) == "512 MiB"
