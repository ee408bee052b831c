//! Section 8, projects as tenants: bytes are stored once, but nothing a
//! project is answered tells it what another holds. Project B asks about
//! A's video, uploads A's exact bytes and A's near-duplicate, and every
//! answer is what a video nobody holds gets.

use crate::corpus::corpus;
use crate::helpers::{Backend, TestApp, assert_error, http_client_as, spawn_app_with};
use serde_json::Value;
use vidcache::config::{ApiKey, Scope};

fn two_projects(settings: &mut vidcache::config::Settings) {
    let key = |id: &str, project: &str| ApiKey {
        id: id.into(),
        key: format!("secret-{id}"),
        project_id: project.into(),
        scopes: Scope::all(),
    };
    settings.auth.api_keys = vec![key("a", "pa"), key("b", "pb")];
}

async fn upload_as(app: &TestApp, client: &reqwest::Client, url: &str, bucket: &str, bytes: Vec<u8>) -> Value {
    let init: Value = client
        .post(app.url("/upload/init"))
        .json(&serde_json::json!({"url": url, "bucket": bucket, "meta": {"who": bucket}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = init["upload_id"].as_str().unwrap_or_else(|| panic!("pending: {init}")).to_owned();
    client
        .post(app.url(&format!("/upload/{id}")))
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Status and body of a GET, for comparing answers.
async fn answer(client: &reqwest::Client, url: String) -> (u16, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The answer keys of an ingest result, which must not differ.
fn shape(result: &Value) -> Vec<String> {
    let mut keys: Vec<String> = result.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

async fn another_projects_videos_are_invisible_and_its_bytes_are_new_to_b(backend: Backend) {
    let app = spawn_app_with(backend, two_projects).await;
    let (a, b) = (http_client_as("a", "secret-a"), http_client_as("b", "secret-b"));
    let mut b_events = crate::transcode::listen_as(&app, b.clone()).await;
    let corpus = corpus();
    let path = |family: &str, variant: &str| {
        corpus.iter().find(|(f, v, _)| f == family && v == variant).map(|(_, _, p)| p.clone()).unwrap()
    };
    let source = std::fs::read(path("life", "source")).unwrap();
    let stored = upload_as(&app, &a, "https://a.test/secret.mp4", "abucket", source.clone()).await;
    assert_eq!(stored["status"], "new");
    let hash = stored["hash"].as_str().unwrap().to_owned();
    let never = "ab".repeat(32);

    // Every read of A's video answers B exactly as for a hash nobody holds.
    for (route, with) in [
        ("/video/{}", None),
        ("/meta/{}", None),
        ("/media/{}/hls/master.m3u8", None),
        ("/media/{}/thumbnail.jpg", None),
        ("/video/{}/frame?pts_ns=0", None),
        ("/api/v1/videos/{}/playback", None),
        ("/resolve?url={}", Some("https://a.test/secret.mp4")),
    ] {
        let (theirs, unknown) = match with {
            Some(url) => (url.to_owned(), "https://never.test/x.mp4".to_owned()),
            None => (hash.clone(), never.clone()),
        };
        let seen = answer(&b, app.url(&route.replace("{}", &theirs))).await;
        let unseen = answer(&b, app.url(&route.replace("{}", &unknown))).await;
        assert_eq!(seen.0, unseen.0, "{route}: {seen:?} vs {unseen:?}");
        assert_eq!(seen.1.replace(&theirs, "X"), unseen.1.replace(&unknown, "X"), "{route}");
        assert!(seen.0 == 404 || seen.0 == 400, "{route}: {seen:?}");
        // A itself reads it (no transcode runs here: no HLS to read).
        if !route.contains("hls") {
            let own = a.get(app.url(&route.replace("{}", &theirs))).send().await.unwrap().status().as_u16();
            assert!(own != 404, "A reads its own {route}: {own}");
        }
    }
    let delete = b.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap();
    assert_error(delete, 404, "unknown-video").await;
    let listed: Value = b.get(app.url("/videos")).send().await.unwrap().json().await.unwrap();
    assert!(listed.as_array().unwrap().iter().all(|v| v["hash"] != hash.as_str()), "{listed}");
    // A's URL is not "cached" for B.
    let init: Value = b
        .post(app.url("/upload/init"))
        .json(&serde_json::json!({"url": "https://a.test/secret.mp4", "bucket": "bb"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(init["status"], "pending", "{init}");
    // B stores other bytes under that URL: each project has its own alias.
    let id = init["upload_id"].as_str().unwrap();
    let own: Value = b
        .post(app.url(&format!("/upload/{id}")))
        .header("content-type", "application/octet-stream")
        .body(std::fs::read(path("cellauto", "source")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["status"], "new", "{own}");
    let resolve = |client: &reqwest::Client| client.get(app.url("/resolve?url=https://a.test/secret.mp4")).send();
    let for_b: Value = resolve(&b).await.unwrap().json().await.unwrap();
    assert_eq!(for_b["hash"], own["hash"], "{for_b}");
    let for_a: Value = resolve(&a).await.unwrap().json().await.unwrap();
    assert_eq!(for_a["hash"], hash.as_str(), "{for_a}");

    // A's near-duplicate, uploaded by B, matches nothing of A's: new. By A: merged.
    let copy = std::fs::read(path("life", "240p")).unwrap();
    let near_b = upload_as(&app, &b, "https://b.test/copy.mp4", "bbucket", copy).await;
    assert_eq!(near_b["status"], "new", "{near_b}");
    // (Another copy: B's bytes are B's video, which A does not hold.)
    let other_copy = std::fs::read(path("life", "crf38")).unwrap();
    let near_a = upload_as(&app, &a, "https://a.test/copy.mp4", "abucket", other_copy).await;
    assert_eq!(near_a["status"], "duplicate", "{near_a}");
    assert_eq!(near_a["match"], "perceptual", "{near_a}");

    // B uploads A's exact bytes: a new video of B's, at B's own path.
    let mine = upload_as(&app, &b, "https://b.test/mine.mp4", "bbucket", source.clone()).await;
    let fresh = upload_as(
        &app,
        &b,
        "https://b.test/other.mp4",
        "bbucket",
        std::fs::read(path("mandelbrot", "source")).unwrap(),
    )
    .await;
    assert_eq!(mine["status"], "new", "{mine}");
    assert_eq!(fresh["status"], "new", "{fresh}");
    assert_eq!(shape(&mine), shape(&fresh), "{mine} vs {fresh}");
    assert_eq!(mine["hash"], hash.as_str(), "the same bytes have the same hash");
    assert!(mine["file_path"].as_str().unwrap().starts_with("bbucket/"), "{mine}");
    // B sees its own view: its URL, bucket and metadata, none of A's.
    let meta: Value = b.get(app.url(&format!("/meta/{hash}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["aliases"], serde_json::json!(["https://b.test/mine.mp4"]), "{meta}");
    assert_eq!(meta["bucket"], "bbucket");
    assert_eq!(meta["meta"]["who"], "bbucket");
    assert!(!meta.to_string().contains("a.test"), "{meta}");
    let theirs: Value = a.get(app.url(&format!("/meta/{hash}"))).send().await.unwrap().json().await.unwrap();
    assert!(!theirs.to_string().contains("b.test") && !theirs.to_string().contains("bbucket"), "{theirs}");
    assert_eq!(theirs["aliases"][0], "https://a.test/secret.mp4", "{theirs}");
    // B's event stream carried B's uploads, never A's (A uploaded first).
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(std::time::Duration::from_millis(500), b_events.recv()).await {
        seen.push(event);
    }
    assert!(seen.iter().any(|e| e["upload_id"].is_string() && e["hash"] == hash.as_str()), "{seen:?}");
    assert!(seen.iter().all(|e| e["project"] == "pb"), "only B's own events: {seen:?}");
    // B uploads it again: now a duplicate, of its own video.
    let again = upload_as(&app, &b, "https://b.test/again.mp4", "bbucket", source.clone()).await;
    assert_eq!(again["status"], "duplicate", "{again}");

    // B lets go of its copy: A's stays; B no longer sees it.
    assert_eq!(b.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap().status(), 204);
    assert_eq!(a.get(app.url(&format!("/video/{hash}"))).send().await.unwrap().status(), 200);
    assert_eq!(b.get(app.url(&format!("/video/{hash}"))).send().await.unwrap().status(), 404);
}
crate::both_backends!(another_projects_videos_are_invisible_and_its_bytes_are_new_to_b);

/// Bytes A has transcoded already, uploaded by B: B's video goes through
/// `queued` and `processing` as a new one would (its own job, as long as a
/// transcode of it takes), its media are not there for B until then, its
/// transcode events reach B only, and A hears nothing of it.
async fn a_claimed_video_is_transcoded_for_b_as_a_new_one_would_be(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        two_projects(s);
        s.transcode.workers = 1;
    })
    .await;
    let (a, b) = (http_client_as("a", "secret-a"), http_client_as("b", "secret-b"));
    // 20 s, so that B's job (as long as A's transcode took) lasts seconds:
    // with 2 s it was over before the checks below ran (CI saw `ready`).
    let source = std::fs::read(crate::helpers::fixture_path("long")).unwrap();
    let stored = upload_as(&app, &a, "https://a.test/t.mp4", "abucket", source.clone()).await;
    let hash = stored["hash"].as_str().unwrap().to_owned();
    let transcoded = |client: &reqwest::Client| {
        let (client, url) = (client.clone(), app.url(&format!("/meta/{hash}")));
        async move {
            let meta: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            meta["transcode"]["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while transcoded(&a).await != "ready" {
        assert!(std::time::Instant::now() < deadline, "A's transcode");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let mut a_events = crate::transcode::listen_as(&app, a.clone()).await;
    let mut b_events = crate::transcode::listen_as(&app, b.clone()).await;

    let mine = upload_as(&app, &b, "https://b.test/t.mp4", "bbucket", source).await;
    assert_eq!(mine["status"], "new", "{mine}");
    // Right after: not ready for B, and nothing to play yet, with its key
    // or a playback token; its thumbnail is there, as a new video's is.
    let status = transcoded(&b).await;
    assert!(status == "queued" || status == "processing", "B sees {status}");
    let meta: Value = b.get(app.url(&format!("/meta/{hash}"))).send().await.unwrap().json().await.unwrap();
    assert!(meta["transcode"]["hls_url"].is_null() && meta["transcode"]["renditions"].is_null(), "{meta}");
    let master = b.get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_error(master, 404, "not-found").await;
    let playback: Value =
        b.get(app.url(&format!("/api/v1/videos/{hash}/playback"))).send().await.unwrap().json().await.unwrap();
    let through_token = reqwest::get(app.url(playback["hls_url"].as_str().unwrap())).await.unwrap();
    assert_error(through_token, 404, "not-found").await;
    let thumbnail = reqwest::get(app.url(playback["thumbnail_url"].as_str().unwrap())).await.unwrap();
    assert_eq!(thumbnail.status(), 200);
    let again = b.post(app.url(&format!("/video/{hash}/transcode"))).send().await.unwrap();
    assert_eq!(again.json::<Value>().await.unwrap()["queued"], false);
    // A still sees its own ready video and its media.
    assert_eq!(transcoded(&a).await, "ready");
    let theirs = a.get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_eq!(theirs.status(), 200);

    // B's own transcode events, then its media.
    let mut kinds = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(std::time::Duration::from_secs(120), b_events.recv()).await {
        assert_eq!(event["project"], "pb", "{event}");
        let kind = event["type"].as_str().unwrap().to_owned();
        kinds.push(kind.clone());
        if kind == "transcode.completed" {
            assert_eq!(event["hls_url"], format!("/media/{hash}/hls/master.m3u8"), "{event}");
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("upload.completed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "transcode.started"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("transcode.completed"), "{kinds:?}");
    assert_eq!(transcoded(&b).await, "ready");
    let master = b.get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_eq!(master.status(), 200);
    let through_token = reqwest::get(app.url(playback["hls_url"].as_str().unwrap())).await.unwrap();
    assert_eq!(through_token.status(), 200, "the token B got early works once B's video is ready");
    // A heard nothing of B's upload nor of its transcode.
    let told = tokio::time::timeout(std::time::Duration::from_millis(500), a_events.recv()).await;
    assert!(told.is_err(), "A was told of {told:?}");
    // B lets go: its token no longer opens the video, A's media stay.
    assert_eq!(b.delete(app.url(&format!("/video/{hash}"))).send().await.unwrap().status(), 204);
    let gone = reqwest::get(app.url(playback["hls_url"].as_str().unwrap())).await.unwrap();
    assert_error(gone, 403, "bad-token").await;
    let theirs = a.get(app.url(&format!("/media/{hash}/hls/master.m3u8"))).send().await.unwrap();
    assert_eq!(theirs.status(), 200);
}
crate::both_backends!(a_claimed_video_is_transcoded_for_b_as_a_new_one_would_be);
