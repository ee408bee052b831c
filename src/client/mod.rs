//! `vidcache upload FILE --server URL`: a command-line client of the chunked
//! API (section 2) with parallel chunks, a progress bar and automatic resume.
//!
//! Resume: the upload id is remembered per file (path, size, modification
//! time and server) in a small state file; on the next run the client asks
//! the server which chunks are missing and sends only those.
#![allow(clippy::disallowed_methods)] // the command-line client blocks by design (clippy.toml)

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct UploadArgs {
    pub file: PathBuf,
    pub server: String,
    pub parallel: usize,
    pub chunk_size: u64,
    pub state_dir: PathBuf,
    pub progress: bool,
}

#[derive(Serialize, Deserialize)]
struct Remembered {
    upload_id: String,
    server: String,
    file: PathBuf,
}

/// Attempts per chunk before the upload gives up (the next run resumes).
const ATTEMPTS: u32 = 6;

pub fn default_state_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir).join(".cache/vidcache/uploads")
}

/// Who this file is to the resume logic: the same path, size and
/// modification time against the same server is the same upload.
fn fingerprint(server: &str, file: &Path, meta: &std::fs::Metadata) -> String {
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let key = format!("{server}\n{}\n{}\n{}", file.display(), meta.len(), mtime.as_nanos());
    blake3::hash(key.as_bytes()).to_hex()[..32].to_owned()
}

pub async fn upload(args: UploadArgs) -> anyhow::Result<Value> {
    let file_path = std::fs::canonicalize(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let meta = std::fs::metadata(&file_path)?;
    let size = meta.len();
    let server = args.server.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    std::fs::create_dir_all(&args.state_dir)?;
    let state_file = args.state_dir.join(format!("{}.json", fingerprint(&server, &file_path, &meta)));

    // A remembered upload the server still has: resume it.
    let mut known: Option<(String, Value)> = None;
    if let Ok(raw) = std::fs::read(&state_file)
        && let Ok(remembered) = serde_json::from_slice::<Remembered>(&raw)
    {
        let response = http.get(format!("{server}/videos/upload/{}", remembered.upload_id)).send().await?;
        if response.status().is_success() {
            let status: Value = response.json().await?;
            if matches!(status["state"].as_str(), Some("receiving" | "complete")) {
                known = Some((remembered.upload_id, status));
            }
        }
    }
    let (upload_id, status) = match known {
        Some(found) => found,
        None => {
            let filename = file_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let response = http
                .post(format!("{server}/videos/init"))
                .json(&json!({"filename": filename, "size": size, "chunk_size": args.chunk_size}))
                .send()
                .await?;
            let init = answer(response).await.context("init")?;
            let id = init["upload_id"].as_str().context("init answered no upload_id")?.to_owned();
            let remembered = Remembered { upload_id: id.clone(), server: server.clone(), file: file_path.clone() };
            std::fs::write(&state_file, serde_json::to_vec(&remembered)?)?;
            let status = http.get(format!("{server}/videos/upload/{id}")).send().await?;
            (id.clone(), answer(status).await?)
        }
    };
    let chunk_size = status["chunk_size"].as_u64().context("status answered no chunk_size")?;
    let missing: VecDeque<u64> =
        status["missing"].as_array().map_or_else(VecDeque::new, |m| m.iter().filter_map(Value::as_u64).collect());
    let total_chunks = status["total_chunks"].as_u64().unwrap_or(0);
    let resumed_chunks = total_chunks - missing.len() as u64;
    let missing_bytes: u64 = missing.iter().map(|i| chunk_size.min(size - i * chunk_size)).sum();

    let bar = if args.progress { ProgressBar::new(size) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("a valid template"),
    );
    bar.set_position(size - missing_bytes);
    let sent_chunks = missing.len() as u64;
    let queue = Arc::new(Mutex::new(missing));
    let file = Arc::new(std::fs::File::open(&file_path)?);
    let mut workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    for _ in 0..args.parallel.max(1) {
        let (queue, file, http, bar) = (queue.clone(), file.clone(), http.clone(), bar.clone());
        let (server, id) = (server.clone(), upload_id.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(index) = queue.lock().expect("queue lock").pop_front() else { return Ok(()) };
                let offset = index * chunk_size;
                let len = chunk_size.min(size - offset) as usize;
                let file = file.clone();
                let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, offset)?;
                    Ok(buf)
                })
                .await??;
                send_chunk(&http, &server, &id, index, bytes).await?;
                bar.inc(len as u64);
            }
        }));
    }
    for worker in workers {
        worker.await.context("a chunk worker failed")??;
    }
    bar.finish_and_clear();

    let response = http.post(format!("{server}/videos/finalize/{upload_id}")).send().await?;
    let result = answer(response).await.context("finalize")?;
    let _ = std::fs::remove_file(&state_file);
    Ok(json!({
        "upload_id": upload_id,
        "result": result,
        "resumed_chunks": resumed_chunks,
        "sent_chunks": sent_chunks,
    }))
}

/// Sends one chunk with its BLAKE3, retrying network failures and 5xx
/// answers with exponential backoff. A 4xx is final.
async fn send_chunk(http: &reqwest::Client, server: &str, id: &str, index: u64, bytes: Vec<u8>) -> anyhow::Result<()> {
    let checksum = format!("blake3={}", blake3::hash(&bytes).to_hex());
    let body = bytes::Bytes::from(bytes);
    let mut delay = Duration::from_millis(250);
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(format!("{server}/videos/upload_chunk/{id}/{index}"))
            .header("content-type", "application/octet-stream")
            .header("x-chunk-checksum", &checksum)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if response.status().is_client_error() && response.status().as_u16() != 409 => {
                bail!("chunk {index}: {}", response.text().await.unwrap_or_default());
            }
            // A 409 is another request on the same chunk (a retry racing its
            // original); a 5xx or a network failure may pass.
            Ok(response) if attempt == ATTEMPTS => {
                bail!("chunk {index}: {}", response.text().await.unwrap_or_default())
            }
            Err(e) if attempt == ATTEMPTS => bail!("chunk {index}: {e}"),
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    unreachable!("the last attempt returns")
}

async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("the server answered {status}: {}", body["message"].as_str().unwrap_or("no message"));
    }
    Ok(body)
}
