//! `/media/{hash}/...` (and `/media/t/{token}/{hash}/...` with a playback
//! token): the published renditions (HLS and DASH over the
//! same CMAF segments) and the storyboard, with byte ranges, ETags, CORS
//! (the app-wide middleware) and immutable caching for segments; and
//! `POST /video/{hash}/transcode`, which queues a transcode again.

use super::AppState;
use super::files::{FileReply, send_file};
use crate::domain::ContentHash;
use crate::error::ApiError;
use crate::library::TranscodeRequest;
use crate::storage::{Published, TranscodeStatus};
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

/// What a name below `/media/{hash}/` is served as: its content type and
/// whether it never changes once published.
fn kind_of(name: &str) -> Option<(&'static str, bool)> {
    let ext = name.rsplit_once('.').map(|(_, e)| e)?;
    Some(match ext {
        "m3u8" => ("application/vnd.apple.mpegurl", false),
        "mpd" => ("application/dash+xml", false),
        "m4s" if name.starts_with("init-") => ("video/mp4", true),
        "m4s" => ("video/iso.segment", true),
        "jpg" => ("image/jpeg", true),
        "vtt" => ("text/vtt; charset=utf-8", true),
        _ => return None,
    })
}

/// The path below the renditions directory, if `tail` is one the layout
/// can hold: at most two plain components, none starting with a dot, so
/// `..`, hidden work directories and encoded separators are never reached.
fn safe_tail(tail: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = tail.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.len() <= 128
            && !p.starts_with('.')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    (parts.len() <= 2 && parts.iter().all(plain)).then_some(parts)
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found("not-found", format!("nothing is served at {path}"))
}

#[tracing::instrument(skip_all, fields(hash = %path.0))]
pub async fn file(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: web::Path<(String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (hash, tail) = path.into_inner();
    let shared = media_access(&state, &caller, &hash, &req, Outputs::Transcode).await?;
    serve(&state, &hash, &tail, &req, shared).await
}

/// Whether `caller` may fetch the media of `hash`; `Ok(true)` when shared
/// caches may keep it too. The operator of an open daemon reads all; a
/// project reads what it holds (one indexed row per request), privately;
/// a caller with no key reads `public` videos only, and is told it needs a
/// key for anything else, known or not (section 8).
///
/// A project whose own transcode of the video has not finished (it claimed
/// bytes another project holds, section 8) has no transcoded media yet, as
/// with a new video: `of` says whether the files asked for are those.
pub(super) async fn media_access(
    state: &AppState,
    caller: &crate::auth::Caller,
    hash: &str,
    req: &HttpRequest,
    of: Outputs,
) -> Result<bool, ApiError> {
    let hash = ContentHash::parse(hash).ok();
    let there = |pending: bool| !(pending && of == Outputs::Transcode);
    match caller.tenant() {
        crate::domain::Tenant::Operator => Ok(true),
        crate::domain::Tenant::Project(project) => match hash {
            Some(hash) if state.repo.holding(&project, &hash).await?.is_some_and(|v| there(v.transcode.is_some())) => {
                Ok(false)
            }
            _ => Err(not_found(req.path())),
        },
        crate::domain::Tenant::Nobody => {
            let public = match hash {
                Some(hash) => state.repo.holders(&hash).await?.into_iter().any(|h| {
                    there(h.pending) && (h.public || state.settings.auth.public_projects.contains(&h.project))
                }),
                None => false,
            };
            if public {
                Ok(true)
            } else {
                Err(crate::auth::unauthorized(
                    "this video's media needs an API key with `read`, or a playback token in the path",
                ))
            }
        }
    }
}

/// Which of a video's media a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outputs {
    /// What its transcode makes: manifests, segments, storyboards.
    Transcode,
    /// What its upload made: the thumbnail.
    Upload,
}

/// `/media/t/{token}/{hash}/...`: the same files, for a playback token the
/// guard has checked against `{hash}`.
#[tracing::instrument(skip_all, fields(hash = %path.1))]
pub async fn signed_file(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (_token, hash, tail) = path.into_inner();
    let pending =
        actix_web::HttpMessage::extensions(&req).get::<super::access::PlaybackGrant>().is_none_or(|g| g.pending);
    if pending {
        // The token's project's own transcode has not finished: its media
        // are not there for it yet, as a new video's are not.
        return Err(not_found(req.path()));
    }
    serve(&state, &hash, &tail, &req, false).await
}

async fn serve(
    state: &AppState,
    hash: &str,
    tail: &str,
    req: &HttpRequest,
    shared: bool,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(hash).map_err(|_| not_found(req.path()))?;
    let parts = safe_tail(tail).ok_or_else(|| not_found(req.path()))?;
    let name = parts.last().copied().unwrap_or_default();
    let (content_type, immutable) = kind_of(name).ok_or_else(|| not_found(req.path()))?;
    if let Some(bucket) = state.store.bucket() {
        let path = crate::storage::Bucket::media(&hash, &format!("abr/{}", parts.join("/")));
        let reply = FileReply {
            content_type: content_type.to_owned(),
            etag: String::new(),
            cache_control: super::files::cache_control(req, shared, immutable),
        };
        // Size and time of publication, as on disk.
        let etag = |found: &crate::storage::Found| {
            format!("\"{:x}-{:x}\"", found.len, found.modified.timestamp_nanos_opt().unwrap_or(0))
        };
        return super::files::send_from_bucket(req, bucket, path, reply, etag)
            .await?
            .ok_or_else(|| not_found(req.path()));
    }
    let mut file = crate::transcode::renditions_dir(&state.store.derived_dir(&hash));
    for part in &parts {
        file.push(part);
    }
    let opened =
        state.media_files.open(file).await.map_err(|e| ApiError::internal(format!("reading a media file: {e}")))?;
    // Size and time of publication: a transcode asked for again changes it.
    let etag = |len: u64, modified: Option<std::time::SystemTime>| {
        let nanos = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        format!("\"{len:x}-{nanos:x}\"")
    };
    let reply = |etag: String| FileReply {
        content_type: content_type.to_owned(),
        etag,
        cache_control: super::files::cache_control(req, shared, immutable),
    };
    match opened {
        Published::Mapped(mapped) => {
            let reply = reply(etag(mapped.bytes.len() as u64, mapped.modified));
            super::files::send_bytes(req, mapped.bytes, reply)
        }
        Published::Large { file, len, modified } => send_file(req, file, len, reply(etag(len, modified))).await,
        Published::Missing => Err(not_found(req.path())),
    }
}

/// `POST /video/{hash}/transcode`: queues a transcode of a video whose
/// transcode failed, never ran, or whose renditions are missing; a video
/// that is ready (or already on its way) is left as it is.
#[tracing::instrument(skip_all, fields(hash = %path.as_str()))]
pub async fn transcode(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = ContentHash::parse(&path)?;
    let seen = super::cache::visible_video(&state, &caller.tenant(), &hash).await?;
    // A project's own transcode of a video it claimed is on its way.
    if matches!(seen.transcode, TranscodeStatus::Queued | TranscodeStatus::Processing) {
        return Ok(HttpResponse::Ok().json(json!({"hash": hash, "status": seen.transcode, "queued": false})));
    }
    Ok(match state.library.request_transcode(&hash).await? {
        TranscodeRequest::Settled(status) => {
            HttpResponse::Ok().json(json!({"hash": hash, "status": status, "queued": false}))
        }
        TranscodeRequest::Queued => {
            HttpResponse::Accepted().json(json!({"hash": hash, "status": "queued", "queued": true}))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_of_the_layout_are_served() {
        assert!(safe_tail("hls/master.m3u8").is_some());
        assert!(safe_tail("seg/chunk-0-00001.m4s").is_some());
        for bad in ["../x.m3u8", "hls/../../x.mpd", ".abr.tmp/x.m4s", "a/b/c.m4s", "", "hls//x.m3u8", "%2e%2e/x"] {
            assert!(safe_tail(bad).is_none(), "{bad}");
        }
        assert_eq!(kind_of("init-0.m4s"), Some(("video/mp4", true)));
        assert_eq!(kind_of("chunk-0-00001.m4s"), Some(("video/iso.segment", true)));
        assert_eq!(kind_of("manifest.mpd"), Some(("application/dash+xml", false)));
        assert_eq!(kind_of("passwd"), None);
    }
}
