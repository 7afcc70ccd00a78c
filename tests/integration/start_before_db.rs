//! A sidecar started before its database accepts connections: `sluice run` waits, logging
//! each retry (never the password), and streams once the database answers; `sluice check`
//! fails at once with one line. For both sources, with a refused port (later opened by a
//! test-owned TCP forwarder to the real server) and with a host name that does not resolve.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::net::{TcpListener, TcpStream};

use crate::mysql_support::{admin_at, exec, MyPipeline, MY_PORT};
use crate::support::{admin, one_error, run_sluice, set_url, sluice, terminate, Pipeline, PORT};

/// A port on loopback where nothing listens (bound once by the OS, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// Forward every connection to `port` to the real server on `to`, until dropped.
async fn forward(port: u16, to: u16) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the forwarder");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

/// `sluice run` in the background with its log (warnings) going to `log`.
fn spawn_logged(config: &Path, log: &Path) -> Child {
    sluice()
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn sluice run")
}

/// Wait until `log` holds `needle` at least `times` times; the process must not have exited.
async fn wait_for_log(child: &mut Child, log: &Path, needle: &str, times: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sluice run exited ({status}) instead of waiting: {text}");
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not logged {times} times: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sluice check` fails at once with one line naming the address.
fn check_fails_fast(config: &Path, expected: &[&str]) {
    let started = Instant::now();
    let out = run_sluice(&["check"], config);
    one_error(&out, expected);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "check took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(crate::support::PASSWORD), "{stderr}");
}

/// Poll `rows` until it returns at least `n` rows.
async fn wait_rows(what: &str, log: &Path, n: usize, rows: impl Fn() -> usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: fewer than {n} rows: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn delta_rows(path: PathBuf) -> usize {
    if path.join("_delta_log").exists() {
        crate::support::read_delta(&path, None).len()
    } else {
        0
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn t_wait_postgres_run_waits_for_the_database_check_fails_fast() {
    let db = admin().await;
    let p = Pipeline::new("t_wait", &db).await;
    db.batch_execute(
        "SET ROLE sluice;
         CREATE TABLE t_wait.keyed (id int PRIMARY KEY, v text);
         INSERT INTO t_wait.keyed VALUES (1, 'before');
         RESET ROLE;",
    )
    .await
    .unwrap();
    let config = p.config(&["keyed"], "");

    // A host name that does not resolve: check fails at once, run keeps trying.
    set_url(
        &config,
        "postgres://sluice@sluice-no-such-host.invalid:5432/shop",
    );
    check_fails_fast(
        &config,
        &["cannot reach postgres at sluice-no-such-host.invalid:5432"],
    );
    let log = p.dir.path().join("dns.log");
    let mut child = spawn_logged(&config, &log);
    wait_for_log(&mut child, &log, "transient failure, retrying", 2).await;
    terminate(child);

    // A closed port: the same, then the port opens and the pipeline streams.
    let port = closed_port();
    set_url(&config, &format!("postgres://sluice@127.0.0.1:{port}/shop"));
    check_fails_fast(
        &config,
        &[&format!("cannot reach postgres at 127.0.0.1:{port}")],
    );
    let log = p.dir.path().join("run.log");
    let mut child = spawn_logged(&config, &log);
    let text = wait_for_log(&mut child, &log, "transient failure, retrying", 3).await;
    assert!(
        text.contains(&format!("cannot reach postgres at 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(!text.contains(crate::support::PASSWORD), "{text}");
    let forwarder = forward(port, PORT).await;
    let table = p.lake().join("t_wait").join("keyed");
    wait_rows("the initial snapshot", &log, 1, || {
        delta_rows(table.clone())
    })
    .await;
    db.batch_execute("INSERT INTO t_wait.keyed VALUES (2, 'after')")
        .await
        .unwrap();
    wait_rows("the streamed insert", &log, 2, || delta_rows(table.clone())).await;
    terminate(child);
    forwarder.abort();
    let rows = p.rows("keyed");
    let ops = crate::support::ops(&rows);
    assert_eq!(ops, vec![("r".into(), 1), ("c".into(), 2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn t_wait_mysql_run_waits_for_the_database_check_fails_fast() {
    let mut db = admin_at(MY_PORT).await;
    let p = MyPipeline::new("t_wait_my", &mut db).await;
    exec(
        &mut db,
        "CREATE TABLE t_wait_my.keyed (id int PRIMARY KEY, v text);
         INSERT INTO t_wait_my.keyed VALUES (1, 'before');",
    )
    .await;

    let config = p.config_url(
        &["keyed"],
        "mysql://sluice@sluice-no-such-host.invalid:3306/t_wait_my",
        5201,
        "",
    );
    check_fails_fast(&config, &["sluice-no-such-host.invalid"]);
    let log = p.lake().with_extension("dns.log");
    let mut child = spawn_logged(&config, &log);
    wait_for_log(&mut child, &log, "transient failure, retrying", 2).await;
    terminate(child);

    let port = closed_port();
    let config = p.config_at(&["keyed"], port, 5201);
    check_fails_fast(&config, &[&format!("127.0.0.1:{port}")]);
    let log = p.lake().with_extension("run.log");
    let mut child = spawn_logged(&config, &log);
    let text = wait_for_log(&mut child, &log, "transient failure, retrying", 3).await;
    assert!(!text.contains(crate::support::PASSWORD), "{text}");
    let forwarder = forward(port, MY_PORT).await;
    wait_rows("the initial snapshot", &log, 1, || {
        p.rows_if_any("keyed").len()
    })
    .await;
    db.query_drop("INSERT INTO t_wait_my.keyed VALUES (2, 'after')")
        .await
        .unwrap();
    wait_rows("the streamed insert", &log, 2, || {
        p.rows_if_any("keyed").len()
    })
    .await;
    terminate(child);
    forwarder.abort();
    let ops = crate::support::ops(&p.rows("keyed"));
    assert_eq!(ops, vec![("r".into(), 1), ("c".into(), 2)]);
}
