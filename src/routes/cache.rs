//! Reading the cache: `GET /resolve`, `GET /meta/{hash}`, `GET|HEAD
//! /video/{hash}` with single byte ranges, and `DELETE /video/{hash}`.

use super::AppState;
use super::files::{FileReply, send_file};
use crate::auth::Caller;
use crate::domain::{ContentHash, ObjectKey, SourceUrl, Tenant};
use crate::error::ApiError;
use crate::storage::TranscodeStatus;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct ResolveQuery {
    url: String,
}

pub async fn resolve(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ResolveQuery>,
) -> Result<HttpResponse, ApiError> {
    let url = SourceUrl::parse(&query.url)?;
    match state.repo.find_alias_as(&url, &caller.tenant()).await? {
        Some(hash) => Ok(HttpResponse::Ok().json(json!({"hash": hash, "url": url.as_str()}))),
        None => Err(ApiError::not_found("unknown-url", "no video was ingested from that URL")),
    }
}

#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn meta(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let tenant = caller.tenant();
    let mut video = visible_video(&state, &tenant, &hash).await?;
    let aliases = state.repo.aliases_of_as(&hash, &tenant).await?;
    // A project sees the video as its own upload left it (`visible_video`:
    // where it asked for it to go, its metadata, since when, its transcode),
    // and the decisions about videos it holds only (section 8).
    if let Some(project) = tenant.confined_to() {
        for other in [video.near_duplicate_of, video.variant_of].into_iter().flatten() {
            if !state.repo.holds(project, &other).await? {
                video.near_duplicate_of = video.near_duplicate_of.filter(|h| *h != other);
                video.variant_of = video.variant_of.filter(|h| *h != other);
                video.phash_distance = video.phash_distance.filter(|_| video.near_duplicate_of.is_some());
                video.match_info = None;
            }
        }
    }
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let min_information = state.settings.dedup.min_frame_information;
    let analysis = state.repo.find_signature(&hash).await?.map(|s| {
        json!({
            "samples": s.samples.len(),
            // The samples that vote in near-duplicate matching.
            "informative_samples": s.samples.iter().filter(|x| x.info >= min_information).count(),
            "audio": s.audio.kind(),
            "keyframes": s.keyframes_ms.len(),
            "frames_decoded": s.frames_decoded,
            "packets_skipped": s.packets_skipped,
            "first_byte_at": time(s.first_byte_at),
            "first_hash_at": time(s.first_hash_at),
            "bytes_complete_at": time(s.bytes_complete_at),
            "analysed_at": time(Some(s.analysed_at)),
        })
    });
    let mut variants = Vec::new();
    for variant in state.repo.variants_of(&hash).await? {
        if !state.repo.sees(&tenant, &variant.hash).await? {
            continue;
        }
        let urls = state.repo.aliases_via(&variant.hash).await?;
        let matched = &variant.match_info;
        variants.push(json!({
            "hash": variant.hash,
            "size_bytes": variant.size_bytes,
            "url": urls.first(),
            "urls": urls,
            "phash_distance": matched.as_ref().map(|m| m.distance),
            "match": matched,
            "first_seen": variant.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "near_duplicate_of": video.near_duplicate_of,
        "phash_distance": video.phash_distance,
        // A variant: the stored video its upload was merged into.
        "variant_of": video.variant_of,
        // Why it was matched (a variant, or kept near another video).
        "match": video.match_info,
        "variants": variants,
        "analysis": analysis,
        "hash": video.hash,
        "size_bytes": video.size_bytes,
        "duration_s": video.duration_s,
        "first_seen": video.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "aliases": aliases,
        "meta": video.meta,
        "bucket": video.bucket,
        "prefix": video.prefix,
        "file_path": video.file_path,
        "width": video.width,
        "height": video.height,
        "video_codec": video.video_codec,
        "audio_codec": video.audio_codec,
        "fps": video.fps,
        "container": video.container,
        "content_type": video.content_type,
        "transcode": transcode_of(&video),
        "thumbnail_url": format!("/media/{}/thumbnail.jpg", video.hash),
    })))
}

/// `GET` and `HEAD`: the original bytes, whole or one range of them.
#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn read(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let video = visible_video(&state, &caller.tenant(), &hash).await?;
    let key = ObjectKey::from_stored(&video.file_path)?;
    let reply = FileReply {
        content_type: video.content_type.clone(),
        etag: format!("\"{}\"", video.hash.to_hex()),
        cache_control: super::files::cache_control(&req, state.auth.is_open(), true),
    };
    if let Some(bucket) = state.store.bucket() {
        return super::files::send_object_from_bucket(&req, bucket, &key, reply).await?.ok_or_else(|| {
            tracing::error!("a recorded object is missing from the bucket");
            ApiError::internal("the stored object could not be read")
        });
    }
    let store = state.store.clone();
    let (file, len) = web::block(move || store.open_object(&key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "a recorded object is missing from the store");
            ApiError::internal("the stored object could not be read")
        })?;
    send_file(&req, file, len, reply).await
}

/// Deletes a video with its aliases and its variants (the kept bytes of
/// uploads merged into it: their URLs are its aliases, so they go with it).
/// Deleting a variant removes its bytes only; its URLs stay aliases of the
/// video it was merged into.
#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
///
/// A project's delete lets go of the video; the bytes, aliases and media go
/// when the last project that holds them lets go (or the operator deletes).
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let tenant = caller.tenant();
    visible_video(&state, &tenant, &hash).await?;
    if let Some(project) = tenant.confined_to()
        && state.repo.release(&hash, project).await? > 0
    {
        return Ok(HttpResponse::NoContent().finish());
    }
    if state.library.remove(&hash).await?.is_empty() {
        return Err(unknown_video());
    }
    // Its media stop being served from kept mappings now, and their disk
    // space is given back (other daemons' mappings age out within a second).
    state.media_files.forget_under(&state.store.derived_dir(&hash));
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /video/{hash}/unmerge`: a variant (the kept bytes of an upload
/// merged into a stored video on a perceptual match) becomes its own video
/// (`Library::unmerge`).
#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn unmerge(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    visible_video(&state, &caller.tenant(), &hash).await?;
    let unmerged = state.library.unmerge(&hash).await?;
    Ok(HttpResponse::Ok().json(json!({
        "hash": unmerged.video.hash,
        "status": "unmerged",
        "near_duplicate_of": unmerged.merged_into,
        "aliases": unmerged.aliases,
        "transcode": {"status": "queued"},
    })))
}

/// The `transcode` object of the metadata: status, the error of a failed
/// one, and, once renditions are published, the manifests, renditions and
/// storyboard. They stay while the video is transcoded again (an older
/// ladder's renditions are served until the new ones replace them).
pub(super) fn transcode_of(video: &crate::storage::Video) -> serde_json::Value {
    let ready = video.transcode == TranscodeStatus::Ready || video.renditions.is_some();
    let url = |tail: &str| ready.then(|| format!("/media/{}/{tail}", video.hash));
    let renditions = video.renditions.as_ref().filter(|_| ready);
    json!({
        "status": video.transcode,
        "error": video.transcode_error,
        "hls_url": url("hls/master.m3u8"),
        "dash_url": url("dash/manifest.mpd"),
        "storyboard_url": url("storyboard.vtt"),
        "renditions": renditions,
    })
}

/// The stored video `hash`, if `tenant` may see it; otherwise the very
/// answer a hash nobody holds gets (section 8: no answer tells one project
/// what another holds).
pub(super) async fn visible_video(
    state: &AppState,
    tenant: &Tenant,
    hash: &ContentHash,
) -> Result<crate::storage::Video, ApiError> {
    let video = state.repo.find_video(hash).await?;
    match video {
        Some(video) if state.repo.sees(tenant, hash).await? => Ok(state.repo.as_seen_by(video, tenant).await?),
        _ => Err(unknown_video()),
    }
}

fn unknown_video() -> ApiError {
    ApiError::not_found("unknown-video", "no video with that hash is stored")
}
