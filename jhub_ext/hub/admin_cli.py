"""``jhub-ext``: commands for admins.

``jhub-ext validate-catalog PATH`` checks a profile catalog before it is saved where the
hub reads it. It prints every problem, one per line, and exits 1; or prints a summary
of the profiles and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jhub_ext.core.catalog import CatalogError, load_catalog


def validate_catalog(path: str) -> int:
    """Check the catalog at ``path``: print its problems and return 1, or list its profiles and return 0."""
    try:
        catalog = load_catalog(path)
    except CatalogError as e:
        print(e, file=sys.stderr)
        print(
            f"{path}: {len(e.problems)} problem(s); a hub reading this file would keep serving "
            "its last valid catalog",
            file=sys.stderr,
        )
        return 1
    print(f"{path}: valid, {len(catalog.profiles)} profile(s)")
    for profile in catalog.profiles:
        who = ", ".join(sorted(profile.groups)) if profile.groups is not None else "everyone"
        default = " (default)" if profile.default else ""
        print(f"  {profile.slug}{default}: {profile.resources.summary()}; for {who}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``jhub-ext`` admin command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jhub-ext", description="jhub_ext admin commands")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "validate-catalog", help="check a profile catalog (profiles.yaml) and list its profiles"
    )
    check.add_argument("path", help="the catalog file to check")
    args = parser.parse_args(argv)
    if args.command == "validate-catalog":
        return validate_catalog(args.path)
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse refuses first
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
