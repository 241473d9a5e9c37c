"""Every name made from a user's input, for the places that restrict names.

Users and jobs are named by people: ``Jürgen.Müller@uni-köln.de`` may run ``news scraper``. Where a
name must fit a narrower alphabet or length, it is made here, by one of two rules:

- **Unique names** (a job's Kubernetes objects, a user's output directory, a system account, a
  server's control group): a readable prefix for the eye and :func:`digest`, 64 bits of a hash of
  the exact input, so that inputs which sanitise alike (``jürgen``, ``jörgen``) never share a name.
  The prefix is only where to look; what an object belongs to is written on it in full.
- **Label values** (:func:`label_value`): lossy, for selecting and reading only, never to tell two
  users apart.

A user's directory under the local jobs' state is the one reversible name (:func:`user_dir`): the
service reads whose jobs they are back from it.

These names are identities of things that exist (accounts, objects, directories), so a rule here
changes only with a migration; ``tests/unit/test_names.py`` pins them.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote, unquote

#: 64 bits of SHA-256, in hex: no collision to find by trying names
HASH_HEX = 16
#: a job's object name, at most: a CronJob's Jobs append 11 characters to its name, within 63
MAX_OBJECT_NAME = 52
_OBJECT_USER_PART = 12
_OBJECT_NAME_PART = MAX_OBJECT_NAME - _OBJECT_USER_PART - HASH_HEX - 2
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]")
ACCOUNT_PREFIX = "jupyter-"
_PLAIN_ACCOUNT = re.compile(r"[a-z][a-z0-9-]{0,22}")  # with the prefix: at most 31 characters, no "_"
_NOT_ACCOUNT = re.compile(r"[^a-z0-9-]+")
_USER_DIR = "u-"
#: matches every :func:`user_dir` name (in ``Path.glob``)
USER_DIRS = _USER_DIR + "*"


def digest(*parts: str) -> str:
    """:data:`HASH_HEX` hex digits of the SHA-256 of ``parts`` joined by NUL (which no job name
    holds, so the joining is unambiguous whatever a user name holds)."""
    joined = "\0".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()[:HASH_HEX]


def readable(text: str, limit: int) -> str:
    """Lower-case letters and digits of ``text`` (any run of anything else: one '-'), at most ``limit``
    characters, alphanumeric at both ends; possibly empty. Lossy: only ever a prefix for the eye."""
    return _NOT_DNS.sub("-", text.lower())[:limit].strip("-")


def object_name(user: str, name: str) -> str:
    """The name of a user's job's Kubernetes objects: a DNS-1123 label of at most
    :data:`MAX_OBJECT_NAME` characters, valid for every kind, a CronJob included."""
    parts = [readable(user, _OBJECT_USER_PART) or "u", readable(name, _OBJECT_NAME_PART)]
    return "-".join([*(part for part in parts if part), digest(user, name)])


def output_subdir(user: str) -> str:
    """The user's sub-directory of the output volume (unlike :func:`label_value`, no two users share
    one)."""
    return f"{readable(user, 40) or 'u'}-{digest(user)}"


def label_value(text: str) -> str:
    """``text`` as a valid Kubernetes label value: allowed characters only, at most 63, alphanumeric
    ends."""
    value = _NOT_LABEL.sub("-", text)[:63].strip("-_.")
    return value or "x"


def account_name(user: str) -> str:
    """The system account of hub user ``user``: one-to-one, at most 32 characters; a plain user name
    is kept as it is."""
    if _PLAIN_ACCOUNT.fullmatch(user):
        return f"{ACCOUNT_PREFIX}{user}"
    prefix = _NOT_ACCOUNT.sub("-", user.lower()).strip("-")[:7]
    return f"{ACCOUNT_PREFIX}{prefix}_{digest(user)}"


def server_confinement(user: str, server: str) -> str:
    """The name of a local server's control group and network namespace."""
    return f"srv-{digest(user, server)}"


def user_dir(user: str) -> str:
    """A user's directory name under the local jobs' state and output: reversible
    (:func:`user_of_dir`), and a single path component whatever the name holds."""
    return _USER_DIR + quote(user, safe="")


def user_of_dir(directory: str) -> str | None:
    """The user a :func:`user_dir` name is of; None for any other name."""
    return unquote(directory[len(_USER_DIR) :]) if directory.startswith(_USER_DIR) else None
