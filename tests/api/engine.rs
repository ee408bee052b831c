//! The upload engine's answers where a new user first meets it (issue 14):
//! the README's curl session as printed, and a full disk, which is an
//! answer the client can resume from, never a corrupted video.

use crate::helpers::{Backend, assert_error, blake3_hex, ffmpeg_to, spawn_app_with};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's "A session with curl", run with curl as printed (only the
/// host and the ids filled in): `-T` sends PUT.
#[actix_web::test]
async fn the_readme_curl_session_works_as_printed() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    ffmpeg_to(&clip, "-f lavfi -i testsrc2=duration=3 -c:v libx264 -pix_fmt yuv420p");
    let host = app.address.trim_start_matches("http://").to_owned();
    // On a blocking thread: the daemon runs on this test's event loop.
    let cwd = dir.path().to_path_buf();
    let curl = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let cwd = cwd.clone();
        async move {
            let out = actix_web::rt::task::spawn_blocking(move || {
                Command::new("curl").args(&args).current_dir(&cwd).output().expect("curl runs")
            })
            .await
            .unwrap();
            assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .unwrap_or_else(|_| panic!("curl answered {}", String::from_utf8_lossy(&out.stdout)))
        }
    };
    let init = curl(&[
        "-s",
        &format!("{host}/upload/init"),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"url": "https://example.com/clip.mp4", "bucket": "videos", "prefix": "2026/11"}"#,
    ])
    .await;
    assert_eq!(init["status"], "pending", "{init}");
    let id = init["upload_id"].as_str().unwrap();
    let stored = curl(&[
        "-s",
        &format!("{host}/upload/{id}"),
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "-T",
        "clip.mp4",
    ])
    .await;
    let bytes = std::fs::read(&clip).unwrap();
    assert_eq!(stored["status"], "new", "{stored}");
    assert_eq!(stored["hash"], blake3_hex(&bytes));
    assert_eq!(stored["size_bytes"], bytes.len());
    let hash = stored["hash"].as_str().unwrap();
    let meta = curl(&["-s", &format!("{host}/meta/{hash}")]).await;
    assert_eq!(meta["aliases"], serde_json::json!(["https://example.com/clip.mp4"]));
    let resolved = curl(&["-s", &format!("{host}/resolve?url=https://example.com/clip.mp4")]).await;
    assert_eq!(resolved["hash"], hash);
}

/// About 3.75 MB a second that no encoder can squeeze (noise at 30 Mb/s),
/// written to `path` and answered as bytes.
fn incompressible_video(path: &Path, secs: u32) -> Vec<u8> {
    ffmpeg_to(
        path,
        &format!(
            "-f lavfi -i testsrc2=size=1280x720:rate=25,noise=alls=60:allf=t -t {secs} -c:v libx264 -preset ultrafast \
             -b:v 30M -maxrate 30M -bufsize 30M -pix_fmt yuv420p -movflags +faststart"
        ),
    );
    std::fs::read(path).unwrap()
}

/// A tmpfs of a given size, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, megabytes: u32) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root (as make test and CI run)");
        Self(at.to_path_buf())
    }

    fn resize(&self, megabytes: u32) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={megabytes}m")]).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let meta = e.metadata().unwrap();
                    if meta.is_dir() { bytes_under(&e.path()) } else { meta.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A streamed upload larger than the disk: 507 with the durable offset, the
/// space given back at once (`/readyz` stays ready), and once there is room
/// again the upload resumes from that offset and stores exactly the file.
/// Before, the bytes past the last durable point stayed in the spool, the
/// writer kept its position, and a client that resumed from what `GET`
/// reported got a video of both appended (a hash that is not its file's).
#[actix_web::test]
async fn a_full_disk_answers_507_frees_the_space_and_the_upload_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = incompressible_video(&dir.path().join("big.mp4"), 8);
    assert!(bytes.len() > 24 << 20, "the video must not fit on the small disk: {} bytes", bytes.len());
    let disk = Tmpfs::mount(&dir.path().join("disk"), 16);
    let root = disk.0.join("store");
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.storage.root = root.clone();
        // Checkpoints every 4 MiB, so a durable point falls inside the body.
        s.upload.checkpoint_bytes = 4 << 20;
        s.upload.reserve_bytes = 2 << 20;
    })
    .await;
    app.wait_ready(10).await;

    // An upload of a declared size that cannot fit is refused at its init,
    // through every door that declares one; one that fits is taken.
    let too_big = bytes.len();
    let chunked = app
        .client
        .post(app.url("/videos/init"))
        .json(&serde_json::json!({"filename": "big.mp4", "size": too_big}))
        .send()
        .await
        .unwrap();
    assert_error(chunked, 507, "insufficient-storage").await;
    let tus = app
        .client
        .post(app.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", too_big.to_string())
        .send()
        .await
        .unwrap();
    assert_error(tus, 507, "insufficient-storage").await;
    let fits = crate::chunked::init_chunked(&app, "small.mp4", 1 << 20, 256 << 10).await;
    assert!(fits["upload_id"].is_string(), "{fits}");

    let init = app.init("https://example.com/big.mp4", "videos", None).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    let response = app.send_body(&id, bytes.clone()).await;
    assert_eq!(response.status(), 507, "{:?}", response.text().await);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "insufficient-storage", "{body}");

    // The offset the daemon reports is where the spool ends: nothing past
    // the last durable point is left on the disk.
    let status = app.get_json(&format!("/upload/{id}")).await;
    let durable = status["received_bytes"].as_u64().unwrap();
    assert!(durable > 0, "a checkpoint was durable before the disk filled: {status}");
    let spool = bytes_under(&root.join(".spool"));
    assert_eq!(spool, durable, "the spool holds exactly the durable bytes");
    app.wait_ready(5).await;

    // Room again: the rest of the file from the reported offset.
    disk.resize(200);
    let rest = bytes[durable as usize..].to_vec();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = rest.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = app
        .client
        .post(app.url(&format!("/upload/{id}")))
        .header("content-type", "application/octet-stream")
        .header("Upload-Offset", durable.to_string())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let stored: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["status"], "new", "{stored}");
    assert_eq!(stored["hash"], blake3_hex(&bytes), "exactly the file");
    assert_eq!(stored["size_bytes"], bytes.len());
    let back = app.client.get(app.url(&format!("/video/{}", stored["hash"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(blake3_hex(&back.bytes().await.unwrap()), blake3_hex(&bytes));

    // A second upload on a full disk again: a retry from 0 starts over
    // cleanly rather than after leftovers.
    let init = app.init("https://example.com/again.mp4", "videos", None).await;
    let other = init["upload_id"].as_str().unwrap().to_owned();
    disk.resize(16 + (bytes.len() >> 20) as u32);
    let mut changed = bytes.clone();
    changed[1000] ^= 0xff;
    assert_error(app.send_body(&other, changed).await, 507, "insufficient-storage").await;
    let left = app.get_json(&format!("/upload/{other}")).await["received_bytes"].as_u64().unwrap();
    assert_eq!(bytes_under(&root.join(".spool")), left);
}

/// Descriptors of this process (the daemon runs in it) open on a deleted
/// file whose name holds `id`.
fn open_deleted_files_of(id: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.contains(id) && p.ends_with("(deleted)"))
        .collect()
}

/// `422 corrupt-video` is a final answer, like `not-a-video`: the session is
/// closed and says why, the video list says `failed`, a retry is refused
/// as failed (not "No such file or directory"), and no descriptor stays
/// open on the deleted spool. Before, the session stayed `receiving` and
/// its entry `uploading`.
async fn a_corrupt_video_closes_its_session(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.mp4");
    ffmpeg_to(
        &whole,
        "-f lavfi -i testsrc2=size=320x240:rate=25 -t 6 -c:v libx264 -pix_fmt yuv420p -movflags +faststart",
    );
    let bytes = std::fs::read(&whole).unwrap();
    let cut = bytes[..bytes.len() * 2 / 3].to_vec();

    // Streamed.
    let id = app.init("https://example.com/cut.mp4", "videos", None).await["upload_id"].as_str().unwrap().to_owned();
    assert_error(app.send_body(&id, cut.clone()).await, 422, "corrupt-video").await;
    let status = app.get_json(&format!("/upload/{id}")).await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_error(app.send_body(&id, cut.clone()).await, 409, "upload-failed").await;
    assert_eq!(open_deleted_files_of(&id), Vec::<String>::new());

    // Chunked, listed in /videos.
    let chunk = 64 * 1024;
    let init = crate::chunked::init_chunked(&app, "cut.mp4", cut.len(), chunk).await;
    let id = init["upload_id"].as_str().unwrap().to_owned();
    for (i, piece) in cut.chunks(chunk).enumerate() {
        assert_eq!(crate::chunked::send_chunk(&app, &id, i, piece, false).await.status(), 200);
    }
    let finalize = app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
    assert_error(finalize, 422, "corrupt-video").await;
    let status = app.get_json(&format!("/videos/upload/{id}")).await;
    assert_eq!(status["state"], "failed", "{status}");
    let listed = app.get_json("/videos").await;
    let entry = listed.as_array().unwrap().iter().find(|v| v["filename"] == "cut.mp4").unwrap().clone();
    assert_eq!(entry["status"], "failed", "{entry}");
    let again = app.client.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap();
    assert_error(again, 409, "upload-failed").await;
    assert_eq!(open_deleted_files_of(&id), Vec::<String>::new());
}
crate::both_backends!(a_corrupt_video_closes_its_session);

/// A disk that fills up under a tus PATCH and under chunks, after their
/// inits were accepted (something else took the space): each answers 507,
/// keeps exactly what it acknowledged, and completes with the file's own
/// hash once the space is back.
#[actix_web::test]
async fn a_disk_filled_by_something_else_mid_upload_leaves_tus_and_chunked_uploads_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = incompressible_video(&dir.path().join("mid.mp4"), 4);
    let size_mb = (bytes.len() >> 20) as u32 + 1;
    let disk = Tmpfs::mount(&dir.path().join("disk"), 2 * size_mb + 8);
    let root = disk.0.join("store");
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.storage.root = root.clone();
        s.upload.reserve_bytes = 1 << 20;
    })
    .await;
    app.wait_ready(10).await;

    // Both inits fit; then a filler leaves room for about half of one file.
    let created = app
        .client
        .post(app.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", bytes.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let tus_url = app.url(created.headers()["location"].to_str().unwrap());
    let chunk = 1 << 20;
    let init = crate::chunked::init_chunked(&app, "mid.mp4", bytes.len(), chunk).await;
    let chunked_id = init["upload_id"].as_str().unwrap().to_owned();
    let filler = disk.0.join("filler");
    let free_mb = |path: &Path| {
        let out = Command::new("df").args(["--output=avail", "-m"]).arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    let fill_to = |leave_mb: u64| {
        let take = free_mb(&disk.0).saturating_sub(leave_mb);
        std::fs::write(&filler, vec![7u8; (take as usize) << 20]).unwrap();
    };
    fill_to(u64::from(size_mb) / 2);

    // tus: one PATCH of the whole file.
    let patch = |offset: usize| {
        app.client
            .patch(&tus_url)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset.to_string())
            .header("content-type", "application/offset+octet-stream")
            .body(bytes[offset..].to_vec())
            .send()
    };
    let response = patch(0).await.unwrap();
    assert_eq!(response.status(), 507, "{:?}", response.text().await);
    let (_, offset) = crate::tus::tus_offset(&app.client, &tus_url).await;
    let offset = offset.unwrap() as usize;
    assert!(offset < bytes.len());
    let spool = bytes_under(&root.join(".spool"));
    assert_eq!(spool, offset as u64, "the tus spool holds exactly the acknowledged bytes");

    // Chunked: chunks until the disk refuses one.
    let mut refused = None;
    for (i, piece) in bytes.chunks(chunk).enumerate() {
        let response = crate::chunked::send_chunk(&app, &chunked_id, i, piece, false).await;
        if response.status() != 200 {
            assert_error(response, 507, "insufficient-storage").await;
            refused = Some(i);
            break;
        }
    }
    assert!(refused.is_some(), "the disk filled up under the chunks");

    // Space again: both finish from what the server reports, exactly.
    std::fs::remove_file(&filler).unwrap();
    let response = patch(offset).await.unwrap();
    assert_eq!(response.status(), 204);
    let result: serde_json::Value =
        app.client.get(format!("{tus_url}/result")).send().await.unwrap().json().await.unwrap();
    assert_eq!(result["hash"], blake3_hex(&bytes), "{result}");
    let status = app.get_json(&format!("/videos/upload/{chunked_id}")).await;
    for index in status["missing"].as_array().unwrap() {
        let i = index.as_u64().unwrap() as usize;
        let piece = &bytes[i * chunk..((i + 1) * chunk).min(bytes.len())];
        assert_eq!(crate::chunked::send_chunk(&app, &chunked_id, i, piece, false).await.status(), 200);
    }
    let finalized: serde_json::Value =
        app.client.post(app.url(&format!("/videos/finalize/{chunked_id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(finalized["hash"], blake3_hex(&bytes), "{finalized}");
    assert_eq!(finalized["status"], "duplicate", "the same bytes as the tus upload");
}
