#!/usr/bin/env bash
# Runs the function app locally on http://localhost:7071 against Azurite.
#
# Starts Azurite on its default ports (10000-10002, data in .azurite/), assembles the app
# (debug build) into dist/local-app, and runs it under `func host start` when Azure Functions
# Core Tools are installed, else under streamfold's Functions host simulator (testbed/hostsim).
# Settings come from local.settings.json (created from local.settings.json.template).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x node_modules/.bin/azurite ] || npm ci --no-audit --no-fund
[ -f local.settings.json ] || cp local.settings.json.template local.settings.json

mkdir -p .azurite
if ! (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null; then
  node_modules/.bin/azurite --silent --location .azurite --skipApiVersionCheck --disableTelemetry \
    --blobHost 127.0.0.1 --tableHost 127.0.0.1 --queueHost 127.0.0.1 &
  azurite_pid=$!
  trap 'kill $azurite_pid 2>/dev/null || true' EXIT
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null && break; sleep 0.1; done
fi

scripts/assemble.sh --debug dist/local-app
# The local settings go into this run folder only, never into a deploy package.
cp local.settings.json dist/local-app/local.settings.json
if command -v func >/dev/null; then
  cd dist/local-app && exec func host start --port 7071
fi
cargo build -p streamfold-testbed --bin hostsim
target/debug/hostsim --port 7071 dist/local-app
