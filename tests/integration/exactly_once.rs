//! SIGKILL at random moments during a multi-table workload: afterwards every change is in the
//! Delta tables exactly once, and the slot was never confirmed past what was durable.

use std::collections::{BTreeMap, HashMap};
use std::process::Child;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::support::{admin, confirmed_flush, ok, read_delta, run_sluice, spawn_run, Pipeline};

const TABLES: [&str; 3] = ["alpha", "beta", "gamma"];
const TARGET_ROWS: usize = 200_000;
const KILLS: usize = 20;

/// One workload transaction: inserts into every table, updates and deletes some earlier rows.
async fn workload(rng_seed: u64) -> usize {
    let db = admin().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
    let mut next_id: i64 = 1;
    let mut changed = 0;
    while changed < TARGET_ROWS {
        let n: i64 = rng.gen_range(50..400);
        let mut sql = String::from("BEGIN;");
        for t in TABLES {
            sql.push_str(&format!(
                "INSERT INTO t_kill.{t} (id, v) SELECT g, 0 FROM generate_series({next_id}, {}) g;",
                next_id + n - 1
            ));
        }
        let lo = rng.gen_range(1..=next_id);
        let t = TABLES[rng.gen_range(0..3)];
        sql.push_str(&format!(
            "UPDATE t_kill.{t} SET v = v + 1 WHERE id BETWEEN {lo} AND {};",
            lo + 20
        ));
        let t = TABLES[rng.gen_range(0..3)];
        let victim = rng.gen_range(1..=next_id);
        sql.push_str(&format!("DELETE FROM t_kill.{t} WHERE id = {victim};"));
        sql.push_str("COMMIT;");
        db.batch_execute(&sql).await.expect("workload");
        next_id += n;
        changed += 3 * n as usize + 22;
    }
    changed
}

/// Delta log versions per table, read from the log directory (cheap, no reader needed).
fn delta_versions(p: &Pipeline) -> HashMap<&'static str, Option<u64>> {
    TABLES
        .iter()
        .map(|t| {
            let log = p.lake().join("t_kill").join(t).join("_delta_log");
            let v = std::fs::read_dir(&log).ok().and_then(|entries| {
                entries
                    .filter_map(|e| {
                        e.ok()?
                            .file_name()
                            .to_str()?
                            .strip_suffix(".json")?
                            .parse()
                            .ok()
                    })
                    .max()
            });
            (*t, v)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let db = admin().await;
    let p = Pipeline::new("t_kill", &db).await;
    for t in TABLES {
        db.batch_execute(&format!(
            "CREATE TABLE t_kill.{t} (id bigint PRIMARY KEY, v int); ALTER TABLE t_kill.{t} OWNER TO sluice;"
        ))
        .await
        .unwrap();
    }
    let config = p.config(&TABLES, "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    let work = tokio::spawn(workload(42));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // (confirmed flush LSN of the slot after the kill, Delta versions at that moment)
    let mut checkpoints = Vec::new();
    let mut kills = 0;
    while kills < KILLS || !work.is_finished() {
        let mut child: Child = spawn_run(&config);
        // A random moment: the point of the test is that the moment is not chosen.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..2500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let versions = delta_versions(&p);
        let confirmed = confirmed_flush(&db, "sluice_t_kill").await;
        checkpoints.push((confirmed, versions));
    }
    let changed = work.await.unwrap();
    assert!(changed >= TARGET_ROWS);
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    for t in TABLES {
        let path = p.lake().join("t_kill").join(t);
        let rows = read_delta(&path, None);
        // No duplicates: (lsn, seq) identifies a change.
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            let key = (
                r["_sluice_lsn"].as_i64().unwrap(),
                r["_sluice_seq"].as_i64().unwrap(),
            );
            assert!(seen.insert(key), "{t}: change {key:?} appears twice");
        }
        // No loss: replaying the changelog by key gives the source table exactly.
        let mut replayed: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &rows {
            let id = r["id"].as_i64().unwrap();
            match r["_sluice_op"].as_str().unwrap() {
                "c" | "u" => {
                    replayed.insert(id, r["v"].as_i64().unwrap());
                }
                "d" => {
                    replayed.remove(&id);
                }
                op => panic!("unexpected op {op}"),
            }
        }
        let source: BTreeMap<i64, i64> = db
            .query(&format!("SELECT id, v::bigint FROM t_kill.{t}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(replayed.len(), source.len(), "{t}: row count differs");
        assert!(
            replayed == source,
            "{t}: replayed changelog differs from the source"
        );

        // The slot never ran ahead of the lake: every change below the LSN confirmed after a
        // kill was already in the table at that moment.
        for (confirmed, versions) in &checkpoints {
            let below = |rs: &[serde_json::Value]| {
                rs.iter()
                    .filter(|r| (r["_sluice_lsn"].as_i64().unwrap() as u64) < confirmed.0)
                    .count()
            };
            let then = match versions[t] {
                Some(v) => below(&read_delta(&path, Some(v))),
                None => 0,
            };
            assert_eq!(
                then,
                below(&rows),
                "{t}: slot confirmed {confirmed} before those changes were durable"
            );
        }
    }
}
