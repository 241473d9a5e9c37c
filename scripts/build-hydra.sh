#!/usr/bin/env bash
# Build Ory Hydra (the OAuth2/OIDC provider the tests log in through) from its Go module, into a
# versioned cache directory outside the repository.
#
#   scripts/build-hydra.sh          build if missing, print the binary's directory last
#   scripts/build-hydra.sh --dir    only print the directory (builds nothing)
#
# Idempotent: a second run finds the binary and costs nothing. Only the Go module proxy is used;
# no binary is downloaded or committed. Override the cache root with JHUB_EXT_CACHE.
#
# Hydra keeps its state in a database; the tests run it with DSN=memory, which is an in-memory
# SQLite database. Hydra reaches SQLite only through github.com/mattn/go-sqlite3 (behind its `sqlite`
# build tag), a cgo driver: a CGO_ENABLED=0 build knows no SQLite and refuses DSN=memory. So this
# build uses cgo and a C compiler, with the tags Hydra's own Makefile uses.
set -euo pipefail

HYDRA_VERSION=v2.3.0

. "$(dirname "${BASH_SOURCE[0]}")/go-toolchain.sh"
out="$cache_root/hydra-$HYDRA_VERSION"

done_if_built "$out" "${1:-}" hydra

say() { echo "build-hydra: $*" >&2; }

use_go build-hydra
if ! command -v "${CC:-cc}" >/dev/null; then
  say "no C compiler (${CC:-cc}) found. Hydra's in-memory database (SQLite, DSN=memory) is a cgo" \
      "driver, so the build needs one: apt-get install gcc (or set CC), and run again."
  exit 1
fi

export CGO_ENABLED=1 GOFLAGS="-buildvcs=false -trimpath"
mkdir -p "$out"
work="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# A consumer module that requires Hydra and repeats the replace lines of Hydra's go.mod it can use.
cd "$work"
say "fetching github.com/ory/hydra/v2@$HYDRA_VERSION's module description"
hydra_dir="$(go mod download -json "github.com/ory/hydra/v2@$HYDRA_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')"
[ -f "$hydra_dir/go.mod" ] || { say "could not download github.com/ory/hydra/v2@$HYDRA_VERSION"; exit 1; }
{
  echo "module jhub_ext/hydra"
  echo
  sed -n 's/^go \(.*\)$/go \1/p' "$hydra_dir/go.mod"
  echo
  echo "require github.com/ory/hydra/v2 $HYDRA_VERSION"
  echo
  # Replaces by another module version (`A => B vX`) carry over as they are. Upstream's one local
  # replace, hydra-client-go => ./internal/httpclient, is a nested module the zip leaves out; the
  # published hydra-client-go that Hydra's go.mod requires stands in for it.
  sed -n 's/^replace \([^ ]*\) => \([^ .][^ ]*\) \(v[^ ]*\)$/replace \1 => \2 \3/p' "$hydra_dir/go.mod"
} > go.mod
cat > tools.go <<'EOF'
//go:build tools

package tools

import _ "github.com/ory/hydra/v2"
EOF
say "resolving Hydra's dependencies (go mod tidy)"
go mod tidy >/dev/null 2>"$work/tidy.log" || { cat "$work/tidy.log" >&2; exit 1; }
# Hydra's main package is the module's root (main.go), as in its Makefile's `go install .`.
say "building hydra $HYDRA_VERSION with cgo and SQLite (minutes on 2 cores; elapsed $((SECONDS - started)) s)"
go build -tags sqlite,sqlite_omit_load_extension \
  -ldflags "-s -w -X github.com/ory/hydra/v2/driver/config.Version=$HYDRA_VERSION" \
  -o "$out/hydra.tmp" github.com/ory/hydra/v2
# kept only if it runs and is the pinned version
built_version="$("$out/hydra.tmp" version 2>&1 || true)"
if ! grep -q "Version:[[:space:]]*$HYDRA_VERSION\$" <<<"$built_version"; then
  say "the built binary does not run as hydra $HYDRA_VERSION: $built_version"
  exit 1
fi
mv "$out/hydra.tmp" "$out/hydra"

say "done in $((SECONDS - started)) s: $out/hydra"
echo "$out"
