# Installed as /etc/ipython/ipython_config.py in the notebook images: every kernel loads the
# jobs magics (%%deploy_scraper, %jobs, ...), so researchers need no %load_ext.
c = get_config()  # noqa: F821
c.InteractiveShellApp.extensions = ["jhub_ext"]
