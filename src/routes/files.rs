//! Sending a stored file, whole or one byte range, with its ETag (and
//! `304` for a matching `If-None-Match`), for `/video/{hash}` and
//! `/media/{hash}/...`. A reply of up to `WHOLE_MAP` bytes is sent from a
//! memory map of the file made in one blocking call; a published media
//! file comes from a mapping kept between requests (`storage::MappedFiles`,
//! no thread hop and no system call); a larger one streams in 256 KiB
//! reads, so memory never follows the file's size.

use crate::error::ApiError;
use crate::storage::WHOLE_MAP;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Slices of a mapped reply handed to the HTTP layer at a time.
/// (Measured against 32, 128 and 256 KiB slices, with actix's write buffer
/// at 64, 256 and 512 KiB: 64 KiB and actix's default buffer served the
/// most requests a second; BENCHMARKS.md.)
const SLICE: usize = 64 << 10;

pub(super) struct FileReply {
    pub content_type: String,
    pub etag: String,
    pub cache_control: String,
}

/// `Cache-Control` of a file reply. Shared caches may keep it only when
/// anyone may read it (`shared`: an open daemon, a public video); one read
/// with a key is `private`;
/// one read with a playback token is `private` and kept no longer than the
/// token lives. `immutable` files (segments, originals) are kept a year,
/// the others (manifests) a minute.
pub(super) fn cache_control(req: &HttpRequest, shared: bool, immutable: bool) -> String {
    use actix_web::HttpMessage;
    let longest: u64 = if immutable { 31_536_000 } else { 60 };
    let token = req.extensions().get::<super::access::PlaybackGrant>().copied();
    match token {
        Some(super::access::PlaybackGrant { expires, .. }) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("private, max-age={}", longest.min(expires.saturating_sub(now)))
        }
        None => {
            let who = if shared { "public" } else { "private" };
            let forever = if immutable { ", immutable" } else { "" };
            format!("{who}, max-age={longest}{forever}")
        }
    }
}

/// What a reply sends, once the request's conditions and range are read.
enum Prepared {
    /// `304`: the client has it.
    NotModified(HttpResponse),
    /// Headers set; `count` bytes from `start` go in the body.
    Send { response: actix_web::HttpResponseBuilder, start: u64, count: u64 },
}

/// `If-None-Match`, `Range` and the reply's headers, for a file of `len` bytes.
fn prepare(req: &HttpRequest, len: u64, reply: FileReply) -> Result<Prepared, ApiError> {
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == reply.etag || tag.trim() == "*"));
    if matches {
        return Ok(Prepared::NotModified(
            HttpResponse::NotModified()
                .insert_header((header::ETAG, reply.etag))
                .insert_header((header::CACHE_CONTROL, reply.cache_control.as_str()))
                .finish(),
        ));
    }
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
        .insert_header((header::CONTENT_TYPE, reply.content_type))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::ETAG, reply.etag))
        .insert_header((header::CACHE_CONTROL, reply.cache_control.as_str()));
    if status == StatusCode::PARTIAL_CONTENT {
        response.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{}/{len}", start + count - 1)));
    }
    Ok(Prepared::Send { response, start, count })
}

pub(super) async fn send_file(
    req: &HttpRequest,
    file: std::fs::File,
    len: u64,
    reply: FileReply,
) -> Result<HttpResponse, ApiError> {
    let (mut response, start, count) = match prepare(req, len, reply)? {
        Prepared::NotModified(answer) => return Ok(answer),
        Prepared::Send { response, start, count } => (response, start, count),
    };
    if count <= WHOLE_MAP && count > 0 {
        // Mapped, not read: the page cache's pages are the body, with no
        // buffer to allocate and zero and no copy into it.
        let bytes = web::block(move || -> std::io::Result<Bytes> {
            // SAFETY: published media and objects are never written in
            // place (they are replaced by rename), so the mapping cannot
            // change under the reader.
            let map = unsafe { memmap2::MmapOptions::new().offset(start).len(count as usize).populate().map(&file)? };
            Ok(Bytes::from_owner(map))
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("reading the file: {e}")))?;
        return Ok(response.no_chunking(count).streaming(slices(bytes)));
    }
    response.no_chunking(count);
    let mut file = tokio::fs::File::from_std(file);
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), 256 * 1024);
    Ok(response.streaming(stream))
}

/// A file already in memory (a kept mapping of a published file), whole or
/// the request's range of it: no thread hop, no system call.
pub(super) fn send_bytes(req: &HttpRequest, bytes: Bytes, reply: FileReply) -> Result<HttpResponse, ApiError> {
    let (mut response, start, count) = match prepare(req, bytes.len() as u64, reply)? {
        Prepared::NotModified(answer) => return Ok(answer),
        Prepared::Send { response, start, count } => (response, start, count),
    };
    let body = bytes.slice(start as usize..(start + count) as usize);
    Ok(response.no_chunking(count).streaming(slices(body)))
}

/// `bytes` handed to actix in slices: it copies each into its connection's
/// write buffer, which then stays small and is reused, instead of growing
/// to the reply's size and being given back every time.
fn slices(bytes: Bytes) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let mut at = 0;
    futures_util::stream::iter(std::iter::from_fn(move || {
        (at < bytes.len()).then(|| {
            let slice = bytes.slice(at..(at + SLICE).min(bytes.len()));
            at += SLICE;
            Ok(slice)
        })
    }))
}

/// A file of the bucket: streamed through (the range passed on to the
/// store, memory flat), or with `storage.s3.redirect_reads` a `307` to a
/// presigned GET, which carries the client's `Range` itself. `None`: the
/// file is not there.
pub(super) async fn send_from_bucket(
    req: &HttpRequest,
    bucket: &crate::storage::Bucket,
    path: object_store::path::Path,
    reply: FileReply,
    etag_of: impl FnOnce(&crate::storage::Found) -> String,
) -> Result<Option<HttpResponse>, ApiError> {
    if bucket.redirects_reads() {
        return redirect_to_bucket(bucket, path).await.map(Some);
    }
    let Some(found) =
        bucket.find(path.clone()).await.map_err(|e| ApiError::internal(format!("reading the bucket: {e}")))?
    else {
        return Ok(None);
    };
    let reply = FileReply { etag: etag_of(&found), ..reply };
    let bucket = bucket.clone();
    send_range(req, found.len, reply, move |start, count| Box::pin(bucket.stream(path, start, count))).map(Some)
}

/// An object of the bucket, as [`send_from_bucket`]. One kept as several
/// pieces of its upload (`storage::Layout`) is streamed through even with
/// `redirect_reads` (a presigned URL names one key), the pieces a range
/// meets one after the other. `None`: the object is not there.
pub(super) async fn send_object_from_bucket(
    req: &HttpRequest,
    bucket: &crate::storage::Bucket,
    key: &crate::domain::ObjectKey,
    reply: FileReply,
) -> Result<Option<HttpResponse>, ApiError> {
    use crate::storage::{Bucket, StoredObject};
    let Some(stored) =
        bucket.find_object(key).await.map_err(|e| ApiError::internal(format!("reading the bucket: {e}")))?
    else {
        return Ok(None);
    };
    if bucket.redirects_reads() {
        let one_key = match &stored {
            StoredObject::Whole(_) => Some(Bucket::object(key)),
            StoredObject::Pieces(layout) => layout.whole_piece(),
        };
        if let Some(path) = one_key {
            return redirect_to_bucket(bucket, path).await.map(Some);
        }
    }
    let (bucket, key) = (bucket.clone(), key.clone());
    send_range(req, stored.size(), reply, move |start, count| bucket.stream_object(&key, &stored, start, count))
        .map(Some)
}

/// A `307` to a presigned GET of one file of the bucket.
async fn redirect_to_bucket(
    bucket: &crate::storage::Bucket,
    path: object_store::path::Path,
) -> Result<HttpResponse, ApiError> {
    // Short-lived: a redirect is followed at once, and a token's playback
    // must not outlive the token through it.
    let url = bucket
        .presigned_get(path, std::time::Duration::from_secs(300))
        .await
        .map_err(|e| ApiError::internal(format!("presigning a read: {e}")))?;
    Ok(HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// The answer to a read of `len` bytes that `stream(start, count)` gives.
fn send_range(
    req: &HttpRequest,
    len: u64,
    reply: FileReply,
    stream: impl FnOnce(u64, u64) -> futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
) -> Result<HttpResponse, ApiError> {
    let (mut response, start, count) = match prepare(req, len, reply)? {
        Prepared::NotModified(answer) => return Ok(answer),
        Prepared::Send { response, start, count } => (response, start, count),
    };
    response.no_chunking(count);
    if count == 0 || req.method() == actix_web::http::Method::HEAD {
        // A HEAD's answer has the headers of a GET and no body: nothing to
        // fetch from the store.
        let empty = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
        return Ok(response.streaming(empty));
    }
    Ok(response.streaming(stream(start, count)))
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
