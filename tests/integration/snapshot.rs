//! Initial snapshot: existing rows land as op `r` at the slot's consistent point, copied by
//! parallel connections that share one exported snapshot, and streaming continues from there
//! with no gap and no duplicate, even with writes going on during the copy.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};

use crate::support::{
    admin, error_lines, ok, run_sluice, spawn_run, terminate, wait_for_file, wait_for_slot,
    Pipeline,
};

const ROWS: i64 = 1_000_000;

async fn concurrent_workload() {
    let db = admin().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut next = ROWS + 1;
    for _ in 0..300 {
        let lo = rng.gen_range(1..ROWS - 100);
        db.batch_execute(&format!(
            "BEGIN;
             INSERT INTO t_snap.big SELECT g, 1, 'new' FROM generate_series({next}, {}) g;
             UPDATE t_snap.big SET v = v + 1 WHERE id BETWEEN {lo} AND {};
             DELETE FROM t_snap.big WHERE id = {};
             COMMIT;",
            next + 9,
            lo + 20,
            lo + 50
        ))
        .await
        .expect("workload");
        next += 10;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_stream_equals_the_source_under_concurrent_writes() {
    let db = admin().await;
    let p = Pipeline::new("t_snap", &db).await;
    db.batch_execute(&format!(
        "CREATE TABLE t_snap.big (id bigint PRIMARY KEY, v int, note text);
         ALTER TABLE t_snap.big OWNER TO sluice;
         INSERT INTO t_snap.big SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g;
         CREATE TABLE t_snap.empty (id int PRIMARY KEY);
         ALTER TABLE t_snap.empty OWNER TO sluice;"
    ))
    .await
    .unwrap();
    // Small chunks and four workers: many CTID ranges, read in parallel.
    let config = p.config(
        &["big", "empty"],
        "snapshot_workers = 4\nsnapshot_chunk_pages = 256",
    );
    let child = spawn_run(&config);
    // Start writing once the slot (and its snapshot) exists, so the writes race the copy.
    wait_for_slot(&db, "sluice_t_snap").await;
    concurrent_workload().await;
    // Stop politely, then drain whatever the workload left.
    terminate(child);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    let rows = p.rows("big");
    let snapshot_rows = rows.iter().filter(|r| r["_sluice_op"] == "r").count();
    assert!(
        snapshot_rows as i64 >= ROWS - 300,
        "snapshot copied {snapshot_rows} rows"
    );
    let snapshot_lsn: std::collections::HashSet<i64> = rows
        .iter()
        .filter(|r| r["_sluice_op"] == "r")
        .map(|r| r["_sluice_lsn"].as_i64().unwrap())
        .collect();
    assert_eq!(
        snapshot_lsn.len(),
        1,
        "all snapshot rows sit at one position"
    );
    let mut replayed: BTreeMap<i64, (i64, String)> = BTreeMap::new();
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        match r["_sluice_op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                let value = (
                    r["v"].as_i64().unwrap(),
                    r["note"].as_str().unwrap().to_string(),
                );
                if r["_sluice_op"] == "r" {
                    assert!(
                        replayed.insert(id, value).is_none(),
                        "row {id} copied twice"
                    );
                } else {
                    replayed.insert(id, value);
                }
            }
            "d" => {
                replayed.remove(&id);
            }
            op => panic!("unexpected op {op}"),
        }
    }
    let source: BTreeMap<i64, (i64, String)> = db
        .query("SELECT id, v::bigint, note FROM t_snap.big", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(replayed.len(), source.len(), "row counts differ");
    assert!(
        replayed == source,
        "snapshot + changelog differs from the source"
    );
    assert!(
        !p.lake().join("t_snap/empty").exists(),
        "an empty table needs no commit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_only_copies_and_leaves_no_slot() {
    let db = admin().await;
    let p = Pipeline::new("t_snaponly", &db).await;
    db.batch_execute(
        "CREATE TABLE t_snaponly.items (id int PRIMARY KEY, tags text[], price numeric(8,2), at timestamptz, mood_text text);
         ALTER TABLE t_snaponly.items OWNER TO sluice;
         INSERT INTO t_snaponly.items VALUES (1, ARRAY['a', NULL], 9.99, '2026-01-01 00:00:00+00', 'x'), (2, '{}', NULL, NULL, NULL);",
    )
    .await
    .unwrap();
    let config = p.config(&["items"], "snapshot = \"initial_only\"");
    ok(run_sluice(&["run"], &config));
    let rows = p.rows("items");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["_sluice_op"] == "r"));
    let first = rows.iter().find(|r| r["id"] == 1).unwrap();
    assert_eq!(first["tags"], serde_json::json!(["a", null]));
    assert_eq!(first["price"], "9.99");
    let slots = db
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'sluice_t_snaponly'",
            &[],
        )
        .await
        .unwrap();
    assert!(slots.is_empty(), "initial_only leaves no slot behind");
}

/// An initial load killed midway is finished incrementally on the next run (see
/// incremental.rs), which needs a primary key: a table without one is refused with how to
/// start over, never streamed over a gap.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_snapshot_of_a_table_without_key_stops_with_how_to_start_over() {
    let db = admin().await;
    let p = Pipeline::new("t_snapkill", &db).await;
    db.batch_execute(
        "CREATE TABLE t_snapkill.big (id bigint, note text);
         ALTER TABLE t_snapkill.big OWNER TO sluice;
         ALTER TABLE t_snapkill.big REPLICA IDENTITY FULL;
         INSERT INTO t_snapkill.big SELECT g, 'row ' || g FROM generate_series(1, 500000) g;",
    )
    .await
    .unwrap();
    let config = p.config(&["big"], "");
    let mut child = spawn_run(&config);
    // Kill while the copy is running: the first rows have reached the table (created empty,
    // its data files not yet committed). Killed earlier, during slot creation, the slot would
    // vanish with its connection and the next run would simply start over.
    let created = p
        .lake()
        .join("t_snapkill/big/_delta_log/00000000000000000000.json");
    wait_for_file(&created, "the copy never started").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(p.rows("big").is_empty(), "no snapshot row is visible");

    // --until caught-up: should the guard ever fail, the run ends instead of streaming forever.
    let out = run_sluice(&["run", "--until", "caught-up"], &config);
    assert!(!out.status.success());
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("table t_snapkill.big was interrupted")
            && errors[0].contains("no primary key")
            && errors[0].contains("pg_drop_replication_slot('sluice_t_snapkill')"),
        "{}",
        errors[0]
    );
}
