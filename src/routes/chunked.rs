//! Section 2, the chunked browser upload: `init`, then chunks in any order
//! and in parallel (raw bytes or `multipart/form-data` field `file`), then
//! `finalize`; status for resuming, abort, and the `GET /videos` listing.

use super::{AppState, header_u64};
use crate::domain::{Bucket, Prefix, UploadId};
use crate::error::ApiError;
use crate::storage::{Entry, EntryStatus, NewEntry, SessionRecord, TranscodeStatus, UploadKind};
use crate::upload::{DigestKind, NewUpload, UploadError, chunk_layout};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::json;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    filename: String,
    size: u64,
    chunk_size: Option<u64>,
    content_type: Option<String>,
    meta: Option<serde_json::Value>,
    bucket: Option<String>,
    prefix: Option<String>,
    /// `"public"` or `"signed"` (the default).
    playback: Option<String>,
}

/// Where chunked, multipart and tus uploads are stored unless told otherwise.
pub const DEFAULT_BUCKET: &str = "videos";

/// A display name: 1..=255 characters, no control characters.
pub fn check_filename(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid-filename",
            "filename must be 1 to 255 characters with no control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn check_meta(meta: Option<serde_json::Value>) -> Result<serde_json::Value, ApiError> {
    match meta {
        None | Some(serde_json::Value::Null) => Ok(json!({})),
        Some(object @ serde_json::Value::Object(_)) => Ok(object),
        Some(_) => Err(ApiError::bad_request("invalid-meta", "meta must be a JSON object")),
    }
}

pub fn check_size(size: u64, max: u64) -> Result<(), ApiError> {
    if size == 0 {
        return Err(ApiError::bad_request("invalid-size", "size must be at least 1 byte"));
    }
    if size > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("{size} bytes is larger than the upload limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// Whom open uploads are counted against (`upload.max_sessions_per_key`):
/// the caller's API key, or its address when it came without one.
pub fn client_owner(req: &HttpRequest) -> String {
    use actix_web::HttpMessage;
    match req.extensions().get::<crate::auth::Caller>().and_then(|c| c.key_id()) {
        Some(id) => format!("key:{id}"),
        None => format!("ip:{}", req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default()),
    }
}

#[tracing::instrument(skip_all)]
pub async fn init(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: crate::auth::Caller,
    body: web::Json<InitRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let limits = &state.settings.upload;
    let filename = check_filename(&body.filename)?;
    check_size(body.size, limits.max_bytes)?;
    let chunk_size = body.chunk_size.unwrap_or(limits.default_chunk_bytes);
    if !(limits.min_chunk_bytes..=limits.max_chunk_bytes).contains(&chunk_size) {
        return Err(ApiError::bad_request(
            "invalid-chunk-size",
            format!("chunk_size must be between {} and {} bytes", limits.min_chunk_bytes, limits.max_chunk_bytes),
        ));
    }
    if body.content_type.as_ref().is_some_and(|t| t.len() > 255 || t.chars().any(char::is_control)) {
        return Err(ApiError::bad_request("invalid-content-type", "content_type must be a short MIME type"));
    }
    let creation = super::signed_uploads::door_creation(
        &state,
        &caller,
        Some(body.size),
        body.content_type.as_deref(),
        body.playback.as_deref(),
    )
    .await?;
    let record = state
        .uploads
        .create_with_id(
            creation.id,
            NewUpload {
                url: None,
                bucket: Bucket::parse(body.bucket.as_deref().unwrap_or(DEFAULT_BUCKET))?,
                prefix: Prefix::parse(body.prefix.as_deref().unwrap_or(""))?,
                meta: super::signed_uploads::merged_meta(check_meta(body.meta)?, creation.meta),
                kind: UploadKind::Chunked,
                total_size: Some(body.size),
                chunk_size: Some(chunk_size),
                owner: Some((client_owner(&req), limits.max_sessions_per_key)),
                entry: Some(NewEntry {
                    filename,
                    content_type: body.content_type,
                    project_id: Some(creation.project.clone()),
                }),
                project: creation.project,
                public: creation.public,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(json!({
        "upload_id": record.id.as_str(),
        "video_id": record.entry_id,
        "chunk_size": chunk_size,
        "total_chunks": chunk_layout(body.size, chunk_size),
        "received": [],
    })))
}

/// `X-Chunk-Checksum: blake3=<64 hex>` or `sha256=<64 hex>` (what browsers
/// compute natively, so what the upload page sends).
fn chunk_checksum(req: &HttpRequest) -> Result<Option<(DigestKind, Vec<u8>)>, ApiError> {
    let Some(value) = req.headers().get("x-chunk-checksum") else { return Ok(None) };
    let bad =
        || ApiError::bad_request("invalid-checksum", "X-Chunk-Checksum must be blake3=<64 hex> or sha256=<64 hex>");
    let value = value.to_str().map_err(|_| bad())?.trim();
    let (algorithm, hex_sum) = value.split_once('=').ok_or_else(bad)?;
    let kind = match algorithm.to_ascii_lowercase().as_str() {
        "blake3" => DigestKind::Blake3,
        "sha256" => DigestKind::Sha256,
        _ => {
            return Err(ApiError::bad_request("unsupported-checksum", "chunk checksums are blake3 or sha256"));
        }
    };
    let mut sum = [0u8; 32];
    hex::decode_to_slice(hex_sum.trim(), &mut sum).map_err(|_| bad())?;
    Ok(Some((kind, sum.to_vec())))
}

#[tracing::instrument(skip_all, fields(upload_id = %path.0, chunk = path.1))]
pub async fn upload_chunk(
    state: web::Data<AppState>,
    path: web::Path<(String, u32)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (id, index) = path.into_inner();
    let id = UploadId::parse(&id)?;
    let checksum = chunk_checksum(&req)?;
    let max = state.settings.upload.max_chunk_bytes;
    if header_u64(&req, header::CONTENT_LENGTH.as_str())?.is_some_and(|len| len > max + 64 * 1024) {
        return Err(ApiError::bad_request("bad-chunk", format!("a chunk is at most {max} bytes")));
    }
    let mime = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let outcome = if mime.trim_start().to_ascii_lowercase().starts_with("multipart/form-data") {
        let mut form = actix_multipart::Multipart::new(req.headers(), payload);
        let file = loop {
            match form.next().await {
                Some(Ok(field)) if field.name() == Some("file") => break field,
                Some(Ok(mut other)) => while other.next().await.is_some() {},
                Some(Err(e)) => return Err(ApiError::bad_request("invalid-form", e.to_string())),
                None => return Err(ApiError::bad_request("invalid-form", "the form has no field named file")),
            }
        };
        state.uploads.write_piece(&id, index, file, checksum, max).await
    } else {
        state.uploads.write_piece(&id, index, payload, checksum, max).await
    };
    let outcome = outcome?;
    Ok(HttpResponse::Ok().json(json!({
        "chunk_index": index,
        "received_bytes": outcome.tally.received_bytes,
        "received_chunks": outcome.tally.received_pieces,
        "chunk_hash": outcome.hash.to_hex(),
    })))
}

/// The ingest result of a door's upload, with the `video_id` of its entry.
pub fn result_with_video_id(result: &crate::upload::IngestResult, entry_id: Option<i64>) -> serde_json::Value {
    let mut body = serde_json::to_value(result).unwrap_or_else(|_| json!({}));
    body["video_id"] = json!(entry_id);
    body
}

/// The status a chunked client resumes from.
async fn chunked_status(state: &AppState, record: &SessionRecord) -> Result<serde_json::Value, ApiError> {
    let (Some(size), Some(chunk_size)) = (record.total_size, record.chunk_size) else {
        return Err(UploadError::WrongDoor.into());
    };
    let total = chunk_layout(size, chunk_size);
    let pieces = state.uploads.pieces(&record.id).await?;
    let received: Vec<u32> = pieces.iter().map(|p| p.number).collect();
    let missing: Vec<u32> = (0..total).filter(|i| received.binary_search(i).is_err()).collect();
    let entry = match record.entry_id {
        Some(entry) => match state.repo.find_entry(entry).await? {
            Some(entry) => Some(state.repo.entry_as_seen_by(entry, &record.project).await?),
            None => None,
        },
        None => None,
    };
    Ok(json!({
        "upload_id": record.id.as_str(),
        "video_id": record.entry_id,
        "filename": entry.as_ref().map(|e| e.entry.filename.clone()),
        "size": size,
        "chunk_size": chunk_size,
        "total_chunks": total,
        "received": received,
        "missing": missing,
        "received_bytes": pieces.iter().map(|p| p.size).sum::<u64>(),
        "state": record.state.as_str(),
        "result": record.result,
        "error": record.error,
    }))
}

async fn chunked_record(state: &AppState, raw: &str) -> Result<SessionRecord, ApiError> {
    let record = state.uploads.status(&UploadId::parse(raw)?).await?;
    if record.kind != UploadKind::Chunked {
        return Err(UploadError::WrongDoor.into());
    }
    // An aborted upload is gone, as far as its client is concerned.
    if record.state == crate::storage::SessionState::Aborted {
        return Err(UploadError::UnknownSession.into());
    }
    Ok(record)
}

#[tracing::instrument(skip_all, fields(upload_id = %path.as_str()))]
pub async fn status(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let record = chunked_record(&state, &path).await?;
    Ok(HttpResponse::Ok().json(chunked_status(&state, &record).await?))
}

#[tracing::instrument(skip_all, fields(upload_id = %path.as_str()))]
pub async fn finalize(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let record = chunked_record(&state, &path).await?;
    let result = state.uploads.finish_pieces(&record.id, None, 0).await?;
    Ok(HttpResponse::Ok().json(result_with_video_id(&result, record.entry_id)))
}

#[tracing::instrument(skip_all, fields(upload_id = %path.as_str()))]
pub async fn abort(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let record = chunked_record(&state, &path).await?;
    state.uploads.abort(&record.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(serde::Deserialize)]
pub struct Page {
    limit: Option<u64>,
    offset: Option<u64>,
}

pub async fn list(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let limit = page.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid-query", "limit must be between 1 and 500"));
    }
    let tenant = caller.tenant();
    let entries = state.repo.list_entries(limit, page.offset.unwrap_or(0), tenant.confined_to()).await?;
    Ok(HttpResponse::Ok().json(entries.iter().map(entry_json).collect::<Vec<_>>()))
}

pub async fn one(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: i64 = path
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("invalid-video-id", "a video id is a positive whole number"))?;
    let entry = state
        .repo
        .find_entry(id)
        .await?
        .filter(|entry| {
            let owner = entry.entry.project_id.as_deref().unwrap_or(crate::domain::DEFAULT_PROJECT);
            caller.tenant().confined_to().is_none_or(|p| p == owner)
        })
        .ok_or_else(|| ApiError::not_found("unknown-video", "no video with that id"))?;
    let entry = match caller.tenant().confined_to() {
        Some(project) => state.repo.entry_as_seen_by(entry, project).await?,
        None => entry,
    };
    Ok(HttpResponse::Ok().json(entry_json(&entry)))
}

/// One video as `GET /videos` shows it.
pub fn entry_json(entry: &Entry) -> serde_json::Value {
    let video = entry.video.as_ref();
    let transcode = video.map(super::cache::transcode_of).unwrap_or(serde_json::Value::Null);
    // Once stored, the transcode status (issue 5) tells more than "uploaded".
    let status = match video {
        Some(v) if entry.entry.status == EntryStatus::Uploaded && v.transcode != TranscodeStatus::None => {
            v.transcode.as_str()
        }
        _ => entry.entry.status.as_str(),
    };
    json!({
        "video_id": entry.entry.id,
        "hash": entry.entry.hash,
        "filename": entry.entry.filename,
        "content_type": entry.entry.content_type,
        "status": status,
        "error": entry.entry.error,
        "upload_id": entry.entry.upload_id,
        "door": entry.entry.door,
        "size_bytes": video.map(|v| v.size_bytes),
        "duration_s": video.and_then(|v| v.duration_s),
        "width": video.and_then(|v| v.width),
        "height": video.and_then(|v| v.height),
        "hls_url": transcode["hls_url"],
        "dash_url": transcode["dash_url"],
        "transcode": transcode,
        "thumbnail_url": video.map(|v| format!("/media/{}/thumbnail.jpg", v.hash)),
        // A perceptual match: the hash the upload's own bytes are kept under
        // and why it was matched (`GET /videos/{id}`), or, kept with `keep`,
        // why it is marked near another video.
        "variant": entry.variant.as_ref().map(|v| v.hash),
        "match": entry.variant.as_ref().or(video).and_then(|v| v.match_info.as_ref()),
        "created_at": entry.entry.created_at.to_rfc3339(),
    })
}
