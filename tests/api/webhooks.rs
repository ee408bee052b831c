//! Section 8, webhooks: every event reaches each endpoint signed; an
//! endpoint that fails is retried; a forged body fails the documented check.

use crate::helpers::{Backend, fixture, spawn_app_with};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use vidcache::config::WebhookSettings;

#[derive(Default)]
struct Received {
    /// (signature header, raw body) of each request.
    requests: Mutex<Vec<(String, Vec<u8>)>>,
    /// Answer 500 to this many requests first.
    fail_first: Mutex<u32>,
}

async fn receive(req: HttpRequest, body: web::Bytes, received: web::Data<Arc<Received>>) -> HttpResponse {
    let signature = req.headers().get("vidcache-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    received.requests.lock().unwrap().push((signature, body.to_vec()));
    let mut fail = received.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::NoContent().finish()
}

/// A receiver on loopback: its URL and what it got.
fn receiver(fail_first: u32) -> (String, Arc<Received>) {
    let received = Arc::new(Received { fail_first: Mutex::new(fail_first), ..Default::default() });
    let data = web::Data::new(received.clone());
    let server = HttpServer::new(move || App::new().app_data(data.clone()).route("/hook", web::post().to(receive)))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}/hook"), received)
}

fn events_of(received: &Received, kind: &str) -> Vec<(String, Vec<u8>)> {
    let requests = received.requests.lock().unwrap();
    requests
        .iter()
        .filter(|(_, body)| serde_json::from_slice::<Value>(body).is_ok_and(|b| b["type"] == kind))
        .cloned()
        .collect()
}

async fn events_reach_every_endpoint_signed_and_failures_are_retried(backend: Backend) {
    let (steady_url, steady) = receiver(0);
    let (flaky_url, flaky) = receiver(2);
    let app = spawn_app_with(backend, |s| {
        s.webhooks = vec![
            WebhookSettings { url: steady_url.clone(), secret: "steady-secret".into(), events: vec![] },
            WebhookSettings {
                url: flaky_url.clone(),
                secret: "flaky-secret".into(),
                events: vec!["upload.completed".into()],
            },
        ];
    })
    .await;
    let stored = app.upload("https://hooks.test/a.mp4", "b", None, fixture("small")).await;
    let hash = stored["hash"].as_str().unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while events_of(&flaky, "upload.completed").len() < 3 || events_of(&steady, "upload.completed").is_empty() {
        assert!(std::time::Instant::now() < deadline, "webhooks did not arrive");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (signature, body) = events_of(&steady, "upload.completed").remove(0);
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["hash"], hash);
    assert!(vidcache::webhooks::verify("steady-secret", &signature, &body, now, 300), "{signature}");
    // The documented check catches a forged body, a wrong secret, a replay.
    let mut forged = body.clone();
    forged.extend_from_slice(b" ");
    assert!(!vidcache::webhooks::verify("steady-secret", &signature, &forged, now, 300));
    assert!(!vidcache::webhooks::verify("flaky-secret", &signature, &body, now, 300));
    assert!(!vidcache::webhooks::verify("steady-secret", &signature, &body, now + 3600, 300));
    // The flaky endpoint got the same event three times: two 500s, one 204,
    // each signed with its own secret; and only the type it asked for.
    let tries = events_of(&flaky, "upload.completed");
    assert!(tries.iter().all(|(sig, body)| vidcache::webhooks::verify("flaky-secret", sig, body, now, 300)));
    assert!(
        flaky
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, b)| { serde_json::from_slice::<Value>(b).is_ok_and(|e| e["type"] == "upload.completed") })
    );

    // Operators see it.
    let report = app.get_json("/api/v1/webhooks").await;
    let flaky_report = report["webhooks"].as_array().unwrap().iter().find(|w| w["url"] == flaky_url.as_str()).unwrap();
    assert_eq!(flaky_report["delivered"], 1, "{report}");
    assert_eq!(flaky_report["recent"][0]["attempts"], 3, "{report}");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vidcache_webhook_deliveries_total{result=\"delivered\"}"), "{metrics}");
}
crate::both_backends!(events_reach_every_endpoint_signed_and_failures_are_retried);

/// Deliveries are durable: one still failing when the daemon is killed -9
/// is sent after the restart, with the same event `id` and a valid
/// signature, once the receiver answers.
#[actix_web::test]
async fn a_delivery_pending_at_a_kill_is_sent_after_the_restart() {
    use crate::restart::{Daemon, free_port};
    let (url, received) = receiver(u32::MAX);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let database_url = crate::helpers::fresh_database(Backend::Sqlite, &root).await;
    let hooks =
        serde_json::json!([{"url": url, "secret": "durable-secret", "events": ["upload.completed"]}]).to_string();
    let env = [("VIDCACHE__WEBHOOKS", hooks.as_str())];
    let client = crate::helpers::http_client();

    let mut daemon = Daemon::start_with(&root, &database_url, free_port(), &env).await;
    let id = crate::helpers::init_upload(&client, &daemon.address, "https://hooks.test/durable.mp4").await;
    let video = fixture("small");
    let stored: Value =
        crate::helpers::resume_upload(&client, &daemon.address, &id, 0, &video).await.json().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while events_of(&received, "upload.completed").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    daemon.kill9();
    let tried = events_of(&received, "upload.completed").len();
    *received.fail_first.lock().unwrap() = 0;

    let _daemon = Daemon::start_with(&root, &database_url, free_port(), &env).await;
    // The lease of an attempt cut off by the kill runs out within 30 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while events_of(&received, "upload.completed").len() <= tried {
        assert!(std::time::Instant::now() < deadline, "the pending delivery was not sent after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let all = events_of(&received, "upload.completed");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ids: Vec<Value> =
        all.iter().map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap()["id"].clone()).collect();
    assert!(ids[0].is_string(), "{ids:?}");
    assert!(ids.iter().all(|i| *i == ids[0]), "one event, sent again: {ids:?}");
    let (signature, body) = all.last().unwrap();
    assert!(vidcache::webhooks::verify("durable-secret", signature, body, now, 300));
    assert_eq!(serde_json::from_slice::<Value>(body).unwrap()["hash"], stored["hash"]);
    // Delivered: not sent again.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(events_of(&received, "upload.completed").len(), all.len());
}
