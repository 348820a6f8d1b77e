#!/usr/bin/env bash
# History that outgrows memory: echo through `taskforge up` (2 workers x 4,
# JSONL store, default retention of 1,000,000), an 8 s run and a 120 s run on
# fresh data directories, the process's resident memory sampled into each
# timeline; then kill -9 and restarts on the 120 s run's history, timed, with
# an old execution and a filtered listing read back through the gateway.
#
# Build first: cargo build --release -p taskforge-services -p taskforge-loadgen
set -u
cd "$(dirname "$0")/../.."
TF=target/release/taskforge
LG=target/release/taskforge-loadgen
OUT=reports/history
GRPC=127.0.0.1:50071
HTTP=127.0.0.1:3071
URL=http://$GRPC
WORK=$(mktemp -d)
trap 'kill -9 $UP 2>/dev/null; rm -rf "$WORK"' EXIT

# Starts `taskforge up` on data directory $1, logging to $2; sets UP.
up() {
  RUST_LOG=info $TF up --data-dir "$1" --grpc $GRPC --http $HTTP --runtimes builtin > "$2" 2>&1 &
  UP=$!
  for _ in $(seq 600); do
    grep -q "TaskForge is up" "$2" && return 0
    sleep 0.01
  done
  echo "taskforge up did not start; see $2" >&2
  exit 1
}

rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' /proc/$1/status; }

load() { # name, duration, interval
  $LG --scheduler $URL --target-pid $UP --function echo --concurrency 64 \
    --warmup 2s --duration "$2" --interval "$3" --progress off --out $OUT/"$1" > /dev/null
}

# 1. Short and long runs, each on a fresh history.
up "$WORK/short" "$WORK/short.log"
load echo-8s 8s 1s
kill $UP; wait $UP 2>/dev/null

up "$WORK/long" "$WORK/long.log"
load echo-120s 120s 250ms
echo "after the 120 s run: RSS $(rss_mb $UP) MB, data $(du -sh "$WORK/long" | cut -f1)" > $OUT/summary.txt
grep -c "store compacted (slowly)" "$WORK/long.log" | sed 's/^/compactions over 20 ms: /' >> $OUT/summary.txt
grep "store compacted (slowly)" "$WORK/long.log" | sed 's/.*ms=\([0-9.]*\).*/\1/' | sort -n | tail -1 | sed 's/^/longest compaction, ms: /' >> $OUT/summary.txt

# 2. kill -9, then restart on that history, three times: time to serving.
for round in 1 2 3; do
  kill -9 $UP; wait $UP 2>/dev/null
  started=$(date +%s%N)
  up "$WORK/long" "$WORK/restart-$round.log"
  ready=$(date +%s%N)
  recovered=$(grep "recovered from the store" "$WORK/restart-$round.log" | sed 's/\x1b\[[0-9;]*m//g' | sed 's/.*recovered from the store *//')
  echo "restart $round: serving after $(( (ready - started) / 1000000 )) ms; $recovered; RSS $(rss_mb $UP) MB" >> $OUT/summary.txt
done

# 3. Read back through the gateway: the first execution of the oldest
#    segment retention keeps whole (the oldest may be partly forgotten),
#    and a filtered listing.
segment=$(ls "$WORK/long/history" | sed -n 2p)
line=$(head -1 "$WORK/long/history/$segment")
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$line")
got=$(curl -s -w '\n%{time_total}' http://$HTTP/jobs/$id)
python3 - "$line" "$got" "$segment" "$(ls "$WORK/long/history" | wc -l)" >> $OUT/summary.txt <<'PY'
import json, sys
line = json.loads(sys.argv[1]); body, seconds = sys.argv[2].rsplit("\n", 1)
job = json.loads(body)
same = job["status"] == line["status"] and json.dumps(job.get("output")) == json.dumps(json.loads(line["output"]))
print(f"GET /jobs/{line['id']} (first line of segment {sys.argv[3]}, the 2nd oldest of {sys.argv[4]}): "
      f"{job['status']} output {json.dumps(job.get('output'))} in {float(seconds) * 1000:.1f} ms; matches the file: {same}")
PY
listing=$(curl -s -w '\n%{time_total}' "http://$HTTP/jobs?status=COMPLETED&limit=3")
python3 - "$listing" >> $OUT/summary.txt <<'PY'
import json, sys
body, seconds = sys.argv[1].rsplit("\n", 1)
page = json.loads(body)
jobs = page.get("jobs", page.get("executions", []))
print(f"GET /jobs?status=COMPLETED&limit=3: {len(jobs)} jobs, all COMPLETED: "
      f"{all(j['status'] == 'COMPLETED' for j in jobs)}, in {float(seconds) * 1000:.1f} ms")
PY

# 4. The figures beside their targets.
python3 - >> $OUT/summary.txt <<'PY'
import json
short = json.load(open("reports/history/echo-8s/report.json"))
long = json.load(open("reports/history/echo-120s/report.json"))
run = lambda r: r.get("run", r)
s, l = run(short), run(long)
print(f"echo 8 s: {s['throughput_per_s']:.0f}/s; 120 s: {l['throughput_per_s']:.0f}/s; "
      f"ratio {l['throughput_per_s'] / s['throughput_per_s']:.3f} (target >= 0.90); "
      f"{l['completed']:,} executions in the 120 s window")
w = l["window"]
inside = [p for p in l["timeline"] if p["t_s"] >= w["from_s"] and p["t_s"] + p["span_s"] <= w["until_s"]]
slowest = min(inside, key=lambda p: p["throughput_per_s"])
worst = max(inside, key=lambda p: p["p99_us"])
print(f"120 s run, {len(inside)} intervals of 250 ms: slowest {slowest['throughput_per_s']:.0f}/s at {slowest['t_s']:.2f} s, "
      f"worst p99 {worst['p99_us'] / 1000:.1f} ms at {worst['t_s']:.2f} s, intervals with no completion: "
      f"{sum(1 for p in inside if p['completed'] == 0)}")
m = l["memory"]
print(f"RSS of taskforge up over the 120 s run: {m['first_rss_bytes'] / 1e6:.0f} MB at the start, "
      f"{m['peak_rss_bytes'] / 1e6:.0f} MB peak, {m['last_rss_bytes'] / 1e6:.0f} MB at the end (target <= 300 MB)")
PY
cat $OUT/summary.txt
