"""What runs inside JupyterHub's own process: ``config.configure(c)`` (both modes, and the chart),
``login``, ``chart``, the demo authenticator (``demoauth``), the admins' ``jhub-ext`` command
(``admin_cli``) and the proxy's wrapper (``proxy.mjs``)."""
