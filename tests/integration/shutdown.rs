//! SIGTERM: the commit in flight finishes, the final status update confirms it, exit code 0.

use crate::support::{
    admin, confirmed_flush, ok, run_sluice, sluice, spawn_run, terminate, wait_for_file, Pipeline,
};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_commit_and_confirms_it() {
    let db = admin().await;
    let p = Pipeline::new("t_term", &db).await;
    db.batch_execute(
        "CREATE TABLE t_term.items (id int PRIMARY KEY, v text); ALTER TABLE t_term.items OWNER TO sluice;",
    )
    .await
    .unwrap();
    let config = p.config(&["items"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    let child = spawn_run(&config);
    db.batch_execute("INSERT INTO t_term.items SELECT g, 'v' FROM generate_series(1, 5000) g;")
        .await
        .unwrap();
    // Wait for the change to reach the lake (a condition, polled), then stop politely.
    let first_data = p
        .lake()
        .join("t_term/items/_delta_log/00000000000000000001.json");
    wait_for_file(&first_data, "changes never reached the lake").await;
    terminate(child);

    // The final status update confirmed what was committed.
    let confirmed = confirmed_flush(&db, "sluice_t_term").await;
    let rows = p.rows("items");
    assert_eq!(rows.len(), 5000);
    let commit_lsn = rows[0]["_sluice_lsn"].as_i64().unwrap() as u64;
    assert!(
        confirmed.0 > commit_lsn,
        "confirmed {confirmed} does not cover the commit at {commit_lsn:X}"
    );
}

/// Traffic on tables outside the pipeline must not pin WAL: with nothing in flight, the slot
/// is confirmed up to where the server has decoded.
#[tokio::test(flavor = "multi_thread")]
async fn idle_tables_do_not_pin_wal() {
    let db = admin().await;
    let p = Pipeline::new("t_idle", &db).await;
    db.batch_execute(
        "CREATE TABLE t_idle.items (id int PRIMARY KEY); ALTER TABLE t_idle.items OWNER TO sluice;
         CREATE TABLE t_idle.other (id int PRIMARY KEY, v text);",
    )
    .await
    .unwrap();
    let config = p.config(&["items"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    db.batch_execute(
        "INSERT INTO t_idle.other SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;",
    )
    .await
    .unwrap();
    let written: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let written: replication::Lsn = written.parse().unwrap();
    let out = sluice()
        .env("SLUICE_LOG", "replication=trace,sluice=debug")
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let confirmed = confirmed_flush(&db, "sluice_t_idle").await;
    assert!(
        confirmed >= written,
        "slot confirmed {confirmed}, WAL written up to {written}: {log}"
    );
    assert!(
        !p.lake().join("t_idle/items").exists(),
        "no change, no table"
    );
}
