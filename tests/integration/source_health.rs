//! The health of a PostgreSQL slot while streaming: heartbeats keep the slot of an idle
//! database moving while another database of the same cluster is busy, and land in no table;
//! the WAL guard warns when the slot retains more than its share of `max_slot_wal_keep_size`
//! and stops the pipeline, with how to recover, once the server has lost the slot.
//!
//! The WAL tests use the small cluster of `scripts/dev-db.sh` (max_slot_wal_keep_size = 48MB),
//! never the shared one.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::support::{admin, ok, ops, read_delta, run_sluice, sluice, terminate, PORT};

/// The small cluster of `scripts/dev-db.sh`.
use crate::faults::SMALL_PORT;

async fn connect(port: u16, db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={db}"),
        NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        panic!("postgres on 127.0.0.1:{port} (database {db}) is not reachable ({e}): run scripts/dev-db.sh start")
    });
    tokio::spawn(conn);
    client
}

/// A pipeline config over `schema.keyed` on `url`, with `extra` lines in `[source]`.
fn write_config(dir: &Path, name: &str, url: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nname = \"{name}\"\n\n[source]\nkind = \"postgres\"\nurl = \"{url}\"\ntables = [\"{name}.keyed\"]\n{extra}\n\n[[sinks]]\nkind = \"delta\"\npath = \"{lake}\"\nmax_batch_latency = \"100ms\"\n",
        lake = dir.join("lake").display(),
    );
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Drop what an earlier run left in database `db` of the cluster on `port` and create the
/// test's schema with a keyed table holding one row.
pub(crate) async fn reset(port: u16, db: &str, name: &str) -> Client {
    let client = connect(port, db).await;
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'sluice_{name}';
             DROP PUBLICATION IF EXISTS sluice_{name};
             DROP SCHEMA IF EXISTS {name} CASCADE;
             CREATE SCHEMA {name} AUTHORIZATION sluice;
             CREATE TABLE {name}.keyed (id int PRIMARY KEY, v text);
             ALTER TABLE {name}.keyed OWNER TO sluice;
             INSERT INTO {name}.keyed VALUES (1, 'one');"
        ))
        .await
        .expect("reset the test schema");
    client
}

fn spawn_logged(config: &Path, log: &Path) -> Child {
    sluice()
        // The slot guard's periodic reading (debug) shows the lag in seconds.
        .env("SLUICE_LOG", "warn,sluice::source::slot_guard=debug")
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn sluice run")
}

/// Wait until the changelog table at `path` holds `n` rows.
async fn wait_rows(path: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if path.join("_delta_log").exists() && read_delta(path, None).len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never had {n} rows",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(restart_lsn, confirmed_flush_lsn, wal_status)` of `slot`.
async fn slot(
    db: &Client,
    slot: &str,
) -> (Option<replication::Lsn>, Option<replication::Lsn>, String) {
    let row = db
        .query_one(
            "SELECT restart_lsn::text, confirmed_flush_lsn::text, wal_status::text
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("read the slot");
    let lsn = |i: usize| {
        row.get::<_, Option<String>>(i)
            .map(|s| s.parse().expect("lsn"))
    };
    (lsn(0), lsn(1), row.get(2))
}

async fn current_lsn(db: &Client) -> replication::Lsn {
    let text: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn t_hb_heartbeat_moves_an_idle_databases_slot_while_another_is_busy() {
    let shop = admin().await;
    for db in ["t_hb_idle", "t_hb_busy"] {
        let exists = shop
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .unwrap()
            .is_some();
        if !exists {
            shop.batch_execute(&format!("CREATE DATABASE {db} OWNER sluice"))
                .await
                .unwrap();
        }
    }
    let idle = reset(PORT, "t_hb_idle", "t_hb").await;
    // A test-owned slot that decodes the idle database's WAL as text, to see the heartbeats.
    idle.batch_execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 't_hb_peek';
         SELECT pg_create_logical_replication_slot('t_hb_peek', 'test_decoding');",
    )
    .await
    .unwrap();
    let busy = connect(PORT, "t_hb_busy").await;
    busy.batch_execute("DROP TABLE IF EXISTS filler; CREATE TABLE filler (x text)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "t_hb",
        &format!("postgres://sluice@127.0.0.1:{PORT}/t_hb_idle?sslmode=require"),
        "heartbeat = \"1s\"",
    );
    let log = dir.path().join("run.log");
    let child = spawn_logged(&config, &log);
    let table = dir.path().join("lake").join("t_hb").join("keyed");
    wait_rows(&table, 1).await;
    let (restart0, flush0, _) = slot(&idle, "sluice_t_hb").await;
    let (restart0, flush0) = (restart0.unwrap(), flush0.unwrap());
    // Only the other database writes; the pipeline's database stays idle.
    let busy_from = current_lsn(&busy).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        busy.batch_execute(
            "INSERT INTO filler SELECT repeat('x', 100) FROM generate_series(1, 2000)",
        )
        .await
        .unwrap();
        let (restart, flush, _) = slot(&idle, "sluice_t_hb").await;
        let (restart, flush) = (restart.unwrap(), flush.unwrap());
        if restart > restart0 && restart > busy_from && flush > flush0 && flush > busy_from {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle database's slot stayed at restart_lsn {restart} (from {restart0}), confirmed_flush_lsn {flush} (from {flush0}) while the busy database wrote from {busy_from}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The lag in seconds stays meaningful although no table changed: the heartbeats' write
    // time is durable (a slot guard reading taken after the busy writes began shows it).
    let from = std::fs::read_to_string(&log).unwrap_or_default().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let lag_ms = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lag = text[from..]
            .lines()
            .filter(|l| l.contains("slot health"))
            .filter_map(|l| l.split("lag_ms=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .next_back();
        if let Some(lag) = lag {
            break lag;
        }
        assert!(
            Instant::now() < deadline,
            "no slot health reading with a lag: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        lag_ms < 5_000,
        "lag {lag_ms}ms on an idle database with 1s heartbeats"
    );
    terminate(child);
    // The heartbeats are non-transactional messages with their own prefix (the watermarks are
    // transactional, prefix "sluice"), and they landed in no table.
    let peeked: Vec<String> = idle
        .query(
            "SELECT data FROM pg_logical_slot_peek_changes('t_hb_peek', NULL, NULL)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    idle.batch_execute("SELECT pg_drop_replication_slot('t_hb_peek')")
        .await
        .unwrap();
    assert!(
        peeked
            .iter()
            .any(|d| d.contains("transactional: 0 prefix: sluice_heartbeat")),
        "no heartbeat in the idle database's wal: {peeked:#?}"
    );
    let rows = read_delta(&table, None);
    assert_eq!(ops(&rows), vec![("r".into(), 1)]);
    let schemas: Vec<_> = std::fs::read_dir(dir.path().join("lake"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('_'))
        .collect();
    assert_eq!(schemas, vec!["t_hb".to_string()]);
}

/// Write at least `segments` WAL segments (16MB each) on the cluster of `db`.
async fn switch_wal(db: &Client, segments: usize) {
    for _ in 0..segments {
        db.batch_execute(
            "SELECT pg_logical_emit_message(false, 'filler', 'x'); SELECT pg_switch_wal();",
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn t_wal_guard_warns_then_a_lost_slot_stops_run_with_the_recovery_message() {
    // The fault test restarts this cluster.
    let _cluster = crate::faults::SMALL_CLUSTER.lock().await;
    let db = reset(SMALL_PORT, "shop", "t_wal").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "t_wal",
        &format!("postgres://sluice@127.0.0.1:{SMALL_PORT}/shop?sslmode=disable"),
        "wal_warn_share = 0.25",
    );
    let log = dir.path().join("run.log");
    let mut child = spawn_logged(&config, &log);
    let table = dir.path().join("lake").join("t_wal").join("keyed");
    wait_rows(&table, 1).await;

    // An open transaction holds the slot's restart_lsn back while WAL grows.
    let pin = connect(SMALL_PORT, "shop").await;
    pin.batch_execute("BEGIN; INSERT INTO t_wal.keyed VALUES (2, 'open')")
        .await
        .unwrap();
    switch_wal(&db, 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("replication slot retains") {
            assert!(
                text.contains("of max_slot_wal_keep_size (warning at 25%)")
                    && text.contains("slot=sluice_t_wal"),
                "{text}"
            );
            assert!(!text.contains(crate::support::PASSWORD), "{text}");
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "run exited: {text}");
        assert!(Instant::now() < deadline, "no wal warning: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Past max_slot_wal_keep_size, the next checkpoint invalidates the slot.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        switch_wal(&db, 2).await;
        db.batch_execute("CHECKPOINT").await.unwrap();
        if slot(&db, "sluice_t_wal").await.2 == "lost" {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never lost");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "run kept going with a lost slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "a lost slot must end run non-zero: {text}"
    );
    let errors: Vec<_> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    let state = dir.path().join("lake/_sluice_state/t_wal.json");
    for part in [
        "replication slot sluice_t_wal is lost",
        "max_slot_wal_keep_size = 48MB",
        "SELECT pg_drop_replication_slot('sluice_t_wal')",
        &state.display().to_string(),
        "re-creates the slot and takes a new initial snapshot",
    ] {
        assert!(errors[0].contains(part), "{part:?} not in {}", errors[0]);
    }
    pin.batch_execute("COMMIT").await.unwrap();

    // The recovery the message gives works: drop the slot and run again; the new initial
    // snapshot lands in the existing tables, at a new position.
    db.batch_execute("SELECT pg_drop_replication_slot('sluice_t_wal')")
        .await
        .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let rows = read_delta(&table, None);
    let mut got = ops(&rows);
    got.sort();
    assert_eq!(got, vec![("r".into(), 1), ("r".into(), 1), ("r".into(), 2)]);
    let lsn = |i: usize| rows[i]["_sluice_lsn"].as_i64().unwrap();
    assert!(lsn(0) < lsn(1) && lsn(1) == lsn(2), "{rows:#?}");
}
