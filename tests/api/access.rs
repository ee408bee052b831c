//! Section 8: who may call what. The table test walks the daemon's own
//! route table, so a route added to it is tested here with no edit, and a
//! route registered around it is refused by the guard (unit test in
//! `src/routes/access.rs`).

use crate::both_backends;
use crate::helpers::{Backend, assert_error, http_client, spawn_app_with};
use reqwest::Method;
use serde_json::{Value, json};
use vidcache::auth::{Rule, Scope};
use vidcache::config::{ApiKey, Settings};
use vidcache::routes::table::ENDPOINTS;

const PROJECT: &str = "p1";

fn key(id: &str, project: &str, scopes: &[Scope]) -> ApiKey {
    ApiKey { id: id.into(), key: format!("secret-of-{id}"), project_id: project.into(), scopes: scopes.to_vec() }
}

/// `full` of p1 with every scope (the app client's), `other` of p2 with
/// every scope, and for each scope a p1 key with all the others.
fn keys(settings: &mut Settings) {
    let mut keys = vec![key("full", PROJECT, &Scope::ALL), key("other", "p2", &Scope::ALL)];
    for scope in Scope::ALL {
        let rest: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != scope).collect();
        keys.push(key(&format!("no-{}", scope.as_str()), PROJECT, &rest));
    }
    settings.auth.api_keys = keys;
}

/// A concrete path for a pattern: placeholders filled with values of the
/// right shape (nothing they name exists, except the project).
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{project_id}", PROJECT)
        .replace("{upload_id}", "0123456789abcdef0123456789abcdef")
        .replace("{chunk_index}", "0")
        .replace("{part_number}", "1")
        .replace("{video_id}", "1")
        .replace("{key_id}", "vk_0000000000000000")
        .replace("{token}", "4102444800-00112233445566778899aabbccddeeff")
        .replace("{hash}", &"ab".repeat(32))
        .replace("{tail:.*}", "hls/master.m3u8")
        .replace("{name:.*}", "upload.js")
}

#[derive(Debug, Clone, Copy)]
enum Credentials {
    None,
    WrongSecret,
    OtherProject,
    MissingScope,
    Right,
}

async fn status_of(
    app: &crate::helpers::TestApp,
    method: &Method,
    path: &str,
    who: Credentials,
    rule: Rule,
) -> (u16, String) {
    let request = http_client().request(method.clone(), app.url(path));
    let scope = match rule {
        Rule::Scope(s) | Rule::ProjectScope(s) => s,
        Rule::Door | Rule::DoorCreate => Scope::Upload,
        Rule::Media => Scope::Read,
        Rule::Public | Rule::Presigned | Rule::Playback => Scope::Read,
    };
    let request = match who {
        Credentials::None => request,
        Credentials::WrongSecret => request.basic_auth("full", Some("not-the-secret")),
        Credentials::OtherProject => request.basic_auth("other", Some("secret-of-other")),
        Credentials::MissingScope => {
            let id = format!("no-{}", scope.as_str());
            let secret = format!("secret-of-{id}");
            request.bearer_auth(format!("{id}.{secret}"))
        }
        Credentials::Right => request.bearer_auth("full.secret-of-full"),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // `/events` streams forever: its status and headers are all we need.
    let body =
        if path == "/events" && status == 200 { String::new() } else { response.text().await.unwrap_or_default() };
    (status, body)
}

async fn every_route_has_a_rule_that_holds(backend: Backend) {
    let app = spawn_app_with(backend, keys).await;
    let mut checked = 0;
    for endpoint in ENDPOINTS {
        let path = concrete(endpoint.path);
        assert!(!path.contains('{'), "no sample value for a placeholder of {}", endpoint.path);
        for who in [
            Credentials::None,
            Credentials::WrongSecret,
            Credentials::OtherProject,
            Credentials::MissingScope,
            Credentials::Right,
        ] {
            let method = Method::from_bytes(endpoint.method.as_str().as_bytes()).unwrap();
            let (status, body) = status_of(&app, &method, &path, who, endpoint.rule).await;
            let context = format!("{} {} as {who:?}: {status} {body}", endpoint.method, endpoint.path);
            let code = serde_json::from_str::<Value>(&body).ok().and_then(|b| b["code"].as_str().map(str::to_owned));
            // The refusal each case must get, if any: (status, code).
            let refusal = match (endpoint.rule, who) {
                (Rule::Public, _) => None,
                // No signature in the URL: the handler refuses, whoever asks.
                (Rule::Presigned, _) => Some((403, "bad-signature")),
                // A forged token in the path: the guard refuses, whoever asks.
                (Rule::Playback, _) => Some((403, "bad-token")),
                (_, Credentials::None | Credentials::WrongSecret) => Some((401, "unauthorized")),
                (_, Credentials::MissingScope) => Some((403, "missing-scope")),
                (Rule::ProjectScope(_), Credentials::OtherProject) => Some((403, "wrong-project")),
                // Admitted; what another project may see is the handlers'
                // business (the privacy tests).
                (_, Credentials::OtherProject | Credentials::Right) => None,
            };
            match refusal {
                None => assert!(status != 401 && status != 403, "{context}"),
                Some((want, _)) if method == Method::HEAD => assert_eq!(status, want, "{context} (HEAD: no body)"),
                Some((want, want_code)) => {
                    assert_eq!((status, code.as_deref()), (want, Some(want_code)), "{context}");
                    assert!(body.contains("\"message\""), "a refusal has the JSON error body: {context}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 5 * 50, "the table covers every route ({checked} checks)");
}
both_backends!(every_route_has_a_rule_that_holds);

async fn keys_are_minted_listed_used_and_revoked_at_run_time(backend: Backend) {
    let app = spawn_app_with(backend, keys).await;
    // Only an admin key mints keys, and only for its own project.
    let minted = app
        .client
        .post(app.url("/api/v1/keys"))
        .json(&json!({"scopes": ["read"], "label": "dashboard"}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 201);
    let minted: Value = minted.json().await.unwrap();
    assert_eq!(minted["project_id"], PROJECT);
    assert_eq!(minted["scopes"], json!(["read"]));
    let (id, token) = (minted["id"].as_str().unwrap().to_owned(), minted["token"].as_str().unwrap().to_owned());
    let forbidden = app.client.post(app.url("/api/v1/keys")).json(&json!({"project_id": "p2"})).send().await.unwrap();
    assert_error(forbidden, 403, "wrong-project").await;
    let bad = app.client.post(app.url("/api/v1/keys")).json(&json!({"scopes": ["root"]})).send().await.unwrap();
    assert_error(bad, 400, "invalid-scope").await;
    let without_admin = http_client()
        .post(app.url("/api/v1/keys"))
        .bearer_auth("no-admin.secret-of-no-admin")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(without_admin, 403, "missing-scope").await;

    // The new key reads (Bearer and Basic alike) and may not delete.
    let listed = http_client().get(app.url("/videos")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let (key_id, secret) = token.split_once('.').unwrap();
    let basic = http_client().get(app.url("/videos")).basic_auth(key_id, Some(secret)).send().await.unwrap();
    assert_eq!(basic.status(), 200);
    let delete = http_client().delete(app.url(&format!("/video/{}", "ab".repeat(32)))).bearer_auth(&token).send();
    assert_error(delete.await.unwrap(), 403, "missing-scope").await;

    // Listed without its secret; the secret is stored nowhere in the clear.
    let list: Value = app.client.get(app.url("/api/v1/keys")).send().await.unwrap().json().await.unwrap();
    let entry = list["keys"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).expect("listed").clone();
    assert_eq!(entry["source"], "api");
    assert!(!list.to_string().contains(secret), "a listing never shows a secret");
    assert!(list["keys"].as_array().unwrap().iter().all(|k| k["project_id"] == PROJECT), "own project only: {list}");
    let database = std::fs::read(app.root.parent().unwrap().join("vidcache.db")).unwrap_or_default();
    assert!(!database.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is not in the database");

    // Another project's admin cannot revoke it; its own can, and then it is refused.
    let other =
        http_client().delete(app.url(&format!("/api/v1/keys/{id}"))).basic_auth("other", Some("secret-of-other"));
    assert_error(other.send().await.unwrap(), 404, "key-not-found").await;
    let revoked = app.client.delete(app.url(&format!("/api/v1/keys/{id}"))).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    let after = http_client().get(app.url("/videos")).bearer_auth(&token).send().await.unwrap();
    assert_error(after, 401, "unauthorized").await;
    let configured = app.client.delete(app.url("/api/v1/keys/full")).send().await.unwrap();
    assert_error(configured, 404, "key-not-found").await;
}
both_backends!(keys_are_minted_listed_used_and_revoked_at_run_time);

/// A key minted at run time survives a restart (it is in the database, as
/// a MAC under the server secret kept beside the storage).
#[actix_web::test]
async fn minted_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |dir: &std::path::Path| {
        let mut s = Settings::defaults_only().unwrap();
        s.server.bind = "127.0.0.1:0".into();
        s.storage.root = dir.join("store");
        s.database.url = Settings::sqlite_url_under(dir);
        s.transcode.workers = 0;
        s.auth.api_keys = vec![key("full", PROJECT, &Scope::ALL)];
        s
    };
    let app = vidcache::startup::Application::build(settings(dir.path())).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let server = actix_web::rt::spawn(app.run_until_stopped());
    let minted: Value = http_client()
        .post(format!("{address}/api/v1/keys"))
        .basic_auth("full", Some("secret-of-full"))
        .json(&json!({"scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.abort();
    let _ = server.await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let app = vidcache::startup::Application::build(settings(dir.path())).await.unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let token = minted["token"].as_str().unwrap();
    let listed = http_client().get(format!("{address}/videos")).bearer_auth(token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
}

#[actix_web::test]
async fn a_public_bind_with_no_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults_only().unwrap();
    settings.server.bind = "0.0.0.0:0".into();
    settings.storage.root = dir.path().join("store");
    settings.database.url = Settings::sqlite_url_under(dir.path());
    settings.transcode.workers = 0;
    let err = vidcache::startup::Application::build(settings.clone()).await.err().expect("it must refuse");
    let message = format!("{err:#}");
    assert!(
        message.contains("refusing to serve on 0.0.0.0:0") && message.contains("auth.allow_anonymous"),
        "{message}"
    );

    // On purpose, it starts (and serves anonymously).
    settings.auth.allow_anonymous = true;
    let app = vidcache::startup::Application::build(settings).await.expect("allowed on purpose");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let listed = http_client().get(format!("{address}/videos")).send().await.unwrap();
    assert_eq!(listed.status(), 200);
}

/// With no keys on loopback (every other test's daemon), every route is open.
async fn an_open_daemon_admits_anonymous_callers(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    for path in ["/videos", "/metrics", "/api/v1/keys"] {
        let response = http_client().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let (status, _) =
        status_of(&app, &Method::DELETE, &format!("/video/{}", "cd".repeat(32)), Credentials::None, Rule::Public).await;
    assert_eq!(status, 404, "admitted, and nothing to delete");
}
both_backends!(an_open_daemon_admits_anonymous_callers);

/// The published Python client, unchanged, with its credentials only in the
/// base URL: it sends them as HTTP Basic, which every route accepts.
async fn the_python_client_works_through_a_base_url_with_credentials(backend: Backend) {
    let app = spawn_app_with(backend, keys).await;
    let file = crate::tus::fixture_path("small");
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let base = format!("http://full:secret-of-full@127.0.0.1:{port}");
    let seen = crate::tus::run_client(
        &crate::tus::python(),
        &["python_client.py", &base, &file, "https://python.test/clip.mp4"],
    )
    .await;
    let expected = crate::helpers::blake3_hex(&crate::helpers::fixture("small"));
    assert_eq!(seen["result"]["status"], "new", "{seen}");
    assert_eq!(seen["result"]["hash"], expected.as_str());
    assert_eq!(seen["resolved"]["hash"], expected.as_str());
    assert_eq!(seen["meta_hash"], expected.as_str());
    assert_eq!(seen["streamed_bytes"], crate::helpers::fixture("small").len());
    assert_eq!(seen["after_delete"], Value::Null, "deleted");

    let wrong = format!("http://full:wrong@127.0.0.1:{port}");
    let seen = crate::tus::run_client(
        &crate::tus::python(),
        &["python_client.py", &wrong, &file, "https://python.test/b.mp4"],
    )
    .await;
    assert_eq!(seen["refused"], 401, "{seen}");
    assert_eq!(seen["error"]["code"], "unauthorized");
}
both_backends!(the_python_client_works_through_a_base_url_with_credentials);

/// Two daemons on one PostgreSQL database: a key minted on one works on the
/// other within `auth.key_refresh_secs`, and a key revoked on one stops
/// working on the other as soon.
#[actix_web::test]
async fn keys_minted_or_revoked_on_one_daemon_reach_the_other() {
    let database = crate::helpers::fresh_database(Backend::Postgres, std::path::Path::new("/tmp")).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut addresses = Vec::new();
    for dir in &dirs {
        let mut s = Settings::defaults_only().unwrap();
        s.server.bind = "127.0.0.1:0".into();
        s.storage.root = dir.path().join("store");
        s.database.url = database.clone();
        s.transcode.workers = 0;
        s.auth.presign_secret = "one-server-secret-for-both-daemons-0123".into();
        s.auth.key_refresh_secs = 1;
        s.auth.api_keys = vec![key("full", PROJECT, &Scope::ALL)];
        let app = vidcache::startup::Application::build(s).await.unwrap();
        addresses.push(format!("http://127.0.0.1:{}", app.port()));
        actix_web::rt::spawn(app.run_until_stopped());
    }
    let minted: Value = http_client()
        .post(format!("{}/api/v1/keys", addresses[0]))
        .basic_auth("full", Some("secret-of-full"))
        .json(&json!({"scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().unwrap().to_owned();
    let status_on = |address: String, token: String| async move {
        http_client().get(format!("{address}/videos")).bearer_auth(token).send().await.unwrap().status().as_u16()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_on(addresses[1].clone(), token.clone()).await != 200 {
        assert!(std::time::Instant::now() < deadline, "the key minted on one daemon never reached the other");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let revoked = http_client()
        .delete(format!("{}/api/v1/keys/{}", addresses[0], minted["id"].as_str().unwrap()))
        .basic_auth("full", Some("secret-of-full"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(status_on(addresses[0].clone(), token.clone()).await, 401, "revoked at once where it was revoked");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status_on(addresses[1].clone(), token.clone()).await != 401 {
        assert!(std::time::Instant::now() < deadline, "the key revoked on one daemon still works on the other");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
