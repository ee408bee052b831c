//! Every endpoint answers malformed, hostile and oversized input with a 4xx
//! and the JSON error body, and such input leaves nothing stored.

use crate::both_backends;
use crate::helpers::{Backend, assert_error, fixture, spawn_app, spawn_app_with};

async fn init_refuses_bad_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    let init = |body: String, content_type: &'static str| {
        app.client.post(app.url("/upload/init")).header("content-type", content_type).body(body).send()
    };
    let json = |v: serde_json::Value| v.to_string();

    assert_error(init("{not json".into(), "application/json").await.unwrap(), 400, "invalid-json").await;
    assert_error(
        init(json(serde_json::json!({"url": "https://x.test/a"})), "application/json").await.unwrap(),
        400,
        "invalid-json",
    )
    .await;
    assert_error(
        init(json(serde_json::json!({"url": 5, "bucket": "b"})), "application/json").await.unwrap(),
        400,
        "invalid-json",
    )
    .await;
    assert_error(
        init(json(serde_json::json!({"url": "https://x.test/a", "bucket": "b"})), "text/plain").await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    for bucket in ["..", "../etc", "/abs", "a/b", "a\u{1}b", ".spool", "", &"b".repeat(64)] {
        let body = json(serde_json::json!({"url": "https://x.test/a", "bucket": bucket}));
        assert_error(init(body, "application/json").await.unwrap(), 400, "invalid-location").await;
    }
    for prefix in ["../../etc", "/abs", "a//b", "a/../b", "a\nb", "a\\b", &"p/".repeat(300)] {
        let body = json(serde_json::json!({"url": "https://x.test/a", "bucket": "b", "prefix": prefix}));
        assert_error(init(body, "application/json").await.unwrap(), 400, "invalid-location").await;
    }
    for url in ["file:///etc/passwd", "not a url", "gopher://x/y", &format!("https://x.test/{}", "a".repeat(3000))] {
        let body = json(serde_json::json!({"url": url, "bucket": "b"}));
        assert_error(init(body, "application/json").await.unwrap(), 400, "invalid-url").await;
    }
    let body = json(serde_json::json!({"url": "https://x.test/a", "bucket": "b", "meta": [1, 2]}));
    assert_error(init(body, "application/json").await.unwrap(), 400, "invalid-meta").await;
    let huge =
        json(serde_json::json!({"url": "https://x.test/a", "bucket": "b", "meta": {"pad": "x".repeat(100_000)}}));
    assert_error(init(huge, "application/json").await.unwrap(), 413, "too-large").await;
    assert!(app.objects().is_empty());
}
both_backends!(init_refuses_bad_requests);

#[actix_web::test]
async fn upload_bodies_refuse_unknown_ids_wrong_types_and_oversize() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.upload.max_bytes = 50_000).await;
    let video = fixture("small");
    assert!(video.len() > 50_000);
    let post = |id: &str, content_type: &'static str, body: Vec<u8>| {
        app.client.post(app.url(&format!("/upload/{id}"))).header("content-type", content_type).body(body).send()
    };

    assert_error(post(&"0".repeat(32), "application/octet-stream", vec![1]).await.unwrap(), 404, "unknown-upload")
        .await;
    assert_error(post("not-an-id", "application/octet-stream", vec![1]).await.unwrap(), 400, "invalid-upload-id").await;
    assert_error(
        post("..%2F..%2Fetc%2Fpasswd", "application/octet-stream", vec![1]).await.unwrap(),
        400,
        "invalid-upload-id",
    )
    .await;
    assert_error(
        app.client.get(app.url(&format!("/upload/{}", "f".repeat(32)))).send().await.unwrap(),
        404,
        "unknown-upload",
    )
    .await;

    let id = app.init("https://x.test/big.mp4", "b", None).await["upload_id"].as_str().unwrap().to_owned();
    assert_error(post(&id, "application/json", b"{}".to_vec()).await.unwrap(), 415, "unsupported-media-type").await;
    assert_error(
        app.client
            .post(app.url(&format!("/upload/{id}")))
            .header("upload-offset", "minus one")
            .body(vec![1])
            .send()
            .await
            .unwrap(),
        400,
        "invalid-header",
    )
    .await;
    // Declared too large: refused before a byte is read, the session stays usable.
    assert_error(post(&id, "application/octet-stream", video.clone()).await.unwrap(), 413, "too-large").await;
    // Streamed (no Content-Length) past the limit: refused mid-body, and the session is failed.
    assert_error(app.send_body(&id, video.clone()).await, 413, "too-large").await;
    let status: serde_json::Value =
        app.client.get(app.url(&format!("/upload/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["state"], "failed");
    assert!(app.objects().is_empty());
    assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty(), "the failed spool is freed");
}

async fn bytes_that_are_not_a_video_leave_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut png = Vec::new();
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x64",
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "-",
        ])
        .output()
        .unwrap();
    png.extend_from_slice(&status.stdout);
    let small = fixture("small");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"hello, this is not a video at all\n".repeat(100)),
        ("empty", Vec::new()),
        ("png", png),
        ("truncated-mp4-head", small[..4096].to_vec()),
        ("random", (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()),
    ];
    for (name, bytes) in cases {
        let url = format!("https://x.test/{name}");
        let id = app.init(&url, "b", None).await["upload_id"].as_str().unwrap().to_owned();
        assert_error(app.send_body(&id, bytes).await, 422, "not-a-video").await;
        assert_error(
            app.client.get(app.url("/resolve")).query(&[("url", &url)]).send().await.unwrap(),
            404,
            "unknown-url",
        )
        .await;
        let status: serde_json::Value =
            app.client.get(app.url(&format!("/upload/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(status["state"], "failed", "{name}");
        // A failed upload stays failed: sending again is refused, not re-run.
        assert_error(app.send_body(&id, small.clone()).await, 409, "upload-failed").await;
    }
    assert!(app.objects().is_empty(), "{:?}", app.objects());
    assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty());
}
both_backends!(bytes_that_are_not_a_video_leave_nothing);

#[actix_web::test]
async fn reads_refuse_bad_hashes_queries_paths_and_methods() {
    let app = spawn_app(Backend::Sqlite).await;
    let unknown = "a".repeat(64);
    let get = |path: String| app.client.get(app.url(&path)).send();

    for bad in ["abc", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", &"A".repeat(64), &"g".repeat(64)] {
        assert_error(get(format!("/meta/{bad}")).await.unwrap(), 400, "invalid-hash").await;
        assert_error(get(format!("/video/{bad}")).await.unwrap(), 400, "invalid-hash").await;
    }
    assert_error(get(format!("/meta/{unknown}")).await.unwrap(), 404, "unknown-video").await;
    assert_error(get(format!("/video/{unknown}")).await.unwrap(), 404, "unknown-video").await;
    assert_error(app.client.delete(app.url(&format!("/video/{unknown}"))).send().await.unwrap(), 404, "unknown-video")
        .await;
    // Transcoding and media of hashes that are malformed or unknown.
    let post = |path: String| app.client.post(app.url(&path)).send();
    assert_error(post("/video/abc/transcode".into()).await.unwrap(), 400, "invalid-hash").await;
    assert_error(post(format!("/video/{unknown}/transcode")).await.unwrap(), 404, "unknown-video").await;
    assert_error(get(format!("/video/{unknown}/transcode")).await.unwrap(), 405, "method-not-allowed").await;
    assert_error(post("/video/abc/unmerge".into()).await.unwrap(), 400, "invalid-hash").await;
    assert_error(post(format!("/video/{unknown}/unmerge")).await.unwrap(), 404, "unknown-video").await;
    assert_error(get(format!("/video/{unknown}/unmerge")).await.unwrap(), 405, "method-not-allowed").await;
    for media in [
        format!("/media/{unknown}/hls/master.m3u8"),
        format!("/media/{unknown}/dash/manifest.mpd"),
        format!("/media/{unknown}/seg/{}.m4s", "x".repeat(300)),
        format!("/media/{unknown}/%00/master.m3u8"),
        "/media/abc/hls/master.m3u8".to_owned(),
    ] {
        assert_error(get(media.clone()).await.unwrap(), 404, "not-found").await;
    }
    assert_error(get("/resolve".into()).await.unwrap(), 400, "invalid-query").await;
    assert_error(get("/resolve?url=javascript:alert(1)".into()).await.unwrap(), 400, "invalid-url").await;
    assert_error(get("/resolve?url=https://x.test/never".into()).await.unwrap(), 404, "unknown-url").await;
    assert_error(get("/no/such/path".into()).await.unwrap(), 404, "not-found").await;
    assert_error(app.client.put(app.url("/upload/init")).send().await.unwrap(), 405, "method-not-allowed").await;
    assert_error(
        app.client.post(app.url(&format!("/meta/{unknown}"))).send().await.unwrap(),
        405,
        "method-not-allowed",
    )
    .await;
}
