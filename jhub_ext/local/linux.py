"""The Linux system calls that confinement needs and Python 3.11's ``os`` lacks, through the C library."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def call(name: str, *args: object) -> None:
    """Call the C library's ``name`` with ``args``; OSError (with the errno) where it fails."""
    if getattr(_libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{name}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    """unshare(2)."""
    call("unshare", flags)


def setns(path: str | os.PathLike[str], nstype: int) -> None:
    """Enter the namespace bound at ``path`` (setns(2))."""
    fd = os.open(path, os.O_RDONLY)
    try:
        call("setns", fd, nstype)
    finally:
        os.close(fd)


def _bytes(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    """mount(2), without data."""
    call("mount", _bytes(source), target.encode(), _bytes(fstype), flags, None)


def umount(target: str, flags: int = MNT_DETACH) -> None:
    """umount2(2), lazily by default."""
    call("umount2", target.encode(), flags)


def die_with_parent(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent thread ends (PR_SET_PDEATHSIG)."""
    call("prctl", PR_SET_PDEATHSIG, signum)
