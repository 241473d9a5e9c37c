#!/usr/bin/env bash
# Build Kueue (the Kubernetes batch queue, for the tests of clusters that run it) from its Go module,
# into a versioned cache directory outside the repository, with its CustomResourceDefinitions beside it.
#
#   scripts/build-kueue.sh          build if missing, print the directory last
#   scripts/build-kueue.sh --dir    only print the directory (builds nothing)
#
# Idempotent: a second run finds the binary and costs nothing. Only the Go module proxy is used;
# no binary is downloaded or committed. Override the cache root with JHUB_EXT_CACHE.
#
# The directory holds `kueue` (the controller manager, cmd/kueue) and `crds/` (the module's
# config/components/crd/bases), which the tests apply before they start it.
set -euo pipefail

KUEUE_VERSION=v0.17.0  # the version #23 approves

. "$(dirname "${BASH_SOURCE[0]}")/go-toolchain.sh"
out="$cache_root/kueue-$KUEUE_VERSION"

done_if_built "$out" "${1:-}" kueue

say() { echo "build-kueue: $*" >&2; }

use_go build-kueue
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"
mkdir -p "$out"
started=$SECONDS

say "fetching sigs.k8s.io/kueue@$KUEUE_VERSION"
module_dir="$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
[ -d "$module_dir/config/components/crd/bases" ] || { say "could not download sigs.k8s.io/kueue@$KUEUE_VERSION"; exit 1; }
rm -rf "$out/crds"
mkdir -p "$out/crds"
cp "$module_dir"/config/components/crd/bases/*.yaml "$out/crds/"
chmod 644 "$out"/crds/*.yaml

# Kueue's go.mod replaces nothing, so its command builds straight from the module (minutes on 2 cores).
say "building kueue $KUEUE_VERSION (minutes on 2 cores)"
GOBIN="$out/bin.tmp" go install "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
# kept only if it runs
if ! "$out/bin.tmp/kueue" --help >/dev/null 2>&1; then
  say "the built binary does not run: $("$out/bin.tmp/kueue" --help 2>&1 | tail -3)"
  exit 1
fi
mv "$out/bin.tmp/kueue" "$out/kueue"
rmdir "$out/bin.tmp"

say "done in $((SECONDS - started)) s: $out/kueue and $(ls "$out/crds" | wc -l) CRDs"
echo "$out"
