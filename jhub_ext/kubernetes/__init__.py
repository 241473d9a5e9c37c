"""Everything about Kubernetes, and the only package that imports ``kubernetes_asyncio``.

- API access with one retry layer: ``api`` (the client, its errors, requests) and ``retry``;
  watch-fed caches: ``watch``.
- Pure manifest builders: ``pods`` (a profile becomes a pod spec), ``workloads`` (a job becomes a
  Job, Deployment or CronJob), ``quantities``; status read from objects: ``status``; what the
  nodes can hold: ``capacity``.
- The jobs backend (``backend``, with ``cronruns``, ``logs`` and ``view``) and the spawner's
  Kubernetes side (``spawner``: ``ProfileKubeSpawner``).
"""
