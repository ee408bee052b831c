//! `POST /ingest` against a local HTTP origin, with the private-network guard
//! on, off, and tricked by a redirect.

use crate::helpers::{Backend, assert_error, blake3_hex, fixture, spawn_app, spawn_app_with};
use std::io::{Read, Write};
use std::net::TcpListener;

#[derive(Clone)]
pub enum Reply {
    Body(Vec<u8>),
    Redirect(String),
    /// Accepts the request and never answers.
    Hang,
}

/// A minimal HTTP/1.1 origin on `ip`, one thread per connection, serving
/// fixed replies by path. Returns its port.
pub fn origin(ip: &str, routes: Vec<(&'static str, Reply)>) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let reply = routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r.clone());
                let _ = match reply {
                    Some(Reply::Body(bytes)) => stream
                        .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: video/mp4\r\nconnection: close\r\n\r\n", bytes.len()).as_bytes())
                        .and_then(|_| stream.write_all(&bytes)),
                    Some(Reply::Redirect(to)) => stream.write_all(
                        format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes(),
                    ),
                    Some(Reply::Hang) => {
                        std::thread::sleep(std::time::Duration::from_secs(30));
                        Ok(())
                    }
                    None => stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
                };
            });
        }
    });
    port
}

async fn post_ingest(app: &crate::helpers::TestApp, url: &str) -> reqwest::Response {
    app.client
        .post(app.url("/ingest"))
        .json(&serde_json::json!({"url": url, "bucket": "fetched"}))
        .send()
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_guard_refuses_loopback_by_address_and_by_name() {
    let video = fixture("small");
    let port = origin("127.0.0.1", vec![("/v.mp4", Reply::Body(video))]);
    let app = spawn_app(Backend::Sqlite).await;

    assert_error(post_ingest(&app, &format!("http://127.0.0.1:{port}/v.mp4")).await, 403, "forbidden-address").await;
    assert_error(post_ingest(&app, &format!("http://localhost:{port}/v.mp4")).await, 403, "forbidden-address").await;
    assert_error(post_ingest(&app, &format!("http://[::ffff:127.0.0.1]:{port}/v.mp4")).await, 403, "forbidden-address")
        .await;
    assert!(app.objects().is_empty());
    assert_error(
        app.client
            .get(app.url("/resolve"))
            .query(&[("url", format!("http://127.0.0.1:{port}/v.mp4"))])
            .send()
            .await
            .unwrap(),
        404,
        "unknown-url",
    )
    .await;
}

#[actix_web::test]
async fn with_the_guard_off_the_fetched_video_is_stored_and_a_known_url_is_an_alias() {
    let video = fixture("small");
    let port = origin("127.0.0.1", vec![("/v.mp4", Reply::Body(video.clone()))]);
    let app = spawn_app_with(Backend::Sqlite, |s| s.ingest.allow_private_networks = true).await;
    let url = format!("http://127.0.0.1:{port}/v.mp4");

    let response = post_ingest(&app, &url).await;
    assert_eq!(response.status(), 200);
    let first: serde_json::Value = response.json().await.unwrap();
    let again: serde_json::Value = post_ingest(&app, &url).await.json().await.unwrap();

    assert_eq!(first["status"], "new");
    assert_eq!(first["hash"], blake3_hex(&video).as_str());
    assert_eq!(first["size_bytes"], video.len() as u64);
    assert_eq!(again["status"], "url_alias");
    assert_eq!(again["hash"], first["hash"]);
    assert_eq!(app.objects().len(), 1);
    assert_eq!(std::fs::read(&app.objects()[0]).unwrap(), video);
}

#[actix_web::test]
async fn a_redirect_to_a_private_address_is_refused() {
    // 127.0.0.1 plays a permitted origin (allow-listed), 127.0.0.2 the private
    // target it redirects to: the guard must check every hop, not just the first.
    let video = fixture("small");
    let private = origin("127.0.0.2", vec![("/secret.mp4", Reply::Body(video.clone()))]);
    let public = origin(
        "127.0.0.1",
        vec![
            ("/go", Reply::Redirect(format!("http://127.0.0.2:{private}/secret.mp4"))),
            ("/direct.mp4", Reply::Body(video.clone())),
        ],
    );
    let app = spawn_app_with(Backend::Sqlite, |s| s.ingest.allow_networks = vec!["127.0.0.1/32".into()]).await;

    assert_error(post_ingest(&app, &format!("http://127.0.0.1:{public}/go")).await, 403, "forbidden-address").await;
    assert!(app.objects().is_empty());

    // Control: the permitted origin itself is fetched, so the refusal above was the hop.
    let direct = post_ingest(&app, &format!("http://127.0.0.1:{public}/direct.mp4")).await;
    assert_eq!(direct.status(), 200);
    assert_eq!(app.objects().len(), 1);
}

#[actix_web::test]
async fn ingest_refuses_oversized_sources_and_reports_upstream_errors() {
    let video = fixture("small");
    let port = origin("127.0.0.1", vec![("/v.mp4", Reply::Body(video.clone()))]);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.ingest.allow_private_networks = true;
        s.ingest.max_bytes = 1000;
    })
    .await;

    assert_error(post_ingest(&app, &format!("http://127.0.0.1:{port}/v.mp4")).await, 413, "too-large").await;
    assert_error(post_ingest(&app, &format!("http://127.0.0.1:{port}/missing.mp4")).await, 502, "fetch-failed").await;
    assert_error(post_ingest(&app, "ftp://example.com/x.mp4").await, 400, "invalid-url").await;
    assert!(app.objects().is_empty());
}

#[actix_web::test]
async fn a_source_that_never_answers_times_out() {
    let port = origin("127.0.0.1", vec![("/slow.mp4", Reply::Hang)]);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.ingest.allow_private_networks = true;
        s.ingest.timeout_secs = 1;
    })
    .await;

    assert_error(post_ingest(&app, &format!("http://127.0.0.1:{port}/slow.mp4")).await, 504, "fetch-timeout").await;
    assert!(app.objects().is_empty());
}
