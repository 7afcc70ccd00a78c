#!/usr/bin/env bash
# Snapshot benchmark: a narrow table of N rows (default 10,000,000); time a single-stream
# `COPY t TO STDOUT (FORMAT binary)` to /dev/null (the floor any snapshot must approach) and
# Sluice's initial load into Delta (`snapshot = "initial_only"`), then an incremental
# (watermark, keyset-chunked) snapshot of the same table through a slot (`sluice snapshot`).
# Prints rows/s for each, the ratios to COPY, and Sluice's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"
N=${1:-10000000}

scripts/dev-db.sh start >/dev/null
eval "$(scripts/dev-db.sh env)"
ADMIN=$SLUICE_DEV_PG_ADMIN_URL
export PGOPTIONS="-c client_min_messages=warning"
cargo build --release --quiet --bin sluice
SLUICE=$CARGO_TARGET_DIR/release/sluice
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "loading $N rows"
psql "$ADMIN" -q -v ON_ERROR_STOP=1 <<SQL
DROP SCHEMA IF EXISTS bench_snap CASCADE;
CREATE SCHEMA bench_snap AUTHORIZATION sluice;
CREATE TABLE bench_snap.narrow (id bigint PRIMARY KEY, n int, note text, at timestamptz, price numeric(12,2));
INSERT INTO bench_snap.narrow SELECT g, g % 1000, 'row ' || g, now(), g / 100.0 FROM generate_series(1, $N) g;
ALTER TABLE bench_snap.narrow OWNER TO sluice;
VACUUM ANALYZE bench_snap.narrow;
SQL
cat > "$WORK/sluice.toml" <<EOF2
[pipeline]
name = "bench_snapshot"
[source]
kind = "postgres"
url = "$SLUICE_DEV_PG_URL"
tables = ["bench_snap.narrow"]
snapshot = "initial_only"
[[sinks]]
kind = "delta"
path = "$WORK/lake"
EOF2

now() { date +%s.%N; }
# Warm the cache the same way for both.
psql "$ADMIN" -q -c "COPY bench_snap.narrow TO STDOUT (FORMAT binary)" >/dev/null
t0=$(now)
psql "$ADMIN" -q -c "COPY bench_snap.narrow TO STDOUT (FORMAT binary)" >/dev/null
t1=$(now)
SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log"
t2=$(now)
peak=$(grep -o 'peak_rss_bytes=[0-9]*' "$WORK/sluice.log" | tail -n 1 | cut -d= -f2)

# Incremental: a streaming pipeline (slot, no initial load), then a requested re-snapshot.
sed -e 's/initial_only/never/' -e 's/bench_snapshot/bench_incremental/' -e "s#$WORK/lake#$WORK/lake2#" \
  "$WORK/sluice.toml" >"$WORK/incremental.toml"
psql "$ADMIN" -q -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'sluice_bench_incremental'" >/dev/null
"$SLUICE" run --config "$WORK/incremental.toml" --until caught-up 2>/dev/null
"$SLUICE" snapshot --config "$WORK/incremental.toml" --table bench_snap.narrow >/dev/null
t3=$(now)
SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/incremental.toml" --until caught-up 2>"$WORK/incremental.log"
t4=$(now)
peak2=$(grep -o 'peak_rss_bytes=[0-9]*' "$WORK/incremental.log" | tail -n 1 | cut -d= -f2)
psql "$ADMIN" -q -c "SELECT pg_drop_replication_slot('sluice_bench_incremental')" >/dev/null
psql "$ADMIN" -q -c "DROP SCHEMA bench_snap CASCADE"
python3 - "$N" "$t0" "$t1" "$t2" "${peak:-0}" "$t3" "$t4" "${peak2:-0}" <<'PY'
import sys
n, t0, t1, t2, peak, t3, t4, peak2 = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5]), *map(float, sys.argv[6:8]), int(sys.argv[8])
copy, sluice, incr = n / (t1 - t0), n / (t2 - t1), n / (t4 - t3)
print(f"COPY (binary, one stream):   {copy:,.0f} rows/s ({t1 - t0:.2f} s)")
print(f"sluice initial load:         {sluice:,.0f} rows/s ({t2 - t1:.2f} s), peak RSS {peak / 2**20:.0f} MiB")
print(f"ratio:                       {sluice / copy:.2f}x")
print(f"sluice incremental snapshot: {incr:,.0f} rows/s ({t4 - t3:.2f} s), peak RSS {peak2 / 2**20:.0f} MiB, {incr / copy:.2f}x COPY")
PY
