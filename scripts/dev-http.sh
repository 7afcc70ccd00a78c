#!/usr/bin/env bash
# Real HTTP APIs for developing and testing the HTTP sinks: Kinto (a JSON record store with
# upserts and a batch endpoint) and Datasette 1.0 (SQLite behind a JSON write API).
#
#   scripts/dev-http.sh start    install once into a venv, start both (idempotent)
#   scripts/dev-http.sh stop     stop both
#   scripts/dev-http.sh status   are they answering?
#   scripts/dev-http.sh env      print the variables tests use (eval it)
#
# Installed from PyPI into $SLUICE_HTTP_VENV (default /var/tmp/sluice-http-venv), pinned
# below; state and logs under $SLUICE_HTTP_DIR (default /var/tmp/sluice-http). Both listen on
# 127.0.0.1 only. A second `start` while both answer does nothing.
#
# ── Kinto on http://127.0.0.1:$SLUICE_KINTO_PORT (default 8888) ─────────────────────────
# Memory backend (every start is empty), basic auth: ANY user:password pair authenticates,
# as the principal basicauth:<hmac of the pair>, and an authenticated user may create
# buckets. Sluice's tests use `-u sluice:sluice-dev-password`
# (header `Authorization: Basic c2x1aWNlOnNsdWljZS1kZXYtcGFzc3dvcmQ=`). The creator of a
# bucket owns it (write on everything inside); another user:password gets 403, no
# credentials 401.
# Requests that work (verified by hand with curl):
#   curl -u sluice:sluice-dev-password -X PUT http://127.0.0.1:8888/v1/buckets/shop
#     -> 201 (200 when it exists) {"data":{"id":"shop","last_modified":...},"permissions":{"write":["basicauth:..."]}}
#   curl -u sluice:sluice-dev-password -X PUT http://127.0.0.1:8888/v1/buckets/shop/collections/orders
#     -> 201 / 200
#   curl -u sluice:sluice-dev-password -X PUT -H 'Content-Type: application/json' \
#        -d '{"data":{"total":12.5,"status":"paid"}}' \
#        http://127.0.0.1:8888/v1/buckets/shop/collections/orders/records/order-1
#     -> 201 created, 200 replaced (PUT upserts the whole record; PATCH merges)
#   curl -u sluice:sluice-dev-password http://127.0.0.1:8888/v1/buckets/shop/collections/orders/records/order-1
#     -> 200 {"data":{"total":12.5,"status":"paid","id":"order-1","last_modified":...}}
#   curl -u sluice:sluice-dev-password -X DELETE http://127.0.0.1:8888/v1/buckets/shop/collections/orders/records/order-1
#     -> 200 {"data":{"deleted":true,...}}; 404 when absent
#   curl -u sluice:sluice-dev-password -X POST -H 'Content-Type: application/json' \
#        -d '{"defaults":{"method":"PUT"},"requests":[
#              {"path":"/buckets/shop/collections/orders/records/order-2","body":{"data":{"total":1}}},
#              {"path":"/buckets/shop/collections/orders/records/order-3","method":"DELETE"}]}' \
#        http://127.0.0.1:8888/v1/batch
#     -> 200 {"responses":[{"status":201,"path":...,"body":...},{"status":404,...}]}
#        (each sub-request has its own status; the batch is NOT atomic; at most 25
#        sub-requests: more is a 400 for the whole batch)
#   Record ids: letters, digits, - and _ ; any other id is a 400 "Invalid object id".
#   Collection JSON schemas are enforced (experimental_collection_schema_validation):
#   PUT a collection with {"data":{"schema":{...}}} and records that do not match are a 400.
#
# ── Datasette on http://127.0.0.1:$SLUICE_DATASETTE_PORT (default 8001) ────────────────
# Serves the SQLite file $SLUICE_HTTP_DIR/shop.db as database `shop`, with a fixed signing
# secret; `env` prints a signed API token for the actor `sluice`, which
# $SLUICE_HTTP_DIR/datasette.yaml allows every write action on `shop`. Requests need
# `Authorization: Bearer $SLUICE_DATASETTE_TOKEN` (dstok_...); anonymous writes are 403.
# max_insert_rows is 100 (rows per insert/upsert request; more is a 400).
# Requests that work (verified by hand with curl; T=$SLUICE_DATASETTE_TOKEN):
#   curl -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \
#        -d '{"table":"orders","columns":[{"name":"id","type":"integer"},{"name":"status","type":"text"}],"pk":"id"}' \
#        http://127.0.0.1:8001/shop/-/create
#     -> 201 {"ok":true,"database":"shop","table":"orders",...}; 400 when it exists
#        (or create from rows: {"table":"orders","rows":[...],"pk":"id"})
#   curl -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \
#        -d '{"rows":[{"id":1,"status":"paid"},{"id":2,"status":"new"}]}' \
#        http://127.0.0.1:8001/shop/orders/-/upsert
#     -> 200 {"ok":true}  (insert or update by primary key; add "return":true for the rows)
#   curl -H "Authorization: Bearer $T" -H 'Content-Type: application/json' \
#        -d '{"rows":[{"id":3,"status":"new"}]}' http://127.0.0.1:8001/shop/orders/-/insert
#     -> 201; a duplicate key is a 400 "UNIQUE constraint failed: orders.id" unless
#        "ignore":true or "replace":true; 101 rows in one request: 400 "Too many rows, maximum
#        allowed is 100"; no token: 403 "Permission denied: need both insert-row and update-row"
#   curl -H "Authorization: Bearer $T" -X POST http://127.0.0.1:8001/shop/orders/1/-/delete
#     -> 200 {"ok":true}; 404 when the row is absent
#   curl 'http://127.0.0.1:8001/shop/orders.json?_shape=array'
#     -> [{"id":1,"status":"paid"},{"id":3,"status":"new"}]   (reads are anonymous)
# Unlike Kinto's memory backend, shop.db outlives a restart: tests use their own tables.
set -euo pipefail

VENV=${SLUICE_HTTP_VENV:-/var/tmp/sluice-http-venv}
BASE=${SLUICE_HTTP_DIR:-/var/tmp/sluice-http}
KINTO_PORT=${SLUICE_KINTO_PORT:-8888}
DS_PORT=${SLUICE_DATASETTE_PORT:-8001}
KINTO_VERSION=26.5.0
DATASETTE_VERSION=1.0a41
# Test-only secrets for servers on loopback; not secrets of anything real.
DS_SECRET=sluice-dev-datasette-secret
KINTO_HMAC=sluice-dev-kinto-hmac

die() { echo "dev-http.sh: $*" >&2; exit 1; }

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$KINTO_VERSION" "$DATASETTE_VERSION" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(0 if (version("kinto"), version("datasette")) == tuple(sys.argv[1:3]) else 1)
PY
  then
    return
  fi
  command -v python3 >/dev/null || die "python3 is missing (apt-get install python3 python3-venv)"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" || die "cannot create the venv $VENV (apt-get install python3-venv?)"
  echo "installing kinto $KINTO_VERSION and datasette $DATASETTE_VERSION into $VENV" >&2
  "$VENV/bin/pip" install -q "kinto==$KINTO_VERSION" "datasette==$DATASETTE_VERSION" \
    >"$BASE/pip.log" 2>&1 || { tail -20 "$BASE/pip.log" >&2; die "pip install failed, see $BASE/pip.log"; }
}

write_configs() {
  cat >"$BASE/kinto.ini" <<INI
[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = $KINTO_PORT

[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.memory
kinto.storage_url =
kinto.cache_backend = kinto.core.cache.memory
kinto.cache_url =
kinto.permission_backend = kinto.core.permission.memory
kinto.permission_url =
kinto.userid_hmac_secret = $KINTO_HMAC
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated
kinto.batch_max_requests = 25
kinto.experimental_collection_schema_validation = true

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)s %(name)s %(message)s
INI
  cat >"$BASE/datasette.yaml" <<YAML
settings:
  max_insert_rows: 100
databases:
  shop:
    permissions:
      create-table: {id: sluice}
      insert-row: {id: sluice}
      update-row: {id: sluice}
      delete-row: {id: sluice}
      drop-table: {id: sluice}
      alter-table: {id: sluice}
YAML
}

# pidfile name url-to-probe
running() { [ -f "$BASE/$1.pid" ] && kill -0 "$(cat "$BASE/$1.pid")" 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

wait_for() { # name url log
  for _ in $(seq 1 300); do
    answers "$2" && return 0
    running "$1" || { tail -20 "$3" >&2; die "$1 exited during start, see $3"; }
    sleep 0.2
  done
  tail -20 "$3" >&2; die "$1 did not answer $2 within 60 s, see $3"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_one() { # name port url config cmd...
  local name=$1 port=$2 url=$3 config=$4; shift 4
  # A server started with an older config is restarted with the current one.
  local stamp; stamp=$(sha256sum "$config" | cut -c1-16)
  if running "$name" && answers "$url" && [ "$(cat "$BASE/$name.stamp" 2>/dev/null)" = "$stamp" ]; then return; fi
  if running "$name"; then
    kill "$(cat "$BASE/$name.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do port_free "$port" && break; sleep 0.1; done
  fi
  port_free "$port" || die "port $port is taken by another process; set SLUICE_$(echo "$name" | tr a-z A-Z)_PORT"
  nohup "$@" >"$BASE/$name.log" 2>&1 &
  echo $! >"$BASE/$name.pid"
  wait_for "$name" "$url" "$BASE/$name.log"
  echo "$stamp" >"$BASE/$name.stamp"
}

token() {
  "$VENV/bin/datasette" create-token sluice --secret "$DS_SECRET"
}

case "${1:-}" in
  start)
    mkdir -p "$BASE"
    command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
    install
    write_configs
    start_one kinto "$KINTO_PORT" "http://127.0.0.1:$KINTO_PORT/v1/__heartbeat__" "$BASE/kinto.ini" \
      "$VENV/bin/kinto" start --ini "$BASE/kinto.ini" --port "$KINTO_PORT"
    [ -f "$BASE/shop.db" ] || "$VENV/bin/python" -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).close()" "$BASE/shop.db"
    start_one datasette "$DS_PORT" "http://127.0.0.1:$DS_PORT/-/versions.json" "$BASE/datasette.yaml" \
      "$VENV/bin/datasette" serve "$BASE/shop.db" --host 127.0.0.1 --port "$DS_PORT" \
      --config "$BASE/datasette.yaml" --secret "$DS_SECRET"
    echo "kinto      http://127.0.0.1:$KINTO_PORT/v1  (basic auth: any user:password, e.g. sluice:sluice-dev-password)"
    echo "datasette  http://127.0.0.1:$DS_PORT/shop  (Authorization: Bearer \$SLUICE_DATASETTE_TOKEN, see: $0 env)"
    ;;
  stop)
    for name in kinto datasette; do
      if running "$name"; then kill "$(cat "$BASE/$name.pid")"; echo "$name stopped"; fi
      rm -f "$BASE/$name.pid"
    done
    ;;
  status)
    rc=0
    answers "http://127.0.0.1:$KINTO_PORT/v1/__heartbeat__" && echo "kinto      up   http://127.0.0.1:$KINTO_PORT/v1" || { echo "kinto      down"; rc=1; }
    answers "http://127.0.0.1:$DS_PORT/-/versions.json" && echo "datasette  up   http://127.0.0.1:$DS_PORT/shop" || { echo "datasette  down"; rc=1; }
    exit $rc
    ;;
  env)
    echo "export SLUICE_KINTO_URL=http://127.0.0.1:$KINTO_PORT/v1"
    echo "export SLUICE_KINTO_USER=sluice SLUICE_KINTO_PASSWORD=sluice-dev-password"
    echo "export SLUICE_DATASETTE_URL=http://127.0.0.1:$DS_PORT"
    echo "export SLUICE_DATASETTE_TOKEN=$(token)"
    ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
