#!/usr/bin/env bash
# Install the system parts jhub_ext needs, idempotently and without prompts:
#   proxy     configurable-http-proxy (Node.js), linked into .venv/bin
#   chart-proxy  the configurable-http-proxy of images/proxy (the chart's), in .venv/chart-proxy, for
#             the tests that run the chart's proxy pod here
#   chromium  Debian's Chromium, for the browser tests
#   venv      Debian's python3-venv, where `python3 -m venv` is missing
#   postgres  Debian's PostgreSQL server, for the tests of the jobs store on PostgreSQL
#   cc        a C compiler, for the OIDC provider the login tests use (scripts/build-hydra.sh; cgo)
#   confine   pasta (Debian's passt) and ip (iproute2): local mode's network namespaces, as root
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
    echo "install-system: need root (or sudo) to run: $*" >&2; return 1; fi
}

apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_proxy() {
  if [ -x "$venv/bin/configurable-http-proxy" ]; then return; fi
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$venv/node"
  npm install --silent --no-audit --no-fund --prefix "$venv/node" configurable-http-proxy@4 >/dev/null
  ln -sf "../node/node_modules/.bin/configurable-http-proxy" "$venv/bin/configurable-http-proxy"
  echo "install-system: configurable-http-proxy installed in $venv"
}

install_chart_proxy() {
  local version
  version=$(sed -n 's#^FROM .*/configurable-http-proxy:\([0-9.]*\)$#\1#p' images/proxy/Dockerfile)
  [ -n "$version" ] || { echo "install-system: no configurable-http-proxy in images/proxy/Dockerfile" >&2; return 1; }
  local package="$venv/chart-proxy/node_modules/configurable-http-proxy/package.json"
  if [ -f "$package" ] && grep -q "\"version\": \"$version\"" "$package"; then return; fi
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$venv/chart-proxy"
  npm install --silent --no-audit --no-fund --prefix "$venv/chart-proxy" "configurable-http-proxy@$version" >/dev/null
  echo "install-system: configurable-http-proxy $version (the chart's) installed in $venv/chart-proxy"
}

install_chromium() {
  if [ -x /usr/bin/chromium ]; then return; fi
  apt_install chromium fonts-liberation
  echo "install-system: chromium installed"
}

install_postgres() {
  if compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then return; fi
  apt_install postgresql
  echo "install-system: postgresql installed"
}

install_cc() {
  if command -v cc >/dev/null; then return; fi
  apt_install gcc libc6-dev
  echo "install-system: a C compiler installed"
}

install_confine() {
  if [ "$(id -u)" != 0 ]; then return; fi  # only a hub run as root confines servers and jobs
  if command -v pasta >/dev/null && command -v ip >/dev/null; then return; fi
  apt_install passt iproute2
  echo "install-system: pasta and ip installed"
}

install_venv() {
  apt_install python3-venv
}

for part in "$@"; do
  case "$part" in
    proxy) install_proxy ;;
    chart-proxy) install_chart_proxy ;;
    chromium) install_chromium ;;
    venv) install_venv ;;
    postgres) install_postgres ;;
    cc) install_cc ;;
    confine) install_confine ;;
    *) echo "install-system: unknown part '$part' (use proxy, chart-proxy, chromium, venv, postgres, cc, confine)" >&2; exit 2 ;;
  esac
done
