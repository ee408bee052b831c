//! Section 8, signed playback: an expiring token bound to one video, in the
//! media path, so that the relative URLs of the manifests carry it. FFmpeg
//! (the HLS and the DASH demuxer) plays through it with no rewriting.

use crate::helpers::{Backend, TestApp, assert_error, fixture, http_client, spawn_app_with, wait_for_transcode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use vidcache::config::{ApiKey, Scope};

const SECRET: &str = "a-server-secret-the-test-knows-for-forging-tokens";

/// A token as the daemon makes one (`{expires}-{first 128 bits of the
/// HMAC}`), with an expiry of the test's choosing.
fn token_for(hash: &str, expires: u64) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("vidcache playback\0{hash}\0{expires}\0p").as_bytes());
    format!("{expires}-{}", hex::encode(&mac.finalize().into_bytes()[..16]))
}

fn plays(url: &str) -> Result<(), String> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", url, "-map", "0:v:0", "-t", "2", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

async fn ffmpeg_plays(url: String) -> Result<(), String> {
    actix_web::rt::task::spawn_blocking(move || plays(&url)).await.unwrap()
}

async fn a_signed_video_plays_through_its_token_and_only_through_it(backend: Backend) {
    let app: TestApp = spawn_app_with(backend, |s| {
        s.transcode.workers = 1;
        s.auth.presign_secret = SECRET.into();
        s.auth.api_keys =
            vec![ApiKey { id: "k".into(), key: "s".into(), project_id: "p".into(), scopes: Scope::all() }];
    })
    .await;
    let stored = app.upload("https://playback.test/a.mp4", "b", None, fixture("small")).await;
    let hash = stored["hash"].as_str().unwrap().to_owned();
    wait_for_transcode(&app, &hash, "ready", 300).await;

    let playback: Value =
        app.client.get(app.url(&format!("/api/v1/videos/{hash}/playback"))).send().await.unwrap().json().await.unwrap();
    let hls = app.url(playback["hls_url"].as_str().unwrap());
    let dash = app.url(playback["dash_url"].as_str().unwrap());
    assert!(hls.contains("/media/t/"), "{playback}");
    ffmpeg_plays(hls.clone()).await.expect("HLS plays through the token");
    ffmpeg_plays(dash.clone()).await.expect("DASH plays through the token");
    // A token's segments may be cached privately, for no longer than it lives.
    let master = http_client().get(&hls).send().await.unwrap();
    assert_eq!(master.status(), 200);
    let body = master.text().await.unwrap();
    let first = body.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_owned();
    let rendition = hls.rsplit_once('/').unwrap().0.to_owned() + "/" + &first;
    let media = http_client().get(&rendition).send().await.unwrap().text().await.unwrap();
    let init = media.lines().find_map(|l| l.split("URI=\"").nth(1)).map(|u| u.trim_end_matches('"').to_owned());
    let init = init.expect("an EXT-X-MAP");
    let segment =
        http_client().get(rendition.rsplit_once('/').unwrap().0.to_owned() + "/" + &init).send().await.unwrap();
    assert_eq!(segment.status(), 200, "a relative segment URL keeps the token");
    let cache = segment.headers()["cache-control"].to_str().unwrap().to_owned();
    let max_age: u64 = cache.strip_prefix("private, max-age=").and_then(|a| a.parse().ok()).expect(&cache);
    assert!(max_age <= 3600, "{cache}");

    // Without the token: a key is needed. Another video's token, a forged
    // and an expired one are refused, with the JSON error body.
    let plain = http_client().get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_error(plain, 401, "unauthorized").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let other = token_for(&"ab".repeat(32), now + 600);
    let wrong = http_client().get(app.url(&format!("/media/t/{other}/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_error(wrong, 403, "bad-token").await;
    let expired = token_for(&hash, now - 1);
    let late = http_client().get(app.url(&format!("/media/t/{expired}/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_error(late, 403, "token-expired").await;
    assert!(ffmpeg_plays(app.url(&format!("/media/t/{expired}/{hash}/hls/master.m3u8"))).await.is_err());
    // The documented token form is the daemon's own: one made by hand plays.
    let fresh = token_for(&hash, now + 600);
    ffmpeg_plays(app.url(&format!("/media/t/{fresh}/{hash}/dash/manifest.mpd"))).await.expect("a hand-made token");
    // The thumbnail follows the same rule.
    let thumb = http_client().get(app.url(playback["thumbnail_url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");

    // Asking for a token needs `read`; a bad lifetime or video is a 4xx.
    let anonymous = http_client().get(app.url(&format!("/api/v1/videos/{hash}/playback"))).send().await.unwrap();
    assert_error(anonymous, 401, "unauthorized").await;
    let short = app.client.get(app.url(&format!("/api/v1/videos/{hash}/playback?ttl=5"))).send().await.unwrap();
    assert_error(short, 400, "invalid-ttl").await;
    let unknown = app.client.get(app.url(&format!("/api/v1/videos/{}/playback", "cd".repeat(32)))).send().await;
    assert_error(unknown.unwrap(), 404, "unknown-video").await;
    let no_such_id = app.client.get(app.url("/api/v1/videos/999/playback")).send().await.unwrap();
    assert_error(no_such_id, 404, "unknown-video").await;
    let bad_id = app.client.get(app.url("/api/v1/videos/-3/playback")).send().await.unwrap();
    assert_error(bad_id, 400, "invalid-video-id").await;

    // Made public, its media needs no key, and shared caches may keep it;
    // made signed again, it needs one.
    let set = |policy: &'static str| {
        app.client
            .put(app.url(&format!("/api/v1/videos/{hash}/playback")))
            .json(&serde_json::json!({ "policy": policy }))
            .send()
    };
    assert_eq!(set("public").await.unwrap().status(), 200);
    let open = http_client().get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_eq!(open.status(), 200);
    assert!(open.headers()["cache-control"].to_str().unwrap().starts_with("public"), "{:?}", open.headers());
    ffmpeg_plays(app.url(&format!("/media/{hash}/hls/master.m3u8"))).await.expect("a public video plays bare");
    let thumb = http_client().get(app.url(&format!("/media/{hash}/thumbnail.jpg"))).send().await.unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(set("signed").await.unwrap().status(), 200);
    let closed = http_client().get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_error(closed, 401, "unauthorized").await;
    // A hash nobody holds answers a caller with no key the same.
    let unknown = http_client().get(app.url(&format!("/media/{}/hls/master.m3u8", "cd".repeat(32)))).send().await;
    assert_error(unknown.unwrap(), 401, "unauthorized").await;
    let bad = app
        .client
        .put(app.url(&format!("/api/v1/videos/{hash}/playback")))
        .json(&serde_json::json!({"policy": "open"}));
    assert_error(bad.send().await.unwrap(), 400, "invalid-policy").await;
}

/// `auth.public_projects`: every video of such a project is public.
#[actix_web::test]
async fn a_public_projects_media_needs_no_key() {
    let app: TestApp = spawn_app_with(Backend::Sqlite, |s| {
        s.auth.api_keys =
            vec![ApiKey { id: "k".into(), key: "s".into(), project_id: "site".into(), scopes: Scope::all() }];
        s.auth.public_projects = vec!["site".into()];
    })
    .await;
    let stored = app.upload("https://playback.test/public.mp4", "b", None, fixture("small")).await;
    let hash = stored["hash"].as_str().unwrap();
    let thumb = http_client().get(app.url(&format!("/media/{hash}/thumbnail.jpg"))).send().await.unwrap();
    assert_eq!(thumb.status(), 200);
    // The original bytes and the metadata still need a key.
    let original = http_client().get(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_error(original, 401, "unauthorized").await;
}

#[actix_web::test]
async fn a_signed_video_plays_through_its_token_and_only_through_it_sqlite() {
    a_signed_video_plays_through_its_token_and_only_through_it(Backend::Sqlite).await
}

/// The upload says `public`: through the streamed door with a key, and
/// through a signed upload URL (the backend's say); anything else is 400.
#[actix_web::test]
async fn an_upload_may_say_its_media_is_public() {
    let app: TestApp = spawn_app_with(Backend::Sqlite, |s| {
        s.auth.api_keys =
            vec![ApiKey { id: "k".into(), key: "s".into(), project_id: "p".into(), scopes: Scope::all() }];
    })
    .await;
    let bare = |hash: &str| http_client().get(app.url(&format!("/media/{hash}/thumbnail.jpg"))).send();
    // The streamed door.
    let init: Value = app
        .client
        .post(app.url("/upload/init"))
        .json(&serde_json::json!({"url": "https://p.test/pub.mp4", "bucket": "b", "playback": "public"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored = app.send_body(init["upload_id"].as_str().unwrap(), fixture("small")).await;
    let stored: Value = stored.json().await.unwrap();
    assert_eq!(bare(stored["hash"].as_str().unwrap()).await.unwrap().status(), 200, "{stored}");
    // A signed upload URL that says public, used by the chunked door.
    let signed: Value = app
        .client
        .post(app.url("/api/v1/uploads"))
        .json(&serde_json::json!({"playback": "public"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bytes = std::fs::read(crate::helpers::fixture_path("large")).unwrap();
    let tokened = crate::helpers::http_client_with_header("upload-token", signed["token"].as_str().unwrap());
    let init: Value = tokened
        .post(app.url("/videos/init"))
        .json(&serde_json::json!({"filename": "l.mp4", "size": bytes.len(), "chunk_size": bytes.len()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = init["upload_id"].as_str().unwrap();
    let chunk = tokened
        .post(app.url(&format!("/videos/upload_chunk/{id}/0")))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(chunk.status(), 200);
    let done: Value =
        tokened.post(app.url(&format!("/videos/finalize/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(bare(done["hash"].as_str().unwrap()).await.unwrap().status(), 200, "{done}");
    // Without a say, signed; a wrong word is refused.
    let plain = app.upload("https://p.test/plain.mp4", "b", None, fixture("other")).await;
    assert_eq!(bare(plain["hash"].as_str().unwrap()).await.unwrap().status(), 401);
    let bad = app
        .client
        .post(app.url("/upload/init"))
        .json(&serde_json::json!({"url": "https://p.test/x.mp4", "bucket": "b", "playback": "open"}))
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalid-policy").await;
}
