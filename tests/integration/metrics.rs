//! The metrics listener against a running pipeline: a scrape taken mid-workload passes
//! `promtool check metrics` (Debian's `prometheus` package) and its values equal the truth
//! (rows written per table and op, the durable position the slot confirms, a lag in bytes);
//! `/healthz` answers while the process lives; `/readyz` turns unready when the lag passes its
//! bound and ready again once a change is durable.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use crate::hub_webhook::Running;
use crate::support::{admin, sluice, Pipeline};

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// `name{labels} value` lines of a scrape, by series (labels as written).
fn series(scrape: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The value of the series of `name` whose labels include every one of `labels`.
pub(crate) fn value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    series(scrape)
        .into_iter()
        .find(|(k, _)| {
            (k == name || k.starts_with(&format!("{name}{{")))
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
}

fn promtool_check(scrape: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: apt-get install prometheus (scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_scrape_is_valid_and_true_and_probes_follow_the_lag() {
    let db = admin().await;
    let p = Pipeline::new("t_metrics", &db).await;
    db.batch_execute(
        "CREATE TABLE t_metrics.orders (id bigint PRIMARY KEY, n int);
         ALTER TABLE t_metrics.orders OWNER TO sluice;
         INSERT INTO t_metrics.orders SELECT g, 0 FROM generate_series(1, 10) g;",
    )
    .await
    .unwrap();
    let config = p.config(&["orders"], "");
    let port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\nready_max_lag = \"3s\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let _child = Running::new(
        sluice()
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut health = (0, String::new());
    for _ in 0..300 {
        health = get(&format!("{base}/healthz")).await;
        if health.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health, (200, "ok\n".to_string()));
    // The initial snapshot first (its 10 rows), so the workload is all streamed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while value(
        &get(&format!("{base}/metrics")).await.1,
        "sluice_changes_total",
        &["op=\"r\""],
    ) != Some(10.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A workload: 500 inserts, 200 updates, 50 deletes, in 25 transactions.
    let work = tokio::spawn(async move {
        let db = admin().await;
        for i in 0..25 {
            let b = 100 + i * 20;
            db.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO t_metrics.orders SELECT g, 0 FROM generate_series({b}, {}) g;
                 UPDATE t_metrics.orders SET n = 1 WHERE id BETWEEN {b} AND {};
                 DELETE FROM t_metrics.orders WHERE id BETWEEN {b} AND {};
                 COMMIT;",
                b + 19,
                b + 7,
                b + 1
            ))
            .await
            .unwrap();
        }
    });
    // Mid-workload: a valid scrape.
    let mut scrape = String::new();
    for _ in 0..600 {
        scrape = get(&format!("{base}/metrics")).await.1;
        if value(&scrape, "sluice_changes_total", &["op=\"c\""]).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    promtool_check(&scrape);
    work.await.unwrap();
    // Once everything is durable the counts equal what was written.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let last = get(&format!("{base}/metrics")).await.1;
        if value(
            &last,
            "sluice_changes_total",
            &["table=\"t_metrics.orders\"", "op=\"c\""],
        ) == Some(500.0)
        {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "counts never reached the workload:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    promtool_check(&last);
    let count = |op: &str| {
        value(
            &last,
            "sluice_changes_total",
            &["table=\"t_metrics.orders\"", &format!("op=\"{op}\"")],
        )
    };
    assert_eq!(
        (count("r"), count("u"), count("d")),
        (Some(10.0), Some(200.0), Some(50.0)),
        "{last}"
    );
    for name in [
        "sluice_durable_position",
        "sluice_source_position",
        "sluice_lag_seconds",
        "sluice_queue_budget_bytes",
        "sluice_process_resident_memory_bytes",
        "sluice_delta_commits_total",
        "sluice_commit_latency_seconds_count",
    ] {
        assert!(
            value(&last, name, &["pipeline=\"t_metrics\""]).is_some(),
            "{name} missing:\n{last}"
        );
    }
    // The durable position is what the slot confirms (once it has confirmed it).
    let durable = value(&last, "sluice_durable_position", &[]).unwrap() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flushed = crate::support::confirmed_flush(&db, "sluice_t_metrics").await;
        if flushed.0 >= durable {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot at {flushed}, durable {durable}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probe reads the lag in bytes from the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while value(
        &get(&format!("{base}/metrics")).await.1,
        "sluice_lag_bytes",
        &[],
    )
    .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no sluice_lag_bytes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle (no heartbeat configured): the lag in seconds passes 3 s and /readyz says so …
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let unready = loop {
        let r = get(&format!("{base}/readyz")).await;
        if r.0 == 503 {
            break r.1;
        }
        assert_eq!(r.0, 200, "{}", r.1);
        assert!(std::time::Instant::now() < deadline, "never unready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(unready.contains("above ready_max_lag"), "{unready}");
    // … and ready again once a new change is durable.
    db.batch_execute("INSERT INTO t_metrics.orders VALUES (100000, 0)")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get(&format!("{base}/readyz")).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status page of a running pipeline with a webhook sink, in headless Chromium (Debian's
/// `chromium`): the DOM has a row per table and per sink with their counts, and a screenshot
/// is taken (kept beside the test binary's temp files for a look).
#[tokio::test(flavor = "multi_thread")]
async fn status_page_renders_tables_and_sinks_in_headless_chromium() {
    use crate::receiver::{Receiver, ReceiverConfig};
    let db = admin().await;
    let p = Pipeline::new("t_page", &db).await;
    db.batch_execute(
        "CREATE TABLE t_page.orders (id bigint PRIMARY KEY, n int);
         ALTER TABLE t_page.orders OWNER TO sluice;
         INSERT INTO t_page.orders SELECT g, 0 FROM generate_series(1, 30) g;",
    )
    .await
    .unwrap();
    let rx = Receiver::start(ReceiverConfig::default()).await;
    let config = p.config(&["orders"], "");
    let port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[[sinks]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nmax_batch_rows = 10\n",
        rx.url("/hook")
    ));
    std::fs::write(&config, text).unwrap();
    let _child = Running::new(
        sluice()
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while value(
        &get(&format!("{base}/metrics")).await.1,
        "sluice_sink_delivered_total",
        &["sink=\"hook\""],
    ) != Some(30.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sink never delivered the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chromium = |extra: &[&str]| {
        let out = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=8000",
            ])
            .args(extra)
            .arg(format!("{base}/"))
            .output()
            .expect("chromium is missing: apt-get install chromium (scripts/test.sh does)");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(
        dom.contains("Sluice <span id=\"pipeline\">t_page</span>"),
        "{dom}"
    );
    assert!(
        dom.contains("<b id=\"state\" class=\"ok\">streaming</b>"),
        "{dom}"
    );
    let table_row = dom
        .split("<tr data-table=\"t_page.orders\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for the table:\n{dom}"));
    assert!(
        table_row.starts_with("<td>t_page.orders</td><td>30</td>"),
        "{table_row}"
    );
    let sink_row = dom
        .split("<tr data-sink=\"hook\">")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for the sink:\n{dom}"));
    assert!(sink_row.contains("<td>30</td>"), "delivered 30: {sink_row}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,800",
    ]);
    let png = std::fs::read(&shot).expect("no screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
