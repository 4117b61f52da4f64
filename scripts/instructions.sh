#!/usr/bin/env bash
# Instructions per append, with the breakdown by crate and by function (docs/benchmarks.md,
# "Instructions per append"). Builds the benchmark and the handler in the release profile WITH
# symbols (in target/instructions, so the stripped release build stays as it is), runs the
# benchmark's `instructions` section (valgrind's callgrind counts the library driver, the
# handler process and the host simulator's process; see benches/streamfold/instructions.rs),
# keeps the callgrind dumps, and prints for each path the instructions per append by crate and
# the top functions.
#
#   scripts/instructions.sh [--short] [--top N]
#
#   --short  20 counted appends per path instead of 200
#   --top N  functions listed per path (default 25)
#
# Needs valgrind (Debian: apt-get install valgrind) and Azurite (npm ci), as the benchmark.
# `perf stat -e instructions` would be cheaper but needs hardware counters, which virtual
# machines often do not expose ("<not supported> instructions").
set -euo pipefail
cd "$(dirname "$0")/.."

short=()
top=25
while [[ $# -gt 0 ]]; do
  case "$1" in
    --short) short=(--short); shift ;;
    --top) top="$2"; shift 2 ;;
    *) echo "usage: scripts/instructions.sh [--short] [--top N]" >&2; exit 2 ;;
  esac
done

command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }

target=target/instructions
export CARGO_PROFILE_BENCH_STRIP=false CARGO_PROFILE_BENCH_DEBUG=line-tables-only
export CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
# The benchmark's executable, as cargo names it (the `streamfold` CLI binary shares the prefix
# in deps/, so the newest `streamfold-*` file is not necessarily the benchmark).
bench=$(cargo bench --bench streamfold --no-run --target-dir "$target" 2>&1 | tee /dev/stderr \
  | sed -n 's/^ *Executable .*(\(.*\))$/\1/p' | tail -1)
[[ -n "$bench" ]] || { echo "cargo named no benchmark executable" >&2; exit 1; }

dumps="$PWD/$target/callgrind"  # absolute: the handler under valgrind runs in its app folder
rm -rf "$dumps"
mkdir -p "$dumps"
STREAMFOLD_CALLGRIND_DIR="$dumps" "$bench" "${short[@]}" --only instructions \
  --json "$target/instructions.json"

# Dump 1 of the library driver; dumps 1 (handler port) and 2 (through the host simulator) of
# the handler process; dump 1 of the host driver (the simulator's side of the full path).
for path in library:library.*.1 handler:handler.*.1 full:handler.*.2 host:host.*.1; do
  name=${path%%:*}
  file=$(ls "$dumps"/${path#*:} 2>/dev/null | head -1)
  [[ -n "$file" ]] || { echo "no callgrind dump for $name" >&2; continue; }
  appends=$(python3 -c 'import json,sys; rows=json.load(open(sys.argv[1]))["rows"]; print(next(r["note"].split()[1] for r in rows if r["id"].endswith("." + sys.argv[2])))' "$target/instructions.json" "$name")
  echo
  echo "== $name path: $file ($appends appends)"
  callgrind_annotate --auto=no --threshold=100 "$file" | python3 scripts/callgrind-breakdown.py --appends "$appends" --top "$top"
done
