//! Incremental snapshots (DBLog watermarks): re-snapshots on request, tables added to a
//! running pipeline, and an interrupted initial load finished chunk by chunk through SIGKILLs,
//! all while changes keep streaming.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::support::{
    admin, error_lines, ok, run_sluice, spawn_run, terminate, wait_for_file, wait_for_slot,
    Pipeline,
};

/// Replay a changelog by key (`id`), asserting that no key was read by a snapshot twice.
fn replay(rows: &[Value]) -> BTreeMap<i64, (i64, String)> {
    let mut state = BTreeMap::new();
    let mut read = std::collections::HashSet::new();
    for r in rows {
        let id = r["id"].as_i64().expect("id");
        match r["_sluice_op"].as_str().expect("op") {
            op @ ("r" | "c" | "u") => {
                if op == "r" {
                    assert!(read.insert(id), "row {id} was snapshotted twice");
                }
                let value = (
                    r["v"].as_i64().expect("v"),
                    r["note"].as_str().expect("note").to_string(),
                );
                state.insert(id, value);
            }
            "d" => {
                state.remove(&id);
            }
            op => panic!("unexpected op {op}"),
        }
    }
    state
}

async fn source(db: &tokio_postgres::Client, table: &str) -> BTreeMap<i64, (i64, String)> {
    db.query(&format!("SELECT id, v::bigint, note FROM {table}"), &[])
        .await
        .expect("read source")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// Inserts, updates and deletes on `table` (ids up to `rows`) until `stop` is set.
async fn workload(table: String, rows: i64, seed: u64, stop: tokio_util::sync::CancellationToken) {
    let db = admin().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut next = rows + 1;
    while !stop.is_cancelled() {
        let lo = rng.gen_range(1..rows - 100);
        db.batch_execute(&format!(
            "BEGIN;
             INSERT INTO {table} SELECT g, 1, 'new' FROM generate_series({next}, {}) g;
             UPDATE {table} SET v = v + 1 WHERE id BETWEEN {lo} AND {};
             DELETE FROM {table} WHERE id = {};
             COMMIT;",
            next + 4,
            lo + 10,
            lo + 50
        ))
        .await
        .expect("workload");
        next += 5;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn state_file(p: &Pipeline) -> Value {
    let path = p
        .lake()
        .join("_sluice_state")
        .join(format!("{}.json", p.name));
    serde_json::from_slice(&std::fs::read(path).expect("state file")).expect("state json")
}

fn pending_snapshots(p: &Pipeline) -> usize {
    state_file(p)["incremental"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_where_rereads_only_the_matching_rows() {
    let db = admin().await;
    let p = Pipeline::new("t_resnap", &db).await;
    db.batch_execute(
        "CREATE TABLE t_resnap.t (id bigint PRIMARY KEY, v int, note text);
         ALTER TABLE t_resnap.t OWNER TO sluice;
         INSERT INTO t_resnap.t SELECT g, 0, 'row ' || g FROM generate_series(1, 10000) g;
         CREATE TABLE t_resnap.nokey (id bigint, v int, note text);
         ALTER TABLE t_resnap.nokey OWNER TO sluice;
         ALTER TABLE t_resnap.nokey REPLICA IDENTITY FULL;
         INSERT INTO t_resnap.nokey VALUES (1, 0, 'a');",
    )
    .await
    .unwrap();
    let config = p.config(&["t", "nokey"], "snapshot_chunk_rows = 700");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert_eq!(p.rows("t").len(), 10_000);
    assert_eq!(p.rows("nokey").len(), 1, "the initial load needs no key");

    let out = ok(run_sluice(
        &["snapshot", "--table", "t_resnap.t", "--where", "id % 7 = 0"],
        &config,
    ));
    assert!(out.starts_with("ok: snapshot of t_resnap.t"), "{out}");
    db.batch_execute("UPDATE t_resnap.t SET v = 5 WHERE id = 14")
        .await
        .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    let rows = p.rows("t");
    let first_lsn = rows[0]["_sluice_lsn"].as_i64().unwrap();
    let mut again: Vec<i64> = rows
        .iter()
        .filter(|r| r["_sluice_op"] == "r" && r["_sluice_lsn"].as_i64().unwrap() > first_lsn)
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    again.sort_unstable();
    let expected: Vec<i64> = (1..=10_000).filter(|i| i % 7 == 0).collect();
    assert_eq!(
        again, expected,
        "only the rows matching --where are read again"
    );
    let chunks: std::collections::HashSet<i64> = rows
        .iter()
        .filter(|r| r["_sluice_op"] == "r" && r["_sluice_lsn"].as_i64().unwrap() > first_lsn)
        .map(|r| r["_sluice_lsn"].as_i64().unwrap())
        .collect();
    assert_eq!(
        chunks.len(),
        expected.len().div_ceil(700),
        "chunks of 700 rows in key order"
    );
    // The re-read rows carry the current values, after the update streamed before them.
    let last_14 = rows.iter().rev().find(|r| r["id"] == 14).unwrap();
    assert_eq!(
        (last_14["_sluice_op"].as_str(), last_14["v"].as_i64()),
        (Some("r"), Some(5))
    );
    assert_eq!(pending_snapshots(&p), 0);

    // Bad requests: one line each, nothing written.
    for (args, expect) in [
        (
            vec!["snapshot", "--table", "t_resnap.nokey"],
            "table t_resnap.nokey has no primary key",
        ),
        (
            vec!["snapshot", "--table", "t_resnap.t", "--where", "idd > 3"],
            "--where is not a valid predicate on t_resnap.t",
        ),
        (
            vec!["snapshot", "--table", "t_resnap.other"],
            "table t_resnap.other is not one of the pipeline's [source] tables",
        ),
    ] {
        let out = run_sluice(&args, &config);
        assert!(!out.status.success(), "{args:?} must fail");
        let errors = error_lines(&out);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(expect), "{}", errors[0]);
    }

    // A request that can no longer be served (its predicate's column was dropped since) is
    // dropped with an error line, and the pipeline still catches up.
    db.batch_execute("ALTER TABLE t_resnap.t ADD COLUMN extra int")
        .await
        .unwrap();
    ok(run_sluice(
        &["snapshot", "--table", "t_resnap.t", "--where", "extra > 0"],
        &config,
    ));
    db.batch_execute("ALTER TABLE t_resnap.t DROP COLUMN extra")
        .await
        .unwrap();
    let mut child = crate::support::sluice()
        .env("SLUICE_LOG", "error")
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run --until caught-up never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("incremental snapshot request dropped"),
        "{stderr}"
    );
    assert_eq!(pending_snapshots(&p), 0);

    // A table without a primary key added to the configuration cannot be snapshotted
    // incrementally: refused before anything changes.
    db.batch_execute(
        "CREATE TABLE t_resnap.nokey2 (id bigint, v int, note text);
         ALTER TABLE t_resnap.nokey2 OWNER TO sluice;
         ALTER TABLE t_resnap.nokey2 REPLICA IDENTITY FULL;",
    )
    .await
    .unwrap();
    let before = state_file(&p);
    let added = p.config(&["t", "nokey", "nokey2"], "");
    let out = run_sluice(&["run", "--until", "caught-up"], &added);
    assert!(!out.status.success());
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("table t_resnap.nokey2 has no primary key"),
        "{}",
        errors[0]
    );
    assert_eq!(state_file(&p), before, "the state is untouched");
    assert!(!p.lake().join("t_resnap/nokey2").exists());
}

/// Whether the pipeline's snapshots are all done (initial load and incremental ones).
fn snapshots_done(p: &Pipeline) -> bool {
    let state = state_file(p);
    state["snapshot"] == "done" && state["incremental"].as_array().is_none_or(Vec::is_empty)
}

/// The initial load is killed during its copy; every later run finishes it incrementally
/// and is itself killed at a random moment, while a workload changes the table. In the end
/// the changelog replays to exactly the source, and no row was snapshotted twice.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_initial_load_finishes_incrementally_through_sigkills() {
    const ROWS: i64 = 300_000;
    let db = admin().await;
    let p = Pipeline::new("t_resume", &db).await;
    db.batch_execute(&format!(
        "CREATE TABLE t_resume.big (id bigint PRIMARY KEY, v int, note text);
         ALTER TABLE t_resume.big OWNER TO sluice;
         INSERT INTO t_resume.big SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g;
         CREATE TABLE t_resume.small (id bigint PRIMARY KEY, v int, note text);
         ALTER TABLE t_resume.small OWNER TO sluice;
         INSERT INTO t_resume.small SELECT g, 0, 'row ' || g FROM generate_series(1, 1000) g;"
    ))
    .await
    .unwrap();
    let config = p.config(&["big", "small"], "snapshot_chunk_rows = 2000");
    let mut child = spawn_run(&config);
    let created = p
        .lake()
        .join("t_resume/big/_delta_log/00000000000000000000.json");
    wait_for_file(&created, "the copy never started").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        p.rows("big").is_empty(),
        "no row of the killed copy is visible"
    );

    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(workload("t_resume.big".into(), ROWS, 11, stop.clone()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for kill in 2..=12 {
        let mut child = spawn_run(&config);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1200))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !snapshots_done(&p),
            "the snapshot finished before kill {kill}: the table is too small for this test"
        );
    }
    stop.cancel();
    writer.await.unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert!(snapshots_done(&p));
    for table in ["big", "small"] {
        let replayed = replay(&p.rows(table));
        let source = source(&db, &format!("t_resume.{table}")).await;
        let missing: Vec<_> = source
            .keys()
            .filter(|k| !replayed.contains_key(k))
            .take(10)
            .collect();
        assert_eq!(
            replayed.len(),
            source.len(),
            "{table}: row counts differ; missing {missing:?}"
        );
        assert!(
            replayed == source,
            "{table}: changelog differs from the source"
        );
    }
}

/// A table added to the configuration of a running pipeline (SIGHUP) is snapshotted while
/// the pipeline keeps streaming, with writes going on in both tables.
#[tokio::test(flavor = "multi_thread")]
async fn table_added_to_a_running_pipeline_is_snapshotted_and_streamed() {
    const ROWS: i64 = 50_000;
    let db = admin().await;
    let p = Pipeline::new("t_added", &db).await;
    db.batch_execute(&format!(
        "CREATE TABLE t_added.first (id bigint PRIMARY KEY, v int, note text);
         CREATE TABLE t_added.later (id bigint PRIMARY KEY, v int, note text);
         ALTER TABLE t_added.first OWNER TO sluice;
         ALTER TABLE t_added.later OWNER TO sluice;
         INSERT INTO t_added.first SELECT g, 0, 'row ' || g FROM generate_series(1, 1000) g;
         INSERT INTO t_added.later SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g;"
    ))
    .await
    .unwrap();
    let config = p.config(&["first"], "snapshot_chunk_rows = 1000");
    let child = spawn_run(&config);
    wait_for_slot(&db, "sluice_t_added").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let writers = [
        tokio::spawn(workload("t_added.first".into(), 1000, 1, stop.clone())),
        tokio::spawn(workload("t_added.later".into(), ROWS, 2, stop.clone())),
    ];
    p.config(&["first", "later"], "snapshot_chunk_rows = 1000");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    // The running process takes the new table up: its snapshot rows appear.
    let later = p
        .lake()
        .join("t_added/later/_delta_log/00000000000000000000.json");
    wait_for_file(&later, "the added table was never snapshotted").await;
    stop.cancel();
    for w in writers {
        w.await.unwrap();
    }
    terminate(child);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    assert!(snapshots_done(&p));
    for table in ["first", "later"] {
        let rows = p.rows(table);
        let replayed = replay(&rows);
        let source = source(&db, &format!("t_added.{table}")).await;
        assert_eq!(replayed.len(), source.len(), "{table}: row counts differ");
        assert!(
            replayed == source,
            "{table}: changelog differs from the source"
        );
    }
}
