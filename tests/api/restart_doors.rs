//! kill -9 in the middle of a chunked, a multipart and a tus upload, and of
//! the command-line uploader: after a restart each client resumes from what
//! the server reports, and the final hash is the source file's BLAKE3.

use crate::both_backends;
use crate::chunked::{init_chunked, send_chunk};
use crate::helpers::{
    Backend, TestApp, blake3_hex, files_under, fixture, fresh_database, init_upload, resume_upload, spawn_app,
};
use crate::multipart::{Multipart, parts_of};
use crate::restart::{Daemon, free_port};
use crate::tus::{tus_create, tus_offset};
use serde_json::{Value, json};
use std::time::Duration;

const MIB: usize = 1 << 20;

/// A body that sends `head` and then stalls forever, as a client on a dead link.
fn stalled(head: &[u8]) -> reqwest::Body {
    let blocks: Vec<Result<Vec<u8>, std::io::Error>> = head.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures::StreamExt::chain(futures::stream::iter(blocks), futures::stream::pending()))
}

async fn fresh_root(backend: Backend) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = fresh_database(backend, &root).await;
    (dir, root, database_url)
}

/// A `TestApp` look-alike for helpers that only need an address and a client.
fn view(daemon: &Daemon, root: &std::path::Path) -> TestApp {
    TestApp::external(&daemon.address, root)
}

async fn chunked_upload_survives_kill_9(backend: Backend) {
    let (_dir, root, database_url) = fresh_root(backend).await;
    let video = fixture("large");
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let app = view(&daemon, &root);
    let init = init_chunked(&app, "k.mp4", video.len(), MIB).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    let total = video.len().div_ceil(MIB);
    for i in 0..8 {
        assert_eq!(send_chunk(&app, &id, i, &video[i * MIB..(i + 1) * MIB], false).await.status(), 200);
    }
    // Chunk 8 is half sent when the daemon dies.
    let url = app.url(&format!("/videos/upload_chunk/{id}/8"));
    let pending = actix_web::rt::spawn(app.client.post(url).body(stalled(&video[8 * MIB..8 * MIB + MIB / 2])).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.kill9();
    let _ = pending.await;

    let daemon = Daemon::start(&root, &database_url, free_port()).await;
    let app = view(&daemon, &root);
    let status = app.get_json(&format!("/videos/upload/{id}")).await;
    assert_eq!(status["state"], "receiving");
    assert_eq!(status["received"], json!((0..8).collect::<Vec<_>>()), "exactly the acknowledged chunks: {status}");
    let missing: Vec<usize> =
        status["missing"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    assert_eq!(missing, (8..total).collect::<Vec<_>>());
    for i in missing {
        let bytes = &video[i * MIB..((i + 1) * MIB).min(video.len())];
        assert_eq!(send_chunk(&app, &id, i, bytes, false).await.status(), 200);
    }
    let result: Value =
        app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video), "{result}");
    assert_eq!(std::fs::read(root.join(result["file_path"].as_str().unwrap())).unwrap(), video);
}
both_backends!(chunked_upload_survives_kill_9);

async fn multipart_upload_survives_kill_9(backend: Backend) {
    let (_dir, root, database_url) = fresh_root(backend).await;
    let video = fixture("large");
    let parts = parts_of(&video);
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let client = crate::helpers::http_client();
    let (upload, _) = Multipart::create(&client, &daemon.address, video.len()).await;
    upload.put(1, parts[0]).await;
    upload.put(2, parts[1]).await;
    // Signed before the crash; the secret is kept under the root, so it stays valid.
    let url_for_4 = upload.sign(4).await;
    let url_for_3 = upload.sign(3).await;
    let pending = actix_web::rt::spawn(client.put(url_for_3).body(stalled(&parts[2][..2 * MIB])).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.kill9();
    let _ = pending.await;

    let daemon = Daemon::start(&root, &database_url, free_port()).await;
    let upload = Multipart { client: &client, base: crate::multipart::base(&daemon.address), ..upload };
    let listed = upload.list().await;
    let have: Vec<u64> = listed.as_array().unwrap().iter().map(|p| p["PartNumber"].as_u64().unwrap()).collect();
    assert_eq!(have, vec![1, 2], "{listed}");
    assert!(
        !files_under(&root.join(".spool")).iter().any(|p| p.to_string_lossy().contains("incoming")),
        "a half-received part is dropped at start-up"
    );
    upload.put(3, parts[2]).await;
    let url_for_4 = url_for_4.replace(&url_for_4[..url_for_4.find("/api/").unwrap()], &daemon.address);
    let response = client.put(url_for_4).body(parts[3].to_vec()).send().await.unwrap();
    assert_eq!(response.status(), 200, "a URL signed before the restart still works");
    let listed = upload.list().await;
    let all: Vec<Value> =
        listed.as_array().unwrap().iter().map(|p| json!({"PartNumber": p["PartNumber"], "ETag": p["ETag"]})).collect();
    let result: Value = upload.complete(json!(all)).await.json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video), "{result}");
}
both_backends!(multipart_upload_survives_kill_9);

async fn tus_upload_survives_kill_9(backend: Backend) {
    let (_dir, root, database_url) = fresh_root(backend).await;
    let video = fixture("large");
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let client = crate::helpers::http_client();
    let location = tus_create(&daemon.address, &client, video.len()).await;
    let url = format!("{}{location}", daemon.address);
    let sent = 6 * MIB;
    let request = client
        .patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(stalled(&video[..sent]))
        .send();
    let pending = actix_web::rt::spawn(request);
    let mut seen = 0;
    for _ in 0..600 {
        seen = tus_offset(&client, &url).await.1.unwrap();
        if seen >= 4 * MIB as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen >= 4 * MIB as u64, "no durable progress ({seen})");
    daemon.kill9();
    let _ = pending.await;

    let daemon = Daemon::start(&root, &database_url, free_port()).await;
    let url = format!("{}{location}", daemon.address);
    let (status, offset) = tus_offset(&client, &url).await;
    assert_eq!(status, 200);
    let offset = offset.unwrap() as usize;
    assert!(offset >= seen as usize && offset <= sent, "offset {offset}, seen {seen}, sent {sent}");
    let response = client
        .patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(video[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let result: Value = client.get(format!("{url}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video));
}
both_backends!(tus_upload_survives_kill_9);

/// tus `creation-defer-length` across a kill -9: the PATCH that declares
/// `Upload-Length` records it before its bytes, so a daemon killed while
/// that PATCH's body is arriving comes back knowing the length (HEAD says
/// so, not `Upload-Defer-Length`), and the rest finishes the upload.
async fn a_deferred_tus_length_survives_kill_9(backend: Backend) {
    let (_dir, root, database_url) = fresh_root(backend).await;
    let video = fixture("large");
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let client = crate::helpers::http_client();
    let location = crate::tus::create_deferred(&client, &daemon.address).await;
    let url = format!("{}{location}", daemon.address);
    let sent = 6 * MIB;
    let request = client
        .patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("upload-length", video.len().to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(stalled(&video[..sent]))
        .send();
    let pending = actix_web::rt::spawn(request);
    let mut seen = 0;
    for _ in 0..600 {
        seen = tus_offset(&client, &url).await.1.unwrap();
        if seen >= 4 * MIB as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen >= 4 * MIB as u64, "no durable progress ({seen})");
    daemon.kill9();
    let _ = pending.await;

    let daemon = Daemon::start(&root, &database_url, free_port()).await;
    let url = format!("{}{location}", daemon.address);
    let head = client.head(&url).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["upload-length"], video.len().to_string().as_str(), "the declared length survived");
    assert!(head.headers().get("upload-defer-length").is_none());
    let offset: usize = head.headers()["upload-offset"].to_str().unwrap().parse().unwrap();
    assert!(offset >= seen as usize && offset <= sent, "offset {offset}, seen {seen}, sent {sent}");
    let response = crate::tus::patch_at(&client, &url, offset, None, video[offset..].to_vec()).await;
    assert_eq!(response.status(), 204);
    let result: Value = client.get(format!("{url}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["status"], "new", "{result}");
    assert_eq!(result["hash"], blake3_hex(&video));
}
both_backends!(a_deferred_tus_length_survives_kill_9);

#[actix_web::test]
async fn the_cli_uploader_resumes_after_being_killed() {
    let app = spawn_app(Backend::Sqlite).await;
    let video = fixture("large");
    let path = std::env::temp_dir().join(format!("vidcache-cli-{}.mp4", crate::helpers::hex_id()));
    std::fs::write(&path, &video).unwrap();
    let state = tempfile::tempdir().unwrap();
    let chunk = 64 * 1024;
    let total = video.len().div_ceil(chunk) as u64;
    let command = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vidcache"));
        c.args(["upload", "--quiet", "--parallel", "2", "--chunk-size", &chunk.to_string(), "--server", &app.address])
            .arg("--state-dir")
            .arg(state.path())
            .arg(&path)
            .stdout(std::process::Stdio::piped());
        c
    };
    let mut first = command().spawn().unwrap();
    // Wait until the client has remembered its upload and sent some chunks.
    let mut received = 0;
    for _ in 0..400 {
        if let Some(entry) = std::fs::read_dir(state.path()).unwrap().flatten().next()
            && let Ok(remembered) = serde_json::from_slice::<Value>(&std::fs::read(entry.path()).unwrap())
        {
            let id = remembered["upload_id"].as_str().unwrap().to_owned();
            received = app.get_json(&format!("/videos/upload/{id}")).await["received"].as_array().map_or(0, Vec::len);
            if received >= 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(received >= 20, "the first run made no progress ({received} chunks)");
    assert!((received as u64) < total, "the first run finished before it was killed");

    let mut second = command();
    let output = actix_web::rt::task::spawn_blocking(move || second.output().unwrap()).await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    let resumed = summary["resumed_chunks"].as_u64().unwrap();
    assert!(resumed >= received as u64, "{summary}");
    assert_eq!(resumed + summary["sent_chunks"].as_u64().unwrap(), total, "only the missing chunks were sent");
    assert_eq!(summary["result"]["hash"], blake3_hex(&video));
    assert!(std::fs::read_dir(state.path()).unwrap().next().is_none(), "the state file is dropped when done");
    std::fs::remove_file(path).ok();
}

/// The commit window of a tus upload: its last PATCH's bytes are durable
/// and recorded (HEAD shows `Upload-Offset` = `Upload-Length`) and the
/// daemon dies before it commits. The client has nothing left to send.
/// The state is made exactly: a kill -9 mid-upload, then the rest of the
/// file written to the spool and recorded as the PATCH would have. After a
/// restart the upload is committed without any request (start-up), and
/// `GET /files/{id}/result` answers the file's own hash, not 409.
async fn a_whole_tus_upload_killed_before_its_commit_is_committed_after_restart(backend: Backend) {
    let (_dir, root, database_url) = fresh_root(backend).await;
    let video = fixture("large");
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let client = crate::helpers::http_client();
    let location = tus_create(&daemon.address, &client, video.len()).await;
    let url = format!("{}{location}", daemon.address);
    let request = client
        .patch(&url)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(stalled(&video[..3 * MIB]))
        .send();
    let pending = actix_web::rt::spawn(request);
    for _ in 0..600 {
        if tus_offset(&client, &url).await.1.unwrap() >= MIB as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    daemon.kill9();
    let _ = pending.await;

    // The last PATCH, as far as the disk and the database are concerned.
    let id = vidcache::domain::UploadId::parse(location.trim_start_matches("/files/")).unwrap();
    let repo = vidcache::storage::Repository::connect(&database_url, 1).await.unwrap();
    let durable = repo.find_session(&id).await.unwrap().unwrap().durable_bytes as usize;
    assert!(durable >= MIB, "durable {durable}");
    {
        use std::io::Write;
        let spool = root.join(".spool").join(format!("{}.part", id.as_str()));
        let mut file = std::fs::OpenOptions::new().write(true).open(&spool).unwrap();
        file.set_len(durable as u64).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(durable as u64)).unwrap();
        file.write_all(&video[durable..]).unwrap();
        file.sync_all().unwrap();
    }
    repo.record_progress(&id, video.len() as u64).await.unwrap();
    drop(repo);

    let daemon = Daemon::start(&root, &database_url, free_port()).await;
    let app = view(&daemon, &root);
    // Committed at start-up, with no request about the upload.
    let mut stored = Value::Null;
    for _ in 0..400 {
        stored = app.get_json(&format!("/meta/{}", blake3_hex(&video))).await;
        if stored["hash"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored["size_bytes"], video.len(), "{stored}");
    let url = format!("{}{location}", daemon.address);
    let response = client.get(format!("{url}/result")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&video));
    assert_eq!(result["status"], "new");
    assert!(files_under(&root.join(".spool")).is_empty(), "no spool left");
}
both_backends!(a_whole_tus_upload_killed_before_its_commit_is_committed_after_restart);

/// Killed after a duplicate's session closed with its answer but before its
/// spool and parts were removed (the last step of every settlement now):
/// after a restart the leftovers are gone, the client still gets its
/// answer, and an upload that was still receiving keeps its spool.
async fn leftovers_of_a_settled_upload_are_swept_at_start_up(backend: Backend) {
    let (_dir, root, database_url) = fresh_root(backend).await;
    let video = fixture("small");
    let mut daemon = Daemon::start(&root, &database_url, free_port()).await;
    let client = crate::helpers::http_client();
    let first = init_upload(&client, &daemon.address, "https://example.com/a.mp4").await;
    let stored: Value = resume_upload(&client, &daemon.address, &first, 0, &video).await.json().await.unwrap();
    assert_eq!(stored["status"], "new");
    let second = init_upload(&client, &daemon.address, "https://example.com/b.mp4").await;
    let dup: Value = resume_upload(&client, &daemon.address, &second, 0, &video).await.json().await.unwrap();
    assert_eq!(dup["status"], "duplicate");
    // One more that is still receiving when the daemon dies.
    let third = init_upload(&client, &daemon.address, "https://example.com/d.mp4").await;
    let request = client
        .post(format!("{}/upload/{third}", daemon.address))
        .header("content-type", "application/octet-stream")
        .body(stalled(&video[..video.len() / 2]))
        .send();
    let pending = actix_web::rt::spawn(request);
    let spool = root.join(".spool");
    for _ in 0..400 {
        if spool.join(format!("{third}.part")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    daemon.kill9();
    let _ = pending.await;
    // What a kill between the duplicate's close and its clean-up leaves.
    std::fs::write(spool.join(format!("{second}.part")), &video).unwrap();
    std::fs::create_dir_all(spool.join(format!("{second}.pieces"))).unwrap();
    std::fs::write(spool.join(format!("{second}.pieces")).join("00001-abc"), b"part").unwrap();

    let daemon = Daemon::start(&root, &database_url, free_port()).await;
    assert!(!spool.join(format!("{second}.part")).exists(), "the settled upload's spool is swept");
    assert!(!spool.join(format!("{second}.pieces")).exists(), "and its parts");
    assert!(spool.join(format!("{third}.part")).exists(), "an upload still receiving keeps its spool");
    let status: Value =
        client.get(format!("{}/upload/{second}", daemon.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["state"], "complete", "{status}");
    assert_eq!(status["result"]["status"], "duplicate", "{status}");
    assert_eq!(status["result"]["hash"], blake3_hex(&video));
}
both_backends!(leftovers_of_a_settled_upload_are_swept_at_start_up);
