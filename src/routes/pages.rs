//! The browser pages of `client/`: the upload page at `/`, the player at
//! `/player`, and their scripts and styles under `/client/`. They are built
//! into the binary, player libraries included, so the daemon serves them with
//! no Node and no network. `server.client_dir` serves a checkout's `client/`
//! instead, for editing the pages without a rebuild.

use super::AppState;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};

/// One file a page needs.
struct Asset {
    /// Its path below `client/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset { name: $name, content_type: $content_type, bytes: include_bytes!(concat!("../../client/", $name)) }
    };
}

/// Everything served, and nothing else: a request names an entry of this
/// table, never a path on disk.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("player.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("upload.js", "text/javascript; charset=utf-8"),
    asset!("player.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/hls.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/dash.mediaplayer.min.js", "text/javascript; charset=utf-8"),
];

/// The pages load only from this daemon. hls.js runs its demuxer in a worker
/// made from a blob URL, and both players feed `<video>` through MediaSource
/// blob URLs.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     worker-src 'self' blob:; connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

pub async fn upload_page(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&state, &req, "index.html").await
}

pub async fn player_page(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve(&state, &req, "player.html").await
}

pub async fn asset(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&state, &req, &path).await
}

async fn serve(state: &AppState, req: &HttpRequest, name: &str) -> Result<HttpResponse, ApiError> {
    let (index, asset) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, a)| a.name == name)
        .ok_or_else(|| ApiError::not_found("not-found", format!("no page asset is named {name:?}")))?;
    let dir = &state.settings.server.client_dir;
    let (bytes, etag) = if dir.is_empty() {
        // Built in: no copy, and the tag is computed once per asset.
        (
            Bytes::from_static(asset.bytes),
            EMBEDDED_ETAGS.get_or_init(|| ASSETS.iter().map(|a| etag_of(a.bytes)).collect())[index].clone(),
        )
    } else {
        let path = std::path::Path::new(dir).join(asset.name);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| ApiError::internal(format!("server.client_dir: cannot read {}: {e}", path.display())))?;
        let etag = etag_of(&bytes);
        (Bytes::from(bytes), etag)
    };
    // Revalidated on every load (the pages change with the daemon), and a
    // 304 when unchanged.
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut reply = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    reply
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if asset.content_type.starts_with("text/html") {
        reply
            .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_POLICY))
            .insert_header((header::REFERRER_POLICY, "no-referrer"));
    }
    if fresh {
        return Ok(reply.finish());
    }
    reply.insert_header((header::CONTENT_TYPE, asset.content_type));
    Ok(reply.body(bytes))
}

/// The ETags of the built-in assets, in the order of `ASSETS`.
static EMBEDDED_ETAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", &blake3::hash(bytes).to_hex()[..32])
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    #[test]
    fn every_asset_is_present_and_pages_load_only_listed_assets() {
        for asset in ASSETS {
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.name);
        }
        // Every /client/... reference in the pages names a served asset.
        for page in ["index.html", "player.html"] {
            let text = std::str::from_utf8(ASSETS.iter().find(|a| a.name == page).unwrap().bytes).unwrap();
            let mut rest = text;
            let mut seen = 0;
            while let Some(at) = rest.find("/client/") {
                let tail = &rest[at + "/client/".len()..];
                let end = tail.find(['"', '\'', ')']).unwrap();
                let name = &tail[..end];
                assert!(ASSETS.iter().any(|a| a.name == name), "{page} loads {name}, which is not served");
                seen += 1;
                rest = &tail[end..];
            }
            assert!(seen >= 2, "{page} loads its script and style from /client/");
        }
    }
}
