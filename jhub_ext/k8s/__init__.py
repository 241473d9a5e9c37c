"""Pure functions from validated specs to Kubernetes manifests and back (no I/O, no client).

Shared by the Kubernetes spawner and the jobs service, so that servers and jobs of the
same profile get the same resources, scheduling, labels and security context.
"""
