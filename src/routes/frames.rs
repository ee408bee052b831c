//! Section 5, frames: `GET /video/{hash}/frame` (one image) and
//! `POST /video/{hash}/frames` (many, in one pass over the file), answered as
//! `multipart/mixed` or, with `?as=json`, as JSON data URIs.

use super::AppState;
use crate::auth::Caller;
use crate::domain::{ContentHash, ObjectKey, Tenant};
use crate::error::ApiError;
use crate::media::frames::{FrameError, GrabFrames, ImageFormat};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde_json::json;

/// At most this many frames in one batch call.
const MAX_BATCH: usize = 300;

#[derive(serde::Deserialize)]
pub struct FrameQuery {
    pts_ns: i64,
    format: Option<String>,
    width: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pts_ns: Vec<i64>,
    format: Option<String>,
    width: Option<u32>,
}

#[derive(serde::Deserialize)]
pub struct BatchQuery {
    #[serde(rename = "as")]
    answer_as: Option<String>,
}

fn image_format(raw: Option<&str>) -> Result<ImageFormat, ApiError> {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("png") => Ok(ImageFormat::Png),
        Some("jpeg" | "jpg") => Ok(ImageFormat::Jpeg),
        Some(other) => Err(ApiError::bad_request("invalid-format", format!("format {other:?} is not png or jpeg"))),
    }
}

fn check_width(width: Option<u32>) -> Result<(), ApiError> {
    match width {
        Some(w) if !(16..=4096).contains(&w) => {
            Err(ApiError::bad_request("invalid-width", "width must be between 16 and 4096 pixels"))
        }
        _ => Ok(()),
    }
}

async fn grab(
    state: &AppState,
    tenant: &Tenant,
    hash: &str,
    pts_ns: Vec<i64>,
    format: ImageFormat,
    width: Option<u32>,
) -> Result<Vec<Vec<u8>>, ApiError> {
    let hash = ContentHash::parse(hash)?;
    let video = super::cache::visible_video(state, tenant, &hash).await?;
    let key = ObjectKey::from_stored(&video.file_path).map_err(|e| ApiError::internal(e.to_string()))?;
    let store = state.store.clone();
    let path = web::block(move || store.fetch_object(&key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "a recorded object could not be read");
            ApiError::internal("the stored object could not be read")
        })?;
    let grabbed = state
        .frames
        .send(GrabFrames { path, pts_ns, format, width })
        .await
        .map_err(|e| ApiError::internal(format!("frame decoder unavailable: {e}")))?;
    grabbed.map_err(|e| match e {
        FrameError::BeyondEnd { .. } => {
            ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "frame-out-of-range", e.to_string())
        }
        FrameError::Undecodable(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "undecodable", e.to_string()),
    })
}

pub async fn one(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<FrameQuery>,
) -> Result<HttpResponse, ApiError> {
    let format = image_format(query.format.as_deref())?;
    check_width(query.width)?;
    let mut images = grab(&state, &caller.tenant(), &path, vec![query.pts_ns], format, query.width).await?;
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header(("Cache-Control", super::files::cache_control(&req, state.auth.is_open(), true)))
        .body(images.pop().unwrap_or_default()))
}

pub async fn batch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<BatchQuery>,
    body: web::Json<BatchRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.pts_ns.is_empty() || body.pts_ns.len() > MAX_BATCH {
        return Err(ApiError::bad_request("invalid-batch", format!("pts_ns must list 1 to {MAX_BATCH} times")));
    }
    let as_json = match query.answer_as.as_deref() {
        None | Some("multipart") => false,
        Some("json") => true,
        Some(other) => return Err(ApiError::bad_request("invalid-query", format!("as={other} is not json"))),
    };
    let format = image_format(body.format.as_deref())?;
    check_width(body.width)?;
    let images = grab(&state, &caller.tenant(), &path, body.pts_ns.clone(), format, body.width).await?;
    if as_json {
        let frames: Vec<_> = body
            .pts_ns
            .iter()
            .zip(&images)
            .map(|(pts, bytes)| {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                json!({"pts_ns": pts, "data": format!("data:{};base64,{data}", format.content_type())})
            })
            .collect();
        return Ok(HttpResponse::Ok().json(json!({ "frames": frames })));
    }
    let boundary = format!("vidcache-{}", crate::domain::UploadId::generate());
    let mut out = Vec::with_capacity(images.iter().map(Vec::len).sum::<usize>() + 256 * images.len());
    for (pts, bytes) in body.pts_ns.iter().zip(&images) {
        out.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-Pts-Ns: {pts}\r\n\r\n",
                format.content_type(),
                bytes.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(HttpResponse::Ok().content_type(format!("multipart/mixed; boundary={boundary}")).body(out))
}

/// `GET /media/{hash}/thumbnail.jpg`: a frame from early in the video (a
/// tenth in, at most 1 s). The analysis of an upload makes it; for a video
/// without one it is made on first request. Kept with the video's derived
/// media (published by rename, so a half-written one is never served).
pub async fn thumbnail(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let shared = super::media::media_access(&state, &caller, &path, &req, super::media::Outputs::Upload).await?;
    thumbnail_of(&state, &Tenant::Operator, &path, &req, shared).await
}

/// `/media/t/{token}/{hash}/thumbnail.jpg`, for a token the guard checked.
pub async fn signed_thumbnail(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // The token was made for this video by a caller who could see it.
    thumbnail_of(&state, &Tenant::Operator, &path.1, &req, false).await
}

async fn thumbnail_of(
    state: &AppState,
    tenant: &Tenant,
    hash: &str,
    req: &HttpRequest,
    shared: bool,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(hash)?;
    let video = super::cache::visible_video(state, tenant, &hash).await?;
    let cached = {
        let store = state.store.clone();
        web::block(move || store.read_derived(&hash, "thumbnail.jpg").ok().flatten())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let bytes = match cached {
        Some(bytes) => bytes,
        None => {
            let at_s = video.duration_s.map_or(0.0, |d| (d / 10.0).min(1.0));
            let pts_ns = (at_s * 1e9) as i64;
            let bytes = grab(
                state,
                &Tenant::Operator,
                &video.hash.to_hex(),
                vec![pts_ns],
                ImageFormat::Jpeg,
                Some(crate::media::analysis::THUMBNAIL_WIDTH),
            )
            .await?
            .pop()
            .unwrap_or_default();
            let (store, keep) = (state.store.clone(), bytes.clone());
            let written = web::block(move || store.put_derived(&hash, "thumbnail.jpg", &keep)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "could not keep a thumbnail");
            }
            bytes
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header(("Cache-Control", super::files::cache_control(req, shared, true)))
        .body(bytes))
}
