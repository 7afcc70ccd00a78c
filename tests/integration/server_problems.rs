//! Server-side problems and TLS: a misconfigured server gets every problem reported, one line
//! each with its fix, before anything is created; verify-full checks the certificate.

use crate::support::{admin, error_lines, run_sluice, set_url, Pipeline};

/// The deliberately misconfigured cluster from `scripts/dev-db.sh` (wal_level=replica, its
/// only replication slot taken).
const BAD_PORT: u16 = 54330;
const ROOT_CERT: &str = "/var/tmp/sluice-dev/pg/root.crt";

#[tokio::test(flavor = "multi_thread")]
async fn misconfigured_server_reports_each_problem_and_creates_nothing() {
    let db = admin().await;
    let p = Pipeline::new("t_server", &db).await;
    let config = p.config(&["keyed"], "");
    set_url(
        &config,
        &format!("postgres://sluice@127.0.0.1:{BAD_PORT}/shop?sslmode=disable"),
    );
    // The table lives in public on the bad cluster.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("t_server.keyed", "public.keyed");
    std::fs::write(&config, text).unwrap();
    for cmd in ["check", "run"] {
        let out = run_sluice(&[cmd], &config);
        assert!(
            !out.status.success(),
            "{cmd} succeeded on a misconfigured server"
        );
        let errors = error_lines(&out);
        assert_eq!(errors.len(), 2, "{cmd}: {errors:#?}");
        assert!(
            errors[0].contains("wal_level is replica")
                && errors[0].contains("ALTER SYSTEM SET wal_level = logical")
        );
        assert!(
            errors[1].contains("no free replication slot")
                && errors[1].contains("max_replication_slots")
        );
    }
    let (bad, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={BAD_PORT} user=postgres dbname=shop"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let created = bad
        .query("SELECT 1 FROM pg_publication UNION ALL SELECT 1 FROM pg_replication_slots WHERE slot_type = 'logical'", &[])
        .await
        .unwrap();
    assert!(
        created.is_empty(),
        "a failed run created a publication or slot"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_checks_the_certificate() {
    let db = admin().await;
    let p = Pipeline::new("t_tls", &db).await;
    db.batch_execute(
        "CREATE TABLE t_tls.keyed (id int PRIMARY KEY); ALTER TABLE t_tls.keyed OWNER TO sluice;",
    )
    .await
    .unwrap();
    let config = p.config(&["keyed"], "");
    set_url(
        &config,
        &format!(
            "postgres://sluice@127.0.0.1:{}/shop?sslmode=verify-full&sslrootcert={ROOT_CERT}",
            crate::support::PORT
        ),
    );
    let out = run_sluice(&["check"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same run streams over verified TLS (both the SQL and the replication connection).
    let out = run_sluice(&["run", "--until", "caught-up"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the dev CA the self-signed certificate is refused.
    set_url(
        &config,
        &format!(
            "postgres://sluice@127.0.0.1:{}/shop?sslmode=verify-full",
            crate::support::PORT
        ),
    );
    let out = run_sluice(&["check"], &config);
    assert!(!out.status.success());
    let errors = error_lines(&out);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("tls"), "{}", errors[0]);
}
