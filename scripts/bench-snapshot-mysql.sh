#!/usr/bin/env bash
# MariaDB snapshot benchmark: a table of N narrow rows (default 2,000,000), read (a) by the
# `mariadb` client (`SELECT *`, one stream, text rows to /dev/null), (b) by Sluice's initial
# snapshot into Delta (one consistent snapshot, one streamed SELECT), and (c) by an incremental
# snapshot into Delta (the table added to a running pipeline: primary-key chunks, each in its
# own consistent snapshot, streaming on). Prints rows/s, ratios and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"
N=${1:-2000000}

scripts/dev-db.sh start >/dev/null
eval "$(scripts/dev-db.sh env)"
PORT=${SLUICE_DEV_MY_PORT:-33069}
my() { mariadb -h127.0.0.1 -P"$PORT" -uroot "$@"; }
cargo build --release --quiet --bin sluice
SLUICE=$CARGO_TARGET_DIR/release/sluice
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "writing $N rows"
my -e "DROP DATABASE IF EXISTS bench; CREATE DATABASE bench;
  CREATE TABLE bench.first (id int PRIMARY KEY);
  CREATE TABLE bench.narrow (id bigint PRIMARY KEY, n int, note varchar(40), at datetime(6), price decimal(12,2));
  INSERT INTO bench.narrow SELECT seq, seq % 1000, CONCAT('row ', seq), NOW(6), seq / 100 FROM bench.seq_1_to_$N;"

config() { # name tables...
  local name=$1; shift
  local tables
  tables=$(printf '"bench.%s", ' "$@")
  cat > "$WORK/$name.toml" <<EOF2
[pipeline]
name = "$name"
[source]
kind = "mysql"
url = "$SLUICE_DEV_MY_URL"
tables = [${tables%, }]
server_id = 9902
[[sinks]]
kind = "delta"
path = "$WORK/lake-$name"
EOF2
}
rows_in() {
  python3 - "$1" <<'PY'
import json, sys, glob
n = 0
for f in glob.glob(sys.argv[1] + "/_delta_log/*.json"):
    for line in open(f):
        a = json.loads(line).get("add")
        if a:
            n += json.loads(a["stats"])["numRecords"]
print(n)
PY
}
peak() { grep -o 'peak_rss_bytes=[0-9]*' "$1" | tail -n 1 | cut -d= -f2; }
now() { date +%s.%N; }

t0=$(now)
my --quick -N -e "SELECT * FROM bench.narrow" >/dev/null
t1=$(now)

config initial narrow
SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/initial.toml" --until caught-up 2>"$WORK/initial.log"
t2=$(now)
[ "$(rows_in "$WORK/lake-initial/bench/narrow")" = "$N" ] || { echo "initial: wrong row count" >&2; exit 1; }

config incremental first
"$SLUICE" run --config "$WORK/incremental.toml" --until caught-up 2>/dev/null
config incremental first narrow
t3=$(now)
SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/incremental.toml" --until caught-up 2>"$WORK/incremental.log"
t4=$(now)
[ "$(rows_in "$WORK/lake-incremental/bench/narrow")" = "$N" ] || { echo "incremental: wrong row count" >&2; exit 1; }
my -e "DROP DATABASE bench"

python3 - "$N" "$t0" "$t1" "$t2" "$t3" "$t4" "$(peak "$WORK/initial.log")" "$(peak "$WORK/incremental.log")" <<'PY'
import sys
n = int(sys.argv[1])
t0, t1, t2, t3, t4 = map(float, sys.argv[2:7])
p1, p2 = int(sys.argv[7] or 0), int(sys.argv[8] or 0)
ref, initial, incremental = n / (t1 - t0), n / (t2 - t1), n / (t4 - t3)
print(f"mariadb SELECT * to /dev/null: {ref:,.0f} rows/s ({t1 - t0:.2f} s)")
print(f"sluice initial snapshot:       {initial:,.0f} rows/s ({t2 - t1:.2f} s, {initial / ref:.2f}x), peak RSS {p1 / 2**20:.0f} MiB")
print(f"sluice incremental snapshot:   {incremental:,.0f} rows/s ({t4 - t3:.2f} s, {incremental / ref:.2f}x), peak RSS {p2 / 2**20:.0f} MiB")
PY
