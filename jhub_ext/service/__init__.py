"""The jobs service process: researchers' scrapers, batch jobs and scheduled jobs.

``app`` (the only module that picks a backend), ``handlers`` and ``dashboard`` (HTTP), ``manager``
(the operations), ``reconcile``, ``store`` (SQLAlchemy and its Alembic ``migrations``), ``hubapi``
(what it asks the hub), ``bodies`` and ``keeper`` (its socket, kept through restarts).
"""
