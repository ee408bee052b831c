//! `POST /api/v1/uploads` (section 8): a one-time, expiring URL for one
//! upload, which a browser page or a tus client uses with no other
//! credential (like Mux's direct uploads). The token is made and checked by
//! `auth::grant`; the doors apply its limits when they create the upload.

use super::AppState;
use crate::auth::{Caller, UploadGrant};
use crate::domain::UploadId;
use crate::error::ApiError;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

const MIN_TTL: u64 = 60;
const MAX_TTL: u64 = 7 * 24 * 3600;
const DEFAULT_TTL: u64 = 3600;
/// Metadata a token carries, at most (it travels in every request's URL).
const MAX_META: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUploadRequest {
    max_size: Option<u64>,
    content_type: Option<String>,
    meta: Option<serde_json::Value>,
    cors_origin: Option<String>,
    expires_in: Option<u64>,
    /// `"public"` or `"signed"` (the default): the upload's video's media.
    playback: Option<String>,
}

/// An upload's `playback` choice: `"public"`, or `"signed"` (the default).
pub fn playback_choice(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("signed") => Ok(false),
        Some("public") => Ok(true),
        Some(_) => Err(ApiError::bad_request("invalid-policy", "playback is \"public\" or \"signed\"")),
    }
}

/// The daemon's origin as clients reach it.
pub fn origin_of(state: &AppState, req: &HttpRequest) -> String {
    if state.settings.server.public_url.is_empty() {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    } else {
        state.settings.server.public_url.trim_end_matches('/').to_owned()
    }
}

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: Caller,
    body: web::Json<SignedUploadRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let ttl = body.expires_in.unwrap_or(DEFAULT_TTL);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid-ttl",
            format!("expires_in is a number of seconds from {MIN_TTL} to {MAX_TTL}"),
        ));
    }
    let max_bytes = state.settings.upload.max_bytes;
    if body.max_size.is_some_and(|m| m == 0 || m > max_bytes) {
        return Err(ApiError::bad_request("invalid-size", format!("max_size must be 1 to {max_bytes} bytes")));
    }
    if let Some(t) = &body.content_type
        && (t.len() > 255 || t.chars().any(|c| c.is_control() || c.is_whitespace()) || !t.contains('/'))
    {
        return Err(ApiError::bad_request(
            "invalid-content-type",
            "content_type is a MIME type (video/mp4) or a family (video/*)",
        ));
    }
    let meta = match body.meta {
        None | Some(serde_json::Value::Null) => None,
        Some(object @ serde_json::Value::Object(_)) if object.to_string().len() <= MAX_META => Some(object),
        Some(serde_json::Value::Object(_)) => {
            return Err(ApiError::bad_request("invalid-meta", format!("meta is limited to {MAX_META} bytes of JSON")));
        }
        Some(_) => return Err(ApiError::bad_request("invalid-meta", "meta must be a JSON object")),
    };
    if let Some(origin) = &body.cors_origin
        && url::Url::parse(origin).map_or(true, |u| u.origin().ascii_serialization() != *origin)
    {
        return Err(ApiError::bad_request(
            "invalid-origin",
            "cors_origin is an origin: scheme, host and port, such as https://app.example.com",
        ));
    }
    let public = playback_choice(body.playback.as_deref())?;
    let id = UploadId::generate();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_add(ttl);
    let grant = UploadGrant {
        upload_id: id.to_string(),
        expires,
        project: caller.project().map(str::to_owned),
        max_size: body.max_size,
        content_type: body.content_type,
        origin: body.cors_origin,
        meta,
        key_id: caller.key_id().map(str::to_owned),
        public: public.then_some(true),
    };
    let token = state.auth.upload_token(&grant);
    let origin = origin_of(&state, &req);
    let query: String =
        url::form_urlencoded::Serializer::new(String::new()).append_pair("upload_token", &token).finish();
    Ok(HttpResponse::Created().insert_header(("Cache-Control", "no-store")).json(serde_json::json!({
        "id": id.to_string(),
        "url": format!("{origin}/?{query}"),
        "tus_url": format!("{origin}/files/?{query}"),
        "chunked_url": format!("{origin}/videos/init?{query}"),
        "token": token,
        "expires_at": chrono::DateTime::from_timestamp(expires as i64, 0).map(|t| t.to_rfc3339()),
    })))
}

/// How a door creates an upload for its caller: the id (a signed URL's, or
/// a new one), the project, and the metadata a signed URL adds.
pub struct Creation {
    pub id: UploadId,
    pub project: String,
    pub meta: Option<serde_json::Value>,
    /// Public media: the signed URL's say, else the client's.
    pub public: bool,
}

/// Checks a signed URL's limits against what the client declares, and that
/// its upload was not created before (a signed URL works once).
pub async fn door_creation(
    state: &AppState,
    caller: &Caller,
    size: Option<u64>,
    content_type: Option<&str>,
    playback: Option<&str>,
) -> Result<Creation, ApiError> {
    let asked = playback_choice(playback)?;
    let Some(grant) = caller.upload_grant() else {
        let project = caller.tenant().project().to_owned();
        return Ok(Creation { id: UploadId::generate(), project, meta: None, public: asked });
    };
    grant.creatable()?;
    let id = grant.upload_id()?;
    if state.repo.find_session(&id).await?.is_some() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "upload-url-used",
            "this upload URL has been used: it creates one upload only",
        ));
    }
    grant.allows(size, content_type)?;
    let public = grant.public.unwrap_or(false);
    Ok(Creation { id, project: caller.tenant().project().to_owned(), meta: grant.meta.clone(), public })
}

/// Client metadata with a signed URL's on top (the backend's word wins).
pub fn merged_meta(client: serde_json::Value, granted: Option<serde_json::Value>) -> serde_json::Value {
    match (client, granted) {
        (serde_json::Value::Object(mut client), Some(serde_json::Value::Object(granted))) => {
            client.extend(granted);
            serde_json::Value::Object(client)
        }
        (client, _) => client,
    }
}
