#!/usr/bin/env bash
# The whole check: start the dev database, then fmt, clippy -D warnings, and every test
# (unit, integration against real PostgreSQL, and the Python `deltalake` reader).
set -euo pipefail
cd "$(dirname "$0")/.."

# One build dir outside the clone, shared with CI (see .cargo/config.toml).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/sluice-target}
export PATH="$HOME/.cargo/bin:$PATH"

scripts/dev-db.sh start
# Slots an earlier interrupted run left behind would hold WAL on the dev cluster forever
# (each test drops and re-creates its own); none of them is in use between runs.
eval "$(scripts/dev-db.sh env)"
psql "$SLUICE_DEV_PG_ADMIN_URL" -Atq -c \
  "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE NOT active AND slot_name LIKE 'sluice\_t%'" >/dev/null
# Kinto and Datasette, the REST APIs the REST sink's tests deliver to (exports their URLs
# and the Datasette token).
scripts/dev-http.sh start
eval "$(scripts/dev-http.sh env)"
# promtool (Debian's prometheus package) checks the metrics exposition; headless Chromium
# renders the status page.
for tool in promtool:prometheus chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${tool##*:}" >/dev/null
done

# The independent Delta reader used by the integration tests (exports SLUICE_PYTHON).
source scripts/reader-env.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
