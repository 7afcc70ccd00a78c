#!/usr/bin/env bash
# Capture real protocol messages from the dev databases as seeds for the fuzz targets in
# fuzz/ (see scripts/fuzz.sh), one file per input:
#
#   fuzz/seeds/pgoutput/      pgoutput messages (protocol 2, text and binary tuples, streamed
#                             chunks, a logical message, an origin), from
#                             pg_logical_slot_peek_binary_changes on PostgreSQL
#   fuzz/seeds/copy/          COPY … TO STDOUT (FORMAT binary) output of a few queries
#   fuzz/seeds/binlog_rows/   raw binlog events FORMAT_DESCRIPTION + TABLE_MAP + ROWS (MariaDB
#                             and MySQL, checksums included), from mysqlbinlog --raw
#   fuzz/seeds/mariadb_gtid/  MariaDB GTID event bodies (header and checksum removed)
#   fuzz/seeds/mysql_json/    MySQL binary JSON values, cut out of MySQL's ROWS events
#
# Needs the dev databases (scripts/dev-db.sh start). Everything it creates is named fuzzseed*
# (PostgreSQL schema fuzzseed, publication fuzzseed_pub, slot fuzzseed_slot, origin
# fuzzseed_origin; MariaDB and MySQL database fuzzseed), is dropped and made again on each run
# and dropped at the end; nothing else is touched. The seed directories are replaced once every
# capture worked, so a run replaces the corpus (run it again when a decoder learns a new message). Other clients'
# binlog events are skipped: only events of database fuzzseed are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/dev-db.sh env)"
DEST=${FUZZ_SEEDS_DIR:-fuzz/seeds}
WORK=$(mktemp -d)
OUT=$WORK/seeds  # moved over $DEST once every capture worked
PG_PORT=${SLUICE_DEV_PG_PORT:-54329}
MY_PORT=${SLUICE_DEV_MY_PORT:-33069}
MYSQL_PORT=${SLUICE_DEV_MYSQL_PORT:-33071}
# MySQL's own mysqlbinlog (MariaDB's refuses MySQL 9), run as dev-db.sh runs mysqld.
MYSQL_ROOT=${SLUICE_DEV_DIR:-/var/tmp/sluice-dev}/mysql-root
MYSQLBINLOG="$MYSQL_ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $MYSQL_ROOT/usr/lib/x86_64-linux-gnu $MYSQL_ROOT/usr/bin/mysqlbinlog"

export PGOPTIONS="-c client_min_messages=warning"
pg() { psql -X -q -At -v ON_ERROR_STOP=1 "$SLUICE_DEV_PG_ADMIN_URL" "$@"; }
maria() { mariadb -h127.0.0.1 -P"$MY_PORT" -uroot -N -B "$@"; }
mysql9() { mysql -h127.0.0.1 -P"$MYSQL_PORT" -uroot -N -B "$@"; }

pg_cleanup() {
  pg -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'fuzzseed_slot'" \
     -c "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = 'fuzzseed_origin'" \
     -c "DROP PUBLICATION IF EXISTS fuzzseed_pub" -c "DROP SCHEMA IF EXISTS fuzzseed CASCADE" >/dev/null
}
my_cleanup() {
  maria -e "DROP DATABASE IF EXISTS fuzzseed" || true
  mysql9 -e "DROP DATABASE IF EXISTS fuzzseed" || true
}
cleanup() { pg_cleanup || true; my_cleanup; rm -rf "$WORK"; }
trap cleanup EXIT
pg_cleanup
my_cleanup
mkdir -p "$OUT"/{pgoutput,copy,binlog_rows,mariadb_gtid,mysql_json}

# ---- PostgreSQL: pgoutput and binary COPY ----------------------------------------------------
pg <<'SQL' >/dev/null
CREATE SCHEMA fuzzseed;
CREATE TYPE fuzzseed.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE fuzzseed.t (
  id bigint PRIMARY KEY, note text, amount numeric(12, 3), at timestamptz, day date,
  blob bytea, doc jsonb, tags int[], flag boolean, ratio float8, uid uuid, mood fuzzseed.mood);
CREATE TABLE fuzzseed.full_identity (k int, v text);
ALTER TABLE fuzzseed.full_identity REPLICA IDENTITY FULL;
CREATE PUBLICATION fuzzseed_pub FOR TABLE fuzzseed.t, fuzzseed.full_identity;
SELECT pg_create_logical_replication_slot('fuzzseed_slot', 'pgoutput');
SQL
PG_ROWS="INSERT INTO fuzzseed.t VALUES
  (1, 'first', 12.5, '2024-01-02 03:04:05.123456+00', '2024-01-02', '\\x00ff10', '{\"a\": [1, 2]}',
   '{1,2,3}', true, 1.5, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy'),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, repeat('ünïcode ', 200), -0.001, 'infinity', '0001-01-01 BC', '\\x', '[]', '{}', false,
   'NaN', '00000000-0000-0000-0000-000000000000', 'sad')"
pg -c "$PG_ROWS" >/dev/null
pg <<'SQL' >/dev/null
UPDATE fuzzseed.t SET note = 'changed', amount = amount * 2 WHERE id = 1;
UPDATE fuzzseed.t SET id = 20 WHERE id = 2;
DELETE FROM fuzzseed.t WHERE id = 3;
INSERT INTO fuzzseed.full_identity VALUES (1, 'one'), (2, NULL);
UPDATE fuzzseed.full_identity SET v = 'uno' WHERE k = 1;
DELETE FROM fuzzseed.full_identity WHERE k = 2;
SELECT pg_logical_emit_message(true, 'fuzzseed', 'transactional content');
SELECT pg_logical_emit_message(false, 'fuzzseed', '\x00010203'::bytea);
TRUNCATE fuzzseed.full_identity;
TRUNCATE fuzzseed.t, fuzzseed.full_identity RESTART IDENTITY CASCADE;
ALTER TABLE fuzzseed.t ADD COLUMN extra int;
INSERT INTO fuzzseed.t (id, extra) VALUES (4, 4);
SQL
# A transaction from a replication origin: a Begin followed by an Origin message.
pg <<'SQL' >/dev/null
SELECT pg_replication_origin_create('fuzzseed_origin');
SELECT pg_replication_origin_session_setup('fuzzseed_origin');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/1000', now());
INSERT INTO fuzzseed.t (id, note) VALUES (5, 'from elsewhere');
COMMIT;
SELECT pg_replication_origin_session_reset();
SQL
# A transaction bigger than logical_decoding_work_mem (64kB, its minimum), streamed in chunks.
pg -c "INSERT INTO fuzzseed.t (id, note) SELECT g, repeat('x', 100) FROM generate_series(100, 1200) g" >/dev/null

for binary in false true; do
  pg -c "SET logical_decoding_work_mem = '64kB'" -c "SELECT encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes('fuzzseed_slot', NULL, NULL,
      'proto_version', '2', 'publication_names', 'fuzzseed_pub', 'messages', 'true',
      'streaming', 'on', 'binary', '$binary')" >"$WORK/pgoutput-$binary.hex"
done
python3 - "$WORK" "$OUT/pgoutput" <<'PY'
import sys, collections
work, out = sys.argv[1], sys.argv[2]
# Keep a few of each message type (binary and text tuples apart): tens of files, not thousands.
keep = collections.Counter()
for binary in ("false", "true"):
    for line in open(f"{work}/pgoutput-{binary}.hex"):
        msg = bytes.fromhex(line.strip())
        tag = chr(msg[0])
        key = (tag, binary if tag in "IUD" else "")
        limit = 4 if tag in "IUD" else 2
        if keep[key] >= limit:
            continue
        keep[key] += 1
        name = f"{'upper' if tag.isupper() else 'lower'}-{tag}-{binary}-{keep[key]}.bin" \
            if tag in "IUD" else f"{'upper' if tag.isupper() else 'lower'}-{tag}-{keep[key]}.bin"
        open(f"{out}/{name}", "wb").write(msg)
PY

pg -c "$PG_ROWS ON CONFLICT (id) DO NOTHING" >/dev/null
copy() { pg -c "COPY ($2) TO STDOUT (FORMAT binary)" >"$OUT/copy/$1.bin"; }
copy all-types "SELECT * FROM fuzzseed.t WHERE id < 100 ORDER BY id"
copy nulls "SELECT NULL::int, NULL::text, NULL::bytea"
copy no-rows "SELECT * FROM fuzzseed.t WHERE false"
copy no-columns "SELECT FROM generate_series(1, 3)"
copy wide "SELECT id, note FROM fuzzseed.t WHERE id BETWEEN 100 AND 140 ORDER BY id"
copy scalars "SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.5::float8, 123456789.000123::numeric,
  'a'::char(3), now()::timestamp, '12:34:56.789'::time, '1 day 2 hours'::interval, '{a,b}'::text[],
  '10.0.0.1/8'::inet, '{\"k\": [1, 2.5, null]}'::json, B'1011'::bit varying"
pg_cleanup

# ---- MariaDB and MySQL: binlog events ---------------------------------------------------------
# Types of both servers; the last columns are each server's own.
COMMON_COLUMNS="id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
  bi BIGINT, bu BIGINT UNSIGNED, d1 DECIMAL(10,2), d2 DECIMAL(65,30), f FLOAT, db DOUBLE,
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), yr YEAR, bt BIT(13),
  en ENUM('a','b','c'), st SET('x','y','z'), ch CHAR(10), vc VARCHAR(300), bn BINARY(4),
  vb VARBINARY(20), bl BLOB, tx TEXT, l1 CHAR(5) CHARACTER SET latin1"
COMMON_ROW="(1, -128, 255, -32768, -8388608, -9223372036854775808, 18446744073709551615,
  -12345678.99, 1234567890123456789012345678901234.567890123456789012345678901234,
  1.5, -2.25e-300, '2024-02-29', '2024-01-02 03:04:05.123456', '2038-01-18 00:00:00.999',
  '-838:59:59.99', 2155, b'1010101010101', 'b', 'x,z', 'chars', REPEAT('ü', 100), x'0100',
  x'00ff', REPEAT(x'ab', 300), 'text', 'café'"
my_changes() {
  local extra_row=$1
  cat <<SQL
INSERT INTO fuzzseed.t VALUES $COMMON_ROW, $extra_row);
INSERT INTO fuzzseed.t (id) VALUES (2), (3), (4);
UPDATE fuzzseed.t SET vc = 'updated', d1 = 0, dtm = '0000-00-00 00:00:00' WHERE id = 1;
UPDATE fuzzseed.t SET id = 20 WHERE id = 2;
DELETE FROM fuzzseed.t WHERE id IN (3, 4);
ALTER TABLE fuzzseed.t ADD COLUMN added INT;
INSERT INTO fuzzseed.t (id, added) VALUES (5, 5);
SQL
}
# Extract the seeds from a raw binlog dump; $3 = flavor (mariadb|mysql).
split_binlog() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys, struct, os
path, out, flavor = sys.argv[1], sys.argv[2], sys.argv[3]
data = open(path, "rb").read()
assert data[:4] == b"\xfebin", "not a raw binlog"
pos, fde, maps, gtid, n = 4, None, {}, None, {"rows": 0, "gtid": 0, "json": 0}
def write(kind, name, blob):
    assert len(blob) < 65536
    n[kind] += 1
    open(f"{out}/{kind_dir[kind]}/{flavor}-{name}-{n[kind]:02}.bin", "wb").write(blob)
kind_dir = {"rows": "binlog_rows", "gtid": "mariadb_gtid", "json": "mysql_json"}
while pos + 19 <= len(data):
    typ = data[pos + 4]
    size = struct.unpack_from("<I", data, pos + 9)[0]
    ev = data[pos:pos + size]
    pos += size
    body = ev[19:-4]  # CRC32 checksums are on (both dev servers)
    if typ == 15 and fde is None:
        fde = ev
    elif typ == 19:
        table_id = int.from_bytes(body[0:6], "little")
        db_len = body[8]
        db = body[9:9 + db_len].decode()
        tlen = body[10 + db_len]
        table = body[11 + db_len:11 + db_len + tlen].decode()
        if db == "fuzzseed":
            maps[table_id] = (table, ev)
            if gtid is not None:
                write("gtid", "trx", gtid)
                gtid = None
    elif typ == 162:
        gtid = body
    elif typ == 2 and gtid is not None:
        db_len = body[8]
        status_len = struct.unpack_from("<H", body, 11)[0]
        db = body[13 + status_len:13 + status_len + db_len]
        if db == b"fuzzseed" and b"BEGIN" not in body[-6:]:
            write("gtid", "ddl", gtid)  # a standalone statement
            gtid = None
    elif typ in (23, 24, 25, 30, 31, 32):
        table_id = int.from_bytes(body[0:6], "little")
        if table_id not in maps:
            continue
        table, tme = maps[table_id]
        n["json_docs_rows"] = n.get("json_docs_rows", 0) + (table == "json_docs")
        if table != "json_docs" or n["json_docs_rows"] <= 3:  # they are mysql_json's seeds
            write("rows", {23: "write", 30: "write", 24: "update", 31: "update",
                           25: "delete", 32: "delete"}[typ] + "-" + table, fde + tme + ev)
        if table == "json_docs" and typ == 30:
            # WRITE_ROWS v2 of (id INT, j JSON): post-header, extra data, column count and
            # bitmap, then per row a null bitmap, id (4 bytes) and j (4-byte length + value).
            extra = struct.unpack_from("<H", body, 8)[0]
            p = 8 + extra
            p += 1 + 1  # column count 2, one bitmap byte
            while p < len(body):
                nulls = body[p]; p += 1 + 4
                if nulls & 2:
                    continue
                ln = struct.unpack_from("<I", body, p)[0]; p += 4
                write("json", "doc", body[p:p + ln]); p += ln
assert n["rows"] > 0, f"no {flavor} rows events of fuzzseed found: run again"
print(f"{flavor}: {n['rows']} rows events, {n['gtid']} GTIDs, {n['json']} JSON values")
PY
}

# MariaDB: a binlog dump from the position before the changes.
read -r MFILE MPOS < <(maria -e "SHOW MASTER STATUS" | cut -f1,2)
{
  echo "SET SESSION sql_mode = ''; CREATE DATABASE fuzzseed; USE fuzzseed;"
  echo "CREATE TABLE fuzzseed.t ($COMMON_COLUMNS, ip INET6, u UUID, js JSON);"
  my_changes "'::1', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}'"
} | maria
mariadb-binlog --read-from-remote-server -h127.0.0.1 -P"$MY_PORT" -uroot --raw \
  --start-position="$MPOS" --result-file="$WORK/maria-" "$MFILE"
split_binlog "$WORK/maria-$MFILE" "$OUT" mariadb

# MySQL: the same, plus JSON documents whose binary form becomes the mysql_json seeds.
read -r YFILE YPOS < <(mysql9 -e "SHOW BINARY LOG STATUS" | cut -f1,2)
{
  echo "SET SESSION sql_mode = ''; CREATE DATABASE fuzzseed; USE fuzzseed;"
  echo "CREATE TABLE fuzzseed.t ($COMMON_COLUMNS, js JSON, vec VECTOR(3), geo POINT);"
  my_changes "'{\"k\": [1, 2]}', STRING_TO_VECTOR('[1.5, -2, 3]'), ST_GeomFromText('POINT(1 2)')"
  echo "CREATE TABLE fuzzseed.json_docs (id INT PRIMARY KEY, j JSON);"
  i=0
  while IFS= read -r doc; do
    i=$((i + 1))
    echo "INSERT INTO fuzzseed.json_docs VALUES ($i, $doc);"
  done <<'DOCS'
'null'
'true'
'false'
'-1'
'32767'
'-2147483649'
'9223372036854775807'
'18446744073709551615'
'1.5'
'-1e300'
'"text with \\"quotes\\", ünïcödé and \\u0001"'
'[]'
'{}'
'[1, "a", null, true, 2.5, [3, {"k": "v"}], -70000, 5000000000]'
'{"a": 1, "bb": [1, 2, 3], "c": {"d": null, "e": "f"}, "": 0}'
'[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]'
JSON_OBJECT('at', CAST('2024-01-02 03:04:05.5' AS DATETIME(6)), 'day', CAST('2024-01-02' AS DATE))
JSON_ARRAY(CAST('-838:59:59.5' AS TIME(6)), CAST('12:00' AS TIME))
JSON_ARRAY(CAST(12.345 AS DECIMAL(10,3)), CAST(-0.5 AS DECIMAL(30,20)), CAST(1e20 AS DECIMAL(65,0)))
JSON_ARRAY(TIMESTAMP'2024-05-06 07:08:09.123456')
JSON_ARRAY(x'0102ff', CAST('bin' AS BINARY))
JSON_OBJECT('list', JSON_ARRAY(1, 2, 3), 'nested', JSON_OBJECT('x', JSON_ARRAY()), 'dbl', 1e-7)
CAST(CONCAT('[', REPEAT('"0123456789abcdef", ', 500), '1]') AS JSON)
DOCS
  echo "INSERT INTO fuzzseed.json_docs VALUES (100, NULL);"
} | mysql9
# shellcheck disable=SC2086 # MYSQLBINLOG is the loader, its options and the binary
$MYSQLBINLOG --read-from-remote-server -h127.0.0.1 -P"$MYSQL_PORT" -uroot --raw \
  --start-position="$YPOS" --result-file="$WORK/mysql-" "$YFILE"
split_binlog "$WORK/mysql-$YFILE" "$OUT" mysql

for d in pgoutput copy binlog_rows mariadb_gtid mysql_json; do
  rm -rf "${DEST:?}/$d"
  mkdir -p "$DEST"
  mv "$OUT/$d" "$DEST/$d"
done
for d in "$DEST"/*/; do echo "$(basename "$d"): $(find "$d" -type f | wc -l) files"; done
