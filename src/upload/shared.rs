//! Chunked uploads that any daemon takes, in parallel (S3 backend).
//!
//! A chunked upload whose chunks can be S3 parts (at least 5 MiB, on 1 KiB
//! boundaries) is *shared*: it has no session actor and nothing of it is
//! on one daemon's disk. At init an S3 multipart upload is started at
//! `uploads/{id}` and its id recorded with the session (`staged`). Then
//! any daemon takes any chunk:
//!
//! 1. The body is read into memory (one chunk, bounded by `chunk_size`),
//!    then hashed on a blocking thread: the chunk's BLAKE3 (its identity)
//!    and the chaining values of its subtrees ([`PieceTree`]).
//! 2. The chunk number is *reserved* in the database for these bytes; the
//!    first reservation wins, so other bytes for the same number get
//!    `409 chunk-conflict`, as a stored chunk's would.
//! 3. The bytes go to the bucket as part `index + 1`.
//! 4. The part's ETag is recorded: from here the chunk is acknowledged.
//!
//! Finalize, on any daemon, *claims* the session in the database for
//! `upload.finalize_claim_secs` (one finalize at a time across daemons),
//! merges the stored chaining values into the file's BLAKE3 without
//! reading a byte, completes the multipart upload, fetches the object into
//! a local spool for the analysis, and commits through the same
//! [`Committer`] as every door (duplicate, near-duplicate, refused, new),
//! the object copied inside the bucket rather than uploaded again.
//!
//! A daemon killed at any step loses nothing acknowledged: a chunk is
//! acknowledged only once its part is in the bucket and its ETag recorded;
//! a finalize cut off leaves a claim that runs out, after which a retry on
//! any daemon takes it over (a commit it had begun is settled as start-up
//! recovery settles one).

use super::committer::{Committer, IngestResult};
use super::handle::PieceOutcome;
use super::pieces::{Tally, chunk_layout};
use super::pump::{Digest, DigestKind};
use super::tree::{PieceTree, root};
use super::{UploadError, check_receiving};
use crate::domain::{ContentHash, UploadId};
use crate::storage::{Bucket, Piece, SessionRecord, SessionState, UploadKind};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::time::Duration;

/// S3's smallest part (but the last): a shared upload's chunks are parts.
pub const MIN_SHARED_CHUNK: u64 = 5 << 20;

/// Whether an upload of `kind`, `size` bytes in chunks of `chunk` is shared.
pub fn eligible(bucket: Option<&Bucket>, kind: UploadKind, size: Option<u64>, chunk: Option<u64>) -> bool {
    let (Some(size), Some(chunk)) = (size, chunk) else { return false };
    bucket.is_some()
        && kind == UploadKind::Chunked
        && size > 0
        && chunk >= MIN_SHARED_CHUNK
        && chunk.is_multiple_of(blake3::CHUNK_LEN as u64)
}

fn bucket_of(committer: &Committer) -> Result<&Bucket, UploadError> {
    committer.store.bucket().ok_or_else(|| UploadError::Internal("a shared upload on a store with no bucket".into()))
}

fn staged_of(record: &SessionRecord) -> Result<&str, UploadError> {
    record.staged.as_deref().ok_or_else(|| UploadError::Internal("the upload is not shared".into()))
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
    let (id, staged) = (&record.id, staged_of(record)?);
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
    let mut buffer = BytesMut::with_capacity(expected as usize);
    while let Some(block) = body.next().await {
        let block = block.map_err(|e| UploadError::Truncated(e.to_string()))?;
        if buffer.len() as u64 + block.len() as u64 > expected {
            return Err(UploadError::BadPiece(format!("chunk {index} has more than {expected} bytes")));
        }
        committer.metrics.upload_received_bytes.inc_by(block.len() as u64);
        buffer.extend_from_slice(&block);
    }
    if buffer.len() as u64 != expected {
        return Err(UploadError::BadPiece(format!(
            "chunk {index} has {} bytes; it must have {expected}",
            buffer.len()
        )));
    }
    let bytes = buffer.freeze();
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
    let held = committer.repo.reserve_staged_piece(id, &piece, &tree.encode()).await?;
    if held.piece.hash != hash {
        return Err(UploadError::PieceConflict(index));
    }
    if held.etag.is_none() {
        let etag = match bucket_of(committer)?.put_staged_part(id, staged, index, bytes).await {
            Ok(etag) => etag,
            Err(e) => {
                // A finalize may have completed the upload meanwhile.
                let now = committer.repo.find_session(id).await?.ok_or(UploadError::UnknownSession)?;
                check_receiving(&now)?;
                return Err(UploadError::storage(e));
            }
        };
        if !committer.repo.store_staged_piece(id, index, &hash, &etag).await? {
            return Err(UploadError::PieceConflict(index));
        }
    }
    Ok(PieceOutcome { tally: tally(committer, id).await?, hash })
}

/// Finalizes a shared upload: claims it, then commits it. Idempotent, as
/// every finalize: a closed upload answers how it ended.
pub async fn finish(committer: &Committer, id: &UploadId, claim: Duration) -> Result<IngestResult, UploadError> {
    let until = chrono::Utc::now() + chrono::Duration::from_std(claim).unwrap_or(chrono::Duration::MAX);
    let Some(record) = committer.repo.claim_finalize(id, until).await? else {
        let record = committer.repo.find_session(id).await?.ok_or(UploadError::UnknownSession)?;
        return match record.state {
            // Another daemon is finalizing it right now.
            SessionState::Receiving | SessionState::Committing => Err(UploadError::Busy),
            _ => super::handle::closed_outcome(record),
        };
    };
    let finished = finish_claimed(committer, record).await;
    if let Err(e) = committer.repo.release_finalize(id).await {
        tracing::warn!(upload_id = %id, error = %e, "could not release a finalize claim; it runs out by itself");
    }
    finished
}

async fn finish_claimed(committer: &Committer, mut record: SessionRecord) -> Result<IngestResult, UploadError> {
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
    let (size, chunk) = layout(&record)?;
    let staged = staged_of(&record)?.to_owned();
    let pieces = committer.repo.staged_pieces_of(&id).await?;
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
    let etags = stored.iter().filter_map(|p| p.etag.clone()).collect();
    let bucket = bucket_of(committer)?.clone();
    bucket.complete_staged(&id, &staged, etags, size).await.map_err(UploadError::storage)?;
    // The analysis reads a file: the object comes to this daemon's spool.
    let (store, spool_id) = (committer.store.clone(), id.clone());
    tokio::task::spawn_blocking(move || bucket.download_staged(&spool_id, &store.spool_path(&spool_id)))
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))?
        .map_err(UploadError::storage)?;
    let outcome = committer.commit(&record, hash, size, None, None).await;
    let closed = committer.settle(&record, &outcome).await;
    if let Err(e) = &closed {
        tracing::warn!(upload_id = %id, error = %e, "could not close a finished shared upload");
    }
    if matches!(outcome.end(), super::committer::End::Closed(_)) && closed.is_ok() {
        discard_staged(committer, &record).await;
    }
    outcome.into_answer()
}

/// Ends a shared upload without an object (aborted, or expired): claimed
/// first, so no finalize runs meanwhile. False if one is running.
pub async fn abandon(committer: &Committer, record: &SessionRecord, state: SessionState) -> Result<bool, UploadError> {
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    let Some(record) = committer.repo.claim_finalize(&record.id, until).await? else { return Ok(false) };
    if record.state != SessionState::Receiving {
        committer.repo.release_finalize(&record.id).await?;
        return Ok(false);
    }
    committer.repo.close_session(&record.id, state, None, None).await?;
    discard_staged(committer, &record).await;
    Ok(true)
}

async fn discard_staged(committer: &Committer, record: &SessionRecord) {
    let (Ok(bucket), Some(staged)) = (bucket_of(committer), record.staged.as_deref()) else { return };
    if let Err(e) = bucket.discard_staged(&record.id, staged).await {
        tracing::warn!(upload_id = %record.id, error = %e, "could not remove a shared upload's bytes from the bucket");
    }
}
