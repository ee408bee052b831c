//! Operations: liveness, readiness and Prometheus metrics.

use super::AppState;
use crate::error::ApiError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers and the storage root takes writes.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = state.repo.ping().await.map_err(|e| e.to_string());
    let store = state.store.clone();
    let storage = match web::block(move || store.check_writable()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match (&database, &storage) {
        (Ok(()), Ok(())) => Ok(HttpResponse::Ok().json(json!({"status": "ready", "database": "ok", "storage": "ok"}))),
        _ => {
            let problems: Vec<String> = [("database", database), ("storage", storage)]
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
