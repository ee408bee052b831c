//! The analysis of uploads end to end: frames are hashed while the bytes
//! arrive (asserted on recorded timestamps, not wall-clock limits), an MP4
//! with its index at the end still completes, and damaged files (zero-length,
//! truncated, random, bit-flipped) each end in a 4xx for their upload while
//! the daemon keeps serving.

use crate::helpers::{Backend, TestApp, blake3_hex, spawn_app, spawn_app_with};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn make(dir: &Path, name: &str, args: &str) -> Vec<u8> {
    let path = dir.join(name);
    crate::helpers::ffmpeg_to(&path, args);
    std::fs::read(path).unwrap()
}

/// Streams `bytes` to a fresh upload, `piece` bytes every `pause`; answers
/// the ingest result and when the last piece was handed to the connection.
async fn throttled_upload(
    app: &TestApp,
    url: &str,
    bytes: &[u8],
    piece: usize,
    pause: Duration,
) -> (Value, chrono::DateTime<chrono::Utc>) {
    let init = app.init(url, "b", None).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    let pieces: Vec<Vec<u8>> = bytes.chunks(piece).map(<[u8]>::to_vec).collect();
    let last_sent = std::sync::Arc::new(std::sync::Mutex::new(chrono::Utc::now()));
    let stamp = last_sent.clone();
    let stream = futures::stream::iter(pieces).then(move |p| {
        let stamp = stamp.clone();
        async move {
            actix_web::rt::time::sleep(pause).await;
            *stamp.lock().unwrap() = chrono::Utc::now();
            Ok::<_, std::io::Error>(p)
        }
    });
    let response = app
        .client
        .post(app.url(&format!("/upload/{id}")))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let result = response.json().await.unwrap();
    let last = *last_sent.lock().unwrap();
    (result, last)
}

fn time(meta: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    let text = meta["analysis"][field].as_str().unwrap_or_else(|| panic!("no {field} in {meta}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&chrono::Utc)
}

use futures::StreamExt;

#[actix_web::test]
async fn a_faststart_upload_is_hashed_before_its_last_byte_and_one_indexed_at_the_end_after() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let source =
        "-f lavfi -i mandelbrot=size=640x360:rate=25 -t 8 -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p";
    let fast = make(dir.path(), "fast.mp4", &format!("{source} -movflags +faststart"));
    let slow = make(dir.path(), "slow.mp4", source);
    // About 1 MB/s: the upload lasts a few seconds.
    let piece = fast.len() / 40;

    let (result, _) = throttled_upload(&app, "https://t.test/fast", &fast, piece, Duration::from_millis(100)).await;
    assert_eq!((result["status"].as_str(), result["hash"].as_str()), (Some("new"), Some(blake3_hex(&fast).as_str())));
    let meta = app.get_json(&format!("/meta/{}", result["hash"].as_str().unwrap())).await;
    let (first_byte, first_hash, complete) =
        (time(&meta, "first_byte_at"), time(&meta, "first_hash_at"), time(&meta, "bytes_complete_at"));
    assert!(first_byte <= first_hash, "{meta}");
    assert!(first_hash < complete, "the first frame was hashed before the last byte came: {meta}");
    assert_eq!(meta["analysis"]["samples"], 8, "{meta}");
    assert_eq!(meta["analysis"]["packets_skipped"], 0, "the decoder kept up: {meta}");
    assert_eq!(meta["analysis"]["frames_decoded"], 200);

    let (result, _) = throttled_upload(&app, "https://t.test/slow", &slow, piece, Duration::from_millis(20)).await;
    // The same pictures in another layout: a near-duplicate at distance 0.
    assert_eq!(result["status"], "duplicate", "{result}");
    assert_eq!(result["phash_distance"], 0);
    let kept =
        spawn_app_with(Backend::Sqlite, |s| s.dedup.near_duplicate = vidcache::config::NearDuplicatePolicy::Off).await;
    let (result, last_sent) =
        throttled_upload(&kept, "https://t.test/slow", &slow, piece, Duration::from_millis(20)).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["duration_s"], 8.0);
    let meta = kept.get_json(&format!("/meta/{}", result["hash"].as_str().unwrap())).await;
    assert!(time(&meta, "first_hash_at") > last_sent, "its index comes last, so frames do too: {meta}");
    assert_eq!(meta["analysis"]["samples"], 8, "{meta}");
    assert_eq!(meta["analysis"]["frames_decoded"], 200, "{meta}");
}

/// A deterministic xorshift, so a failing mutation can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Whether the ffmpeg CLI decodes the video stream of `bytes` without a
/// single error (`-err_detect explode -xerror`): the reference verdict.
fn ffmpeg_decodes_cleanly(dir: &Path, bytes: &[u8]) -> bool {
    let path = dir.join("mutant.mp4");
    std::fs::write(&path, bytes).unwrap();
    std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-err_detect", "explode", "-xerror", "-i"])
        .arg(&path)
        .args(["-map", "0:v:0", "-f", "null", "-"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[actix_web::test]
async fn damaged_videos_each_end_in_a_4xx_and_the_daemon_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let base = make(
        dir.path(),
        "base.mp4",
        "-f lavfi -i testsrc2=size=320x240:rate=25 -t 2 -c:v libx264 -pix_fmt yuv420p -movflags +faststart",
    );
    let first = app.upload("https://fuzz.test/base", "b", None, base.clone()).await;
    assert_eq!((first["status"].as_str(), first["hash"].as_str()), (Some("new"), Some(blake3_hex(&base).as_str())));
    let mut rng = Rng(0x005e_ed0f_da7a);
    let mut damaged: Vec<(String, Vec<u8>)> = vec![("zero-length".into(), Vec::new())];
    for i in 1..50 {
        damaged.push((format!("truncated at {i}/50"), base[..base.len() * i / 50].to_vec()));
    }
    for i in 0..20 {
        let len = 1 + rng.below(200_000);
        damaged.push((format!("random {i}"), (0..len).map(|_| rng.next() as u8).collect()));
    }
    // Bit flips: those the reference decoder refuses must be refused; those
    // it decodes cleanly may be stored, but never answer a 5xx.
    let mut clean = Vec::new();
    let mut attempts = 0;
    while damaged.len() < 230 && attempts < 1000 {
        attempts += 1;
        let mut bytes = base.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        let name = format!("bit-flip {attempts} ({flips} bits)");
        if ffmpeg_decodes_cleanly(dir.path(), &bytes) {
            clean.push((name, bytes));
        } else {
            damaged.push((name, bytes));
        }
    }
    assert!(damaged.len() >= 230, "only {} damaged mutations", damaged.len());

    // A refused body may be answered before it is all sent, and the
    // connection closed: no pooled connections, so no request meets a closed one.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let answers = futures::stream::iter(damaged.iter().chain(clean.iter()).enumerate())
        .map(|(i, (name, bytes))| {
            let (app, client) = (&app, &client);
            async move {
                let id = crate::helpers::init_upload(client, &app.address, &format!("https://fuzz.test/{i}")).await;
                let response = client
                    .post(app.url(&format!("/upload/{id}")))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (name.clone(), status, body)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let mut refused = 0;
    for (name, status, body) in &answers {
        let is_damaged = damaged.iter().any(|(n, _)| n == name);
        assert!(status / 100 != 5, "{name}: a 5xx {body}");
        if is_damaged {
            if !(400..500).contains(status) {
                let (_, bytes) = damaged.iter().find(|(n, _)| n == name).unwrap();
                let kept = std::env::temp_dir().join("vidcache-failed-mutant.mp4");
                std::fs::write(&kept, bytes).unwrap();
                panic!("{name} (kept at {}): the damaged upload answered {status} {body}", kept.display());
            }
            assert!(
                body["code"].as_str().is_some_and(|c| !c.is_empty()) && body["message"].is_string(),
                "{name}: {body}"
            );
            refused += 1;
        }
    }
    assert!(refused >= 230);
    println!(
        "{refused} damaged uploads refused; {} clean bit-flips: {} stored",
        clean.len(),
        answers.iter().filter(|a| a.1 == 200).count()
    );
    // Nothing of the damaged uploads was stored; the clean bit-flips that
    // were stored are exactly those answered 200 (near-duplicates of the
    // base keep their bytes as variants), and the daemon still serves.
    let mut expected: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|a| a.1 == 200)
        .map(|a| a.2["variant"].as_str().or(a.2["hash"].as_str()).unwrap_or_default().to_owned())
        .collect();
    expected.insert(blake3_hex(&base));
    let stored: std::collections::BTreeSet<String> =
        app.objects().iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(stored, expected);
    let other = crate::helpers::fixture("other");
    let ok = app.upload("https://fuzz.test/other", "fuzz", None, other.clone()).await;
    assert_eq!((ok["status"].as_str(), ok["hash"].as_str()), (Some("new"), Some(blake3_hex(&other).as_str())));
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}
