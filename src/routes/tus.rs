//! Section 4, tus 1.0 at `/files/`: core, creation, creation-with-upload,
//! termination, checksum (sha1, sha256, blake3) and expiration. A tus upload is a
//! session whose bodies are appended at the durable offset; when the offset
//! reaches `Upload-Length` it enters the same commit as every other door.
//! `GET /files/{id}/result` answers the ingest result.

use super::chunked::{DEFAULT_BUCKET, check_filename, check_size, client_owner};
use super::{AppState, header_u64};
use crate::domain::{Bucket, Prefix, UploadId};
use crate::error::ApiError;
use crate::storage::{NewEntry, SessionRecord, SessionState, UploadKind};
use crate::upload::{DigestKind, NewUpload, UploadError};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine;
use serde_json::json;
use std::time::SystemTime;

pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// `OPTIONS /files/`: what this server speaks.
pub async fn options(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header(("Tus-Max-Size", state.settings.upload.max_bytes.to_string()))
        .insert_header(("Tus-Checksum-Algorithm", "sha1,sha256,blake3"))
        .finish()
}

/// Every request but OPTIONS names the protocol version it speaks.
fn check_version(req: &HttpRequest) -> Result<(), ApiError> {
    match req.headers().get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "unsupported-tus-version",
            "this server speaks tus 1.0.0 (send Tus-Resumable: 1.0.0)",
        )
        .with_header("Tus-Version", TUS_VERSION)),
    }
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs; a key alone has no value.
fn parse_metadata(raw: &str) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let bad = |why: String| ApiError::bad_request("invalid-metadata", why);
    let mut out = serde_json::Map::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((key, value)) => (key, value.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!("metadata key {key:?} is not a plain ASCII word")));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| bad(format!("the value of metadata key {key:?} is not base64 of UTF-8 text")))?;
        out.insert(key.to_owned(), json!(decoded));
    }
    Ok(out)
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
fn parse_checksum(req: &HttpRequest) -> Result<Option<(DigestKind, Vec<u8>)>, ApiError> {
    let Some(value) = req.headers().get("upload-checksum") else { return Ok(None) };
    let bad = || ApiError::bad_request("invalid-checksum", "Upload-Checksum must be '<algorithm> <base64 digest>'");
    let (algorithm, sum) = value.to_str().map_err(|_| bad())?.trim().split_once(' ').ok_or_else(bad)?;
    let kind = match algorithm.to_ascii_lowercase().as_str() {
        "sha1" => DigestKind::Sha1,
        "sha256" => DigestKind::Sha256,
        "blake3" => DigestKind::Blake3,
        other => {
            return Err(ApiError::bad_request(
                "unsupported-checksum",
                format!("checksum algorithm {other:?} is not supported (sha1, sha256, blake3)"),
            ));
        }
    };
    let sum = base64::engine::general_purpose::STANDARD.decode(sum.trim()).map_err(|_| bad())?;
    Ok(Some((kind, sum)))
}

fn expires_at(state: &AppState, record: &SessionRecord) -> String {
    let at = record.updated_at + chrono::Duration::seconds(state.settings.upload.session_ttl_secs as i64);
    httpdate::fmt_http_date(SystemTime::from(at))
}

fn offset_of(record: &SessionRecord) -> u64 {
    match record.state {
        SessionState::Complete => record.total_size.unwrap_or(record.durable_bytes),
        _ => record.durable_bytes,
    }
}

/// tus answers 460 for a checksum mismatch, and `423 Locked` for an upload
/// another request holds (tusd's answer, which tus-js-client retries
/// after its `retryDelays`, a HEAD included); everything else maps as usual.
fn tus_error(e: UploadError) -> ApiError {
    match e {
        UploadError::ChecksumMismatch => {
            ApiError::new(StatusCode::from_u16(460).expect("460 is a valid status"), e.code(), e.to_string())
        }
        UploadError::Busy => ApiError { status: StatusCode::LOCKED, ..e.into() },
        other => other.into(),
    }
}

fn check_body_type(req: &HttpRequest) -> Result<(), ApiError> {
    let mime = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if mime.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("tus bodies are sent as {OFFSET_OCTET_STREAM}"),
        ))
    }
}

/// `Upload-Concat` at creation: none, `partial`, or `final;<url> <url> ...`
/// (each URL names one of this server's partial uploads, in order).
enum Concat {
    None,
    Partial,
    Final(Vec<UploadId>),
}

/// The most partial uploads one final upload may name.
const MAX_PARTIALS: usize = 1000;

fn parse_concat(req: &HttpRequest) -> Result<Concat, ApiError> {
    let Some(value) = req.headers().get("upload-concat") else { return Ok(Concat::None) };
    let bad = |why: &str| ApiError::bad_request("invalid-upload-concat", why);
    let value = value.to_str().map_err(|_| bad("Upload-Concat is not text"))?.trim();
    if value == "partial" {
        return Ok(Concat::Partial);
    }
    let Some(list) = value.strip_prefix("final;") else {
        return Err(bad("Upload-Concat is `partial` or `final;<upload URL> <upload URL> ...`"));
    };
    let mut partials = Vec::new();
    for url in list.split_whitespace() {
        // An absolute URL or a path; the query (a signed URL's token) is not part of the name.
        let path = url.split(['?', '#']).next().unwrap_or("");
        let path = path.find("://").map_or(path, |i| path[i + 3..].find('/').map_or("", |j| &path[i + 3 + j..]));
        let id = path
            .strip_prefix("/files/")
            .and_then(|id| UploadId::parse(id.trim_end_matches('/')).ok())
            .ok_or_else(|| bad("each URL in Upload-Concat names an upload of this server, /files/{id}"))?;
        partials.push(id);
    }
    if partials.is_empty() || partials.len() > MAX_PARTIALS {
        return Err(bad(&format!("a final upload names 1 to {MAX_PARTIALS} partial uploads")));
    }
    Ok(Concat::Final(partials))
}

/// `POST /files/` with `Upload-Concat: final;...`: a new upload made of the
/// named partial uploads, whole and of the caller's project, concatenated
/// now (by this daemon, through the engine) and committed.
async fn create_final(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: crate::auth::Caller,
    partials: Vec<UploadId>,
) -> Result<HttpResponse, ApiError> {
    if req.headers().contains_key("upload-length") || req.headers().contains_key("upload-defer-length") {
        return Err(ApiError::bad_request(
            "invalid-upload-length",
            "a final upload's length is its partial uploads' sum: send no Upload-Length",
        ));
    }
    let creation = super::signed_uploads::door_creation(&state, &caller, None, None, None).await?;
    let mut records = Vec::with_capacity(partials.len());
    for id in &partials {
        records.push(state.uploads.status(id).await.map_err(|_| {
            ApiError::bad_request("invalid-upload-concat", format!("no partial upload {id} on this server"))
        })?);
    }
    // The same request again, after a kill cut off the answer to the first:
    // the final it made, whole and committed, is the answer.
    if let Some(done) = crate::upload::taken_by(&records, &creation.project)
        && let Ok(record) = state.uploads.status(&done).await
        && concat_of(&record).as_deref() == Some(partials.as_slice())
    {
        return Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/files/{done}")))
            .insert_header(("Upload-Expires", expires_at(&state, &record)))
            .finish());
    }
    let mut total = 0u64;
    let mut first_meta = None;
    for (id, record) in partials.iter().zip(records) {
        total += crate::upload::check_partial(&record, &creation.project).map_err(|e| match e {
            UploadError::UnknownSession => {
                ApiError::bad_request("invalid-upload-concat", format!("no partial upload {id} on this server"))
            }
            other => ApiError::bad_request("invalid-upload-concat", other.to_string()),
        })?;
        first_meta.get_or_insert(record.meta);
    }
    check_size(total, state.settings.upload.max_bytes)?;
    let mut meta = first_meta.unwrap_or_else(|| json!({}));
    meta["tus_concat"] = json!(partials.iter().map(|p| p.as_str()).collect::<Vec<_>>());
    let metadata = meta.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let filename = metadata.get("filename").and_then(|v| v.as_str()).unwrap_or("upload").to_owned();
    let filetype = metadata.get("filetype").and_then(|v| v.as_str()).map(str::to_owned);
    let record = state
        .uploads
        .create_with_id(
            creation.id,
            NewUpload {
                url: None,
                bucket: Bucket::parse(DEFAULT_BUCKET)?,
                prefix: Prefix::parse("")?,
                meta,
                kind: UploadKind::Tus,
                total_size: Some(total),
                chunk_size: None,
                owner: Some((client_owner(&req), state.settings.upload.max_sessions_per_key)),
                entry: Some(NewEntry { filename, content_type: filetype, project_id: Some(creation.project.clone()) }),
                project: creation.project,
                public: creation.public,
            },
        )
        .await?;
    // Concatenated now; a failure here leaves the final upload to be
    // resumed by `GET /files/{id}/result`.
    if let Err(e) = state.uploads.concatenate(&record.id, &partials).await {
        tracing::warn!(upload_id = %record.id, error = %e, "a concatenation did not finish; it resumes on the next result request");
    }
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/files/{}", record.id)))
        .insert_header(("Upload-Expires", expires_at(&state, &record)))
        .finish())
}

/// The partial uploads a final upload is made of, if it is one.
fn concat_of(record: &SessionRecord) -> Option<Vec<UploadId>> {
    let list = record.meta.get("tus_concat")?.as_array()?;
    list.iter().map(|v| v.as_str().and_then(|id| UploadId::parse(id).ok())).collect()
}

async fn tus_record(state: &AppState, raw: &str) -> Result<SessionRecord, ApiError> {
    let id = UploadId::parse(raw).map_err(|_| ApiError::not_found("unknown-upload", "no upload with that id"))?;
    let record = state.uploads.status(&id).await?;
    if !matches!(record.kind, UploadKind::Tus | UploadKind::TusPartial) {
        return Err(ApiError::not_found("unknown-upload", "no tus upload with that id"));
    }
    match record.state {
        SessionState::Expired => Err(UploadError::Expired.into()),
        SessionState::Aborted => Err(UploadError::UnknownSession.into()),
        _ => Ok(record),
    }
}

/// `POST /files/`: creation, and creation-with-upload when a body comes along.
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: crate::auth::Caller,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let concat = parse_concat(&req)?;
    if let Concat::Final(partials) = concat {
        return create_final(state, req, caller, partials).await;
    }
    let length = match (header_u64(&req, "upload-length")?, req.headers().get("upload-defer-length")) {
        (Some(length), None) => {
            check_size(length, state.settings.upload.max_bytes)?;
            Some(length)
        }
        // creation-defer-length: a later PATCH declares it.
        (None, Some(defer)) if defer.as_bytes() == b"1" => {
            if req.extensions().get::<super::access::UploadTokenUsed>().is_some() {
                // A signed URL's size limit is checked against a declared length.
                return Err(ApiError::bad_request(
                    "missing-upload-length",
                    "an upload through a signed upload URL declares its Upload-Length",
                ));
            }
            None
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request("invalid-upload-defer-length", "Upload-Defer-Length must be 1"));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid-upload-length",
                "send Upload-Length or Upload-Defer-Length, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "missing-upload-length",
                "Upload-Length (or Upload-Defer-Length: 1) is required",
            ));
        }
    };
    let raw_metadata = req.headers().get("upload-metadata").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if raw_metadata.len() > 16 * 1024 {
        return Err(ApiError::bad_request("invalid-metadata", "Upload-Metadata is limited to 16 KiB"));
    }
    let metadata = parse_metadata(&raw_metadata)?;
    let filename = match metadata.get("filename").and_then(|v| v.as_str()) {
        Some(name) => check_filename(name)?,
        None => "upload".to_owned(),
    };
    let filetype = metadata.get("filetype").and_then(|v| v.as_str()).map(str::to_owned);
    let with_body = req.headers().contains_key(header::CONTENT_TYPE);
    if with_body {
        check_body_type(&req)?;
    }
    let checksum = parse_checksum(&req)?;
    let playback = metadata.get("playback").and_then(|v| v.as_str());
    let creation = super::signed_uploads::door_creation(&state, &caller, length, filetype.as_deref(), playback).await?;
    let mut meta = json!({"tus_metadata": raw_metadata, "metadata": metadata});
    if let Some(granted) = creation.meta {
        meta["meta"] = granted;
    }
    let record = state
        .uploads
        .create_with_id(
            creation.id,
            NewUpload {
                url: None,
                bucket: Bucket::parse(DEFAULT_BUCKET)?,
                prefix: Prefix::parse("")?,
                meta,
                kind: match concat {
                    Concat::Partial => UploadKind::TusPartial,
                    Concat::None | Concat::Final(_) => UploadKind::Tus,
                },
                total_size: length,
                chunk_size: None,
                owner: Some((client_owner(&req), state.settings.upload.max_sessions_per_key)),
                entry: Some(NewEntry { filename, content_type: filetype, project_id: Some(creation.project.clone()) }),
                project: creation.project,
                public: creation.public,
            },
        )
        .await?;
    // A signed upload URL's token stays in the upload's URL, which tus
    // clients use for every later request.
    let location = match req.extensions().get::<super::access::UploadTokenUsed>() {
        Some(super::access::UploadTokenUsed(token)) => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("upload_token", token.as_str())
                .finish();
            format!("/files/{}?{query}", record.id)
        }
        None => format!("/files/{}", record.id),
    };
    let mut response = HttpResponse::Created();
    response.insert_header((header::LOCATION, location)).insert_header(("Upload-Expires", expires_at(&state, &record)));
    if with_body {
        let max = state.settings.upload.max_bytes;
        let appended =
            state.uploads.append_tus(&record.id, 0, None, max, payload, checksum).await.map_err(tus_error)?;
        response.insert_header(("Upload-Offset", appended.offset.to_string()));
    }
    Ok(response.finish())
}

/// `HEAD /files/{id}`: the offset to resume from.
pub async fn head(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let record = tus_record(&state, &path).await?;
    let raw_metadata = record.meta.get("tus_metadata").and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let mut response = HttpResponse::Ok();
    match record.total_size {
        Some(length) => response.insert_header(("Upload-Length", length.to_string())),
        None => response.insert_header(("Upload-Defer-Length", "1")),
    };
    response
        .insert_header(("Upload-Offset", offset_of(&record).to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("Upload-Expires", expires_at(&state, &record)));
    if !raw_metadata.is_empty() {
        response.insert_header(("Upload-Metadata", raw_metadata));
    }
    match (record.kind, concat_of(&record)) {
        (UploadKind::TusPartial, _) => {
            response.insert_header(("Upload-Concat", "partial"));
        }
        (_, Some(partials)) => {
            let urls: Vec<String> = partials.iter().map(|p| format!("/files/{p}")).collect();
            response.insert_header(("Upload-Concat", format!("final;{}", urls.join(" "))));
        }
        _ => {}
    }
    Ok(response.finish())
}

/// `PATCH /files/{id}`: appends a body at `Upload-Offset`.
#[tracing::instrument(skip_all, fields(upload_id = %path.as_str()))]
pub async fn patch(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    check_body_type(&req)?;
    let offset = header_u64(&req, "upload-offset")?
        .ok_or_else(|| ApiError::bad_request("missing-upload-offset", "Upload-Offset is required"))?;
    let checksum = parse_checksum(&req)?;
    let declared = header_u64(&req, "upload-length")?;
    if let Some(length) = declared {
        check_size(length, state.settings.upload.max_bytes)?;
    }
    let record = tus_record(&state, &path).await?;
    if concat_of(&record).is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "concatenated-upload",
            "a final upload is made of its partial uploads and takes no PATCH",
        ));
    }
    if record.state == SessionState::Complete {
        return Err(ApiError::new(StatusCode::CONFLICT, "upload-complete", "the upload is already complete")
            .with_header("Upload-Offset", offset_of(&record).to_string()));
    }
    let max = state.settings.upload.max_bytes;
    let appended =
        state.uploads.append_tus(&record.id, offset, declared, max, payload, checksum).await.map_err(tus_error)?;
    // The PATCH just touched the upload: it expires a time to live from now.
    let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(state.settings.upload.session_ttl_secs);
    Ok(HttpResponse::NoContent()
        .insert_header(("Upload-Offset", appended.offset.to_string()))
        .insert_header(("Upload-Expires", httpdate::fmt_http_date(expires)))
        .finish())
}

/// `DELETE /files/{id}`: termination.
pub async fn terminate(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let record = tus_record(&state, &path).await?;
    state.uploads.abort(&record.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /files/{id}/result`: the ingest result of a finished upload. An
/// upload that holds all its bytes but was not committed (the daemon died
/// in between, and start-up has not got to it yet) is committed now: the
/// client has nothing left to send, so it must not wait for a PATCH.
///
/// A whole upload whose commit is already under way (start-up got to it
/// first, or another request did) is waited for, up to `COMMIT_WAIT`
/// (`Uploads::settle_whole`), so the client gets its answer rather than a
/// 409 for bytes it has all sent.
pub async fn result(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
    let record = tus_record(&state, &path).await?;
    // A final upload whose concatenation was cut off resumes it here; one
    // committed before the kill let go of its partials closes them here.
    let resumable = matches!(record.state, SessionState::Receiving | SessionState::Complete);
    if let Some(partials) = concat_of(&record).filter(|_| resumable) {
        state.uploads.concatenate(&record.id, &partials).await.map_err(tus_error)?;
    }
    let record = state.uploads.settle_whole(&record.id, COMMIT_WAIT).await?;
    match (record.state, record.result) {
        (SessionState::Complete, Some(mut result)) => {
            result["video_id"] = json!(record.entry_id);
            Ok(HttpResponse::Ok().json(result))
        }
        (SessionState::Failed, _) => Err(UploadError::Failed(record.error.unwrap_or_default()).into()),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "upload-incomplete",
            match record.total_size {
                Some(total) => format!("the upload has {} of {total} bytes", record.durable_bytes),
                None => format!("the upload has {} bytes and has not declared its length", record.durable_bytes),
            },
        )
        .with_field("received_bytes", json!(record.durable_bytes))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_decode_and_bad_ones_are_refused() {
        let m = parse_metadata("filename bXkgdmlkZW8ubXA0,filetype dmlkZW8vbXA0,is_confidential").unwrap();
        assert_eq!(m["filename"], "my video.mp4");
        assert_eq!(m["filetype"], "video/mp4");
        assert_eq!(m["is_confidential"], "");
        assert!(parse_metadata("filename !!!notbase64").is_err());
    }
}
