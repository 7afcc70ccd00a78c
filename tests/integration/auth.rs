//! The replication connection speaks every password method PostgreSQL offers: SCRAM-SHA-256
//! (the other tests), MD5 and cleartext here, trust on the misconfigured cluster.

use crate::support::{admin, ok, run_sluice, set_url, Pipeline, PASSWORD, PORT};

#[tokio::test(flavor = "multi_thread")]
async fn md5_and_cleartext_passwords_authenticate() {
    let db = admin().await;
    // (role, how its password is stored; pg_hba from dev-db.sh picks the method by role)
    for (role, stored) in [("sluice_md5", "md5"), ("sluice_cleartext", "scram-sha-256")] {
        let name = format!("t_auth_{}", role.trim_start_matches("sluice_"));
        db.batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                 CREATE ROLE {role} LOGIN REPLICATION;
               END IF;
             END $$;
             SET password_encryption = '{stored}';
             ALTER ROLE {role} PASSWORD '{PASSWORD}';
             RESET password_encryption;
             GRANT CREATE ON DATABASE shop TO {role};"
        ))
        .await
        .unwrap();
        let p = Pipeline::new(&name, &db).await;
        db.batch_execute(&format!(
            "CREATE TABLE {name}.items (id int PRIMARY KEY, v text);
             ALTER TABLE {name}.items OWNER TO {role};
             ALTER SCHEMA {name} OWNER TO {role};"
        ))
        .await
        .unwrap();
        let config = p.config(&["items"], "");
        set_url(
            &config,
            &format!("postgres://{role}@127.0.0.1:{PORT}/shop?sslmode=disable"),
        );
        ok(run_sluice(&["run", "--until", "caught-up"], &config));
        db.batch_execute(&format!(
            "INSERT INTO {name}.items VALUES (1, 'a'), (2, 'b');"
        ))
        .await
        .unwrap();
        ok(run_sluice(&["run", "--until", "caught-up"], &config));
        assert_eq!(p.rows("items").len(), 2, "{role}");
    }
}
