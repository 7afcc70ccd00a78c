//! The webhook hub sink end to end: PostgreSQL → Delta changelog → the test-owned receiver.
//!
//! Asserted as a user would look: every change of the changelog tables reaches the receiver
//! exactly once in effect (deduplicated by idempotency key, no change under two keys), per
//! key in commit order, signatures verified, no request before its `Retry-After`; through
//! SIGKILLs of `sluice run`; a stalled receiver holds back neither the lake nor the slot;
//! a refused change is parked with its status and body while the others flow, and
//! `sluice deliver --until caught-up` delivers on its own.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sinks::http::{idempotency_key, SigningKey};

use crate::receiver::{Receiver, ReceiverConfig, Storm};
use crate::support::{admin, confirmed_flush, ok, read_delta, sluice, terminate, Pipeline};

const SECRET_ENV: &str = "T_HUB_SECRET";
const SECRET: &str = "t-hub-signing-secret";

/// A change as (table, lsn, seq, id).
type Position = (String, u64, i64, i64);

/// Append a webhook sink to the pipeline's config.
fn add_webhook(config: &Path, url: &str, rows: usize, concurrency: usize) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\nsecret = {{ env = \"{SECRET_ENV}\" }}\nmax_batch_rows = {rows}\nmax_concurrency = {concurrency}\ntimeout = \"5s\"\n"
    ));
    std::fs::write(config, text).unwrap();
}

fn sluice_with_secret() -> std::process::Command {
    let mut cmd = sluice();
    cmd.env(SECRET_ENV, SECRET);
    cmd
}

/// A running `sluice run`, killed if the test panics before stopping it.
pub(crate) struct Running(Option<Child>);

impl Running {
    pub(crate) fn new(child: Child) -> Self {
        Running(Some(child))
    }

    /// The resident set size of the process now, from /proc.
    pub(crate) fn rss_bytes(&self) -> u64 {
        let pid = self.0.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn terminate(mut self) {
        if let Some(c) = self.0.take() {
            terminate(c);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn spawn(config: &Path) -> Running {
    Running(Some(spawn_child(config)))
}

fn spawn_child(config: &Path) -> Child {
    sluice_with_secret()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(config.with_extension("log"))
                .expect("log file"),
        )
        .spawn()
        .expect("spawn sluice run")
}

/// Every change in the changelog tables.
fn changelog(p: &Pipeline, tables: &[&str]) -> BTreeSet<Position> {
    changelog_at(&p.lake(), &p.name, tables)
}

/// Every change in the changelog tables `schema.tables` under `lake`.
fn changelog_at(lake: &Path, schema: &str, tables: &[&str]) -> BTreeSet<Position> {
    let mut out = BTreeSet::new();
    for t in tables {
        let path = lake.join(schema).join(t);
        if !path.join("_delta_log").is_dir() {
            continue;
        }
        for r in read_delta(&path, None) {
            out.insert((
                format!("{schema}.{t}"),
                r["_sluice_lsn"].as_u64().unwrap(),
                r["_sluice_seq"].as_i64().unwrap(),
                r["id"].as_i64().unwrap(),
            ));
        }
    }
    out
}

fn events(body: &Value) -> Vec<Position> {
    body["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["table"].as_str().unwrap().to_string(),
                        e["position"]["lsn"].as_u64().unwrap(),
                        e["position"]["seq"].as_i64().unwrap(),
                        e["row"]["id"].as_i64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The changes of the first acceptance of each key; panics if one change came under two keys.
fn delivered(rx: &Receiver) -> BTreeSet<Position> {
    let mut out = BTreeSet::new();
    for r in rx.deliveries().values() {
        for e in events(&r.body) {
            assert!(
                out.insert(e.clone()),
                "change {e:?} delivered under two keys"
            );
        }
    }
    out
}

/// Per (table, id): first acceptances arrive in increasing position.
fn assert_order_per_key(rx: &Receiver) {
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<(String, i64), (u64, i64)> = HashMap::new();
    for r in rx.requests() {
        if r.answer != crate::receiver::Answer::Accepted
            || !seen.insert(r.idempotency_key.clone().unwrap_or_default())
        {
            continue;
        }
        for (table, lsn, seq, id) in events(&r.body) {
            if let Some(prev) = last.insert((table.clone(), id), (lsn, seq)) {
                assert!(
                    prev < (lsn, seq),
                    "{table} id {id}: {lsn}/{seq} after {prev:?}"
                );
            }
        }
    }
}

pub(crate) async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_tables(db: &tokio_postgres::Client, schema: &str, tables: &[&str]) {
    for t in tables {
        db.batch_execute(&format!(
            "CREATE TABLE {schema}.{t} (id bigint PRIMARY KEY, v int, note text);
             ALTER TABLE {schema}.{t} OWNER TO sluice;
             INSERT INTO {schema}.{t} SELECT g, 0, 'seed' FROM generate_series(1, 5) g;"
        ))
        .await
        .unwrap();
    }
}

/// Transaction `i` of the workload: inserts into both tables, updates and deletes earlier rows.
fn workload_sql(schema: &str, i: i64) -> String {
    let base = 100 + i * 3;
    format!(
        "BEGIN;
         INSERT INTO {schema}.a VALUES ({base}, 0, 'x'), ({}, 0, 'y');
         INSERT INTO {schema}.b VALUES ({base}, 0, 'x');
         UPDATE {schema}.a SET v = v + 1 WHERE id IN ({}, {});
         UPDATE {schema}.b SET v = v + 1, note = 'u' WHERE id = {};
         DELETE FROM {schema}.a WHERE id = {};
         COMMIT;",
        base + 1,
        (i % 5) + 1,
        base,
        (i % 5) + 1,
        base + 1,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn t_hub_every_change_once_in_key_order_through_faults_and_sigkills() {
    let db = admin().await;
    let p = Pipeline::new("t_hub_kill", &db).await;
    create_tables(&db, "t_hub_kill", &["a", "b"]).await;
    let rx = Receiver::start(ReceiverConfig {
        secret: Some(SigningKey::from_secret(SECRET).unwrap()),
        rate_per_sec: Some(40),
        retry_after_secs: Some(1),
        storms: vec![Storm {
            status: 503,
            from: Duration::from_secs(3),
            until: Duration::from_secs(5),
        }],
        error_fraction: 0.05,
        reset_fraction: 0.05,
        seed: 11,
        retry_after_grace: Some(Duration::from_millis(250)),
        ..ReceiverConfig::default()
    })
    .await;
    let rx_started = Instant::now();
    // When each `sluice run` started, from the receiver's start: a new process cannot know
    // the Retry-After its killed predecessor was given.
    let mut restarts: Vec<Duration> = Vec::new();
    let config = p.config(&["a", "b"], "");
    add_webhook(&config, &rx.url("/hook"), 3, 4);

    let mut child = spawn(&config);
    crate::support::wait_for_slot(&db, "sluice_t_hub_kill").await;
    wait_until("the initial snapshot in the lake", 60, || {
        changelog(&p, &["a", "b"]).len() == 10
    })
    .await;
    let work = tokio::spawn(async move {
        let db = admin().await;
        for i in 0..60 {
            db.batch_execute(&workload_sql("t_hub_kill", i))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Kill while deliveries are happening: each time a few more requests were accepted.
    for _ in 0..4 {
        let before = rx.counts().accepted;
        wait_until("deliveries before a kill", 90, || {
            rx.counts().accepted >= before + 5
        })
        .await;
        child.kill();
        restarts.push(rx_started.elapsed());
        child = spawn(&config);
    }
    work.await.unwrap();
    let want = 10 + 60 * 7;
    wait_until("the lake to hold the whole workload", 120, || {
        changelog(&p, &["a", "b"]).len() == want
    })
    .await;
    let expected = changelog(&p, &["a", "b"]);
    wait_until("every change delivered", 180, || {
        delivered(&rx).len() >= expected.len()
    })
    .await;
    child.terminate();
    // The whole workload is in the lake, and the receiver holds each change exactly once.
    let lake = changelog(&p, &["a", "b"]);
    assert!(
        lake.len() >= 10 + 60 * 7,
        "lake holds {} changes",
        lake.len()
    );
    assert_eq!(delivered(&rx), lake);
    assert_order_per_key(&rx);
    let c = rx.counts();
    assert_eq!(c.bad_signatures, 0, "{c:?}");
    let violations: Vec<Duration> = rx
        .requests()
        .iter()
        .filter(|r| r.violation)
        .map(|r| r.at)
        .filter(|at| {
            !restarts
                .iter()
                .any(|s| *at >= *s && *at < *s + Duration::from_millis(1200))
        })
        .collect();
    assert!(
        violations.is_empty(),
        "requests inside a Retry-After: {violations:?} {c:?}"
    );
    assert!(
        c.server_errors + c.resets > 0,
        "faults were injected: {c:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn t_hub_stalled_receiver_holds_back_neither_lake_nor_slot() {
    let db = admin().await;
    let p = Pipeline::new("t_hub_stall", &db).await;
    create_tables(&db, "t_hub_stall", &["a", "b"]).await;
    let rx = Receiver::start(ReceiverConfig {
        secret: Some(SigningKey::from_secret(SECRET).unwrap()),
        ..ReceiverConfig::default()
    })
    .await;
    rx.stall();
    let config = p.config(&["a", "b"], "");
    add_webhook(&config, &rx.url("/hook"), 500, 4);
    let child = spawn(&config);
    crate::support::wait_for_slot(&db, "sluice_t_hub_stall").await;
    wait_until("the initial snapshot in the lake", 60, || {
        changelog(&p, &["a", "b"]).len() == 10
    })
    .await;
    let before = confirmed_flush(&db, "sluice_t_hub_stall").await;
    let rss_before = child.rss_bytes();
    for i in 0..30 {
        db.batch_execute(&workload_sql("t_hub_stall", i))
            .await
            .unwrap();
    }
    // A backlog far larger than the sink's window: 100,000 rows of about 200 bytes.
    for i in 0..10 {
        db.batch_execute(&format!(
            "INSERT INTO t_hub_stall.a SELECT g, 0, repeat('z', 200) FROM generate_series({}, {}) g",
            10_000 + i * 10_000,
            10_000 + i * 10_000 + 9_999
        ))
        .await
        .unwrap();
    }
    // While the receiver answers nothing, the lake takes every change and the slot moves.
    let want = 10 + 30 * 7 + 100_000;
    wait_until("the lake to keep up", 60, || {
        changelog(&p, &["a", "b"]).len() == want
    })
    .await;
    let lake_max = changelog(&p, &["a", "b"])
        .iter()
        .map(|c| c.1)
        .max()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let flushed = confirmed_flush(&db, "sluice_t_hub_stall").await;
        if flushed > before && flushed.0 >= lake_max {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot did not advance: {flushed} (lake at {lake_max})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(rx.counts().accepted, 0, "the receiver is stalled");
    // Memory is bounded by the sink's window, not by the backlog (which as decoded JSON
    // changes would take hundreds of MB).
    let rss_stalled = child.rss_bytes();
    assert!(
        rss_stalled < rss_before + (64 << 20),
        "RSS grew from {} MiB to {} MiB with the endpoint stalled",
        rss_before >> 20,
        rss_stalled >> 20
    );
    // `sluice status` shows the running sink's retries and its lag.
    let status = ok(sluice_with_secret()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let line = status
        .lines()
        .find(|l| l.starts_with("hub sink hook:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        line.contains(" in flight ") && line.contains(" concurrency limit "),
        "{line}"
    );
    // Stalled requests time out and are retried (between retries none may be in flight).
    assert!(!line.contains(" retries 0 "), "{line}");
    assert!(!line.contains("lag 0 changes"), "{line}");
    // After release the backlog drains.
    rx.release();
    let expected = changelog(&p, &["a", "b"]);
    wait_until("the backlog to drain", 120, || delivered(&rx) == expected).await;
    child.terminate();
    let status = ok(sluice_with_secret()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    assert!(
        status.contains("lag 0 changes") && status.contains("(not running)"),
        "{status}"
    );
    assert_order_per_key(&rx);
    assert_eq!(rx.counts().bad_signatures, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn t_hub_refused_change_parked_others_flow_standalone_deliver() {
    let db = admin().await;
    let p = Pipeline::new("t_hub_park", &db).await;
    create_tables(&db, "t_hub_park", &["a", "b"]).await;
    // Fill the lake with the pipeline alone first.
    let config = p.config(&["a", "b"], "");
    ok(sluice_with_secret()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    for i in 0..10 {
        db.batch_execute(&workload_sql("t_hub_park", i))
            .await
            .unwrap();
    }
    ok(sluice_with_secret()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    assert!(p.lake().join("_sluice_state/t_hub_park.hub.json").exists());
    let lake = changelog(&p, &["a", "b"]);
    // Refuse the one-change request of the insert of a.id = 103.
    let victim = lake
        .iter()
        .find(|c| c.0 == "t_hub_park.a" && c.3 == 103)
        .unwrap()
        .clone();
    let key = idempotency_key(
        "t_hub_park",
        "hook",
        "t_hub_park.a",
        (victim.1, victim.2),
        (victim.1, victim.2),
    );
    let rx = Receiver::start(ReceiverConfig {
        secret: Some(SigningKey::from_secret(SECRET).unwrap()),
        reject_keys: HashMap::from([(key, r#"{"error":"invalid email for 103"}"#.to_string())]),
        ..ReceiverConfig::default()
    })
    .await;
    add_webhook(&config, &rx.url("/hook"), 1, 4);
    let out = sluice_with_secret()
        .args([
            "deliver",
            "--sink",
            "hook",
            "--until",
            "caught-up",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    ok(out);
    let mut others = lake.clone();
    others.remove(&victim);
    assert_eq!(delivered(&rx), others, "every other change flowed");
    assert_eq!(rx.counts().rejected, 1);
    assert_order_per_key(&rx);
    let dead = read_delta(&p.lake().join("_sluice_dead_letters/t_hub_park/hook"), None);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(dead[0]["table"], "t_hub_park.a");
    assert_eq!(dead[0]["lsn"].as_u64(), Some(victim.1));
    assert!(dead[0]["response"]
        .as_str()
        .unwrap()
        .contains("invalid email"));
    assert!(dead[0]["key"].as_str().unwrap().contains("103"));
    // Delivering again finds nothing new; status shows the cursor and the parked change.
    let again = sluice_with_secret()
        .args([
            "deliver",
            "--sink",
            "hook",
            "--until",
            "caught-up",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    ok(again);
    assert_eq!(rx.counts().requests, others.len() + 1);
    let status = ok(sluice_with_secret()
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let line = status
        .lines()
        .find(|l| l.starts_with("hub sink hook"))
        .unwrap_or_else(|| panic!("no hub sink line in {status}"));
    assert!(
        line.contains("lag 0 changes") && line.contains("parked 1"),
        "{line}"
    );
    let json = ok(sluice_with_secret()
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let hook = &json["sinks"][0];
    assert_eq!(hook["name"], "hook", "{json}");
    assert_eq!(hook["lag_changes"], 0, "{json}");
    assert_eq!(hook["parked"], 1, "{json}");
    assert_eq!(
        hook["delivered"].as_u64(),
        Some(others.len() as u64),
        "{json}"
    );
    assert_eq!(hook["running"], false, "{json}");
}

#[test]
fn t_hub_check_reports_webhook_problems_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        "[pipeline]\nname = \"t_hub_check\"\n[source]\nkind = \"postgres\"\nurl = \"postgres://sluice@127.0.0.1:1/shop\"\ntables = [\"public.orders\"]\n[[sinks]]\nkind = \"delta\"\npath = \"./lake\"\n[[sinks]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"not a url\"\nsecret = { env = \"T_HUB_SURELY_UNSET\" }\nrate_limit = [\"lots\"]\nmax_batch_rows = 0\n",
    )
    .unwrap();
    let out = sluice()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let errors = crate::support::error_lines(&out);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (e, fix) in
        errors
            .iter()
            .zip(["https://", "export T_HUB_SURELY_UNSET", "between 1", "20/s"])
    {
        assert!(e.contains(fix), "{fix:?} not in {e}");
    }
}

/// The accepted bodies by idempotency key, without the per-attempt parts.
fn bodies(rx: &Receiver) -> std::collections::BTreeMap<String, Value> {
    rx.deliveries()
        .into_iter()
        .map(|(k, r)| (k, r.body))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn t_hub_standalone_deliver_sends_what_run_sends() {
    let db = admin().await;
    let p = Pipeline::new("t_hub_same", &db).await;
    create_tables(&db, "t_hub_same", &["a", "b"]).await;
    let in_process = Receiver::start(ReceiverConfig {
        secret: Some(SigningKey::from_secret(SECRET).unwrap()),
        ..ReceiverConfig::default()
    })
    .await;
    let config = p.config(&["a", "b"], "");
    add_webhook(&config, &in_process.url("/hook"), 4, 3);
    ok(sluice_with_secret()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    for i in 0..15 {
        db.batch_execute(&workload_sql("t_hub_same", i))
            .await
            .unwrap();
    }
    // In process: `run --until caught-up` delivers up to the final hub position before exiting.
    ok(sluice_with_secret()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let lake = changelog(&p, &["a", "b"]);
    assert_eq!(lake.len(), 10 + 15 * 7);
    assert_eq!(delivered(&in_process), lake);
    // Standalone, from the beginning, to another receiver: the same keys and bodies.
    let standalone = Receiver::start(ReceiverConfig {
        secret: Some(SigningKey::from_secret(SECRET).unwrap()),
        ..ReceiverConfig::default()
    })
    .await;
    std::fs::remove_file(p.lake().join("_sluice_cursors/t_hub_same/hook.json")).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&in_process.url("/hook"), &standalone.url("/hook"));
    std::fs::write(&config, text).unwrap();
    ok(sluice_with_secret()
        .args([
            "deliver",
            "--sink",
            "hook",
            "--until",
            "caught-up",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap());
    assert_eq!(bodies(&standalone), bodies(&in_process));
    assert_eq!(standalone.counts().requests, standalone.deliveries().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn t_hub_mariadb_changes_delivered_once_in_key_order() {
    use crate::mysql_support::{admin_at, exec, MyPipeline, MY_PORT};
    let mut db = admin_at(MY_PORT).await;
    let p = MyPipeline::new("t_hub_my", &mut db).await;
    for t in ["a", "b"] {
        exec(
            &mut db,
            &format!("CREATE TABLE t_hub_my.{t} (id bigint PRIMARY KEY, v int, note text); INSERT INTO t_hub_my.{t} VALUES (1, 0, 'seed'), (2, 0, 'seed')"),
        )
        .await;
    }
    let rx = Receiver::start(ReceiverConfig {
        secret: Some(SigningKey::from_secret(SECRET).unwrap()),
        error_fraction: 0.1,
        seed: 5,
        ..ReceiverConfig::default()
    })
    .await;
    let config = p.config(&["a", "b"], 5190);
    add_webhook(&config, &rx.url("/hook"), 3, 4);
    ok(sluice_with_secret()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    for i in 0..10 {
        let base = 100 + i * 2;
        exec(
            &mut db,
            &format!(
                "START TRANSACTION;
                 INSERT INTO t_hub_my.a VALUES ({base}, 0, 'x'), ({}, 0, 'y');
                 INSERT INTO t_hub_my.b VALUES ({base}, 0, 'x');
                 UPDATE t_hub_my.a SET v = v + 1 WHERE id IN (1, {base});
                 UPDATE t_hub_my.b SET id = id + 1000 WHERE id = {base};
                 DELETE FROM t_hub_my.a WHERE id = {};
                 COMMIT;",
                base + 1,
                base + 1
            ),
        )
        .await;
    }
    ok(sluice_with_secret()
        .args(["run", "--until", "caught-up", "--config"])
        .arg(&config)
        .output()
        .unwrap());
    let lake = changelog_at(&p.lake(), "t_hub_my", &["a", "b"]);
    assert!(lake.len() >= 4 + 10 * 7, "{}", lake.len());
    assert_eq!(delivered(&rx), lake);
    assert_order_per_key(&rx);
    assert_eq!(rx.counts().bad_signatures, 0);
}
