#!/usr/bin/env bash
# API contract test: schemathesis against the OpenAPI document the app serves
# (GET /api/openapi.json), through the Functions host simulator, against a fresh Azurite.
#
#   scripts/api-contract.sh [EXTRA SCHEMATHESIS ARGS...]
#
# What it checks, for every documented operation: no server error (5xx), every status is one the
# document lists for that operation, every answer has the documented content type (so every
# documented 4xx is application/problem+json) and matches the documented schema (the Problem
# schema requires a `urn:streamfold:problem:<slug>` type and the status). Bounded and
# reproducible: a fixed number of generated cases per operation, a fixed seed, no example
# database carried between runs, one worker, and a hard time limit.
#
# Everything it starts (Azurite on free ports with its data in a temporary folder, the host
# simulator and the handler) is stopped on exit, whatever happens. The JUnit report and the
# host's log are written to target/api-contract/. Exits non-zero when schemathesis finds a
# failure.
#
# Operations not exercised, and why:
#   - the timer (NotificationSweep) and Event Grid (Projector) functions are not HTTP operations
#     and are not in the document; the notifications the appends raise still reach the
#     Projector through the simulator's Event Grid webhook while this runs;
#   - nothing else is excluded.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cases generated per operation in the fuzzing phase, and the seed of the whole run.
MAX_EXAMPLES=${API_CONTRACT_MAX_EXAMPLES:-20}
SEED=${API_CONTRACT_SEED:-20240917}
# Hard bound on the schemathesis run (seconds).
TIME_LIMIT=${API_CONTRACT_TIME_LIMIT:-600}
# 1: run the handler and host simulator already in target/debug (`scripts/test.sh --no-run`
# builds both, with the test suite's packages and features; .ci/run uses that so the whole run
# compiles the debug build once) instead of building them here.
PREBUILT=${API_CONTRACT_PREBUILT:-0}

[ -x node_modules/.bin/azurite ] || npm ci --no-audit --no-fund
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys' 2>/dev/null; then
  python3 -m venv .venv
fi
if ! cmp -s requirements-test.txt .venv/.installed 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
  cp requirements-test.txt .venv/.installed
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/streamfold-api-contract.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # hostsim stops its handler gracefully (SIGTERM, then SIGKILL after 10 s)
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports: Azurite's blob, queue and table services, and the host.
read -r blob_port queue_port table_port host_port < <(python3 - <<'PY'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
PY
)

wait_for_port() {
  local port=$1 what=$2 pid=$3
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "$what exited before listening" >&2; return 1; fi
    sleep 0.1
  done
  echo "$what did not listen on $port within 30 s" >&2
  return 1
}

echo "== Azurite (blob $blob_port, table $table_port)"
mkdir -p "$work/azurite"
node_modules/.bin/azurite --silent --location "$work/azurite" --skipApiVersionCheck \
  --disableTelemetry --blobHost 127.0.0.1 --blobPort "$blob_port" --queueHost 127.0.0.1 \
  --queuePort "$queue_port" --tableHost 127.0.0.1 --tablePort "$table_port" \
  >"$work/azurite.log" 2>&1 &
pids+=($!)
wait_for_port "$blob_port" Azurite "${pids[-1]}"
wait_for_port "$table_port" Azurite "${pids[-1]}"

echo "== app"
if [ "$PREBUILT" = 1 ]; then
  for binary in target/debug/handler target/debug/hostsim; do
    [ -x "$binary" ] || { echo "API_CONTRACT_PREBUILT=1 but $binary is missing" >&2; exit 1; }
  done
  scripts/assemble.sh --binary target/debug/handler "$work/app" >/dev/null
else
  scripts/assemble.sh --debug "$work/app" >/dev/null
  cargo build --quiet -p streamfold-testbed --bin hostsim
fi

account=devstoreaccount1
key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
storage="DefaultEndpointsProtocol=http;AccountName=$account;AccountKey=$key;BlobEndpoint=http://127.0.0.1:$blob_port/$account;TableEndpoint=http://127.0.0.1:$table_port/$account;"
base=http://127.0.0.1:$host_port

echo "== host simulator on $base"
# Bank accounts in Table storage, every other entity type on Append Blobs, so the generic
# API's generated names exercise the second backend; notifications go to the simulator's own
# Event Grid webhook (the Projector keeps the read models that Accounts lists).
target/debug/hostsim --port "$host_port" --no-timers \
  --setting "AzureWebJobsStorage=$storage" \
  --setting "Bank.Account=Table;AzureWebJobsStorage" \
  --setting "ALL.ALL=AppendBlob;AzureWebJobsStorage" \
  --setting "StreamfoldLocalEventGridUrl=$base/runtime/webhooks/EventGrid?functionName=Projector" \
  --setting "RUST_LOG=warn" \
  "$work/app" >"$work/host.log" 2>&1 &
pids+=($!)
wait_for_port "$host_port" "the host simulator" "${pids[-1]}"
# The host answers once the handler is ready: wait for the document (at most 30 s).
python3 - "$base/api/openapi.json" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("the host did not serve the OpenAPI document within 30 s")
PY

echo "== schemathesis ($MAX_EXAMPLES cases per operation, seed $SEED)"
mkdir -p target/api-contract
status=0
timeout --kill-after=10 "$TIME_LIMIT" .venv/bin/schemathesis --config-file scripts/api-contract.toml \
  run "$base/api/openapi.json" \
  --url "$base" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --generation-database none \
  --suppress-health-check all \
  --workers 1 \
  --request-timeout 30 \
  --no-color \
  --report junit --report-junit-path target/api-contract/junit.xml \
  "$@" || status=$?

cp "$work/host.log" target/api-contract/host.log
if [ "$status" -ne 0 ]; then
  echo "== schemathesis failed (exit $status); errors in the host log (all of it in" \
    "target/api-contract/host.log):" >&2
  grep -E '"level":"ERROR"|panicked' "$work/host.log" | tail -40 >&2 || true
fi
exit "$status"
