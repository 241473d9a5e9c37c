"""JupyterHub configuration for jhub_ext, for both modes: ``jupyterhub -f hub_config/jupyterhub_config.py``.

Everything is in :func:`jhub_ext.hub.config.configure` (its docstring lists the environment variables:
the mode, ports, demo users, the identity provider, the jobs service). Profiles come from
``profiles.yaml`` and the jobs service's settings from ``jobs_config.py``, both beside this file.
With the Zero to JupyterHub chart, ``hub.extraConfig`` calls the same function (hub_config/values.yaml).
"""

from pathlib import Path

from jhub_ext.hub.config import configure

configure(get_config(), Path(__file__).resolve().parent)  # noqa: F821 - get_config: given by JupyterHub
