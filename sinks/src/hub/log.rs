//! Reading one version of a changelog table's Delta log: the data files it adds and the
//! source commit position it carries (`txn` of the pipeline's appId).
//!
//! Reads `_delta_log/<version:020>.json` directly (newline-delimited actions, see the Delta
//! protocol, "Delta Log Entries"). The changelog sink never writes checkpoints or removes
//! files, so every version's entry is there. Malformed lines are an error, never a panic.

use std::path::{Path, PathBuf};

use replication::Lsn;
use serde_json::Value;

use crate::{Error, Result};

/// What one log version holds for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogVersion {
    /// The highest source commit position in it (`txn` version), if it carries one.
    pub position: Option<Lsn>,
    /// The data files it adds with `dataChange = true`, in log order.
    pub files: Vec<PathBuf>,
}

/// Version `version` of the table at `dir`; `None` if it does not exist (yet).
pub fn read_version(dir: &Path, version: u64, app_id: &str) -> Result<Option<LogVersion>> {
    let path = dir.join("_delta_log").join(format!("{version:020}.json"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    parse_version(&text, dir, app_id)
        .map(Some)
        .map_err(|reason| Error::Corrupt {
            path: path.display().to_string(),
            reason,
        })
}

fn parse_version(text: &str, dir: &Path, app_id: &str) -> std::result::Result<LogVersion, String> {
    let mut out = LogVersion {
        position: None,
        files: Vec::new(),
    };
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let action: Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(add) = action.get("add") {
            if add.get("dataChange").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let rel = add
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("line {}: add without path", n + 1))?;
            out.files.push(dir.join(percent_decode(rel)?));
        } else if let Some(txn) = action.get("txn") {
            if txn.get("appId").and_then(Value::as_str) == Some(app_id) {
                let v = txn
                    .get("version")
                    .and_then(Value::as_i64)
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| format!("line {}: txn without a version", n + 1))?;
                out.position = Some(Lsn(v as u64));
            }
        }
    }
    Ok(out)
}

/// Delta stores paths URI-encoded (RFC 2396).
fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad escape in path {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("path {s:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_adds_and_the_pipelines_txn() {
        let text = r#"{"commitInfo":{"sluice.commit_lsn":"0/10"}}
{"txn":{"appId":"other","version":99}}
{"txn":{"appId":"shop","version":16}}
{"add":{"path":"part-1%20a.parquet","dataChange":true}}
{"add":{"path":"compacted.parquet","dataChange":false}}
"#;
        let v = parse_version(text, Path::new("/l/t"), "shop").unwrap();
        assert_eq!(v.position, Some(Lsn(16)));
        assert_eq!(v.files, vec![PathBuf::from("/l/t/part-1 a.parquet")]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in [
            "{",
            "{\"add\":{}}",
            "{\"txn\":{\"appId\":\"shop\"}}",
            "{\"add\":{\"path\":\"%zz\"}}",
        ] {
            assert!(
                parse_version(text, Path::new("/"), "shop").is_err(),
                "{text}"
            );
        }
        for cut in 0..40 {
            let text = &"{\"add\":{\"path\":\"x.parquet\",\"dataChange\":true}}"[..cut];
            let _ = parse_version(text, Path::new("/"), "shop");
        }
    }
}
