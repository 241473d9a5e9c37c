# Sourced by the build-*.sh scripts: where their builds are cached, and a Go toolchain to build with.
# Only the Go module proxy is used; no binary is downloaded.

cache_root="${JHUB_EXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jhub_ext}"

# done_if_built OUT ARG BINARY...: the scripts' common start. With ARG --dir, print OUT and exit (build
# nothing); when every BINARY is in OUT already, print OUT and exit; else return, to build.
done_if_built() {
  local out="$1" arg="$2" binary
  shift 2
  if [ "$arg" = "--dir" ]; then echo "$out"; exit 0; fi
  for binary in "$@"; do [ -x "$out/$binary" ] || return 0; done
  echo "$out"
  exit 0
}

# use_go NAME: put Go on the PATH, Go 1.26 or newer (an older one fetches go1.26.8 through the module
# proxy, GOTOOLCHAIN); NAME prefixes the messages. Exits with what to install when there is no Go.
use_go() {
  local who="$1" candidate go_minor
  if ! command -v go >/dev/null; then
    for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
      if [ -x "$candidate" ]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
    done
  fi
  if ! command -v go >/dev/null; then
    echo "$who: no Go toolchain found. Install Go 1.26 or newer (Debian: apt-get install golang-go," \
         "or a release from the Go project) and run again." >&2
    exit 1
  fi
  go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
  if [ "${go_minor:-0}" -lt 26 ]; then
    export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.26.8}"
    echo "$who: Go $(go env GOVERSION) is older than 1.26; using GOTOOLCHAIN=$GOTOOLCHAIN" >&2
  fi
  export GOPROXY="${GOPROXY:-https://proxy.golang.org}"
}
