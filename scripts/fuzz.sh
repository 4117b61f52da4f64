#!/usr/bin/env bash
# Fuzzes every decoder of outside bytes with cargo-fuzz (libFuzzer), one target after the
# other, each for a fixed time; prints one summary line per target (executions, corpus size,
# whether it crashed) and exits non-zero when any target crashed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
#   SECONDS  time per target (default 60)
#   TARGET   only these targets (default: every target in fuzz/Cargo.toml)
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`). New inputs go to fuzz/corpus-work/<target>/ (git-ignored); the
# committed seeds in fuzz/corpus/<target>/ are read, never written. A crash leaves its input in
# fuzz/artifacts/<target>/; once fixed, copy it into fuzz/corpus/<target>/ so the corpus replay
# (tests/fuzz_corpus.rs, on stable) keeps it fixed. Runs one job at a time (shared machines).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "a nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is needed: cargo install cargo-fuzz" >&2
  exit 2
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# Build the targets up front (one cargo run), so each time budget is spent fuzzing.
if [ "$#" -gt 0 ]; then
  for target in "${targets[@]}"; do (cd fuzz && cargo +nightly fuzz build "$target"); done
else
  (cd fuzz && cargo +nightly fuzz build)
fi

summary=()
failed=0
for target in "${targets[@]}"; do
  work=fuzz/corpus-work/$target
  mkdir -p "$work" "fuzz/corpus/$target" "fuzz/artifacts/$target"
  log=fuzz/corpus-work/$target.log
  echo "== $target (${seconds}s)"
  status=0
  (cd fuzz && cargo +nightly fuzz run "$target" "corpus-work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096) \
    >"$log" 2>&1 || status=$?
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
  per_second=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
  corpus=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 || true)
  coverage=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $status; input in fuzz/artifacts/$target/, log $log)"
    failed=1
    grep -E '^(thread .* panicked|==[0-9]+==ERROR)' -A3 "$log" | head -20 || true
  fi
  summary+=("$(printf '%-20s %12s execs %8s/s  %-16s %-10s %s' "$target" "${execs:-?}" \
    "${per_second:-?}" "${corpus:-}" "${coverage:-}" "$result")")
done

echo
echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
