"""Where work runs: the Kubernetes API (and, for jobs, a local process supervisor)."""
