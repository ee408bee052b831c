//! Operations: liveness, readiness and Prometheus metrics.

use super::AppState;
use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers, the storage root takes writes and,
/// when configured, Kafka answers.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = state.repo.ping().await.map_err(|e| e.to_string());
    let store = state.store.clone();
    let storage = match web::block(move || store.check_writable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let queue = state.queue.ping().await.map_err(|e| e.to_string());
    match (&database, &storage, &queue) {
        (Ok(()), Ok(()), Ok(())) => Ok(HttpResponse::Ok()
            .json(json!({"status": "ready", "database": "ok", "storage": "ok", "queue": state.queue.backend()}))),
        _ => {
            let problems: Vec<String> = [("database", database), ("storage", storage), ("queue", queue)]
                .into_iter()
                .filter_map(|(what, r)| r.err().map(|e| format!("{what}: {e}")))
                .collect();
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", problems.join("; ")))
        }
    }
}

pub async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}
