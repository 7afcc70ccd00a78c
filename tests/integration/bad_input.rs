//! Every bad input fails before anything is created: a non-zero exit, one line naming the
//! problem and its fix, and no slot or publication left behind.

use crate::support::{admin, error_lines, run_sluice, set_url, sluice, Pipeline, PORT};

/// Run `check` and `run` against `config`; both must fail with exactly one error line
/// containing `expect`, and the slot and publication must not exist afterwards.
async fn fails_cleanly(p: &Pipeline, config: &std::path::Path, expect: &str) {
    let db = admin().await;
    for cmd in ["check", "run"] {
        let out = run_sluice(&[cmd], config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} succeeded: {stderr}");
        let errors = error_lines(&out);
        assert_eq!(errors.len(), 1, "{cmd}: want one error line, got: {stderr}");
        assert!(
            errors[0].contains(expect),
            "{cmd}: {:?} lacks {expect:?}",
            errors[0]
        );
        assert!(
            !stderr.contains(crate::support::PASSWORD),
            "password leaked: {stderr}"
        );
    }
    let leftovers = db
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1
             UNION ALL SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&format!("sluice_{}", p.name)],
        )
        .await
        .unwrap();
    assert!(leftovers.is_empty(), "a failed check created something");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_fail_with_one_clear_line_and_create_nothing() {
    let db = admin().await;
    let p = Pipeline::new("t_bad", &db).await;
    db.batch_execute(
        "CREATE TABLE t_bad.keyed (id int PRIMARY KEY);
         CREATE TABLE t_bad.unkeyed (id int);
         DROP ROLE IF EXISTS sluice_norepl;
         CREATE ROLE sluice_norepl LOGIN PASSWORD 'sluice-dev-password';
         GRANT USAGE ON SCHEMA t_bad TO sluice_norepl;",
    )
    .await
    .unwrap();

    let config = p.config(&["missing"], "");
    fails_cleanly(&p, &config, "table t_bad.missing does not exist").await;

    let config = p.config(&["unkeyed"], "");
    fails_cleanly(&p, &config, "REPLICA IDENTITY FULL").await;

    let config = p.config(&["keyed"], "");
    set_url(&config, "postgres://sluice@127.0.0.1:1/shop");
    // `run` waits for an unreachable server (tests/integration/start_before_db.rs).
    crate::support::one_error(
        &run_sluice(&["check"], &config),
        &["cannot reach postgres at 127.0.0.1:1"],
    );

    let config = p.config(&["keyed"], "");
    set_url(
        &config,
        &format!("postgres://sluice:wrong@127.0.0.1:{PORT}/shop"),
    );
    fails_cleanly(&p, &config, "authentication failed for user sluice").await;

    let config = p.config(&["keyed"], "");
    set_url(
        &config,
        &format!("postgres://sluice_norepl@127.0.0.1:{PORT}/shop"),
    );
    fails_cleanly(&p, &config, "lacks the REPLICATION attribute").await;

    // Malformed config: an unknown field.
    let config = p.config(&["keyed"], "colour = \"blue\"");
    fails_cleanly(&p, &config, "unknown field `colour`").await;

    // Several config problems are all reported, one line each.
    std::fs::write(
        &config,
        "[pipeline]\nname = \"Bad Name\"\n[source]\nkind = \"postgres\"\nurl = \"mysql://x\"\ntables = []\n[[sinks]]\nkind = \"delta\"\npath = \"x\"\n",
    )
    .unwrap();
    let out = sluice()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(error_lines(&out).len(), 3);

    // And the good config passes.
    let config = p.config(&["keyed"], "");
    let out = run_sluice(&["check"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
