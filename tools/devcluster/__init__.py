"""A local Kubernetes control plane for tests and ``make cluster``: real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler built from their Go modules, and a node agent that
runs pods as local processes in place of kubelets."""
