//! The cache API of section 1 end to end, on SQLite and on PostgreSQL.

use crate::both_backends;
use crate::helpers::{Backend, assert_error, blake3_hex, fixture, spawn_app};

async fn upload_read_and_delete(backend: Backend) {
    // Arrange
    let app = spawn_app(backend).await;
    let video = fixture("small");
    let url = "https://media.example.com/clips/small.mp4";

    // Act
    let result = app.upload(url, "videos", Some("2026/cats"), video.clone()).await;

    // Assert: the result
    let hash = blake3_hex(&video);
    assert_eq!(result["hash"], hash.as_str());
    assert_eq!(result["status"], "new");
    assert_eq!(result["size_bytes"], video.len() as u64);
    assert_eq!(result["file_path"], format!("videos/2026/cats/{hash}.mp4"));
    assert!(result.get("phash_distance").is_none());
    let duration = result["duration_s"].as_f64().unwrap();
    assert!((duration - 2.0).abs() < 0.1, "duration {duration}");
    let on_disk = std::fs::read(app.root.join(result["file_path"].as_str().unwrap())).unwrap();
    assert_eq!(on_disk, video, "the stored object is the uploaded bytes");

    // meta
    let meta = app.get_json(&format!("/meta/{hash}")).await;
    assert_eq!(meta["hash"], hash.as_str());
    assert_eq!(meta["size_bytes"], video.len() as u64);
    assert_eq!(meta["width"], 320);
    assert_eq!(meta["height"], 240);
    assert_eq!(meta["video_codec"], "h264");
    assert_eq!(meta["audio_codec"], "aac");
    assert_eq!(meta["fps"], 25.0);
    assert_eq!(meta["aliases"], serde_json::json!([url]));
    assert_eq!(meta["bucket"], "videos");
    assert_eq!(meta["prefix"], "2026/cats");
    assert_eq!(meta["transcode"]["status"], "queued", "a new video is queued for transcoding");
    assert!(chrono::DateTime::parse_from_rfc3339(meta["first_seen"].as_str().unwrap()).is_ok());

    // resolve
    let resolved: serde_json::Value =
        app.client.get(app.url("/resolve")).query(&[("url", url)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(resolved, serde_json::json!({"hash": hash, "url": url}));

    // full read
    let full = app.client.get(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "video/mp4");
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(full.bytes().await.unwrap().as_ref(), video.as_slice());

    // ranges: a-b, a-, -n
    let len = video.len();
    for (range, start, end) in [
        ("bytes=100-1099", 100, 1099),
        (&format!("bytes={}-", len - 10) as &str, len - 10, len - 1),
        ("bytes=-500", len - 500, len - 1),
    ] {
        let part = app.client.get(app.url(&format!("/video/{hash}"))).header("range", range).send().await.unwrap();
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(part.headers()["content-range"], format!("bytes {start}-{end}/{len}").as_str());
        assert_eq!(part.bytes().await.unwrap().as_ref(), &video[start..=end], "{range}");
    }
    let unsatisfiable = app
        .client
        .get(app.url(&format!("/video/{hash}")))
        .header("range", format!("bytes={len}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsatisfiable.headers()["content-range"], format!("bytes */{len}").as_str());
    assert_error(unsatisfiable, 416, "range-not-satisfiable").await;

    // HEAD
    let head = app.client.head(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], len.to_string().as_str());
    assert!(head.bytes().await.unwrap().is_empty());

    // delete
    let deleted = app.client.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_error(app.client.get(app.url(&format!("/video/{hash}"))).send().await.unwrap(), 404, "unknown-video").await;
    assert_error(app.client.get(app.url(&format!("/meta/{hash}"))).send().await.unwrap(), 404, "unknown-video").await;
    assert_error(app.client.get(app.url("/resolve")).query(&[("url", url)]).send().await.unwrap(), 404, "unknown-url")
        .await;
    assert_error(app.client.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap(), 404, "unknown-video")
        .await;
    assert!(app.objects().is_empty(), "objects left after delete: {:?}", app.objects());
}
both_backends!(upload_read_and_delete, s3);

async fn same_bytes_under_a_second_url_is_a_duplicate(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("small");

    let first = app.upload("https://a.example.com/1.mp4", "videos", None, video.clone()).await;
    let second = app.upload("https://b.example.com/2.mp4", "other-bucket", Some("x"), video.clone()).await;

    assert_eq!(first["status"], "new");
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["phash_distance"], 0);
    assert_eq!(second["hash"], first["hash"]);
    assert_eq!(second["file_path"], first["file_path"], "a duplicate points at the stored object");
    assert_eq!(app.objects().len(), 1, "one object on disk: {:?}", app.objects());
    let meta = app.get_json(&format!("/meta/{}", first["hash"].as_str().unwrap())).await;
    assert_eq!(meta["aliases"], serde_json::json!(["https://a.example.com/1.mp4", "https://b.example.com/2.mp4"]));
    assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty(), "no spool left behind");

    // A URL already known answers `cached` at init, without a new session.
    let cached = app.init("https://b.example.com/2.mp4", "videos", None).await;
    assert_eq!(cached["status"], "cached");
    assert_eq!(cached["hash"], first["hash"]);
    assert_eq!(cached["file_path"], first["file_path"]);
    assert_eq!(cached["url"], "https://b.example.com/2.mp4");
}
both_backends!(same_bytes_under_a_second_url_is_a_duplicate, s3);

async fn twenty_concurrent_uploads_of_the_same_bytes_store_one_object(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("small");
    let mut ids = Vec::new();
    for i in 0..20 {
        let init = app.init(&format!("https://c.example.com/{i}.mp4"), "videos", None).await;
        ids.push(init["upload_id"].as_str().unwrap().to_owned());
    }

    let results = futures::future::join_all(ids.iter().map(|id| {
        let (app, video) = (&app, video.clone());
        async move {
            let response = app.send_body(id, video).await;
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    }))
    .await;

    let new = results.iter().filter(|r| r["status"] == "new").count();
    let duplicates = results.iter().filter(|r| r["status"] == "duplicate").count();
    assert_eq!((new, duplicates), (1, 19), "{results:#?}");
    let hash = blake3_hex(&video);
    assert!(results.iter().all(|r| r["hash"] == hash.as_str()));
    assert_eq!(app.objects().len(), 1, "{:?}", app.objects());
    let meta = app.get_json(&format!("/meta/{hash}")).await;
    assert_eq!(meta["aliases"].as_array().unwrap().len(), 20);
}
both_backends!(twenty_concurrent_uploads_of_the_same_bytes_store_one_object, s3);
