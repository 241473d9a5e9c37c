"""The jobs domain: what a job is (``model``), how its status moves (``lifecycle``), the cron
grammar both modes accept (``cron``), the one error tree (``errors``), one operation at a time per
job (``oneatatime``) and the interface every backend implements (``backend``)."""
