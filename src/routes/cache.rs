//! Reading the cache: `GET /resolve`, `GET /meta/{hash}`, `GET|HEAD
//! /video/{hash}` with single byte ranges, and `DELETE /video/{hash}`.

use super::AppState;
use super::files::{FileReply, send_file};
use crate::domain::{ContentHash, ObjectKey, SourceUrl};
use crate::error::ApiError;
use crate::storage::TranscodeStatus;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct ResolveQuery {
    url: String,
}

pub async fn resolve(state: web::Data<AppState>, query: web::Query<ResolveQuery>) -> Result<HttpResponse, ApiError> {
    let url = SourceUrl::parse(&query.url)?;
    match state.repo.find_alias(&url).await? {
        Some(hash) => Ok(HttpResponse::Ok().json(json!({"hash": hash, "url": url.as_str()}))),
        None => Err(ApiError::not_found("unknown-url", "no video was ingested from that URL")),
    }
}

#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn meta(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let video = state.repo.find_video(&hash).await?.ok_or_else(unknown_video)?;
    let aliases = state.repo.aliases_of(&hash).await?;
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
    path: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let video = state.repo.find_video(&hash).await?.ok_or_else(unknown_video)?;
    let key = ObjectKey::from_stored(&video.file_path)?;
    let store = state.store.clone();
    let (file, len) = web::block(move || store.open_object(&key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "a recorded object is missing from the store");
            ApiError::internal("the stored object could not be read")
        })?;
    let reply = FileReply {
        content_type: video.content_type.clone(),
        etag: format!("\"{}\"", video.hash.to_hex()),
        cache_control: super::files::cache_control(&req, state.auth.is_open(), true),
    };
    send_file(&req, file, len, reply).await
}

/// Deletes a video with its aliases and its variants (the kept bytes of
/// uploads merged into it: their URLs are its aliases, so they go with it).
/// Deleting a variant removes its bytes only; its URLs stay aliases of the
/// video it was merged into.
#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn delete(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    if state.library.remove(&hash).await?.is_empty() {
        return Err(unknown_video());
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /video/{hash}/unmerge`: a variant (the kept bytes of an upload
/// merged into a stored video on a perceptual match) becomes its own video
/// (`Library::unmerge`).
#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn unmerge(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
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

fn unknown_video() -> ApiError {
    ApiError::not_found("unknown-video", "no video with that hash is stored")
}
