#!/usr/bin/env bash
# Drain benchmark: write N narrow rows (default 1,000,000) in 1,000-row transactions while two
# slots hold the backlog, then drain it with (a) pg_recvlogical (pgoutput proto_version 1, to
# /dev/null) and (b) `sluice run --until caught-up` into a local Delta table. Prints rows/s for
# both, the ratio, and Sluice's peak RSS.
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
cat > "$WORK/sluice.toml" <<EOF2
[pipeline]
name = "bench"
[source]
kind = "postgres"
url = "$SLUICE_DEV_PG_URL"
tables = ["bench.narrow"]
[[sinks]]
kind = "delta"
path = "$WORK/lake"
EOF2
# Creates Sluice's slot and publication; then the reference slot.
"$SLUICE" run --config "$WORK/sluice.toml" --until caught-up 2>/dev/null
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
SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/sluice.toml" --until caught-up 2>"$WORK/sluice.log"
t2=$(now)
psql "$ADMIN" -q -c "SELECT pg_drop_replication_slot('bench_recvlogical')" >/dev/null

peak=$(grep -o 'peak_rss_bytes=[0-9]*' "$WORK/sluice.log" | tail -n 1 | cut -d= -f2)
python3 - "$N" "$t0" "$t1" "$t2" "${peak:-0}" <<'PY'
import sys
n, t0, t1, t2, peak = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5])
recv, sluice = n / (t1 - t0), n / (t2 - t1)
print(f"pg_recvlogical: {recv:,.0f} rows/s ({t1 - t0:.2f} s)")
print(f"sluice:         {sluice:,.0f} rows/s ({t2 - t1:.2f} s), peak RSS {peak / 2**20:.0f} MiB")
print(f"ratio:          {sluice / recv:.2f}x")
PY
