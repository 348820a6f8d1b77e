#!/usr/bin/env bash
set -u
cd "$(dirname "$0")/../.."
TF=target/release/taskforge; LG=target/release/taskforge-loadgen
C=$(mktemp -d)/certs; rm -rf $C; $TF certs $C --host 127.0.0.1 > /dev/null
for mode in plain tls; do
  rm -rf /tmp/taskforge-tls-data
  if [ $mode = tls ]; then
    S=(--tls-cert $C/server.pem --tls-key $C/server.key); URL=https://127.0.0.1:50081; CL=(--ca $C/ca.pem)
  else
    S=(); URL=http://127.0.0.1:50081; CL=()
  fi
  $TF scheduler --grpc 127.0.0.1:50081 --data-dir /tmp/taskforge-tls-data "${S[@]}" --api-token api --worker-token wt > /dev/null 2>&1 &
  sp=$!; sleep 1
  for w in 1 2; do $TF worker --scheduler $URL "${CL[@]}" --worker-token wt --pool 4 --runtimes builtin --id w$w > /dev/null 2>&1 & done
  sleep 2
  $LG --scheduler $URL "${CL[@]}" --api-token api --function echo --concurrency 64 --warmup 2s --duration 8s --out reports/tls/echo-$mode > /dev/null 2>&1
  $LG --scheduler $URL "${CL[@]}" --api-token api --function echo --concurrency 1 --count 3000 --warmup 1s --out reports/tls/seq-$mode > /dev/null 2>&1
  pkill -f "taskforge worker --scheduler $URL"; kill $sp; wait $sp 2>/dev/null; sleep 1
done
for r in echo-plain echo-tls seq-plain seq-tls; do
python3 -c "
import json
r=json.load(open('reports/tls/$r/report.json')); l=r['latency_us']['e2e']
print('%-11s %9.1f/s  p50 %6d us  p99 %6d us  completed %s errors %s' % ('$r', r['throughput_per_s'], l['p50'], l['p99'], r['completed'], r['errors']))
"; done
