#!/usr/bin/env bash
# A private PostgreSQL 15 and a private MariaDB 10.11 for development, tests and the quickstart.
#
#   scripts/dev-db.sh start    install if missing, create and start (idempotent)
#   scripts/dev-db.sh stop     stop it
#   scripts/dev-db.sh status   is it running?
#   scripts/dev-db.sh env      print the variables tests and the quickstart use (eval it)
#
# Runs as the `postgres` OS user (never as root) on 127.0.0.1:$SLUICE_DEV_PG_PORT, with
# wal_level=logical, a SCRAM password user `sluice` (REPLICATION), database `shop`, and a
# TLS certificate for 127.0.0.1 signed by a private CA made here (for sslmode=verify-full use
# sslrootcert=$BASE/pg/root.crt). The superuser `postgres` may log in without a password over
# loopback, for test set-up only.
#
# A second, deliberately misconfigured cluster runs on $SLUICE_DEV_BAD_PG_PORT (wal_level=replica,
# its only replication slot taken) so tests can check how Sluice reports server problems.
#
# A third, small cluster runs on $SLUICE_DEV_SMALL_PG_PORT with max_slot_wal_keep_size = 48MB
# and max_wal_size = 64MB, so tests can make a slot retain too much WAL and lose it without
# touching the shared cluster (trust auth over loopback, no TLS; database `shop`).
#
# MariaDB runs as the `mysql` OS user on 127.0.0.1:$SLUICE_DEV_MY_PORT with log_bin,
# binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL, gtid_strict_mode=ON,
# server_id=1, TLS (the PostgreSQL certificate above), a password user `sluice` with
# replication grants and its twin `sluice_tls` that must use TLS, database `shop`; `root` may
# log in without a password over loopback, for test set-up only. A misconfigured one (no
# binlog, STATEMENT format, MINIMAL images, compressed events, no TLS) runs on
# $SLUICE_DEV_BAD_MY_PORT. A changed configuration restarts a running server.
#
# MySQL (Debian 12 packages none) comes from Debian unstable's mysql-server-core, unpacked with
# its whole dependency closure (C library included) under $BASE/mysql-root, never installed
# into the system, and run through that closure's own dynamic loader. It runs as the `mysql` OS
# user on 127.0.0.1:$SLUICE_DEV_MYSQL_PORT with GTIDs on, binlog_row_metadata=FULL and the same
# `sluice` user.
set -euo pipefail
# runuser, mariadbd and friends live in sbin, which a minimal PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

PORT=${SLUICE_DEV_PG_PORT:-54329}
BAD_PORT=${SLUICE_DEV_BAD_PG_PORT:-54330}
BASE=${SLUICE_DEV_DIR:-/var/tmp/sluice-dev}
DATA=$BASE/pg
LOG=$BASE/pg.log
BAD_DATA=$BASE/pg-bad
SMALL_PORT=${SLUICE_DEV_SMALL_PG_PORT:-54331}
SMALL_DATA=$BASE/pg-small
PASSWORD=${SLUICE_DEV_PASSWORD:-sluice-dev-password}
OS_USER=postgres
MY_PORT=${SLUICE_DEV_MY_PORT:-33069}
BAD_MY_PORT=${SLUICE_DEV_BAD_MY_PORT:-33070}
MY_USER=mysql
MYSQL_PORT=${SLUICE_DEV_MYSQL_PORT:-33071}

find_bin() {
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_server() {
  if ! BIN=$(find_bin); then
    echo "dev-db: installing postgresql with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    BIN=$(find_bin)
  fi
  id "$OS_USER" >/dev/null 2>&1 || useradd --system --home-dir "$BASE" --shell /bin/bash "$OS_USER"
}

# Run a command as the database OS user (directly when we already are that user).
as_db() {
  if [ "$(id -un)" = "$OS_USER" ]; then "$@"
  elif [ "$(id -u)" = 0 ]; then runuser -u "$OS_USER" -- "$@"
  else echo "dev-db: run as root or as $OS_USER" >&2; exit 1
  fi
}

running() {
  [ -f "$DATA/postmaster.pid" ] && as_db "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

psql_admin() {
  as_db "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DATA" -p "$PORT" -U postgres "$@"
}

start() {
  install_server
  mkdir -p "$BASE"
  chown "$OS_USER" "$BASE"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_db "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
max_connections = 200
ssl = on
password_encryption = 'scram-sha-256'
fsync = on
shared_buffers = 256MB
max_wal_size = 4GB
CONF
  fi
  # Rewritten on every start (and reloaded below) so existing clusters get new rules. The
  # sluice_md5 and sluice_cleartext roles exist for the tests of those auth methods.
  cat >"$DATA/pg_hba.conf" <<HBA
local all all trust
host all postgres 127.0.0.1/32 trust
host all,replication sluice_md5 127.0.0.1/32 md5
host all,replication sluice_cleartext 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
HBA
  chown "$OS_USER" "$DATA/pg_hba.conf"
  if [ ! -f "$DATA/root.crt" ]; then
    # A private CA (root.crt, for sslrootcert) and a server certificate it signs for 127.0.0.1.
    as_db bash -c "cd '$DATA' &&
      openssl req -new -x509 -days 3650 -nodes -subj '/CN=sluice dev ca' -keyout root.key -out root.crt &&
      openssl req -new -nodes -subj '/CN=127.0.0.1' -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > server.ext &&
      openssl x509 -req -days 3650 -in server.csr -CA root.crt -CAkey root.key -CAcreateserial -extfile server.ext -out server.crt &&
      chmod 600 server.key root.key && rm -f server.csr server.ext" >/dev/null 2>&1
    if running; then as_db "$BIN/pg_ctl" -D "$DATA" reload >/dev/null; fi
  fi
  if ! running; then
    as_db "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null
  else
    as_db "$BIN/pg_ctl" -D "$DATA" reload >/dev/null
  fi
  start_bad
  start_small
  psql_admin -d postgres <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sluice') THEN
    CREATE ROLE sluice LOGIN REPLICATION;
  END IF;
END \$\$;
ALTER ROLE sluice PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE shop OWNER sluice' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop')\gexec
SQL
  echo "dev-db: postgresql running on 127.0.0.1:$PORT (data in $DATA)"
  start_mariadb
  start_mysql
}

# The misconfigured cluster: wal_level=replica and no free replication slot.
start_bad() {
  if [ ! -f "$BAD_DATA/PG_VERSION" ]; then
    as_db "$BIN/initdb" -D "$BAD_DATA" -U postgres --auth-local=trust --auth-host=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$BAD_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $BAD_PORT
unix_socket_directories = '$BAD_DATA'
wal_level = replica
max_replication_slots = 1
max_wal_senders = 2
shared_buffers = 16MB
CONF
  fi
  if ! { [ -f "$BAD_DATA/postmaster.pid" ] && as_db "$BIN/pg_ctl" -D "$BAD_DATA" status >/dev/null 2>&1; }; then
    as_db "$BIN/pg_ctl" -D "$BAD_DATA" -l "$BASE/pg-bad.log" -w -t 60 start >/dev/null
  fi
  as_db "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$BAD_DATA" -p "$BAD_PORT" -U postgres -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sluice') THEN
    CREATE ROLE sluice LOGIN REPLICATION;
  END IF;
END \$\$;
SELECT 'CREATE DATABASE shop OWNER sluice' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop')\gexec
SELECT count(pg_create_physical_replication_slot('occupied')) FROM (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots)) AS free;
SQL
  as_db "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$BAD_DATA" -p "$BAD_PORT" -U postgres -d shop \
    -c "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS public.keyed (id int PRIMARY KEY)"
}

# The small cluster: slots are lost after 48MB of retained WAL.
start_small() {
  if [ ! -f "$SMALL_DATA/PG_VERSION" ]; then
    as_db "$BIN/initdb" -D "$SMALL_DATA" -U postgres --auth-local=trust --auth-host=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$SMALL_DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $SMALL_PORT
unix_socket_directories = '$SMALL_DATA'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
shared_buffers = 32MB
max_slot_wal_keep_size = 48MB
max_wal_size = 64MB
min_wal_size = 32MB
wal_keep_size = 0
CONF
    cat >"$SMALL_DATA/pg_hba.conf" <<HBA
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
HBA
  fi
  if ! { [ -f "$SMALL_DATA/postmaster.pid" ] && as_db "$BIN/pg_ctl" -D "$SMALL_DATA" status >/dev/null 2>&1; }; then
    as_db "$BIN/pg_ctl" -D "$SMALL_DATA" -l "$BASE/pg-small.log" -w -t 60 start >/dev/null
  fi
  as_db "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SMALL_DATA" -p "$SMALL_PORT" -U postgres -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sluice') THEN
    CREATE ROLE sluice LOGIN REPLICATION;
  END IF;
END \$\$;
SELECT 'CREATE DATABASE shop OWNER sluice' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop')\gexec
SQL
}

# One MariaDB server: $1 name (directory under $BASE), $2 port, $3 extra config lines.
start_mariadb_one() {
  local name=$1 port=$2 extra=$3
  local dir=$BASE/$name
  mkdir -p "$dir"
  chown "$MY_USER" "$dir"
  cat >"$dir/my.cnf.new" <<CNF
[mariadbd]
datadir = $dir/data
port = $port
bind-address = 127.0.0.1
socket = $dir/mariadb.sock
pid-file = $dir/mariadb.pid
log-error = $dir/error.log
skip-name-resolve
innodb_buffer_pool_size = 128M
innodb_log_file_size = 64M
max_connections = 200
$extra
CNF
  if ! cmp -s "$dir/my.cnf.new" "$dir/my.cnf" && mariadb-admin --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1; then
    # The configuration changed: restart with it.
    mariadb-admin --socket="$dir/mariadb.sock" -uroot shutdown >/dev/null 2>&1 || true
  fi
  mv "$dir/my.cnf.new" "$dir/my.cnf"
  if [ ! -d "$dir/data/mysql" ]; then
    runuser -u "$MY_USER" -- mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=normal >/dev/null
  fi
  if ! mariadb-admin --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1; then
    runuser -u "$MY_USER" -- bash -c "nohup mariadbd --defaults-file='$dir/my.cnf' >/dev/null 2>&1 &"
    for _ in $(seq 1 120); do
      mariadb-admin --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  mariadb-admin --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1 || { echo "dev-db: mariadb $name did not start; see $dir/error.log" >&2; exit 1; }
}

start_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1; then
    echo "dev-db: installing mariadb-server with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  fi
  # TLS with the certificate PostgreSQL uses (signed by the dev CA, for 127.0.0.1).
  mkdir -p "$BASE/mariadb"
  for f in root.crt server.crt server.key; do
    mode=644; [ "$f" = server.key ] && mode=600
    cmp -s "$DATA/$f" "$BASE/mariadb/$f" || install -o "$MY_USER" -m "$mode" "$DATA/$f" "$BASE/mariadb/$f"
  done
  start_mariadb_one mariadb "$MY_PORT" "ssl_ca = $BASE/mariadb/root.crt
ssl_cert = $BASE/mariadb/server.crt
ssl_key = $BASE/mariadb/server.key
server_id = 1
log_bin = $BASE/mariadb/data/binlog
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_strict_mode = ON
binlog_checksum = CRC32
sync_binlog = 1"
  mariadb --socket="$BASE/mariadb/mariadb.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
ALTER USER 'sluice'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'sluice'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'sluice_nogrant'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
CREATE USER IF NOT EXISTS 'sluice_tls'@'127.0.0.1' IDENTIFIED BY '$PASSWORD' REQUIRE SSL;
GRANT SELECT, RELOAD, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'sluice_tls'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS shop;
SQL
  start_mariadb_one mariadb-bad "$BAD_MY_PORT" "server_id = 2
binlog_format = STATEMENT
binlog_row_image = MINIMAL
binlog_row_metadata = MINIMAL
log_bin_compress = ON"
  mariadb --socket="$BASE/mariadb-bad/mariadb.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
GRANT SELECT ON *.* TO 'sluice'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.keyed (id int PRIMARY KEY);
SQL
  echo "dev-db: mariadb running on 127.0.0.1:$MY_PORT (data in $BASE/mariadb)"
}

# MySQL from Debian unstable, unpacked privately (see the header).
MYSQL_ROOT=$BASE/mysql-root
# mysqld through its own C library's loader.
MYSQLD="$MYSQL_ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $MYSQL_ROOT/usr/lib/x86_64-linux-gnu $MYSQL_ROOT/usr/sbin/mysqld"

fetch_mysql() {
  [ -x "$MYSQL_ROOT/usr/sbin/mysqld" ] && return 0
  echo "dev-db: fetching mysql-server-core and its libraries from Debian unstable" >&2
  local apt=$BASE/mysql-apt
  mkdir -p "$apt/lists/partial" "$apt/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" >"$apt/sources.list"
  : >"$apt/status"
  local opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$apt/lists" -o Dir::State::status="$apt/status"
    -o Dir::Cache="$apt" -o Dir::Cache::archives="$apt/archives" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root -qq)
  apt-get "${opts[@]}" update
  apt-get "${opts[@]}" -y --download-only install mysql-server-core >/dev/null
  rm -rf "$MYSQL_ROOT.new" && mkdir -p "$MYSQL_ROOT.new"
  for deb in "$apt"/archives/*.deb; do dpkg-deb -x "$deb" "$MYSQL_ROOT.new"; done
  rm -rf "$MYSQL_ROOT" && mv "$MYSQL_ROOT.new" "$MYSQL_ROOT"
  rm -rf "$apt"
}

start_mysql() {
  fetch_mysql
  local dir=$BASE/mysql
  mkdir -p "$dir"
  chown "$MY_USER" "$dir"
  cat >"$dir/my.cnf" <<CNF
[mysqld]
datadir = $dir/data
basedir = $MYSQL_ROOT/usr
lc-messages-dir = $MYSQL_ROOT/usr/share/mysql
plugin-dir = $MYSQL_ROOT/usr/lib/mysql/plugin
port = $MYSQL_PORT
bind-address = 127.0.0.1
socket = $dir/mysqld.sock
pid-file = $dir/mysqld.pid
log-error = $dir/error.log
secure-file-priv = ""
mysqlx = OFF
skip-name-resolve
innodb_buffer_pool_size = 128M
server_id = 1
log_bin = binlog
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_mode = ON
enforce_gtid_consistency = ON
CNF
  if [ ! -d "$dir/data/mysql" ]; then
    runuser -u "$MY_USER" -- $MYSQLD --defaults-file="$dir/my.cnf" --initialize-insecure >/dev/null 2>&1 ||
      { echo "dev-db: mysql did not initialize; see $dir/error.log" >&2; exit 1; }
  fi
  if ! mariadb-admin --socket="$dir/mysqld.sock" -uroot ping >/dev/null 2>&1; then
    runuser -u "$MY_USER" -- bash -c "nohup $MYSQLD --defaults-file='$dir/my.cnf' >/dev/null 2>&1 &"
    for _ in $(seq 1 120); do
      mariadb-admin --socket="$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  mariadb-admin --socket="$dir/mysqld.sock" -uroot ping >/dev/null 2>&1 || { echo "dev-db: mysql did not start; see $dir/error.log" >&2; exit 1; }
  mariadb --socket="$dir/mysqld.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'sluice'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
ALTER USER 'sluice'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS shop;
SQL
  echo "dev-db: mysql $(mariadb --socket="$dir/mysqld.sock" -uroot -N -e 'SELECT VERSION()') running on 127.0.0.1:$MYSQL_PORT (data in $dir)"
}

stop_mariadb() {
  for name in mariadb mariadb-bad; do
    if [ -S "$BASE/$name/mariadb.sock" ]; then
      mariadb-admin --socket="$BASE/$name/mariadb.sock" -uroot shutdown >/dev/null 2>&1 || true
    fi
  done
  if [ -S "$BASE/mysql/mysqld.sock" ]; then
    # MySQL 8+ has no COM_SHUTDOWN; the SHUTDOWN statement does it.
    mariadb --socket="$BASE/mysql/mysqld.sock" -uroot -e SHUTDOWN >/dev/null 2>&1 || true
  fi
}

stop() {
  stop_mariadb
  BIN=$(find_bin) || exit 0
  if running; then as_db "$BIN/pg_ctl" -D "$DATA" -w stop -m fast >/dev/null; fi
  if [ -f "$BAD_DATA/postmaster.pid" ]; then as_db "$BIN/pg_ctl" -D "$BAD_DATA" -w stop -m fast >/dev/null || true; fi
  if [ -f "$SMALL_DATA/postmaster.pid" ]; then as_db "$BIN/pg_ctl" -D "$SMALL_DATA" -w stop -m fast >/dev/null || true; fi
  echo "dev-db: stopped"
}

status() {
  BIN=$(find_bin) || { echo "dev-db: postgresql not installed"; exit 1; }
  if running; then echo "dev-db: postgresql running on 127.0.0.1:$PORT"; else echo "dev-db: postgresql stopped"; exit 1; fi
}

env_vars() {
  cat <<ENV
export SLUICE_DEV_PG_URL='postgres://sluice@127.0.0.1:$PORT/shop'
export SLUICE_DEV_PG_ADMIN_URL='postgres://postgres@127.0.0.1:$PORT/shop'
export SLUICE_SOURCE_PASSWORD='$PASSWORD'
export SLUICE_DEV_PG_ROOT_CERT='$DATA/root.crt'
export SLUICE_DEV_BAD_PG_URL='postgres://sluice@127.0.0.1:$BAD_PORT/shop'
export SLUICE_DEV_SMALL_PG_URL='postgres://sluice@127.0.0.1:$SMALL_PORT/shop'
export SLUICE_DEV_MY_URL='mysql://sluice@127.0.0.1:$MY_PORT/shop'
export SLUICE_DEV_MY_ADMIN_URL='mysql://root@127.0.0.1:$MY_PORT/shop'
export SLUICE_DEV_BAD_MY_URL='mysql://sluice@127.0.0.1:$BAD_MY_PORT/shop'
export SLUICE_DEV_MYSQL_URL='mysql://sluice@127.0.0.1:$MYSQL_PORT/shop'
ENV
}

# The small cluster restarted (fast shutdown: connections cut, then up again), for the
# fault tests' "PostgreSQL restart mid-stream".
restart_small() {
  BIN=$(find_bin)
  start_small
  as_db "$BIN/pg_ctl" -D "$SMALL_DATA" -l "$BASE/pg-small.log" -w -t 60 -m fast restart >/dev/null
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_vars ;;
  restart-small) restart_small ;;
  *) echo "usage: $0 start|stop|status|env|restart-small" >&2; exit 2 ;;
esac
