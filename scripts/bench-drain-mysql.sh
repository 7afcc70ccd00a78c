#!/usr/bin/env bash
# MariaDB drain benchmark: write N narrow rows (default 1,000,000) in 1,000-row transactions,
# then drain the backlog with (a) `mariadb-binlog --read-from-remote-server --verbose` to
# /dev/null (decodes every row to text) and (b) `sluice run --until caught-up` into a local
# Delta table. Prints rows/s for both, the ratio, and Sluice's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"
N=${1:-1000000}

scripts/dev-db.sh start >/dev/null
eval "$(scripts/dev-db.sh env)"
PORT=${SLUICE_DEV_MY_PORT:-33069}
my() { mariadb -h127.0.0.1 -P"$PORT" -uroot "$@"; }
cargo build --release --quiet --bin sluice
SLUICE=$CARGO_TARGET_DIR/release/sluice
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

my -e "DROP DATABASE IF EXISTS bench; CREATE DATABASE bench;
  CREATE TABLE bench.narrow (id bigint PRIMARY KEY, n int, note varchar(40), at datetime(6), price decimal(12,2))"
cat > "$WORK/sluice.toml" <<EOF2
[pipeline]
name = "bench_mysql"
[source]
kind = "mysql"
url = "$SLUICE_DEV_MY_URL"
tables = ["bench.narrow"]
server_id = 9901
[[sinks]]
kind = "delta"
path = "$WORK/lake"
EOF2
# Records the starting position.
"$SLUICE" run --config "$WORK/sluice.toml" --until caught-up 2>/dev/null
START_FILE=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['binlog']['file'])" "$WORK/lake/_sluice_state/bench_mysql.json")
START_POS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['binlog']['pos'])" "$WORK/lake/_sluice_state/bench_mysql.json")

echo "writing $N rows in 1000-row transactions"
for ((i = 0; i < N; i += 1000)); do
  echo "INSERT INTO bench.narrow SELECT seq, seq % 1000, CONCAT('row ', seq), NOW(6), seq / 100 FROM seq_$((i + 1))_to_$((i + 1000));"
done | my bench
STOP=$(my -N -e "SHOW MASTER STATUS" | awk '{print $2}')

now() { date +%s.%N; }
t0=$(now)
mariadb-binlog --read-from-remote-server -h127.0.0.1 -P"$PORT" -uroot --verbose \
  --start-position="$START_POS" --stop-position="$STOP" "$START_FILE" >/dev/null
t1=$(now)
SLUICE_LOG=sluice=info "$SLUICE" run --config "$WORK/sluice.toml" --until caught-up 2>"$WORK/sluice.log"
t2=$(now)
peak=$(grep -o 'peak_rss_bytes=[0-9]*' "$WORK/sluice.log" | tail -n 1 | cut -d= -f2)
rows=$(python3 - "$WORK/lake/bench/narrow" <<'PY'
import json, sys, glob
n = 0
for f in glob.glob(sys.argv[1] + "/_delta_log/*.json"):
    for line in open(f):
        a = json.loads(line).get("add")
        if a:
            n += json.loads(a["stats"])["numRecords"]
print(n)
PY
)
[ "$rows" = "$N" ] || { echo "expected $N rows in the Delta table, found $rows" >&2; exit 1; }
my -e "DROP DATABASE bench"
python3 - "$N" "$t0" "$t1" "$t2" "${peak:-0}" <<'PY'
import sys
n, t0, t1, t2, peak = int(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5])
ref, sluice = n / (t1 - t0), n / (t2 - t1)
print(f"mariadb-binlog --verbose: {ref:,.0f} rows/s ({t1 - t0:.2f} s)")
print(f"sluice into Delta:        {sluice:,.0f} rows/s ({t2 - t1:.2f} s), peak RSS {peak / 2**20:.0f} MiB")
print(f"ratio:                    {sluice / ref:.2f}x")
PY
