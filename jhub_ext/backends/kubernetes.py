"""Moved to :mod:`jhub_ext.kubernetes.backend`.

This old path works until the next release (see :mod:`jhub_ext.moved`).
"""

from jhub_ext.moved import reexport

reexport(__name__, globals())
