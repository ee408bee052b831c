//! Section 3, multipart direct upload with S3 semantics, under
//! `/api/v1/project/{project_id}/direct_upload/s3/multipart`. Every call but
//! the presigned part PUT needs an API key of the project (HTTP Basic); the
//! PUT carries its own HMAC signature instead. Parts are streamed to files of
//! their own and joined at complete.

use super::AppState;
use super::chunked::{DEFAULT_BUCKET, check_filename, check_meta, check_size, result_with_video_id};
use crate::domain::{Bucket, Prefix, UploadId};
use crate::error::ApiError;
use crate::storage::{NewEntry, SessionRecord, UploadKind};
use crate::upload::{MAX_PART_NUMBER, NewUpload, UploadError};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

#[derive(serde::Deserialize)]
pub struct CreateRequest {
    filename: String,
    metadata: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct PartQuery {
    key: Option<String>,
    expires: Option<u64>,
    signature: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompletedPart {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

#[derive(serde::Deserialize)]
pub struct CompleteRequest {
    parts: Vec<CompletedPart>,
}

fn base_path(project_id: &str) -> String {
    format!("/api/v1/project/{project_id}/direct_upload/s3/multipart")
}

fn check_part_number(part: u32) -> Result<(), ApiError> {
    if (1..=MAX_PART_NUMBER).contains(&part) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid-part-number", format!("part numbers run from 1 to {MAX_PART_NUMBER}")))
    }
}

/// A part's ETag: its BLAKE3, quoted.
fn etag(hash: &crate::domain::ContentHash) -> String {
    format!("\"{}\"", hash.to_hex())
}

/// The multipart session `raw` of `project_id`, checked against the `key`
/// the client echoes back. Another project's upload is simply not found.
async fn project_session(
    state: &AppState,
    project_id: &str,
    raw: &str,
    key: Option<&str>,
) -> Result<SessionRecord, ApiError> {
    let unknown = || ApiError::not_found("unknown-upload", "no multipart upload with that id in this project");
    let id = UploadId::parse(raw).map_err(|_| unknown())?;
    let record = state.uploads.status(&id).await?;
    if record.kind != UploadKind::Multipart
        || record.meta.get("project_id").and_then(|p| p.as_str()) != Some(project_id)
    {
        return Err(unknown());
    }
    if let Some(key) = key
        && record.meta.get("key").and_then(|k| k.as_str()) != Some(key)
    {
        return Err(ApiError::bad_request("key-mismatch", "key does not name this upload's object"));
    }
    Ok(record)
}

#[tracing::instrument(skip_all, fields(project = %path.as_str()))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<CreateRequest>,
) -> Result<HttpResponse, ApiError> {
    // The guard admitted a key of this project (or anyone, on an open daemon).
    let owner = super::chunked::client_owner(&req);
    let body = body.into_inner();
    let filename = check_filename(&body.filename)?;
    let metadata = check_meta(body.metadata)?;
    let size =
        match metadata.get("size") {
            None | Some(serde_json::Value::Null) => None,
            Some(size) => Some(size.as_u64().ok_or_else(|| {
                ApiError::bad_request("invalid-size", "metadata.size must be a whole number of bytes")
            })?),
        };
    if let Some(size) = size {
        check_size(size, state.settings.upload.max_bytes)?;
    }
    let content_type = metadata.get("type").or(metadata.get("filetype")).and_then(|v| v.as_str()).map(str::to_owned);
    let public = super::signed_uploads::playback_choice(metadata.get("playback").and_then(|v| v.as_str()))?;
    let id = UploadId::generate();
    let key = format!("{}/{}", id, filename.replace('/', "_"));
    let record = state
        .uploads
        .create_with_id(
            id,
            NewUpload {
                url: None,
                bucket: Bucket::parse(DEFAULT_BUCKET)?,
                prefix: Prefix::parse("")?,
                meta: json!({"project_id": path.as_str(), "key": key, "metadata": metadata}),
                kind: UploadKind::Multipart,
                total_size: size,
                chunk_size: None,
                owner: Some((owner, state.settings.upload.max_sessions_per_key)),
                entry: Some(NewEntry {
                    filename,
                    content_type: content_type.filter(|t| t.len() <= 255),
                    project_id: Some(path.as_str().to_owned()),
                }),
                // The guard admitted only a key of this project (or the
                // operator, on an open daemon): the video is the project's.
                project: path.into_inner(),
                public,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "video": {"id": record.entry_id},
        "key": key,
        "uploadId": record.id.as_str(),
    })))
}

#[tracing::instrument(skip_all, fields(project = %path.0, upload_id = %path.1, part = path.2))]
pub async fn sign_part(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, u32)>,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, upload_id, part) = path.into_inner();
    check_part_number(part)?;
    let record = project_session(&state, &project_id, &upload_id, query.key.as_deref()).await?;
    let (expires, signature) = state.auth.presign("PUT", record.id.as_str(), part);
    let origin = if state.settings.server.public_url.is_empty() {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    } else {
        state.settings.server.public_url.trim_end_matches('/').to_owned()
    };
    let key = record.meta.get("key").and_then(|k| k.as_str()).unwrap_or_default();
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("key", key)
        .append_pair("expires", &expires.to_string())
        .append_pair("signature", &signature)
        .finish();
    let url = format!("{origin}{}/{}/{part}?{query}", base_path(&project_id), record.id);
    Ok(HttpResponse::Ok().json(json!({"url": url, "expires": expires})))
}

#[tracing::instrument(skip_all, fields(upload_id = %path.1, part = path.2))]
pub async fn put_part(
    state: web::Data<AppState>,
    path: web::Path<(String, String, u32)>,
    query: web::Query<PartQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (project_id, upload_id, part) = path.into_inner();
    let (Some(expires), Some(signature)) = (query.expires, query.signature.as_deref()) else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "bad-signature",
            "a part is uploaded to a presigned URL (expires and signature are missing)",
        ));
    };
    state.auth.verify("PUT", &upload_id, part, expires, signature)?;
    check_part_number(part)?;
    let record = project_session(&state, &project_id, &upload_id, query.key.as_deref()).await?;
    // A part may not take the upload past `upload.max_bytes` (the other
    // parts stored so far count; a re-sent part replaces its old self).
    let stored: u64 = state.uploads.pieces(&record.id).await?.iter().filter(|p| p.number != part).map(|p| p.size).sum();
    let max = state.settings.upload.max_part_bytes.min(state.settings.upload.max_bytes.saturating_sub(stored));
    let outcome = state.uploads.write_piece(&record.id, part, payload, None, max).await?;
    let etag = etag(&outcome.hash);
    Ok(HttpResponse::Ok().insert_header((header::ETAG, etag.clone())).json(json!({"PartNumber": part, "ETag": etag})))
}

#[tracing::instrument(skip_all, fields(project = %path.0, upload_id = %path.1))]
pub async fn list_parts(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, upload_id) = path.into_inner();
    let record = project_session(&state, &project_id, &upload_id, query.key.as_deref()).await?;
    let parts = state.uploads.pieces(&record.id).await?;
    Ok(HttpResponse::Ok().json(
        parts
            .iter()
            .map(|p| json!({"PartNumber": p.number, "ETag": etag(&p.hash), "Size": p.size}))
            .collect::<Vec<_>>(),
    ))
}

#[tracing::instrument(skip_all, fields(project = %path.0, upload_id = %path.1))]
pub async fn complete(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<KeyQuery>,
    body: web::Json<CompleteRequest>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, upload_id) = path.into_inner();
    let record = project_session(&state, &project_id, &upload_id, query.key.as_deref()).await?;
    let parts = body.into_inner().parts.into_iter().map(|p| (p.part_number, p.etag)).collect();
    let min = state.settings.upload.min_part_bytes;
    let result = state.uploads.finish_pieces(&record.id, Some(parts), min).await?;
    let mut body = result_with_video_id(&result, record.entry_id);
    body["video"] = json!({"id": record.entry_id});
    Ok(HttpResponse::Ok().json(body))
}

#[tracing::instrument(skip_all, fields(project = %path.0, upload_id = %path.1))]
pub async fn abort(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<KeyQuery>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, upload_id) = path.into_inner();
    let record = project_session(&state, &project_id, &upload_id, query.key.as_deref()).await?;
    match state.uploads.abort(&record.id).await {
        Ok(()) | Err(UploadError::UnknownSession) => Ok(HttpResponse::NoContent().finish()),
        Err(e) => Err(e.into()),
    }
}
