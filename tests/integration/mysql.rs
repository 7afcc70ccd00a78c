//! MariaDB binlog → Delta against the MariaDB started by `scripts/dev-db.sh start`: every type,
//! three tables with ADD COLUMN, 20 SIGKILLs, binlog rotation and a server restart, and every
//! misconfiguration `sluice check` names, TLS, snapshots (interrupted, requested, tables added
//! later). The MariaDB tests take one lock: some restart or purge the shared server.

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{error_lines, ok, one_error, run_sluice, sluice, terminate, PASSWORD};

use crate::mysql_support::{
    admin_at, assert_replays, churn, every_type_lands_exactly, exec, kill_during_snapshot,
    last_commit_gtid, pending_snapshots, replay, source, MyPipeline, BAD_MY_PORT, MY_PORT,
};

pub(crate) static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Root connection for set-up. Fails loudly when the dev MariaDB is not running.
async fn my_admin() -> mysql_async::Conn {
    admin_at(MY_PORT).await
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_every_type_lands_exactly() {
    let _server = SERVER.lock().await;
    every_type_lands_exactly(MY_PORT, "my_types", 5101).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_changes_across_three_tables_with_add_column() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_e2e", &mut db).await;
    for t in ["a", "b", "c"] {
        exec(
            &mut db,
            &format!("CREATE TABLE my_e2e.{t} (id int PRIMARY KEY, v int)"),
        )
        .await;
    }
    let config = p.config(&["a", "b", "c"], 5102);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(
        &mut db,
        "START TRANSACTION;
         INSERT INTO my_e2e.a VALUES (1, 1), (2, 2);
         INSERT INTO my_e2e.b VALUES (1, 10);
         COMMIT;
         UPDATE my_e2e.a SET v = 20 WHERE id = 2;
         UPDATE my_e2e.a SET id = 3 WHERE id = 1;
         DELETE FROM my_e2e.b WHERE id = 1;
         INSERT INTO my_e2e.c VALUES (7, 70);
         ALTER TABLE my_e2e.a ADD COLUMN note varchar(20);
         INSERT INTO my_e2e.a VALUES (4, 4, 'new column');",
    )
    .await;
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let a = p.rows("a");
    let ops: Vec<(String, i64)> = a
        .iter()
        .map(|r| {
            (
                r["_sluice_op"].as_str().unwrap().to_string(),
                r["id"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = [("c", 1), ("c", 2), ("u", 2), ("d", 1), ("u", 3), ("c", 4)]
        .iter()
        .map(|(o, i)| (o.to_string(), *i))
        .collect();
    assert_eq!(ops, expected);
    assert_eq!(a.last().unwrap()["note"], "new column");
    assert!(
        a[0]["note"].is_null(),
        "rows before ADD COLUMN read back with null"
    );
    let b = p.rows("b");
    assert_eq!(
        b.iter()
            .map(|r| r["_sluice_op"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["c", "d"]
    );
    assert_eq!(p.rows("c")[0]["v"], 70);
    // One source transaction across a and b: the same position in both.
    assert_eq!(a[0]["_sluice_lsn"], b[0]["_sluice_lsn"]);
    // The last commit of c records the server's GTID position as of its transaction.
    let gtid = last_commit_gtid(&p, "c");
    let pos: Option<String> = db.query_first("SELECT @@gtid_binlog_pos").await.unwrap();
    let seq = |g: &str| g.strip_prefix("0-1-").and_then(|n| n.parse::<u64>().ok());
    assert!(
        seq(&gtid).is_some_and(|n| n > 0 && Some(n) <= pos.as_deref().and_then(seq)),
        "commit gtid {gtid:?}, server at {pos:?}"
    );
    assert_replays(&p, &mut db, &["a", "b", "c"]).await;
    // A type change is followed (the default policy, evolve): the column continues as a new
    // column of the new type, the old one keeps the values written before.
    exec(
        &mut db,
        "INSERT INTO my_e2e.c VALUES (9, 90); ALTER TABLE my_e2e.c MODIFY v varchar(10); INSERT INTO my_e2e.c VALUES (8, 'x')",
    )
    .await;
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let c = p.rows("c");
    let last = c.last().unwrap();
    assert_eq!(
        (last["id"].as_i64(), last["v__string"].as_str()),
        (Some(8), Some("x"))
    );
    assert!(last["v"].is_null());
    assert!(c.iter().any(|r| r["id"] == 9 && r["v"] == 90));
}

/// Under `on_schema_change = "stop"`, a column changed while Sluice was stopped is recognised
/// at the table's first table map after the restart (against the lake's recorded shape): the
/// same one-line error as for a change seen live, nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_incompatible_change_while_stopped_is_named() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_alter", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE my_alter.t (id int PRIMARY KEY, v int, w int); INSERT INTO my_alter.t VALUES (1, 1, 1)",
    )
    .await;
    let config = p.config(&["t"], 5109);
    crate::drift::set_policy(&config, "stop", &[]);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(&mut db, "INSERT INTO my_alter.t VALUES (2, 2, 2)").await;
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let before = p.rows("t").len();
    exec(
        &mut db,
        "ALTER TABLE my_alter.t DROP COLUMN v; INSERT INTO my_alter.t VALUES (3, 3)",
    )
    .await;
    one_error(
        &run_sluice(&["run", "--until", "caught-up"], &config),
        &[
            "table my_alter.t column v at binlog binlog.",
            "incompatible schema change: dropped v, and on_schema_change is \"stop\"",
        ],
    );
    assert_eq!(
        p.rows("t").len(),
        before,
        "nothing written after the change"
    );
}

/// TLS to MariaDB: `sluice_tls` may only connect encrypted. The default (preferred) and
/// verify_identity with the dev CA replicate; disabled is refused by the server; verification
/// without the CA and required against a server without TLS fail with one line each.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_tls_modes() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_tls", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE my_tls.t (id int PRIMARY KEY, v int); INSERT INTO my_tls.t VALUES (1, 1)",
    )
    .await;
    let dev = std::env::var("SLUICE_DEV_DIR").unwrap_or_else(|_| "/var/tmp/sluice-dev".into());
    let ca = format!("{dev}/mariadb/root.crt");
    let url = |port: u16, query: &str| format!("mysql://sluice_tls@127.0.0.1:{port}/my_tls{query}");

    let config = p.config_url(&["t"], &url(MY_PORT, ""), 5110, "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(&mut db, "INSERT INTO my_tls.t VALUES (2, 2)").await;
    let verified = url(MY_PORT, &format!("?ssl-mode=verify_identity&ssl-ca={ca}"));
    let config = p.config_url(&["t"], &verified, 5110, "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_eq!(replay(&p.rows("t")), source(&mut db, "my_tls.t").await);

    for (query, port, expected) in [
        (
            "?ssl-mode=disabled",
            MY_PORT,
            "Access denied for user 'sluice_tls'",
        ),
        (
            "?ssl-mode=verify_identity",
            MY_PORT,
            "certificate was refused (name its CA with ssl-ca=",
        ),
        (
            "?ssl-mode=required",
            BAD_MY_PORT,
            "the server does not offer TLS",
        ),
    ] {
        let config = p.config_url(&["t"], &url(port, query), 5110, "");
        one_error(&run_sluice(&["check"], &config), &[expected]);
    }
}

/// Inserts, updates and deletes in 1..50-row transactions until `rows` changes were made.
async fn workload(db_name: &'static str, tables: &'static [&'static str], rows: usize, seed: u64) {
    let mut db = my_admin().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next: i64 = 1;
    let mut changed = 0;
    while changed < rows {
        let n = rng.gen_range(20..200);
        let t = tables[rng.gen_range(0..tables.len())];
        let values: Vec<String> = (next..next + n).map(|i| format!("({i}, 0)")).collect();
        let lo = rng.gen_range(1..=next);
        let sql = format!(
            "START TRANSACTION;
             INSERT INTO {db_name}.{t} VALUES {};
             UPDATE {db_name}.{t} SET v = v + 1 WHERE id BETWEEN {lo} AND {};
             DELETE FROM {db_name}.{t} WHERE id = {};
             COMMIT;",
            values.join(","),
            lo + 10,
            rng.gen_range(1..=next)
        );
        exec(&mut db, &sql).await;
        next += n;
        changed += n as usize + 12;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_kill", &mut db).await;
    for t in ["a", "b"] {
        exec(
            &mut db,
            &format!("CREATE TABLE my_kill.{t} (id int PRIMARY KEY, v int)"),
        )
        .await;
    }
    let config = p.config(&["a", "b"], 5103);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let writer = tokio::spawn(workload("my_kill", &["a", "b"], 200_000, 9));
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for _ in 0..20 {
        let mut child = sluice()
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..900))).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.await.unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_replays(&p, &mut db, &["a", "b"]).await;
}

/// Restart the shared MariaDB (the dev-db script starts it again).
fn restart_mariadb() {
    let dir = std::env::var("SLUICE_DEV_DIR").unwrap_or_else(|_| "/var/tmp/sluice-dev".into());
    let down = std::process::Command::new("mariadb-admin")
        .args([
            &format!("--socket={dir}/mariadb/mariadb.sock"),
            "-uroot",
            "shutdown",
        ])
        .status()
        .expect("mariadb-admin");
    assert!(down.success());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev-db.sh");
    let up = std::process::Command::new(script)
        .arg("start")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("dev-db.sh start");
    assert!(up.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_resumes_after_rotation_and_server_restart() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_rot", &mut db).await;
    exec(&mut db, "CREATE TABLE my_rot.t (id int PRIMARY KEY, v int)").await;
    let config = p.config(&["t"], 5104);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(
        &mut db,
        "INSERT INTO my_rot.t VALUES (1, 1); FLUSH BINARY LOGS; INSERT INTO my_rot.t VALUES (2, 2)",
    )
    .await;
    // A running pipeline rides through a server restart.
    let child = crate::support::spawn_run(&config);
    exec(&mut db, "INSERT INTO my_rot.t VALUES (3, 3)").await;
    // Restart once the running pipeline has streamed that row (it is past its start-up, where
    // an unreachable server is reported rather than waited for).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while p.rows_if_any("t").len() < 3 {
        assert!(std::time::Instant::now() < deadline, "row 3 never streamed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(db);
    restart_mariadb();
    let mut db = my_admin().await;
    exec(&mut db, "INSERT INTO my_rot.t VALUES (4, 4); FLUSH BINARY LOGS; UPDATE my_rot.t SET v = 40 WHERE id = 4").await;
    terminate(child);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let rows = p.rows("t");
    assert_eq!(replay(&rows), source(&mut db, "my_rot.t").await);
    assert_eq!(rows.len(), 5);
    let status = ok(run_sluice(&["status"], &config));
    assert!(status.contains("lag 0 bytes"), "{status}");
    let json: Value =
        serde_json::from_str(&ok(run_sluice(&["status", "--json"], &config))).unwrap();
    assert_eq!(json["source"]["kind"], "mysql", "{json}");
    assert_eq!(json["source"]["lag_bytes"], 0, "{json}");
    assert_eq!(
        json["source"]["resume_position"], json["source"]["server_position"],
        "{json}"
    );
    // The next run resumes by GTID: the state holds the GTID set of its position.
    let state = p.lake().join("_sluice_state/my_rot.json");
    let state: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let pos: Option<String> = db.query_first("SELECT @@gtid_binlog_pos").await.unwrap();
    assert_eq!(state["binlog_gtid"].as_str(), pos.as_deref());
    // Lag in bytes spans rotations: the rest of the resume file (its ROTATE event at least)
    // and the whole new file, whose size is the server's offset in it.
    exec(
        &mut db,
        "FLUSH BINARY LOGS; INSERT INTO my_rot.t VALUES (5, 5)",
    )
    .await;
    let json: Value =
        serde_json::from_str(&ok(run_sluice(&["status", "--json"], &config))).unwrap();
    let server = json["source"]["server_position"].as_str().unwrap();
    let offset: u64 = server.rsplit_once(':').unwrap().1.parse().unwrap();
    let lag = json["source"]["lag_bytes"].as_u64();
    assert!(lag.is_some_and(|l| l > offset), "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_misconfigurations_are_reported_with_their_fixes() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_bad", &mut db).await;
    exec(&mut db, "CREATE TABLE my_bad.t (id int PRIMARY KEY, v int)").await;

    // The misconfigured server: every binlog setting wrong, and a user without grants.
    let config = p.config_at(&["keyed"], BAD_MY_PORT, 5105);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("my_bad", "shop");
    std::fs::write(&config, text).unwrap();
    let out = run_sluice(&["check"], &config);
    assert!(!out.status.success());
    let errors = error_lines(&out);
    for expected in [
        "binary logging is off",
        "binlog_format is STATEMENT",
        "binlog_row_image is MINIMAL",
        "binlog_row_metadata is MINIMAL",
        "binlog event compression is on (log_bin_compress)",
        "lacks REPLICATION SLAVE and BINLOG MONITOR",
    ] {
        assert_eq!(
            errors.iter().filter(|e| e.contains(expected)).count(),
            1,
            "{expected} in {errors:?}"
        );
    }
    assert_eq!(errors.len(), 6, "{errors:?}");
    let out = run_sluice(&["run"], &config);
    assert!(!out.status.success());
    assert!(!p.lake().exists(), "nothing created");

    // The server's own server_id.
    let config = p.config(&["t"], 1);
    let errors = error_lines(&run_sluice(&["check"], &config));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("server_id 1 is the server's own"),
        "{}",
        errors[0]
    );

    // Binlogs purged past the stored position: definite, with how to start over.
    let config = p.config(&["t"], 5105);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(&mut db, "INSERT INTO my_bad.t VALUES (1, 1)").await;
    let state = p.lake().join("_sluice_state/my_bad.json");
    let state: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let stored = state["binlog"]["file"].as_str().unwrap().to_string();
    // MariaDB keeps a binlog its crash recovery still needs: rotate and purge until it is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        exec(&mut db, "FLUSH BINARY LOGS").await;
        let current: mysql_async::Row =
            db.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
        let current: String = current.get(0).unwrap();
        exec(&mut db, &format!("PURGE BINARY LOGS TO '{current}'")).await;
        let logs: Vec<mysql_async::Row> = db.query("SHOW BINARY LOGS").await.unwrap();
        if !logs
            .iter()
            .any(|r| r.get::<String, _>(0).as_deref() == Some(&stored))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} was never purged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run_sluice(&["run", "--until", "caught-up"], &config);
    assert!(!out.status.success());
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("was purged from the server") && errors[0].contains("re-snapshot"),
        "{}",
        errors[0]
    );

    // A wrong password: one line.
    let out = sluice()
        .env("SLUICE_SOURCE_PASSWORD", "wrong")
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("authentication failed for user sluice"),
        "{}",
        errors[0]
    );
    let _ = PASSWORD;
}

/// A snapshot killed midway is finished by incremental snapshots in primary-key chunks on the
/// next runs, through 10 more SIGKILLs under a concurrent workload on the table: every row
/// snapshotted at most once, every change exactly once, the replay equal to the source.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_interrupted_snapshot_finishes_in_chunks_through_sigkills() {
    const ROWS: i64 = 300_000;
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_snap", &mut db).await;
    exec(
        &mut db,
        &format!(
            "CREATE TABLE my_snap.t (id int PRIMARY KEY, v int);
             INSERT INTO my_snap.t SELECT seq, 0 FROM my_snap.seq_1_to_{ROWS};
             CREATE TABLE my_snap.small (id int PRIMARY KEY, v int);
             INSERT INTO my_snap.small SELECT seq, 0 FROM my_snap.seq_1_to_1000;"
        ),
    )
    .await;
    let config = p.config_with(&["t", "small"], MY_PORT, 5106, "snapshot_chunk_rows = 2000");
    let mut child = crate::support::spawn_run(&config);
    let created = p
        .lake()
        .join("my_snap/t/_delta_log/00000000000000000000.json");
    crate::support::wait_for_file(&created, "the snapshot never started").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        p.rows("t").is_empty(),
        "no row of the killed snapshot is visible"
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(churn(MY_PORT, "my_snap.t".into(), ROWS, 12, stop.clone()));
    kill_during_snapshot(&p, &config, 10, 6).await;
    stop.cancel();
    writer.await.unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_eq!(pending_snapshots(&p), 0, "every snapshot finished");
    assert_replays(&p, &mut db, &["t", "small"]).await;
}

/// `sluice snapshot` on MariaDB: the request is left in the lake's mailbox; a running pipeline
/// takes it up (reading exactly the matching rows, in chunks), a stopped one on its next run.
/// Bad requests are refused with one line and leave nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_snapshot_requests_reread_the_matching_rows() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_req", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE my_req.t (id int PRIMARY KEY, v int);
         INSERT INTO my_req.t SELECT seq, 0 FROM my_req.seq_1_to_3000;
         CREATE TABLE my_req.nokey (id int, v int);",
    )
    .await;
    let config = p.config_with(&["t", "nokey"], MY_PORT, 5111, "snapshot_chunk_rows = 200");
    let snapshot = |args: &[&str]| {
        let mut all = vec!["snapshot"];
        all.extend_from_slice(args);
        run_sluice(&all, &config)
    };
    let mailbox = p.lake().join("_sluice_state/my_req.requests");
    let refused = |out: std::process::Output, expected: &str| {
        one_error(&out, &[expected]);
        let left = std::fs::read_dir(&mailbox).map_or(0, |d| d.count());
        assert_eq!(left, 0, "nothing left in the mailbox");
    };
    refused(snapshot(&["--table", "my_req.t"]), "has not started yet");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    refused(
        snapshot(&["--table", "my_req.other"]),
        "is not one of the pipeline's [source] tables",
    );
    refused(snapshot(&["--table", "my_req.nokey"]), "has no primary key");
    refused(
        snapshot(&["--table", "my_req.t", "--where", "nosuch > 1"]),
        "--where is not a valid predicate on my_req.t",
    );

    let reads = |p: &MyPipeline| {
        let mut count = BTreeMap::<i64, usize>::new();
        for r in p.rows("t").iter().filter(|r| r["_sluice_op"] == "r") {
            *count.entry(r["id"].as_i64().unwrap()).or_default() += 1;
        }
        count
    };
    let child = crate::support::spawn_run(&config);
    ok(snapshot(&["--table", "my_req.t", "--where", "id <= 700"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while reads(&p).values().sum::<usize>() < 3700 || pending_snapshots(&p) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the running pipeline never took the request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(child);

    ok(snapshot(&["--table", "my_req.t", "--where", "id > 2900"]));
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let count = reads(&p);
    assert_eq!(count.len(), 3000);
    for (id, n) in count {
        let expected = if id <= 700 || id > 2900 { 2 } else { 1 };
        assert_eq!(n, expected, "row {id} read {n} times");
    }
    assert_eq!(pending_snapshots(&p), 0);
}

/// A transaction far larger than the batch limits is handed over in chunks and committed
/// once, at its own position, with memory bounded; the committed rows before it stay apart.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_large_transaction_is_chunked_and_committed_once() {
    const ROWS: i64 = 600_000;
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_large", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE my_large.t (id int PRIMARY KEY, v int, note varchar(40))",
    )
    .await;
    let config = p.config(&["t"], 5107);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(
        &mut db,
        "INSERT INTO my_large.t VALUES (-1, 0, 'before'), (-2, 0, 'before')",
    )
    .await;
    exec(
        &mut db,
        &format!(
            "START TRANSACTION;
             INSERT INTO my_large.t SELECT seq, seq % 1000, CONCAT('row ', seq) FROM my_large.seq_1_to_{ROWS};
             UPDATE my_large.t SET v = -v WHERE id <= 1000;
             DELETE FROM my_large.t WHERE id = -1;
             COMMIT;"
        ),
    )
    .await;
    let out = sluice()
        .env("SLUICE_LOG", "sluice=info")
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let peak = crate::support::peak_rss(&stderr);
    assert!(peak < 300 << 20, "peak RSS {peak} bytes");
    let rows = p.rows("t");
    let big: Vec<&Value> = rows
        .iter()
        .filter(|r| r["id"].as_i64().unwrap() > 0 || r["_sluice_op"] == "d")
        .collect();
    let positions: std::collections::HashSet<i64> = big
        .iter()
        .map(|r| r["_sluice_lsn"].as_i64().unwrap())
        .collect();
    assert_eq!(
        positions.len(),
        1,
        "the big transaction sits at one position"
    );
    let before = rows.iter().find(|r| r["id"] == -2).unwrap()["_sluice_lsn"]
        .as_i64()
        .unwrap();
    assert!(before < *positions.iter().next().unwrap());
    // Updates that change nothing (v = 0: ids -2, -1 and 1000) are not in the binlog.
    assert_eq!(rows.len() as i64, 2 + ROWS + 999 + 1);
    assert_eq!(replay(&rows), source(&mut db, "my_large.t").await);
}

/// Tables added to the configuration of a MariaDB pipeline: one with a primary key is
/// snapshotted in chunks beside the stream (which carries its changes from the pipeline's
/// position on), one without is copied at a fresh consistent position; both then stream.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_table_added_later_is_snapshotted_and_streamed() {
    let _server = SERVER.lock().await;
    let mut db = my_admin().await;
    let p = MyPipeline::new("my_added", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE my_added.first (id int PRIMARY KEY, v int);
         CREATE TABLE my_added.later (id int PRIMARY KEY, v int);
         CREATE TABLE my_added.nokey (id int, v int);
         INSERT INTO my_added.later SELECT seq, 0 FROM my_added.seq_1_to_5000;
         INSERT INTO my_added.nokey SELECT seq, 0 FROM my_added.seq_1_to_100;",
    )
    .await;
    let config = p.config(&["first"], 5108);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(
        &mut db,
        "INSERT INTO my_added.first VALUES (1, 1); UPDATE my_added.later SET v = 7 WHERE id <= 10; UPDATE my_added.nokey SET v = 7 WHERE id <= 10",
    )
    .await;
    let config = p.config_with(
        &["first", "later", "nokey"],
        MY_PORT,
        5108,
        "snapshot_chunk_rows = 700",
    );
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(
        &mut db,
        "UPDATE my_added.later SET v = 8 WHERE id = 1; DELETE FROM my_added.later WHERE id = 2; UPDATE my_added.nokey SET v = 8 WHERE id = 1",
    )
    .await;
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    for t in ["first", "later", "nokey"] {
        assert_eq!(
            replay(&p.rows(t)),
            source(&mut db, &format!("my_added.{t}")).await,
            "table {t}"
        );
    }
    let later = p.rows("later");
    let read: std::collections::BTreeSet<i64> = later
        .iter()
        .filter(|r| r["_sluice_op"] == "r")
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    // Rows 1..=10 changed in the stream before the snapshot reached them: a chunk whose window
    // saw a key change leaves that row to the stream.
    assert!(
        (11..=5000).all(|id| read.contains(&id)),
        "every row the stream did not carry was snapshotted"
    );
    assert_eq!(
        later.len(),
        10 + read.len() + 2,
        "the changes since the pipeline's position, the snapshot, the changes after it"
    );
    let nokey = p.rows("nokey");
    assert_eq!(nokey.iter().filter(|r| r["_sluice_op"] == "r").count(), 100);
    assert_eq!(
        nokey.len(),
        100 + 1,
        "the copy, then only the changes after it"
    );
}
