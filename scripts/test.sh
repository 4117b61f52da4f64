#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests against real Azurite through the
# Functions host simulator. Installs what it needs (Azurite from package-lock.json, the Python
# packages of the cross-checks) on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x node_modules/.bin/azurite ] || [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi

# The browser test (tests/integration/browser.rs) needs Debian's chromium.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

# Python tools used by some tests (official Event Grid SDK, OpenAPI validator), pinned.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  python3 -m venv .venv
fi
if ! cmp -s requirements-test.txt .venv/.installed 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
  cp requirements-test.txt .venv/.installed
fi
export STREAMFOLD_PYTHON="$PWD/.venv/bin/python"

# The `fuzzing` feature adds the fuzz corpus replay (tests/fuzz_corpus.rs) to the suite and
# changes nothing else, so one build serves both.
build=(--workspace --features streamfold/fuzzing)
if [ "${1:-}" = --no-run ]; then
  # Build only: every test binary, the handler and the host simulator, into target/debug
  # (.ci/run builds once this way, then runs the benchmark and the API contract test on it).
  # nextest builds through `cargo test --no-run` with the same arguments, so it reuses all of it.
  shift
  cargo test "${build[@]}" --no-run "$@"
elif cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run "${build[@]}" --no-fail-fast "$@"
else
  cargo test "${build[@]}" --no-fail-fast "$@"
fi
