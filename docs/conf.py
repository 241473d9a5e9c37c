"""Sphinx configuration: the Markdown pages under docs/, read with MyST, as JupyterHub's docs are.

``make docs`` builds them into ``build/docs/`` with warnings as errors, so a broken link between pages
or to a heading fails the build. Nothing is fetched from the network: links to other sites are written
out as they are, never checked here.
"""

project = "jhub_ext"
author = "the jhub_ext authors"
copyright = "the jhub_ext authors"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "generate.py", "conf.py"]

# Headings get GitHub's anchors, so that `page.md#some-heading` works both here and on GitHub.
myst_heading_anchors = 6
# Every cross-reference must resolve.
nitpicky = True

html_theme = "pydata_sphinx_theme"
html_title = "jhub_ext"
html_theme_options = {"navigation_with_keys": False}
