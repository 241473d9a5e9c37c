#!/usr/bin/env bash
# Build the pinned Helm client from its Go module into a versioned cache directory outside the
# repository.
#
#   scripts/build-helm.sh          build if missing, print the binary's directory last
#   scripts/build-helm.sh --dir    only print the directory (builds nothing)
#
# Idempotent: a second run finds the binary and costs nothing. Only the Go module proxy is used;
# no binary is downloaded or committed. Override the cache root with JHUB_EXT_CACHE.
#
# Version: helm.sh/helm/v4 v4.3.2 is the approved one. The fallback, should v4 be unusable, is
# HELM_VERSION=v3.21.4 (module helm.sh/helm/v3, also approved; this script handles both). Never
# v3.22.0: the proxy serves it, but it is not approved.
#
# The Kubernetes version Helm renders for without a cluster (`helm template`, `helm lint`: the
# chart's `kubeVersion` constraint, .Capabilities.KubeVersion, the deprecation checks) must be the
# control plane's (scripts/build-control-plane.sh builds v1.37.2); the Zero to JupyterHub chart
# asks for `kubeVersion: >=1.28.0-0`.
#   - Helm 4 has no -ldflags variable for it (its Makefile sets none): it reads the version of
#     k8s.io/client-go from the binary's own build info at run time and maps v0.Y.z to v1.Y.0.
#     v4.3.2's go.mod requires client-go v0.37.2, hence 1.37. `go install MODULE/cmd/helm@VERSION`
#     builds with exactly helm's go.mod (and keeps that build info).
#   - Helm 3 takes it from -ldflags (pkg/chartutil and pkg/lint/rules, k8sVersionMajor/Minor;
#     1.20 without them), which are set below for a v3 version.
# Either way the built binary is checked by rendering a probe chart before it is kept.
set -euo pipefail

HELM_VERSION=v4.3.2
# the Kubernetes version client-side rendering assumes: the control plane's (v1.37.2)
KUBE_MAJOR=1
KUBE_MINOR=37

. "$(dirname "${BASH_SOURCE[0]}")/go-toolchain.sh"
out="$cache_root/helm-$HELM_VERSION"

done_if_built "$out" "${1:-}" helm

say() { echo "build-helm: $*" >&2; }

use_go build-helm

export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"
module="helm.sh/helm/${HELM_VERSION%%.*}"
# What Helm's Makefile passes for a release build (-s -w and the version; a module from the proxy
# carries no git commit, so gitCommit and gitTreeState stay empty rather than invented).
ldflags="-s -w -X $module/internal/version.version=$HELM_VERSION -X $module/internal/version.metadata="
if [ "$module" = helm.sh/helm/v3 ]; then
  for pkg in pkg/chartutil pkg/lint/rules; do
    ldflags+=" -X $module/$pkg.k8sVersionMajor=$KUBE_MAJOR -X $module/$pkg.k8sVersionMinor=$KUBE_MINOR"
  done
fi

mkdir -p "$out"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS
cd "$work"

say "building helm $HELM_VERSION from $module (minutes on 2 cores)"
GOBIN="$work/bin" go install -ldflags "$ldflags" "$module/cmd/helm@$HELM_VERSION"

# Check the binary before keeping it: its version, and the Kubernetes version it renders for.
reported="$("$work/bin/helm" version --template '{{.Version}}')"
if [ "$reported" != "$HELM_VERSION" ]; then
  say "the built helm reports version '$reported', not $HELM_VERSION"
  exit 1
fi
mkdir -p "$work/probe/templates"
printf 'apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: ">=%s.%s.0-0"\n' \
  "$KUBE_MAJOR" "$KUBE_MINOR" > "$work/probe/Chart.yaml"
printf 'kube: {{ .Capabilities.KubeVersion.Version }}\n' > "$work/probe/templates/probe.yaml"
rendered="$(HELM_CONFIG_HOME="$work/h" HELM_CACHE_HOME="$work/h" HELM_DATA_HOME="$work/h" \
  "$work/bin/helm" template probe "$work/probe" --show-only templates/probe.yaml)" || {
  say "the built helm cannot render a chart for Kubernetes >= $KUBE_MAJOR.$KUBE_MINOR"
  exit 1
}
if [[ "$rendered" != *"kube: v$KUBE_MAJOR.$KUBE_MINOR."* ]]; then
  say "the built helm renders for the wrong Kubernetes version: $rendered"
  exit 1
fi

mv "$work/bin/helm" "$out/helm"
say "done in $((SECONDS - started)) s: helm $HELM_VERSION (renders for Kubernetes $KUBE_MAJOR.$KUBE_MINOR) in $out"
echo "$out"
