"""Every IPython kernel of an environment that has jhub_ext loads the jobs magics.

So researchers need no ``%load_ext jhub_ext`` before ``%%deploy_scraper`` or ``%jobs``. Installed
as ``<prefix>/etc/ipython/ipython_config.py`` (setup.cfg's data_files; make copies it into .venv,
whose editable install leaves it out), one of the directories IPython reads its configuration from.
"""

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - IPython gives its config files this
c.InteractiveShellApp.extensions = ["jhub_ext"]
