//! The webhook benchmark's reference client (`scripts/bench-http.sh catchup`): the same
//! batches the webhook sink sends, POSTed by a plain reqwest loop with a fixed concurrency,
//! so the sink's catch-up rate can be compared with what HTTP alone allows on this machine.
//!
//! ```text
//!   lake ─▶ ChangelogReader ─▶ Batcher (same max rows/bytes) ─▶ webhook encode_batch
//!        (all bodies built in memory BEFORE the clock starts)
//!   clock ─▶ buffer_unordered(concurrency) of POST url (build_request: same headers, no
//!            signature) ─▶ every answer must be 200 ─▶ clock
//! ```
//!
//! The bodies are byte-equal to the sink's (same pipeline and sink name, same batch
//! boundaries from the start of the changelog), so the receiver's work per request is the
//! same. What the loop leaves out is exactly the sink's own cost: reading Parquet, building
//! the JSON, the runner's window and cursor, the rate limiter and the adaptive concurrency.
//!
//! With `--inline` the clock starts before reading instead: one plain thread reads and
//! encodes batch after batch into a channel of `concurrency` bodies while the loop posts
//! them. That is the same work as the sink's, in the simplest shape, and tells how much of
//! the gap is the work itself (Parquet → JSON) and how much the sink's structure.
//!
//! Usage: `baseline --lake DIR --pipeline P --sink S --table schema.table --url URL
//! [--rows 500] [--bytes 1048576] [--concurrency 32] [--inline]`; prints one JSON line
//! `{"changes":…,"requests":…,"seconds":…,"encode_seconds":…,"body_bytes":…}`
//! (`encode_seconds`: reading and encoding alone, before the clock; 0 with `--inline`).

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use replication::change::TableName;
use replication::Lsn;
use sinks::hub::{BatchLimits, Batcher, ChangelogReader, HubState, KeyColumns};
use sinks::webhook::{build_request, encode_batch, Encoded};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| arg(&args, name).ok_or_else(|| anyhow::anyhow!("{name} is required"));
    let lake = PathBuf::from(need("--lake")?);
    let pipeline = need("--pipeline")?;
    let sink = need("--sink")?;
    let table = TableName::parse(&need("--table")?)
        .ok_or_else(|| anyhow::anyhow!("--table must be schema.table"))?;
    let url = reqwest::Url::parse(&need("--url")?)?;
    let num = |name: &str, default: usize| -> anyhow::Result<usize> {
        Ok(arg(&args, name)
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let limits = BatchLimits {
        max_rows: num("--rows", 500)?,
        max_bytes: num("--bytes", 1 << 20)?,
    };
    let concurrency = num("--concurrency", 32)?;

    let inline = args.iter().any(|a| a == "--inline");
    let w = HubState::read(&lake, &pipeline)?
        .ok_or_else(|| anyhow::anyhow!("no hub file under {}", lake.display()))?
        .position;
    let reader = ChangelogReader::open(
        &lake,
        &pipeline,
        &[table],
        &KeyColumns::default(),
        (0, 0, String::new(), 0),
    );
    let mut batcher = Batcher::new(reader, limits);
    // Reads and encodes every batch into `send`, as (body, changes); stops when it says no.
    let mut produce = move |send: &dyn Fn((Encoded, usize)) -> bool| -> anyhow::Result<()> {
        while let Some(batch) = batcher.next_batch(Lsn(w))? {
            if !send((encode_batch(&pipeline, &sink, &batch), batch.changes.len())) {
                break;
            }
        }
        Ok(())
    };

    let t0 = Instant::now();
    let (producer, rx) = if inline {
        // At most `concurrency` bodies wait: the reader runs just ahead of the posts.
        let (tx, rx) = std::sync::mpsc::sync_channel(concurrency.max(1));
        let thread = std::thread::spawn(move || produce(&|item| tx.send(item).is_ok()));
        (Some(thread), rx)
    } else {
        let (all_tx, all_rx) = std::sync::mpsc::channel();
        produce(&|item| all_tx.send(item).is_ok())?;
        drop(all_tx);
        // Re-queue into a channel type shared with the inline path.
        let items: Vec<_> = all_rx.into_iter().collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(items.len().max(1));
        for item in items {
            tx.send(item).ok();
        }
        (None, rx)
    };
    let encode_seconds = if inline {
        0.0
    } else {
        t0.elapsed().as_secs_f64()
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (changes, requests, body_bytes, seconds) = runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_max_idle_per_host(concurrency)
            .build()?;
        let start = if inline { t0 } else { Instant::now() };
        // The receiving end of the producer, as a stream (a blocking recv off the workers).
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let bodies = futures::stream::unfold(rx, |rx| async move {
            let r = rx.clone();
            let next = tokio::task::spawn_blocking(move || r.lock().ok()?.recv().ok())
                .await
                .ok()
                .flatten()?;
            Some((next, rx))
        });
        let (mut changes, mut requests, mut body_bytes) = (0usize, 0usize, 0usize);
        {
            let answers = bodies
                .map(|(e, n): (Encoded, usize)| {
                    changes += n;
                    requests += 1;
                    body_bytes += e.body.len();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let request = build_request(&client, &url, &e, None, now);
                    async move {
                        // Read the (tiny) answer to the end, as the sink does, so the
                        // connection goes back to the pool.
                        let response = request.send().await?;
                        let status = response.status().as_u16();
                        response.bytes().await?;
                        anyhow::Ok(status)
                    }
                })
                .buffer_unordered(concurrency.max(1));
            futures::pin_mut!(answers);
            while let Some(answer) = answers.next().await {
                let status = answer?;
                anyhow::ensure!(status == 200, "the receiver answered {status}");
            }
        }
        anyhow::Ok((changes, requests, body_bytes, start.elapsed().as_secs_f64()))
    })?;
    if let Some(p) = producer {
        p.join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    }
    println!(
        "{}",
        serde_json::json!({
            "changes": changes,
            "requests": requests,
            "seconds": seconds,
            "encode_seconds": encode_seconds,
            "body_bytes": body_bytes,
            "inline": inline,
        })
    );
    Ok(())
}
