//! `GET /api/v1/videos/{video_id}/playback` (section 8): an expiring token
//! for one video's media, and the URLs that carry it.

use super::AppState;
use crate::domain::{ContentHash, Tenant};
use crate::error::ApiError;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// Shortest and longest lifetime a caller may ask for, in seconds.
const MIN_TTL: u64 = 60;
const MAX_TTL: u64 = 7 * 24 * 3600;

#[derive(Deserialize)]
pub struct PlaybackQuery {
    ttl: Option<u64>,
}

/// The stored video a `{video_id}` names: a video id of `GET /videos`, or
/// a content hash.
async fn video_of(state: &AppState, tenant: &Tenant, id: &str) -> Result<ContentHash, ApiError> {
    let unknown = || ApiError::not_found("unknown-video", "no stored video with that id or hash");
    if let Ok(hash) = ContentHash::parse(id) {
        let known = state.repo.find_video(&hash).await?.is_some() && state.repo.sees(tenant, &hash).await?;
        return if known { Ok(hash) } else { Err(unknown()) };
    }
    let id: i64 = id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request("invalid-video-id", "a video id is a positive whole number or a content hash")
    })?;
    let entry = state.repo.find_entry(id).await?.ok_or_else(unknown)?;
    let hash = entry.video.map(|v| v.hash).ok_or_else(unknown)?;
    if !state.repo.sees(tenant, &hash).await? {
        return Err(unknown());
    }
    Ok(hash)
}

pub async fn token(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: web::Path<String>,
    query: web::Query<PlaybackQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = caller.tenant();
    let hash = video_of(&state, &tenant, &path).await?;
    let ttl = query.ttl.unwrap_or(state.settings.auth.playback_ttl_secs);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(ApiError::bad_request(
            "invalid-ttl",
            format!("ttl is a number of seconds from {MIN_TTL} to {MAX_TTL}"),
        ));
    }
    let (token, expires) = state.auth.playback_token(&hash, tenant.confined_to(), ttl);
    let base = format!("/media/t/{token}/{}", hash.to_hex());
    let expires_at = chrono::DateTime::from_timestamp(expires as i64, 0).map(|t| t.to_rfc3339());
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(serde_json::json!({
        "hash": hash,
        "token": token,
        "expires_at": expires_at,
        "hls_url": format!("{base}/hls/master.m3u8"),
        "dash_url": format!("{base}/dash/manifest.mpd"),
        "thumbnail_url": format!("{base}/thumbnail.jpg"),
        "storyboard_url": format!("{base}/storyboard.vtt"),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    policy: String,
}

/// `PUT /api/v1/videos/{video_id}/playback` `{"policy": "public" | "signed"}`:
/// whether anyone may fetch this video's media, for the caller's project.
/// (Projects listed in `auth.public_projects` are public throughout.)
pub async fn set_policy(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: web::Path<String>,
    body: web::Json<PolicyRequest>,
) -> Result<HttpResponse, ApiError> {
    let public = match body.policy.as_str() {
        "public" => true,
        "signed" => false,
        _ => return Err(ApiError::bad_request("invalid-policy", "policy is \"public\" or \"signed\"")),
    };
    let tenant = caller.tenant();
    let hash = video_of(&state, &tenant, &path).await?;
    if !state.repo.set_public(&hash, tenant.project(), public).await? {
        return Err(ApiError::not_found("unknown-video", "no stored video with that id or hash"));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"hash": hash, "policy": body.policy})))
}
