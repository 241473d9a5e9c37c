#!/usr/bin/env bash
# Build the pinned Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler),
# kubectl and etcd from their Go modules, into a versioned cache directory outside the repository.
#
#   scripts/build-control-plane.sh          build if missing, print the binaries' directory last
#   scripts/build-control-plane.sh --dir    only print the directory (builds nothing)
#
# Idempotent: a second run finds the binaries and costs nothing. Only the Go module proxy is used;
# no binary is downloaded or committed. Override the cache root with JHUB_EXT_CACHE.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.16

. "$(dirname "${BASH_SOURCE[0]}")/go-toolchain.sh"
out="$cache_root/kubernetes-$KUBERNETES_VERSION-etcd-$ETCD_VERSION"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

done_if_built "$out" "${1:-}" "${binaries[@]}"

say() { echo "build-control-plane: $*" >&2; }

use_go build-control-plane

export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"
mkdir -p "$out"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# --- Kubernetes: a consumer module that replaces each staging module by its published version ---
mkdir -p "$work/kube"
cd "$work/kube"
say "fetching k8s.io/kubernetes@$KUBERNETES_VERSION's module description"
kube_dir="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
[ -f "$kube_dir/go.mod" ] || { say "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
{
  echo "module jhub_ext/controlplane"
  echo
  sed -n 's/^go \(.*\)$/go \1/p' "$kube_dir/go.mod"
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  echo "replace ("
  # Every `k8s.io/X => ./staging/...` of upstream's go.mod becomes `k8s.io/X => k8s.io/X vSTAGING`.
  sed -n 's/^\s*\(k8s\.io\/[A-Za-z0-9._/-]*\) => \.\/staging\/.*$/\t\1 => \1 '"$STAGING_VERSION"'/p' "$kube_dir/go.mod"
  echo ")"
} > go.mod
cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
say "resolving Kubernetes' dependencies (go mod tidy)"
go mod tidy >/dev/null 2>"$work/tidy.log" || { cat "$work/tidy.log" >&2; exit 1; }
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  if [ -x "$out/$b" ]; then continue; fi
  say "building $b (minutes on 2 cores; elapsed $((SECONDS - started)) s)"
  go build -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
    -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b"
  mv "$out/$b.tmp" "$out/$b"
done

# --- etcd: the server module's main package is at its root ---
if [ ! -x "$out/etcd" ]; then
  mkdir -p "$work/etcd"
  cd "$work/etcd"
  say "building etcd $ETCD_VERSION (elapsed $((SECONDS - started)) s)"
  cat > go.mod <<EOF
module jhub_ext/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat > tools.go <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  go mod tidy >/dev/null 2>"$work/tidy-etcd.log" || { cat "$work/tidy-etcd.log" >&2; exit 1; }
  go build -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$out/etcd.tmp" "$out/etcd"
fi

say "done in $((SECONDS - started)) s: ${binaries[*]} in $out"
echo "$out"
