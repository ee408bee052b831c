//! HTTP handlers only: parse the request into domain types, call a handle,
//! map the outcome. No storage, actor or ffmpeg details live here. Which
//! routes exist, and who may call each, is the table in `table.rs`.

pub mod access;
mod cache;
mod chunked;
mod events;
mod files;
mod frames;
mod ingest;
mod keys;
mod media;
mod multipart;
mod ops;
mod pages;
mod playback;
mod signed_uploads;
pub mod table;
mod tus;
mod upload;

use crate::auth::Auth;
use crate::config::Settings;
use crate::domain::{Bucket, Prefix, SourceUrl};
use crate::error::ApiError;
use crate::ingest::Fetcher;
use crate::storage::{Repository, Store};
use crate::telemetry::Metrics;
use crate::upload::Uploads;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};
use std::sync::Arc;

/// Everything handlers need, shared by all workers.
pub struct AppState {
    pub uploads: Uploads,
    pub fetcher: Fetcher,
    pub repo: Repository,
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub upload_max_bytes: u64,
    pub auth: Auth,
    pub settings: Arc<Settings>,
    pub frames: actix::Addr<crate::media::frames::FrameGrabber>,
    /// The near-duplicate index, which forgets deleted videos.
    pub near: Arc<crate::dedup::NearDuplicates>,
    /// Transcode jobs and events.
    pub queue: crate::queue::Queue,
    /// The use-cases on stored videos: remove, unmerge, request a transcode.
    pub library: crate::library::Library,
    /// Webhook endpoints and what they have been sent.
    pub webhooks: crate::webhooks::Webhooks,
    /// Published media files kept mapped between requests.
    pub media_files: Arc<crate::storage::MappedFiles>,
}

/// Largest JSON request body (init and ingest requests with client meta).
const JSON_LIMIT: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(JSON_LIMIT).error_handler(json_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .configure(table::register);
}

/// A header holding a whole number, if present; 400 if it is anything else.
pub(crate) fn header_u64(req: &HttpRequest, name: &str) -> Result<Option<u64>, ApiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => {
            value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).map(Some).ok_or_else(|| {
                ApiError::bad_request("invalid-header", format!("{name} must be a whole number of bytes"))
            })
        }
    }
}

/// Answers paths nothing serves.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found("not-found", format!("nothing is served at {}", req.path())))
}

fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::http::StatusCode;
    let api = match &err {
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the body must be JSON (Content-Type: application/json)",
        ),
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("JSON bodies are limited to {limit} bytes"),
        ),
        JsonPayloadError::Deserialize(e) => ApiError::bad_request("invalid-json", e.to_string()),
        JsonPayloadError::Payload(e) => ApiError::bad_request("truncated-body", e.to_string()),
        other => ApiError::bad_request("invalid-json", other.to_string()),
    };
    api.into()
}

fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid-query", err.to_string()).into()
}

fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid-path", err.to_string()).into()
}

/// The body of `POST /upload/init` and `POST /ingest`: where a video comes
/// from and where it goes.
#[derive(serde::Deserialize)]
pub struct SourceRequest {
    url: String,
    bucket: String,
    prefix: Option<String>,
    meta: Option<serde_json::Value>,
    /// `"public"` or `"signed"` (the default): the video's media.
    playback: Option<String>,
}

/// A `SourceRequest` with every field validated.
pub struct ParsedSource {
    pub url: SourceUrl,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub meta: serde_json::Value,
    /// The video's media is to be public.
    pub public: bool,
}

impl SourceRequest {
    fn parse(self) -> Result<ParsedSource, ApiError> {
        let meta = match self.meta {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(object @ serde_json::Value::Object(_)) => object,
            Some(_) => return Err(ApiError::bad_request("invalid-meta", "meta must be a JSON object")),
        };
        Ok(ParsedSource {
            url: SourceUrl::parse(&self.url)?,
            bucket: Bucket::parse(&self.bucket)?,
            prefix: Prefix::parse(self.prefix.as_deref().unwrap_or(""))?,
            meta,
            public: signed_uploads::playback_choice(self.playback.as_deref())?,
        })
    }
}
