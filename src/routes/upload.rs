//! The two-phase upload of section 1: `POST /upload/init`, then the bytes as
//! one streamed body to `POST /upload/{upload_id}`. `GET /upload/{upload_id}`
//! tells a client how far it got, and a body sent with `Upload-Offset: N`
//! resumes there.

use super::{AppState, ParsedSource, SourceRequest, header_u64};
use crate::domain::UploadId;
use crate::error::ApiError;
use crate::upload::NewUpload;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

#[tracing::instrument(skip_all, fields(url = %body.url))]
pub async fn init(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    body: web::Json<SourceRequest>,
) -> Result<HttpResponse, ApiError> {
    let ParsedSource { url, bucket, prefix, meta, public } = body.into_inner().parse()?;
    let tenant = caller.tenant();
    if let Some(hash) = state.repo.find_alias_as(&url, &tenant).await?
        && let Some(stored) = state.repo.find_video(&hash).await?
    {
        let file_path = match tenant.confined_to() {
            Some(project) => state.repo.holding(project, &hash).await?.map(|h| h.file_path),
            None => None,
        };
        return Ok(HttpResponse::Ok().json(json!({
            "status": "cached",
            "hash": stored.hash,
            "file_path": file_path.unwrap_or(stored.file_path),
            "url": url.as_str(),
        })));
    }
    let project = tenant.project().to_owned();
    let new = NewUpload { public, ..NewUpload::stream(Some(url), bucket, prefix, meta, project) };
    let id = state.uploads.create(new).await?.id;
    Ok(HttpResponse::Ok().json(json!({"status": "pending", "upload_id": id.as_str()})))
}

#[tracing::instrument(skip_all, fields(upload_id = %path.as_str()))]
pub async fn body(
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = UploadId::parse(&path)?;
    check_content_type(&req)?;
    let max = state.upload_max_bytes;
    if let Some(len) = header_u64(&req, header::CONTENT_LENGTH.as_str())?
        && len > max
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body of {len} bytes is larger than the limit of {max} bytes"),
        ));
    }
    let offset = header_u64(&req, "upload-offset")?;
    let result = state.uploads.write_body(&id, offset, payload, max).await?;
    Ok(HttpResponse::Ok().json(result))
}

#[tracing::instrument(skip_all, fields(upload_id = %path.as_str()))]
pub async fn status(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = UploadId::parse(&path)?;
    let record = state.uploads.status(&id).await?;
    Ok(HttpResponse::Ok().insert_header(("Upload-Offset", record.durable_bytes.to_string())).json(json!({
        "upload_id": record.id.as_str(),
        "state": record.state.as_str(),
        "received_bytes": record.durable_bytes,
        "url": record.url.as_ref().map(|u| u.as_str()),
        "bucket": record.bucket.as_str(),
        "prefix": record.prefix.as_str(),
        "result": record.result,
        "error": record.error,
        "created_at": record.created_at.to_rfc3339(),
        "updated_at": record.updated_at.to_rfc3339(),
    })))
}

/// Raw bytes only: `application/octet-stream`, a `video/*` type, or none.
fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime == "application/octet-stream" || mime.starts_with("video/") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("the upload body must be raw bytes (application/octet-stream), not {mime:?}"),
        ))
    }
}
