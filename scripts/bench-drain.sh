#!/usr/bin/env bash
# Drain benchmark: write N narrow rows (default 1,000,000) in 1,000-row transactions while two
# slots hold the backlog, then drain it with (a) pg_recvlogical (pgoutput proto_version 1, to
# /dev/null) and (b) `sluice run --until caught-up` into a local Delta table. Prints rows/s for
# both, the ratio, and Sluice's peak RSS.
#
# METRICS=1: a second Sluice pipeline (its own slot, holding the same backlog) drains it with
# `[metrics] listen` on, scraped every 100 ms during the drain: its rows/s against the first
# (metrics off; bar: within 2 %) and the scrape latencies (bar: max ≤ 50 ms). The two drains
# run one after the other, off first (METRICS_FIRST=1: on first): on this machine the second
# drain of a backlog is faster whichever it is, so compare runs of both orders.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"
N=${1:-1000000}

scripts/dev-db.sh start >/dev/null
eval "$(scripts/dev-db.sh env)"
ADMIN=$SLUICE_DEV_PG_ADMIN_URL
export PGOPTIONS="-c client_min_messages=warning"
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
cargo build --release --quiet --bin sluice
SLUICE=$CARGO_TARGET_DIR/release/sluice
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

psql "$ADMIN" -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('sluice_bench', 'bench_recvlogical');
DROP PUBLICATION IF EXISTS sluice_bench;
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench AUTHORIZATION sluice;
CREATE TABLE bench.narrow (id bigint PRIMARY KEY, n int, note text, at timestamptz, price numeric(12,2));
ALTER TABLE bench.narrow OWNER TO sluice;
SQL
config() { # pipeline-name [extra lines]
  cat <<EOF2
[pipeline]
name = "$1"
[source]
kind = "postgres"
url = "$SLUICE_DEV_PG_URL"
tables = ["bench.narrow"]
[[sinks]]
kind = "delta"
path = "$WORK/lake-$1"
${2:-}
EOF2
}
config bench >"$WORK/sluice.toml"
METRICS=${METRICS:-0}
METRICS_PORT=${METRICS_PORT:-19187}
psql "$ADMIN" -q -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'sluice_benchm'" >/dev/null
psql "$ADMIN" -q -c "DROP PUBLICATION IF EXISTS sluice_benchm" >/dev/null
# Creates Sluice's slot and publication; then the reference slot.
"$SLUICE" run --config "$WORK/sluice.toml" --until caught-up 2>/dev/null
if [ "$METRICS" = 1 ]; then
  config benchm "[metrics]
listen = \"127.0.0.1:$METRICS_PORT\"" >"$WORK/sluice-m.toml"
  "$SLUICE" run --config "$WORK/sluice-m.toml" --until caught-up 2>/dev/null
fi
psql "$ADMIN" -q -c "SELECT 1 FROM pg_create_logical_replication_slot('bench_recvlogical', 'pgoutput')" >/dev/null

echo "writing $N rows in 1000-row transactions"
for ((i = 0; i < N; i += 1000)); do
  echo "INSERT INTO bench.narrow SELECT g, g % 1000, 'row ' || g, now(), g / 100.0 FROM generate_series($((i + 1)), $((i + 1000))) g;"
done | psql "$ADMIN" -q -v ON_ERROR_STOP=1
END=$(psql "$ADMIN" -Atq -c "SELECT pg_current_wal_lsn()")

now() { date +%s.%N; }
t0=$(now)
PGPASSWORD=$SLUICE_SOURCE_PASSWORD "$BIN/pg_recvlogical" -h 127.0.0.1 -p "${SLUICE_DEV_PG_PORT:-54329}" -U sluice -d shop \
  --slot bench_recvlogical --start --endpos "$END" --no-loop \
  -o proto_version=1 -o publication_names=sluice_bench -f /dev/null
t1=$(now)
psql "$ADMIN" -q -c "SELECT pg_drop_replication_slot('bench_recvlogical')" >/dev/null
drain_off() {
  s0=$(now)
  SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/sluice.toml" --until caught-up 2>"$WORK/sluice.log"
  s1=$(now)
}
drain_on() {
  SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/sluice-m.toml" --until caught-up 2>"$WORK/sluice-m.log" &
  mpid=$!
  tm0=$(now)
  : >"$WORK/scrapes"
  while kill -0 "$mpid" 2>/dev/null; do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "http://127.0.0.1:$METRICS_PORT/metrics" >>"$WORK/scrapes" 2>/dev/null || true
    sleep 0.1
  done
  wait "$mpid"
  tm1=$(now)
  psql "$ADMIN" -q -c "SELECT pg_drop_replication_slot('sluice_benchm')" >/dev/null
  psql "$ADMIN" -q -c "DROP PUBLICATION IF EXISTS sluice_benchm" >/dev/null
}
if [ "$METRICS" = 1 ] && [ "${METRICS_FIRST:-0}" = 1 ]; then
  drain_on; drain_off
else
  drain_off
  if [ "$METRICS" = 1 ]; then drain_on; fi
fi

peak=$(grep -o 'peak_rss_bytes=[0-9]*' "$WORK/sluice.log" | tail -n 1 | cut -d= -f2)
python3 - "$N" "$t0" "$t1" "$s0" "$s1" "${peak:-0}" "$METRICS" "${tm0:-0}" "${tm1:-0}" "$WORK/scrapes" <<'PY'
import sys
n, t0, t1, s0, s1, peak = int(sys.argv[1]), *map(float, sys.argv[2:6]), int(sys.argv[6])
recv, sluice = n / (t1 - t0), n / (s1 - s0)
print(f"pg_recvlogical: {recv:,.0f} rows/s ({t1 - t0:.2f} s)")
print(f"sluice:         {sluice:,.0f} rows/s ({s1 - s0:.2f} s), peak RSS {peak / 2**20:.0f} MiB")
print(f"ratio:          {sluice / recv:.2f}x")
if sys.argv[7] == "1":
    tm0, tm1 = float(sys.argv[8]), float(sys.argv[9])
    on = n / (tm1 - tm0)
    lines = [l.split() for l in open(sys.argv[10]) if l.strip()]
    ok = sorted(float(t) * 1000 for code, t in lines if code == "200")
    diff = (on - sluice) / sluice * 100
    print(f"sluice, metrics on: {on:,.0f} rows/s ({tm1 - tm0:.2f} s): {diff:+.1f} % against metrics off (bar: within 2 %)")
    if ok:
        print(f"scrapes during the drain: {len(ok)} answered of {len(lines)}, latency p50 {ok[len(ok) // 2]:.1f} ms, "
              f"max {ok[-1]:.1f} ms (bar: <= 50 ms)")
    else:
        print(f"scrapes during the drain: none answered of {len(lines)}")
PY
