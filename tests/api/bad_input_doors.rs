//! Malformed, hostile and oversized input to the front doors: every answer
//! is a 4xx with a JSON `{code, message}`, and nothing is stored.

use crate::both_backends;
use crate::chunked::init_chunked;
use crate::helpers::{Backend, assert_error, files_under, spawn_app_with};
use crate::multipart::{Multipart, base, with_keys};
use serde_json::json;

async fn hostile_input_to_the_doors(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        with_keys(s);
        s.upload.max_bytes = 1 << 30;
        s.upload.max_chunk_bytes = 1 << 20;
    })
    .await;
    let init = init_chunked(&app, "x.mp4", 3 << 20, 1 << 20).await;
    let id = init["upload_id"].as_str().unwrap();
    let chunk_url = app.url(&format!("/videos/upload_chunk/{id}/0"));

    // A form that is not one, and a form without a file field.
    let response = app
        .client
        .post(&chunk_url)
        .header("content-type", "multipart/form-data; boundary=zzz")
        .body("this is not a form")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-form").await;
    let form = reqwest::multipart::Form::new().text("other", "value");
    assert_error(app.client.post(&chunk_url).multipart(form).send().await.unwrap(), 400, "invalid-form").await;
    // A declared chunk far larger than allowed is refused before it is read.
    let response = app
        .client
        .post(&chunk_url)
        .header("content-length", (64u64 << 20).to_string())
        .body(vec![0u8; 10])
        .send()
        .await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error());
    }
    assert_error(
        app.client.post(&chunk_url).header("x-chunk-checksum", "blake3=zz").body(vec![0u8; 10]).send().await.unwrap(),
        400,
        "invalid-checksum",
    )
    .await;

    // tus: oversized metadata, an oversized upload, a bad checksum header.
    let tus = |headers: Vec<(&'static str, String)>| {
        let mut request = app.client.post(app.url("/files/")).header("tus-resumable", "1.0.0");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    let huge = format!("filename {}", "QUFB".repeat(5000));
    assert_error(
        tus(vec![("upload-length", "10".into()), ("upload-metadata", huge)]).await.unwrap(),
        400,
        "invalid-metadata",
    )
    .await;
    assert_error(tus(vec![("upload-length", (2u64 << 30).to_string())]).await.unwrap(), 413, "too-large").await;
    assert_error(tus(vec![("upload-defer-length", "2".into())]).await.unwrap(), 400, "invalid-upload-defer-length")
        .await;
    assert_error(
        tus(vec![("upload-defer-length", "1".into()), ("upload-length", "10".into())]).await.unwrap(),
        400,
        "invalid-upload-length",
    )
    .await;
    assert_error(tus(vec![]).await.unwrap(), 400, "missing-upload-length").await;
    let response = tus(vec![
        ("upload-length", "10".into()),
        ("content-type", "application/offset+octet-stream".into()),
        ("upload-checksum", "md5 AAAA".into()),
    ])
    .await
    .unwrap();
    assert_error(response, 400, "unsupported-checksum").await;
    let response = app.client.head(app.url("/files/not-an-id")).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Multipart: broken credentials and bodies.
    let response = app
        .client
        .post(base(&app.address))
        .header("authorization", "Basic !!!not-base64")
        .json(&json!({"filename": "a.mp4"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthorized").await;
    let response = app
        .client
        .post(base(&app.address))
        .basic_auth("key1", Some("secret-1"))
        .json(&json!({"filename": "a.mp4", "metadata": {"size": -5}}))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-size").await;
    let response = app
        .client
        .post(base(&app.address))
        .basic_auth("key1", Some("secret-1"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-json").await;
    let (upload, _) = Multipart::create(&app.client, &app.address, 100).await;
    let response = upload.complete(json!("not a list")).await;
    assert_error(response, 400, "invalid-json").await;
    assert_error(upload.complete(json!([])).await, 400, "invalid-parts").await;
    let url = upload.sign(1).await;
    let tampered = url.replace("expires=", "expires=9");
    assert_error(app.client.put(tampered).body(vec![1u8; 10]).send().await.unwrap(), 403, "bad-signature").await;

    // Nothing of all that became an object or a part.
    assert!(app.objects().is_empty());
    assert!(!files_under(&app.root.join(".spool")).iter().any(|p| p.to_string_lossy().contains(".pieces")));
}
both_backends!(hostile_input_to_the_doors);

/// An upload is written only through the door it was opened by: a streamed
/// body, a PUT or a tus PATCH to a chunked upload's id, and a chunk to a
/// streamed upload's id, are refused and change nothing (before the doors
/// were types of their own, a body sent to a chunked upload's id was
/// written over its spool).
async fn an_upload_takes_bytes_only_through_its_own_door(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let chunked = init_chunked(&app, "doors.mp4", 3 << 20, 1 << 20).await;
    let id = chunked["upload_id"].as_str().unwrap();
    let sent = crate::chunked::send_chunk(&app, id, 0, &vec![7u8; 1 << 20], false).await;
    assert_eq!(sent.status(), 200);

    for request in
        [app.client.post(app.url(&format!("/upload/{id}"))), app.client.put(app.url(&format!("/upload/{id}")))]
    {
        let response = request.header("content-type", "application/octet-stream").body(vec![1u8; 4096]).send().await;
        assert_error(response.unwrap(), 400, "wrong-upload-api").await;
    }
    let status: serde_json::Value =
        app.client.get(app.url(&format!("/videos/upload/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["received"], json!([0]), "{status}");
    let spool = app.root.join(".spool").join(format!("{id}.part"));
    let bytes = std::fs::read(&spool).unwrap();
    assert!(bytes[..1 << 20].iter().all(|&b| b == 7), "chunk 0 is still what was sent");

    let streamed = crate::helpers::init_upload(&app.client, &app.address, "https://doors.test/streamed").await;
    let response = crate::chunked::send_chunk(&app, &streamed, 0, &[1u8; 1024], false).await;
    assert_error(response, 400, "wrong-upload-api").await;
    assert!(app.objects().is_empty());
}
both_backends!(an_upload_takes_bytes_only_through_its_own_door);
