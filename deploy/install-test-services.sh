#!/usr/bin/env bash
# Installs the servers the test suite starts on its own (never as system services):
# PostgreSQL, from Debian's packages, when no initdb is on the machine.
set -euo pipefail
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "peftserve install: postgresql (Debian package) for the registry tests" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q postgresql
fi
