//! The browser pages in a real headless Chromium: `tests/clients/pages.mjs`
//! (playwright-core driving Debian's `/usr/bin/chromium`) uploads generated
//! videos through the upload page, reloads it and restarts the daemon in
//! the middle of uploads, and plays the result as HLS and DASH side by side.
//! This side generates the media, runs it against the built binary, and
//! checks what it reports against the files' own bytes. A shorter run does
//! the upload and both players in Firefox (`pages_firefox.mjs`).
//!
//! Screenshots of every step are kept in `$VIDCACHE_TEST_ARTIFACTS/pages/{chromium,firefox}`
//! (default: `test-artifacts/pages/...` in the cargo target directory).

use crate::helpers::{Backend, assert_error, blake3_hex, ffmpeg_to, fresh_database, spawn_app, spawn_app_with};
use crate::restart::free_port;
use serde_json::Value;
use std::path::{Path, PathBuf};

const CHUNK: u64 = 256 * 1024;

/// Where a browser's screenshots go, emptied first.
fn artifacts(browser: &str) -> PathBuf {
    let dir = match std::env::var_os("VIDCACHE_TEST_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir).join("pages"),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts/pages"),
    }
    .join(browser);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs a script of `tests/clients` with node; answers the JSON summary it
/// prints last.
async fn run_node(args: Vec<String>) -> Value {
    actix_web::rt::task::spawn_blocking(move || {
        let output = std::process::Command::new("node")
            .args(&args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients"))
            .output()
            .expect("node must be installed (make test installs it)");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?} failed: {stderr}\n{stdout}");
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|_| panic!("no JSON summary: {stdout}\n{stderr}"))
    })
    .await
    .unwrap()
}

/// Runs a page script of `tests/clients` against the built binary on a fresh
/// storage root and SQLite database under `dir`, with `media` as `--name
/// path` arguments. Answers its summary, once it reported no failure and no
/// uncaught page error.
async fn run_pages(script: &str, browser: &str, dir: &Path, media: &[(&str, &Path)]) -> Value {
    let root = dir.join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database = fresh_database(Backend::Sqlite, dir).await;
    let artifacts = artifacts(browser);
    let mut args = vec![script.to_owned()];
    for (name, value) in [
        ("binary", env!("CARGO_BIN_EXE_vidcache").to_owned()),
        ("root", root.to_string_lossy().into_owned()),
        ("database", database),
        ("port", free_port().to_string()),
        ("artifacts", artifacts.to_string_lossy().into_owned()),
    ]
    .into_iter()
    .chain(media.iter().map(|(name, path)| (*name, path.to_string_lossy().into_owned())))
    {
        args.extend([format!("--{name}"), value]);
    }
    let summary = run_node(args).await;
    eprintln!("screenshots in {}\n{summary}", artifacts.display());
    assert!(summary.get("failure").is_none(), "the {browser} run failed: {}", summary["failure"]);
    assert_eq!(summary["page_errors"], serde_json::json!([]), "uncaught errors in the pages");
    summary
}

/// The run kept a real screenshot of each of its `steps`.
fn assert_screenshots(summary: &Value, steps: usize) {
    let shots = summary["screenshots"].as_array().unwrap();
    assert_eq!(shots.len(), steps, "{shots:?}");
    for shot in shots {
        let png = std::fs::read(shot.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "{shot} is a real screenshot");
    }
}

/// A 20 s 640x360 video with sound, as a phone might upload it.
fn twenty_seconds(path: &Path) {
    ffmpeg_to(
        path,
        "-f lavfi -i testsrc2=size=640x360:rate=30:duration=20 -f lavfi -i sine=frequency=440:duration=20 \
         -c:v libx264 -preset veryfast -b:v 900k -g 60 -pix_fmt yuv420p -c:a aac -b:a 64k -movflags +faststart",
    );
}

fn indices(value: &Value) -> Vec<u64> {
    value.as_array().unwrap_or_else(|| panic!("not a list: {value}")).iter().map(|v| v.as_u64().unwrap()).collect()
}

#[actix_web::test]
async fn upload_page_resumes_and_player_plays_hls_and_dash_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    // A 20 s video with sound, and two 60 s ones large enough (~9 MB, 35
    // chunks) that a throttled upload can be interrupted in the middle.
    let small = dir.path().join("twenty-seconds.mp4");
    twenty_seconds(&small);
    let large = dir.path().join("one-minute.mp4");
    ffmpeg_to(
        &large,
        "-f lavfi -i testsrc2=size=640x360:rate=30:duration=60 -vf noise=alls=30:allf=t -c:v libx264 \
         -preset veryfast -b:v 1200k -maxrate 1200k -bufsize 2400k -g 60 -pix_fmt yuv420p -movflags +faststart",
    );
    let other = dir.path().join("another-minute.mp4");
    ffmpeg_to(
        &other,
        "-f lavfi -i smptehdbars=size=640x360:rate=30:duration=60 -vf noise=alls=40:allf=t -c:v libx264 \
         -preset veryfast -b:v 1200k -maxrate 1200k -bufsize 2400k -g 60 -pix_fmt yuv420p -movflags +faststart",
    );
    // Random bytes under a video's name: refused at finalize.
    let bad = dir.path().join("holiday.mp4");
    std::fs::write(&bad, (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>())
        .unwrap();
    let media = [("small", small.as_path()), ("large", &large), ("other", &other), ("bad", &bad)];
    let summary = run_pages("pages.mjs", "chromium", dir.path(), &media).await;

    // 1. The 20 s upload: the bar climbed through intermediate values to 100%.
    let progress = &summary["small_progress"];
    assert_eq!(progress["final"], 1.0);
    assert_eq!(progress["monotonic"], true);
    assert!(progress["intermediate"].as_u64().unwrap() >= 3, "the bar was seen moving: {progress}");
    let bytes = std::fs::read(&small).unwrap();
    assert_eq!(summary["small"]["hash"], blake3_hex(&bytes), "the page reports the file's own BLAKE3");
    assert_eq!(summary["small"]["status"], "new");
    assert_eq!(summary["small"]["listed_hls_url"], format!("/media/{}/hls/master.m3u8", blake3_hex(&bytes)));
    // The refusal reads as the server's message and code.
    let refusal = summary["bad"]["text"].as_str().unwrap();
    assert!(refusal.contains("(not-a-video)"), "{refusal}");

    // 2. Both players ran past 2 s without errors; manual choices took effect.
    for player in summary["playing"].as_array().unwrap() {
        assert!(player["t"].as_f64().unwrap() > 2.0, "{player}");
        assert_eq!(player["error"], Value::Null);
        assert_eq!(player["shown"], "");
    }
    assert_eq!(summary["switches"].as_array().unwrap().len(), 3, "{}", summary["switches"]);
    assert!(!summary["storyboard_preview"].as_str().unwrap_or("").is_empty());
    assert_eq!(summary["list_row"]["badge"], "ready");
    assert!(summary["list_row"]["thumbnail_width"].as_u64().unwrap() > 0, "the thumbnail loaded");

    // 3. Reload: what the server had before was not sent again, and the
    // daemon accepted every chunk exactly once.
    let size = std::fs::metadata(&large).unwrap().len();
    let total = size.div_ceil(CHUNK);
    let l = &summary["large"];
    assert_eq!(l["hash"], blake3_hex(&std::fs::read(&large).unwrap()));
    assert_eq!(l["status"], "new");
    let before = indices(&l["accepted_before_reload"]);
    let after = indices(&l["requested_after_reload"]);
    assert!(before.len() as u64 >= total / 4, "a good part was sent before the reload: {before:?} of {total}");
    assert!(!after.is_empty(), "the rest was sent after it");
    assert_eq!(indices(&l["resent"]), Vec::<u64>::new(), "finished chunks were sent again");
    assert_eq!(l["daemon_accepted"], total, "the daemon accepted each of the {total} chunks once");
    assert_eq!(l["said_resuming"], true, "the page said it resumed");

    // Cancel: the server forgot the upload, and so did the page.
    assert_eq!(summary["cancel"]["server_status"], 404, "{}", summary["cancel"]);
    assert_eq!(summary["cancel"]["remembered"], 0);

    // 4. Pause sent nothing; then the same as a reload, across a SIGKILL of the daemon.
    assert_eq!(summary["pause"]["requests_while_paused"], 0);
    let o = &summary["other"];
    assert_eq!(o["hash"], blake3_hex(&std::fs::read(&other).unwrap()));
    assert_eq!(o["status"], "new");
    assert!(!indices(&o["accepted_before_kill"]).is_empty());
    assert!(!indices(&o["requested_after_kill"]).is_empty());
    assert_eq!(indices(&o["resent"]), Vec::<u64>::new(), "chunks the daemon had acknowledged were sent again");

    // 5. The list turned the status to ready without a reload.
    let live = &summary["live_list"];
    assert_eq!(live["same_document"], true);
    let statuses: Vec<&str> = live["statuses"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(statuses.last(), Some(&"ready"));
    assert!(statuses.len() >= 2, "the list showed the transcode before it was ready: {statuses:?}");

    assert_screenshots(&summary, 18);
}

/// The same pages in Firefox (Debian's firefox-esr, headless, over WebDriver
/// BiDi with puppeteer-core): an upload through the file input, then hls.js
/// and dash.js playing side by side and switching rendition.
#[actix_web::test]
async fn upload_page_and_player_work_in_firefox() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("twenty-seconds.mp4");
    twenty_seconds(&small);
    let summary = run_pages("pages_firefox.mjs", "firefox", dir.path(), &[("small", &small)]).await;
    assert!(summary["user_agent"].as_str().unwrap().contains("Firefox/"), "{}", summary["user_agent"]);
    assert_eq!(summary["secure_context"], true, "127.0.0.1 is a secure context: chunks carry SHA-256");
    let upload = &summary["upload"];
    assert_eq!(upload["fraction"], 1.0);
    assert_eq!(upload["status"], "new");
    assert_eq!(upload["hash"], blake3_hex(&std::fs::read(&small).unwrap()));
    for (before, after) in
        summary["playing"].as_array().unwrap().iter().zip(summary["after_switch"].as_array().unwrap())
    {
        assert!(before["t"].as_f64().unwrap() > 2.0, "{before}");
        assert!(after["t"].as_f64().unwrap() > before["t"].as_f64().unwrap(), "playing on after the switch: {after}");
        assert_eq!(after["height"], "240", "the chosen rendition is in use: {after}");
        assert_eq!(after["error"], Value::Null);
        assert_eq!(after["shown"], "");
    }
    assert_screenshots(&summary, 3);
}

/// The pages and their assets, served from the binary: types, revalidation,
/// the page policy, and only the names of the table.
#[actix_web::test]
async fn pages_and_assets_are_served_and_nothing_else() {
    let app = spawn_app(Backend::Sqlite).await;
    let get = |path: &str| app.client.get(app.url(path)).send();
    for (path, content_type, marker) in [
        ("/", "text/html", "id=\"file-input\""),
        ("/player", "text/html", "id=\"hls-video\""),
        ("/client/upload.js", "text/javascript", "/videos/upload_chunk/"),
        ("/client/player.js", "text/javascript", "getRepresentationsByType"),
        ("/client/style.css", "text/css", ".dropzone"),
        ("/client/vendor/hls.min.js", "text/javascript", "Hls"),
        ("/client/vendor/dash.mediaplayer.min.js", "text/javascript", "MediaPlayer"),
    ] {
        let response = get(path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}: {headers:?}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let etag = headers["etag"].to_str().unwrap().to_owned();
        if content_type == "text/html" {
            let policy = headers["content-security-policy"].to_str().unwrap();
            assert!(policy.contains("default-src 'self'") && policy.contains("worker-src 'self' blob:"), "{policy}");
        }
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path} lacks {marker}");
        // Unchanged: 304 with no body.
        let again = app.client.get(app.url(path)).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    for hostile in [
        "/client/../Cargo.toml",
        "/client/%2e%2e/Cargo.toml",
        "/client/..%2fsrc%2fmain.rs",
        "/client/vendor/",
        "/client/node_modules/hls.js/package.json",
        "/client/README.md",
        "/client/%00",
    ] {
        let response = get(hostile).await.unwrap();
        assert!(response.status() == 404, "{hostile}: {}", response.status());
        assert_error(response, 404, "not-found").await;
    }
    assert_error(app.client.post(app.url("/player")).send().await.unwrap(), 405, "method-not-allowed").await;

    // server.client_dir: the same names, read from a folder at each request.
    let dir = tempfile::tempdir().unwrap();
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("client");
    std::fs::copy(client.join("index.html"), dir.path().join("index.html")).unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    let edited = spawn_app_with(Backend::Sqlite, |s| s.server.client_dir = folder).await;
    let first = edited.client.get(edited.url("/")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].clone();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>edited</title>").unwrap();
    let again = edited.client.get(edited.url("/")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 200, "an edited page is a new version");
    assert!(again.text().await.unwrap().contains("edited"));
    // A name of the table that the folder lacks is the operator's mistake: 500 JSON.
    assert_error(edited.client.get(edited.url("/player")).send().await.unwrap(), 500, "internal").await;
}

/// Issue 17: every player starts, seeks and switches on the ladder's
/// segments. Shaka Player (the strictest: it refused non-IDR segment starts
/// with error 3016), hls.js and dash.js in Chromium play a transcoded 20 s
/// 720p video (the daemon's default x264 preset, whose B frames made the
/// old segments start with non-IDR I frames) from its start and from its
/// middle, and decode every rendition after a switch with ABR off; the
/// player page's "Play both" works whenever it is pressed.
#[actix_web::test]
async fn shaka_hls_js_and_dash_js_start_seek_and_switch_on_every_rendition_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip720.mp4");
    ffmpeg_to(
        &video,
        "-f lavfi -i testsrc2=size=1280x720:rate=30:duration=20 -f lavfi -i sine=frequency=330:duration=20 \
         -c:v libx264 -preset veryfast -b:v 2500k -pix_fmt yuv420p -c:a aac -b:a 96k -movflags +faststart",
    );
    let summary = run_pages("players.mjs", "players", dir.path(), &[("video", video.as_path())]).await;
    let runs = summary["runs"].as_array().unwrap();
    let combos: Vec<(String, String)> = runs
        .iter()
        .map(|r| (r["player"].as_str().unwrap().to_owned(), r["manifest"].as_str().unwrap().to_owned()))
        .collect();
    let want = [("shaka", "hls"), ("shaka", "dash"), ("hls", "hls"), ("dash", "dash")];
    assert_eq!(combos, want.map(|(p, m)| (p.to_owned(), m.to_owned())).to_vec());
    for run in runs {
        assert_eq!(run["heights"], serde_json::json!([240, 480, 720]), "{run}");
        assert_eq!(run["switched"], serde_json::json!([240, 720, 480, 240, 720]), "every rendition decoded: {run}");
        assert_eq!(run["started_at_9"], true, "{run}");
        assert_eq!(run["seeked"], true, "{run}");
        assert_eq!(run["errors"], serde_json::json!([]), "{run}");
    }
    let delays: Vec<u64> =
        summary["play_both"].as_array().unwrap().iter().map(|p| p["delay_ms"].as_u64().unwrap()).collect();
    assert_eq!(delays, vec![500, 1000, 2000, 3000, 4000]);
    for p in summary["play_both"].as_array().unwrap() {
        assert!(p["times"].as_array().unwrap().iter().all(|t| t.as_f64().unwrap() > 5.0), "{p}");
    }
    assert_screenshots(&summary, 5);
}

/// Section 8 in Chromium: the upload page through a signed upload URL (no
/// key; once), and hls.js and dash.js playing through a playback token,
/// failing cleanly on an expired one.
#[actix_web::test]
async fn signed_upload_urls_and_playback_tokens_work_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("signed.mp4");
    ffmpeg_to(
        &video,
        "-f lavfi -i testsrc2=size=640x360:rate=25:duration=8 -f lavfi -i sine=frequency=440:duration=8 \
         -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -movflags +faststart",
    );
    let summary = run_pages("signed_pages.mjs", "signed", dir.path(), &[("video", video.as_path())]).await;
    assert_eq!(summary["anonymous_listing"], 401, "the daemon has keys: {summary}");
    assert_eq!(summary["uploaded"]["listed"], true, "{summary}");
    assert_eq!(summary["second_use"]["status"], 403, "{summary}");
    assert_eq!(summary["second_use"]["code"], "upload-url-used", "{summary}");
    assert_eq!(summary["unsigned_status"], 401, "{summary}");
    assert_eq!(summary["expired_status"], 403, "{summary}");
    let runs = summary["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{summary}");
    for run in runs {
        assert!(run["played_to"].as_f64().unwrap() > 2.0, "{run}");
        assert!(!run["expired"]["errors"].as_array().unwrap().is_empty(), "{run}");
        assert!(run["expired"]["t"].as_f64().unwrap() < 0.5, "nothing played on an expired token: {run}");
    }
    assert_screenshots(&summary, 3);
}
