"""Moved to :mod:`jhub_ext.service.app`; ``python -m jhub_ext.jobs.app`` works until the next release
(see :mod:`jhub_ext.moved`)."""

from jhub_ext.moved import reexport

reexport(__name__, globals())

if __name__ == "__main__":
    main()  # type: ignore[name-defined]  # noqa: F821
