//! Section 3: the S3-style multipart door with API keys and presigned part URLs.

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_error, blake3_hex, fixture, spawn_app_with};
use serde_json::{Value, json};
use vidcache::config::{ApiKey, Scope, Settings};

pub const PROJECT: &str = "p1";
const MIB: usize = 1 << 20;

pub fn with_keys(settings: &mut Settings) {
    settings.auth.api_keys = vec![
        ApiKey { id: "key1".into(), key: "secret-1".into(), project_id: PROJECT.into(), scopes: Scope::all() },
        ApiKey { id: "key2".into(), key: "secret-2".into(), project_id: "p2".into(), scopes: Scope::all() },
    ];
}

pub fn base(address: &str) -> String {
    format!("{address}/api/v1/project/{PROJECT}/direct_upload/s3/multipart")
}

pub struct Multipart<'a> {
    pub client: &'a reqwest::Client,
    pub base: String,
    pub id: String,
    pub key: String,
}

impl<'a> Multipart<'a> {
    pub async fn create(client: &'a reqwest::Client, address: &str, size: usize) -> (Self, Value) {
        let response = client
            .post(base(address))
            .basic_auth("key1", Some("secret-1"))
            .json(&json!({"filename": "clip.mp4", "metadata": {"size": size, "type": "video/mp4"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let created: Value = response.json().await.unwrap();
        let this = Self {
            client,
            base: base(address),
            id: created["uploadId"].as_str().unwrap().to_owned(),
            key: created["key"].as_str().unwrap().to_owned(),
        };
        (this, created)
    }

    /// A request on this upload (`{base}/{uploadId}{rest}?key=K`) with the project's API key.
    fn authed(&self, method: reqwest::Method, rest: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/{}{rest}", self.base, self.id))
            .query(&[("key", &self.key)])
            .basic_auth("key1", Some("secret-1"))
    }

    pub async fn sign(&self, part: usize) -> String {
        let response = self.authed(reqwest::Method::GET, &format!("/{part}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["url"].as_str().unwrap().to_owned()
    }

    /// Signs and uploads a part; returns its ETag.
    pub async fn put(&self, part: usize, bytes: &[u8]) -> String {
        let url = self.sign(part).await;
        let response = self.client.put(url).body(bytes.to_vec()).send().await.unwrap();
        assert_eq!(response.status(), 200, "part {part}: {:?}", response.text().await);
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", blake3_hex(bytes)));
        etag
    }

    pub async fn list(&self) -> Value {
        let response = self.authed(reqwest::Method::GET, "").send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn complete(&self, parts: Value) -> reqwest::Response {
        self.authed(reqwest::Method::POST, "/complete").json(&json!({ "parts": parts })).send().await.unwrap()
    }
}

/// The fixture cut into 5 MiB parts and a smaller last one.
pub fn parts_of(video: &[u8]) -> Vec<&[u8]> {
    assert!(video.len() > 3 * 5 * MIB, "the large fixture must exceed 15 MiB");
    video.chunks(5 * MIB).collect()
}

async fn multipart_flow_with_validation(backend: Backend) {
    let app: TestApp = spawn_app_with(backend, with_keys).await;
    let video = fixture("large");
    let parts = parts_of(&video);
    let (upload, created) = Multipart::create(&app.client, &app.address, video.len()).await;
    let video_id = created["video"]["id"].as_i64().expect("an integer video id");

    // Credentials: none, wrong secret, another project's key.
    let no_auth = crate::helpers::http_client()
        .post(base(&app.address))
        .json(&json!({"filename": "a.mp4"}))
        .send()
        .await
        .unwrap();
    assert_error(no_auth, 401, "unauthorized").await;
    let wrong =
        app.client.get(format!("{}/{}", upload.base, upload.id)).basic_auth("key1", Some("nope")).send().await.unwrap();
    assert_error(wrong, 401, "unauthorized").await;
    let other_project = app
        .client
        .get(format!("{}/{}", upload.base, upload.id))
        .basic_auth("key2", Some("secret-2"))
        .send()
        .await
        .unwrap();
    assert_error(other_project, 403, "wrong-project").await;

    // Parts out of order; a forged signature and one for another part fail.
    let mut etags = vec![String::new(); parts.len()];
    for i in [2usize, 0, 3, 1] {
        etags[i] = upload.put(i + 1, parts[i]).await;
    }
    let url = upload.sign(1).await;
    let forged = url.replace("signature=", "signature=00");
    assert_error(app.client.put(forged).body(vec![1u8; 10]).send().await.unwrap(), 403, "bad-signature").await;
    let moved = url.replace(&format!("{}/1?", upload.id), &format!("{}/2?", upload.id));
    assert_error(app.client.put(moved).body(vec![1u8; 10]).send().await.unwrap(), 403, "bad-signature").await;
    let unsigned = format!("{}/{}/1", upload.base, upload.id);
    assert_error(app.client.put(unsigned).body(vec![1u8; 10]).send().await.unwrap(), 403, "bad-signature").await;
    let bad_number = app
        .client
        .get(format!("{}/{}/10001", upload.base, upload.id))
        .basic_auth("key1", Some("secret-1"))
        .send()
        .await
        .unwrap();
    assert_error(bad_number, 400, "invalid-part-number").await;

    let listed = upload.list().await;
    let numbers: Vec<i64> = listed.as_array().unwrap().iter().map(|p| p["PartNumber"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (1..=parts.len() as i64).collect::<Vec<_>>());
    assert_eq!(listed[0]["ETag"], etags[0]);

    let all: Vec<Value> = etags.iter().enumerate().map(|(i, e)| json!({"PartNumber": i + 1, "ETag": e})).collect();
    // Out of order, a wrong ETag, an unknown part: 400.
    let mut swapped = all.clone();
    swapped.swap(0, 1);
    assert_error(upload.complete(json!(swapped)).await, 400, "invalid-parts").await;
    let mut bad_etag = all.clone();
    bad_etag[1]["ETag"] = json!(format!("\"{}\"", blake3_hex(b"x")));
    assert_error(upload.complete(json!(bad_etag)).await, 400, "invalid-parts").await;
    let mut unknown = all.clone();
    unknown.push(json!({"PartNumber": 9, "ETag": etags[0]}));
    assert_error(upload.complete(json!(unknown)).await, 400, "invalid-parts").await;
    // A small part that is not last: replace part 2 with 1 MiB and try.
    let small_etag = upload.put(2, &parts[1][..MIB]).await;
    let mut small = all.clone();
    small[1]["ETag"] = json!(small_etag);
    assert_error(upload.complete(json!(small)).await, 400, "invalid-parts").await;
    // Put the real part 2 back, then complete.
    assert_eq!(upload.put(2, parts[1]).await, etags[1]);
    let response = upload.complete(json!(all)).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["status"], "new");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(result["video"]["id"], video_id);
    let one = app.get_json(&format!("/videos/{video_id}")).await;
    assert_eq!(one["hash"], result["hash"]);
    let stored = app.client.get(app.url(&format!("/video/{}", result["hash"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(stored.bytes().await.unwrap().as_ref(), video.as_slice());
    // Parts are gone from the spool.
    assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty());
}
both_backends!(multipart_flow_with_validation, s3);

async fn a_client_that_lost_its_state_lists_parts_and_finishes(backend: Backend) {
    let app = spawn_app_with(backend, with_keys).await;
    let video = fixture("large");
    let parts = parts_of(&video);
    let (upload, _) = Multipart::create(&app.client, &app.address, video.len()).await;
    upload.put(1, parts[0]).await;
    upload.put(2, parts[1]).await;
    // The client forgets everything but the upload id and key.
    let stored = upload.list().await;
    let have: Vec<u64> = stored.as_array().unwrap().iter().map(|p| p["PartNumber"].as_u64().unwrap()).collect();
    assert_eq!(have, vec![1, 2]);
    for (i, part) in parts.iter().enumerate() {
        if !have.contains(&(i as u64 + 1)) {
            upload.put(i + 1, part).await;
        }
    }
    let listed = upload.list().await;
    let all: Vec<Value> =
        listed.as_array().unwrap().iter().map(|p| json!({"PartNumber": p["PartNumber"], "ETag": p["ETag"]})).collect();
    let response = upload.complete(json!(all)).await;
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video));
}
both_backends!(a_client_that_lost_its_state_lists_parts_and_finishes, s3);

async fn expired_urls_abort_and_the_session_limit(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        with_keys(s);
        s.auth.presign_ttl_secs = 1;
        s.upload.max_sessions_per_key = 2;
        s.upload.max_bytes = 4000;
    })
    .await;
    let (upload, _) = Multipart::create(&app.client, &app.address, 100).await;
    let url = upload.sign(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_error(app.client.put(url).body(vec![1u8; 10]).send().await.unwrap(), 403, "url-expired").await;

    let (_second, _) = Multipart::create(&app.client, &app.address, 100).await;
    let third = app
        .client
        .post(base(&app.address))
        .basic_auth("key1", Some("secret-1"))
        .json(&json!({"filename": "c.mp4", "metadata": {"size": 1}}))
        .send()
        .await
        .unwrap();
    assert_error(third, 429, "too-many-uploads").await;

    upload.put(1, &[7u8; 1000]).await;
    // Parts may not take the upload past upload.max_bytes.
    let url = upload.sign(2).await;
    assert_error(app.client.put(url).body(vec![8u8; 3500]).send().await.unwrap(), 400, "bad-chunk").await;
    let response = app
        .client
        .delete(format!("{}/{}", upload.base, upload.id))
        .query(&[("key", &upload.key)])
        .basic_auth("key1", Some("secret-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(!app.root.join(".spool").join(format!("{}.pieces", upload.id)).exists());
    // The slot is free again.
    let (_fourth, _) = Multipart::create(&app.client, &app.address, 100).await;
}
both_backends!(expired_urls_abort_and_the_session_limit);
