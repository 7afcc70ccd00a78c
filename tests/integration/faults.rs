//! Riding through faults: a test-owned TCP proxy between Sluice and its database cuts every
//! connection through it 20 times while a writer inserts rows (and PostgreSQL restarts
//! mid-stream): every row lands in the changelog exactly once, and each cut shows in
//! `sluice_source_retries_total` on the metrics endpoint before the next one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::hub_webhook::Running;
use crate::metrics::{free_port, get, value};
use crate::mysql_support::{admin_at, exec, MyPipeline, MY_PORT};
use crate::support::{read_delta, sluice};

/// The PostgreSQL cluster the test may restart (dev-db.sh's small one), shared with the WAL
/// guard test, which must not see it restart.
pub(crate) static SMALL_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
pub(crate) const SMALL_PORT: u16 = 54331;

/// Cuts in each test.
const CUTS: usize = 20;

/// A TCP proxy to `127.0.0.1:to` whose live connections can all be cut at once.
struct Proxy {
    port: u16,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let conns = live.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        });
        Proxy { port, live, accept }
    }

    /// Closes every connection open through the proxy (both sides see it end); how many.
    fn cut(&self) -> usize {
        let mut conns = self.live.lock().unwrap();
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns.drain(..) {
            c.abort();
        }
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A counter of the scrape at `base`, 0 when absent.
async fn counter(base: &str, name: &str, labels: &[&str]) -> f64 {
    value(&get(&format!("{base}/metrics")).await.1, name, labels).unwrap_or(0.0)
}

/// Waits until `check` holds, up to `secs` seconds; `what` names it in the failure, with the
/// end of Sluice's log.
async fn until<F, Fut>(log: &Path, what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        if Instant::now() >= deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            panic!("timed out waiting for {what}; the end of sluice's log:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sluice run` with its log in `log`.
fn spawn_run(config: &Path, log: &Path) -> Running {
    Running::new(
        sluice()
            .args(["run", "--config"])
            .arg(config)
            .env("SLUICE_LOG", "sluice=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// A writer inserting ten rows per transaction (ids from 2 up) until stopped; `write(from)`
/// inserts ids `from..from + 10`, skipping those already there (so a commit whose answer was
/// lost in a cut is not written twice), and says whether it committed; a failed write is
/// tried again (it reconnects). Ends with the last id written.
fn spawn_writer<W, Fut>(write: W) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>)
where
    W: Fn(i64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut next = 2i64;
        while !s.load(Ordering::Relaxed) {
            if write(next).await {
                next += 10;
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        next - 1
    });
    (stop, task)
}

/// The ids of the changelog's inserts, with how often each appears.
fn inserts(table: &Path) -> BTreeMap<i64, usize> {
    let mut ids = BTreeMap::new();
    for row in read_delta(table, None) {
        if row["_sluice_op"] == "c" {
            *ids.entry(row["id"].as_i64().unwrap()).or_default() += 1;
        }
    }
    ids
}

/// Cuts the proxy's connections `CUTS` times while the writer writes (and halfway, runs
/// `restart`, which cuts them its own way), each time waiting for streaming to have resumed
/// before and for the retry to be counted after.
async fn cut_repeatedly(
    proxy: &Proxy,
    base: &str,
    table_label: &str,
    restart: Option<fn()>,
    log: &Path,
) {
    let mut faults: Vec<Option<fn()>> = vec![None; CUTS];
    if restart.is_some() {
        faults.insert(CUTS / 2, restart);
    }
    for (i, restart) in faults.into_iter().enumerate() {
        let retries = counter(base, "sluice_source_retries_total", &[]).await;
        let streamed = counter(base, "sluice_changes_total", &[table_label, "op=\"c\""]).await;
        until(
            log,
            &format!("rows streamed before fault {i}"),
            120,
            || async {
                counter(base, "sluice_changes_total", &[table_label, "op=\"c\""]).await > streamed
            },
        )
        .await;
        match restart {
            Some(restart) => restart(),
            None => {
                let cut = proxy.cut();
                assert!(
                    cut > 0,
                    "fault {i}: nothing was connected through the proxy"
                );
            }
        }
        until(
            log,
            &format!("fault {i} counted as a source retry"),
            120,
            || async { counter(base, "sluice_source_retries_total", &[]).await > retries },
        )
        .await;
    }
}

/// Stops the writer, waits until the changelog holds every row once, stops Sluice.
async fn finish(
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<i64>,
    base: &str,
    table_label: &str,
    table: &Path,
    child: Running,
    log: &Path,
) {
    stop.store(true, Ordering::Relaxed);
    let last = writer.await.unwrap();
    until(log, "every row streamed", 120, || async {
        counter(base, "sluice_changes_total", &[table_label, "op=\"c\""]).await >= (last - 1) as f64
    })
    .await;
    drop(child);
    let ids = inserts(table);
    let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "rows written twice: {doubled:?}");
    let expected: Vec<i64> = (2..=last).collect();
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        expected,
        "rows lost"
    );
}

fn restart_small_cluster() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev-db.sh");
    let status = std::process::Command::new(script)
        .arg("restart-small")
        .stdout(Stdio::null())
        .status()
        .expect("dev-db.sh restart-small");
    assert!(
        status.success(),
        "restarting the small PostgreSQL cluster failed"
    );
}

async fn pg_connect(port: u16) -> Option<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=shop"),
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    Some(client)
}

#[tokio::test(flavor = "multi_thread")]
async fn t_faults_postgres_rides_through_cuts_and_a_restart() {
    let _cluster = SMALL_CLUSTER.lock().await;
    let name = "t_faults";
    let db = crate::source_health::reset(SMALL_PORT, "shop", name).await;
    drop(db);
    let proxy = Proxy::start(SMALL_PORT).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nname = \"{name}\"\n[source]\nkind = \"postgres\"\nurl = \"postgres://sluice@127.0.0.1:{}/shop?sslmode=disable\"\ntables = [\"{name}.keyed\"]\n[[sinks]]\nkind = \"delta\"\npath = \"{}\"\nmax_batch_latency = \"100ms\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            proxy.port,
            dir.path().join("lake").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let child = spawn_run(&config, &log);
    let base = format!("http://127.0.0.1:{port}");
    let label = format!("table=\"{name}.keyed\"");
    until(&log, "the initial snapshot", 120, || async {
        counter(&base, "sluice_changes_total", &[&label, "op=\"r\""]).await >= 1.0
    })
    .await;
    let conn: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>> = Arc::default();
    let (stop, writer) = spawn_writer(move |from| {
        let conn = conn.clone();
        async move {
            let mut conn = conn.lock().await;
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                *conn = pg_connect(SMALL_PORT).await;
            }
            let Some(c) = conn.as_ref() else { return false };
            c.batch_execute(&format!(
                "INSERT INTO t_faults.keyed SELECT g, 'v' FROM generate_series({from}, {}) g ON CONFLICT (id) DO NOTHING",
                from + 9
            ))
            .await
            .is_ok()
        }
    });
    cut_repeatedly(&proxy, &base, &label, Some(restart_small_cluster), &log).await;
    let table = dir.path().join("lake").join(name).join("keyed");
    finish(stop, writer, &base, &label, &table, child, &log).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.matches("transient failure, retrying").count() >= CUTS,
        "each cut is logged as a retry: {text}"
    );
    assert!(!text.contains("sluice-dev-password"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn t_faults_mariadb_rides_through_cuts() {
    let _server = crate::mysql::SERVER.lock().await;
    let mut db = admin_at(MY_PORT).await;
    let p = MyPipeline::new("my_faults", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE my_faults.keyed (id bigint PRIMARY KEY, v text); INSERT INTO my_faults.keyed VALUES (1, 'one')",
    )
    .await;
    let proxy = Proxy::start(MY_PORT).await;
    let config = p.config_at(&["keyed"], proxy.port, 4711);
    let port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let log = p.lake().with_file_name("run.log");
    let child = spawn_run(&config, &log);
    let base = format!("http://127.0.0.1:{port}");
    let label = "table=\"my_faults.keyed\"".to_string();
    until(&log, "the initial snapshot", 120, || async {
        counter(&base, "sluice_changes_total", &[&label, "op=\"r\""]).await >= 1.0
    })
    .await;
    let conn: Arc<tokio::sync::Mutex<Option<mysql_async::Conn>>> = Arc::default();
    let (stop, writer) = spawn_writer(move |from| {
        let conn = conn.clone();
        async move {
            let mut conn = conn.lock().await;
            if conn.is_none() {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname("127.0.0.1")
                    .tcp_port(MY_PORT)
                    .user(Some("root"))
                    .prefer_socket(false);
                *conn = mysql_async::Conn::new(opts).await.ok();
            }
            let Some(c) = conn.as_mut() else { return false };
            let values: Vec<String> = (from..from + 10).map(|i| format!("({i}, 'v')")).collect();
            let sql = format!(
                "INSERT IGNORE INTO my_faults.keyed VALUES {}",
                values.join(", ")
            );
            let ok = c.query_drop(sql).await.is_ok();
            if !ok {
                *conn = None;
            }
            ok
        }
    });
    cut_repeatedly(&proxy, &base, &label, None, &log).await;
    // The probe reads the lag in bytes from the server here too (across the rotation).
    exec(&mut db, "FLUSH BINARY LOGS").await;
    until(&log, "sluice_lag_bytes", 60, || async {
        value(
            &get(&format!("{base}/metrics")).await.1,
            "sluice_lag_bytes",
            &[],
        )
        .is_some()
    })
    .await;
    finish(
        stop,
        writer,
        &base,
        &label,
        &p.lake().join("my_faults").join("keyed"),
        child,
        &log,
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.matches("transient failure, retrying").count() >= CUTS,
        "each cut is logged as a retry: {text}"
    );
}
