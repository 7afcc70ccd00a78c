//! Shared test set-up: the dev database (scripts/dev-db.sh), per-test names, running the
//! real `sluice` binary, and reading Delta tables back with an independent reader.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tokio_postgres::{Client, NoTls};

pub const PORT: u16 = 54329;
pub const PASSWORD: &str = "sluice-dev-password";

/// Superuser connection for set-up. Fails loudly when the dev database is not running.
pub async fn admin() -> Client {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={PORT} user=postgres dbname=shop"),
        NoTls,
    )
    .await
    .unwrap_or_else(|e| {
        panic!("the dev database is not reachable on 127.0.0.1:{PORT} ({e}): run scripts/dev-db.sh start")
    });
    tokio::spawn(conn);
    client
}

/// A test's own pipeline: names, temp dir with a config, the lake.
pub struct Pipeline {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Pipeline {
    /// Drop leftovers of an earlier run of the same test (slot, publication, schema).
    pub async fn new(name: &str, admin: &Client) -> Self {
        admin
            .batch_execute(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'sluice_{name}';
                 DROP PUBLICATION IF EXISTS sluice_{name};
                 DROP SCHEMA IF EXISTS {name} CASCADE;
                 CREATE SCHEMA {name} AUTHORIZATION sluice;"
            ))
            .await
            .expect("reset test schema");
        Pipeline {
            name: name.to_string(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    /// Write `sluice.toml` for `tables` (names inside the test's schema) and return its path.
    pub fn config(&self, tables: &[&str], extra_source: &str) -> PathBuf {
        let tables: Vec<String> = tables
            .iter()
            .map(|t| format!("\"{}.{t}\"", self.name))
            .collect();
        let text = format!(
            "[pipeline]\nname = \"{name}\"\n\n[source]\nkind = \"postgres\"\nurl = \"postgres://sluice@127.0.0.1:{PORT}/shop?sslmode=require\"\ntables = [{tables}]\n{extra_source}\n\n[[sinks]]\nkind = \"delta\"\npath = \"{lake}\"\nmax_batch_rows = 20000\nmax_batch_latency = \"100ms\"\n",
            name = self.name,
            tables = tables.join(", "),
            lake = self.lake().display(),
        );
        let path = self.dir.path().join("sluice.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Rows of the changelog table of `table`, sorted by position.
    pub fn rows(&self, table: &str) -> Vec<Value> {
        read_delta(&self.lake().join(&self.name).join(table), None)
    }
}

/// Point a config file at another server or role.
pub fn set_url(config: &Path, url: &str) {
    let text = std::fs::read_to_string(config).expect("read config");
    let start = text.find("url = ").expect("config has a url");
    let end = start + text[start..].find('\n').expect("url line ends");
    let text = format!("{}url = \"{url}\"{}", &text[..start], &text[end..]);
    std::fs::write(config, text).expect("write config");
}

/// The `sluice` command with the dev password in its environment.
pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_SOURCE_PASSWORD", PASSWORD)
        .env("SLUICE_LOG", "warn");
    cmd
}

/// Run `sluice ARGS --config CONFIG` to completion.
pub fn run_sluice(args: &[&str], config: &Path) -> Output {
    sluice()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("spawn sluice")
}

/// Assert success and return stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "sluice failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Read a Delta table with the Python `deltalake` package (an independent implementation).
/// `SLUICE_PYTHON` (set by scripts/test.sh) names a Python that has it.
pub fn read_delta(path: &Path, version: Option<u64>) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_delta.py");
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(path);
    if let Some(v) = version {
        cmd.arg(v.to_string());
    }
    let out = cmd
        .output()
        .expect("run tests/read_delta.py: set SLUICE_PYTHON or source scripts/reader-env.sh");
    assert!(
        out.status.success(),
        "reading {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json row"))
        .collect()
}

/// `(op, id)` of each row, for compact assertions.
pub fn ops(rows: &[Value]) -> Vec<(String, i64)> {
    rows.iter()
        .map(|r| {
            (
                r["_sluice_op"].as_str().unwrap_or("?").to_string(),
                r["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The `error: ` lines of a command's stderr.
pub fn error_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

/// Assert that the command failed with exactly one error line containing each of `expected`;
/// returns that line.
pub fn one_error(output: &Output, expected: &[&str]) -> String {
    assert!(!output.status.success(), "expected a failure: {expected:?}");
    let errors = error_lines(output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    for e in expected {
        assert!(errors[0].contains(e), "{e:?} not in {}", errors[0]);
    }
    errors[0].clone()
}

/// Wait (polling the catalog) until the replication slot exists.
pub async fn wait_for_slot(db: &Client, slot: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("read slots")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slot {slot} never appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The slot's confirmed flush position.
pub async fn confirmed_flush(db: &Client, slot: &str) -> replication::Lsn {
    let text: String = db
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("read slot")
        .get(0);
    text.parse().expect("lsn")
}

/// Stop a running `sluice run` with SIGTERM; it must exit 0.
pub fn terminate(mut child: std::process::Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let status = child.wait().expect("wait for sluice");
    assert!(
        status.success(),
        "SIGTERM must end with exit code 0, got {status}"
    );
}

/// Start `sluice run --config CONFIG` in the background, its output discarded.
pub fn spawn_run(config: &Path) -> std::process::Child {
    sluice()
        .args(["run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sluice run")
}

/// Wait (polling) until `path` exists; `what` names the condition in the failure.
pub async fn wait_for_file(path: &Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {} never appeared",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The peak RSS a `sluice run` logged at exit (`peak_rss_bytes=`, info level).
pub fn peak_rss(stderr: &str) -> u64 {
    stderr
        .split("peak_rss_bytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no peak_rss_bytes in: {stderr}"))
}
