//! Section 2: chunks in any order and in parallel, raw and form-data,
//! identical re-sends, conflicts, checksums, missing chunks, abort, and the
//! `GET /videos` listing.

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_error, blake3_hex, fixture, spawn_app, spawn_app_with};
use futures::StreamExt;
use serde_json::{Value, json};

const CHUNK: usize = 1 << 20;

pub async fn init_chunked(app: &TestApp, filename: &str, size: usize, chunk: usize) -> Value {
    let response = app
        .client
        .post(app.url("/videos/init"))
        .json(&json!({"filename": filename, "size": size, "chunk_size": chunk, "content_type": "video/mp4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "init: {:?}", response.text().await);
    response.json().await.unwrap()
}

pub async fn send_chunk(app: &TestApp, id: &str, index: usize, bytes: &[u8], form: bool) -> reqwest::Response {
    let request = app.client.post(app.url(&format!("/videos/upload_chunk/{id}/{index}")));
    let request = if form {
        let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("blob");
        request.multipart(reqwest::multipart::Form::new().text("note", "ignored").part("file", part))
    } else {
        request.header("content-type", "application/octet-stream").body(bytes.to_vec())
    };
    request.send().await.unwrap()
}

async fn out_of_order_and_parallel_chunks_make_the_same_hash(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("large");
    let init = init_chunked(&app, "large.mp4", video.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    let total = video.len().div_ceil(CHUNK);
    assert_eq!(init["total_chunks"], total);
    assert_eq!(init["received"], json!([]));

    // Last chunk first, then the rest backwards, 4 at a time; odd chunks as form-data.
    let mut order: Vec<usize> = (0..total).rev().collect();
    order.swap(1, total / 2);
    let (app_ref, video_ref, id_ref) = (&app, &video, &id);
    let answers: Vec<(usize, reqwest::StatusCode, Value)> = futures::stream::iter(order)
        .map(|i| async move {
            let bytes = &video_ref[i * CHUNK..((i + 1) * CHUNK).min(video_ref.len())];
            let response = send_chunk(app_ref, id_ref, i, bytes, i % 2 == 1).await;
            (i, response.status(), response.json().await.unwrap())
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for (i, status, body) in &answers {
        assert_eq!(*status, 200, "chunk {i}: {body}");
        assert_eq!(body["chunk_index"], *i);
    }
    let status = app.get_json(&format!("/videos/upload/{id}")).await;
    assert_eq!(status["missing"], json!([]));
    assert_eq!(status["received"].as_array().unwrap().len(), total);
    assert_eq!(status["received_bytes"], video.len());
    assert_eq!(status["filename"], "large.mp4");

    let response = app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["status"], "new");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(result["size_bytes"], video.len());
    let video_id = result["video_id"].as_i64().expect("finalize names the video id");
    assert_eq!(Some(video_id), init["video_id"].as_i64());

    // Finalize is idempotent.
    let again: Value =
        app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["hash"], result["hash"]);

    let stored = app.client.get(app.url(&format!("/video/{}", result["hash"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(stored.bytes().await.unwrap().as_ref(), video.as_slice());
    let one = app.get_json(&format!("/videos/{video_id}")).await;
    assert_eq!(one["hash"], result["hash"]);
    assert_eq!(one["status"], "queued", "stored, and queued for transcoding");
    assert_eq!(one["filename"], "large.mp4");
    assert_eq!(one["width"], 640);
    let list = app.get_json("/videos?limit=10").await;
    assert!(list.as_array().unwrap().iter().any(|v| v["video_id"] == video_id), "{list}");
    // No spool is left behind.
    assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty());
}
both_backends!(out_of_order_and_parallel_chunks_make_the_same_hash, s3);

async fn resends_conflicts_checksums_and_missing_chunks(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.upload.min_chunk_bytes = 4096).await;
    let video = fixture("small");
    let chunk = 16 * 1024;
    let init = init_chunked(&app, "small.mp4", video.len(), chunk).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    let total = video.len().div_ceil(chunk);
    assert!(total >= 3, "the fixture must span several chunks");

    let first = send_chunk(&app, &id, 0, &video[..chunk], false).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["received_chunks"], 1);
    // The same bytes again: a no-op.
    let again: Value = send_chunk(&app, &id, 0, &video[..chunk], true).await.json().await.unwrap();
    assert_eq!(again["received_chunks"], 1);
    assert_eq!(again["received_bytes"], chunk);
    // Different bytes for a stored chunk.
    let mut other = video[..chunk].to_vec();
    other[100] ^= 0xff;
    assert_error(send_chunk(&app, &id, 0, &other, false).await, 409, "chunk-conflict").await;
    // Checksums: a wrong one is refused and nothing is recorded; a right one passes.
    let bytes = &video[chunk..2 * chunk];
    let wrong = app
        .client
        .post(app.url(&format!("/videos/upload_chunk/{id}/1")))
        .header("x-chunk-checksum", format!("blake3={}", blake3_hex(b"something else")))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_error(wrong, 422, "checksum-mismatch").await;
    let status = app.get_json(&format!("/videos/upload/{id}")).await;
    assert_eq!(status["received"], json!([0]));
    let right = app
        .client
        .post(app.url(&format!("/videos/upload_chunk/{id}/1")))
        .header("x-chunk-checksum", format!("blake3={}", blake3_hex(bytes)))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // SHA-256, which the upload page computes with WebCrypto: checked the same way.
    let with_sha256 = |sum: String| {
        app.client
            .post(app.url(&format!("/videos/upload_chunk/{id}/1")))
            .header("x-chunk-checksum", format!("sha256={sum}"))
            .body(bytes.to_vec())
            .send()
    };
    let sha256_hex = |b: &[u8]| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
    assert_error(with_sha256(sha256_hex(b"other")).await.unwrap(), 422, "checksum-mismatch").await;
    let right = with_sha256(sha256_hex(bytes)).await.unwrap();
    assert_eq!(right.status(), 200, "{:?}", right.text().await);
    // Wrong sizes and indices.
    assert_error(send_chunk(&app, &id, 2, &video[..10], false).await, 400, "bad-chunk").await;
    assert_error(send_chunk(&app, &id, 2, &video[..chunk + 1], false).await, 400, "bad-chunk").await;
    assert_error(send_chunk(&app, &id, total, &video[..10], false).await, 400, "bad-chunk").await;
    let bad_header = app
        .client
        .post(app.url(&format!("/videos/upload_chunk/{id}/2")))
        .header("x-chunk-checksum", "md5=abc")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_error(bad_header, 400, "unsupported-checksum").await;

    // Finalize with chunks missing names them.
    let response = app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "missing-chunks");
    let expected: Vec<usize> = (2..total).collect();
    assert_eq!(body["missing"], json!(expected));

    // Abort frees the disk; the upload is gone.
    let response = app.client.delete(app.url(&format!("/videos/upload/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty());
    assert_error(app.client.get(app.url(&format!("/videos/upload/{id}"))).send().await.unwrap(), 404, "unknown-upload")
        .await;
    assert_error(send_chunk(&app, &id, 3, &video[..10], false).await, 404, "unknown-upload").await;
    let entry = app.get_json(&format!("/videos/{}", init["video_id"])).await;
    assert_eq!(entry["status"], "aborted");
}
both_backends!(resends_conflicts_checksums_and_missing_chunks);

async fn bad_init_and_unknown_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (json!({"filename": "a.mp4", "size": 0}), 400, "invalid-size"),
        (json!({"filename": "a.mp4", "size": 10, "chunk_size": 1}), 400, "invalid-chunk-size"),
        (json!({"filename": "", "size": 10}), 400, "invalid-filename"),
        (json!({"filename": "a\u{0}b", "size": 10}), 400, "invalid-filename"),
        (json!({"filename": "a.mp4", "size": 1u64 << 62}), 413, "too-large"),
        (json!({"filename": "a.mp4", "size": "ten"}), 400, "invalid-json"),
        (json!({"filename": "a.mp4", "size": 10, "meta": [1]}), 400, "invalid-meta"),
        (json!({"filename": "a.mp4", "size": 10, "bucket": "../x"}), 400, "invalid-location"),
    ];
    for (body, status, code) in cases {
        let response = app.client.post(app.url("/videos/init")).json(&body).send().await.unwrap();
        assert_error(response, status, code).await;
    }
    let unknown = crate::helpers::hex_id();
    assert_error(
        app.client.get(app.url(&format!("/videos/upload/{unknown}"))).send().await.unwrap(),
        404,
        "unknown-upload",
    )
    .await;
    assert_error(app.client.get(app.url("/videos/upload/..%2f..")).send().await.unwrap(), 400, "invalid-upload-id")
        .await;
    assert_error(
        app.client.post(app.url(&format!("/videos/finalize/{unknown}"))).send().await.unwrap(),
        404,
        "unknown-upload",
    )
    .await;
    assert_error(app.client.get(app.url("/videos/12345")).send().await.unwrap(), 404, "unknown-video").await;
    assert_error(app.client.get(app.url("/videos/abc")).send().await.unwrap(), 400, "invalid-video-id").await;
    assert_error(app.client.get(app.url("/videos?limit=0")).send().await.unwrap(), 400, "invalid-query").await;
    // A chunk index that is not a number.
    let response = app.client.post(app.url(&format!("/videos/upload_chunk/{unknown}/x"))).send().await.unwrap();
    assert_error(response, 400, "invalid-path").await;
    // A cache-API upload is not a chunked one.
    let init = app.init("https://example.com/a.mp4", "b", None).await;
    let id = init["upload_id"].as_str().unwrap();
    assert_error(
        app.client.get(app.url(&format!("/videos/upload/{id}"))).send().await.unwrap(),
        400,
        "wrong-upload-api",
    )
    .await;
}
both_backends!(bad_init_and_unknown_ids);

async fn a_duplicate_through_chunks_is_one_object_and_two_entries(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("small");
    let mut hashes = Vec::new();
    for name in ["one.mp4", "two.mp4"] {
        let init = init_chunked(&app, name, video.len(), 256 * 1024).await;
        let id = init["upload_id"].as_str().unwrap().to_owned();
        for (i, bytes) in video.chunks(256 * 1024).enumerate() {
            assert_eq!(send_chunk(&app, &id, i, bytes, false).await.status(), 200);
        }
        let result: Value =
            app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
        hashes.push((result["status"].clone(), result["hash"].clone(), result["phash_distance"].clone()));
    }
    assert_eq!(hashes[0].0, "new");
    assert_eq!(hashes[1].0, "duplicate");
    assert_eq!(hashes[1].2, 0);
    assert_eq!(hashes[0].1, hashes[1].1);
    assert_eq!(app.objects().len(), 1);
    let list = app.get_json("/videos").await;
    assert_eq!(list.as_array().unwrap().iter().filter(|v| v["hash"] == hashes[0].1).count(), 2);
}
both_backends!(a_duplicate_through_chunks_is_one_object_and_two_entries, s3);
