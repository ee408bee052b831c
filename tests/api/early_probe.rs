//! The probe runs while the bytes arrive: an upload through any door that
//! starts at byte 0 is committed with the media info its early probe found,
//! and the commit does not probe the file again. With early probes off (or
//! no free slot) the file is probed at finalize, with the same answer.

use crate::both_backends;
use crate::chunked::{init_chunked, send_chunk};
use crate::helpers::{Backend, TestApp, blake3_hex, fixture, spawn_app_with};
use serde_json::Value;

pub fn probes(text: &str, source: &str) -> u64 {
    let needle = format!("vidcache_probes_total{{source=\"{source}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&needle)).map_or(0, |v| v.trim().parse().unwrap())
}

async fn upload_through_three_doors(app: &TestApp) -> Vec<Value> {
    let (small, large, other) = (fixture("small"), fixture("large"), fixture("other"));
    let mut results = vec![app.upload("https://x.test/small.mp4", "b", None, small.clone()).await];
    let init = init_chunked(app, "large.mp4", large.len(), 1 << 20).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    for (i, chunk) in large.chunks(1 << 20).enumerate() {
        assert_eq!(send_chunk(app, &id, i, chunk, false).await.status(), 200);
    }
    results
        .push(app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap());
    let location = crate::tus::tus_create(&app.address, &app.client, other.len()).await;
    assert_eq!(crate::tus::patch(app, &location, 0, &other, None).await.status(), 204);
    results.push(app.get_json(&format!("{location}/result")).await);
    for (result, bytes) in results.iter().zip([&small, &large, &other]) {
        assert_eq!(result["status"], "new", "{result}");
        assert_eq!(result["hash"], blake3_hex(bytes));
    }
    results
}

async fn uploads_are_probed_while_they_arrive(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.upload.early_probes = 4).await;
    let results = upload_through_three_doors(&app).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(probes(&text, "stream"), 3, "every door's upload used its early probe:\n{text}");
    assert_eq!(probes(&text, "file"), 0);
    let meta = app.get_json(&format!("/meta/{}", results[1]["hash"].as_str().unwrap())).await;
    assert_eq!((meta["width"].as_u64(), meta["height"].as_u64()), (Some(640), Some(360)), "{meta}");
    assert_eq!(meta["video_codec"], "h264");
    assert_eq!(meta["duration_s"], 3.0);
}
both_backends!(uploads_are_probed_while_they_arrive);

async fn without_early_probes_the_file_is_probed_with_the_same_answer(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.upload.early_probes = 0).await;
    let results = upload_through_three_doors(&app).await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(probes(&text, "stream"), 0);
    assert_eq!(probes(&text, "file"), 3);
    let meta = app.get_json(&format!("/meta/{}", results[1]["hash"].as_str().unwrap())).await;
    assert_eq!((meta["width"].as_u64(), meta["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(meta["duration_s"], 3.0);
}
both_backends!(without_early_probes_the_file_is_probed_with_the_same_answer);
