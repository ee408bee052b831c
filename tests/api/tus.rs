//! Section 4: tus 1.0 at `/files/`, spoken by hand here (every header and
//! status) and by the real clients tuspy and tus-js-client.

use crate::both_backends;
use crate::helpers::{Backend, TestApp, assert_error, blake3_hex, files_under, fixture, spawn_app, spawn_app_with};
use base64::Engine;
use serde_json::Value;
use std::time::Duration;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn tus_create(app_address: &str, client: &reqwest::Client, length: usize) -> String {
    let response = client
        .post(format!("{app_address}/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length.to_string())
        .header("upload-metadata", format!("filename {},filetype {}", b64(b"clip.mp4"), b64(b"video/mp4")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");
    assert!(response.headers().contains_key("upload-expires"));
    response.headers()["location"].to_str().unwrap().to_owned()
}

pub async fn patch(
    app: &TestApp,
    location: &str,
    offset: usize,
    bytes: &[u8],
    checksum: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .client
        .patch(app.url(location))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(bytes.to_vec());
    if let Some(sum) = checksum {
        request = request.header("upload-checksum", sum);
    }
    request.send().await.unwrap()
}

pub async fn tus_offset(client: &reqwest::Client, url: &str) -> (u16, Option<u64>) {
    let response = client.head(url).header("tus-resumable", "1.0.0").send().await.unwrap();
    let offset = response.headers().get("upload-offset").map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), offset)
}

async fn the_tus_protocol_by_hand(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("small");
    let options = app.client.request(reqwest::Method::OPTIONS, app.url("/files/")).send().await.unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    let extensions = options.headers()["tus-extension"].to_str().unwrap().to_owned();
    for ext in ["creation", "creation-with-upload", "termination", "checksum", "expiration"] {
        assert!(extensions.split(',').any(|e| e == ext), "{ext} missing from {extensions}");
    }

    // Without Tus-Resumable: 412.
    let response = app.client.post(app.url("/files/")).header("upload-length", "10").send().await.unwrap();
    assert_error(response, 412, "unsupported-tus-version").await;

    let location = tus_create(&app.address, &app.client, video.len()).await;
    assert!(location.starts_with("/files/"));
    let (status, offset) = tus_offset(&app.client, &app.url(&location)).await;
    assert_eq!((status, offset), (200, Some(0)));

    let third = video.len() / 3;
    let response = patch(&app, &location, 0, &video[..third], None).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["upload-offset"], third.to_string().as_str());
    // A wrong offset: 409.
    assert_error(patch(&app, &location, 5, &video[5..third], None).await, 409, "offset-mismatch").await;
    // A wrong checksum: 460, and the offset does not move.
    let bad = format!("sha1 {}", b64(&[0u8; 20]));
    let response = patch(&app, &location, third, &video[third..2 * third], Some(bad)).await;
    assert_eq!(response.status(), 460);
    assert_eq!(tus_offset(&app.client, &app.url(&location)).await.1, Some(third as u64));
    // The right sha1 and blake3 checksums pass.
    let sha1 = {
        use sha1::Digest;
        sha1::Sha1::digest(&video[third..2 * third]).to_vec()
    };
    let response = patch(&app, &location, third, &video[third..2 * third], Some(format!("sha1 {}", b64(&sha1)))).await;
    assert_eq!(response.status(), 204);
    let rest = &video[2 * third..];
    let blake = blake3::hash(rest);
    let response = patch(&app, &location, 2 * third, rest, Some(format!("blake3 {}", b64(blake.as_bytes())))).await;
    assert_eq!(response.status(), 204, "{:?}", response.text().await);
    assert_eq!(response.headers()["upload-offset"], video.len().to_string().as_str());

    let result: Value = app.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new");
    assert_eq!(result["hash"], blake3_hex(&video));
    let entry = app.get_json(&format!("/videos/{}", result["video_id"])).await;
    assert_eq!(entry["filename"], "clip.mp4");
    assert_eq!(entry["content_type"], "video/mp4");
    let (status, offset) = tus_offset(&app.client, &app.url(&location)).await;
    assert_eq!((status, offset), (200, Some(video.len() as u64)));

    // creation-with-upload, then termination.
    let response = app
        .client
        .post(app.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", video.len().to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(video[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["upload-offset"], "1000");
    let second = response.headers()["location"].to_str().unwrap().to_owned();
    let response = app.client.delete(app.url(&second)).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(tus_offset(&app.client, &app.url(&second)).await.0, 404);
    // Bad input.
    let response = app
        .client
        .patch(app.url(&location))
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "unsupported-media-type").await;
    let response = app
        .client
        .post(app.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "ten")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-header").await;
    let response = app
        .client
        .post(app.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-metadata", "filename ***")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid-metadata").await;
}
both_backends!(the_tus_protocol_by_hand, s3);

/// A tus upload created with `Upload-Defer-Length: 1`; answers its location.
pub async fn create_deferred(client: &reqwest::Client, address: &str) -> String {
    let created = client
        .post(format!("{address}/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-defer-length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.headers()["location"].to_str().unwrap().to_owned()
}

/// A tus PATCH at `offset`, declaring `length` when given.
pub async fn patch_at(
    client: &reqwest::Client,
    url: &str,
    offset: usize,
    length: Option<usize>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = client
        .patch(url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream");
    if let Some(length) = length {
        request = request.header("upload-length", length.to_string());
    }
    request.body(body).send().await.unwrap()
}

/// `creation-defer-length`: an upload created without its length takes
/// PATCHes and stays open (HEAD says `Upload-Defer-Length: 1`) until a PATCH
/// declares `Upload-Length`; a length that contradicts what came is
/// refused, and one declared twice must agree. (After a kill -9:
/// `restart_doors::a_deferred_tus_length_survives_kill_9`.)
async fn a_deferred_length_is_declared_by_a_later_patch(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("small");
    let location = app.url(&create_deferred(&app.client, &app.address).await);
    let half = video.len() / 2;
    assert_eq!(patch_at(&app.client, &location, 0, None, video[..half].to_vec()).await.status(), 204);
    let head = app.client.head(&location).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.headers()["upload-defer-length"], "1");
    assert!(head.headers().get("upload-length").is_none());
    assert_eq!(head.headers()["upload-offset"], half.to_string().as_str());
    let early = app.client.get(format!("{location}/result")).send().await.unwrap();
    assert_error(early, 409, "upload-incomplete").await;
    // Shorter than what is already there.
    let short = patch_at(&app.client, &location, half, Some(half - 1), vec![]).await;
    assert_error(short, 400, "upload-length-mismatch").await;
    // Declared with the last bytes: the upload completes.
    let last = patch_at(&app.client, &location, half, Some(video.len()), video[half..].to_vec()).await;
    assert_eq!(last.status(), 204);
    assert_eq!(last.headers()["upload-offset"], video.len().to_string().as_str());
    let result: Value = app.client.get(format!("{location}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));

    // Declared in a PATCH of its own, then a different length is refused.
    let other = app.url(&create_deferred(&app.client, &app.address).await);
    assert_eq!(patch_at(&app.client, &other, 0, Some(5000), vec![]).await.status(), 204);
    let head = app.client.head(&other).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.headers()["upload-length"], "5000");
    let again = patch_at(&app.client, &other, 0, Some(6000), vec![1u8; 10]).await;
    assert_error(again, 400, "upload-length-mismatch").await;
}
both_backends!(a_deferred_length_is_declared_by_a_later_patch, s3);

async fn an_expired_tus_upload_answers_410_and_frees_its_disk(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.upload.session_ttl_secs = 1).await;
    let location = tus_create(&app.address, &app.client, 5000).await;
    assert_eq!(patch(&app, &location, 0, &[1u8; 1000], None).await.status(), 204);
    assert!(!files_under(&app.root.join(".spool")).is_empty());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    app.uploads.as_ref().expect("an in-process app").sweep_now();
    for _ in 0..100 {
        if tus_offset(&app.client, &app.url(&location)).await.0 == 410 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tus_offset(&app.client, &app.url(&location)).await.0, 410);
    assert_error(patch(&app, &location, 1000, &[1u8; 10], None).await, 410, "upload-expired").await;
    assert!(files_under(&app.root.join(".spool")).is_empty());
}
both_backends!(an_expired_tus_upload_answers_410_and_frees_its_disk);

/// The real clients, run as separate processes from `tests/clients/`, off
/// the test's thread (which also runs the app's actors).
pub async fn run_client(program: &str, args: &[&str]) -> Value {
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    actix_web::rt::task::spawn_blocking(move || run_client_blocking(&program, &args)).await.unwrap()
}

fn run_client_blocking(program: &str, args: &[String]) -> Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (make test installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|_| panic!("no JSON summary in {stdout}"))
}

pub fn fixture_path(name: &str) -> String {
    crate::helpers::fixture_path(name).to_string_lossy().into_owned()
}

pub fn python() -> String {
    std::env::var("VIDCACHE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[actix_web::test]
async fn tuspy_uploads_resumes_and_gets_the_result() {
    let app = spawn_app(Backend::Sqlite).await;
    let path = fixture_path("large");
    let video = fixture("large");
    let summary = run_client(&python(), &["tuspy_client.py", &format!("{}/files/", app.address), &path]).await;
    // The client stopped after its first chunks and a second client resumed.
    assert!(summary["interrupted_at"].as_u64().unwrap() > 0);
    assert!(summary["resumed_from"].as_u64().unwrap() >= summary["interrupted_at"].as_u64().unwrap());
    assert!(summary["resumed_from"].as_u64().unwrap() < video.len() as u64);
    let location = summary["url"].as_str().unwrap();
    let result: Value = app.client.get(format!("{location}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(result["status"], "new");
}

#[actix_web::test]
async fn tus_js_client_uploads_resumes_and_gets_the_result() {
    let app = spawn_app(Backend::Sqlite).await;
    let path = fixture_path("large");
    let video = fixture("large");
    let summary = run_client("node", &["tus_js_client.mjs", &format!("{}/files/", app.address), &path]).await;
    assert!(summary["interrupted_at"].as_u64().unwrap() > 0);
    assert!(summary["resumed_from"].as_u64().unwrap() >= summary["interrupted_at"].as_u64().unwrap());
    assert!(summary["resumed_from"].as_u64().unwrap() < video.len() as u64);
    let location = summary["url"].as_str().unwrap();
    let result: Value = app.client.get(format!("{location}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video));
}

/// Browsers on another origin (Uppy, tus-js-client in a page) need CORS:
/// a preflight, and the tus and ETag headers exposed on the answers.
#[actix_web::test]
async fn pages_on_other_origins_get_cors_preflights_and_exposed_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/files/"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PATCH")
        .header("access-control-request-headers", "tus-resumable,upload-offset,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("upload-offset"), "{allowed}");

    let created = app
        .client
        .post(app.url("/files/"))
        .header("origin", "https://app.example")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "100")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let exposed = created.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    for header in ["location", "upload-offset", "tus-resumable", "etag"] {
        assert!(exposed.contains(header), "{header} is not exposed: {exposed}");
    }
    // Without an Origin (curl, servers) nothing changes.
    let plain = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(!plain.headers().contains_key("access-control-allow-origin"));
}

/// Creates a partial upload (`Upload-Concat: partial`) of `length` bytes on `address`.
pub async fn create_partial(client: &reqwest::Client, address: &str, length: usize) -> String {
    let response = client
        .post(format!("{address}/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-concat", "partial")
        .header("upload-length", length.to_string())
        .header("upload-metadata", format!("filename {}", b64(b"parts.mp4")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// `POST /files/` with `Upload-Concat: final;<urls>`.
pub async fn create_final(client: &reqwest::Client, address: &str, partials: &[&str]) -> reqwest::Response {
    client
        .post(format!("{address}/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-concat", format!("final;{}", partials.join(" ")))
        .send()
        .await
        .unwrap()
}

/// tus `concatenation`: partial uploads are whole but never committed; a
/// final upload names them, is concatenated by the server and committed;
/// it takes no PATCH; partials that are not whole, not partial, unknown,
/// or already taken are refused.
async fn partial_uploads_are_concatenated_by_a_final_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let video = fixture("large");
    let options = app.client.request(reqwest::Method::OPTIONS, app.url("/files/")).send().await.unwrap();
    assert!(options.headers()["tus-extension"].to_str().unwrap().split(',').any(|e| e == "concatenation"));
    let cut = video.len() / 3 + 123;
    let first = create_partial(&app.client, &app.address, cut).await;
    let second = create_partial(&app.client, &app.address, video.len() - cut).await;
    let plain = tus_create(&app.address, &app.client, 10).await;
    assert_eq!(patch(&app, &second, 0, &video[cut..], None).await.status(), 204);
    let head = app.client.head(app.url(&second)).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.headers()["upload-concat"], "partial");
    assert_eq!(head.headers()["upload-offset"], (video.len() - cut).to_string().as_str());
    // Whole, a partial upload is not committed: no result, no object.
    let pending = app.client.get(app.url(&format!("{second}/result"))).send().await.unwrap();
    assert_error(pending, 409, "upload-incomplete").await;
    assert!(app.objects().is_empty());
    // The first is not whole yet; a plain upload is not a partial one; an unknown one.
    assert_eq!(patch(&app, &first, 0, &video[..1000], None).await.status(), 204);
    let (first_url, second_url) = (app.url(&first), app.url(&second));
    for list in [vec![first_url.as_str(), second.as_str()], vec![plain.as_str(), second.as_str()]] {
        assert_error(create_final(&app.client, &app.address, &list).await, 400, "invalid-upload-concat").await;
    }
    let unknown = format!("/files/{}", "0".repeat(32));
    assert_error(create_final(&app.client, &app.address, &[&unknown]).await, 400, "invalid-upload-concat").await;
    let with_length = app
        .client
        .post(app.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .header("upload-concat", format!("final;{first} {second}"))
        .send()
        .await
        .unwrap();
    assert_error(with_length, 400, "invalid-upload-length").await;
    assert_eq!(patch(&app, &first, 1000, &video[1000..cut], None).await.status(), 204);

    // An absolute URL and a path may be mixed.
    let response = create_final(&app.client, &app.address, &[&first_url, &second]).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let head = app.client.head(app.url(&location)).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.headers()["upload-concat"].to_str().unwrap(), format!("final;{first} {second}"));
    assert_eq!(head.headers()["upload-offset"], video.len().to_string().as_str());
    assert_error(patch(&app, &location, video.len(), b"x", None).await, 403, "concatenated-upload").await;
    let result = app.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(app.objects().len(), 1);
    let entry = app.get_json(&format!("/videos/{}", result["video_id"])).await;
    assert_eq!(entry["filename"], "parts.mp4");
    // The partials were taken. The same final sent again (its first answer
    // lost) is answered with the final they went into; any other cannot
    // use them.
    let again = create_final(&app.client, &app.address, &[&first, &second]).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(app.objects().len(), 1);
    assert_error(create_final(&app.client, &app.address, &[&second, &first]).await, 400, "invalid-upload-concat").await;
    assert_error(create_final(&app.client, &app.address, &[&first]).await, 400, "invalid-upload-concat").await;
    let _ = second_url;
}
both_backends!(partial_uploads_are_concatenated_by_a_final_one, s3);

/// tus-js-client with `parallelUploads`: partial uploads sent at once, then
/// the final one; the result is the file's.
#[actix_web::test]
async fn tus_js_client_parallel_uploads_are_concatenated() {
    let app = spawn_app(Backend::Sqlite).await;
    let path = fixture_path("large");
    let summary = run_client("node", &["tus_js_parallel.mjs", &format!("{}/files/", app.address), &path, "3"]).await;
    let location = summary["url"].as_str().unwrap();
    let result: Value = app.client.get(format!("{location}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&fixture("large")));
}
