//! `switchyard index`: bulk indexing of a JSONL file through `POST /api/runs` (mode `index`), with a progress bar,
//! resumable. Each line is a document `{"id", "text", "metadata"}` (or `"media_ref"` in place of `"text"`).
//!
//! Progress is kept in a state file beside the input (`FILE.progress.json`): the byte offset of the first line not
//! yet acknowledged and a SHA-256 of everything before it. A run that stopped (interrupted, out of credits, a bad
//! line) continues from there; a file that grew continues with the new lines; a file whose indexed part changed is
//! refused unless `--restart`. Every batch carries an `Idempotency-Key` derived from its content, so a batch whose
//! answer was lost is re-sent without being indexed or charged twice.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct IndexArgs {
    pub url: String,
    pub api_key: String,
    pub model: String,
    pub scope: String,
    pub file: PathBuf,
    /// Documents per request.
    pub batch: usize,
    pub state_file: Option<PathBuf>,
    pub restart: bool,
    /// Draw the progress bar (on a terminal).
    pub progress: bool,
}

#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub documents: u64,
    pub chunks: u64,
    /// Millicredits charged by this run.
    pub credits_milli: i64,
    /// Documents skipped because an earlier run indexed them.
    pub already: u64,
}

#[derive(Serialize, Deserialize)]
struct Progress {
    model: String,
    scope: String,
    /// Bytes of the file indexed so far (whole lines).
    offset: u64,
    /// SHA-256 (hex) of those bytes.
    sha256: String,
    documents: u64,
}

/// Largest request body sent (the gateway's default limit is 1 MiB).
const MAX_BATCH_BYTES: usize = 900 * 1024;
const MAX_ATTEMPTS: u32 = 8;

fn state_path(args: &IndexArgs) -> PathBuf {
    args.state_file.clone().unwrap_or_else(|| {
        let mut name = args.file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".progress.json");
        args.file.with_file_name(name)
    })
}

fn save(path: &Path, progress: &Progress) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(progress).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A line of the file: where it ends (byte offset after its newline) and its document.
struct Line {
    end: u64,
    document: Value,
}

/// Parses the lines after `from`; a bad line is an error naming its number.
fn parse(bytes: &[u8], from: usize, first_line: usize) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    let mut at = from;
    let mut number = first_line;
    while at < bytes.len() {
        let end = bytes[at..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |p| at + p + 1);
        let text = std::str::from_utf8(&bytes[at..end]).map_err(|_| format!("line {number}: not UTF-8"))?;
        number += 1;
        if !text.trim().is_empty() {
            let document: Value =
                serde_json::from_str(text.trim()).map_err(|e| format!("line {}: not JSON: {e}", number - 1))?;
            if !document.is_object() {
                return Err(format!("line {}: a document must be a JSON object", number - 1));
            }
            lines.push(Line { end: end as u64, document });
        } else if let Some(last) = lines.last_mut() {
            last.end = end as u64;
        }
        at = end;
    }
    Ok(lines)
}

fn error_message(status: reqwest::StatusCode, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    format!("{status}: {message}")
}

/// Sends one batch, retrying what may pass (429, 5xx, connection errors) with backoff; answers the run.
async fn send(client: &reqwest::Client, args: &IndexArgs, documents: &[Value]) -> Result<Value, String> {
    let body = json!({"model": args.model, "mode": "index", "scope": args.scope, "input": {"documents": documents}});
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    hasher.update(&bytes);
    let key = format!("index-{}", &hex::encode(hasher.finalize())[..40]);
    let url = format!("{}/api/runs", args.url.trim_end_matches('/'));
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=MAX_ATTEMPTS {
        let sent = client
            .post(&url)
            .header("x-api-key", &args.api_key)
            .header("idempotency-key", &key)
            .header("content-type", "application/json")
            .body(bytes.clone())
            .send()
            .await;
        let retry_after = match sent {
            Ok(response) if response.status().is_success() => {
                return response.json().await.map_err(|e| format!("unreadable answer: {e}"))
            }
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = response.text().await.unwrap_or_default();
                let retryable = status.as_u16() == 429 || status.is_server_error();
                if !retryable || attempt == MAX_ATTEMPTS {
                    return Err(error_message(status, &text));
                }
                retry_after
            }
            Err(e) if attempt == MAX_ATTEMPTS => return Err(format!("cannot reach {url}: {e}")),
            Err(_) => None,
        };
        tokio::time::sleep(retry_after.unwrap_or(delay).min(Duration::from_secs(30))).await;
        delay = (delay * 2).min(Duration::from_secs(8));
    }
    Err("gave up".into())
}

/// Indexes the file from where the last run stopped.
pub async fn run(args: &IndexArgs) -> Result<Summary, String> {
    let bytes = std::fs::read(&args.file).map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let state_path = state_path(args);
    let mut progress = match std::fs::read(&state_path) {
        Ok(text) if !args.restart => {
            let progress: Progress = serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not a progress file: {e}", state_path.display()))?;
            let offset = progress.offset as usize;
            let same_prefix = offset <= bytes.len() && hex::encode(Sha256::digest(&bytes[..offset])) == progress.sha256;
            if progress.model != args.model || progress.scope != args.scope || !same_prefix {
                return Err(format!(
                    "{} records another run (model {}, scope {}) or the file changed where it was indexed; pass --restart to index it all again",
                    state_path.display(),
                    progress.model,
                    progress.scope
                ));
            }
            progress
        }
        _ => Progress {
            model: args.model.clone(),
            scope: args.scope.clone(),
            offset: 0,
            sha256: hex::encode(Sha256::digest(b"")),
            documents: 0,
        },
    };
    let first_line = bytes[..progress.offset as usize].iter().filter(|b| **b == b'\n').count() + 1;
    let lines = parse(&bytes, progress.offset as usize, first_line)?;
    let mut summary = Summary { already: progress.documents, ..Summary::default() };
    let bar = if args.progress {
        indicatif::ProgressBar::new(progress.documents + lines.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} documents {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(progress.documents);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let mut start = 0;
    while start < lines.len() {
        // A batch: up to `batch` documents and MAX_BATCH_BYTES of body.
        let mut end = start;
        let mut size = 0;
        while end < lines.len() && end - start < args.batch.max(1) {
            let len = serde_json::to_vec(&lines[end].document).map_or(0, |v| v.len()) + 1;
            if end > start && size + len > MAX_BATCH_BYTES {
                break;
            }
            size += len;
            end += 1;
        }
        let documents: Vec<Value> = lines[start..end].iter().map(|l| l.document.clone()).collect();
        let answer = match send(&client, args, &documents).await {
            Ok(answer) => answer,
            Err(e) => {
                bar.abandon_with_message("stopped");
                let line = bytes[..progress.offset as usize].iter().filter(|b| **b == b'\n').count() + 1;
                return Err(format!(
                    "stopped at line {line} ({} documents indexed so far; run again to resume): {e}",
                    progress.documents
                ));
            }
        };
        summary.documents += answer["output"]["documents"].as_u64().unwrap_or(documents.len() as u64);
        summary.chunks += answer["output"]["chunks"].as_u64().unwrap_or_default();
        let charged = answer["credits_charged"].as_f64().unwrap_or_default();
        summary.credits_milli += (charged * 1000.0).round() as i64;
        let offset = lines[end - 1].end as usize;
        progress.offset = offset as u64;
        progress.sha256 = hex::encode(Sha256::digest(&bytes[..offset]));
        progress.documents += documents.len() as u64;
        save(&state_path, &progress)?;
        bar.set_position(progress.documents);
        start = end;
    }
    if lines.is_empty() {
        // Nothing new: still leave a progress file, so the next run knows where it is.
        save(&state_path, &progress)?;
    }
    bar.finish_and_clear();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_their_end_offsets_and_bad_lines_are_named() {
        let text = b"{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"b\", \"text\": \"y\"}\n";
        let lines = parse(text, 0, 1).unwrap_or_default();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].end, 26, "the blank line after it belongs to it");
        assert_eq!(lines[1].end as usize, text.len());
        let error = parse(b"{\"id\": 1}\nnot json\n", 0, 1).err().unwrap_or_default();
        assert!(error.starts_with("line 2:"), "{error}");
        assert!(parse(b"[1]\n", 0, 5).err().unwrap_or_default().starts_with("line 5:"));
    }
}
