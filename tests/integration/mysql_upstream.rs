//! Oracle's MySQL (the dev-db's, from Debian unstable's mysql-server-core) → Delta: every type,
//! changes across tables with ADD COLUMN and MySQL GTIDs in the commit metadata, and SIGKILLs
//! under a workload while a table added later is snapshotted in chunks (each chunk's snapshot
//! position read under MySQL's brief global read lock). The helpers are shared with the
//! MariaDB tests (`mysql_support.rs`); these tests take a lock of their own.

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::mysql_support::{
    admin_at, assert_replays, churn, every_type_lands_exactly, exec, kill_during_snapshot,
    last_commit_gtid, pending_snapshots, MyPipeline,
};
use crate::support::{ok, run_sluice};

pub const MYSQL_PORT: u16 = 33071;

static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn mysql_upstream_every_type_lands_exactly() {
    let _server = SERVER.lock().await;
    every_type_lands_exactly(MYSQL_PORT, "up_types", 6101).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_upstream_changes_add_column_and_gtids() {
    let _server = SERVER.lock().await;
    let mut db = admin_at(MYSQL_PORT).await;
    let p = MyPipeline::new("up_e2e", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE up_e2e.a (id int PRIMARY KEY, v int);
         CREATE TABLE up_e2e.b (id int PRIMARY KEY, v int);
         INSERT INTO up_e2e.a VALUES (1, 1);",
    )
    .await;
    let config = p.config_with(&["a", "b"], MYSQL_PORT, 6102, "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    exec(
        &mut db,
        "START TRANSACTION;
         INSERT INTO up_e2e.a VALUES (2, 2);
         INSERT INTO up_e2e.b VALUES (1, 10);
         COMMIT;
         UPDATE up_e2e.a SET v = 20 WHERE id = 2;
         UPDATE up_e2e.a SET id = 3 WHERE id = 1;
         DELETE FROM up_e2e.b WHERE id = 1;
         ALTER TABLE up_e2e.a ADD COLUMN note varchar(20);
         INSERT INTO up_e2e.a VALUES (4, 4, 'new column');",
    )
    .await;
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let a = p.rows("a");
    let ops: Vec<(&str, i64)> = a
        .iter()
        .map(|r| (r["_sluice_op"].as_str().unwrap(), r["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [("r", 1), ("c", 2), ("u", 2), ("d", 1), ("u", 3), ("c", 4)]
    );
    assert_eq!(a.last().unwrap()["note"], "new column");
    let b = p.rows("b");
    assert_eq!(
        a[1]["_sluice_lsn"], b[0]["_sluice_lsn"],
        "one transaction, one position"
    );
    assert_replays(&p, &mut db, &["a", "b"]).await;
    // The last commit of b records the server's GTID (uuid:transaction number) as of it.
    let gtid = last_commit_gtid(&p, "b");
    let uuid: String = db
        .query_first("SELECT @@server_uuid")
        .await
        .unwrap()
        .unwrap();
    let executed: String = db
        .query_first("SELECT @@gtid_executed")
        .await
        .unwrap()
        .unwrap();
    let upto = |set: &str| {
        set.rsplit(['-', ':'])
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    let n = gtid
        .strip_prefix(&format!("{uuid}:"))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        n.is_some_and(|n| n > 0 && Some(n) <= upto(&executed)),
        "commit gtid {gtid:?}, server at {executed:?}"
    );
    // Caught up and idle, the state keeps the server's whole executed set, which the next run
    // resumes from (COM_BINLOG_DUMP_GTID).
    let state_file = p.lake().join("_sluice_state/up_e2e.json");
    let state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let compact = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    assert_eq!(
        state["binlog_gtid_executed"].as_str().map(compact),
        Some(compact(&executed))
    );
    exec(&mut db, "INSERT INTO up_e2e.b VALUES (2, 20)").await;
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_replays(&p, &mut db, &["a", "b"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_upstream_sigkills_during_streaming_and_a_chunked_snapshot() {
    const ROWS: i64 = 60_000;
    let _server = SERVER.lock().await;
    let mut db = admin_at(MYSQL_PORT).await;
    let p = MyPipeline::new("up_kill", &mut db).await;
    exec(
        &mut db,
        &format!(
            "CREATE TABLE up_kill.a (id int PRIMARY KEY, v int);
             CREATE TABLE up_kill.big (id int PRIMARY KEY, v int);
             SET SESSION cte_max_recursion_depth = {ROWS};
             INSERT INTO up_kill.big WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ROWS}) SELECT n, 0 FROM s;"
        ),
    )
    .await;
    let config = p.config_with(&["a"], MYSQL_PORT, 6103, "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    // `big` joins the pipeline: snapshotted in 500-row chunks while both tables change.
    let config = p.config_with(&["a", "big"], MYSQL_PORT, 6103, "snapshot_chunk_rows = 500");
    let stop = tokio_util::sync::CancellationToken::new();
    let churned = tokio::spawn(churn(
        MYSQL_PORT,
        "up_kill.big".into(),
        ROWS,
        3,
        stop.clone(),
    ));
    let inserted = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut db = admin_at(MYSQL_PORT).await;
            let mut id = 0;
            while !stop.is_cancelled() {
                id += 1;
                exec(&mut db, &format!("INSERT INTO up_kill.a VALUES ({id}, {id}); UPDATE up_kill.a SET v = v + 1 WHERE id = {}", id / 2 + 1)).await;
            }
        }
    });
    kill_during_snapshot(&p, &config, 8, 8).await;
    stop.cancel();
    churned.await.unwrap();
    inserted.await.unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_eq!(pending_snapshots(&p), 0, "the snapshot finished");
    assert_replays(&p, &mut db, &["a", "big"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_upstream_check_names_problems_with_their_fixes() {
    let _server = SERVER.lock().await;
    let mut db = admin_at(MYSQL_PORT).await;
    let p = MyPipeline::new("up_check", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE up_check.t (id int PRIMARY KEY);
         DROP USER IF EXISTS 'up_nogrant'@'127.0.0.1';
         CREATE USER 'up_nogrant'@'127.0.0.1' IDENTIFIED BY 'sluice-dev-password';
         GRANT SELECT ON up_check.* TO 'up_nogrant'@'127.0.0.1';
         SET GLOBAL binlog_row_metadata = MINIMAL;",
    )
    .await;
    let url = format!("mysql://up_nogrant@127.0.0.1:{MYSQL_PORT}/up_check");
    let config = p.config_url(&["t"], &url, 6104, "");
    let out = run_sluice(&["check"], &config);
    exec(&mut db, "SET GLOBAL binlog_row_metadata = FULL").await;
    assert!(!out.status.success());
    let errors = crate::support::error_lines(&out);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("binlog_row_metadata is MINIMAL"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("lacks REPLICATION SLAVE and REPLICATION CLIENT"),
        "{}",
        errors[1]
    );
}
