//! Section 8, signed upload URLs: a backend with an `upload` key mints a
//! one-time, expiring URL; tus-js-client and the chunked door use it with
//! no other credential, once, within its limits.

use crate::helpers::{Backend, TestApp, assert_error, blake3_hex, fixture, http_client, spawn_app_with};
use crate::tus::{fixture_path, run_client};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use vidcache::config::{ApiKey, Scope};

const SECRET: &str = "a-server-secret-the-test-knows-for-forging-upload-tokens";

async fn keyed(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.auth.presign_secret = SECRET.into();
        s.auth.api_keys = vec![
            ApiKey { id: "backend".into(), key: "s".into(), project_id: "p".into(), scopes: vec![Scope::Upload] },
            ApiKey { id: "reader".into(), key: "r".into(), project_id: "p".into(), scopes: vec![Scope::Read] },
        ];
    })
    .await
}

async fn mint(app: &TestApp, body: Value) -> Value {
    let response = app.client.post(app.url("/api/v1/uploads")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// A token as the daemon makes one, with claims of the test's choosing.
fn forged(claims: Value) -> String {
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("vidcache upload\0{claims}").as_bytes());
    format!("{claims}.{}", hex::encode(&mac.finalize().into_bytes()[..16]))
}

async fn tus_js_client_uploads_through_a_signed_url_once(backend: Backend) {
    let app = keyed(backend).await;
    let video = fixture("large");
    let signed = mint(&app, json!({"max_size": video.len(), "content_type": "video/*", "meta": {"title": "t"}})).await;
    let tus_url = signed["tus_url"].as_str().unwrap();
    // tus-js-client with the URL only: it creates, is cut off, resumes.
    let summary = run_client("node", &["tus_js_client.mjs", tus_url, &fixture_path("large")]).await;
    let location = summary["url"].as_str().unwrap();
    assert!(location.contains("upload_token="), "the upload's URL keeps the token: {location}");
    let (path, query) = location.split_once('?').unwrap();
    let result: Value = http_client().get(format!("{path}/result?{query}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(result["status"], "new");

    // Used: a second creation is refused; so is another upload's URL.
    let again = http_client()
        .post(tus_url)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_error(again, 403, "upload-url-used").await;
    let elsewhere = http_client()
        .head(format!("{}/files/0123456789abcdef0123456789abcdef?{query}", app.address))
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
    // Without the token nothing opens: a key is needed.
    let bare = http_client().head(path).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(bare.status(), 401);
}
crate::both_backends!(tus_js_client_uploads_through_a_signed_url_once);

async fn the_chunked_door_takes_a_signed_url_within_its_limits(backend: Backend) {
    let app = keyed(backend).await;
    let video = fixture("small");
    let signed = mint(&app, json!({"max_size": video.len(), "cors_origin": "https://app.example"})).await;
    let token = signed["token"].as_str().unwrap().to_owned();
    let chunked_url = signed["chunked_url"].as_str().unwrap().to_owned();
    assert!(signed["url"].as_str().unwrap().ends_with(&format!("/?upload_token={token}")), "{signed}");

    // Too big, and from a page of another origin: refused.
    let big = http_client().post(&chunked_url).json(&json!({"filename": "a.mp4", "size": video.len() + 1})).send();
    assert_error(big.await.unwrap(), 413, "too-large").await;
    let evil = http_client()
        .post(&chunked_url)
        .header("origin", "https://evil.example")
        .json(&json!({"filename": "a.mp4", "size": video.len()}))
        .send()
        .await
        .unwrap();
    assert_error(evil, 403, "origin-not-allowed").await;

    // The token in a header, as the upload page sends it.
    let init: Value = http_client()
        .post(app.url("/videos/init"))
        .header("upload-token", &token)
        .header("origin", "https://app.example")
        .json(&json!({"filename": "a.mp4", "size": video.len(), "chunk_size": video.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = init["upload_id"].as_str().expect("created").to_owned();
    assert_eq!(id, signed["id"].as_str().unwrap(), "the upload is the one the URL named");
    let tokened = crate::helpers::http_client_with_header("upload-token", &token);
    let chunk = tokened
        .post(app.url(&format!("/videos/upload_chunk/{id}/0")))
        .header("content-type", "application/octet-stream")
        .body(video.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(chunk.status(), 200);
    let done: Value =
        tokened.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(done["hash"], blake3_hex(&video));

    let second = tokened.post(app.url("/videos/init")).json(&json!({"filename": "b.mp4", "size": 10})).send();
    assert_error(second.await.unwrap(), 403, "upload-url-used").await;
    // It opens its own upload only, and reads nothing.
    let other = tokened.get(app.url("/videos/upload/0123456789abcdef0123456789abcdef")).send().await.unwrap();
    assert_error(other, 403, "upload-token-mismatch").await;
    let read = tokened.get(app.url(&format!("/video/{}", done["hash"].as_str().unwrap()))).send().await.unwrap();
    assert_error(read, 401, "unauthorized").await;

    // Expired before use: refused; a forged or altered token too.
    let past = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 1;
    let expired = forged(json!({"u": "00112233445566778899aabbccddeeff", "e": past}));
    let late = http_client()
        .post(app.url("/videos/init"))
        .header("upload-token", expired)
        .json(&json!({"filename": "c.mp4", "size": 10}));
    assert_error(late.send().await.unwrap(), 403, "upload-url-expired").await;
    let altered = format!("{}x", &token[..token.len() - 1]);
    let bad = http_client()
        .post(app.url("/videos/init"))
        .header("upload-token", altered)
        .json(&json!({"filename": "c.mp4", "size": 10}));
    assert_error(bad.send().await.unwrap(), 403, "bad-upload-token").await;

    // Minting needs `upload`; bad requests are 400s.
    let reader = http_client()
        .post(app.url("/api/v1/uploads"))
        .basic_auth("reader", Some("r"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(reader, 403, "missing-scope").await;
    for (body, code) in [
        (json!({"expires_in": 5}), "invalid-ttl"),
        (json!({"max_size": 0}), "invalid-size"),
        (json!({"cors_origin": "https://app.example/path"}), "invalid-origin"),
        (json!({"meta": [1]}), "invalid-meta"),
        (json!({"meta": {"x": "y".repeat(2000)}}), "invalid-meta"),
        (json!({"content_type": "video mp4"}), "invalid-content-type"),
    ] {
        let response = app.client.post(app.url("/api/v1/uploads")).json(&body).send().await.unwrap();
        assert_error(response, 400, code).await;
    }
}
crate::both_backends!(the_chunked_door_takes_a_signed_url_within_its_limits);

/// One signed URL used by many requests at once, at every door that
/// creates: exactly one creates its upload; the others are told the URL is
/// used (never a 500), and nothing else was recorded.
async fn a_signed_url_raced_creates_one_upload(backend: Backend) {
    let app = keyed(backend).await;
    for door in ["chunked", "tus"] {
        let signed = mint(&app, json!({})).await;
        let token = signed["token"].as_str().unwrap().to_owned();
        let tokened = crate::helpers::http_client_with_header("upload-token", &token);
        let create = |n: usize| {
            let (tokened, app_url) = (tokened.clone(), app.url(""));
            async move {
                let response = match door {
                    "chunked" => tokened
                        .post(format!("{app_url}/videos/init"))
                        .json(&json!({"filename": format!("{n}.mp4"), "size": 1000})),
                    _ => tokened
                        .post(format!("{app_url}/files/"))
                        .header("tus-resumable", "1.0.0")
                        .header("upload-length", "1000"),
                }
                .send()
                .await
                .unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                (status, body)
            }
        };
        let answers = futures::future::join_all((0..8).map(create)).await;
        let created = answers.iter().filter(|(s, _)| *s == 200 || *s == 201).count();
        assert_eq!(created, 1, "{door}: {answers:?}");
        for (status, body) in answers.iter().filter(|(s, _)| *s != 200 && *s != 201) {
            assert_eq!(*status, 403, "{door}: {body}");
            assert!(body.contains("upload-url-used"), "{door}: {body}");
        }
    }
    // One entry for the chunked creation that won; none for those refused.
    let reader = crate::helpers::http_client_as("reader", "r");
    let listed: Value = reader.get(app.url("/videos")).send().await.unwrap().json().await.unwrap();
    let entries = listed.as_array().unwrap();
    assert_eq!(entries.iter().filter(|v| v["filename"].as_str().is_some_and(|f| f.ends_with(".mp4"))).count(), 1);
}
crate::both_backends!(a_signed_url_raced_creates_one_upload);
