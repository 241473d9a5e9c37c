"""What servers and jobs run on, shared by the spawners and the jobs backends.

Watch-fed caches of Kubernetes objects (``watch``), resource limits of local processes
(``limits``), local mode's system accounts (``accounts``), the users' Python environment
(``userenv``) and logs capped while they are written (``logfile``).
"""
