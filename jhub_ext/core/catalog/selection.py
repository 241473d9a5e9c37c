"""Turn what a user asked for (``user_options``) into a validated selection.

``user_options`` reaches the hub from the spawn form, from query arguments and from the
REST API, so it is untrusted: anything the user's groups do not allow, any option the
profile does not offer, and any key we do not know is refused with a message saying
what to choose instead. The same function serves servers and jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jhub_ext.core.catalog.model import Catalog, ImageChoice, Kind, Profile

PROFILE_FIELD = "profile"
IMAGE_FIELD = "image"
KNOWN_FIELDS = (PROFILE_FIELD, IMAGE_FIELD)


class SelectionError(ValueError):
    """A choice the user may not make; ``field`` names the option at fault."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Selection:
    """A validated choice: a profile the user may use and, if it offers images, one of them."""

    profile: Profile
    image: ImageChoice | None = None

    def to_user_options(self) -> dict[str, str]:
        """The canonical ``user_options`` for this selection (what the form would submit)."""
        options = {PROFILE_FIELD: self.profile.slug}
        if self.image is not None:
            options[IMAGE_FIELD] = self.image.slug
        return options


def resolve_selection(
    catalog: Catalog,
    user_options: Any,
    groups: frozenset[str] | set[str],
    kind: Kind = Kind.SERVER,
) -> Selection:
    """Validate ``user_options`` for a member of ``groups``; empty options mean the default profile."""
    if not isinstance(user_options, Mapping):
        raise SelectionError("user_options", 'options must be an object such as {"profile": "small"}')
    unknown = sorted(str(k) for k in user_options if k not in KNOWN_FIELDS)
    if unknown:
        raise SelectionError(
            unknown[0], f"unknown option '{unknown[0]}'; the options are: {', '.join(KNOWN_FIELDS)}"
        )
    visible = catalog.visible_to(groups, kind)
    if not visible:
        raise SelectionError(
            PROFILE_FIELD,
            f"no profile is available to you for a {kind.value}; ask an admin to add you to a group",
        )
    choices = ", ".join(p.slug for p in visible)
    slug = user_options.get(PROFILE_FIELD)
    if slug is None or slug == "":
        profile = catalog.default_for(groups, kind)
        assert profile is not None  # visible is not empty
    elif not isinstance(slug, str):
        raise SelectionError(PROFILE_FIELD, f"profile must be a profile's slug; choose one of: {choices}")
    else:
        found = next((p for p in visible if p.slug == slug), None)
        if found is None:
            # The same words whether the profile is missing or forbidden: existence does not leak.
            raise SelectionError(
                PROFILE_FIELD,
                f"there is no profile '{_clip(slug)}' that you can use; choose one of: {choices}",
            )
        profile = found
    return Selection(profile, _resolve_image(profile, user_options.get(IMAGE_FIELD)))


def _resolve_image(profile: Profile, requested: Any) -> ImageChoice | None:
    if requested is None or requested == "":
        return profile.default_image
    if not profile.images:
        raise SelectionError(
            IMAGE_FIELD, f"profile '{profile.slug}' offers no choice of image; leave out the image option"
        )
    choice = profile.image(requested) if isinstance(requested, str) else None
    if choice is None:
        slugs = ", ".join(c.slug for c in profile.images)
        shown = _clip(requested) if isinstance(requested, str) else "that value"
        raise SelectionError(
            IMAGE_FIELD, f"image '{shown}' is not offered by profile '{profile.slug}'; choose one of: {slugs}"
        )
    return choice


def preselect(
    catalog: Catalog,
    last_options: Any,
    groups: frozenset[str] | set[str],
    kind: Kind = Kind.SERVER,
) -> Selection | None:
    """What the menu should pre-select: the user's last choice while it is still valid, else the default."""
    try:
        return resolve_selection(catalog, last_options or {}, groups, kind)
    except SelectionError:
        try:
            return resolve_selection(catalog, {}, groups, kind)
        except SelectionError:
            return None


def _clip(text: str, limit: int = 64) -> str:
    """Keep echoed user input short in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
