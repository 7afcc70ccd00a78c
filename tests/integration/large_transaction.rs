//! A single transaction far larger than the batch limits streams through with bounded memory,
//! lands as one Delta commit, and an aborted large transaction (or a rolled-back
//! subtransaction inside the committed one) leaves nothing visible.

use crate::support::{admin, ok, sluice, Pipeline};

const ROWS: i64 = 2_000_000;
/// The bar the issue sets for a 2-million-row transaction.
const MAX_PEAK_RSS: u64 = 300 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn two_million_row_transaction_streams_with_bounded_memory() {
    let db = admin().await;
    let p = Pipeline::new("t_large", &db).await;
    db.batch_execute(
        "CREATE TABLE t_large.big (id bigint PRIMARY KEY, n int, note text, at timestamptz, price numeric(12,2));
         ALTER TABLE t_large.big OWNER TO sluice;",
    )
    .await
    .unwrap();
    let config = p.config(&["big"], "");
    ok(sluice()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());

    // An aborted big transaction: streamed to Sluice, then rolled back.
    db.batch_execute(
        "BEGIN; INSERT INTO t_large.big SELECT g, g, 'aborted', now(), 1 FROM generate_series(1, 300000) g; ROLLBACK;",
    )
    .await
    .unwrap();
    // The committed one, with a rolled-back subtransaction in the middle of it.
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO t_large.big SELECT g, g % 1000, 'row ' || g, now(), g / 100.0 FROM generate_series(1, {half}) g;
         SAVEPOINT s;
         INSERT INTO t_large.big SELECT g, 0, 'rolled back', now(), 0 FROM generate_series({ROWS} + 1, {ROWS} + 200000) g;
         ROLLBACK TO SAVEPOINT s;
         INSERT INTO t_large.big SELECT g, g % 1000, 'row ' || g, now(), g / 100.0 FROM generate_series({half} + 1, {ROWS}) g;
         COMMIT;",
        half = ROWS / 2
    ))
    .await
    .unwrap();

    let out = sluice()
        .env("SLUICE_LOG", "sluice=info")
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let peak = crate::support::peak_rss(&stderr);
    assert!(
        peak < MAX_PEAK_RSS,
        "peak RSS {peak} bytes is over {MAX_PEAK_RSS}"
    );

    // Count rows with the Delta log alone: every add action records numRecords.
    let log = p.lake().join("t_large/big/_delta_log");
    let mut rows = 0;
    let mut commits_with_data = 0;
    for entry in std::fs::read_dir(&log).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let mut had_add = false;
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let action: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(stats) = action["add"]["stats"].as_str() {
                    let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
                    rows += stats["numRecords"].as_i64().unwrap();
                    had_add = true;
                }
            }
            commits_with_data += usize::from(had_add);
        }
    }
    assert_eq!(
        rows, ROWS,
        "every row of the committed transaction, none of the aborted one"
    );
    assert_eq!(commits_with_data, 1, "the transaction is one Delta commit");
}
