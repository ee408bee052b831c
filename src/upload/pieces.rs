//! Pieces: the chunks of a chunked upload and the parts of a multipart one.
//! Many may be in flight at once; the session actor hands out where each
//! goes, records each one once it is durable, and finishes the upload when
//! every piece is there.
//!
//! A chunk has a fixed place (`index * chunk_size`) and size, so it is written
//! straight into the upload's `RangedSpool` and the whole-file hash advances
//! as the received prefix grows. A part's size is only known when it ends, so
//! it is kept in a file of its own and the parts are joined at complete.

use super::UploadError;
use super::assembler::Assembler;
use super::committer::IngestResult;
use super::ranged::RangedSpool;
use super::session::UploadSession;
use crate::domain::ContentHash;
use crate::storage::{Piece, UploadKind};
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Part numbers of the multipart door run 1..=10000, as in S3.
pub const MAX_PART_NUMBER: u32 = 10_000;

pub enum PieceTarget {
    /// A chunk: written at `offset` in the shared spool (or only hashed, if
    /// the chunk is stored already and this is a re-send).
    At { spool: Arc<RangedSpool>, offset: u64, write: bool },
    /// A part: written into a file of its own, renamed once it is whole.
    File { incoming: PathBuf },
}

pub struct PieceGrant {
    pub target: PieceTarget,
    /// The exact size a chunk must have; parts have only a limit.
    pub expected: Option<u64>,
    /// The stored piece with this number, if any.
    pub stored: Option<Piece>,
}

/// Asks where piece `number` goes.
#[derive(Message)]
#[rtype(result = "Result<PieceGrant, UploadError>")]
pub struct BeginPiece {
    pub number: u32,
}

/// Reports how piece `number` ended: `Some` once it is durable and should be
/// recorded, `None` if nothing is to be recorded (a failed or re-sent piece).
#[derive(Message)]
#[rtype(result = "Result<Tally, UploadError>")]
pub struct EndPiece {
    pub number: u32,
    pub piece: Option<Piece>,
}

/// What is stored so far.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub received_bytes: u64,
    pub received_pieces: usize,
}

/// Finishes the upload: chunked when every chunk is there; multipart with
/// the client's ordered list of `(part number, ETag)`.
#[derive(Message)]
#[rtype(result = "Result<IngestResult, UploadError>")]
pub struct FinishPieces {
    pub parts: Option<Vec<(u32, String)>>,
    pub min_part_bytes: u64,
}

/// Chunk count and the size of chunk `index` for a chunked upload.
pub fn chunk_layout(size: u64, chunk_size: u64) -> u32 {
    size.div_ceil(chunk_size.max(1)) as u32
}

impl UploadSession {
    fn load_pieces(&mut self) -> ResponseActFuture<Self, Result<(), UploadError>> {
        if self.pieces.is_some() {
            return Box::pin(fut::ready(Ok(())));
        }
        let repo = self.committer.repo.clone();
        let id = self.record.id.clone();
        Box::pin(async move { repo.pieces_of(&id).await }.into_actor(self).map(|loaded, act, _| {
            let loaded = loaded?;
            if act.pieces.is_none() {
                act.pieces = Some(loaded.into_iter().map(|p| (p.number, p)).collect());
            }
            Ok(())
        }))
    }

    fn check_receiving(&self) -> Result<(), UploadError> {
        super::check_receiving(&self.record)?;
        if self.leased { Err(UploadError::Busy) } else { Ok(()) }
    }

    /// Chunked: the declared size and chunk size.
    fn layout(&self) -> Result<(u64, u64), UploadError> {
        match (self.record.kind, self.record.total_size, self.record.chunk_size) {
            (UploadKind::Chunked, Some(size), Some(chunk)) if chunk > 0 => Ok((size, chunk)),
            _ => Err(UploadError::WrongDoor),
        }
    }

    fn ranged_spool(&mut self, size: u64) -> Result<Arc<RangedSpool>, UploadError> {
        if let Some(spool) = &self.ranged {
            return Ok(spool.clone());
        }
        // An open and a set_len: cheap enough to do on the actor.
        let spool = Arc::new(RangedSpool::open(self.committer.store.open_spool(&self.record.id)?, size)?);
        // A fresh upload is probed while its chunks arrive; a revived one
        // (its hash restarts from 0 and catches up) is probed from its file.
        if self.pieces.as_ref().is_none_or(|p| p.is_empty())
            && let Some(feed) = self.start_probe()
        {
            spool.feed_probe(feed);
        }
        self.ranged = Some(spool.clone());
        Ok(spool)
    }

    fn assembler(&mut self) -> Arc<Assembler> {
        self.assembler
            .get_or_insert_with(|| Arc::new(Assembler::new(self.committer.store.clone(), self.record.id.clone())))
            .clone()
    }

    /// Multipart: the parts 1, 2, 3, ... stored so far without a gap.
    fn leading_parts(&self) -> Vec<Piece> {
        let pieces = self.pieces.as_ref();
        (1..=MAX_PART_NUMBER).map_while(|n| pieces.and_then(|p| p.get(&n)).cloned()).collect()
    }

    fn grant(&mut self, number: u32) -> Result<PieceGrant, UploadError> {
        self.check_receiving()?;
        if self.in_flight.contains(&number) {
            return Err(UploadError::PieceBusy(number));
        }
        let stored = self.pieces.as_ref().and_then(|p| p.get(&number)).cloned();
        let (target, expected) = match self.record.kind {
            UploadKind::Chunked => {
                let (size, chunk) = self.layout()?;
                let count = chunk_layout(size, chunk);
                if number >= count {
                    return Err(UploadError::BadPiece(format!(
                        "chunk index {number} is out of range: this upload has chunks 0..={}",
                        count - 1
                    )));
                }
                let offset = u64::from(number) * chunk;
                let expected = chunk.min(size - offset);
                let spool = self.ranged_spool(size)?;
                (PieceTarget::At { spool, offset, write: stored.is_none() }, Some(expected))
            }
            UploadKind::Multipart => {
                if !(1..=MAX_PART_NUMBER).contains(&number) {
                    return Err(UploadError::BadPiece(format!(
                        "part number {number} is out of range 1..={MAX_PART_NUMBER}"
                    )));
                }
                let tag = format!("incoming-{}", crate::domain::UploadId::generate());
                (PieceTarget::File { incoming: self.committer.store.piece_path(&self.record.id, number, &tag) }, None)
            }
            UploadKind::Stream | UploadKind::Tus => return Err(UploadError::WrongDoor),
        };
        // A chunk already stored is only compared, which writes nothing.
        if !matches!(target, PieceTarget::At { write: false, .. }) {
            self.in_flight.insert(number);
        }
        self.last_activity = Instant::now();
        Ok(PieceGrant { target, expected, stored })
    }

    fn tally(&self) -> Tally {
        let pieces = self.pieces.as_ref();
        Tally {
            received_bytes: pieces.map_or(0, |p| p.values().map(|p| p.size).sum()),
            received_pieces: pieces.map_or(0, |p| p.len()),
        }
    }

    /// Chunked: where the run of chunks from index 0 ends, in bytes.
    fn contiguous_end(&self) -> u64 {
        let Ok((size, chunk)) = self.layout() else { return 0 };
        let pieces = self.pieces.as_ref();
        let first_missing = (0..chunk_layout(size, chunk)).find(|i| !pieces.is_some_and(|p| p.contains_key(i)));
        first_missing.map_or(size, |i| u64::from(i) * chunk)
    }
}

impl Handler<BeginPiece> for UploadSession {
    type Result = ResponseActFuture<Self, Result<PieceGrant, UploadError>>;

    fn handle(&mut self, msg: BeginPiece, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.load_pieces().map(move |loaded, act, _| {
            loaded?;
            act.grant(msg.number)
        }))
    }
}

impl Handler<EndPiece> for UploadSession {
    type Result = ResponseActFuture<Self, Result<Tally, UploadError>>;

    fn handle(&mut self, msg: EndPiece, _: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        let Some(piece) = msg.piece else {
            self.in_flight.remove(&msg.number);
            return Box::pin(fut::ready(Ok(self.tally())));
        };
        let repo = self.committer.repo.clone();
        let id = self.record.id.clone();
        let recorded = piece.clone();
        Box::pin(async move { repo.put_piece(&id, &recorded).await }.into_actor(self).map(move |put, act, _| {
            // Still in flight until recorded, so a finish cannot miss it.
            act.in_flight.remove(&msg.number);
            put?;
            let replaced = act.pieces.get_or_insert_with(Default::default).insert(piece.number, piece.clone());
            if act.record.kind == UploadKind::Multipart
                && let Some(old) = replaced.filter(|old| old.hash != piece.hash)
            {
                let path = act.committer.store.piece_path(&act.record.id, old.number, &old.hash.to_hex());
                actix_web::rt::task::spawn_blocking(move || std::fs::remove_file(path));
            }
            if act.record.kind == UploadKind::Multipart {
                // Join the leading parts now, while they are in the page cache.
                let (assembler, leading) = (act.assembler(), act.leading_parts());
                actix_web::rt::task::spawn_blocking(move || {
                    if let Err(e) = assembler.join(&leading) {
                        tracing::warn!(error = %e, "could not join the parts of an upload ahead of complete");
                    }
                });
            }
            if let Some(spool) = act.ranged.clone() {
                // Hash the newly contiguous bytes while they are still in the
                // page cache, off the actor and off the request.
                let end = act.contiguous_end();
                actix_web::rt::task::spawn_blocking(move || {
                    if let Err(e) = spool.advance_to(end) {
                        tracing::warn!(error = %e, "could not advance an upload's hash");
                    }
                });
            }
            Ok(act.tally())
        }))
    }
}

impl Handler<FinishPieces> for UploadSession {
    type Result = ResponseActFuture<Self, Result<IngestResult, UploadError>>;

    fn handle(&mut self, msg: FinishPieces, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.load_pieces().then(move |loaded, act, _| -> ResponseActFuture<Self, _> {
            match loaded.and_then(|()| act.prepare_finish(msg)) {
                Ok(prepared) => Box::pin(
                    async move {
                        tokio::task::spawn_blocking(prepared)
                            .await
                            .map_err(|e| UploadError::Internal(e.to_string()))?
                            .map_err(UploadError::Io)
                    }
                    .into_actor(act)
                    .then(|joined, act, _| -> ResponseActFuture<Self, _> {
                        match joined {
                            Ok((hash, size)) => act.finish(hash, size, None),
                            Err(e) => {
                                act.leased = false;
                                Box::pin(fut::ready(Err(e)))
                            }
                        }
                    }),
                ),
                Err(e) => Box::pin(fut::ready(Err(e))),
            }
        }))
    }
}

type Prepared = Box<dyn FnOnce() -> std::io::Result<(ContentHash, u64)> + Send>;

impl UploadSession {
    /// Checks that the upload can finish and returns the blocking work that
    /// yields its hash and size. Takes the lease on success.
    fn prepare_finish(&mut self, msg: FinishPieces) -> Result<Prepared, UploadError> {
        self.check_receiving()?;
        if !self.in_flight.is_empty() {
            return Err(UploadError::Busy);
        }
        let pieces = self.pieces.clone().unwrap_or_default();
        let prepared: Prepared = match self.record.kind {
            UploadKind::Chunked => {
                let (size, chunk) = self.layout()?;
                let missing: Vec<u32> = (0..chunk_layout(size, chunk)).filter(|i| !pieces.contains_key(i)).collect();
                if !missing.is_empty() {
                    return Err(UploadError::MissingPieces(missing));
                }
                let spool = self.ranged_spool(size)?;
                Box::new(move || {
                    spool.advance_to(size)?;
                    let hash = spool.hash().ok_or_else(|| std::io::Error::other("the hash did not reach the end"))?;
                    spool.sync()?;
                    Ok((hash.into(), size))
                })
            }
            UploadKind::Multipart => {
                let parts = msg.parts.unwrap_or_default();
                let chosen = check_parts(&parts, &pieces, msg.min_part_bytes)?;
                // Taken: a retry after a failed commit starts a fresh one.
                let assembler = self.assembler();
                self.assembler = None;
                Box::new(move || {
                    // Mostly joined already, in the background; this adds
                    // what is left, through the hasher, a block at a time.
                    let (hash, size) = assembler.finish(&chosen)?;
                    Ok((hash.into(), size))
                })
            }
            UploadKind::Stream | UploadKind::Tus => return Err(UploadError::WrongDoor),
        };
        self.leased = true;
        Ok(prepared)
    }
}

/// The contract's rules for complete: ascending, stored, matching ETags, and
/// every part but the last at least `min_part_bytes`.
fn check_parts(
    parts: &[(u32, String)],
    stored: &std::collections::BTreeMap<u32, Piece>,
    min_part_bytes: u64,
) -> Result<Vec<Piece>, UploadError> {
    if parts.is_empty() {
        return Err(UploadError::BadParts("the parts list is empty".into()));
    }
    let mut chosen = Vec::with_capacity(parts.len());
    for (i, (number, etag)) in parts.iter().enumerate() {
        if i > 0 && *number <= parts[i - 1].0 {
            return Err(UploadError::BadParts(format!(
                "parts must be listed in ascending order: part {number} follows part {}",
                parts[i - 1].0
            )));
        }
        let Some(piece) = stored.get(number) else {
            return Err(UploadError::BadParts(format!("part {number} was never uploaded")));
        };
        if etag.trim().trim_matches('"').to_ascii_lowercase() != piece.hash.to_hex() {
            return Err(UploadError::BadParts(format!(
                "the ETag given for part {number} does not match the stored part"
            )));
        }
        if i + 1 < parts.len() && piece.size < min_part_bytes {
            return Err(UploadError::BadParts(format!(
                "part {number} has {} bytes; every part but the last needs at least {min_part_bytes}",
                piece.size
            )));
        }
        chosen.push(piece.clone());
    }
    Ok(chosen)
}
