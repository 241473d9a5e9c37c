"""The pure core: the profile catalog and the jobs domain.

No I/O beyond reading the catalog's file, and none of tornado, jupyterhub, kubespawner, the
Kubernetes client or SQLAlchemy (``.importlinter``). Every other package builds on this one.
"""
