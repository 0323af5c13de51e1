#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, when it is
# missing: the one package list that `make test` (README's test command)
# and CI (.ci/run) share. Needs root to install; says what is missing
# otherwise.
set -euo pipefail

# gcc, pkg-config, libseccomp-dev: the build (the seccomp filters are compiled
# with libseccomp through cgo).
# nginx + lua: the end-to-end test of examples/nginx (nginx workers talking
# to sockwarden through the Lua client) and the same client under lua5.1.
# rsyslog: the audit shipping test forwards records through two rsyslogd
# (started by the test with their own configs; no system service).
# prometheus: the metrics test scrapes a server with a real Prometheus
# (started by the test on a loopback port; the package's service is not
# started).
# apache2-utils: ab, which make bench (scripts/bench.sh) drives nginx with.
packages=(make gcc pkg-config libseccomp-dev coreutils nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua5.1 lua-socket prometheus rsyslog apache2-utils)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/deps.sh: the tests need these Debian packages: ${missing[*]}" >&2
    echo "scripts/deps.sh: run as root (the tests need root anyway), or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "scripts/deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Install without starting services (nginx would start on port 80).
  policy=/usr/sbin/policy-rc.d
  had_policy=no; [ -e "$policy" ] && had_policy=yes
  [ "$had_policy" = yes ] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; }
  trap '[ "$had_policy" = yes ] || rm -f "$policy"' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# opa, the version of the OPA library sockwarden embeds: the tests compare
# `sockwarden policy test` with `opa test` on the same policies. Built from
# the Go module proxy (a few minutes, once).
opa_version=$(cd "$(dirname "$0")/.." && go list -m -f '{{.Version}}' github.com/open-policy-agent/opa)
opa_bin=/usr/local/bin/opa
[ "$(id -u)" = 0 ] || opa_bin="$(go env GOPATH)/bin/opa"
if ! "$opa_bin" version 2>/dev/null | grep -qx "Version: ${opa_version#v}"; then
  echo "scripts/deps.sh: installing opa $opa_version into $(dirname "$opa_bin")" >&2
  (cd / && GOFLAGS= GOBIN="$(dirname "$opa_bin")" go install "github.com/open-policy-agent/opa@$opa_version")
fi
