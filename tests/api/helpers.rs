//! `spawn_app()` and fixtures: every test gets its own port, storage root,
//! database (a SQLite file, or a fresh PostgreSQL database) and metrics.
//! Test media is generated with the ffmpeg CLI, once per test run.

use sea_orm::ConnectionTrait;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};
use tempfile::TempDir;
use vidcache::config::Settings;
use vidcache::startup::Application;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// What several machines run on: PostgreSQL, and objects and media in
    /// a real S3-compatible server (`make test` starts s3s-fs and sets
    /// `VIDCACHE_TEST_S3`), in a bucket of the test's own.
    S3,
}

pub struct TestApp {
    pub address: String,
    pub root: PathBuf,
    pub client: reqwest::Client,
    pub uploads: Option<vidcache::upload::Uploads>,
    pub database_url: String,
    /// The S3 bucket objects and media live in (the `S3` backend).
    pub bucket: Option<String>,
    _dir: TempDir,
}

static TRACING: Once = Once::new();

/// Where PostgreSQL is; each test creates a database of its own there.
pub fn postgres_base() -> String {
    std::env::var("VIDCACHE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database URL for `backend`, under `dir` for SQLite.
pub async fn fresh_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => Settings::sqlite_url_under(dir),
        Backend::Postgres | Backend::S3 => {
            let name = format!("vidcache_test_{}", hex_id());
            let admin = sea_orm::Database::connect(format!("{}/postgres", postgres_base()))
                .await
                .expect("PostgreSQL must be running for the PostgreSQL suite (see make test)");
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
            admin.close().await.ok();
            format!("{}/{name}", postgres_base())
        }
    }
}

pub fn hex_id() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}

/// The tests' HTTP client. Idle connections are dropped after 1 s, well
/// before the daemon's 5 s keep-alive closes them: otherwise a request can
/// go out on a connection the daemon is closing at that moment and fail
/// with `IncompleteMessage` (seen when a test waited idle for a worker).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(1)).build().expect("an HTTP client")
}

/// A client that sends one header with every request.
pub fn http_client_with_header(name: &'static str, value: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(name, value.parse().expect("a header value"));
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(1))
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// A client that sends `id:secret` as HTTP Basic on every request that does
/// not set its own `Authorization` (reqwest fills only absent headers).
pub fn http_client_as(id: &str, secret: &str) -> reqwest::Client {
    use base64::Engine;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Basic {token}").parse().expect("a header value"));
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(1))
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns an app with settings adjusted by `tweak` (explicitly, not through
/// the process environment, which tests share).
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    TRACING.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            vidcache::telemetry::init_tracing("info,vidcache=debug", false);
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let mut settings = Settings::defaults_only().expect("defaults");
    settings.server.bind = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.storage.root = root.clone();
    settings.database.url = fresh_database(backend, &root_parent(&root)).await;
    settings.database.max_connections = 5;
    // Uploads in tests arrive at memory speed; let finalize wait for the
    // whole analysis, so dedup tests see complete signatures. The hand-over
    // to a background pass has its own test (near_duplicates.rs).
    settings.analysis.finish_budget_ms = 10_000;
    // Jobs are queued as uploads complete, but only the transcode tests
    // (which set workers) run them: the others need not pay for encoding.
    settings.transcode.workers = 0;
    settings.transcode.preset = "ultrafast".into();
    if let Backend::S3 = backend {
        use_s3(&mut settings);
    }
    tweak(&mut settings);
    let database_url = settings.database.url.clone();
    let bucket =
        (settings.storage.backend == vidcache::config::StorageBackend::S3).then(|| settings.storage.s3.bucket.clone());
    let kafka = settings.kafka.enabled();
    // With keys configured, the app's client speaks as the first one; a
    // test of refusals uses a client of its own.
    let client = match settings.auth.api_keys.first() {
        Some(key) => http_client_as(&key.id, &key.key),
        None => http_client(),
    };
    let app = Application::build(settings).await.expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let uploads = app.uploads();
    actix_web::rt::spawn(app.run_until_stopped());
    let app = TestApp { address, root, client, uploads: Some(uploads), database_url, bucket, _dir: dir };
    if kafka {
        // The daemon starts without waiting for its broker; tests that
        // produce to its topics need them to exist first.
        app.wait_ready(30).await;
    }
    app
}

fn root_parent(root: &Path) -> PathBuf {
    let parent = root.parent().expect("root has a parent").to_path_buf();
    std::fs::create_dir_all(&parent).ok();
    parent
}

impl TestApp {
    /// A view of a daemon running elsewhere (a spawned binary), for helpers
    /// that only need its address.
    pub fn external(address: &str, root: &Path) -> Self {
        Self {
            address: address.to_owned(),
            root: root.to_path_buf(),
            client: http_client(),
            uploads: None,
            database_url: String::new(),
            bucket: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let response = self.client.get(self.url("/readyz")).send().await.unwrap();
            if response.status() == 200 {
                return;
            }
            let body = response.text().await.unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "not ready after {secs} s: {body}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `GET path`, decoded as JSON (whatever the status).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client.get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    /// `POST /upload/init`; returns the whole JSON answer.
    pub async fn init(&self, url: &str, bucket: &str, prefix: Option<&str>) -> serde_json::Value {
        let mut body = serde_json::json!({"url": url, "bucket": bucket});
        if let Some(prefix) = prefix {
            body["prefix"] = prefix.into();
        }
        let response = self.client.post(self.url("/upload/init")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "init failed");
        response.json().await.unwrap()
    }

    /// Streams `bytes` with chunked transfer encoding to `POST /upload/{id}`.
    pub async fn send_body(&self, upload_id: &str, bytes: Vec<u8>) -> reqwest::Response {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        self.client
            .post(self.url(&format!("/upload/{upload_id}")))
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
            .unwrap()
    }

    /// init + streamed body; returns the ingest result.
    pub async fn upload(&self, url: &str, bucket: &str, prefix: Option<&str>, bytes: Vec<u8>) -> serde_json::Value {
        let init = self.init(url, bucket, prefix).await;
        let id = init["upload_id"].as_str().expect("a pending upload").to_owned();
        let response = self.send_body(&id, bytes).await;
        assert_eq!(response.status(), 200, "upload failed: {:?}", response.text().await);
        response.json().await.unwrap()
    }

    /// The stored objects: files under the root, or with the S3 backend
    /// the keys under `objects/` and `layouts/` in the bucket (as paths).
    pub fn objects(&self) -> Vec<PathBuf> {
        if let Some(bucket) = &self.bucket {
            return s3_keys_blocking(bucket)
                .into_iter()
                .filter(|(key, _)| key.starts_with("objects/") || key.starts_with("layouts/"))
                .map(|(key, _)| PathBuf::from(key))
                .collect();
        }
        files_under(&self.root)
            .into_iter()
            .filter(|p| {
                let rel = p.strip_prefix(&self.root).unwrap();
                !rel.to_string_lossy().starts_with('.')
                    && rel.extension().is_some_and(|e| e != "db" && e != "db-wal" && e != "db-shm")
            })
            .collect()
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// `POST /upload/init` on any daemon (in-process or spawned); returns the upload id.
pub async fn init_upload(client: &reqwest::Client, address: &str, url: &str) -> String {
    let init: serde_json::Value = client
        .post(format!("{address}/upload/init"))
        .json(&serde_json::json!({"url": url, "bucket": "b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    init["upload_id"].as_str().expect("a pending upload").to_owned()
}

/// Sends the rest of an upload from `offset`, as a resuming client does.
pub async fn resume_upload(
    client: &reqwest::Client,
    address: &str,
    upload_id: &str,
    offset: usize,
    rest: &[u8],
) -> reqwest::Response {
    client
        .post(format!("{address}/upload/{upload_id}"))
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/octet-stream")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap()
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Asserts an error answer: the status and a JSON body with that code and a message.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    let got = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(got, status, "wrong status, body: {body}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("error body is not JSON: {body:?}"));
    assert_eq!(json["code"], code, "wrong code in {body}");
    assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {body}");
}

static FIXTURE_LOCK: Mutex<()> = Mutex::new(());

/// A generated test video, made once per run with the ffmpeg CLI.
/// `small`: 2 s 320x240 testsrc2 at 25 fps with a 440 Hz tone, H.264/AAC MP4.
/// `other`: 2 s mandelbrot, H.264 MP4, no audio.
/// `large`: 3 s of a noisy 640x360 cellular automaton at high quality, about
/// 16 MB (visually unlike the others, so no near-duplicate of them).
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

/// Where the fixture `name` is (made first if need be).
pub fn fixture_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vidcache-fixtures-{}-3", env!("CARGO_PKG_VERSION")));
    let path = dir.join(format!("{name}.mp4"));
    let _guard = FIXTURE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(format!("{name}.{}.tmp.mp4", std::process::id()));
        let args = match name {
            "small" => {
                "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440 -t 2 \
                        -c:v libx264 -pix_fmt yuv420p -c:a aac -movflags +faststart"
            }
            // Long enough that its transcode takes seconds, not a blink.
            "long" => {
                "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=330 -t 20 \
                        -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -movflags +faststart"
            }
            "other" => "-f lavfi -i mandelbrot=size=320x240:rate=25 -t 2 -c:v libx264 -pix_fmt yuv420p",
            "large" => {
                "-f lavfi -i cellauto=size=640x360:rate=25:rule=30:seed=1,noise=alls=60:allf=t:all_seed=1 -t 3 \
                        -c:v libx264 -preset ultrafast -crf 10 -pix_fmt yuv420p -movflags +faststart"
            }
            other => panic!("no fixture called {other}"),
        };
        ffmpeg_to(&tmp, args);
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// Runs the ffmpeg CLI with `args` (split on whitespace), writing `out`.
pub fn ffmpeg_to(out: &Path, args: &str) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args.split_whitespace())
        .arg(out)
        .status()
        .expect("ffmpeg must be installed (make test installs it)");
    assert!(status.success(), "ffmpeg {args} failed");
}

/// The Kafka broker the suite runs against (`make test` starts one and
/// sets `VIDCACHE_TEST_KAFKA`).
pub fn kafka_brokers() -> String {
    std::env::var("VIDCACHE_TEST_KAFKA")
        .expect("VIDCACHE_TEST_KAFKA must name a Kafka broker (make test starts tansu and sets it)")
}

/// Points `settings` at the test broker under a topic prefix and consumer
/// group of their own, so tests never see each other's messages.
pub fn use_kafka(settings: &mut Settings, brokers: &str) -> String {
    let prefix = format!("test{}.", &hex_id()[..12]);
    settings.kafka.brokers = brokers.to_owned();
    settings.kafka.topic_prefix = prefix.clone();
    settings.kafka.group_id = format!("{prefix}workers");
    // Joining a group waits about half the session timeout (KAFKA.md).
    settings.kafka.properties = vec!["session.timeout.ms=6000".into(), "heartbeat.interval.ms=1000".into()];
    prefix
}

/// The S3-compatible server the suite runs against (`make test` starts
/// s3s-fs and sets `VIDCACHE_TEST_S3`), and the keys it was started with
/// (`.ci/s3.sh`).
pub fn s3_endpoint() -> String {
    std::env::var("VIDCACHE_TEST_S3")
        .expect("VIDCACHE_TEST_S3 must name an S3 server (make test starts s3s-fs and sets it)")
}

/// Points `settings` at the test S3 server, in a fresh bucket (created by
/// the daemon at start-up, as it would be in production). Answers the bucket.
pub fn use_s3(settings: &mut Settings) -> String {
    let bucket = format!("vc-test-{}", &hex_id()[..16]);
    settings.storage.backend = vidcache::config::StorageBackend::S3;
    settings.storage.s3.endpoint = s3_endpoint();
    settings.storage.s3.bucket = bucket.clone();
    settings.storage.s3.region = "us-east-1".into();
    settings.storage.s3.access_key_id = "vidcache-test".into();
    settings.storage.s3.secret_access_key = "vidcache-test-secret".into();
    settings.storage.s3.path_style = true;
    // Every upload shared, as several daemons behind one address run.
    settings.storage.s3.share_uploads = true;
    bucket
}

/// The test bucket, as the daemon sees it.
pub async fn s3_bucket(bucket: &str) -> vidcache::storage::Bucket {
    let mut s3 = Settings::defaults_only().expect("defaults").storage.s3;
    s3.endpoint = s3_endpoint();
    s3.bucket = bucket.to_owned();
    s3.access_key_id = "vidcache-test".into();
    s3.secret_access_key = "vidcache-test-secret".into();
    vidcache::storage::Bucket::connect(&s3).await.expect("the test bucket")
}

/// The keys of the test bucket and their lengths, listed through the S3
/// API (blocks the calling thread for the listing).
pub fn s3_keys_blocking(bucket: &str) -> Vec<(String, u64)> {
    let name = bucket.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bucket = runtime.block_on(s3_bucket(&name));
        bucket.list_blocking("").expect("a listing")
    })
    .join()
    .unwrap()
}

/// `bytes` cut in pieces of `size`, as a shared upload of them records them.
pub fn pieces_of(bytes: &[u8], size: usize) -> Vec<vidcache::storage::PieceAt> {
    bytes
        .chunks(size)
        .enumerate()
        .map(|(i, piece)| vidcache::storage::PieceAt {
            number: i as u32,
            offset: (i * size) as u64,
            len: piece.len() as u64,
            hash: vidcache::domain::ContentHash::parse(&blake3_hex(piece)).unwrap(),
        })
        .collect()
}

/// The objects of the test bucket as (key, length): whole ones
/// (`objects/{key}`) and ones kept as their upload's pieces
/// (`layouts/{key}`, the length the layout's pieces add up to).
pub fn s3_objects_blocking(bucket: &str) -> Vec<(String, u64)> {
    let name = bucket.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bucket = runtime.block_on(s3_bucket(&name));
        let mut objects = Vec::new();
        for (key, len) in bucket.list_blocking("").expect("a listing") {
            if let Some(rest) = key.strip_prefix("objects/") {
                objects.push((rest.to_owned(), len));
            } else if let Some(rest) = key.strip_prefix("layouts/") {
                let object = vidcache::domain::ObjectKey::from_stored(rest).expect("a layout names an object key");
                match bucket.find_object_blocking(&object).expect("a layout reads") {
                    Some(stored) => objects.push((rest.to_owned(), stored.size())),
                    None => panic!("{key} vanished"),
                }
            }
        }
        objects.sort();
        objects
    })
    .join()
    .unwrap()
}

/// Pieces of uploads in the test bucket that no layout names: bytes an
/// upload left behind (`uploads/{id}/{n}`).
pub fn s3_loose_pieces_blocking(bucket: &str) -> Vec<String> {
    let name = bucket.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let bucket = runtime.block_on(s3_bucket(&name));
        let keys = bucket.list_blocking("").expect("a listing");
        let named: Vec<String> = keys
            .iter()
            .filter_map(|(key, _)| key.strip_prefix("layouts/"))
            .filter_map(|rest| vidcache::domain::ObjectKey::from_stored(rest).ok())
            .filter_map(|object| match bucket.find_object_blocking(&object) {
                Ok(Some(vidcache::storage::StoredObject::Pieces(layout))) => {
                    Some(format!("uploads/{}/", layout.upload))
                }
                _ => None,
            })
            .collect();
        keys.into_iter()
            .map(|(key, _)| key)
            .filter(|key| key.starts_with("uploads/") && !named.iter().any(|prefix| key.starts_with(prefix)))
            .collect()
    })
    .join()
    .unwrap()
}

/// Polls `/meta/{hash}` until the transcode status is `want` (panics on
/// timeout, or on `failed` when that is not what is wanted). Answers meta.
pub async fn wait_for_transcode(app: &TestApp, hash: &str, want: &str, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let meta = app.get_json(&format!("/meta/{hash}")).await;
        let status = meta["transcode"]["status"].as_str().unwrap_or_default().to_owned();
        if status == want {
            return meta;
        }
        assert!(status != "failed", "the transcode failed: {}", meta["transcode"]);
        assert!(std::time::Instant::now() < deadline, "still {status} after {secs} s, wanted {want}: {meta}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Generates a test per backend from one async body taking a `Backend`;
/// with `, s3` also one on PostgreSQL with objects and media in S3.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, s3) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
            #[actix_web::test]
            async fn s3() {
                super::$name($crate::helpers::Backend::S3).await
            }
        }
    };
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}
