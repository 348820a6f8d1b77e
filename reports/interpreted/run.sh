#!/usr/bin/env bash
# Python and JavaScript functions: cold and warm end-to-end latency through
# the gateway, and throughput on an embedded 2x4, beside builtin echo.
# Run from the repository root after:
#   cargo build --release -p taskforge-services -p taskforge-loadgen
set -euo pipefail
TF=target/release/taskforge
LG=target/release/taskforge-loadgen
OUT=reports/interpreted
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT

latency() { # name function
  "$LG" --gateway http://127.0.0.1:3000 --function "$2" --rate 5 --warmup 2s --duration 30s \
    --out "$OUT/latency-$1" > /dev/null
}

for warm in default 0; do
  extra=(); [ "$warm" = 0 ] && extra=(--sandbox-warm 0)
  rm -rf "$DATA/data"
  "$TF" up --data-dir "$DATA/data" "${extra[@]}" > "$DATA/up.log" 2>&1 &
  up=$!
  until curl -sf localhost:3000/ready > /dev/null; do sleep 0.1; done
  latency "python-warm-$warm" python:examples/hello.py
  latency "javascript-warm-$warm" javascript:examples/hello.js
  [ "$warm" = default ] && latency builtin-echo echo
  kill "$up"; wait "$up" || true
done

"$LG" --embedded 2x4 --function python:examples/hello.py --concurrency 16 --warmup 3s --duration 15s --out "$OUT/throughput-python" > /dev/null
"$LG" --embedded 2x4 --function javascript:examples/hello.js --concurrency 16 --warmup 3s --duration 15s --out "$OUT/throughput-javascript" > /dev/null
"$LG" --embedded 2x4 --function echo --concurrency 64 --warmup 3s --duration 15s --out "$OUT/throughput-echo" > /dev/null
