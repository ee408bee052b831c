//! Reading the cache: `GET /resolve`, `GET /meta/{hash}`, `GET|HEAD
//! /video/{hash}` with single byte ranges, and `DELETE /video/{hash}`.

use super::AppState;
use crate::domain::{ContentHash, ObjectKey, SourceUrl};
use crate::error::ApiError;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Deserialize)]
pub struct ResolveQuery {
    url: String,
}

pub async fn resolve(state: web::Data<AppState>, query: web::Query<ResolveQuery>) -> Result<HttpResponse, ApiError> {
    let url = SourceUrl::parse(&query.url)?;
    match state.repo.find_alias(&url).await? {
        Some(alias) => Ok(HttpResponse::Ok().json(json!({"hash": alias.hash, "url": alias.url}))),
        None => Err(ApiError::not_found("unknown-url", "no video was ingested from that URL")),
    }
}

#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn meta(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let video = state.repo.find_video(&hash).await?.ok_or_else(unknown_video)?;
    let aliases = state.repo.aliases_of(&hash).await?;
    let client_meta: serde_json::Value = serde_json::from_str(&video.meta).unwrap_or_else(|_| json!({}));
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let analysis = state.repo.find_signature(&hash).await?.map(|s| {
        json!({
            "samples": s.samples.len(),
            "keyframes": s.keyframes_ms.len(),
            "frames_decoded": s.frames_decoded,
            "packets_skipped": s.packets_skipped,
            "first_byte_at": time(s.first_byte_at),
            "first_hash_at": time(s.first_hash_at),
            "bytes_complete_at": time(s.bytes_complete_at),
            "analysed_at": time(Some(s.analysed_at)),
        })
    });
    Ok(HttpResponse::Ok().json(json!({
        "near_duplicate_of": video.near_duplicate_of,
        "phash_distance": video.phash_distance,
        "analysis": analysis,
        "hash": video.hash,
        "size_bytes": video.size_bytes,
        "duration_s": video.duration_s,
        "first_seen": video.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "aliases": aliases,
        "meta": client_meta,
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
    let etag = format!("\"{}\"", video.hash);
    if req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(&video.hash)) {
        return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
    }

    let key = ObjectKey::from_stored(&video.file_path)?;
    let store = state.store.clone();
    let (file, len) = web::block(move || store.open_object(&key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!(error = %e, "a recorded object is missing from the store");
            ApiError::internal("the stored object could not be read")
        })?;

    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).map(|v| parse_range(v, len));
    let (status, start, count) = match range {
        None | Some(RangeRequest::Ignored) => (StatusCode::OK, 0, len),
        Some(RangeRequest::Satisfiable { start, end }) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(RangeRequest::Unsatisfiable) => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                format!("the object has {len} bytes"),
            )
            .with_header("Content-Range", format!("bytes */{len}")));
        }
    };

    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CONTENT_TYPE, video.content_type.as_str()))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .no_chunking(count);
    if status == StatusCode::PARTIAL_CONTENT {
        response.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{}/{len}", start + count - 1)));
    }
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 256 * 1024);
    Ok(response.streaming(stream))
}

#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn delete(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let video = state.repo.delete_video(&hash).await?.ok_or_else(unknown_video)?;
    state.near.remove(&hash);
    // The record is gone first, so no reader is sent to a file being removed.
    if let Ok(key) = ObjectKey::from_stored(&video.file_path) {
        let store = state.store.clone();
        if let Ok(Err(e)) = web::block(move || store.delete_object(&key)).await {
            tracing::warn!(error = %e, "could not remove a deleted video's object");
        }
    }
    let store = state.store.clone();
    if let Ok(Err(e)) = web::block(move || store.delete_derived(&hash)).await {
        tracing::warn!(error = %e, "could not remove a deleted video's derived media");
    }
    state.queue.events().publish(crate::queue::Event::new("video.deleted", &video.hash, json!({"hash": video.hash})));
    Ok(HttpResponse::NoContent().finish())
}

/// The `transcode` object of the metadata: status, the error of a failed
/// one, and once ready the manifests, renditions and storyboard.
fn transcode_of(video: &crate::storage::entities::video::Model) -> serde_json::Value {
    let ready = video.transcode_status == "ready";
    let url = |tail: &str| ready.then(|| format!("/media/{}/{tail}", video.hash));
    let renditions: Option<serde_json::Value> =
        video.renditions.as_deref().filter(|_| ready).and_then(|r| serde_json::from_str(r).ok());
    json!({
        "status": video.transcode_status,
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

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    /// Inclusive byte range within the object.
    Satisfiable {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
    /// Malformed or multi-range: served whole, as RFC 9110 allows.
    Ignored,
}

/// Parses one `bytes=a-b`, `bytes=a-` or `bytes=-n` range against `len` bytes.
fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignored;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => RangeRequest::Ignored,
        (true, false) => match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Satisfiable { start: len.saturating_sub(n), end: len - 1 },
            None => RangeRequest::Ignored,
        },
        (false, open_end) => {
            let Some(start) = number(first) else { return RangeRequest::Ignored };
            let end = if open_end {
                len.saturating_sub(1)
            } else {
                match number(last) {
                    Some(end) if end >= start => end.min(len.saturating_sub(1)),
                    _ => return RangeRequest::Ignored,
                }
            };
            if start >= len { RangeRequest::Unsatisfiable } else { RangeRequest::Satisfiable { start, end } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RangeRequest::*, parse_range};

    #[test]
    fn parses_the_three_single_range_forms() {
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=90-", 100), Satisfiable { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Satisfiable { start: 90, end: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Satisfiable { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=50-1000", 100), Satisfiable { start: 50, end: 99 });
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
        assert_eq!(parse_range("bytes=x-y", 100), Ignored);
    }
}
