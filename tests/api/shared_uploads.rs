//! Chunked uploads that any daemon takes (`upload::shared`): two `serve`
//! on one PostgreSQL and one bucket (s3s-fs), with no disk in common.
//! Chunks of one upload go to both daemons at once, a daemon is SIGKILLed
//! mid-chunk and mid-finalize, and the other one finishes. The file's hash
//! is merged from the chaining values each daemon computed for its chunks.

use crate::chunked::{init_chunked, send_chunk};
use crate::helpers::{
    Backend, TestApp, assert_error, blake3_hex, fixture, fresh_database, s3_endpoint, s3_keys_blocking,
    s3_loose_pieces_blocking, s3_objects_blocking, spawn_app_with,
};
use crate::restart::{Daemon, free_port};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

/// S3's smallest part, and so the smallest chunk of a shared upload; not a
/// power of two, so a chunk is several BLAKE3 subtrees.
const CHUNK: usize = 5 << 20;

/// Two daemons on one database and one bucket, each with its own root.
async fn two_daemons() -> (TestApp, TestApp) {
    let one = spawn_app_with(Backend::S3, |_| {}).await;
    let (database, bucket) = (one.database_url.clone(), one.bucket.clone().unwrap());
    let two = spawn_app_with(Backend::S3, |s| {
        s.database.url = database;
        s.storage.s3.bucket = bucket;
    })
    .await;
    (one, two)
}

/// The object key an upload's answer names (`file_path`).
fn result_key(result: &Value) -> String {
    result["file_path"].as_str().unwrap().to_owned()
}

/// `vidcache_shared_bytes_fetched_total` in a metrics text.
fn fetched(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("vidcache_shared_bytes_fetched_total "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn bucket_keys(bucket: &str, prefix: &str) -> Vec<(String, u64)> {
    s3_keys_blocking(bucket).into_iter().filter(|(k, _)| k.starts_with(prefix)).collect()
}

/// Sends every chunk of `video`, chunk `i` to `apps[i % 2]`, all at once.
async fn send_alternating(apps: [&TestApp; 2], id: &str, video: &[u8]) {
    let total = video.len().div_ceil(CHUNK);
    let answers: Vec<(usize, reqwest::StatusCode, Value)> = futures::stream::iter(0..total)
        .map(|i| async move {
            let bytes = &video[i * CHUNK..((i + 1) * CHUNK).min(video.len())];
            let response = send_chunk(apps[i % 2], id, i, bytes, i == 1).await;
            (i, response.status(), response.json().await.unwrap())
        })
        .buffer_unordered(total)
        .collect()
        .await;
    for (i, status, body) in &answers {
        assert_eq!(*status, 200, "chunk {i}: {body}");
        assert_eq!(body["chunk_hash"], blake3_hex(&video[i * CHUNK..((i + 1) * CHUNK).min(video.len())]));
    }
}

#[actix_web::test]
async fn chunks_of_one_upload_go_to_both_daemons_at_once_and_make_the_files_hash() {
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let video = fixture("large");
    let total = video.len().div_ceil(CHUNK);
    assert!(total >= 3, "the fixture must span several chunks: {} bytes", video.len());
    let init = init_chunked(&one, "shared.mp4", video.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(init["total_chunks"], total);

    send_alternating([&one, &two], &id, &video).await;
    // Either daemon knows what the other stored.
    for app in [&one, &two] {
        let status = app.get_json(&format!("/videos/upload/{id}")).await;
        assert_eq!(status["missing"], json!([]), "{status}");
        assert_eq!(status["received_bytes"], video.len());
    }
    // A re-send of the same bytes, to the daemon that did not take the
    // chunk, is a no-op; other bytes for it are a conflict, on either one.
    let first = &video[..CHUNK];
    let again: Value = send_chunk(&two, &id, 0, first, false).await.json().await.unwrap();
    assert_eq!(again["received_chunks"], total);
    let mut other = first.to_vec();
    other[4096] ^= 0xff;
    assert_error(send_chunk(&two, &id, 0, &other, false).await, 409, "chunk-conflict").await;
    assert_error(send_chunk(&one, &id, 0, &other, false).await, 409, "chunk-conflict").await;
    // A short chunk is refused before anything is reserved.
    assert_error(send_chunk(&two, &id, 1, &video[..1000], false).await, 400, "bad-chunk").await;
    // Every chunk is an object of its own in the bucket (each daemon's
    // spool is only its copy of the chunks it took: a cache).
    assert_eq!(bucket_keys(&bucket, &format!("uploads/{id}/")).len(), total);

    let response = two.client.post(two.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(result["size_bytes"], video.len());
    assert_eq!(result["video_id"], init["video_id"]);
    // Idempotent, on the other daemon too.
    let again: Value =
        one.client.post(one.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(again["hash"], result["hash"]);

    // One object: the upload's chunks, named by its layout (no byte was
    // moved to make it), and no other piece.
    let objects = s3_objects_blocking(&bucket);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, video.len() as u64);
    assert_eq!(bucket_keys(&bucket, "layouts/").len(), 1, "kept as its pieces");
    assert_eq!(bucket_keys(&bucket, "objects/"), vec![], "no joined copy");
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
    let hash = result["hash"].as_str().unwrap();
    let bytes = one.client.get(one.url(&format!("/video/{hash}"))).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(blake3_hex(&bytes), hash);
    // A range across the boundary of two pieces is stitched from both.
    let (start, end) = (CHUNK - 100, CHUNK + 99);
    let part = two
        .client
        .get(two.url(&format!("/video/{hash}")))
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], format!("bytes {start}-{end}/{}", video.len()).as_str());
    assert_eq!(part.bytes().await.unwrap().as_ref(), &video[start..=end]);
    let listed = one.get_json(&format!("/videos/{}", init["video_id"])).await;
    assert_eq!(listed["width"], 640, "analysed: {listed}");
    // Analysed while the pieces were fetched (the early probe), not from
    // the joined file after.
    let text = two.client.get(two.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(crate::early_probe::probes(&text, "stream"), 1, "{text}");
    assert_eq!(crate::early_probe::probes(&text, "file"), 0, "{text}");
    // And the object is the chunks where they are, not uploaded from
    // this daemon.
    assert!(text.contains("vidcache_objects_laid_out_total 1\n"), "{text}");
    // Only the chunks the other daemon alone took were fetched: the even
    // ones, but chunk 0, which was sent to this one again above.
    let taken_by_one: usize = (2..total).step_by(2).map(|i| CHUNK.min(video.len() - i * CHUNK)).sum();
    assert_eq!(fetched(&text), taken_by_one as u64, "{text}");

    // The same bytes again, through both: a duplicate, still one object.
    let init = init_chunked(&two, "again.mp4", video.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    send_alternating([&two, &one], &id, &video).await;
    let result: Value =
        one.client.post(one.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "duplicate", "{result}");
    assert_eq!(result["hash"], hash);
    assert_eq!(s3_objects_blocking(&bucket).len(), 1);
    // The duplicate's chunks went; the object's stayed.
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
    assert_eq!(bucket_keys(&bucket, "uploads/").len(), total);
    let bytes = two.client.get(two.url(&format!("/video/{hash}"))).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(blake3_hex(&bytes), hash);
}

/// A commit that wrote its layout and was then put back to receiving (a
/// kill -9 after the layout, with the spool still on the daemon's disk:
/// recovery reopens it), then aborted: its pieces stay, since the layout
/// may be what a video of the same bytes reads. The next upload of those
/// bytes is committed over the same layout (it is there already) and reads
/// back whole; without the rule, the abort would have deleted the pieces
/// under it.
#[actix_web::test]
async fn pieces_a_layout_names_outlive_their_aborted_upload() {
    use vidcache::domain::{Bucket, ContentHash, ObjectKey, Prefix, UploadId};
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let s3 = crate::helpers::s3_bucket(&bucket).await;
    let repo = vidcache::storage::Repository::connect(&one.database_url, 1).await.unwrap();
    let video = fixture("large");
    let init = init_chunked(&one, "first.mp4", video.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    send_alternating([&one, &two], &id, &video).await;
    let hash = ContentHash::parse(&blake3_hex(&video)).unwrap();
    let key = ObjectKey::new(&Bucket::parse("videos").unwrap(), &Prefix::default(), &hash, "mp4");
    let upload = UploadId::parse(&id).unwrap();
    repo.begin_commit(&upload, &hash, &key).await.unwrap();
    let pieces = crate::helpers::pieces_of(&video, CHUNK);
    {
        let (s3, key, upload) = (s3.clone(), key.clone(), upload.clone());
        tokio::task::spawn_blocking(move || s3.put_layout(&key, &upload, &pieces).unwrap()).await.unwrap();
    }
    repo.reopen_session(&upload).await.unwrap();
    let aborted = two.client.delete(two.url(&format!("/videos/upload/{id}"))).send().await.unwrap();
    assert_eq!(aborted.status(), 204);
    assert_eq!(bucket_keys(&bucket, &format!("uploads/{id}/")).len(), video.len().div_ceil(CHUNK));

    let init = init_chunked(&two, "second.mp4", video.len(), CHUNK).await;
    let second = init["upload_id"].as_str().unwrap().to_owned();
    send_alternating([&two, &one], &second, &video).await;
    let result: Value =
        one.client.post(one.url(&format!("/videos/finalize/{second}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], hash.to_hex().as_str());
    // The first layout stayed (If-None-Match): the second upload's pieces went.
    assert_eq!(bucket_keys(&bucket, &format!("uploads/{second}/")), vec![]);
    assert_eq!(s3_objects_blocking(&bucket), vec![(key.as_str().to_owned(), video.len() as u64)]);
    let bytes = two.client.get(two.url(&format!("/video/{}", hash.to_hex()))).send().await.unwrap();
    assert_eq!(blake3_hex(&bytes.bytes().await.unwrap()), hash.to_hex());
    // Deleting the video removes the layout and the pieces it names.
    assert_eq!(one.client.delete(one.url(&format!("/video/{}", hash.to_hex()))).send().await.unwrap().status(), 204);
    assert_eq!(bucket_keys(&bucket, "layouts/"), vec![]);
    assert_eq!(bucket_keys(&bucket, "uploads/"), vec![]);
}

#[actix_web::test]
async fn an_aborted_shared_upload_leaves_nothing_in_the_bucket() {
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let video = fixture("large");
    let init = init_chunked(&one, "aborted.mp4", video.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(send_chunk(&two, &id, 0, &video[..CHUNK], false).await.status(), 200);
    let missing = one.client.post(one.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
    assert_eq!(missing.status(), 409);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "missing-chunks", "{body}");
    let aborted = two.client.delete(two.url(&format!("/videos/upload/{id}"))).send().await.unwrap();
    assert_eq!(aborted.status(), 204);
    assert_error(send_chunk(&one, &id, 1, &video[CHUNK..2 * CHUNK], false).await, 404, "unknown-upload").await;
    assert_eq!(bucket_keys(&bucket, "uploads/"), vec![]);
    assert_eq!(bucket_keys(&bucket, "objects/"), vec![]);
}

/// A `serve` process on PostgreSQL and the test bucket, with the default
/// claim (`upload.claim_secs`, 3 s): a dead daemon's upload is taken over
/// within it.
async fn serve(root: &std::path::Path, database: &str, bucket: &str) -> Daemon {
    let endpoint = s3_endpoint();
    let env = [
        ("VIDCACHE__STORAGE__BACKEND", "s3"),
        ("VIDCACHE__STORAGE__S3__ENDPOINT", endpoint.as_str()),
        ("VIDCACHE__STORAGE__S3__BUCKET", bucket),
        ("VIDCACHE__STORAGE__S3__ACCESS_KEY_ID", "vidcache-test"),
        ("VIDCACHE__STORAGE__S3__SECRET_ACCESS_KEY", "vidcache-test-secret"),
        ("VIDCACHE__STORAGE__S3__PATH_STYLE", "true"),
        ("VIDCACHE__STORAGE__S3__SHARE_UPLOADS", "true"),
        ("VIDCACHE__TRANSCODE__ON_UPLOAD", "false"),
        ("VIDCACHE__AUTH__ALLOW_ANONYMOUS", "true"),
    ];
    Daemon::start_with(root, database, free_port(), &env).await
}

/// Two `serve` processes, `a` and `b`, on a fresh PostgreSQL database and
/// a bucket of their own, with roots `a` and `b` under `dir` (which lives
/// as long as this does).
struct Processes {
    dir: tempfile::TempDir,
    database: String,
    bucket: String,
    a: Daemon,
    b: Daemon,
}

impl Processes {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = fresh_database(Backend::Postgres, dir.path()).await;
        let bucket = format!("vc-test-{}", &crate::helpers::hex_id()[..16]);
        let a = serve(&dir.path().join("a"), &database, &bucket).await;
        let b = serve(&dir.path().join("b"), &database, &bucket).await;
        Self { dir, database, bucket, a, b }
    }
}

async fn post_chunk(client: &reqwest::Client, address: &str, id: &str, index: usize, bytes: Vec<u8>) -> u16 {
    let url = format!("{address}/videos/upload_chunk/{id}/{index}");
    client.post(url).body(bytes).send().await.unwrap().status().as_u16()
}

/// Finalizes on `address`, waiting out a claim a dead daemon left (409
/// `upload-busy` until it runs out).
async fn finalize(client: &reqwest::Client, address: &str, id: &str) -> Value {
    for _ in 0..100 {
        let response = client.post(format!("{address}/videos/finalize/{id}")).send().await.unwrap();
        let status = response.status();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Value = response.json().await.unwrap();
        if status == 200 {
            return body;
        }
        assert_eq!((status.as_u16(), body["code"].as_str()), (409, Some("upload-busy")), "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"), "a busy answer says when to come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the finalize of {id} never went through");
}

/// The finalizing daemon is SIGKILLed just after the finalize is sent (in
/// the claim, the completed multipart upload, the fetch, the analysis or
/// the commit: wherever it was), and a finalize on the other daemon
/// settles the upload once the claim runs out: `new`, the file's hash.
/// Then a daemon SIGKILLed while a chunk's body arrives loses none of the
/// chunks it acknowledged, and the other one takes the rest (a duplicate).
/// One object in the end, and nothing of either upload left in the bucket.
#[actix_web::test]
async fn a_daemon_killed_mid_chunk_and_mid_finalize_is_replaced_by_the_other() {
    let Processes { dir, database, bucket, mut a, b } = Processes::start().await;
    let client = crate::helpers::http_client();
    let video = fixture("large");
    let hash = blake3_hex(&video);
    let total = video.len().div_ceil(CHUNK);
    let chunk = |i: usize| video[i * CHUNK..((i + 1) * CHUNK).min(video.len())].to_vec();

    for round in 0..2 {
        let init: Value = client
            .post(format!("{}/videos/init", a.address))
            .json(&json!({"filename": "killed.mp4", "size": video.len(), "chunk_size": CHUNK}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = init["upload_id"].as_str().expect("an upload id").to_owned();
        if round == 0 {
            for i in 0..total {
                let to = if i % 2 == 0 { &a.address } else { &b.address };
                assert_eq!(post_chunk(&client, to, &id, i, chunk(i)).await, 200);
            }
            // A begins the finalize and dies somewhere in it.
            let url = format!("{}/videos/finalize/{id}", a.address);
            let pending = tokio::spawn(client.post(url).send());
            tokio::time::sleep(Duration::from_millis(150)).await;
            a.kill9();
            let _ = pending.await;
            let result = finalize(&client, &b.address, &id).await;
            assert_eq!((result["status"].as_str(), result["hash"].as_str()), (Some("new"), Some(hash.as_str())));
            a = serve(&dir.path().join("a"), &database, &bucket).await;
        } else {
            assert_eq!(post_chunk(&client, &a.address, &id, 0, chunk(0)).await, 200);
            // Chunk 1 starts on A: half its body, then A dies.
            let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
            let url = format!("{}/videos/upload_chunk/{id}/1", a.address);
            let body = reqwest::Body::wrap_stream(rx);
            let pending = tokio::spawn(client.post(url).body(body).send());
            use futures::SinkExt;
            tx.send(Ok(chunk(1)[..CHUNK / 2].to_vec())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            a.kill9();
            assert!(!pending.await.unwrap().is_ok_and(|r| r.status() == 200), "a chunk cut off is not acknowledged");
            // B sees chunk 0, not chunk 1, and takes the rest.
            let status: Value =
                client.get(format!("{}/videos/upload/{id}", b.address)).send().await.unwrap().json().await.unwrap();
            assert_eq!(status["received"], json!([0]), "{status}");
            for i in 1..total {
                assert_eq!(post_chunk(&client, &b.address, &id, i, chunk(i)).await, 200);
            }
            let result = finalize(&client, &b.address, &id).await;
            // The first round stored these bytes.
            assert_eq!((result["status"].as_str(), result["hash"].as_str()), (Some("duplicate"), Some(hash.as_str())));
        }
    }
    let objects = s3_objects_blocking(&bucket);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, video.len() as u64);
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
}

/// A tus upload on S3 is shared too: PATCHes go to either daemon in turn,
/// each starting from the tail (the bytes past the last whole part) the
/// other one left in the bucket.
#[actix_web::test]
async fn a_tus_upload_is_patched_through_both_daemons_in_turn() {
    use crate::tus::{patch, tus_create, tus_offset};
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let video = fixture("large");
    let location = tus_create(&one.address, &one.client, video.len()).await;
    let cuts = [0, 3 << 20, 10 << 20, 11 << 20, video.len()];
    for (i, span) in cuts.windows(2).enumerate() {
        let app = if i % 2 == 0 { &one } else { &two };
        let other = if i % 2 == 0 { &two } else { &one };
        // The other daemon knows where this one is.
        assert_eq!(tus_offset(&other.client, &other.url(&location)).await, (200, Some(span[0] as u64)));
        // A PATCH at the wrong offset changes nothing.
        let wrong = patch(other, &location, span[0] + 1, &video[span[0]..span[0] + 10], None).await;
        assert_eq!(wrong.status(), 409);
        let response = patch(app, &location, span[0], &video[span[0]..span[1]], None).await;
        assert_eq!(response.status(), 204, "{:?}", response.text().await);
        assert_eq!(response.headers()["upload-offset"], span[1].to_string().as_str());
        let tails: Vec<_> = bucket_keys(&bucket, "tails/");
        if span[1] < video.len() {
            // Exactly one tail: the one the recorded offset names.
            assert_eq!(tails.len(), 1, "{tails:?}");
            assert!(tails[0].0.ends_with(&format!("/{}", span[1])), "{tails:?}");
            assert_eq!(tails[0].1, (span[1] % (8 << 20)) as u64);
        }
    }
    let result = two.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(bucket_keys(&bucket, "tails/"), vec![]);
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
    assert_eq!(s3_objects_blocking(&bucket), vec![(result_key(&result), video.len() as u64)]);
}

/// The case with a real client: tus-js-client starts an upload on
/// daemon A, A is SIGKILLed in the middle of a PATCH, and the same client
/// finishes the upload on daemon B from the offset B reports, which keeps
/// every PATCH A acknowledged, with tus-js-client's default retries.
#[actix_web::test]
async fn tus_js_client_finishes_on_one_daemon_an_upload_whose_daemon_was_killed_mid_patch() {
    use crate::tus::{fixture_path, run_client};
    let Processes { dir: _dir, database: _, bucket, a, b } = Processes::start().await;
    let video = fixture("large");
    let chunk = 4usize << 20;
    let summary = run_client(
        "node",
        &[
            "tus_js_failover.mjs",
            &format!("{}/files/", a.address),
            &format!("{}/files/", b.address),
            &fixture_path("large"),
            &chunk.to_string(),
            &(chunk + chunk / 2).to_string(),
            &a.pid().to_string(),
        ],
    )
    .await;
    let resumed_from = summary["resumed_from"].as_u64().unwrap();
    // The first PATCH was acknowledged by A: B resumes at or past it.
    assert!(resumed_from >= chunk as u64, "{summary}");
    assert!(resumed_from < video.len() as u64, "{summary}");
    let client = crate::helpers::http_client();
    let result: Value =
        client.get(format!("{}/result", summary["url"].as_str().unwrap())).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(s3_objects_blocking(&bucket).len(), 1);
    assert_eq!(bucket_keys(&bucket, "tails/"), vec![]);
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
}

/// The daemon a PATCH is writing through is SIGKILLed while the body
/// streams, so its write claim is running when the client turns to the
/// other daemon: B answers `423 Locked` with `Retry-After: 1` until the
/// claim runs out (`upload.claim_secs`, 3 s by default, renewed every
/// second by a live holder), and tus-js-client with its default retries
/// (0, 1, 3, 5 s) finishes the upload there by its third (4 s after the
/// first try) (issue 29: a claim of ten minutes refused all
/// four retries).
#[actix_web::test]
async fn a_claim_left_by_a_daemon_killed_mid_patch_costs_tus_js_client_a_retry() {
    use crate::tus::{fixture_path, run_client};
    let Processes { dir: _dir, database: _, bucket, mut a, b } = Processes::start().await;
    let client = crate::helpers::http_client();
    let video = fixture("large");
    let location = crate::tus::tus_create(&a.address, &client, video.len()).await;
    let path = location.strip_prefix(&a.address).unwrap_or(&location).to_owned();
    // A PATCH whose body stops after 1 MiB and never ends: A holds the
    // write claim while it waits for the rest.
    let first = bytes::Bytes::copy_from_slice(&video[..1 << 20]);
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(futures::stream::pending());
    let patch = client
        .patch(format!("{}{path}", a.address))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", video.len().to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let patch = actix_web::rt::spawn(patch);
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.kill9();
    let _ = patch.await;
    let summary =
        run_client("node", &["tus_js_resume.mjs", &format!("{}{path}", b.address), &fixture_path("large"), "4194304"])
            .await;
    eprintln!("resumed on B: {summary}");
    assert!(summary["locked"].as_u64().unwrap() >= 1, "A's claim was running when B was asked: {summary}");
    assert_eq!(summary["retry_after"], "1", "{summary}");
    // By the third of tus-js-client's retries (4 s after its first try;
    // the fourth comes at 9 s): the claim ran out within 3 s of the kill.
    assert!(summary["resumed_in_ms"].as_u64().unwrap() < 7_000, "{summary}");
    let result: Value = client.get(format!("{}{path}/result", b.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(s3_objects_blocking(&bucket).len(), 1);
    assert_eq!(bucket_keys(&bucket, "tails/"), vec![]);
}

/// The multipart door on S3: parts signed and sent through both daemons at
/// once (each the S3 part of its number), listed and completed on either.
#[actix_web::test]
async fn multipart_parts_go_through_both_daemons() {
    use crate::multipart::{Multipart, base, parts_of, with_keys};
    let secret = |s: &mut vidcache::config::Settings| {
        with_keys(s);
        s.auth.presign_secret = "a secret both daemons share".into();
    };
    let one = spawn_app_with(Backend::S3, secret).await;
    let (database, bucket) = (one.database_url.clone(), one.bucket.clone().unwrap());
    let two = spawn_app_with(Backend::S3, |s| {
        secret(s);
        s.database.url = database;
        s.storage.s3.bucket = bucket.clone();
    })
    .await;
    let video = fixture("large");
    let parts = parts_of(&video);
    let (on_one, _) = Multipart::create(&one.client, &one.address, video.len()).await;
    let on_two =
        Multipart { client: &two.client, base: base(&two.address), id: on_one.id.clone(), key: on_one.key.clone() };
    let doors = [&on_one, &on_two];
    let etags: Vec<String> =
        futures::future::join_all(parts.iter().enumerate().map(|(i, part)| doors[i % 2].put(i + 1, part))).await;
    let listed = on_two.list().await;
    assert_eq!(listed.as_array().unwrap().len(), parts.len(), "{listed}");
    let all: Vec<Value> = etags.iter().enumerate().map(|(i, e)| json!({"PartNumber": i + 1, "ETag": e})).collect();
    let response = on_two.complete(json!(all)).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    // One whole object: a part may be sent again until the complete, so
    // the parts are not kept as the object; they go.
    let objects = bucket_keys(&bucket, "objects/");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, video.len() as u64);
    assert_eq!(bucket_keys(&bucket, "uploads/"), vec![]);
    assert_eq!(bucket_keys(&bucket, "layouts/"), vec![]);
    for app in [&one, &two] {
        assert!(crate::helpers::files_under(&app.root.join(".spool")).is_empty());
    }
}

/// tus `concatenation` over two daemons: each partial upload is created
/// and sent through a different daemon, the final one on either.
#[actix_web::test]
async fn partial_tus_uploads_on_both_daemons_are_concatenated() {
    use crate::tus::{create_final, create_partial, patch};
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let video = fixture("large");
    let cut = (9 << 20) + 77;
    let first = create_partial(&one.client, &one.address, cut).await;
    let second = create_partial(&two.client, &two.address, video.len() - cut).await;
    let (a, b) =
        futures::join!(patch(&one, &first, 0, &video[..cut], None), patch(&two, &second, 0, &video[cut..], None));
    assert_eq!((a.status(), b.status()), (reqwest::StatusCode::NO_CONTENT, reqwest::StatusCode::NO_CONTENT));
    let response = create_final(&two.client, &two.address, &[&first, &second]).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let result = one.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(s3_objects_blocking(&bucket).len(), 1);
    // Nothing of the three uploads is left in the bucket but the object.
    assert_eq!(bucket_keys(&bucket, "tails/"), vec![]);
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
}

/// A streamed body (`POST /upload/{id}`) is shared too: one that stalls on
/// daemon one is resumed on daemon two from the offset either reports. A
/// chunked upload in chunks under 1 MiB is not shared: reached through
/// the daemon that did not receive its bytes, it is refused with `409
/// upload-elsewhere`, never continued on an empty spool; through its own
/// daemon it goes on.
#[actix_web::test]
async fn a_streamed_body_resumes_on_the_other_daemon_and_an_unshared_upload_is_refused_there() {
    use crate::helpers::{init_upload, resume_upload};
    let (one, two) = two_daemons().await;
    let video = fixture("large");
    // A streamed body that stalls after 10 MiB (one whole part and a tail), on daemon one.
    let id = init_upload(&one.client, &one.address, "https://elsewhere.test/a.mp4").await;
    let head: Vec<Result<Vec<u8>, std::io::Error>> =
        video[..10 << 20].chunks(256 << 10).map(|c| Ok(c.to_vec())).collect();
    let body = futures::StreamExt::chain(futures::stream::iter(head), futures::stream::pending());
    let request = one
        .client
        .post(one.url(&format!("/upload/{id}")))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let stalled = actix_web::rt::spawn(request);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stalled.abort();
    // The body was cut off: what it brought is kept, as the tail and a part.
    let mut durable = 0;
    for _ in 0..100 {
        durable = two.get_json(&format!("/upload/{id}")).await["received_bytes"].as_u64().unwrap() as usize;
        if durable == 10 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(durable, 10 << 20, "a cut-off body keeps what it brought");
    let done = resume_upload(&two.client, &two.address, &id, durable, &video[durable..]).await;
    assert_eq!(done.status(), 200, "{:?}", done.text().await);
    let result: Value = done.json().await.unwrap();
    assert_eq!((result["status"].as_str(), result["hash"].as_str()), (Some("new"), Some(blake3_hex(&video).as_str())));

    let small = 512usize << 10;
    let init = init_chunked(&one, "small-chunks.mp4", video.len(), small).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(send_chunk(&one, &id, 0, &video[..small], false).await.status(), 200);
    assert_error(send_chunk(&two, &id, 1, &video[small..2 * small], false).await, 409, "upload-elsewhere").await;
    assert_eq!(send_chunk(&one, &id, 1, &video[small..2 * small], false).await.status(), 200);
}

/// A tus upload created with its length deferred is shared too: its parts
/// are put once a byte after them arrives (the last must know it is the
/// last), and the PATCH that declares the length, on the other daemon and
/// at the offset already reached, turns the tail into the last part.
#[actix_web::test]
async fn a_deferred_length_tus_upload_is_shared_and_declared_on_the_other_daemon() {
    use crate::tus::{create_deferred, patch_at, tus_offset};
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let video = fixture("large");
    let location = create_deferred(&one.client, &one.address).await;
    // Exactly one part's worth first: it stays the tail until more comes.
    let part = 8usize << 20;
    assert_eq!(patch_at(&one.client, &one.url(&location), 0, None, video[..part].to_vec()).await.status(), 204);
    let tails = bucket_keys(&bucket, "tails/");
    assert_eq!(tails.len(), 1, "{tails:?}");
    assert_eq!(tails[0].1, part as u64);
    // The rest on the other daemon, still without a length.
    assert_eq!(patch_at(&two.client, &two.url(&location), part, None, video[part..].to_vec()).await.status(), 204);
    assert_eq!(tus_offset(&one.client, &one.url(&location)).await, (200, Some(video.len() as u64)));
    let pending = one.client.get(one.url(&format!("{location}/result"))).send().await.unwrap();
    assert_error(pending, 409, "upload-incomplete").await;
    // The length, declared by an empty PATCH on daemon one.
    let declared = patch_at(&one.client, &one.url(&location), video.len(), Some(video.len()), Vec::new()).await;
    assert_eq!(declared.status(), 204, "{:?}", declared.text().await);
    let result = two.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(bucket_keys(&bucket, "tails/"), vec![]);
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
}

/// `storage.s3.share_uploads = false`: every upload lives in the daemon that
/// created it, as for one daemon; another daemon refuses it.
#[actix_web::test]
async fn with_sharing_off_an_upload_lives_in_its_daemon() {
    use crate::tus::{patch, tus_create};
    let off = |s: &mut vidcache::config::Settings| s.storage.s3.share_uploads = false;
    let one = spawn_app_with(Backend::S3, off).await;
    let (database, bucket) = (one.database_url.clone(), one.bucket.clone().unwrap());
    let two = spawn_app_with(Backend::S3, |s| {
        off(s);
        s.database.url = database;
        s.storage.s3.bucket = bucket.clone();
    })
    .await;
    let video = fixture("large");
    let location = tus_create(&one.address, &one.client, video.len()).await;
    assert_eq!(patch(&one, &location, 0, &video[..3 << 20], None).await.status(), 204);
    assert_error(patch(&two, &location, 3 << 20, &video[3 << 20..], None).await, 409, "upload-elsewhere").await;
    assert_eq!(bucket_keys(&bucket, "uploads/"), vec![], "nothing of a kept upload is in the bucket");
    assert_eq!(patch(&one, &location, 3 << 20, &video[3 << 20..], None).await.status(), 204);
    let result = one.get_json(&format!("{location}/result")).await;
    assert_eq!(result["hash"], blake3_hex(&video));
}

/// The window of a shared finalize's commit, as a kill -9 of the daemon
/// that ran it leaves it, put in the database and the bucket by hand: the
/// session `committing` with its hash and key, on no daemon's disk. (1) Cut
/// off before the layout was written: no object at the key. The other
/// daemon's finalize reopens the session and commits it again: `new`, one
/// object, laid out once. (2) Cut off after the layout, before the record:
/// the object is in the bucket as its pieces. The other daemon's finalize
/// probes the object (its pieces, fetched) and records it: `new`, the same
/// object, nothing laid out again, and the pieces stay: they are the object.
#[actix_web::test]
async fn a_finalize_cut_off_in_its_commit_is_finished_by_the_other_daemon() {
    use vidcache::domain::{Bucket, ContentHash, ObjectKey, Prefix, UploadId};
    let (one, two) = two_daemons().await;
    let bucket = one.bucket.clone().unwrap();
    let s3 = crate::helpers::s3_bucket(&bucket).await;
    let repo = vidcache::storage::Repository::connect(&one.database_url, 1).await.unwrap();
    let laid_out = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("vidcache_objects_laid_out_total "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    let metrics = |app: &TestApp| {
        let url = app.url("/metrics");
        let client = app.client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    for (round, name) in [(1, "before"), (2, "after")] {
        let video = if round == 1 { fixture("large") } else { fixture("small") };
        let init = init_chunked(&one, &format!("{name}.mp4"), video.len(), CHUNK).await;
        let id = init["upload_id"].as_str().unwrap().to_owned();
        send_alternating([&one, &two], &id, &video).await;
        let hash = ContentHash::parse(&blake3_hex(&video)).unwrap();
        let key = ObjectKey::new(&Bucket::parse("videos").unwrap(), &Prefix::default(), &hash, "mp4");
        let upload = UploadId::parse(&id).unwrap();
        repo.begin_commit(&upload, &hash, &key).await.unwrap();
        if round == 2 {
            // What the commit wrote before the kill: the layout of the chunks.
            let pieces = crate::helpers::pieces_of(&video, CHUNK);
            let (s3, key, upload) = (s3.clone(), key.clone(), upload.clone());
            tokio::task::spawn_blocking(move || s3.put_layout(&key, &upload, &pieces).unwrap()).await.unwrap();
        }
        let before = laid_out(&metrics(&two).await);
        let response = two.client.post(two.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        let result: Value = response.json().await.unwrap();
        assert_eq!(result["status"], "new", "{name}: {result}");
        assert_eq!(result["hash"], hash.to_hex().as_str());
        let objects: Vec<_> = s3_objects_blocking(&bucket).into_iter().filter(|(k, _)| k == key.as_str()).collect();
        assert_eq!(objects, vec![(key.as_str().to_owned(), video.len() as u64)], "{name}");
        assert_eq!(bucket_keys(&bucket, &format!("objects/{}", key.as_str())), vec![], "{name}: no byte moved");
        assert_eq!(bucket_keys(&bucket, &format!("uploads/{id}/")).len(), video.len().div_ceil(CHUNK), "{name}");
        assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new(), "{name}");
        let bytes = one.client.get(one.url(&format!("/video/{}", hash.to_hex()))).send().await.unwrap();
        assert_eq!(blake3_hex(&bytes.bytes().await.unwrap()), hash.to_hex());
        let listed = one.get_json(&format!("/videos/{}", init["video_id"])).await;
        assert!(listed["width"].as_u64().unwrap() > 0, "{name}: analysed: {listed}");
        // Laid out again only when no object was there.
        assert_eq!(laid_out(&metrics(&two).await) - before, u64::from(round == 1), "{name}");
    }
}

/// An upload whose pieces all went through one daemon is finalized there
/// from what that daemon kept as they arrived: nothing fetched from the
/// bucket, analysed by the probe that read them, the object joined in the
/// bucket. Chunked (5 MiB chunks) and tus (8 MiB parts), each checked
/// against its own bytes. The same upload finalized on the other daemon
/// fetches every piece and answers the same.
#[actix_web::test]
async fn an_upload_through_one_daemon_is_finalized_there_without_a_fetch() {
    let (one, two) = two_daemons().await;
    let video = fixture("large");
    let metrics = |app: &TestApp| {
        let (client, url) = (app.client.clone(), app.url("/metrics"));
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    // Chunked, every chunk and the finalize on `one`.
    let init = init_chunked(&one, "one.mp4", video.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    for (i, chunk) in video.chunks(CHUNK).enumerate() {
        assert_eq!(send_chunk(&one, &id, i, chunk, false).await.status(), 200);
    }
    let result: Value =
        one.client.post(one.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    let text = metrics(&one).await;
    assert_eq!(fetched(&text), 0, "{text}");
    assert_eq!(crate::early_probe::probes(&text, "stream"), 1, "{text}");
    assert_eq!(one.get_json(&format!("/videos/{}", init["video_id"])).await["width"], 640);

    // tus, on `one`, in two PATCHes: 8 MiB parts; other bytes than above.
    let other = fixture("long");
    let location = crate::tus::tus_create(&one.address, &one.client, other.len()).await;
    let half = other.len() / 2;
    assert_eq!(crate::tus::patch(&one, &location, 0, &other[..half], None).await.status(), 204);
    assert_eq!(crate::tus::patch(&one, &location, half, &other[half..], None).await.status(), 204);
    let result = one.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&other));
    let text = metrics(&one).await;
    assert_eq!(fetched(&text), 0, "{text}");
    assert_eq!(crate::early_probe::probes(&text, "stream"), 2, "{text}");

    // The same chunks through `one`, finalized on `two`: all fetched.
    let small = fixture("small");
    let init = init_chunked(&one, "elsewhere.mp4", small.len(), CHUNK).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(send_chunk(&one, &id, 0, &small, false).await.status(), 200);
    let result: Value =
        two.client.post(two.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&small));
    assert_eq!(fetched(&metrics(&two).await), small.len() as u64);
}

/// tus `concatenation` cut off by a kill: daemon A is SIGKILLed while it
/// feeds the partials' bytes into the final upload (or commits it, or
/// closes the partials: wherever it was 200 ms in). The client never got
/// the final's `Location`; the final's record is there, and `GET
/// /files/{id}/result` on daemon B (once A's write claim runs out)
/// resumes the concatenation from the offset A recorded and commits it:
/// the file's hash, one object, and nothing of the partials or the final
/// left in the bucket.
#[actix_web::test]
async fn a_concatenation_cut_off_by_a_kill_is_finished_by_the_other_daemon() {
    use sea_orm::ConnectionTrait;
    let Processes { dir: _dir, database, bucket, mut a, b } = Processes::start().await;
    let client = crate::helpers::http_client();
    // Made here if no test made it yet (the transcode tests share it).
    let video = std::fs::read(crate::transcode::source_1080p()).unwrap();
    let cut = (17 << 20) + 333;
    let first = crate::tus::create_partial(&client, &a.address, cut).await;
    let second = crate::tus::create_partial(&client, &b.address, video.len() - cut).await;
    for (daemon, location, bytes) in [(&a, &first, &video[..cut]), (&b, &second, &video[cut..])] {
        let url = format!("{}{location}", daemon.address);
        assert_eq!(crate::tus::patch_at(&client, &url, 0, None, bytes.to_vec()).await.status(), 204);
    }

    let create = {
        let request = client
            .post(format!("{}/files/", a.address))
            .header("tus-resumable", "1.0.0")
            .header("upload-concat", format!("final;{first} {second}"));
        tokio::spawn(request.send())
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.kill9();
    let cut_off = create.await.unwrap();
    assert!(cut_off.is_err(), "the kill came after the final was created: no cut-off to resume: {cut_off:?}");

    // What the cut-off client does not know: the final's id, from its record.
    let raw = sea_orm::Database::connect(&database).await.unwrap();
    let rows = raw
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT id, state, durable_bytes FROM upload_sessions WHERE meta LIKE '%tus_concat%'",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one final upload was recorded before the kill");
    let id: String = rows[0].try_get("", "id").unwrap();
    let (state, durable): (String, i64) =
        (rows[0].try_get("", "state").unwrap(), rows[0].try_get("", "durable_bytes").unwrap());
    eprintln!("the kill left the final {state} at {durable} of {} bytes", video.len());

    let mut result = Value::Null;
    for _ in 0..100 {
        let response = client.get(format!("{}/files/{id}/result", b.address)).send().await.unwrap();
        let status = response.status().as_u16();
        result = response.json().await.unwrap();
        if status == 200 {
            break;
        }
        // A's claim on the final has not run out yet (tus: 423 Locked).
        assert_eq!((status, result["code"].as_str()), (423, Some("upload-busy")), "{result}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    let objects = s3_objects_blocking(&bucket);
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, video.len() as u64);
    assert_eq!(bucket_keys(&bucket, "tails/"), vec![]);
    assert_eq!(s3_loose_pieces_blocking(&bucket), Vec::<String>::new());
    // The client's own retry of the request the kill cut off is answered
    // with that final, not with a second upload of the partials.
    let again = crate::tus::create_final(&client, &b.address, &[&first, &second]).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["location"].to_str().unwrap(), format!("/files/{id}"));
    assert_eq!(s3_objects_blocking(&bucket).len(), 1);
}

/// A daemon keeps local copies of the pieces it takes only while its disk
/// keeps `upload.reserve_bytes` free beside them: with a reserve no disk
/// has (a length deferred, so the upload itself is not refused at
/// creation), nothing is kept, the finalize fetches every byte, and the
/// upload is committed all the same.
#[actix_web::test]
async fn a_daemon_short_of_disk_keeps_no_copy_and_the_finalize_fetches() {
    use crate::tus::{create_deferred, patch_at};
    let app = spawn_app_with(Backend::S3, |s| s.upload.reserve_bytes = 1 << 60).await;
    let video = fixture("large");
    let location = create_deferred(&app.client, &app.address).await;
    let sent = patch_at(&app.client, &app.url(&location), 0, Some(video.len()), video.clone()).await;
    assert_eq!(sent.status(), 204, "{:?}", sent.text().await);
    let result = app.get_json(&format!("{location}/result")).await;
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(fetched(&text), video.len() as u64, "{text}");
}
