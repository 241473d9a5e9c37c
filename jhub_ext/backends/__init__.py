"""Moved: the job backends are :mod:`jhub_ext.kubernetes.backend` and :mod:`jhub_ext.local.backend`.
Their old paths work until the next release (see :mod:`jhub_ext.moved`)."""
