#!/usr/bin/env bash
# The PostgreSQL store against the embedded one, same sitting: echo through
# `taskforge up` (2 workers x 4), closed loop of 64 and sequential, first on
# the JSON Lines store, then on PostgreSQL (a fresh schema of the machine's
# server; TASKFORGE_BENCH_DATABASE_URL overrides it).
#
# Build first: cargo build --release -p taskforge-services -p taskforge-loadgen
set -u
cd "$(dirname "$0")/../.."
TF=target/release/taskforge
LG=target/release/taskforge-loadgen
OUT=reports/postgres
GRPC=127.0.0.1:50072
HTTP=127.0.0.1:3072
URL=http://$GRPC
DB=${TASKFORGE_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
SCHEMA=tf_bench_$$
WORK=$(mktemp -d)
trap 'kill -9 $UP 2>/dev/null; psql "$DB" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null; rm -rf "$WORK"' EXIT
psql "$DB" -qc "CREATE SCHEMA $SCHEMA" >/dev/null

# Starts `taskforge up` with extra flags $2.., logging to $1; sets UP and
# returns once the scheduler answers as leader.
up() {
  local log=$1
  shift
  RUST_LOG=info $TF up --grpc $GRPC --http $HTTP --runtimes builtin "$@" > "$log" 2>&1 &
  UP=$!
  for _ in $(seq 1000); do
    $TF workers --scheduler $URL > /dev/null 2>&1 && return 0
    sleep 0.01
  done
  echo "taskforge up did not start; see $log" >&2
  exit 1
}

load() { # name, concurrency
  $LG --scheduler $URL --function echo --concurrency "$2" \
    --warmup 2s --duration 10s --progress off --out $OUT/"$1" > /dev/null
}

SUMMARY=${SUMMARY:-$OUT/last-run.txt}
: > "$SUMMARY"
for store in embedded postgres; do
  case $store in
    embedded) up "$WORK/$store.log" --data-dir "$WORK/data" ;;
    postgres) up "$WORK/$store.log" --store "$DB?options=-c%20search_path%3D$SCHEMA" ;;
  esac
  load echo-$store 64
  load sequential-$store 1
  kill $UP; wait $UP 2>/dev/null
  for run in echo sequential; do
    jq -r --arg name "$run-$store" \
      '"\($name): \(.throughput_per_s | floor)/s, p50 \(.latency_us.e2e.p50) us, p99 \(.latency_us.e2e.p99) us"' \
      $OUT/$run-$store/report.json >> "$SUMMARY"
  done
done
cat "$SUMMARY"
