//! HTTP handlers only: parse the request into domain types, call a handle,
//! map the outcome. No storage, actor or ffmpeg details live here.

mod cache;
mod chunked;
mod events;
mod files;
mod frames;
mod ingest;
mod media;
mod multipart;
mod ops;
mod pages;
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
}

/// Largest JSON request body (init and ingest requests with client meta).
const JSON_LIMIT: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(JSON_LIMIT).error_handler(json_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .service(web::resource("/upload/init").route(web::post().to(upload::init)))
        .service(
            // PUT too: `curl -T file` sends PUT (the README's first command).
            web::resource("/upload/{upload_id}")
                .route(web::post().to(upload::body))
                .route(web::put().to(upload::body))
                .route(web::get().to(upload::status)),
        )
        .service(web::resource("/ingest").route(web::post().to(ingest::ingest)))
        // Section 2: chunked uploads. `/videos/upload/...` before `/videos/{video_id}`.
        .service(web::resource("/videos/init").route(web::post().to(chunked::init)))
        .service(
            web::resource("/videos/upload_chunk/{upload_id}/{chunk_index}")
                .route(web::post().to(chunked::upload_chunk)),
        )
        .service(
            web::resource("/videos/upload/{upload_id}")
                .route(web::get().to(chunked::status))
                .route(web::delete().to(chunked::abort)),
        )
        .service(web::resource("/videos/finalize/{upload_id}").route(web::post().to(chunked::finalize)))
        .service(web::resource("/videos").route(web::get().to(chunked::list)))
        .service(web::resource("/videos/{video_id}").route(web::get().to(chunked::one)))
        // Section 3: multipart with presigned parts.
        .service(
            web::scope("/api/v1/project/{project_id}/direct_upload/s3/multipart")
                .service(web::resource("").route(web::post().to(multipart::create)))
                .service(web::resource("/{upload_id}/complete").route(web::post().to(multipart::complete)))
                .service(
                    web::resource("/{upload_id}/{part_number}")
                        .route(web::get().to(multipart::sign_part))
                        .route(web::put().to(multipart::put_part)),
                )
                .service(
                    web::resource("/{upload_id}")
                        .route(web::get().to(multipart::list_parts))
                        .route(web::delete().to(multipart::abort)),
                ),
        )
        // Section 4: tus 1.0.
        .service(
            web::scope("/files")
                .wrap(actix_web::middleware::DefaultHeaders::new().add(("Tus-Resumable", tus::TUS_VERSION)))
                .service(
                    web::resource(["", "/"])
                        .route(web::post().to(tus::create))
                        .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options)),
                )
                .service(web::resource("/{upload_id}/result").route(web::get().to(tus::result)))
                .service(
                    web::resource("/{upload_id}")
                        .route(web::head().to(tus::head))
                        .route(web::patch().to(tus::patch))
                        .route(web::delete().to(tus::terminate))
                        .route(web::method(actix_web::http::Method::OPTIONS).to(tus::options)),
                ),
        )
        .service(web::resource("/video/{hash}/frame").route(web::get().to(frames::one)))
        .service(web::resource("/media/{hash}/thumbnail.jpg").route(web::get().to(frames::thumbnail)))
        .service(web::resource("/video/{hash}/frames").route(web::post().to(frames::batch)))
        .service(web::resource("/video/{hash}/transcode").route(web::post().to(media::transcode)))
        .service(web::resource("/video/{hash}/unmerge").route(web::post().to(cache::unmerge)))
        .service(
            web::resource("/media/{hash}/{tail:.*}")
                .route(web::get().to(media::file))
                .route(web::head().to(media::file)),
        )
        .service(web::resource("/events").route(web::get().to(events::stream)))
        .service(web::resource("/resolve").route(web::get().to(cache::resolve)))
        .service(web::resource("/meta/{hash}").route(web::get().to(cache::meta)))
        .service(
            web::resource("/video/{hash}")
                .route(web::get().to(cache::read))
                .route(web::head().to(cache::read))
                .route(web::delete().to(cache::delete)),
        )
        // Section 7: the browser pages.
        .service(web::resource("/").route(web::get().to(pages::upload_page)).route(web::head().to(pages::upload_page)))
        .service(
            web::resource("/player").route(web::get().to(pages::player_page)).route(web::head().to(pages::player_page)),
        )
        .service(
            web::resource("/client/{name:.*}").route(web::get().to(pages::asset)).route(web::head().to(pages::asset)),
        )
        .service(web::resource("/healthz").route(web::get().to(ops::healthz)))
        .service(web::resource("/readyz").route(web::get().to(ops::readyz)))
        .service(web::resource("/metrics").route(web::get().to(ops::prometheus)));
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
}

/// A `SourceRequest` with every field validated.
pub struct ParsedSource {
    pub url: SourceUrl,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub meta: serde_json::Value,
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
        })
    }
}
