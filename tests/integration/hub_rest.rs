//! The REST hub sink end to end, against two real APIs no one here wrote, started by
//! `scripts/dev-http.sh`: Kinto (PUT/PATCH/DELETE per record, `/v1/batch` of at most 25
//! sub-requests) and Datasette 1.0 (`/-/upsert` of at most 100 rows, per-row update and
//! delete).
//!
//! Asserted as a user would look: after a workload of inserts, updates with unchanged TOAST
//! values, deletes and key changes, with `sluice run` SIGKILLed ten times during delivery,
//! the Kinto collection and the Datasette table equal the source table row for row; no batch
//! request was ever refused (none over the limits), nothing was parked; `sluice check` names
//! every template problem with its fix.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::hub_webhook::{wait_until, Running};
use crate::support::{admin, ok, sluice, Pipeline};

/// Kinto and Datasette as `scripts/dev-http.sh env` exports them; fails loudly without.
struct Apis {
    kinto: String,
    datasette: String,
    token: String,
    http: reqwest::Client,
}

const KINTO_AUTH: (&str, &str) = ("sluice", "sluice-dev-password");

impl Apis {
    fn from_env() -> Apis {
        let var = |n: &str| {
            std::env::var(n).unwrap_or_else(|_| {
                panic!("{n} is not set: run scripts/dev-http.sh start and eval \"$(scripts/dev-http.sh env)\" (scripts/test.sh does)")
            })
        };
        Apis {
            kinto: var("SLUICE_KINTO_URL"),
            datasette: var("SLUICE_DATASETTE_URL"),
            token: var("SLUICE_DATASETTE_TOKEN"),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, rb: reqwest::RequestBuilder) -> (u16, Value) {
        let r = rb.send().await.unwrap_or_else(|e| {
            panic!("an API of scripts/dev-http.sh is not answering ({e}): run scripts/dev-http.sh start")
        });
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// An empty Kinto collection `name` in bucket `name`.
    async fn reset_kinto(&self, name: &str) {
        let bucket = format!("{}/buckets/{name}", self.kinto);
        let k = |rb: reqwest::RequestBuilder| rb.basic_auth(KINTO_AUTH.0, Some(KINTO_AUTH.1));
        let (s, _) = self.call(k(self.http.delete(&bucket))).await;
        // Kinto answers 403 for a bucket that does not exist (it cannot tell whose it would be).
        assert!(matches!(s, 200 | 403 | 404), "delete bucket: {s}");
        let (s, _) = self.call(k(self.http.put(&bucket))).await;
        assert_eq!(s, 201, "create bucket");
        let (s, _) = self
            .call(k(self.http.put(format!("{bucket}/collections/{name}"))))
            .await;
        assert_eq!(s, 201, "create collection");
    }

    /// An empty Datasette table `name` (id, email, name, bio).
    async fn reset_datasette(&self, name: &str) {
        let d = |rb: reqwest::RequestBuilder| rb.bearer_auth(&self.token);
        let (s, _) = self
            .call(d(self
                .http
                .post(format!("{}/shop/{name}/-/drop", self.datasette))
                .json(&json!({"confirm": true}))))
            .await;
        assert!(matches!(s, 200 | 404), "drop table: {s}");
        let (s, body) = self
            .call(d(self
                .http
                .post(format!("{}/shop/-/create", self.datasette))
                .json(&json!({
                "table": name,
                "columns": [{"name": "id", "type": "integer"}, {"name": "email", "type": "text"},
                            {"name": "name", "type": "text"}, {"name": "bio", "type": "text"}],
                "pk": "id"}))))
            .await;
        assert_eq!(s, 201, "create table: {body}");
    }

    /// The Kinto records as id → {email, name, bio}.
    async fn kinto_rows(&self, name: &str) -> BTreeMap<i64, Value> {
        let url = format!(
            "{}/buckets/{name}/collections/{name}/records?_limit=10000",
            self.kinto
        );
        let (s, body) = self
            .call(
                self.http
                    .get(url)
                    .basic_auth(KINTO_AUTH.0, Some(KINTO_AUTH.1)),
            )
            .await;
        assert_eq!(s, 200, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let id: i64 = r["id"].as_str().unwrap().parse().unwrap();
                (
                    id,
                    json!({"email": r["email"], "name": r["name"], "bio": r["bio"]}),
                )
            })
            .collect()
    }

    /// The Datasette rows as id → {email, name, bio}.
    async fn datasette_rows(&self, name: &str) -> BTreeMap<i64, Value> {
        let url = format!("{}/shop/{name}.json?_shape=array&_size=max", self.datasette);
        let (s, body) = self.call(self.http.get(url)).await;
        assert_eq!(s, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    json!({"email": r["email"], "name": r["name"], "bio": r["bio"]}),
                )
            })
            .collect()
    }
}

/// The two REST sinks of `name`: Kinto through its batch endpoint (25 sub-requests at most),
/// Datasette through upserts of up to 100 rows plus per-row updates and deletes.
fn add_rest_sinks(config: &Path, apis: &Apis, bucket: &str, name: &str, table: &str) {
    let k = format!(
        "{}/buckets/{bucket}/collections/{bucket}/records",
        apis.kinto
    );
    let batch = format!("{}/batch", apis.kinto);
    let d = format!("{}/shop/{name}", apis.datasette);
    let sinks = format!(
        r#"
[[sinks]]
kind = "rest"
name = "kinto"
tables = ["{table}"]
upsert = {{ method = "PUT", url = "{k}/{{id}}", body = {{ data = {{ email = "{{email}}", name = "{{name}}", bio = "{{bio}}" }} }} }}
delete = {{ method = "DELETE", url = "{k}/{{id}}" }}
batch = {{ url = "{batch}", max_items = 25, format = "requests" }}
headers = {{ Authorization = {{ env = "T_REST_KINTO_AUTH", prefix = "Basic " }} }}
max_batch_rows = 40
max_concurrency = 4
rate_limit = ["40/s"]
timeout = "10s"

[[sinks]]
kind = "rest"
name = "datasette"
tables = ["{table}"]
upsert = {{ method = "POST", body = {{ id = "{{id}}", email = "{{email}}", name = "{{name}}", bio = "{{bio}}" }} }}
update = {{ method = "POST", url = "{d}/{{id}}/-/update", body = {{ update = {{ email = "{{email}}", name = "{{name}}", bio = "{{bio}}" }} }} }}
delete = {{ method = "POST", url = "{d}/{{id}}/-/delete" }}
batch = {{ url = "{d}/-/upsert", max_items = 100, format = "rows" }}
headers = {{ Authorization = {{ env = "T_REST_DATASETTE_TOKEN", prefix = "Bearer " }} }}
max_batch_rows = 150
max_concurrency = 4
rate_limit = ["40/s"]
timeout = "10s"
"#
    );
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&sinks);
    std::fs::write(config, text).unwrap();
}

/// `sluice` with the APIs' credentials in the environment.
fn sluice_with_tokens(apis: &Apis) -> std::process::Command {
    let mut cmd = sluice();
    // base64("sluice:sluice-dev-password")
    cmd.env("T_REST_KINTO_AUTH", "c2x1aWNlOnNsdWljZS1kZXYtcGFzc3dvcmQ=")
        .env("T_REST_DATASETTE_TOKEN", &apis.token);
    cmd
}

/// `sluice run --until caught-up`, which must succeed.
fn run_caught_up(apis: &Apis, config: &Path) -> String {
    ok(sluice_with_tokens(apis)
        .args(["run", "--until", "caught-up", "--config"])
        .arg(config)
        .output()
        .unwrap())
}

fn delivered(lake: &Path, pipeline: &str, sink: &str) -> u64 {
    let path = lake
        .join("_sluice_cursors")
        .join(pipeline)
        .join(format!("{sink}.json"));
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["delivered"].as_u64())
        .unwrap_or(0)
}

fn assert_clean_log(config: &Path) {
    let log = std::fs::read_to_string(config.with_extension("log")).unwrap_or_default();
    for bad in ["refused", "parked"] {
        assert!(
            !log.lines().any(|l| l.contains(bad) && l.contains("WARN")),
            "the sink log has a {bad} line:\n{log}"
        );
    }
}

/// Starts `sluice run` in the background (log beside the config).
fn spawn(apis: &Apis, config: &Path) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .expect("log file");
    Running::new(
        sluice_with_tokens(apis)
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice run"),
    )
}

/// Kills `sluice run` ten times, each after a sink delivered more since the last kill.
async fn kill_ten_times(apis: &Apis, config: &Path, lake: &Path, pipeline: &str) -> Running {
    let mut child = spawn(apis, config);
    for _ in 0..10 {
        let before = (
            delivered(lake, pipeline, "kinto"),
            delivered(lake, pipeline, "datasette"),
        );
        wait_until("deliveries before a kill", 120, || {
            delivered(lake, pipeline, "kinto") > before.0
                || delivered(lake, pipeline, "datasette") > before.1
        })
        .await;
        child.kill();
        child = spawn(apis, config);
    }
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn t_rest_postgres_to_kinto_and_datasette_equal_through_sigkills() {
    let apis = Apis::from_env();
    let db = admin().await;
    let name = "t_rest_pg";
    let bucket = "t-rest-pg";
    let p = Pipeline::new(name, &db).await;
    apis.reset_kinto(bucket).await;
    apis.reset_datasette(name).await;
    // bio is stored out of line (TOAST) when long: updates that leave it alone send it as
    // "unchanged", which the sinks must not turn into a null.
    db.batch_execute(&format!(
        "CREATE TABLE {name}.customers (id bigint PRIMARY KEY, email text, name text, bio text);
         ALTER TABLE {name}.customers ALTER COLUMN bio SET STORAGE EXTERNAL;
         ALTER TABLE {name}.customers OWNER TO sluice;
         INSERT INTO {name}.customers
           SELECT g, 'c' || g || '@example.com', 'name ' || g,
                  CASE WHEN g % 2 = 0 THEN repeat('long bio ' || g || ' ', 800) ELSE 'short ' || g END
           FROM generate_series(1, 300) g;"
    ))
    .await
    .unwrap();
    let config = p.config(&["customers"], "");
    add_rest_sinks(&config, &apis, bucket, name, &format!("{name}.customers"));
    ok(sluice_with_tokens(&apis)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap());

    let work = tokio::spawn(async move {
        let db = admin().await;
        for i in 0..60i64 {
            db.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO {name}.customers VALUES ({n}, 'new{n}@example.com', 'new {n}', repeat('fresh ', 600));
                 UPDATE {name}.customers SET name = name || ' +' WHERE id IN ({a}, {b});
                 UPDATE {name}.customers SET email = 'e{i}@example.com' WHERE id = {n};
                 UPDATE {name}.customers SET bio = 'rewritten {i}' WHERE id = {c};
                 DELETE FROM {name}.customers WHERE id = {d};
                 UPDATE {name}.customers SET id = id + 100000, name = 'moved' WHERE id = {m};
                 COMMIT;",
                n = 1000 + i,
                a = 1 + (i * 7) % 300,
                b = 1 + (i * 11) % 300,
                c = 2 + 2 * ((i * 5) % 150),
                d = 299 - 2 * i,
                // Odd ids hold short bios: a key change of a row whose long bio is unchanged
                // cannot be delivered to an object API (see the README).
                m = 1 + 2 * ((i * 13) % 150),
            ))
            .await
            .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    });
    let mut child = kill_ten_times(&apis, &config, &p.lake(), name).await;
    work.await.unwrap();
    child.kill();
    // Deliver what is left, then compare.
    run_caught_up(&apis, &config);
    let source: BTreeMap<i64, Value> = db
        .query(
            &format!("SELECT id, email, name, bio FROM {name}.customers"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let s = |i: usize| {
                r.get::<_, Option<String>>(i)
                    .map_or(Value::Null, Value::String)
            };
            (r.get(0), json!({"email": s(1), "name": s(2), "bio": s(3)}))
        })
        .collect();
    assert_equal_everywhere(&apis, &source, bucket, name, &p.lake(), &config).await;
}

/// The Kinto collection and the Datasette table equal `source`, nothing was parked, and no
/// request was refused (none over a batch limit).
async fn assert_equal_everywhere(
    apis: &Apis,
    source: &BTreeMap<i64, Value>,
    bucket: &str,
    table: &str,
    lake: &Path,
    config: &Path,
) {
    assert!(source.len() > 300, "{}", source.len());
    let kinto = apis.kinto_rows(bucket).await;
    assert_eq!(kinto.len(), source.len());
    assert_eq!(
        &kinto, source,
        "the Kinto collection differs from the source"
    );
    let datasette = apis.datasette_rows(table).await;
    assert_eq!(datasette.len(), source.len());
    assert_eq!(
        &datasette, source,
        "the Datasette table differs from the source"
    );
    assert!(
        !lake.join("_sluice_dead_letters").exists(),
        "something was parked"
    );
    assert_clean_log(config);
}

#[tokio::test(flavor = "multi_thread")]
async fn t_rest_mariadb_to_kinto_and_datasette_equal_through_sigkills() {
    use crate::mysql_support::{admin_at, exec, MyPipeline, MY_PORT};
    use mysql_async::prelude::Queryable;
    let apis = Apis::from_env();
    let mut db = admin_at(MY_PORT).await;
    let name = "t_rest_my";
    let bucket = "t-rest-my";
    let p = MyPipeline::new(name, &mut db).await;
    apis.reset_kinto(bucket).await;
    apis.reset_datasette(name).await;
    exec(
        &mut db,
        &format!(
            "CREATE TABLE {name}.customers (id bigint PRIMARY KEY, email text, name text, bio mediumtext);
             INSERT INTO {name}.customers
               SELECT seq, CONCAT('c', seq, '@example.com'), CONCAT('name ', seq), REPEAT(CONCAT('bio ', seq, ' '), 200)
               FROM {name}.seq_1_to_320;"
        ),
    )
    .await;
    let config = p.config(&["customers"], 5191);
    add_rest_sinks(&config, &apis, bucket, name, &format!("{name}.customers"));
    ok(sluice_with_tokens(&apis)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let work = tokio::spawn(async move {
        let mut db = admin_at(MY_PORT).await;
        for i in 0..60i64 {
            exec(
                &mut db,
                &format!(
                    "START TRANSACTION;
                     INSERT INTO {name}.customers VALUES ({n}, 'new{n}@example.com', 'new {n}', REPEAT('fresh ', 600));
                     UPDATE {name}.customers SET name = CONCAT(name, ' +') WHERE id IN ({a}, {b});
                     UPDATE {name}.customers SET email = 'e{i}@example.com' WHERE id = {n};
                     DELETE FROM {name}.customers WHERE id = {d};
                     UPDATE {name}.customers SET id = id + 100000, name = 'moved' WHERE id = {m};
                     COMMIT;",
                    n = 1000 + i,
                    a = 1 + (i * 7) % 320,
                    b = 1 + (i * 11) % 320,
                    d = 319 - 2 * i,
                    m = 2 + 2 * ((i * 13) % 150),
                ),
            )
            .await;
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    });
    let mut child = kill_ten_times(&apis, &config, &p.lake(), name).await;
    work.await.unwrap();
    child.kill();
    run_caught_up(&apis, &config);
    type Row = (i64, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = db
        .query(format!("SELECT id, email, name, bio FROM {name}.customers"))
        .await
        .unwrap();
    let s = |v: Option<String>| v.map_or(Value::Null, Value::String);
    let source: BTreeMap<i64, Value> = rows
        .into_iter()
        .map(|(id, e, n, b)| (id, json!({"email": s(e), "name": s(n), "bio": s(b)})))
        .collect();
    assert_equal_everywhere(&apis, &source, bucket, name, &p.lake(), &config).await;
}

/// A Kinto sink of `bucket` (no batch endpoint: one request per object).
fn add_kinto_sink(config: &Path, apis: &Apis, bucket: &str, table: &str) {
    let k = format!(
        "{}/buckets/{bucket}/collections/{bucket}/records",
        apis.kinto
    );
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        r#"
[[sinks]]
kind = "rest"
name = "kinto"
tables = ["{table}"]
upsert = {{ url = "{k}/{{id}}", body = {{ data = {{ email = "{{email}}", bio = "{{bio}}" }} }} }}
delete = {{ url = "{k}/{{id}}" }}
headers = {{ Authorization = {{ env = "T_REST_KINTO_AUTH", prefix = "Basic " }} }}
"#
    ));
    std::fs::write(config, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn t_rest_refused_changes_parked_listed_and_retried_without_stale_overwrites() {
    let apis = Apis::from_env();
    let db = admin().await;
    let name = "t_rest_dl";
    let bucket = "t-rest-dl";
    let p = Pipeline::new(name, &db).await;
    apis.reset_kinto(bucket).await;
    // The collection refuses emails without an @ (a JSON schema Kinto enforces).
    let collection = format!("{}/buckets/{bucket}/collections/{bucket}", apis.kinto);
    let schema = json!({"data": {"schema": {"type": "object",
        "properties": {"email": {"type": "string", "pattern": "@"}}}}});
    let (s, _) = apis
        .call(
            apis.http
                .put(&collection)
                .basic_auth(KINTO_AUTH.0, Some(KINTO_AUTH.1))
                .json(&schema),
        )
        .await;
    assert_eq!(s, 200);
    db.batch_execute(&format!(
        "CREATE TABLE {name}.customers (id bigint PRIMARY KEY, email text, bio text);
         ALTER TABLE {name}.customers ALTER COLUMN bio SET STORAGE EXTERNAL;
         ALTER TABLE {name}.customers OWNER TO sluice;
         INSERT INTO {name}.customers SELECT g, 'c' || g || '@example.com', 'short' FROM generate_series(1, 5) g;"
    ))
    .await
    .unwrap();
    let config = p.config(&["customers"], "");
    add_kinto_sink(&config, &apis, bucket, &format!("{name}.customers"));
    run_caught_up(&apis, &config);
    // Three transactions (a batch folds the changes of a key within one transaction).
    for sql in [
        "INSERT INTO {name}.customers VALUES (6, 'no-at-sign', 'short'), (7, 'nope', 'short'),
                                             (8, 'c8@example.com', repeat('long bio ', 800))",
        "UPDATE {name}.customers SET email = 'seven@example.com' WHERE id = 7",
        "UPDATE {name}.customers SET id = 80 WHERE id = 8",
    ] {
        db.batch_execute(&sql.replace("{name}", name))
            .await
            .unwrap();
    }
    run_caught_up(&apis, &config);
    // Parked: 6 and the first change of 7 (refused by the schema); the move of 8 to 80,
    // whose long bio was not sent (unchanged) and cannot be patched onto a missing record.
    // Delivered meanwhile: 7's newer change.
    let kinto = apis.kinto_rows(bucket).await;
    assert_eq!(
        kinto.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 7]
    );
    assert_eq!(kinto[&7]["email"], "seven@example.com");
    let list = sluice_with_tokens(&apis)
        .args(["dead-letters", "list", "--sink", "kinto", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&list.stdout);
    assert_eq!(list.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("key {\"id\":6}") && lines[0].contains("status 400"),
        "{out}"
    );
    assert!(lines[0].contains("does not match"), "{out}");
    assert!(
        lines[1].contains("key {\"id\":7}") && lines[1].contains("op c"),
        "{out}"
    );
    assert!(
        lines[2].contains("key {\"id\":80}") && lines[2].contains("status 404"),
        "{out}"
    );
    assert!(lines[3].starts_with("3 open parked change(s)"), "{out}");
    let status = ok(sluice_with_tokens(&apis)
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    assert!(
        status.contains("hub sink kinto:") && status.contains("parked 3"),
        "{status}"
    );

    // The operator relaxes the schema and retries: 6 is delivered, 7's old change is not
    // sent (its newer change is already there), 80 is still refused.
    let (s, _) = apis
        .call(
            apis.http
                .put(&collection)
                .basic_auth(KINTO_AUTH.0, Some(KINTO_AUTH.1))
                .json(&json!({"data": {}})),
        )
        .await;
    assert_eq!(s, 200);
    let retry = sluice_with_tokens(&apis)
        .args(["dead-letters", "retry", "--sink", "kinto", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&retry.stdout);
    assert_eq!(retry.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "3 open, 1 delivered, 1 superseded by a newer change of their key, 1 still refused"
        ),
        "{out}"
    );
    let kinto = apis.kinto_rows(bucket).await;
    assert_eq!(kinto[&6]["email"], "no-at-sign");
    assert_eq!(
        kinto[&7]["email"], "seven@example.com",
        "a stale change overwrote a newer one"
    );
    let list = sluice_with_tokens(&apis)
        .args(["dead-letters", "list", "--sink", "kinto", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(
        out.contains("1 open parked change(s)") && out.contains("\"id\":80"),
        "{out}"
    );
}

#[test]
fn t_rest_check_names_template_problems_with_their_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    let base = format!(
        "[pipeline]\nname = \"t_rest_check\"\n[source]\nkind = \"postgres\"\nurl = \"postgres://sluice@127.0.0.1:{}/shop\"\ntables = [\"public.orders\"]\n",
        crate::support::PORT
    );
    std::fs::write(
        &config,
        format!(
            "{base}[[sinks]]\nkind = \"rest\"\nname = \"crm\"\nupsert = {{ url = \"https://{{host}}/c/{{id}}\" }}\ndelete = {{ url = \"https://crm.example.com/c/{{id}}\" }}\nbatch = {{ url = \"https://crm.example.com/batch\", max_items = 0, format = \"requests\" }}\nheaders = {{ Authorization = {{ env = \"T_REST_SURELY_UNSET\", prefix = \"Bearer \" }} }}\n"
        ),
    )
    .unwrap();
    let out = sluice()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for fix in [
        "batch.max_items 0 is impossible",
        "spell out scheme and host",
        "T_REST_SURELY_UNSET is not set",
    ] {
        assert!(err.contains(fix), "{fix}: {err}");
    }
    // No journal or lake was written by a failed check.
    assert!(!dir.path().join("sluice-journal").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn t_rest_check_and_run_refuse_a_template_naming_a_missing_column() {
    let apis = Apis::from_env();
    let db = admin().await;
    let p = Pipeline::new("t_rest_cols", &db).await;
    db.batch_execute(
        "CREATE TABLE t_rest_cols.customers (id bigint PRIMARY KEY, email text, bio text);
         ALTER TABLE t_rest_cols.customers OWNER TO sluice;",
    )
    .await
    .unwrap();
    let config = p.config(&["customers"], "");
    add_kinto_sink(&config, &apis, "t-rest-cols", "t_rest_cols.customers");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("{bio}", "{biography}");
    std::fs::write(&config, text).unwrap();
    for command in ["check", "run"] {
        let out = sluice_with_tokens(&apis)
            .args([command, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 2, "{command}: {err}");
        for l in lines {
            assert!(
                l.contains("names column {biography}, which table t_rest_cols.customers does not have: use one of id, email, bio"),
                "{command}: {l}"
            );
        }
    }
    // The refused run created no slot and wrote no lake.
    let slots = db
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'sluice_t_rest_cols'",
            &[],
        )
        .await
        .unwrap();
    assert!(slots.is_empty());
    assert!(!p.lake().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn t_rest_without_a_delta_sink_the_changelog_is_a_local_journal() {
    let apis = Apis::from_env();
    let db = admin().await;
    let p = Pipeline::new("t_rest_journal", &db).await;
    apis.reset_kinto("t-rest-journal").await;
    db.batch_execute(
        "CREATE TABLE t_rest_journal.customers (id bigint PRIMARY KEY, email text, bio text);
         ALTER TABLE t_rest_journal.customers OWNER TO sluice;
         INSERT INTO t_rest_journal.customers SELECT g, 'c' || g || '@example.com', 'b' FROM generate_series(1, 20) g;",
    )
    .await
    .unwrap();
    // Only a REST sink: no kind = "delta" block, a journal directory instead.
    let config = p.config(&["customers"], "");
    let journal = p.dir.path().join("journal");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.split("[[sinks]]").next().unwrap().replace(
        "[pipeline]\n",
        &format!("[pipeline]\njournal = \"{}\"\n", journal.display()),
    );
    std::fs::write(&config, text).unwrap();
    add_kinto_sink(&config, &apis, "t-rest-journal", "t_rest_journal.customers");
    run_caught_up(&apis, &config);
    db.batch_execute(
        "UPDATE t_rest_journal.customers SET email = 'x@example.com' WHERE id <= 5;
         DELETE FROM t_rest_journal.customers WHERE id > 15;",
    )
    .await
    .unwrap();
    run_caught_up(&apis, &config);
    let kinto = apis.kinto_rows("t-rest-journal").await;
    assert_eq!(kinto.len(), 15);
    assert_eq!(kinto[&3]["email"], "x@example.com");
    assert_eq!(kinto[&10]["email"], "c10@example.com");
    // The journal is a changelog like any: a Delta table per source table, and the cursor.
    let rows = crate::support::read_delta(&journal.join("t_rest_journal").join("customers"), None);
    assert_eq!(rows.len(), 20 + 5 + 5);
    assert!(journal
        .join("_sluice_cursors/t_rest_journal/kinto.json")
        .is_file());
}
