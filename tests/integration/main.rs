//! Integration tests against the real PostgreSQL, MariaDB and MySQL started by
//! `scripts/dev-db.sh start`.
//! Every test uses its own schema, slot, publication and temp lake; none skips when the
//! database is missing: it fails and says how to start it.

mod auth;
mod bad_input;
mod changes;
mod drift;
mod exactly_once;
mod faults;
mod hub_rest;
mod hub_webhook;
mod incremental;
mod large_transaction;
mod metrics;
mod mysql;
mod mysql_support;
mod mysql_types;
mod mysql_upstream;
mod pg_types;
mod receiver;
mod server_problems;
mod shutdown;
mod snapshot;
mod source_health;
mod start_before_db;
mod support;
