"""A node agent that runs pods as local processes, in place of kubelets: see :mod:`.agent`."""
