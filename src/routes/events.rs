//! `GET /events`: the events of the contract as Server-Sent Events, from
//! the moment the client connects (`?hash=` keeps one video's). A client
//! that falls more than the bus's backlog behind skips what it missed and
//! is told so with a comment line.

use super::AppState;
use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
pub struct EventsQuery {
    hash: Option<String>,
}

pub async fn stream(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    query: web::Query<EventsQuery>,
) -> HttpResponse {
    let receiver = state.queue.events().subscribe();
    let hash = query.into_inner().hash;
    let hello = Bytes::from_static(b"retry: 2000\n: connected\n\n");
    // A project sees the events of the videos it holds (section 8); a video
    // found held is remembered for the rest of the stream.
    let scope = Scope {
        project: caller.tenant().confined_to().map(str::to_owned),
        repo: state.repo.clone(),
        held: Default::default(),
    };
    let events = futures_util::stream::unfold((receiver, hash, scope), |(mut receiver, hash, mut scope)| async move {
        loop {
            let chunk = match tokio::time::timeout(KEEPALIVE, receiver.recv()).await {
                Err(_) => Bytes::from_static(b": keepalive\n\n"),
                Ok(Err(RecvError::Lagged(n))) => Bytes::from(format!(": {n} events skipped\n\n")),
                Ok(Err(RecvError::Closed)) => return None,
                Ok(Ok(event)) => {
                    if hash.as_deref().is_some_and(|h| event.get("hash").and_then(|v| v.as_str()) != Some(h)) {
                        continue;
                    }
                    if !scope.admits(&event).await {
                        continue;
                    }
                    let kind = event.get("type").and_then(|v| v.as_str()).unwrap_or("message");
                    Bytes::from(format!("event: {kind}\ndata: {event}\n\n"))
                }
            };
            return Some((Ok::<_, actix_web::Error>(chunk), (receiver, hash, scope)));
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::once(async move { Ok(hello) }).chain(events))
}

/// Which events one stream may carry.
struct Scope {
    /// `None`: every event (the operator).
    project: Option<String>,
    repo: crate::storage::Repository,
    /// Videos found held by the project.
    held: std::collections::HashSet<String>,
}

impl Scope {
    /// An event about a video the project holds. Events without a video
    /// (`ingest.failed` of a request) are the operator's only.
    async fn admits(&mut self, event: &serde_json::Value) -> bool {
        let Some(project) = &self.project else { return true };
        // An upload's own events name its project: another project that
        // holds the same bytes is not told of it.
        if let Some(of) = event.get("project").and_then(|v| v.as_str()) {
            return of == project;
        }
        let Some(hash) = event.get("hash").and_then(|v| v.as_str()) else { return false };
        if self.held.contains(hash) {
            return true;
        }
        let held = match crate::domain::ContentHash::parse(hash) {
            Ok(h) => self.repo.holds(project, &h).await.unwrap_or(false),
            Err(_) => false,
        };
        // Only what is held is remembered: a video the project does not
        // hold yet may be one it uploads next.
        if held && self.held.len() < 10_000 {
            self.held.insert(hash.to_owned());
        }
        held
    }
}
