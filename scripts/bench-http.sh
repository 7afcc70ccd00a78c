#!/usr/bin/env bash
# Webhook sink benchmark: four figures, each printed with its bar and PASS/FAIL.
#
#   scripts/bench-http.sh [all|catchup|storm|latency|stall] [--quick]
#
#   catchup  N changes (default 1,000,000, in 1000-row transactions) already in the Delta
#            changelog, delivered by `sluice deliver --until caught-up` to a receiver that
#            answers 200 at once; then the SAME bodies (same batches of max_batch_rows, same
#            concurrency cap) posted by a plain reqwest loop (benches/http/baseline.rs).
#            Bar: sluice ≥ 0.8 × the plain loop (changes/s, first to last arrival).
#   storm    the same backlog, a fresh sink cursor: WARM s unlimited, then the receiver admits
#            STORM_CAP requests per second and answers the rest 429 + `Retry-After: 1` for
#            STORM_SECS, then unlimited again. rate_limit unset (AIMD + Retry-After), and a
#            second run with rate_limit = ["<cap>/s"]. Bars: goodput ≥ 90 % of the cap,
#            attempts per accepted request ≤ 1.2, nothing lost or doubled, back to ≥ 90 % of
#            the pre-storm rate ≤ 30 s after the storm lifts.
#   latency  a writer inserts LAT_RATE changes/s (LAT_TXN rows per transaction) into
#            PostgreSQL for LAT_SECS while `sluice run` (Delta + webhook in one process)
#            streams; the receiver records arrival - commit_ts. Bar: p99 ≤ 1 s. The Delta
#            sink's max_batch_latency bounds it: one run per value of LAT_DELTA (default
#            "1s 250ms": the product default, then a lower one).
#   stall    the receiver reads requests and never answers for STALL_SECS while the writer
#            inserts STALL_RATE changes/s; VmHWM of sluice sampled. Bar: ≤ 150 MB. Also
#            checked: the slot's confirmed_flush_lsn keeps advancing, and after the stall the
#            backlog drains (every change delivered once).
#
# BIN=dir: take the three programs from dir instead of building them. catchup: RUNS=n runs
# it n times; ALSO="sluice binaries" measures those too in every run, on the same backlog.
# --quick: N=300000, STORM_SECS=20, LAT_SECS=20, STALL_SECS=30. Every knob above is also an
# environment variable. Programs: benches/http/receiver.rs (hyper server, counts distinct
# idempotency keys and positions, latency, per-second timeline), benches/http/baseline.rs.
# Database objects are named benchhttp_* (schemas, slots, publications) and dropped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"

WHAT=${1:-all}
QUICK=0
[ "${2:-}" = "--quick" ] && QUICK=1
[ "$WHAT" = "--quick" ] && { QUICK=1; WHAT=all; }
case "$WHAT" in all|catchup|storm|latency|stall) ;; *)
  echo "usage: $0 [all|catchup|storm|latency|stall] [--quick]" >&2; exit 2 ;;
esac
if [ "$QUICK" = 1 ]; then
  N=${N:-300000}; STORM_SECS=${STORM_SECS:-20}; LAT_SECS=${LAT_SECS:-20}; STALL_SECS=${STALL_SECS:-30}
fi
N=${N:-1000000}
ROWS=${ROWS:-500}               # max_batch_rows of the catch-up sink and the plain loop
CONC=${CONC:-32}                # max_concurrency, and the plain loop's fixed concurrency
WARM=${WARM:-5}
STORM_SECS=${STORM_SECS:-60}
STORM_CAP=${STORM_CAP:-20}
STORM_ROWS=${STORM_ROWS:-10}    # small batches so the backlog outlasts warm-up + storm + recovery (N=3000000 for a long recovery)
LAT_RATE=${LAT_RATE:-1000}
LAT_TXN=${LAT_TXN:-10}
LAT_SECS=${LAT_SECS:-60}
LAT_DELTA=${LAT_DELTA:-1s 250ms}  # one run per value
STALL_RATE=${STALL_RATE:-5000}
STALL_TXN=${STALL_TXN:-50}
STALL_SECS=${STALL_SECS:-120}

scripts/dev-db.sh start >/dev/null
eval "$(scripts/dev-db.sh env)"
ADMIN=$SLUICE_DEV_PG_ADMIN_URL
export PGOPTIONS="-c client_min_messages=warning"
# BIN=dir: use the sluice, bench_http_receiver and bench_http_baseline binaries in dir as they
# are (e.g. a copy of an earlier build, to measure before and after without rebuilding).
if [ -n "${BIN:-}" ]; then
  SLUICE=$BIN/sluice RECEIVER=$BIN/bench_http_receiver BASELINE=$BIN/bench_http_baseline
else
  cargo build --release --quiet --bin sluice --example bench_http_receiver --example bench_http_baseline
  SLUICE=$CARGO_TARGET_DIR/release/sluice
  RECEIVER=$CARGO_TARGET_DIR/release/examples/bench_http_receiver
  BASELINE=$CARGO_TARGET_DIR/release/examples/bench_http_baseline
fi
WORK=$(mktemp -d /tmp/bench-http.XXXXXX)
PIDS=()
SCHEMAS=()

drop_pg() { # schema names (each also names its slot and publication)
  for s in "$@"; do
    psql "$ADMIN" -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '$s' AND active_pid IS NOT NULL;
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$s';
DROP PUBLICATION IF EXISTS "$s";
DROP SCHEMA IF EXISTS "$s" CASCADE;
SQL
  done
}
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ ${#SCHEMAS[@]} -gt 0 ]; then sleep 1; drop_pg "${SCHEMAS[@]}" || true; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
# The machine is shared: every figure starts by saying how busy it is (load, I/O pressure).
machine() {
  local io
  io=$(sed -n 's/^full avg10=\([0-9.]*\) avg60=\([0-9.]*\).*/\1 % (10 s), \2 % (60 s)/p' /proc/pressure/io 2>/dev/null || true)
  echo "  machine: load $(cut -d' ' -f1-3 /proc/loadavg), I/O pressure full ${io:-n/a}"
}
py() { python3 - "$@"; }
RESULTS=$WORK/results.txt
: >"$RESULTS"

# ── the receiver ─────────────────────────────────────────────────────────────────────────
"$RECEIVER" --port 0 --port-file "$WORK/port" 2>"$WORK/receiver.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.1; done
URL="http://127.0.0.1:$(cat "$WORK/port")"
rx_mode() { curl -sf -X POST --data "$1" "$URL/_mode" >/dev/null; }
rx_reset() { curl -sf -X POST "$URL/_reset" >/dev/null; }
rx_stats() { curl -sf "$URL/_stats"; }
rx_positions() { curl -sf "$URL/_count" | cut -d' ' -f1; }

# ── PostgreSQL objects and configs of one scenario ────────────────────────────────────────
# setup_pg S: schema S with table t and a paced writer procedure; slot and publication S.
setup_pg() {
  local s=$1
  SCHEMAS+=("$s")
  drop_pg "$s"
  psql "$ADMIN" -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE SCHEMA "$s" AUTHORIZATION sluice;
CREATE TABLE "$s".t (id bigint PRIMARY KEY, n int, note text, at timestamptz, price numeric(12,2));
ALTER TABLE "$s".t OWNER TO sluice;
-- rate changes/s for secs seconds, rows_per_txn rows per transaction, evenly paced.
CREATE PROCEDURE "$s".write(rate int, rows_per_txn int, secs int) LANGUAGE plpgsql AS \$\$
DECLARE
  t0 timestamptz := clock_timestamp();
  step float8 := rows_per_txn::float8 / rate;
  next_id bigint := coalesce((SELECT max(id) FROM "$s".t), 0);
  wait float8;
BEGIN
  FOR i IN 0 .. (rate::bigint * secs / rows_per_txn) - 1 LOOP
    wait := extract(epoch FROM t0 + make_interval(secs => i * step) - clock_timestamp());
    IF wait > 0 THEN PERFORM pg_sleep(wait); END IF;
    INSERT INTO "$s".t SELECT g, g % 1000, 'row ' || g, now(), g / 100.0
      FROM generate_series(next_id + 1, next_id + rows_per_txn) g;
    next_id := next_id + rows_per_txn;
    COMMIT;
  END LOOP;
END \$\$;
SQL
}

# config S DIR DELTA_LATENCY [webhook sink lines]: the pipeline S with its lake under DIR.
config() {
  local s=$1 dir=$2 latency=$3 hook=${4:-}
  cat <<EOF2
[pipeline]
name = "$s"
[source]
kind = "postgres"
url = "$SLUICE_DEV_PG_URL"
tables = ["$s.t"]
slot = "$s"
publication = "$s"
[[sinks]]
kind = "delta"
path = "$dir/lake"
max_batch_latency = "$latency"
$hook
EOF2
}
hook() { # name rows [extra lines]
  printf '[[sinks]]\nkind = "webhook"\nname = "%s"\nurl = "%s/hook"\nmax_batch_rows = %s\nmax_concurrency = %s\n%s\n' \
    "$1" "$URL" "$2" "$CONC" "${3:-}"
}

# The backlog of catchup and storm: N changes in the changelog of pipeline benchhttp_backlog.
BACKLOG=benchhttp_backlog
BACKLOG_DIR=$WORK/backlog
backlog() {
  [ -f "$BACKLOG_DIR/ready" ] && return 0
  setup_pg "$BACKLOG"
  mkdir -p "$BACKLOG_DIR"
  config "$BACKLOG" "$BACKLOG_DIR" 1s >"$BACKLOG_DIR/delta.toml"
  "$SLUICE" run --config "$BACKLOG_DIR/delta.toml" --until caught-up 2>"$BACKLOG_DIR/create.log"
  echo "backlog: writing $N rows in 1000-row transactions"
  for ((i = 0; i < N; i += 1000)); do
    echo "INSERT INTO $BACKLOG.t SELECT g, g % 1000, 'row ' || g, now(), g / 100.0 FROM generate_series($((i + 1)), $((i + 1000))) g;"
  done | psql "$ADMIN" -q -v ON_ERROR_STOP=1
  local t0 t1
  t0=$(now)
  SLUICE_LOG=sluice=info "$SLUICE" run --config "$BACKLOG_DIR/delta.toml" --until caught-up 2>"$BACKLOG_DIR/drain.log"
  t1=$(now)
  py "$N" "$t0" "$t1" <<'PY'
import sys
n, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"backlog: {n:,} changes in the Delta changelog ({n / (t1 - t0):,.0f} changes/s into Delta)")
PY
  touch "$BACKLOG_DIR/ready"
}

# ── 1. catch-up ───────────────────────────────────────────────────────────────────────────
# RUNS=n repeats the figure; ALSO="bin…" measures these sluice binaries too, each run, on
# the same backlog (before/after comparisons under the same machine load).
catchup() {
  local r bin
  for r in $(seq "${RUNS:-1}"); do
    for bin in "$SLUICE" ${ALSO:-}; do catchup_one "$bin"; done
  done
}
catchup_one() {
  local SLUICE=$1
  echo "== catch-up: $N changes, max_batch_rows=$ROWS, max_concurrency=$CONC, $SLUICE"
  machine
  backlog
  local cfg=$BACKLOG_DIR/hook.toml
  config "$BACKLOG" "$BACKLOG_DIR" 1s "$(hook hook "$ROWS")" >"$cfg"
  rm -f "$BACKLOG_DIR/lake/_sluice_cursors/$BACKLOG/hook.json"
  rx_mode ok
  rx_reset
  local t0 t1
  t0=$(now)
  SLUICE_LOG=sluice=info /usr/bin/time -v -o "$WORK/deliver.time" "$SLUICE" deliver --config "$cfg" --sink hook --until caught-up 2>"$WORK/deliver.log"
  t1=$(now)
  rx_stats >"$WORK/catchup-sluice.json"
  rx_reset
  "$BASELINE" --lake "$BACKLOG_DIR/lake" --pipeline "$BACKLOG" --sink hook --table "$BACKLOG.t" \
    --url "$URL/hook" --rows "$ROWS" --concurrency "$CONC" >"$WORK/baseline.json"
  rx_stats >"$WORK/catchup-baseline.json"
  rx_reset
  "$BASELINE" --lake "$BACKLOG_DIR/lake" --pipeline "$BACKLOG" --sink hook --table "$BACKLOG.t" \
    --url "$URL/hook" --rows "$ROWS" --concurrency "$CONC" --inline >"$WORK/inline.json"
  rx_stats >"$WORK/catchup-inline.json"
  local peak
  peak=$(grep -o 'Maximum resident set size (kbytes): [0-9]*' "$WORK/deliver.time" | grep -o '[0-9]*$' || true)
  py "$N" "$t0" "$t1" "$WORK/catchup-sluice.json" "$WORK/catchup-baseline.json" "$WORK/baseline.json" "$((${peak:-0} * 1024))" \
    "$WORK/catchup-inline.json" >>"$WORK/fig.txt" <<'PY'
import json, sys
n, t0, t1 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
s, b, client = (json.load(open(p)) for p in sys.argv[4:7])
peak = int(sys.argv[7])
inline = json.load(open(sys.argv[8]))
def rate(st):
    span = st["last_accept"] - st["first_accept"]
    return st["positions"] / span, span
rs, ss = rate(s)
rb, sb = rate(b)
print(f"  sluice deliver: {rs:,.0f} changes/s ({ss:.2f} s first to last arrival, {n / (t1 - t0):,.0f}/s wall incl. start-up), "
      f"{s['accepted']} requests, {s['positions']:,} distinct positions, doubled {s['doubled']}, peak RSS {peak / 2**20:.0f} MiB")
print(f"  plain reqwest:  {rb:,.0f} changes/s ({sb:.2f} s; client {client['seconds']:.2f} s, bodies built beforehand in {client['encode_seconds']:.2f} s, "
      f"{client['body_bytes'] / 2**20:.0f} MiB), {b['accepted']} requests, {b['positions']:,} positions")
ri, si = rate(inline)
print(f"  plain, inline:  {ri:,.0f} changes/s ({si:.2f} s; one thread reads + encodes while the loop posts: the sink's work, "
      f"simplest shape) -> sluice/inline = {rs / ri:.2f}x")
ok = s["positions"] == n and s["doubled"] == 0 and b["positions"] == n and inline["positions"] == n
ratio = rs / rb
print(f"FIGURE 1 catch-up: sluice/plain = {ratio:.2f}x (bar >= 0.80x; all {n:,} delivered once: {ok}) "
      f"{'PASS' if ratio >= 0.8 and ok else 'FAIL'}")
PY
  cat "$WORK/fig.txt"; grep FIGURE "$WORK/fig.txt" >>"$RESULTS"; rm "$WORK/fig.txt"
}

# ── 2. 429 storm ──────────────────────────────────────────────────────────────────────────
storm_run() { # sink-name rate_limit-line
  local name=$1 limit=${2:-}
  local cfg=$BACKLOG_DIR/$name.toml
  config "$BACKLOG" "$BACKLOG_DIR" 1s "$(hook "$name" "$STORM_ROWS" "$limit")" >"$cfg"
  rm -f "$BACKLOG_DIR/lake/_sluice_cursors/$BACKLOG/$name.json"
  echo "== storm ($name: ${limit:-rate_limit unset}): ${WARM}s unlimited, ${STORM_SECS}s at $STORM_CAP req/s + 429 Retry-After: 1, then unlimited; max_batch_rows=$STORM_ROWS"
  machine
  rx_mode ok
  rx_reset
  SLUICE_LOG=${STORM_LOG:-sluice=info,sinks=info} "$SLUICE" deliver --config "$cfg" --sink "$name" --until caught-up 2>"$WORK/$name.log" &
  local pid=$!
  PIDS+=($pid)
  sleep "$WARM"
  rx_mode "storm $STORM_CAP 1"
  sleep "$STORM_SECS"
  rx_mode ok
  if [ -n "$limit" ]; then
    # Capped for good: the rest of the backlog would take N / (cap * rows) s; stop after 10 s
    # and check what the cursor says was delivered.
    sleep 10
    kill -TERM "$pid"
  fi
  wait "$pid"
  rx_stats >"$WORK/$name.json"
  curl -sf "$URL/_events" >"$WORK/$name.events"
  local cursor=$BACKLOG_DIR/lake/_sluice_cursors/$BACKLOG/$name.json
  py "$N" "$STORM_CAP" "$WORK/$name.json" "$name" "${limit:-unset}" "$cursor" "$STORM_ROWS" <<'PY' | tee -a "$WORK/fig.txt"
import json, math, sys
n, cap, st, name, limit = int(sys.argv[1]), int(sys.argv[2]), json.load(open(sys.argv[3])), sys.argv[4], sys.argv[5]
cursor = json.load(open(sys.argv[6]))
rows = int(sys.argv[7])
if limit != "unset":
    n = cursor["delivered"]  # stopped before the end: everything up to the cursor must be there
tl = st["timeline"]  # per second: accepted requests, new events, 429s, other
(_, _), (s0, _), (s1, _) = st["modes"][:3]
inside = range(math.ceil(s0), math.floor(s1))
acc = sum(tl[i][0] for i in inside)
lim = sum(tl[i][2] for i in inside)
goodput = acc / (cap * len(inside))
attempts = (acc + lim) / acc if acc else float("inf")
pre = [tl[i][1] for i in range(max(1, math.floor(s0) - 5), math.floor(s0))]
unlimited = sum(pre) / len(pre)
rec = None
for i in range(math.ceil(s1), len(tl) - 1):  # the last second is partial
    if tl[i][1] >= 0.9 * unlimited:
        rec = i + 1 - s1
        break
after = [tl[i][1] for i in range(math.ceil(s1), len(tl) - 1)]
exact = st["positions"] >= n and st["doubled"] == 0 and (limit != "unset" or st["positions"] == n)
print(f"  pre-storm rate {unlimited:,.0f} changes/s; storm seconds {len(inside)}: {acc} accepted, {lim} answered 429, "
      f"requests before Retry-After elapsed: {st['early']}; after the storm {len(after)} s of data, "
      f"per-second changes: {after[:12]}")
print(f"FIGURE 2 storm [{limit}] goodput: {goodput:.1%} of {cap}/s (bar >= 90%) {'PASS' if goodput >= 0.9 else 'FAIL'}")
print(f"FIGURE 2 storm [{limit}] attempts per accepted request: {attempts:.3f} (bar <= 1.2) {'PASS' if attempts <= 1.2 else 'FAIL'}")
print(f"FIGURE 2 storm [{limit}] lost/doubled: {st['positions']:,} of {n:,} {'(the cursor) ' if limit != 'unset' else ''}distinct positions, doubled {st['doubled']}, "
      f"{st['accepted_distinct_keys']} distinct keys, {st['resent']} accepted resends {'PASS' if exact else 'FAIL'}")
if limit == "unset" and unlimited < 2 * cap * rows:
    print(f"  note: the pre-storm rate is under twice the cap ({2 * cap * rows:,} changes/s): the sink had not got up to speed, "
          f"so the recovery figure says little")
if rec is None:
    print(f"FIGURE 2 storm [{limit}] recovery: never reached 90% of {unlimited:,.0f}/s before the backlog ended (bar <= 30 s) FAIL")
else:
    print(f"FIGURE 2 storm [{limit}] recovery to >= 90% of the pre-storm rate: {rec:.1f} s after the lift (bar <= 30 s) {'PASS' if rec <= 30 else 'FAIL'}")
PY
}
storm() {
  backlog
  storm_run storm
  [ "${STORM_LIMITED:-1}" = 1 ] && storm_run stormlimited "rate_limit = [\"$STORM_CAP/s\"]"
  grep FIGURE "$WORK/fig.txt" >>"$RESULTS"; rm "$WORK/fig.txt"
}

# ── sluice run beside a paced writer (latency, stall) ─────────────────────────────────────
# start_run S DIR: starts `sluice run` on DIR/hook.toml, waits for its slot to be active.
start_run() {
  local s=$1 dir=$2
  SLUICE_LOG=${RUN_LOG:-sluice=info,sinks=info} "$SLUICE" run --config "$dir/hook.toml" 2>"$dir/run.log" &
  RUN_PID=$!
  PIDS+=($RUN_PID)
  for _ in $(seq 600); do
    [ "$(psql "$ADMIN" -Atq -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$s' AND active")" = 1 ] && break
    kill -0 "$RUN_PID" || { cat "$dir/run.log"; exit 1; }
    sleep 0.1
  done
  sleep 2 # the snapshot of the empty table is in the lake; streaming
}
stop_run() {
  kill -TERM "$RUN_PID" 2>/dev/null || true
  wait "$RUN_PID" 2>/dev/null || true
}
wait_positions() { # want timeout-seconds → seconds waited (or "timeout")
  local want=$1 limit=$2 t0
  t0=$(now)
  while [ "$(rx_positions)" -lt "$want" ]; do
    py "$t0" "$(now)" "$limit" <<'PY' || { echo timeout; return 0; }
import sys
sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < float(sys.argv[3]) else 1)
PY
    sleep 0.2
  done
  py "$t0" "$(now)" <<'PY'
import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")
PY
}

# ── 3. latency ────────────────────────────────────────────────────────────────────────────
latency() {
  local d
  for d in $LAT_DELTA; do latency_one "$d"; done
}
latency_one() {
  local LAT_DELTA=$1 s=benchhttp_latency dir=$WORK/latency-$1
  echo "== latency: $LAT_RATE changes/s ($LAT_TXN per transaction) for ${LAT_SECS}s, Delta max_batch_latency=$LAT_DELTA"
  machine
  setup_pg "$s"
  mkdir -p "$dir"
  config "$s" "$dir" "$LAT_DELTA" "$(hook hook "$ROWS")" >"$dir/hook.toml"
  rx_mode ok
  start_run "$s" "$dir"
  rx_reset
  psql "$ADMIN" -q -v ON_ERROR_STOP=1 -c "CALL \"$s\".write($LAT_RATE, $LAT_TXN, $LAT_SECS)"
  local want=$((LAT_RATE * LAT_SECS)) waited
  waited=$(wait_positions "$want" 60)
  rx_stats >"$dir/latency.json"
  curl -sf "$URL/_events" >"$dir/latency.events"
  stop_run
  py "$want" "$dir/latency.json" "$waited" "$LAT_DELTA" "$dir/latency.events" "$dir/lake/$s/t/_delta_log" <<'PY' | tee -a "$WORK/fig.txt"
import bisect, json, os, sys
want, st, waited, delta = int(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
l = st["latency_ms"]
# Split each change's latency at its Delta commit: the version whose txn position (the last
# source commit it holds) is the first at or after the change's lsn.
versions = []
for f in sorted(os.listdir(sys.argv[6])):
    if not f.endswith(".json"):
        continue
    txn = ts = None
    for line in open(os.path.join(sys.argv[6], f)):
        d = json.loads(line)
        txn = d["txn"]["version"] if "txn" in d else txn
        ts = d["commitInfo"]["timestamp"] if "commitInfo" in d else ts
    if txn is not None and ts is not None:
        versions.append((txn, ts * 1000))
versions.sort()
keys = [v[0] for v in versions]
to_lake, to_hook = [], []
for line in open(sys.argv[5]):
    lsn, commit, arrival = map(int, line.split())
    i = bisect.bisect_left(keys, lsn)
    if i < len(versions):
        to_lake.append(versions[i][1] - commit)
        to_hook.append(arrival - versions[i][1])
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(len(v) * p + 0.999999) - 1))] / 1000 if v else float("nan")
print(f"  split at the Delta commit ({len(versions)} versions): source commit -> Delta commit p50 {pct(to_lake, .5):.0f} ms "
      f"p99 {pct(to_lake, .99):.0f} ms; Delta commit -> receiver p50 {pct(to_hook, .5):.0f} ms p99 {pct(to_hook, .99):.0f} ms (the webhook sink)")
tl = [s[1] for s in st["timeline"]]
print(f"  {st['positions']:,} of {want:,} changes arrived ({st['accepted']} requests; last one {waited} s after the writer ended); "
      f"arrival rate per s (first 10): {tl[:10]}")
print(f"  commit -> arrival: p50 {l['p50']:.0f} ms, p90 {l['p90']:.0f} ms, p99 {l['p99']:.0f} ms, max {l['max']:.0f} ms")
ok = l["p99"] <= 1000 and st["positions"] == want and st["doubled"] == 0
print(f"FIGURE 3 latency [delta max_batch_latency={delta}]: p99 {l['p99'] / 1000:.3f} s (bar <= 1 s) {'PASS' if ok else 'FAIL'}")
PY
  grep FIGURE "$WORK/fig.txt" >>"$RESULTS"; rm "$WORK/fig.txt"
}

# ── 4. stalled endpoint ───────────────────────────────────────────────────────────────────
lsn_num() { psql "$ADMIN" -Atq -c "SELECT pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_replication_slots WHERE slot_name = '$1'"; }
rss() { awk -v k="$2:" '$1 == k {print $2 * 1024}' "/proc/$1/status"; }
stall() {
  local s=benchhttp_stall dir=$WORK/stall
  echo "== stall: endpoint never answers for ${STALL_SECS}s while $STALL_RATE changes/s are written ($STALL_TXN per transaction)"
  machine
  setup_pg "$s"
  mkdir -p "$dir"
  config "$s" "$dir" 1s "$(hook hook "$ROWS")" >"$dir/hook.toml"
  rx_mode ok
  start_run "$s" "$dir"
  rx_mode stall
  rx_reset
  psql "$ADMIN" -q -v ON_ERROR_STOP=1 -c "CALL \"$s\".write($STALL_RATE, $STALL_TXN, $STALL_SECS)" &
  local writer=$! t0
  PIDS+=($writer)
  t0=$(now)
  : >"$dir/samples"
  while kill -0 "$writer" 2>/dev/null; do
    printf '%s %s %s %s\n' "$(now)" "$(lsn_num "$s")" "$(rss "$RUN_PID" VmRSS)" "$(rss "$RUN_PID" VmHWM)" >>"$dir/samples"
    sleep 5
  done
  wait "$writer"
  printf '%s %s %s %s\n' "$(now)" "$(lsn_num "$s")" "$(rss "$RUN_PID" VmRSS)" "$(rss "$RUN_PID" VmHWM)" >>"$dir/samples"
  local wal_end
  wal_end=$(psql "$ADMIN" -Atq -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
  sleep 5 # the last second of changes reaches the lake and the slot
  printf '%s %s %s %s\n' "$(now)" "$(lsn_num "$s")" "$(rss "$RUN_PID" VmRSS)" "$(rss "$RUN_PID" VmHWM)" >>"$dir/samples"
  rx_stats >"$WORK/stall-during.json"
  rx_mode ok
  local want=$((STALL_RATE * STALL_SECS)) waited
  waited=$(wait_positions "$want" 300)
  local hwm_after
  hwm_after=$(rss "$RUN_PID" VmHWM)
  rx_stats >"$WORK/stall.json"
  curl -sf "$URL/_events" >"$WORK/stall.events"
  stop_run
  local peak
  peak=$(grep -o 'peak_rss_bytes=[0-9]*' "$dir/run.log" | tail -n 1 | cut -d= -f2 || true)
  py "$want" "$dir/samples" "$WORK/stall-during.json" "$WORK/stall.json" "$waited" "$hwm_after" "${peak:-0}" "$wal_end" <<'PY' | tee -a "$WORK/fig.txt"
import json, sys
want = int(sys.argv[1])
samples = [tuple(float(x) for x in l.split()) for l in open(sys.argv[2]) if len(l.split()) == 4]
during, st = json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
waited, hwm_after, peak, wal_end = sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
t0 = samples[0][0]
moves = sum(1 for a, b in zip(samples, samples[1:]) if b[1] > a[1])
mib = 2**20
print("  t(s)  confirmed_flush_lsn  VmRSS MiB  VmHWM MiB")
for t, lsn, r, h in samples:
    print(f"  {t - t0:5.0f}  {int(lsn):>19}  {r / mib:9.0f}  {h / mib:9.0f}")
hwm = max(s[3] for s in samples)
print(f"  during the stall: {during['accepted']} accepted, {during['requests']} requests read and held/answered 503 after release; "
      f"the slot moved in {moves} of {len(samples) - 1} intervals, to {int(samples[-1][1]) - wal_end:+} bytes of the WAL end at the writer's end")
print(f"  after release: {st['positions']:,} of {want:,} changes delivered in {waited} s, doubled {st['doubled']}, "
      f"VmHWM then {hwm_after / mib:.0f} MiB (exit log peak_rss_bytes {peak / mib:.0f} MiB)")
print(f"FIGURE 4 stall: peak RSS during {len(samples)} samples of the stall {hwm / 1e6:.0f} MB ({hwm / mib:.0f} MiB) (bar <= 150 MB) {'PASS' if hwm <= 150e6 else 'FAIL'}")
# The pipeline confirms the slot every few seconds (its status interval), not per change: ask
# for a move at least every 20 s, and count the moves.
last_move, gap = samples[0][0], 0.0
for a, b in zip(samples, samples[1:]):
    if b[1] > a[1]:
        gap, last_move = max(gap, b[0] - last_move), b[0]
gap = max(gap, samples[-1][0] - last_move)
slot_ok = moves >= 1 and gap <= 20
print(f"FIGURE 4 stall: slot confirmed_flush_lsn advanced {moves} times, longest wait {gap:.0f} s (bar: advancing, no wait > 20 s) {'PASS' if slot_ok else 'FAIL'}")
drained = st["positions"] == want and st["doubled"] == 0
print(f"FIGURE 4 stall: backlog drained after the stall, nothing lost or doubled ({waited} s) {'PASS' if drained else 'FAIL'}")
PY
  grep FIGURE "$WORK/fig.txt" >>"$RESULTS"; rm "$WORK/fig.txt"
}

echo "bench-http: $(date -u +%FT%TZ), $(nproc) cores, receiver $URL"
case "$WHAT" in
  all) catchup; storm; latency; stall ;;
  *) "$WHAT" ;;
esac
echo
echo "== summary"
cat "$RESULTS"
