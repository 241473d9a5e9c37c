"""Moved: the jobs domain to :mod:`jhub_ext.core.jobs`, the jobs service to :mod:`jhub_ext.service`.
Only ``jhub_ext.jobs.app`` stays, until the next release (see :mod:`jhub_ext.moved`)."""
