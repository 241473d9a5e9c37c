"""Everything about local processes: local mode's servers and jobs on this machine.

- The spawner's local side (``spawner``: ``LocalProfileSpawner``) and the jobs backend
  (``backend``, with ``process``, ``state``, ``supervision``, ``sweep`` and ``runner``, the process
  that runs one job).
- What they run on: system accounts (``accounts``), the users' Python environment (``userenv``),
  confinement as root (``confine``: ``cgroups``, ``netns``, ``linux``), per-process limits without
  it (``limits``), bounded log files (``logfile``) and processes tied to the hub (``tied``).
"""
