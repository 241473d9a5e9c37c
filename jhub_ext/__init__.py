"""jhub_ext: profile menus and a jobs service for JupyterHub.

``%load_ext jhub_ext`` in a notebook loads the jobs magics (see :mod:`jhub_ext.magics`).
"""


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """Register the jobs magics in IPython (what ``%load_ext jhub_ext`` calls)."""
    from jhub_ext.magics import load_ipython_extension as load

    load(ipython)
