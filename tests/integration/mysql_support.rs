//! Shared set-up for the MySQL and MariaDB tests (`mysql.rs`, `mysql_upstream.rs`): a test
//! database and temp lake per test, root connections, the changelog replay every test compares
//! with the source, the workloads that run beside SIGKILLs, and the every-type test both
//! servers run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::support::{ok, read_delta, run_sluice};

/// The dev MariaDB.
pub const MY_PORT: u16 = 33069;
/// The dev MariaDB that is misconfigured on purpose.
pub const BAD_MY_PORT: u16 = 33070;

/// Root connection to the dev server on `port`; fails loudly when it is not running.
pub(crate) async fn admin_at(port: u16) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await.unwrap_or_else(|e| {
        panic!("the dev server is not reachable on 127.0.0.1:{port} ({e}): run scripts/dev-db.sh start")
    })
}

pub(crate) async fn exec(db: &mut mysql_async::Conn, sql: &str) {
    db.query_drop(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A test's database (dropped and created) and temp lake.
pub(crate) struct MyPipeline {
    pub(crate) name: String,
    dir: tempfile::TempDir,
}

impl MyPipeline {
    pub(crate) async fn new(name: &str, db: &mut mysql_async::Conn) -> Self {
        exec(db, &format!("DROP DATABASE IF EXISTS {name}")).await;
        exec(db, &format!("CREATE DATABASE {name}")).await;
        MyPipeline {
            name: name.to_string(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    pub(crate) fn config_at(&self, tables: &[&str], port: u16, server_id: u32) -> PathBuf {
        self.config_with(tables, port, server_id, "")
    }

    /// A config with `source` lines added to its `[source]` section.
    pub(crate) fn config_with(
        &self,
        tables: &[&str],
        port: u16,
        server_id: u32,
        source: &str,
    ) -> PathBuf {
        let url = format!("mysql://sluice@127.0.0.1:{port}/{}", self.name);
        self.config_url(tables, &url, server_id, source)
    }

    /// A config reading from `url`, with `source` lines added to its `[source]` section.
    pub(crate) fn config_url(
        &self,
        tables: &[&str],
        url: &str,
        server_id: u32,
        source: &str,
    ) -> PathBuf {
        let tables: Vec<String> = tables
            .iter()
            .map(|t| format!("\"{}.{t}\"", self.name))
            .collect();
        let text = format!(
            "[pipeline]\nname = \"{name}\"\n\n[source]\nkind = \"mysql\"\nurl = \"{url}\"\ntables = [{tables}]\nserver_id = {server_id}\n{source}\n\n[[sinks]]\nkind = \"delta\"\npath = \"{lake}\"\nmax_batch_rows = 20000\nmax_batch_latency = \"100ms\"\n",
            name = self.name,
            tables = tables.join(", "),
            lake = self.lake().display(),
        );
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub(crate) fn config(&self, tables: &[&str], server_id: u32) -> PathBuf {
        self.config_at(tables, MY_PORT, server_id)
    }

    pub(crate) fn rows(&self, table: &str) -> Vec<Value> {
        read_delta(&self.lake().join(&self.name).join(table), None)
    }

    /// The rows, or none while the table does not exist yet.
    pub(crate) fn rows_if_any(&self, table: &str) -> Vec<Value> {
        let path = self.lake().join(&self.name).join(table);
        if path.join("_delta_log").exists() {
            read_delta(&path, None)
        } else {
            Vec::new()
        }
    }
}

/// Replay a changelog by `id` into (id → v), asserting that no change landed twice (no
/// (position, seq) twice) and no row was snapshotted twice.
pub(crate) fn replay(rows: &[Value]) -> BTreeMap<i64, i64> {
    let mut seen = std::collections::HashSet::new();
    let mut read = std::collections::HashSet::new();
    let mut state = BTreeMap::new();
    for r in rows {
        let id = r["id"].as_i64().unwrap();
        let op = r["_sluice_op"].as_str().unwrap();
        if op == "r" {
            assert!(read.insert(id), "row {id} snapshotted twice");
        } else {
            let at = (
                r["_sluice_lsn"].as_i64().unwrap(),
                r["_sluice_seq"].as_i64().unwrap(),
            );
            assert!(seen.insert(at), "change at {at:?} landed twice");
        }
        match op {
            "r" | "c" | "u" => {
                state.insert(id, r["v"].as_i64().unwrap());
            }
            "d" => {
                state.remove(&id);
            }
            op => panic!("unexpected op {op}"),
        }
    }
    state
}

/// The `sluice.gtid` metadata of the last Delta commit of `table`.
pub(crate) fn last_commit_gtid(p: &MyPipeline, table: &str) -> String {
    let log = p.lake().join(&p.name).join(table).join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    commits.sort();
    let last = std::fs::read_to_string(commits.last().unwrap()).unwrap();
    let info: Value = last
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v.get("commitInfo").is_some())
        .unwrap();
    info["commitInfo"]["sluice.gtid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Assert that each of `tables` (in database `name`) replays to exactly the source's rows.
pub(crate) async fn assert_replays(p: &MyPipeline, db: &mut mysql_async::Conn, tables: &[&str]) {
    for t in tables {
        let replayed = replay(&p.rows(t));
        let source = source(db, &format!("{}.{t}", p.name)).await;
        assert_eq!(replayed.len(), source.len(), "table {t}: row counts");
        assert!(
            replayed == source,
            "table {t}: changelog differs from the source"
        );
    }
}

pub(crate) async fn source(db: &mut mysql_async::Conn, table: &str) -> BTreeMap<i64, i64> {
    let rows: Vec<(i64, i64)> = db
        .query(format!("SELECT id, v FROM {table}"))
        .await
        .expect("read source");
    rows.into_iter().collect()
}

/// Valid dates carry no text companion.
pub(crate) fn r_valid_has_no_text(rows: &[Value]) -> bool {
    rows.iter()
        .filter(|r| r["id"].as_i64().unwrap() % 10 != 4)
        .all(|r| r["dt__text"].is_null() && r["dtm__text"].is_null() && r["ts__text"].is_null())
}

/// Every type written before the first run (read by the snapshot) and after it (read from the
/// binlog) lands identically, with the expected values; invalid dates as null plus text.
pub(crate) async fn every_type_lands_exactly(port: u16, name: &str, server_id: u32) {
    let mut db = admin_at(port).await;
    let p = MyPipeline::new(name, &mut db).await;
    exec(
        &mut db,
        &format!(
            "CREATE TABLE {name}.t (
            id int PRIMARY KEY, ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned,
            mi mediumint, iu int unsigned, bi bigint, bu bigint unsigned, dc decimal(20,6),
            wide decimal(50,10), f float, d double, bt bit(12), dt date, dtm datetime(6),
            ts timestamp(3) NULL, tm time(2), y year, c char(5), vc varchar(300), lt text,
            l1 varchar(10) CHARACTER SET latin1, bin varbinary(10), bl blob, e enum('small','big'),
            st set('r','g','b'), js json)"
        ),
    )
    .await;
    let config = p.config_with(&["t"], port, server_id, "");
    let values = [
        "-128, 255, -32768, 65535, -8388608, 4294967295, -9223372036854775808,
          18446744073709551615, -12345678901234.123456, 1234567890123456789012345678901234567890.0123456789,
          1.5, -2.25, b'101010101010', '1000-01-01', '2026-11-27 23:59:59.999999',
          '2038-01-19 03:14:07.999', '-838:59:58.50', 2155, 'ab', 'héllo wörld', REPEAT('x', 1000),
          'café', X'00FF10', X'DEADBEEF', 'big', 'r,b', '{\"k\": [1, 2.5, \"s\", null, true]}'",
        "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
        "0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'0', '9999-12-31', '1970-01-01 00:00:00', '1970-01-01 00:00:01',
          '00:00:00', 0, '', '', '', '', X'', X'', 'small', '', '[]'",
        // Values no date type can hold (a lax sql_mode lets them in).
        "1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, b'1', '2026-02-30', '0000-00-00 00:00:00', '0000-00-00 00:00:00',
          '00:00:01', 2000, 'z', 'z', 'z', 'z', X'01', X'01', 'small', 'g', '{}'",
    ];
    exec(&mut db, "SET SESSION sql_mode = 'ALLOW_INVALID_DATES'").await;
    // Rows 1-4 exist before the first run (the snapshot reads them), rows 11-14 are the same
    // values written afterwards (the binlog carries them).
    for (i, v) in values.iter().enumerate() {
        exec(
            &mut db,
            &format!("INSERT INTO {name}.t VALUES ({}, {v})", i + 1),
        )
        .await;
    }
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    for (i, v) in values.iter().enumerate() {
        exec(
            &mut db,
            &format!("INSERT INTO {name}.t VALUES ({}, {v})", i + 11),
        )
        .await;
    }
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let all = p.rows("t");
    assert_eq!(all.len(), 8);
    for id in 1..=4 {
        let read = all.iter().find(|r| r["id"] == id).unwrap();
        let streamed = all.iter().find(|r| r["id"] == id + 10).unwrap();
        assert_eq!(
            (read["_sluice_op"].as_str(), streamed["_sluice_op"].as_str()),
            (Some("r"), Some("c"))
        );
        for (k, v) in read.as_object().unwrap() {
            if !k.starts_with("_sluice") && k != "id" {
                assert_eq!(v, &streamed[k], "column {k}: snapshot and binlog differ");
            }
        }
    }
    let invalid = all.iter().find(|r| r["id"] == 14).unwrap();
    for (column, text) in [
        ("dt", "2026-02-30"),
        ("dtm", "0000-00-00 00:00:00"),
        ("ts", "0000-00-00 00:00:00"),
    ] {
        assert!(invalid[column].is_null(), "{column}");
        assert_eq!(invalid[format!("{column}__text")], text, "{column}__text");
    }
    assert!(r_valid_has_no_text(&all));
    let rows: Vec<Value> = all
        .into_iter()
        .filter(|r| r["id"].as_i64().unwrap() < 4)
        .collect();
    let r = |id: i64| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    let first = r(1);
    let expect = json!({
        "ti": -128, "tu": 255, "si": -32768, "su": 65535, "mi": -8388608, "iu": 4294967295u64,
        "bi": -9223372036854775808i64, "bu": "18446744073709551615",
        "dc": "-12345678901234.123456",
        "wide": "1234567890123456789012345678901234567890.0123456789",
        "f": 1.5, "d": -2.25, "bt": 2730, "dt": "1000-01-01",
        "dtm": "2026-11-27 23:59:59.999999", "ts": "2038-01-19 03:14:07.999000+00:00",
        "tm": "-838:59:58.500000", "y": 2155, "c": "ab", "vc": "héllo wörld",
        "l1": "café", "bin": "b'\\x00\\xff\\x10'", "bl": "b'\\xde\\xad\\xbe\\xef'",
        "e": "big", "st": "r,b", "js": "{\"k\": [1, 2.5, \"s\", null, true]}",
        "_sluice_op": "r", "_sluice_unchanged": null,
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&first[k], v, "column {k}");
    }
    assert_eq!(first["lt"].as_str().unwrap().len(), 1000);
    let nulls = r(2);
    for (k, v) in nulls.as_object().unwrap() {
        if !k.starts_with("_sluice") && k != "id" {
            assert!(v.is_null(), "column {k} should be null, is {v}");
        }
    }
    let third = r(3);
    assert_eq!(third["y"], 0, "YEAR 0000");
    assert_eq!(third["e"], "small");
    assert_eq!(third["st"], "");
    assert_eq!(third["dt"], "9999-12-31");
    assert_eq!(third["bu"], "0");
}

/// Updates, deletes and inserts on `table` (ids 1..=`rows` and new ones above) in small
/// transactions until `stop`.
pub(crate) async fn churn(
    port: u16,
    table: String,
    rows: i64,
    seed: u64,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut db = admin_at(port).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = rows + 1;
    while !stop.is_cancelled() {
        let lo = rng.gen_range(1..rows);
        let sql = format!(
            "START TRANSACTION;
             UPDATE {table} SET v = v + 1 WHERE id BETWEEN {lo} AND {};
             DELETE FROM {table} WHERE id = {};
             INSERT INTO {table} VALUES ({next}, 0), ({}, 0);
             COMMIT;",
            lo + 20,
            rng.gen_range(1..rows),
            next + 1
        );
        exec(&mut db, &sql).await;
        next += 2;
    }
}

/// Start `sluice run` and SIGKILL it `kills` times at random moments (seeded), each time while an
/// incremental snapshot is still queued.
pub(crate) async fn kill_during_snapshot(
    p: &MyPipeline,
    config: &std::path::Path,
    kills: usize,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for kill in 1..=kills {
        let mut child = crate::support::spawn_run(config);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1200))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            pending_snapshots(p) > 0,
            "the snapshot finished before kill {kill}: the table is too small for this test"
        );
    }
}

/// Incremental snapshots still queued in the pipeline's state file.
pub(crate) fn pending_snapshots(p: &MyPipeline) -> usize {
    let path = p
        .lake()
        .join("_sluice_state")
        .join(format!("{}.json", p.name));
    let state: Value = serde_json::from_slice(&std::fs::read(path).expect("state file"))
        .expect("state file is JSON");
    state["incremental"].as_array().map_or(0, Vec::len)
}
