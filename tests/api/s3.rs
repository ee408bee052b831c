//! `storage.backend = "s3"` against a real S3-compatible server (s3s-fs,
//! started by `make test`): objects and media live in the bucket, reads
//! stream from it or redirect to a presigned GET, and a `vidcache worker`
//! with no disk in common with `serve` transcodes from it.

use crate::helpers::{
    Backend, TestApp, assert_error, blake3_hex, fixture, hex_id, kafka_brokers, s3_endpoint, s3_keys_blocking,
    spawn_app_with, use_kafka, wait_for_transcode,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn keys(app: &TestApp) -> Vec<(String, u64)> {
    s3_keys_blocking(app.bucket.as_deref().expect("an S3 app"))
}

/// Removes this daemon's working copies of objects (everything under the
/// root that is not vidcache's own dot-file or the database).
fn drop_working_copies(root: &Path) {
    for path in crate::helpers::files_under(root) {
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if !rel.starts_with('.') && !rel.contains("vidcache.db") {
            std::fs::remove_file(path).unwrap();
        }
    }
}

#[actix_web::test]
async fn objects_and_media_live_in_the_bucket_and_are_read_from_it() {
    let app = spawn_app_with(Backend::S3, |s| s.transcode.workers = 1).await;
    let video = fixture("small");
    let result = app.upload("https://s3.example.com/a.mp4", "videos", None, video.clone()).await;
    assert_eq!(result["status"], "new", "{result}");
    let hash = result["hash"].as_str().unwrap().to_owned();
    assert_eq!(hash, blake3_hex(&video));

    // One object (a streamed upload is shared on S3: its one piece, named
    // by a layout).
    let objects = crate::helpers::s3_objects_blocking(app.bucket.as_deref().unwrap());
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, video.len() as u64);
    assert!(objects[0].0.ends_with(&format!("{hash}.mp4")), "{objects:?}");
    assert!(keys(&app).iter().any(|(k, _)| k.starts_with("layouts/")), "kept as its piece");

    // Reads come from the bucket, not from this daemon's disk.
    drop_working_copies(&app.root);
    let whole = app.client.get(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(blake3_hex(&whole.bytes().await.unwrap()), hash);
    let len = video.len();
    for (range, start, end) in [("bytes=100-199", 100, 199), ("bytes=-500", len - 500, len - 1)] {
        let part = app.client.get(app.url(&format!("/video/{hash}"))).header("range", range).send().await.unwrap();
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(part.headers()["content-range"], format!("bytes {start}-{end}/{len}").as_str());
        assert_eq!(part.bytes().await.unwrap().as_ref(), &video[start..=end], "{range}");
    }
    let beyond = app.client.get(app.url(&format!("/video/{hash}"))).header("range", format!("bytes={len}-"));
    assert_error(beyond.send().await.unwrap(), 416, "range-not-satisfiable").await;

    // The ladder is published to the bucket, manifests and marker included,
    // and served from there; the worker's working directory is gone.
    let meta = wait_for_transcode(&app, &hash, "ready", 300).await;
    assert!(!meta["transcode"]["renditions"].as_array().unwrap().is_empty());
    let media: Vec<String> =
        keys(&app).into_iter().map(|(k, _)| k).filter(|k| k.starts_with(&format!("media/{hash}/"))).collect();
    for needed in ["abr/.published", "abr/hls/master.m3u8", "abr/dash/manifest.mpd", "thumbnail.jpg"] {
        assert!(media.contains(&format!("media/{hash}/{needed}")), "{needed} missing from {media:?}");
    }
    assert!(media.iter().any(|k| k.ends_with(".m4s")), "{media:?}");
    assert!(!app.root.join(".media").join(&hash).join("abr").exists(), "the local ladder was a working copy");
    let master = app.client.get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_eq!(master.status(), 200);
    assert_eq!(master.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert!(master.text().await.unwrap().starts_with("#EXTM3U"));
    let probe = crate::transcode::ffprobe_json(&app.url(&format!("/media/{hash}/hls/master.m3u8")), "format=duration");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(duration > 1.0, "{duration}");
    let missing = app.client.get(app.url(&format!("/media/{hash}/hls/nothing.m3u8"))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let thumbnail = app.client.get(app.url(&format!("/media/{hash}/thumbnail.jpg"))).send().await.unwrap();
    assert_eq!(thumbnail.status(), 200);
    assert!(thumbnail.bytes().await.unwrap().starts_with(&[0xff, 0xd8]), "a JPEG");

    // Frames are grabbed from a working copy fetched from the bucket.
    let frame =
        app.client.get(app.url(&format!("/video/{hash}/frame"))).query(&[("pts_ns", "0")]).send().await.unwrap();
    assert_eq!(frame.status(), 200);

    // Deleting removes the object and every derived file from the bucket.
    assert_eq!(app.client.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap().status(), 204);
    let left: Vec<_> = keys(&app).into_iter().filter(|(k, _)| k.contains(&hash) || k.starts_with("uploads/")).collect();
    assert!(left.is_empty(), "left in the bucket: {left:?}");
}

#[actix_web::test]
async fn redirected_reads_answer_a_presigned_get_that_honours_ranges() {
    let app = spawn_app_with(Backend::S3, |s| s.storage.s3.redirect_reads = true).await;
    let video = fixture("small");
    let result = app.upload("https://s3.example.com/r.mp4", "videos", None, video.clone()).await;
    let hash = result["hash"].as_str().unwrap().to_owned();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = client.get(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_eq!(answer.status(), 307);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&s3_endpoint()), "{location}");
    assert!(location.contains("X-Amz-Signature="), "a presigned URL: {location}");
    let part = client.get(&location).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &video[10..20]);
    let whole = client.get(&location).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(blake3_hex(&whole), hash);
    // A presigned URL does not open other keys.
    let (key, query) = location.split_once('?').unwrap();
    let other = format!("{key}0?{query}");
    assert!(client.get(&other).send().await.unwrap().status().is_client_error());
}

/// A `vidcache worker` process with a storage root of its own: no disk in
/// common with `serve`, only PostgreSQL, Kafka and the bucket.
struct Worker(Child);

impl Worker {
    fn start(app: &TestApp, root: &Path, brokers: &str, prefix: &str) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vidcache"));
        command
            .arg("worker")
            .env_remove("VIDCACHE_CONFIG")
            .env("VIDCACHE__STORAGE__ROOT", root)
            .env("VIDCACHE__STORAGE__BACKEND", "s3")
            .env("VIDCACHE__STORAGE__S3__ENDPOINT", s3_endpoint())
            .env("VIDCACHE__STORAGE__S3__BUCKET", app.bucket.as_deref().unwrap())
            .env("VIDCACHE__STORAGE__S3__ACCESS_KEY_ID", "vidcache-test")
            .env("VIDCACHE__STORAGE__S3__SECRET_ACCESS_KEY", "vidcache-test-secret")
            .env("VIDCACHE__DATABASE__URL", &app.database_url)
            .env("VIDCACHE__TRANSCODE__LEASE_SECS", "3")
            .env("VIDCACHE__TRANSCODE__WORKERS", "1")
            .env("VIDCACHE__TRANSCODE__PRESET", "ultrafast")
            .env("VIDCACHE__KAFKA__BROKERS", brokers)
            .env("VIDCACHE__KAFKA__TOPIC_PREFIX", prefix)
            .env("VIDCACHE__KAFKA__GROUP_ID", format!("{prefix}workers"))
            .env("VIDCACHE__KAFKA__PROPERTIES", "session.timeout.ms=6000,heartbeat.interval.ms=1000")
            .env("VIDCACHE__LOG__FILTER", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Self(command.spawn().expect("the vidcache binary runs"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_web::test]
async fn a_worker_with_no_shared_disk_transcodes_from_the_bucket_and_a_killed_one_is_replaced() {
    let brokers = kafka_brokers();
    let mut prefix = String::new();
    let app = spawn_app_with(Backend::S3, |s| prefix = use_kafka(s, &brokers)).await;
    let source = crate::helpers::fixture("long");
    let result = app.upload(&format!("https://s3.example.com/w-{}.mp4", hex_id()), "videos", None, source).await;
    let hash = result["hash"].as_str().unwrap().to_owned();

    let first_root = tempfile::tempdir().unwrap();
    let mut first = Worker::start(&app, first_root.path(), &brokers, &prefix);
    // Under way: its own disk holds the fetched source and a few segments.
    let work = first_root.path().join(".media").join(&hash).join(".abr.tmp").join("flat");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(work.exists() && std::fs::read_dir(&work).unwrap().count() > 3) {
        assert!(std::time::Instant::now() < deadline, "the worker never started writing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(
        !keys(&app).iter().any(|(k, _)| k.ends_with("abr/.published")),
        "nothing is published by a worker killed mid-job"
    );

    let second_root = tempfile::tempdir().unwrap();
    let _second = Worker::start(&app, second_root.path(), &brokers, &prefix);
    let meta = wait_for_transcode(&app, &hash, "ready", 300).await;
    assert!(!meta["transcode"]["renditions"].as_array().unwrap().is_empty());
    let media: Vec<String> =
        keys(&app).into_iter().map(|(k, _)| k).filter(|k| k.starts_with(&format!("media/{hash}/"))).collect();
    assert!(media.iter().all(|k| !k.contains(".tmp")), "no working files in the bucket: {media:?}");
    assert_eq!(media.iter().filter(|k| k.ends_with("master.m3u8")).count(), 1, "{media:?}");
    let probe = crate::transcode::ffprobe_json(&app.url(&format!("/media/{hash}/hls/master.m3u8")), "format=duration");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 20.0).abs() < 0.6, "{duration}");
    // The serving daemon's disk never held the ladder.
    assert!(!app.root.join(".media").join(&hash).join("abr").exists());
}

/// `vidcache migrate-store --to s3`, killed after its first object and run
/// again: every object and media file ends up in the bucket, checked by
/// BLAKE3, and what the first run copied is not copied again. A daemon on
/// the S3 backend then serves them from the bucket.
#[actix_web::test]
async fn migrate_store_killed_half_way_and_run_again_copies_everything_once() {
    let local = crate::helpers::spawn_app_with(Backend::Postgres, |s| s.transcode.workers = 1).await;
    let mut hashes = Vec::new();
    for name in ["small", "other", "large"] {
        let result = local.upload(&format!("https://m.example.com/{name}.mp4"), "videos", None, fixture(name)).await;
        assert_eq!(result["status"], "new", "{result}");
        hashes.push(result["hash"].as_str().unwrap().to_owned());
    }
    wait_for_transcode(&local, &hashes[0], "ready", 300).await;
    let bucket = format!("vc-test-{}", &hex_id()[..16]);
    let run = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vidcache"));
        command
            .args(["migrate-store", "--to", "s3"])
            .env_remove("VIDCACHE_CONFIG")
            .env("VIDCACHE__STORAGE__ROOT", &local.root)
            .env("VIDCACHE__DATABASE__URL", &local.database_url)
            .env("VIDCACHE__STORAGE__S3__ENDPOINT", s3_endpoint())
            .env("VIDCACHE__STORAGE__S3__BUCKET", &bucket)
            .env("VIDCACHE__STORAGE__S3__ACCESS_KEY_ID", "vidcache-test")
            .env("VIDCACHE__STORAGE__S3__SECRET_ACCESS_KEY", "vidcache-test-secret")
            .env("VIDCACHE__LOG__FILTER", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    };

    // The first run, killed as soon as it reports its first object.
    let mut first = run().spawn().unwrap();
    let mut out = std::io::BufReader::new(first.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("object ") && line.trim_end().ends_with(" copied"), "{line}");
    first.kill().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    first.wait().unwrap();
    let copied_first =
        std::iter::once(line.as_str()).chain(rest.lines()).filter(|l| l.trim_end().ends_with(" copied")).count();

    let second = run().output().unwrap();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stdout));
    let report = String::from_utf8_lossy(&second.stdout).into_owned();
    let summary = report.lines().last().unwrap();
    let copied_again = report.lines().filter(|l| l.starts_with("object ") && l.ends_with(" copied")).count();
    let present = report.lines().filter(|l| l.starts_with("object ") && l.ends_with(" present")).count();
    assert_eq!(copied_again + present, 3, "{report}");
    assert!(present >= copied_first, "what the first run copied is not copied again: {report}");
    assert_eq!(copied_again, 3 - present, "{report}");
    assert!(summary.contains("0 missing locally"), "{summary}");

    // Every object's bytes in the bucket hash to its name; the ladder is there.
    let keys = s3_keys_blocking(&bucket);
    let objects: Vec<_> = keys.iter().filter(|(k, _)| k.starts_with("objects/")).collect();
    assert_eq!(objects.len(), 3, "{objects:?}");
    let served = spawn_app_with(Backend::S3, |s| {
        s.database.url = local.database_url.clone();
        s.storage.s3.bucket = bucket.clone();
    })
    .await;
    for hash in &hashes {
        let bytes =
            served.client.get(served.url(&format!("/video/{hash}"))).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(&blake3_hex(&bytes), hash, "the bucket's copy is the video");
    }
    assert!(keys.iter().any(|(k, _)| *k == format!("media/{}/abr/.published", hashes[0])), "{keys:?}");
    let master = served.client.get(served.url(&format!("/media/{}/hls/master.m3u8", hashes[0]))).send().await.unwrap();
    assert_eq!(master.status(), 200);
    // A third run finds everything there.
    let third = run().output().unwrap();
    let third = String::from_utf8_lossy(&third.stdout).into_owned();
    assert!(third.lines().last().unwrap().starts_with("objects: 0 copied, 3 already there"), "{third}");
}

/// Two `serve` on one PostgreSQL database and one bucket, with disks of
/// their own: twenty concurrent uploads of the same bytes spread over both
/// give one object, one `new` and nineteen duplicates, and each daemon
/// reads what the other stored.
#[actix_web::test]
async fn twenty_uploads_of_the_same_bytes_over_two_daemons_store_one_object() {
    let one = spawn_app_with(Backend::S3, |_| {}).await;
    let (database, bucket) = (one.database_url.clone(), one.bucket.clone().unwrap());
    let two = spawn_app_with(Backend::S3, |s| {
        s.database.url = database;
        s.storage.s3.bucket = bucket;
    })
    .await;
    let video = fixture("large");
    let hash = blake3_hex(&video);
    let mut ids = Vec::new();
    for i in 0..20 {
        let app = if i % 2 == 0 { &one } else { &two };
        let init = app.init(&format!("https://two.example.com/{i}.mp4"), "videos", None).await;
        ids.push((app, init["upload_id"].as_str().unwrap().to_owned()));
    }
    let results = futures::future::join_all(ids.iter().map(|(app, id)| {
        let video = video.clone();
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
    assert!(results.iter().all(|r| r["hash"] == hash.as_str()));
    let bucket = one.bucket.as_deref().unwrap();
    let objects = crate::helpers::s3_objects_blocking(bucket);
    assert_eq!(objects.len(), 1, "{objects:?}");
    // The nineteen duplicates' pieces went; the object's stayed.
    assert_eq!(crate::helpers::s3_loose_pieces_blocking(bucket), Vec::<String>::new());
    assert_eq!(objects[0].1, video.len() as u64);
    for app in [&one, &two] {
        drop_working_copies(&app.root);
        let bytes = app.client.get(app.url(&format!("/video/{hash}"))).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(blake3_hex(&bytes), hash);
        assert_eq!(app.get_json(&format!("/meta/{hash}")).await["aliases"].as_array().unwrap().len(), 20);
    }
}

/// The commit window on the S3 backend, put in the bucket, on disk and in
/// the database by hand while the daemon is down, as a kill -9 leaves it:
/// (1) the object uploaded to the bucket, the spool not yet renamed: the
/// session is reopened and finishes as `new`, one object; (2) uploaded and
/// renamed, never recorded, and this disk's working copy lost: the bucket's
/// copy is probed and recorded.
#[actix_web::test]
async fn the_commit_window_on_s3_is_settled_at_start_up() {
    use crate::helpers::{fresh_database, init_upload, resume_upload};
    use crate::restart::{Daemon, free_port};
    use vidcache::domain::{Bucket, ContentHash, ObjectKey, Prefix, UploadId};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(Backend::S3, &root).await;
    let bucket = format!("vc-test-{}", &hex_id()[..16]);
    let endpoint = s3_endpoint();
    let env = [
        ("VIDCACHE__STORAGE__BACKEND", "s3"),
        ("VIDCACHE__STORAGE__S3__ENDPOINT", endpoint.as_str()),
        ("VIDCACHE__STORAGE__S3__BUCKET", bucket.as_str()),
        ("VIDCACHE__STORAGE__S3__ACCESS_KEY_ID", "vidcache-test"),
        ("VIDCACHE__STORAGE__S3__SECRET_ACCESS_KEY", "vidcache-test-secret"),
    ];
    let client = crate::helpers::http_client();
    let (video, other) = (fixture("small"), fixture("other"));
    let mut daemon = Daemon::start_with(&root, &database_url, free_port(), &env).await;
    let before_rename = init_upload(&client, &daemon.address, "https://x.test/before-rename.mp4").await;
    let renamed = init_upload(&client, &daemon.address, "https://x.test/renamed.mp4").await;
    daemon.kill9();

    // Streamed uploads are shared on S3; these two are made uploads kept
    // by this daemon (as a chunked one in small chunks is), whose commit
    // window this test is about.
    {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(&database_url).await.unwrap();
        let sql = format!("UPDATE upload_sessions SET staged = NULL WHERE id IN ('{before_rename}', '{renamed}')");
        db.execute_unprepared(&sql).await.unwrap();
        db.close().await.unwrap();
    }
    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    let s3 = crate::helpers::s3_bucket(&bucket).await;
    let key_for = |bytes: &[u8]| {
        let hash = ContentHash::parse(&blake3_hex(bytes)).unwrap();
        (hash, ObjectKey::new(&Bucket::parse("b").unwrap(), &Prefix::default(), &hash, "mp4"))
    };
    // 1. In the bucket, spool still there.
    let (other_hash, other_key) = key_for(&other);
    let id = UploadId::parse(&before_rename).unwrap();
    repo.record_progress(&id, other.len() as u64).await.unwrap();
    repo.begin_commit(&id, &other_hash, &other_key).await.unwrap();
    let spool = root.join(".spool").join(format!("{before_rename}.part"));
    std::fs::write(&spool, &other).unwrap();
    // 2. In the bucket, no spool, no working copy.
    let (hash, key) = key_for(&video);
    repo.begin_commit(&UploadId::parse(&renamed).unwrap(), &hash, &key).await.unwrap();
    let source = dir.path().join("source.mp4");
    std::fs::write(&source, &video).unwrap();
    {
        let (s3, spool, source) = (s3.clone(), spool.clone(), source.clone());
        let (other_key, key) = (other_key.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            s3.put_file_blocking(&spool, &format!("objects/{}", other_key.as_str())).unwrap();
            s3.put_file_blocking(&source, &format!("objects/{}", key.as_str())).unwrap();
        })
        .await
        .unwrap();
    }
    drop(repo);

    let mut daemon = Daemon::start_with(&root, &database_url, free_port(), &env).await;
    let first: serde_json::Value =
        client.get(format!("{}/upload/{renamed}", daemon.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(first["state"], "complete", "{first}");
    assert_eq!(first["result"]["status"], "new");
    let meta: serde_json::Value =
        client.get(format!("{}/meta/{hash}", daemon.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["width"], 320, "the bucket's copy was probed: {meta}");

    let second: serde_json::Value =
        client.get(format!("{}/upload/{before_rename}", daemon.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(second["state"], "receiving", "{second}");
    let finished = resume_upload(&client, &daemon.address, &before_rename, other.len(), &[]).await;
    assert_eq!(finished.status(), 200);
    let finished: serde_json::Value = finished.json().await.unwrap();
    assert_eq!(finished["hash"], other_hash.to_hex().as_str());
    assert_eq!(finished["status"], "new");
    let objects: Vec<_> = s3_keys_blocking(&bucket).into_iter().filter(|(k, _)| k.starts_with("objects/")).collect();
    assert_eq!(objects.len(), 2, "one object each, the re-committed one overwritten in place: {objects:?}");
    for hash in [hash.to_hex(), other_hash.to_hex()] {
        let bytes = client.get(format!("{}/video/{hash}", daemon.address)).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(blake3_hex(&bytes), hash);
    }
    daemon.kill9();
}

/// `storage.s3.working_copy_bytes`: the daemon's disk keeps only that many
/// bytes of objects (here none but the one in use); an evicted one is
/// fetched again from the bucket when a frame grab needs it.
#[actix_web::test]
async fn working_copies_are_evicted_and_fetched_again() {
    let app = spawn_app_with(Backend::S3, |s| s.storage.s3.working_copy_bytes = 0).await;
    let copies = |root: &Path| -> Vec<String> {
        crate::helpers::files_under(root)
            .into_iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .filter(|rel| !rel.starts_with('.') && !rel.contains("vidcache.db"))
            .collect()
    };
    let first = app.upload("https://wc.example.com/1.mp4", "videos", None, fixture("small")).await;
    let second = app.upload("https://wc.example.com/2.mp4", "videos", None, fixture("other")).await;
    let (first, second) = (first["hash"].as_str().unwrap().to_owned(), second["hash"].as_str().unwrap().to_owned());
    let kept = copies(&app.root);
    assert_eq!(kept.len(), 1, "only the copy in use is kept: {kept:?}");
    assert!(kept[0].contains(&second), "{kept:?}");
    let frame =
        app.client.get(app.url(&format!("/video/{first}/frame"))).query(&[("pts_ns", "0")]).send().await.unwrap();
    assert_eq!(frame.status(), 200, "an evicted copy is fetched again");
    let kept = copies(&app.root);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].contains(&first), "{kept:?}");
    assert_eq!(app.objects().len(), 2, "the bucket keeps both");
}
