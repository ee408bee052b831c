//! Uploads that any daemon takes, in parallel (S3 backend): ARCHITECTURE.md,
//! "Uploads any daemon takes", has the design and the moments each
//! guarantee holds.
//!
//! A shared upload has no session actor and nothing on one daemon's disk.
//! Its bytes are pieces, each an object of its own (`Bucket::piece`): a
//! chunk of the chunked door at `index * chunk_size`, a part of
//! [`TUS_PART`] of a tus or streamed upload, a multipart part. A chunk or
//! part at a fixed offset is hashed on arrival, its BLAKE3 (its identity)
//! and the chaining values of its subtrees ([`PieceTree`]); its number is
//! *reserved* for those bytes in the database (the first reservation wins),
//! the object is put, and then it is recorded: acknowledged from there.
//!
//! A tus PATCH or a streamed body takes a *write claim* (renewed while the
//! body streams; the fence every record of progress is conditional on),
//! fetches the upload's *tail* (the bytes past its last part, an object at
//! `tails/{id}/{durable}`), appends, puts parts as they fill, and writes
//! the new tail before it records the new offset.
//!
//! Finalize, on any daemon, *claims* the session (for `upload.claim_secs`,
//! renewed while it works), merges the stored chaining values into
//! the file's BLAKE3 without reading a byte, fetches the pieces into a
//! local spool (several at once, each at its offset) while an early probe
//! analyses the prefix already there, and commits through the same
//! [`Committer`] as every door. A claim a dead daemon left runs out within
//! `upload.claim_secs`; then any daemon takes the finalize over.

use super::committer::{Committer, IngestResult, Source};
use super::early_probe::{EarlyProbe, Refined};
use super::handle::PieceOutcome;
use super::pieces::{Tally, chunk_layout};
use super::pump::{Digest, DigestKind};
use super::tree::{PieceTree, root};
use super::{UploadError, check_receiving};
use crate::domain::{ContentHash, UploadId};
use crate::storage::{Bucket, Piece, PieceAt, SessionRecord, SessionState, UploadKind};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::time::Duration;

/// The smallest chunk of a shared chunked upload: each chunk is an object
/// of its own, fetched one after the other at finalize, so smaller chunks
/// (down to `upload.min_chunk_bytes`, 64 KiB) stay with one daemon.
pub const MIN_SHARED_CHUNK: u64 = 1 << 20;

/// What a shared session records in `staged`: its pieces are objects of
/// their own, `uploads/{id}/{number}` (`Bucket::piece`).
pub const LAYOUT: &str = "pieces";

/// The largest part of a shared multipart upload: a part in flight is held
/// in memory (S3 takes a part in one request of known length).
pub const MAX_SHARED_PART: u64 = 256 << 20;

/// The part size of a shared tus upload: a power of two, so each part is
/// one BLAKE3 subtree.
pub const TUS_PART: u64 = 8 << 20;

/// How an upload is shared between daemons, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// It lives in the daemon that created it (its actor and spool).
    No,
    /// Fixed-size pieces at fixed offsets, each with its chaining values:
    /// chunked uploads whose chunks can be S3 parts, and tus uploads of a
    /// declared length (in parts of [`TUS_PART`]). The chunk size.
    Chunks(u64),
    /// The multipart door's parts, of any size: each goes to the bucket as
    /// the S3 part of its number; the file is hashed at complete.
    Parts,
}

/// How an upload of `kind`, `size` bytes in chunks of `chunk` is shared:
/// only on a store with a bucket.
pub fn sharing(bucket: Option<&Bucket>, kind: UploadKind, size: Option<u64>, chunk: Option<u64>) -> Sharing {
    if bucket.is_none() {
        return Sharing::No;
    }
    match (kind, size, chunk) {
        (UploadKind::Chunked, Some(size), Some(chunk))
            if size > 0 && chunk >= MIN_SHARED_CHUNK && chunk.is_multiple_of(blake3::CHUNK_LEN as u64) =>
        {
            Sharing::Chunks(chunk)
        }
        // A deferred length too: its parts are put once a byte follows them.
        (UploadKind::Tus | UploadKind::TusPartial, size, _) if size != Some(0) => Sharing::Chunks(TUS_PART),
        // A streamed body: its end declares the length.
        (UploadKind::Stream, _, _) => Sharing::Chunks(TUS_PART),
        (UploadKind::Multipart, _, _) => Sharing::Parts,
        _ => Sharing::No,
    }
}

fn bucket_of(committer: &Committer) -> Result<&Bucket, UploadError> {
    committer.store.bucket().ok_or_else(|| UploadError::Internal("a shared upload on a store with no bucket".into()))
}

fn staged_of(record: &SessionRecord) -> Result<&str, UploadError> {
    record.staged.as_deref().ok_or_else(|| UploadError::Internal("the upload is not shared".into()))
}

/// The part size of a shared upload whose length may not be known yet.
fn part_of(record: &SessionRecord) -> Result<u64, UploadError> {
    record
        .chunk_size
        .filter(|c| *c > 0)
        .ok_or_else(|| UploadError::Internal(format!("shared upload {} has no part size on record", record.id)))
}

/// Size and chunk size of a shared upload.
fn layout(record: &SessionRecord) -> Result<(u64, u64), UploadError> {
    match (record.total_size, record.chunk_size) {
        (Some(size), Some(chunk)) if chunk > 0 => Ok((size, chunk)),
        _ => Err(UploadError::Internal(format!("chunked upload {} has no size or chunk size on record", record.id))),
    }
}

async fn tally(committer: &Committer, id: &UploadId) -> Result<Tally, UploadError> {
    let pieces = committer.repo.pieces_of(id).await?;
    Ok(Tally { received_bytes: pieces.iter().map(|p| p.size).sum(), received_pieces: pieces.len() })
}

/// Receives chunk `index` of a shared upload (steps 1 to 4 above).
pub async fn write_chunk<S, E>(
    committer: &Committer,
    record: &SessionRecord,
    index: u32,
    mut body: S,
    checksum: Option<(DigestKind, Vec<u8>)>,
) -> Result<PieceOutcome, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_receiving(record)?;
    let id = &record.id;
    staged_of(record)?;
    let (size, chunk) = layout(record)?;
    let count = chunk_layout(size, chunk);
    if index >= count {
        return Err(UploadError::BadPiece(format!(
            "chunk index {index} is out of range: this upload has chunks 0..={}",
            count - 1
        )));
    }
    if committer.repo.finalize_claimed(id).await? {
        return Err(UploadError::Busy);
    }
    let offset = u64::from(index) * chunk;
    let expected = chunk.min(size - offset);
    let bytes =
        read_body(committer, &mut body, expected, || format!("chunk {index} has more than {expected} bytes")).await?;
    if bytes.len() as u64 != expected {
        return Err(UploadError::BadPiece(format!("chunk {index} has {} bytes; it must have {expected}", bytes.len())));
    }
    let hashed = bytes.clone();
    let (hash, tree, sum) = tokio::task::spawn_blocking(move || {
        let hash = ContentHash::from(blake3::hash(&hashed));
        let tree = PieceTree::of(offset, &hashed, size);
        let sum = checksum.map(|(kind, sum)| {
            let mut digest = Digest::new(kind);
            digest.update(&hashed);
            (digest.finish(), sum)
        });
        (hash, tree, sum)
    })
    .await
    .map_err(|e| UploadError::Internal(e.to_string()))?;
    if sum.is_some_and(|(got, want)| got != want) {
        return Err(UploadError::ChecksumMismatch);
    }
    let piece = Piece { number: index, size: expected, hash };
    if let Some(etag) = place(committer, record, &piece, &tree, bytes.clone()).await?
        && !committer.repo.store_staged_piece(id, index, &hash, &etag).await?
    {
        return Err(UploadError::PieceConflict(index));
    }
    let at = PieceAt { number: index, offset, len: expected, hash };
    committer.local_copies.keep(committer, id, Some(size), at, bytes).await;
    Ok(PieceOutcome { tally: tally(committer, id).await?, hash })
}

/// A piece's body, into memory: at most `max` bytes (`too_large` says
/// what a longer one is), counted as received.
async fn read_body<S, E>(
    committer: &Committer,
    body: &mut S,
    max: u64,
    too_large: impl FnOnce() -> String,
) -> Result<Bytes, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut buffer = BytesMut::with_capacity(max.min(TUS_PART) as usize);
    while let Some(block) = body.next().await {
        let block = block.map_err(|e| UploadError::Truncated(e.to_string()))?;
        if buffer.len() as u64 + block.len() as u64 > max {
            return Err(UploadError::BadPiece(too_large()));
        }
        committer.metrics.upload_received_bytes.inc_by(block.len() as u64);
        buffer.extend_from_slice(&block);
    }
    Ok(buffer.freeze())
}

/// Steps 2 and 3: reserves the piece's number for its bytes and puts them
/// in the bucket. Answers the part's ETag to record, or `None` when the
/// piece is stored already (an identical re-send).
async fn place(
    committer: &Committer,
    record: &SessionRecord,
    piece: &Piece,
    tree: &PieceTree,
    bytes: Bytes,
) -> Result<Option<String>, UploadError> {
    let (id, index) = (&record.id, piece.number);
    let held = committer.repo.reserve_staged_piece(id, piece, &tree.encode()).await?;
    if held.piece.hash != piece.hash {
        return Err(UploadError::PieceConflict(index));
    }
    if held.etag.is_some() {
        return Ok(None);
    }
    match bucket_of(committer)?.put_piece(id, index, bytes).await {
        Ok(etag) => Ok(Some(etag)),
        Err(e) => {
            // A finalize may have completed the upload meanwhile.
            let now = committer.repo.find_session(id).await?.ok_or(UploadError::UnknownSession)?;
            check_receiving(&now)?;
            Err(UploadError::storage(e))
        }
    }
}

/// A claim's expiry, which is also its token (`renew_claim`,
/// `record_shared_progress` and `release_claim` compare it): whole
/// milliseconds, so that it reads back from the database as written.
pub fn claim_token(span: Duration) -> chrono::DateTime<chrono::Utc> {
    let until = chrono::Utc::now() + chrono::Duration::from_std(span).unwrap_or(chrono::Duration::days(1));
    chrono::DateTime::from_timestamp_millis(until.timestamp_millis()).unwrap_or(until)
}

/// One tus PATCH of a shared upload.
pub struct Append<S> {
    pub offset: u64,
    pub declare_length: Option<u64>,
    pub body: S,
    pub checksum: Option<(DigestKind, Vec<u8>)>,
    /// The most bytes the upload may reach while its length is not known.
    pub max_bytes: u64,
    /// A streamed body (`POST /upload/{id}`): its end is the upload's end.
    pub ends_upload: bool,
    /// Start over from byte 0 (a streamed body sent again whole).
    pub reset: bool,
}

/// A claim on a shared session (a PATCH's write, or a finalize), held
/// while its holder works: short (`upload.claim_secs`), and renewed every
/// third of its span by a task of its own, so that a live holder is never
/// overtaken and a dead one's claim runs out within one span (issue 29: a
/// claim of ten minutes kept an upload whose daemon died from every
/// daemon). Every record of a write's progress is conditional on it.
/// Dropped (its request dropped), it stops renewing and runs out.
struct Claim {
    id: UploadId,
    held: std::sync::Arc<tokio::sync::Mutex<chrono::DateTime<chrono::Utc>>>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Claim {
    /// Takes the claim on `id` for `span`, renewed until released or
    /// dropped; `None` when another daemon's claim is running.
    async fn take(
        committer: &Committer,
        id: &UploadId,
        span: Duration,
    ) -> Result<Option<(Self, SessionRecord)>, UploadError> {
        let token = claim_token(span);
        let Some(record) = committer.repo.claim_finalize(id, token).await? else { return Ok(None) };
        let held = std::sync::Arc::new(tokio::sync::Mutex::new(token));
        let renewer = {
            let (held, repo, id) = (held.clone(), committer.repo.clone(), id.clone());
            actix_web::rt::spawn(async move {
                loop {
                    tokio::time::sleep(span / 3).await;
                    let mut held = held.lock().await;
                    let next = claim_token(span);
                    match repo.renew_claim(&id, *held, next).await {
                        Ok(true) => *held = next,
                        Ok(false) => return,
                        // The database did not answer: try again at the
                        // next turn (the claim still runs until `held`).
                        Err(e) => tracing::warn!(upload_id = %id, error = %e, "could not renew a claim"),
                    }
                }
            })
        };
        Ok(Some((Self { id: id.clone(), held, renewer }, record)))
    }

    /// The claim's token now (it moves at every renewal).
    async fn token(&self) -> chrono::DateTime<chrono::Utc> {
        *self.held.lock().await
    }

    /// Records progress under the claim; a claim lost (it ran out and
    /// another daemon took it) stops the write.
    async fn record(
        &self,
        committer: &Committer,
        stored: Option<&(u32, ContentHash, String)>,
        durable: u64,
    ) -> Result<(), UploadError> {
        let held = self.held.lock().await;
        let stored = stored.map(|(n, hash, etag)| (*n, hash, etag.as_str()));
        match committer.repo.record_shared_progress(&self.id, *held, stored, durable).await? {
            true => Ok(()),
            false => Err(UploadError::Busy),
        }
    }

    /// Stops renewing and lets the claim go at once.
    async fn release(self, committer: &Committer, what: &str) {
        self.renewer.abort();
        let held = self.token().await;
        if let Err(e) = committer.repo.release_claim(&self.id, held).await {
            tracing::warn!(upload_id = %self.id, error = %e, "could not release a {what} claim; it runs out by itself");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// A tus PATCH of a shared upload, on any daemon: appends `write.body` at
/// `write.offset` (the recorded length), and finalizes when the upload
/// reaches its length.
pub async fn append<S, E>(
    committer: &Committer,
    record: &SessionRecord,
    write: Append<S>,
    claim: Duration,
) -> Result<super::handle::TusAppend, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_receiving(record)?;
    let id = record.id.clone();
    // tus `creation-defer-length`: a PATCH may declare the length once.
    match (write.declare_length, record.total_size) {
        (Some(got), Some(total)) if got != total => {
            return Err(UploadError::LengthMismatch { got, why: format!("its length is {total}") });
        }
        (Some(got), None) if got < record.durable_bytes => {
            let why = format!("{} bytes are already received", record.durable_bytes);
            return Err(UploadError::LengthMismatch { got, why });
        }
        _ => {}
    }
    if write.offset != record.durable_bytes && !write.reset {
        return Err(UploadError::OffsetMismatch { expected: record.durable_bytes, got: write.offset });
    }
    let Some((lease, claimed)) = Claim::take(committer, &id, claim).await? else { return Err(UploadError::Busy) };
    // Start over: the pieces, the offset and (for a streamed body, whose
    // end sets it) the length are forgotten, under the claim.
    if write.reset {
        // The bytes at each offset may change: what is here is stale.
        committer.local_copies.forget(&id);
    }
    let claimed = match write.reset && claimed.durable_bytes > 0 {
        true => match committer.repo.reset_shared(&id, lease.token().await).await {
            Ok(true) => SessionRecord { durable_bytes: 0, total_size: None, ..claimed },
            Ok(false) => claimed,
            Err(e) => {
                lease.release(committer, "write").await;
                return Err(e.into());
            }
        },
        false => claimed,
    };
    let written = match (claimed.durable_bytes == write.offset, write.declare_length, claimed.total_size) {
        (false, _, _) => Err(UploadError::OffsetMismatch { expected: claimed.durable_bytes, got: write.offset }),
        // The length is recorded (under the claim) before the bytes.
        (true, Some(length), None) => match committer.repo.set_total_size(&id, length).await {
            Ok(()) => {
                let claimed = SessionRecord { total_size: Some(length), ..claimed };
                write_claimed(committer, &claimed, write, &lease).await
            }
            Err(e) => Err(e.into()),
        },
        (true, _, _) => write_claimed(committer, &claimed, write, &lease).await,
    };
    let total = committer.repo.find_session(&id).await.map(|r| r.and_then(|r| r.total_size));
    lease.release(committer, "write").await;
    let total = total?;
    let offset = written?;
    // Not whole, or a partial upload (which, whole, waits for the final
    // upload that takes it), or a length not declared yet.
    if total.is_none_or(|total| offset < total) || record.kind == UploadKind::TusPartial {
        return Ok(super::handle::TusAppend { offset, result: None });
    }
    let started = std::time::Instant::now();
    let result = finish(committer, &id, claim, Complete::default()).await;
    committer.metrics.upload_finalize_seconds.observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => committer.metrics.uploads_completed.inc(),
        Err(e) => committer.metrics.uploads_failed.with_label_values(&[e.code()]).inc(),
    }
    Ok(super::handle::TusAppend { offset, result: Some(result?) })
}

/// Writes a PATCH's body under the claim. Answers the new recorded length.
async fn write_claimed<S, E>(
    committer: &Committer,
    record: &SessionRecord,
    write: Append<S>,
    lease: &Claim,
) -> Result<u64, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (total, part) = (record.total_size, part_of(record)?);
    let (id, bucket) = (&record.id, bucket_of(committer)?);
    staged_of(record)?;
    let start = write.offset;
    // The tail is what follows the parts in the bucket: up to a whole part
    // when the length is not known (a part is put only once a byte after
    // it arrives, as the last one must know it is the last).
    let parts = committer.repo.staged_pieces_of(id).await?.iter().filter(|p| p.etag.is_some()).count() as u64;
    let tail_len = start - (parts * part).min(start);
    if Some(start) == total && tail_len == 0 {
        return Ok(start); // whole already: only the commit is left
    }
    let mut buffer = BytesMut::with_capacity(part as usize);
    if tail_len > 0 {
        let tail = bucket.get_tail(id, start).await.map_err(UploadError::storage)?;
        if tail.len() as u64 != tail_len {
            return Err(UploadError::Internal(format!("the tail of {id} has {} bytes, not {tail_len}", tail.len())));
        }
        buffer.extend_from_slice(&tail);
    }
    let mut digest = write.checksum.as_ref().map(|(kind, _)| Digest::new(*kind));
    // With a checksum the PATCH counts whole or not at all: its parts are
    // put as they fill, and recorded once the body checks out.
    let mut pending = Vec::new();
    let (mut end, mut flushed) = (start, start - tail_len);
    let mut body = write.body;
    let mut broken = None;
    while let Some(block) = body.next().await {
        let block = match block {
            Ok(block) => block,
            Err(e) => {
                broken = Some(e.to_string());
                break;
            }
        };
        let limit = total.unwrap_or(write.max_bytes);
        if end + block.len() as u64 > limit {
            return Err(UploadError::TooLarge { limit });
        }
        committer.metrics.upload_received_bytes.inc_by(block.len() as u64);
        if let Some(digest) = &mut digest {
            digest.update(&block);
        }
        end += block.len() as u64;
        let mut rest = &block[..];
        while !rest.is_empty() {
            // A whole part with bytes after it is put (with a known length,
            // as soon as it is whole).
            if buffer.len() as u64 == part {
                let stored = put_part(committer, record, flushed, buffer.split().freeze()).await?;
                flushed += stored.1;
                match digest {
                    Some(_) => pending.push((stored.0, flushed)),
                    None => lease.record(committer, Some(&stored.0), flushed).await?,
                }
            }
            let take = (part as usize - buffer.len()).min(rest.len());
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            let last = total.is_some_and(|total| flushed + buffer.len() as u64 == total);
            if (buffer.len() as u64 == part && total.is_some()) || last {
                let stored = put_part(committer, record, flushed, buffer.split().freeze()).await?;
                flushed += stored.1;
                match digest {
                    Some(_) => pending.push((stored.0, flushed)),
                    None => lease.record(committer, Some(&stored.0), flushed).await?,
                }
            }
        }
    }
    // A streamed body's end is the upload's: its length, recorded before
    // the last part (which must know it is the last) is put.
    let ended;
    let record = match (write.ends_upload && broken.is_none(), total) {
        (true, None) => {
            committer.repo.set_total_size(id, end).await?;
            ended = SessionRecord { total_size: Some(end), ..record.clone() };
            &ended
        }
        _ => record,
    };
    let total = record.total_size;
    // The upload's last bytes: a length just declared at the offset the
    // upload had reached leaves the tail, which is the last part.
    if broken.is_none() && total == Some(end) && !buffer.is_empty() {
        let stored = put_part(committer, record, flushed, buffer.split().freeze()).await?;
        flushed += stored.1;
        match digest {
            Some(_) => pending.push((stored.0, flushed)),
            None => lease.record(committer, Some(&stored.0), flushed).await?,
        }
    }
    if let (Some(digest), Some((_, want))) = (digest, &write.checksum) {
        if broken.is_some() || digest.finish() != *want {
            return Err(UploadError::ChecksumMismatch);
        }
        for (stored, durable) in &pending {
            lease.record(committer, Some(stored), *durable).await?;
        }
    }
    // What is past the last whole part becomes the new tail, written
    // before the offset that names it is recorded.
    if !buffer.is_empty() {
        bucket.put_tail(id, end, buffer.freeze()).await.map_err(UploadError::storage)?;
    }
    lease.record(committer, None, end).await?;
    // The old tail, unless it is still the tail (nothing came, nothing was put).
    if tail_len > 0 && (end != start || flushed > start - tail_len) {
        let _ = bucket.delete_tail(id, start).await;
    }
    match broken {
        Some(why) => Err(UploadError::Truncated(why)),
        None => Ok(end),
    }
}

/// Hashes and places one part of a shared tus upload at `offset`.
/// Answers (number, hash, ETag) and its length.
async fn put_part(
    committer: &Committer,
    record: &SessionRecord,
    offset: u64,
    bytes: Bytes,
) -> Result<((u32, ContentHash, String), u64), UploadError> {
    // Only the last part, which knows the length, can be the whole file.
    let (total, part) = (record.total_size.unwrap_or(u64::MAX), part_of(record)?);
    let (len, hashed) = (bytes.len() as u64, bytes.clone());
    let (hash, tree) = tokio::task::spawn_blocking(move || {
        (ContentHash::from(blake3::hash(&hashed)), PieceTree::of(offset, &hashed, total))
    })
    .await
    .map_err(|e| UploadError::Internal(e.to_string()))?;
    let piece = Piece { number: (offset / part) as u32, size: len, hash };
    let etag = match place(committer, record, &piece, &tree, bytes.clone()).await? {
        Some(etag) => etag,
        // Put and recorded by a PATCH that died before recording the offset.
        None => committer
            .repo
            .staged_pieces_of(&record.id)
            .await?
            .into_iter()
            .find(|p| p.piece.number == piece.number)
            .and_then(|p| p.etag)
            .ok_or_else(|| UploadError::Internal(format!("part {} lost its ETag", piece.number)))?,
    };
    // The number is these bytes' (the reservation passed): kept here too,
    // unless this is a partial upload, never finalized itself (the final
    // upload that takes it is fed its bytes, and kept where that runs).
    if record.kind != UploadKind::TusPartial {
        let at = PieceAt { number: piece.number, offset, len, hash };
        committer.local_copies.keep(committer, &record.id, record.total_size, at, bytes).await;
    }
    Ok(((piece.number, hash, etag), len))
}

/// Finalizes a shared upload: claims it, then commits it. Idempotent, as
/// every finalize: a closed upload answers how it ended.
/// What a complete of the multipart door lists: its parts, with the
/// smallest size every part but the last must have. Empty for the others.
#[derive(Debug, Default)]
pub struct Complete {
    pub parts: Option<Vec<(u32, String)>>,
    pub min_part_bytes: u64,
}

pub async fn finish(
    committer: &Committer,
    id: &UploadId,
    claim: Duration,
    complete: Complete,
) -> Result<IngestResult, UploadError> {
    let Some((lease, record)) = Claim::take(committer, id, claim).await? else {
        let record = committer.repo.find_session(id).await?.ok_or(UploadError::UnknownSession)?;
        return match record.state {
            // Another daemon is finalizing it right now.
            SessionState::Receiving | SessionState::Committing => Err(UploadError::Busy),
            _ => super::handle::closed_outcome(record),
        };
    };
    let finished = finish_claimed(committer, record, complete).await;
    lease.release(committer, "finalize").await;
    finished
}

async fn finish_claimed(
    committer: &Committer,
    mut record: SessionRecord,
    complete: Complete,
) -> Result<IngestResult, UploadError> {
    let id = record.id.clone();
    if record.state == SessionState::Committing {
        // A daemon died in this upload's commit: settle it as start-up
        // recovery would. `None`: it was never committed; go on.
        if let Some(result) = committer.recover_one(&record).await? {
            discard_staged(committer, &record).await;
            return Ok(result);
        }
        record = committer.repo.find_session(&id).await?.ok_or(UploadError::UnknownSession)?;
    }
    check_receiving(&record)?;
    if record.total_size == Some(0) {
        // Nothing to store: refused as the engine refuses an empty file.
        let outcome = super::committer::Outcome::Refused(UploadError::NotAVideo("the upload is empty".into()));
        committer.settle(&record, &outcome).await?;
        discard_staged(committer, &record).await;
        return outcome.into_answer();
    }
    let pieces = committer.repo.staged_pieces_of(&id).await?;
    let (hash, placed) = match record.kind {
        UploadKind::Multipart => (None, chosen_parts(&pieces, complete)?),
        _ => {
            let (hash, placed) = merged(&record, &pieces)?;
            (Some(hash), placed)
        }
    };
    let size = placed.last().map_or(0, |p| p.offset + p.len);
    // Bytes the project holds already need nothing more: a duplicate,
    // answered at once without a fetch.
    let known = match hash {
        Some(hash) => {
            committer.repo.find_video(&hash).await?.is_some() && committer.repo.holds(&record.project, &hash).await?
        }
        None => false,
    };
    let (early, refined, hash) = if known {
        (None, None, hash)
    } else {
        let (early, refined, hashed) = fetch(committer, &id, placed.clone(), size, hash.is_none()).await?;
        (early, refined, hash.or(hashed))
    };
    let hash = hash.ok_or_else(|| UploadError::Internal("the upload was not hashed".into()))?;
    // A multipart part may be sent again with other bytes under its number
    // until the complete, so its pieces are not kept as the object: a
    // re-send that was in flight could land after the layout. A chunk's or
    // a tus part's number is bound to its hash when it is reserved.
    let source = match record.kind {
        UploadKind::Multipart => Source::Spool,
        _ => Source::Pieces(placed),
    };
    let outcome = committer.commit(&record, hash, size, early, refined, source).await;
    let closed = committer.settle(&record, &outcome).await;
    if let Err(e) = &closed {
        tracing::warn!(upload_id = %id, error = %e, "could not close a finished shared upload");
    }
    if matches!(outcome.end(), super::committer::End::Closed(_)) && closed.is_ok() {
        discard_staged(committer, &record).await;
    }
    outcome.into_answer()
}

/// A chunked or tus upload at finalize: every piece stored, their
/// chaining values merged into the file's hash. Answers the hash and the
/// pieces where they go in the file.
pub(super) fn merged(
    record: &SessionRecord,
    pieces: &[crate::storage::StagedPiece],
) -> Result<(ContentHash, Vec<PieceAt>), UploadError> {
    let (size, chunk) = layout(record)?;
    let stored: Vec<_> = pieces.iter().filter(|p| p.etag.is_some()).collect();
    let missing: Vec<u32> =
        (0..chunk_layout(size, chunk)).filter(|i| !stored.iter().any(|p| p.piece.number == *i)).collect();
    if !missing.is_empty() {
        return Err(UploadError::MissingPieces(missing));
    }
    let trees: Option<Vec<PieceTree>> = stored.iter().map(|p| p.tree.as_deref().and_then(PieceTree::decode)).collect();
    let hash = trees
        .and_then(|trees| root(size, &trees))
        .map(ContentHash::from)
        .ok_or_else(|| UploadError::Internal("the chunks' hashes do not make the upload's".into()))?;
    Ok((hash, PieceAt::in_order(stored.iter().map(|p| &p.piece))))
}

/// A multipart complete: the contract's rules (`check_parts`). Answers
/// the listed parts where they go in the file.
fn chosen_parts(pieces: &[crate::storage::StagedPiece], complete: Complete) -> Result<Vec<PieceAt>, UploadError> {
    let stored: std::collections::BTreeMap<u32, Piece> =
        pieces.iter().filter(|p| p.etag.is_some()).map(|p| (p.piece.number, p.piece.clone())).collect();
    let listed = complete.parts.unwrap_or_default();
    let chosen = super::pieces::check_parts(&listed, &stored, complete.min_part_bytes)?;
    Ok(PieceAt::in_order(chosen.iter()))
}

/// Joins the pieces into this daemon's spool for the analysis, which
/// reads the file while the pieces arrive: the pieces this daemon took are
/// there already ([`LocalCopies`](super::local_copy::LocalCopies)), with
/// the probe that read them; the others are fetched (several at once, each
/// at its offset) and the probe (one started now if none ran) follows the
/// prefix. A multipart upload, whose parts had no known offset when they
/// arrived, is hashed from the spool as well (`hash_it`). On an error the
/// spool goes and the upload stays as it was.
async fn fetch(
    committer: &Committer,
    id: &UploadId,
    placed: Vec<PieceAt>,
    size: u64,
    hash_it: bool,
) -> Result<
    (Option<Result<crate::media::Analysis, crate::media::ProbeError>>, Option<Refined>, Option<ContentHash>),
    UploadError,
> {
    let bucket = bucket_of(committer)?.clone();
    let taken = committer.local_copies.take(id, &placed).await;
    let (here, probe) = taken.map_or((Vec::new(), None), |t| (t.here, t.probe));
    let (store, spool_id, slots) = (committer.store.clone(), id.clone(), committer.early_probes.clone());
    let fetched =
        tokio::task::spawn_blocking(move || -> std::io::Result<(Option<EarlyProbe>, Option<ContentHash>, u64)> {
            let spool = store.spool_path(&spool_id);
            // The probe opens the spool: it must exist first.
            drop(store.open_spool(&spool_id)?);
            let probe = probe.or_else(|| EarlyProbe::start(&*store, &spool_id, Some(size), &slots));
            let feed = probe.as_ref().map(|p| p.feed.clone());
            let joined = bucket.fetch_pieces(&spool_id, &placed, &here, &spool, move |n| {
                if let Some(feed) = &feed {
                    feed.advance(n);
                }
            });
            let fetched_bytes = match joined {
                Ok(bytes) => bytes,
                Err(e) => {
                    if let Some(probe) = probe {
                        probe.abandon();
                    }
                    let _ = store.discard_spool(&spool_id);
                    return Err(e);
                }
            };
            if !hash_it {
                return Ok((probe, None, fetched_bytes));
            }
            let mut hasher = blake3::Hasher::new();
            #[allow(clippy::disallowed_methods)] // on a blocking thread
            std::io::copy(&mut std::fs::File::open(&spool)?, &mut hasher)?;
            Ok((probe, Some(ContentHash::from(hasher.finalize())), fetched_bytes))
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?
        .map_err(UploadError::storage)?;
    let (probe, hashed, fetched_bytes) = fetched;
    committer.metrics.shared_bytes_fetched.inc_by(fetched_bytes);
    match probe {
        Some(probe) => {
            let (early, refined) = probe.finish().await;
            Ok((early, Some(refined), hashed))
        }
        None => Ok((None, None, hashed)),
    }
}

/// Receives part `number` of a shared multipart upload: into memory (at
/// most `max` bytes), hashed (its BLAKE3 is its ETag), put in the bucket
/// as the S3 part of that number, then recorded. A part sent again
/// replaces the old one, as in S3.
pub async fn write_part<S, E>(
    committer: &Committer,
    record: &SessionRecord,
    number: u32,
    mut body: S,
    max: u64,
) -> Result<PieceOutcome, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    check_receiving(record)?;
    let id = &record.id;
    staged_of(record)?;
    if !(1..=super::pieces::MAX_PART_NUMBER).contains(&number) {
        return Err(UploadError::BadPiece(format!(
            "part number {number} is out of range 1..={}",
            super::pieces::MAX_PART_NUMBER
        )));
    }
    if committer.repo.finalize_claimed(id).await? {
        return Err(UploadError::Busy);
    }
    let max = max.min(MAX_SHARED_PART);
    let bytes = read_body(committer, &mut body, max, || format!("piece {number} is larger than {max} bytes")).await?;
    let hashed = bytes.clone();
    let hash = tokio::task::spawn_blocking(move || ContentHash::from(blake3::hash(&hashed)))
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?;
    let piece = Piece { number, size: bytes.len() as u64, hash };
    let etag = match bucket_of(committer)?.put_piece(id, number, bytes).await {
        Ok(etag) => etag,
        Err(e) => {
            let now = committer.repo.find_session(id).await?.ok_or(UploadError::UnknownSession)?;
            check_receiving(&now)?;
            return Err(UploadError::storage(e));
        }
    };
    committer.repo.put_piece(id, &piece, Some(&etag)).await?;
    Ok(PieceOutcome { tally: tally(committer, id).await?, hash })
}

/// Ends a shared upload without an object (aborted, or expired): claimed
/// first, so no finalize runs meanwhile. False if one is running.
pub async fn abandon(committer: &Committer, record: &SessionRecord, state: SessionState) -> Result<bool, UploadError> {
    let until = claim_token(Duration::from_secs(60));
    let Some(record) = committer.repo.claim_finalize(&record.id, until).await? else { return Ok(false) };
    if record.state != SessionState::Receiving {
        committer.repo.release_claim(&record.id, until).await?;
        return Ok(false);
    }
    committer.repo.close_session(&record.id, state, None, None).await?;
    discard_staged(committer, &record).await;
    Ok(true)
}

/// Removes what a shared upload left in the bucket once it ended: its
/// tails, and its pieces unless they became an object (the layout of the
/// key it committed to names this upload; a second upload of the same
/// bytes may have written that key after it, and then its pieces go).
/// Every commit writes its layout before its settle reads it, so a layout
/// never names pieces that were removed; at worst, with two such uploads
/// at once, one's pieces are left unnamed. When the layout cannot be
/// read, the pieces stay: a leak, never a loss.
pub(super) async fn discard_staged(committer: &Committer, record: &SessionRecord) {
    committer.local_copies.forget(&record.id);
    let (Ok(bucket), Some(_)) = (bucket_of(committer), record.staged.as_deref()) else { return };
    let committed = match committer.repo.find_session(&record.id).await {
        Ok(found) => found.and_then(|r| r.commit).map(|(_, key)| key),
        Err(e) => {
            tracing::warn!(upload_id = %record.id, error = %e, "could not read a shared upload's commit; its pieces stay");
            return;
        }
    };
    let keep_pieces = match committed {
        Some(key) => match bucket.laid_out_from(&key, &record.id).await {
            Ok(named) => named,
            Err(e) => {
                tracing::warn!(upload_id = %record.id, error = %e, "could not read a layout; the pieces stay");
                return;
            }
        },
        None => false,
    };
    if let Err(e) = bucket.discard_shared(&record.id, keep_pieces).await {
        tracing::warn!(upload_id = %record.id, error = %e, "could not remove a shared upload's bytes from the bucket");
    }
}
