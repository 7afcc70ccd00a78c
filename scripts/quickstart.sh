#!/usr/bin/env bash
# Sluice in one command: a local PostgreSQL with a demo shop under live traffic, streamed into
# Delta tables under ./lake, then a summary of what landed per table and operation.
# `scripts/quickstart.sh mysql` does the same from the local MariaDB's binlog.
set -euo pipefail
SOURCE=${1:-postgres}
case "$SOURCE" in
  postgres | mysql) ;;
  *) echo "usage: $0 [postgres|mysql]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"

scripts/dev-db.sh start
eval "$(scripts/dev-db.sh env)"
# Kinto, a real REST API: the demo's customers are kept equal there by a REST hub sink.
scripts/dev-http.sh start
eval "$(scripts/dev-http.sh env)"
KINTO_COLLECTION=$SLUICE_KINTO_URL/buckets/quickstart/collections/customers
kinto() { curl -fsS -u "$SLUICE_KINTO_USER:$SLUICE_KINTO_PASSWORD" "$@"; }
ADMIN=$SLUICE_DEV_PG_ADMIN_URL

echo "== building sluice (release)"
cargo build --release --quiet --bin sluice
SLUICE=$CARGO_TARGET_DIR/release/sluice
source scripts/reader-env.sh

# Per source: create the demo tables, print the [source] block, make one step of traffic.
setup_postgres() {
  psql "$ADMIN" -q -v ON_ERROR_STOP=1 <<'SQL'
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'sluice_quickstart';
DROP PUBLICATION IF EXISTS sluice_quickstart;
DROP SCHEMA IF EXISTS demo CASCADE;
CREATE SCHEMA demo AUTHORIZATION sluice;
SET ROLE sluice;
CREATE TABLE demo.customers (id serial PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE demo.orders (id bigserial PRIMARY KEY, customer_id int, amount numeric(10,2),
                          status text, updated_at timestamptz DEFAULT now());
INSERT INTO demo.customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 20) g;
SQL
}
source_postgres() {
  printf 'kind = "postgres"\nurl = "%s?sslmode=require"\n' "$SLUICE_DEV_PG_URL"
}
traffic_postgres() {
  psql "$ADMIN" -q -v ON_ERROR_STOP=1 -c "
    INSERT INTO demo.orders (customer_id, amount, status)
      SELECT 1 + (random() * 19)::int, round((random() * 500)::numeric, 2), 'new' FROM generate_series(1, 25);
    UPDATE demo.orders SET status = 'paid', updated_at = now() WHERE id % 7 = $(($1 % 7)) AND status = 'new';
    DELETE FROM demo.orders WHERE id IN (SELECT id FROM demo.orders ORDER BY random() LIMIT 2);
    UPDATE demo.customers SET email = 'vip' || id || '@example.com' WHERE id = 1 + $1 % 20;"
}

my() { mariadb -h127.0.0.1 -P"${SLUICE_DEV_MY_PORT:-33069}" -uroot "$@"; }
setup_mysql() {
  my <<'SQL'
DROP DATABASE IF EXISTS demo;
CREATE DATABASE demo;
CREATE TABLE demo.customers (id int AUTO_INCREMENT PRIMARY KEY, name varchar(100) NOT NULL, email varchar(200));
CREATE TABLE demo.orders (id bigint AUTO_INCREMENT PRIMARY KEY, customer_id int, amount decimal(10,2),
                          status varchar(20), updated_at timestamp(6) DEFAULT CURRENT_TIMESTAMP(6));
INSERT INTO demo.customers (name, email) SELECT CONCAT('customer ', seq), CONCAT('c', seq, '@example.com') FROM demo.seq_1_to_20;
SQL
}
source_mysql() {
  printf 'kind = "mysql"\nurl = "%s/demo"\nserver_id = 4242\n' "${SLUICE_DEV_MY_URL%/shop}"
}
traffic_mysql() {
  my -e "
    INSERT INTO demo.orders (customer_id, amount, status)
      SELECT 1 + FLOOR(RAND() * 20), ROUND(RAND() * 500, 2), 'new' FROM demo.seq_1_to_25;
    UPDATE demo.orders SET status = 'paid', updated_at = NOW(6) WHERE id % 7 = $(($1 % 7)) AND status = 'new';
    DELETE FROM demo.orders ORDER BY RAND() LIMIT 2;
    UPDATE demo.customers SET email = CONCAT('vip', id, '@example.com') WHERE id = 1 + $1 % 20;"
}

echo "== creating the demo tables and an empty Kinto collection"
setup_"$SOURCE"
kinto -X DELETE "$SLUICE_KINTO_URL/buckets/quickstart" -o /dev/null 2>/dev/null || true
kinto -X PUT "$SLUICE_KINTO_URL/buckets/quickstart" -o /dev/null
kinto -X PUT "$KINTO_COLLECTION" -o /dev/null
export QUICKSTART_KINTO_AUTH=$(printf '%s:%s' "$SLUICE_KINTO_USER" "$SLUICE_KINTO_PASSWORD" | base64)
rm -rf lake quickstart.toml
cat > quickstart.toml <<EOF2
[pipeline]
name = "quickstart"

[source]
$(source_"$SOURCE")
tables = ["demo.customers", "demo.orders"]

[[sinks]]
kind = "delta"
path = "./lake"
max_batch_latency = "500ms"

# demo.customers, one Kinto record per row, through Kinto's batch endpoint.
[[sinks]]
kind = "rest"
name = "kinto-customers"
tables = ["demo.customers"]
upsert = { method = "PUT", url = "$KINTO_COLLECTION/records/{id}", body = { data = { name = "{name}", email = "{email}" } } }
delete = { method = "DELETE", url = "$KINTO_COLLECTION/records/{id}" }
batch = { url = "$SLUICE_KINTO_URL/batch", max_items = 25, format = "requests" }
headers = { Authorization = { env = "QUICKSTART_KINTO_AUTH", prefix = "Basic " } }
rate_limit = ["50/s"]
EOF2

"$SLUICE" check --config quickstart.toml

echo "== streaming for 8 seconds under a live trickle of inserts, updates and deletes"
"$SLUICE" run --config quickstart.toml &
SLUICE_PID=$!
for i in $(seq 1 40); do
  traffic_"$SOURCE" "$i"
  sleep 0.2
done
kill -TERM "$SLUICE_PID"
wait "$SLUICE_PID"
echo "== draining the rest (--until caught-up)"
"$SLUICE" run --config quickstart.toml --until caught-up
"$SLUICE" status --config quickstart.toml

echo "== what landed"
"$SLUICE_PYTHON" - <<'PY'
import os
import sys
from collections import Counter
from deltalake import DeltaTable
for table in ["demo/customers", "demo/orders"]:
    rows = DeltaTable(f"lake/{table}").to_pyarrow_table(columns=["_sluice_op"]).column(0).to_pylist()
    counts = Counter(rows)
    names = {"c": "inserts", "u": "updates", "d": "deletes", "t": "truncates", "r": "snapshot reads"}
    print(f"lake/{table}: {len(rows)} changes (" + ", ".join(f"{counts[k]} {names[k]}" for k in "rcudt" if counts[k]) + ")")
sys.stdout.flush()
os._exit(0)  # skip interpreter teardown, which can abort in the deltalake binding
PY
records=$(kinto "$KINTO_COLLECTION/records?_limit=10000" | "$SLUICE_PYTHON" -c "import json,sys; print(len(json.load(sys.stdin)['data']))")
vips=$(kinto "$KINTO_COLLECTION/records?_limit=10000" | "$SLUICE_PYTHON" -c "import json,sys; print(sum(r['email'].startswith('vip') for r in json.load(sys.stdin)['data']))")
echo "kinto $KINTO_COLLECTION: $records records ($vips with the updated vip email), one per demo.customers row"
