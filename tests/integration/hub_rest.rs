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
    ok(sluice_with_tokens(&apis)
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
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
