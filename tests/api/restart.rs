//! The daemon is killed (SIGKILL, not asked) in the middle of a streamed
//! upload. After a restart the session is found, its recorded progress is
//! exactly what is on disk, nothing half-written is an object, and the
//! client finishes the upload from the reported offset.

use crate::both_backends;
use crate::helpers::{Backend, blake3_hex, fixture, fresh_database, init_upload, resume_upload};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Daemon {
    child: Child,
    pub address: String,
}

impl Daemon {
    pub async fn start(root: &std::path::Path, database_url: &str, port: u16) -> Self {
        Self::start_with(root, database_url, port, &[]).await
    }

    /// `start`, with more environment (configuration) of the test's.
    pub async fn start_with(root: &std::path::Path, database_url: &str, port: u16, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vidcache"))
            .arg("serve")
            .envs(env.iter().copied())
            .env("VIDCACHE__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("VIDCACHE__STORAGE__ROOT", root)
            .env("VIDCACHE__DATABASE__URL", database_url)
            .env("VIDCACHE__UPLOAD__CHECKPOINT_BYTES", (1u64 << 20).to_string())
            .env("VIDCACHE__LOG__FILTER", "warn")
            .env_remove("VIDCACHE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the vidcache binary runs");
        let address = format!("http://127.0.0.1:{port}");
        let client = crate::helpers::http_client();
        for _ in 0..600 {
            if client.get(format!("{address}/healthz")).send().await.is_ok() {
                return Self { child, address };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon did not come up on {address}");
    }

    /// The daemon's process id (a client script that kills it mid-request).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn status(client: &reqwest::Client, address: &str, id: &str) -> serde_json::Value {
    client.get(format!("{address}/upload/{id}")).send().await.unwrap().json().await.unwrap()
}

async fn killed_mid_upload_resumes_after_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(backend, &root).await;
    let video = fixture("large");
    let client = crate::helpers::http_client();
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;

    let id = init_upload(&client, &daemon.address, "https://x.test/killed.mp4").await;

    // Send 6 MiB, then stall forever, as a client on a bad link would.
    let sent = 6 << 20;
    let head: Vec<Result<Vec<u8>, std::io::Error>> = video[..sent].chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = futures::StreamExt::chain(futures::stream::iter(head), futures::stream::pending());
    let request = client
        .post(format!("{}/upload/{id}", daemon.address))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let upload = actix_web::rt::spawn(request);

    let mut progress = 0;
    for _ in 0..600 {
        progress = status(&client, &daemon.address, &id).await["received_bytes"].as_u64().unwrap();
        if progress >= 4 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(progress >= 4 << 20, "the upload made no durable progress ({progress})");

    daemon.kill9();
    let _ = upload.await;
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;

    // The session is found, and what it reports is exactly what is on disk.
    let after = status(&client, &daemon.address, &id).await;
    assert_eq!(after["state"], "receiving");
    let recorded = after["received_bytes"].as_u64().unwrap() as usize;
    assert!(recorded >= progress as usize && recorded <= sent, "recorded {recorded}, seen {progress}, sent {sent}");
    let spool = std::fs::read(root.join(".spool").join(format!("{id}.part"))).unwrap();
    assert_eq!(spool.len(), recorded, "the spool is cut back to the recorded progress");
    assert_eq!(spool, &video[..recorded], "the durable prefix holds the client's bytes");
    let objects: Vec<_> = crate::helpers::files_under(&root.join("b"));
    assert!(objects.is_empty(), "nothing half-written is an object: {objects:?}");

    // The client resumes from the reported offset and gets the whole file's hash.
    let resumed = resume_upload(&client, &daemon.address, &id, recorded, &video[recorded..]).await;
    assert_eq!(resumed.status(), 200);
    let result: serde_json::Value = resumed.json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video).as_str());
    assert_eq!(std::fs::read(root.join(result["file_path"].as_str().unwrap())).unwrap(), video);
    daemon.kill9();
}
both_backends!(killed_mid_upload_resumes_after_restart);

/// Crashes between "commit begun" and "session closed" are put on disk and in
/// the database by hand (the daemon is down), exactly as the committer leaves
/// them; the next start must settle each one.
async fn interrupted_commits_are_finished_at_start_up(backend: Backend) {
    use vidcache::domain::{Bucket, ContentHash, ObjectKey, Prefix, UploadId};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(backend, &root).await;
    let client = crate::helpers::http_client();
    let (video, other) = (fixture("small"), fixture("other"));
    let not_video = b"plain text, not a video".repeat(50);

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let renamed = init_upload(&client, &daemon.address, "https://x.test/renamed.mp4").await;
    let before_rename = init_upload(&client, &daemon.address, "https://x.test/before-rename.mp4").await;
    let bad = init_upload(&client, &daemon.address, "https://x.test/bad.mp4").await;
    daemon.kill9();

    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    let key_for = |bytes: &[u8]| {
        let hash = ContentHash::parse(&blake3_hex(bytes)).unwrap();
        (hash, ObjectKey::new(&Bucket::parse("b").unwrap(), &Prefix::default(), &hash, "mp4"))
    };
    // 1. Renamed into place, never recorded.
    let (hash, key) = key_for(&video);
    repo.begin_commit(&UploadId::parse(&renamed).unwrap(), &hash, &key).await.unwrap();
    std::fs::create_dir_all(root.join("b")).unwrap();
    std::fs::write(root.join(key.as_str()), &video).unwrap();
    // 2. Commit begun, spool not yet renamed.
    let (other_hash, other_key) = key_for(&other);
    let id = UploadId::parse(&before_rename).unwrap();
    repo.record_progress(&id, other.len() as u64).await.unwrap();
    repo.begin_commit(&id, &other_hash, &other_key).await.unwrap();
    std::fs::write(root.join(".spool").join(format!("{before_rename}.part")), &other).unwrap();
    // 3. Renamed into place, but the bytes are not a video.
    let (bad_hash, bad_key) = key_for(&not_video);
    repo.begin_commit(&UploadId::parse(&bad).unwrap(), &bad_hash, &bad_key).await.unwrap();
    std::fs::write(root.join(bad_key.as_str()), &not_video).unwrap();
    drop(repo);

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;

    let first = status(&client, &daemon.address, &renamed).await;
    assert_eq!(first["state"], "complete", "{first}");
    assert_eq!(first["result"]["hash"], hash.to_hex().as_str());
    assert_eq!(first["result"]["status"], "new");
    let meta: serde_json::Value =
        client.get(format!("{}/meta/{hash}", daemon.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["aliases"], serde_json::json!(["https://x.test/renamed.mp4"]));
    assert_eq!(meta["width"], 320, "the recovered object was probed: {meta}");

    let second = status(&client, &daemon.address, &before_rename).await;
    assert_eq!(second["state"], "receiving", "{second}");
    assert_eq!(second["received_bytes"], other.len() as u64);
    let finished = resume_upload(&client, &daemon.address, &before_rename, other.len(), &[]).await;
    assert_eq!(finished.status(), 200);
    assert_eq!(finished.json::<serde_json::Value>().await.unwrap()["hash"], other_hash.to_hex().as_str());

    let third = status(&client, &daemon.address, &bad).await;
    assert_eq!(third["state"], "failed", "{third}");
    assert!(!root.join(bad_key.as_str()).exists(), "a recovered non-video is removed");
    daemon.kill9();
}
both_backends!(interrupted_commits_are_finished_at_start_up);

/// The commit window of a near-duplicate: its bytes are kept as a variant,
/// so a kill -9 anywhere in the merge leaves them whole. (1) renamed into
/// place and never recorded: start-up analyses the object, decides again
/// and records it as a variant; (2) commit begun, spool not renamed: the
/// upload is receiving with every byte, and its finalize merges it.
async fn a_near_duplicate_killed_mid_merge_keeps_its_bytes(backend: Backend) {
    use vidcache::domain::{Bucket, ContentHash, ObjectKey, Prefix, UploadId};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(backend, &root).await;
    let client = crate::helpers::http_client();
    let corpus = crate::corpus::corpus();
    let file = |variant: &str| {
        std::fs::read(corpus.iter().find(|(f, v, _)| f == "life" && v == variant).unwrap().2.clone()).unwrap()
    };
    let (source, renamed_copy, spooled_copy) = (file("source"), file("240p"), file("crop5"));

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let first = init_upload(&client, &daemon.address, "https://v.test/source.mp4").await;
    let stored: serde_json::Value =
        resume_upload(&client, &daemon.address, &first, 0, &source).await.json().await.unwrap();
    assert_eq!(stored["status"], "new", "{stored}");
    // Its signature complete (finalize may have gone on a partial analysis,
    // completed in the background; a kill before that is the next test's).
    let meta_url = format!("{}/meta/{}", daemon.address, stored["hash"].as_str().unwrap());
    for _ in 0..300 {
        let meta: serde_json::Value = client.get(&meta_url).send().await.unwrap().json().await.unwrap();
        if meta["analysis"]["samples"].as_u64().unwrap_or(0) >= 10 && meta["analysis"]["audio"] == "fingerprinted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renamed = init_upload(&client, &daemon.address, "https://v.test/renamed.mp4").await;
    let spooled = init_upload(&client, &daemon.address, "https://v.test/spooled.mp4").await;
    daemon.kill9();

    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    let key_for = |bytes: &[u8]| {
        let hash = ContentHash::parse(&blake3_hex(bytes)).unwrap();
        (hash, ObjectKey::new(&Bucket::parse("b").unwrap(), &Prefix::default(), &hash, "mp4"))
    };
    let (copy_hash, copy_key) = key_for(&renamed_copy);
    repo.begin_commit(&UploadId::parse(&renamed).unwrap(), &copy_hash, &copy_key).await.unwrap();
    std::fs::write(root.join(copy_key.as_str()), &renamed_copy).unwrap();
    let (spool_hash, spool_key) = key_for(&spooled_copy);
    let id = UploadId::parse(&spooled).unwrap();
    repo.record_progress(&id, spooled_copy.len() as u64).await.unwrap();
    repo.begin_commit(&id, &spool_hash, &spool_key).await.unwrap();
    std::fs::write(root.join(".spool").join(format!("{spooled}.part")), &spooled_copy).unwrap();
    drop(repo);

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let recovered = status(&client, &daemon.address, &renamed).await;
    assert_eq!(recovered["state"], "complete", "{recovered}");
    let result = &recovered["result"];
    assert_eq!(result["status"], "duplicate", "{result}");
    assert_eq!(result["match"], "perceptual", "{result}");
    assert_eq!(result["hash"], stored["hash"], "answered as the stored video");
    assert_eq!(result["variant"], copy_hash.to_hex().as_str(), "its own bytes kept");
    let bytes = client.get(format!("{}/video/{copy_hash}", daemon.address)).send().await.unwrap();
    assert_eq!(blake3_hex(&bytes.bytes().await.unwrap()), copy_hash.to_hex());

    let second = status(&client, &daemon.address, &spooled).await;
    assert_eq!(second["state"], "receiving", "{second}");
    let finished = resume_upload(&client, &daemon.address, &spooled, spooled_copy.len(), &[]).await;
    let finished: serde_json::Value = finished.json().await.unwrap();
    assert_eq!((finished["status"].as_str(), finished["match"].as_str()), (Some("duplicate"), Some("perceptual")));
    assert_eq!(finished["variant"], spool_hash.to_hex().as_str(), "{finished}");
    let meta: serde_json::Value = client
        .get(format!("{}/meta/{}", daemon.address, stored["hash"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut kept: Vec<&str> =
        meta["variants"].as_array().unwrap().iter().map(|v| v["hash"].as_str().unwrap()).collect();
    kept.sort_unstable();
    let mut want = vec![copy_hash.to_hex(), spool_hash.to_hex()];
    want.sort_unstable();
    assert_eq!(kept, want, "{meta}");
    daemon.kill9();
}
both_backends!(a_near_duplicate_killed_mid_merge_keeps_its_bytes);

/// A signature finalize took from a partial analysis is completed by the
/// background pass; killed before that, start-up analyses the video again,
/// so its copies are found as they would have been.
async fn a_signature_left_partial_by_a_kill_is_completed_at_start_up(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(backend, &root).await;
    let client = crate::helpers::http_client();
    let corpus = crate::corpus::corpus();
    let source =
        std::fs::read(corpus.iter().find(|(f, v, _)| f == "life" && v == "source").unwrap().2.clone()).unwrap();
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let id = init_upload(&client, &daemon.address, "https://p.test/source.mp4").await;
    let stored: serde_json::Value =
        resume_upload(&client, &daemon.address, &id, 0, &source).await.json().await.unwrap();
    daemon.kill9();
    // As finalize would have stored it, handed a partial analysis: one
    // sample, the sound not yet known.
    let hash = vidcache::domain::ContentHash::parse(stored["hash"].as_str().unwrap()).unwrap();
    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    let mut partial = repo.find_signature(&hash).await.unwrap().expect("a signature");
    partial.samples.truncate(1);
    partial.audio = vidcache::dedup::AudioPrint::Unknown;
    partial.pending = true;
    repo.put_signature(&hash, &partial).await.unwrap();
    drop(repo);

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let meta_url = format!("{}/meta/{hash}", daemon.address);
    let mut meta = serde_json::Value::Null;
    for _ in 0..300 {
        meta = client.get(&meta_url).send().await.unwrap().json().await.unwrap();
        if meta["analysis"]["samples"].as_u64().unwrap_or(0) >= 10 && meta["analysis"]["audio"] == "fingerprinted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(meta["analysis"]["samples"].as_u64().unwrap() >= 10, "completed at start-up: {meta}");
    assert_eq!(meta["analysis"]["audio"], "fingerprinted", "{meta}");
    // And its copy is found by it.
    let copy = std::fs::read(corpus.iter().find(|(f, v, _)| f == "life" && v == "crf38").unwrap().2.clone()).unwrap();
    let id = init_upload(&client, &daemon.address, "https://p.test/copy.mp4").await;
    let merged: serde_json::Value = resume_upload(&client, &daemon.address, &id, 0, &copy).await.json().await.unwrap();
    assert_eq!(
        (merged["status"].as_str(), merged["match"].as_str()),
        (Some("duplicate"), Some("perceptual")),
        "{merged}"
    );
    daemon.kill9();
}
both_backends!(a_signature_left_partial_by_a_kill_is_completed_at_start_up);

#[actix_web::test]
async fn migrate_creates_the_schema_on_a_fresh_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-yet-there");

    let output = Command::new(env!("CARGO_BIN_EXE_vidcache"))
        .arg("migrate")
        .env("VIDCACHE__STORAGE__ROOT", &root)
        .env_remove("VIDCACHE__DATABASE__URL")
        .env_remove("VIDCACHE_CONFIG")
        .output()
        .unwrap();

    assert!(output.status.success(), "migrate failed: {}", String::from_utf8_lossy(&output.stderr));
    // Read-only, so that this check cannot create or migrate anything itself.
    let db = sea_orm::Database::connect(format!("sqlite://{}/vidcache.db?mode=ro", root.display())).await.unwrap();
    let applied = sea_orm::ConnectionTrait::query_one_raw(
        &db,
        sea_orm::Statement::from_string(sea_orm::DatabaseBackend::Sqlite, "SELECT count(*) AS n FROM seaql_migrations"),
    )
    .await
    .unwrap()
    .unwrap()
    .try_get::<i64>("", "n")
    .unwrap();
    let known = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    assert_eq!(applied as usize, known, "every migration was applied");
}

/// The commit window of an upload of bytes another project holds (section
/// 8: answered to it as a new video of its own). Killed (1) with its commit
/// begun and its bytes whole in the spool, before the claim, and (2) after
/// the claim was recorded but before its session closed: after a restart
/// both are answered `new`, at their own path, as they would have been
/// (before, (2) was answered `duplicate`, which a new video never is), and
/// each project holds the video with its own transcode job.
async fn a_claim_of_another_projects_bytes_killed_mid_commit_is_answered_new(backend: Backend) {
    use sea_orm::ConnectionTrait;
    use vidcache::domain::{Bucket, ContentHash, ObjectKey, Prefix, UploadId};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(backend, &root).await;
    let client = crate::helpers::http_client();
    let video = fixture("small");

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let first = init_upload(&client, &daemon.address, "https://a.test/theirs.mp4").await;
    let stored: serde_json::Value =
        resume_upload(&client, &daemon.address, &first, 0, &video).await.json().await.unwrap();
    assert_eq!(stored["status"], "new", "{stored}");
    let before_claim = init_upload(&client, &daemon.address, "https://b.test/mine.mp4").await;
    let after_claim = init_upload(&client, &daemon.address, "https://c.test/mine.mp4").await;
    daemon.kill9();

    // As the kills left them: sessions of projects pb and pc, commits begun
    // with every byte spooled; pc's claim recorded, its session not closed.
    let hash = ContentHash::parse(&blake3_hex(&video)).unwrap();
    let key = ObjectKey::new(&Bucket::parse("mine").unwrap(), &Prefix::default(), &hash, "mp4");
    let raw = sea_orm::Database::connect(&database_url).await.unwrap();
    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    for (id, project) in [(&before_claim, "pb"), (&after_claim, "pc")] {
        let moved = format!("UPDATE upload_sessions SET project_id = '{project}', bucket = 'mine' WHERE id = '{id}'");
        raw.execute_unprepared(&moved).await.unwrap();
        let id = UploadId::parse(id).unwrap();
        repo.record_progress(&id, video.len() as u64).await.unwrap();
        repo.begin_commit(&id, &hash, &key).await.unwrap();
        std::fs::write(root.join(".spool").join(format!("{id}.part")), &video).unwrap();
    }
    let claim = vidcache::storage::Holding {
        bucket: "mine".into(),
        prefix: String::new(),
        file_path: key.as_str().to_owned(),
        meta: serde_json::json!({}),
        since: chrono::Utc::now(),
        public: false,
        transcode: Some(vidcache::storage::TranscodeStatus::Queued),
        upload: Some(UploadId::parse(&after_claim).unwrap()),
    };
    assert!(repo.hold(&hash, "pc", &claim, None).await.unwrap());
    drop(repo);
    raw.close().await.unwrap();

    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    for id in [&before_claim, &after_claim] {
        let recovered = status(&client, &daemon.address, id).await;
        assert_eq!(recovered["state"], "complete", "{recovered}");
        assert_eq!(recovered["result"]["status"], "new", "{recovered}");
        assert_eq!(recovered["result"]["hash"], hash.to_hex().as_str());
        assert_eq!(recovered["result"]["file_path"], key.as_str(), "at its own path: {recovered}");
    }
    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    for project in ["pb", "pc"] {
        let held = repo.holding(project, &hash).await.unwrap().unwrap_or_else(|| panic!("{project} holds it"));
        assert_eq!(held.file_path, key.as_str());
    }
    // The first project's video and bytes are as they were.
    let bytes = client.get(format!("{}/video/{hash}", daemon.address)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(blake3_hex(&bytes), hash.to_hex());
    assert_eq!(repo.holding("default", &hash).await.unwrap().unwrap().file_path, stored["file_path"].as_str().unwrap());
    daemon.kill9();
}
both_backends!(a_claim_of_another_projects_bytes_killed_mid_commit_is_answered_new);
