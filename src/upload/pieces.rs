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
use super::session::{ChunkedDoor, Core, Door, MultipartDoor, PieceBook, UploadSession};
use crate::domain::ContentHash;
use crate::storage::Piece;
use actix::prelude::*;
use std::collections::BTreeMap;
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

/// Finishes the upload: chunked when every chunk is there (`parts` unused);
/// multipart with the client's ordered list of `(part number, ETag)`.
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

/// What chunked and multipart doors share: a book of pieces, and what to
/// do when one is recorded.
pub trait PieceDoor: Door {
    fn book(&mut self) -> &mut PieceBook;
    fn book_ref(&self) -> &PieceBook;
    /// Piece `piece` is recorded (replacing `replaced`, if there was one):
    /// start what can be done ahead of finalize, on blocking threads.
    fn recorded(&mut self, core: &Core, piece: &Piece, replaced: Option<Piece>);
}

impl PieceBook {
    fn tally(&self) -> Tally {
        let pieces = self.stored.as_ref();
        Tally {
            received_bytes: pieces.map_or(0, |p| p.values().map(|p| p.size).sum()),
            received_pieces: pieces.map_or(0, |p| p.len()),
        }
    }

    fn get(&self, number: u32) -> Option<Piece> {
        self.stored.as_ref().and_then(|p| p.get(&number)).cloned()
    }
}

impl ChunkedDoor {
    fn count(&self) -> u32 {
        chunk_layout(self.size, self.chunk)
    }

    /// Where the run of chunks from index 0 ends, in bytes.
    fn contiguous_end(&self) -> u64 {
        let pieces = self.book.stored.as_ref();
        let first_missing = (0..self.count()).find(|i| !pieces.is_some_and(|p| p.contains_key(i)));
        first_missing.map_or(self.size, |i| u64::from(i) * self.chunk)
    }
}

impl PieceDoor for ChunkedDoor {
    fn book(&mut self) -> &mut PieceBook {
        &mut self.book
    }

    fn book_ref(&self) -> &PieceBook {
        &self.book
    }

    fn recorded(&mut self, _: &Core, _: &Piece, _: Option<Piece>) {
        if let Some(spool) = self.spool.clone() {
            // Hash the newly contiguous bytes while they are still in the
            // page cache, off the actor and off the request.
            let end = self.contiguous_end();
            actix_web::rt::task::spawn_blocking(move || {
                if let Err(e) = spool.advance_to(end) {
                    tracing::warn!(error = %e, "could not advance an upload's hash");
                }
            });
        }
    }
}

impl MultipartDoor {
    fn assembler(&mut self, core: &Core) -> Arc<Assembler> {
        self.assembler
            .get_or_insert_with(|| Arc::new(Assembler::new(core.committer.store.clone(), core.record.id.clone())))
            .clone()
    }

    /// The parts 1, 2, 3, ... stored so far without a gap.
    fn leading_parts(&self) -> Vec<Piece> {
        (1..=MAX_PART_NUMBER).map_while(|n| self.book.get(n)).collect()
    }
}

impl PieceDoor for MultipartDoor {
    fn book(&mut self) -> &mut PieceBook {
        &mut self.book
    }

    fn book_ref(&self) -> &PieceBook {
        &self.book
    }

    fn recorded(&mut self, core: &Core, piece: &Piece, replaced: Option<Piece>) {
        if let Some(old) = replaced.filter(|old| old.hash != piece.hash) {
            let path = core.committer.store.piece_path(&core.record.id, old.number, &old.hash.to_hex());
            actix_web::rt::task::spawn_blocking(move || crate::storage::remove_quietly(&path));
        }
        // Join the leading parts now, while they are in the page cache.
        let (assembler, leading) = (self.assembler(core), self.leading_parts());
        actix_web::rt::task::spawn_blocking(move || {
            if let Err(e) = assembler.join(&leading) {
                tracing::warn!(error = %e, "could not join the parts of an upload ahead of complete");
            }
        });
    }
}

impl<D: PieceDoor> UploadSession<D> {
    fn load_pieces(&mut self) -> ResponseActFuture<Self, Result<(), UploadError>> {
        if self.door.book_ref().stored.is_some() {
            return Box::pin(fut::ready(Ok(())));
        }
        let repo = self.core.committer.repo.clone();
        let id = self.core.record.id.clone();
        Box::pin(async move { repo.pieces_of(&id).await }.into_actor(self).map(|loaded, act, _| {
            let loaded = loaded?;
            let book = act.door.book();
            if book.stored.is_none() {
                book.stored = Some(loaded.into_iter().map(|p| (p.number, p)).collect());
            }
            Ok(())
        }))
    }

    fn check_receiving(&self) -> Result<(), UploadError> {
        super::check_receiving(&self.core.record)?;
        if self.core.leased { Err(UploadError::Busy) } else { Ok(()) }
    }

    /// Hands out piece `number` (to `target`, of `expected` bytes) once the
    /// door has checked it.
    fn grant(&mut self, number: u32, target: PieceTarget, expected: Option<u64>) -> PieceGrant {
        let stored = self.door.book_ref().get(number);
        // A chunk already stored is only compared, which writes nothing.
        if !matches!(target, PieceTarget::At { write: false, .. }) {
            self.door.book().in_flight.insert(number);
        }
        self.core.last_activity = Instant::now();
        PieceGrant { target, expected, stored }
    }

    /// Refuses a piece that may not start now.
    fn check_piece(&self, number: u32) -> Result<(), UploadError> {
        self.check_receiving()?;
        if self.door.book_ref().in_flight.contains(&number) {
            return Err(UploadError::PieceBusy(number));
        }
        Ok(())
    }

    /// Takes the lease for a finish, if nothing is in flight.
    fn take_finish(&mut self) -> Result<BTreeMap<u32, Piece>, UploadError> {
        self.check_receiving()?;
        if !self.door.quiet() {
            return Err(UploadError::Busy);
        }
        Ok(self.door.book_ref().stored.clone().unwrap_or_default())
    }

    /// Runs the blocking `prepared` (the upload's hash and size) and
    /// finishes with it. The lease is taken.
    fn finish_prepared(&mut self, prepared: Prepared) -> ResponseActFuture<Self, Result<IngestResult, UploadError>> {
        self.core.leased = true;
        Box::pin(
            async move {
                tokio::task::spawn_blocking(prepared)
                    .await
                    .map_err(|e| UploadError::Internal(e.to_string()))?
                    .map_err(UploadError::Io)
            }
            .into_actor(self)
            .then(|joined, act, _| -> ResponseActFuture<Self, _> {
                match joined {
                    Ok((hash, size)) => act.finish(hash, size, None),
                    Err(e) => {
                        act.core.leased = false;
                        Box::pin(fut::ready(Err(e)))
                    }
                }
            }),
        )
    }
}

impl UploadSession<ChunkedDoor> {
    /// Opens the ranged spool if it is not open yet, on a blocking thread
    /// (an open and a set_len). A fresh upload is probed while its chunks
    /// arrive; a revived one (its hash restarts from 0 and catches up) is
    /// probed from its file at finalize.
    fn open_spool(&mut self) -> ResponseActFuture<Self, Result<Arc<RangedSpool>, UploadError>> {
        if let Some(spool) = &self.door.spool {
            return Box::pin(fut::ready(Ok(spool.clone())));
        }
        let (store, id, size) = (self.core.committer.store.clone(), self.core.record.id.clone(), self.door.size);
        let fresh = self.door.book.stored.as_ref().is_none_or(|p| p.is_empty()) && self.core.probe.is_none();
        let probe = fresh.then(|| self.core.probe_starter());
        Box::pin(
            async move {
                tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                    // Chunks are recorded but there is no spool: they are
                    // on the disk of the daemon that received them.
                    if !fresh && !store.spool_path(&id).exists() {
                        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, super::handle::ELSEWHERE));
                    }
                    let spool = Arc::new(RangedSpool::open(store.open_spool(&id)?, size)?);
                    Ok((spool, probe.and_then(|start| start())))
                })
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))?
                .map_err(|e| match super::handle::elsewhere_or_io(e) {
                    UploadError::Io(e) => UploadError::storage(e),
                    other => other,
                })
            }
            .into_actor(self)
            .map(|opened, act, _| {
                let (spool, probe) = opened?;
                if let Some(probe) = probe {
                    spool.feed_probe(probe.feed.clone());
                    act.core.probe = Some(probe);
                }
                act.door.spool = Some(spool.clone());
                Ok(spool)
            }),
        )
    }
}

impl Handler<BeginPiece> for UploadSession<ChunkedDoor> {
    // Atomic: the spool is opened once, and no other piece is granted while
    // it is being opened.
    type Result = AtomicResponse<Self, Result<PieceGrant, UploadError>>;

    fn handle(&mut self, msg: BeginPiece, _: &mut Context<Self>) -> Self::Result {
        let number = msg.number;
        AtomicResponse::new(Box::pin(
            self.load_pieces()
                .map(move |loaded, act, _| {
                    loaded?;
                    act.check_piece(number)?;
                    let count = act.door.count();
                    if number >= count {
                        return Err(UploadError::BadPiece(format!(
                            "chunk index {number} is out of range: this upload has chunks 0..={}",
                            count - 1
                        )));
                    }
                    Ok(())
                })
                .then(|checked, act, _| -> ResponseActFuture<Self, _> {
                    match checked {
                        Ok(()) => act.open_spool(),
                        Err(e) => Box::pin(fut::ready(Err(e))),
                    }
                })
                .map(move |spool, act, _| {
                    let spool = spool?;
                    let offset = u64::from(number) * act.door.chunk;
                    let expected = act.door.chunk.min(act.door.size - offset);
                    let write = act.door.book.get(number).is_none();
                    Ok(act.grant(number, PieceTarget::At { spool, offset, write }, Some(expected)))
                }),
        ))
    }
}

impl Handler<BeginPiece> for UploadSession<MultipartDoor> {
    type Result = ResponseActFuture<Self, Result<PieceGrant, UploadError>>;

    fn handle(&mut self, msg: BeginPiece, _: &mut Context<Self>) -> Self::Result {
        let number = msg.number;
        Box::pin(self.load_pieces().map(move |loaded, act, _| {
            loaded?;
            act.check_piece(number)?;
            if !(1..=MAX_PART_NUMBER).contains(&number) {
                return Err(UploadError::BadPiece(format!(
                    "part number {number} is out of range 1..={MAX_PART_NUMBER}"
                )));
            }
            let tag = format!("incoming-{}", crate::domain::UploadId::generate());
            let incoming = act.core.committer.store.piece_path(&act.core.record.id, number, &tag);
            Ok(act.grant(number, PieceTarget::File { incoming }, None))
        }))
    }
}

impl<D: PieceDoor> Handler<EndPiece> for UploadSession<D> {
    type Result = ResponseActFuture<Self, Result<Tally, UploadError>>;

    fn handle(&mut self, msg: EndPiece, _: &mut Context<Self>) -> Self::Result {
        self.core.last_activity = Instant::now();
        let Some(piece) = msg.piece else {
            self.door.book().in_flight.remove(&msg.number);
            return Box::pin(fut::ready(Ok(self.door.book_ref().tally())));
        };
        let repo = self.core.committer.repo.clone();
        let id = self.core.record.id.clone();
        let recorded = piece.clone();
        Box::pin(async move { repo.put_piece(&id, &recorded, None).await }.into_actor(self).map(move |put, act, _| {
            // Still in flight until recorded, so a finish cannot miss it.
            act.door.book().in_flight.remove(&msg.number);
            put?;
            let replaced =
                act.door.book().stored.get_or_insert_with(Default::default).insert(piece.number, piece.clone());
            act.door.recorded(&act.core, &piece, replaced);
            Ok(act.door.book_ref().tally())
        }))
    }
}

impl Handler<FinishPieces> for UploadSession<ChunkedDoor> {
    type Result = ResponseActFuture<Self, Result<IngestResult, UploadError>>;

    fn handle(&mut self, _: FinishPieces, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            self.load_pieces()
                .map(|loaded, act, _| {
                    loaded?;
                    let pieces = act.take_finish()?;
                    let missing: Vec<u32> = (0..act.door.count()).filter(|i| !pieces.contains_key(i)).collect();
                    if !missing.is_empty() {
                        return Err(UploadError::MissingPieces(missing));
                    }
                    // Leased while the spool opens, so no chunk slips in.
                    act.core.leased = true;
                    Ok(())
                })
                .then(|checked, act, _| -> ResponseActFuture<Self, _> {
                    match checked {
                        Ok(()) => act.open_spool(),
                        Err(e) => Box::pin(fut::ready(Err(e))),
                    }
                })
                .then(|spool, act, _| -> ResponseActFuture<Self, _> {
                    let spool = match spool {
                        Ok(spool) => spool,
                        Err(e) => {
                            act.core.leased = false;
                            return Box::pin(fut::ready(Err(e)));
                        }
                    };
                    let size = act.door.size;
                    act.finish_prepared(Box::new(move || {
                        spool.advance_to(size)?;
                        let hash =
                            spool.hash().ok_or_else(|| std::io::Error::other("the hash did not reach the end"))?;
                        spool.sync()?;
                        Ok((hash.into(), size))
                    }))
                }),
        )
    }
}

impl Handler<FinishPieces> for UploadSession<MultipartDoor> {
    type Result = ResponseActFuture<Self, Result<IngestResult, UploadError>>;

    fn handle(&mut self, msg: FinishPieces, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.load_pieces().then(move |loaded, act, _| -> ResponseActFuture<Self, _> {
            let chosen = loaded
                .and_then(|()| act.take_finish())
                .and_then(|pieces| check_parts(&msg.parts.unwrap_or_default(), &pieces, msg.min_part_bytes));
            match chosen {
                Ok(chosen) => {
                    // Taken: a retry after a failed commit starts a fresh one.
                    let assembler = act.door.assembler(&act.core);
                    act.door.assembler = None;
                    act.finish_prepared(Box::new(move || {
                        // Mostly joined already, in the background; this adds
                        // what is left, through the hasher, a block at a time.
                        let (hash, size) = assembler.finish(&chosen)?;
                        Ok((hash.into(), size))
                    }))
                }
                Err(e) => Box::pin(fut::ready(Err(e))),
            }
        }))
    }
}

type Prepared = Box<dyn FnOnce() -> std::io::Result<(ContentHash, u64)> + Send>;

/// The contract's rules for complete: ascending, stored, matching ETags, and
/// every part but the last at least `min_part_bytes`.
pub(super) fn check_parts(
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
