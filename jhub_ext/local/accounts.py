"""System accounts for hub users: local mode's isolation boundary on a shared machine.

When the hub runs as root, each hub user gets an account of their own (``jupyter-alice``),
created on first use with a 0700 home directory, and that user's servers and jobs run as it,
as The Littlest JupyterHub does. The kernel then keeps users apart: one user's files, homes and
``/proc/PID/environ`` (where the tokens are) cannot be read by another.

Account names are one-to-one with hub user names: a name that is already a short, plain Linux
user name is kept (``jupyter-alice``); any other gets a readable prefix and a 64-bit hash of the
exact hub name after an underscore (``jupyter-jrgen_3f2a...``), which no kept name contains
(:func:`jhub_ext.core.names.account_name`).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from jhub_ext.core.names import account_name


@dataclass(frozen=True)
class Account:
    """A hub user's system account."""

    name: str
    uid: int
    gid: int
    home: Path


class AccountError(RuntimeError):
    """The account could not be created; the message says why."""


class Accounts:
    """Creates (once) and finds the accounts of hub users, with homes under ``homes``."""

    def __init__(self, homes: str | os.PathLike[str]):
        self.homes = Path(homes)
        self._lock = threading.Lock()

    def home_of(self, user: str) -> Path:
        """Where the home directory of ``user``'s account is (or will be)."""
        return self.homes / account_name(user)

    def ensure(self, user: str) -> Account:
        """The account of ``user``, created with its home if it does not exist yet."""
        name = account_name(user)
        with self._lock:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                entry = self._create(name, user)
            account = Account(name, entry.pw_uid, entry.pw_gid, self.home_of(user))
            self._prepare_home(account)
            return account

    def _create(self, name: str, user: str) -> pwd.struct_passwd:
        command = [
            "useradd",
            "--no-create-home",
            "--home-dir",
            str(self.home_of(user)),
            "--shell",
            "/bin/bash",
            "--user-group",
            "--comment",
            "JupyterHub user",
            name,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        try:  # another process (the hub or the jobs service) may have created it meanwhile
            return pwd.getpwnam(name)
        except KeyError:
            raise AccountError(f"cannot create the account {name}: {result.stderr.strip()}") from None

    def _prepare_home(self, account: Account) -> None:
        self.homes.mkdir(parents=True, exist_ok=True)
        self.homes.chmod(0o711)  # homes can be entered by their owners, not listed
        for parent in self.homes.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise AccountError(
                    f"the accounts cannot reach their homes in {self.homes}: {parent} may not be "
                    f"entered by other users; allow it (chmod o+x {parent}) or move the homes"
                )
        account.home.mkdir(mode=0o700, exist_ok=True)
        os.chown(account.home, account.uid, account.gid)
        account.home.chmod(0o700)


def drop_to(account: Account) -> None:
    """In a child process before exec: become ``account``, with its group only and a private umask."""
    os.setgid(account.gid)
    os.setgroups([])
    os.setuid(account.uid)
    os.umask(0o077)
