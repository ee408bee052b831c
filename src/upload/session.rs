//! `UploadSession<D>`: the actor that owns one upload. `D` is its door, the
//! state of the one protocol the upload was opened through: `AppendDoor`
//! (streamed and tus bodies: one append-only spool writer, leased to one
//! body at a time), `ChunkedDoor` (chunks written at their offsets into a
//! ranged spool) or `MultipartDoor` (parts in files of their own, joined by
//! the assembler). A message a door does not take is not implemented for its
//! session type, so no session checks at run time which door it is; the
//! registry hands out typed addresses (`SessionAddr`).
//!
//! Every door ends the same way: `finish` commits the spool and maps the
//! commit's `Outcome` to the session's end in one exhaustive match.

use super::assembler::Assembler;
use super::committer::{Committer, End, IngestResult, Outcome, Source};
use super::early_probe::EarlyProbe;
use super::ranged::RangedSpool;
use super::registry::{Registry, SessionStopped};
use super::{UploadError, writer::SpoolWriter};
use crate::domain::ContentHash;
use crate::media::streaming::BufferWriter;
use crate::storage::{Piece, SessionRecord, SessionState};
use actix::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A session with no lease for this long stops to free its file handle; the
/// next request revives it from the database (re-hashing its durable prefix once).
const IDLE_STOP_AFTER: Duration = Duration::from_secs(600);

/// What every session has, whatever its door.
pub struct Core {
    pub(super) record: SessionRecord,
    /// A body is being written, or the upload is being committed.
    pub(super) leased: bool,
    pub(super) committer: Committer,
    registry: Addr<Registry>,
    pub(super) last_activity: Instant,
    /// The probe running while the bytes arrive, if this upload got one.
    pub(super) probe: Option<EarlyProbe>,
}

impl Core {
    /// Stops the early probe: the bytes it read are about to change, or the
    /// upload ends without an object.
    pub(super) fn stop_probe(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.abandon();
        }
    }

    /// The blocking work that starts an early probe over this upload's
    /// spool (creating the spool, spawning the probe's thread), to be run on
    /// a blocking thread; `None` inside if no slot is free.
    pub(super) fn probe_starter(&self) -> impl FnOnce() -> Option<EarlyProbe> + Send + 'static {
        let (store, id) = (self.committer.store.clone(), self.record.id.clone());
        let (total, slots) = (self.record.total_size, self.committer.early_probes.clone());
        move || {
            // The spool must exist for the probe to open it.
            store.open_spool(&id).ok()?;
            EarlyProbe::start(&*store, &id, total, &slots)
        }
    }
}

/// The protocol state a session holds: exactly one door's.
pub trait Door: Unpin + Sized + 'static {
    /// Nothing is being written besides a lease (no piece in flight).
    fn quiet(&self) -> bool {
        true
    }
    /// The upload ends without an object, or its spool is being committed:
    /// let go of every handle that writes to the spool.
    fn release(&mut self);
    /// A commit failed before its rename: keep what a retry needs.
    fn keep_for_retry(&mut self, _writer: Option<SpoolWriter>) {}
}

/// Streamed bodies and tus PATCHes: one writer, appending.
#[derive(Default)]
pub struct AppendDoor {
    /// `None` while leased out, or before first use after a revival.
    pub(super) writer: Option<SpoolWriter>,
}

impl Door for AppendDoor {
    fn release(&mut self) {
        self.writer = None;
    }

    fn keep_for_retry(&mut self, writer: Option<SpoolWriter>) {
        self.writer = writer;
    }
}

/// The pieces of a chunked or multipart upload: those recorded (loaded
/// from the database on first use) and those being received right now.
#[derive(Default)]
pub struct PieceBook {
    pub(super) stored: Option<BTreeMap<u32, Piece>>,
    pub(super) in_flight: BTreeSet<u32>,
}

/// A chunked upload of a declared size, in chunks of a fixed size.
pub struct ChunkedDoor {
    pub(super) size: u64,
    pub(super) chunk: u64,
    pub(super) book: PieceBook,
    /// The spool that chunks are written into at their offsets, once opened
    /// (on a blocking thread).
    pub(super) spool: Option<Arc<RangedSpool>>,
}

impl ChunkedDoor {
    pub fn new(size: u64, chunk: u64) -> Self {
        Self { size, chunk: chunk.max(1), book: PieceBook::default(), spool: None }
    }
}

impl Door for ChunkedDoor {
    fn quiet(&self) -> bool {
        self.book.in_flight.is_empty()
    }

    fn release(&mut self) {
        self.spool = None;
    }
}

/// A multipart upload: parts of any size, in files of their own.
pub struct MultipartDoor {
    pub(super) book: PieceBook,
    /// Joins the leading parts into the spool as they arrive.
    pub(super) assembler: Option<Arc<Assembler>>,
}

impl MultipartDoor {
    pub fn new() -> Self {
        Self { book: PieceBook::default(), assembler: None }
    }
}

impl Door for MultipartDoor {
    fn quiet(&self) -> bool {
        self.book.in_flight.is_empty()
    }

    fn release(&mut self) {
        if let Some(assembler) = self.assembler.take() {
            assembler.close();
        }
    }
}

pub struct UploadSession<D: Door> {
    pub(super) core: Core,
    pub(super) door: D,
}

impl<D: Door> UploadSession<D> {
    pub fn new(record: SessionRecord, door: D, committer: Committer, registry: Addr<Registry>) -> Self {
        let core = Core { record, leased: false, committer, registry, last_activity: Instant::now(), probe: None };
        Self { core, door }
    }

    /// Nobody is writing and nothing is being committed.
    pub(super) fn idle(&self) -> bool {
        !self.core.leased && self.door.quiet()
    }
}

impl<D: Door> Actor for UploadSession<D> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_STOP_AFTER / 4, |act, ctx| {
            if act.idle() && act.core.last_activity.elapsed() >= IDLE_STOP_AFTER {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.core.registry.do_send(SessionStopped(self.core.record.id.clone()));
    }
}

/// A snapshot of the session for status answers.
#[derive(Message)]
#[rtype(result = "SessionRecord")]
pub struct Snapshot;

impl<D: Door> Handler<Snapshot> for UploadSession<D> {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.record.clone())
    }
}

/// Asks for the right to write. `offset: None` means the body starts at 0
/// (a client re-sending everything); `Some(n)` must equal the durable length.
#[derive(Message)]
#[rtype(result = "Result<Lease, UploadError>")]
pub struct TakeLease {
    pub offset: Option<u64>,
    /// tus `creation-defer-length`: the length, declared by this request
    /// for an upload created without one. Recorded before the lease is
    /// given, so a crash after it resumes with the length known.
    pub declare_length: Option<u64>,
}

/// The right to write, with the writer moved out of the actor.
pub struct Lease {
    pub record: SessionRecord,
    /// `None` after a revival: the holder resumes it from the spool.
    pub writer: Option<SpoolWriter>,
    /// The holder must truncate to 0 before writing.
    pub reset: bool,
    /// Feeds the early probe, for a body that starts a fresh upload.
    pub feed: Option<Arc<BufferWriter>>,
}

impl Handler<TakeLease> for UploadSession<AppendDoor> {
    type Result = ResponseActFuture<Self, Result<Lease, UploadError>>;

    fn handle(&mut self, msg: TakeLease, _: &mut Context<Self>) -> Self::Result {
        if let Err(e) = super::check_receiving(&self.core.record) {
            return Box::pin(fut::ready(Err(e)));
        }
        if self.core.leased {
            return Box::pin(fut::ready(Err(UploadError::Busy)));
        }
        let durable = self.core.record.durable_bytes;
        let declared = match (msg.declare_length, self.core.record.total_size) {
            (None, _) => None,
            (Some(got), Some(total)) if got == total => None,
            (Some(got), Some(total)) => {
                let why = format!("its length is {total}");
                return Box::pin(fut::ready(Err(UploadError::LengthMismatch { got, why })));
            }
            (Some(got), None) if got < durable => {
                let why = format!("{durable} bytes are already received");
                return Box::pin(fut::ready(Err(UploadError::LengthMismatch { got, why })));
            }
            (Some(got), None) => Some(got),
        };
        let reset = match msg.offset {
            None => durable > 0,
            Some(got) if got == durable => false,
            Some(got) => return Box::pin(fut::ready(Err(UploadError::OffsetMismatch { expected: durable, got }))),
        };
        // Leased from here on: nothing else writes while the probe starts.
        self.core.leased = true;
        self.core.last_activity = Instant::now();
        if reset {
            self.core.record.durable_bytes = 0;
            // The probe has read bytes that are about to be overwritten.
            self.core.stop_probe();
        }
        // Only an upload read from its first byte can be probed early; a
        // session revived mid-way is probed from its file at finalize. The
        // probe's spool and thread are made on a blocking thread.
        let start =
            (self.core.record.durable_bytes == 0 && self.core.probe.is_none()).then(|| self.core.probe_starter());
        let (repo, id) = (self.core.committer.repo.clone(), self.core.record.id.clone());
        Box::pin(
            async move {
                if let Some(length) = declared {
                    repo.set_total_size(&id, length).await?;
                }
                Ok::<_, UploadError>(match start {
                    Some(start) => tokio::task::spawn_blocking(start).await.ok().flatten(),
                    None => None,
                })
            }
            .into_actor(self)
            .map(move |started, act, _| {
                let started = match started {
                    Ok(started) => started,
                    Err(e) => {
                        act.core.leased = false;
                        return Err(e);
                    }
                };
                if declared.is_some() {
                    act.core.record.total_size = declared;
                }
                if started.is_some() {
                    act.core.probe = started;
                }
                let feed = act.core.probe.as_ref().map(|p| p.feed.clone());
                Ok(Lease { record: act.core.record.clone(), writer: act.door.writer.take(), reset, feed })
            }),
        )
    }
}

/// Sent by the writer thread after each fdatasync.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Durable(pub u64);

impl Handler<Durable> for UploadSession<AppendDoor> {
    type Result = ();

    fn handle(&mut self, msg: Durable, ctx: &mut Context<Self>) {
        self.core.record.durable_bytes = msg.0;
        self.core.last_activity = Instant::now();
        let repo = self.core.committer.repo.clone();
        let id = self.core.record.id.clone();
        // `wait` keeps progress writes in order: a later checkpoint never
        // lands before an earlier one.
        ctx.wait(
            async move {
                if let Err(e) = repo.record_progress(&id, msg.0).await {
                    tracing::warn!(upload_id = %id, error = %e, "could not record upload progress");
                }
            }
            .into_actor(self),
        );
    }
}

/// Gives the writer back. With `finish`, the body was complete: finalize.
#[derive(Message)]
#[rtype(result = "Result<Option<IngestResult>, UploadError>")]
pub struct ReturnLease {
    pub writer: Option<SpoolWriter>,
    pub finish: bool,
}

impl Handler<ReturnLease> for UploadSession<AppendDoor> {
    type Result = ResponseActFuture<Self, Result<Option<IngestResult>, UploadError>>;

    fn handle(&mut self, msg: ReturnLease, _: &mut Context<Self>) -> Self::Result {
        self.core.last_activity = Instant::now();
        match msg.writer {
            Some(writer) if msg.finish => {
                let (size, hash) = (writer.written(), writer.hash().into());
                // Still leased while finalizing, so no other body can slip in.
                Box::pin(self.finish(hash, size, Some(writer)).map(|r, _, _| r.map(Some)))
            }
            other => {
                self.door.writer = other;
                self.core.leased = false;
                Box::pin(fut::ready(Ok(None)))
            }
        }
    }
}

impl<D: Door> UploadSession<D> {
    /// Commits the spool, whose bytes hash to `hash`, and ends the session
    /// as the commit's outcome says. The caller has set `leased`, so nothing
    /// else writes meanwhile. `writer` is kept for a retry if the commit
    /// fails before its rename.
    pub(super) fn finish(
        &mut self,
        hash: ContentHash,
        size: u64,
        writer: Option<SpoolWriter>,
    ) -> ResponseActFuture<Self, Result<IngestResult, UploadError>> {
        self.core.leased = true;
        let committer = self.core.committer.clone();
        let record = self.core.record.clone();
        let probe = self.core.probe.take();
        Box::pin(
            async move {
                let (early, refined) = match probe {
                    Some(probe) => {
                        let (early, refined) = probe.finish().await;
                        (early, Some(refined))
                    }
                    None => (None, None),
                };
                let outcome = committer.commit(&record, hash, size, early, refined, Source::Spool).await;
                let closed = committer.settle(&record, &outcome).await;
                (outcome, closed, writer)
            }
            .into_actor(self)
            .map(|(outcome, closed, writer), act, ctx| {
                act.core.leased = false;
                match outcome.end() {
                    End::Closed(state) => {
                        if let Err(e) = &closed {
                            // A stored object is committed whatever the row says:
                            // the client gets its result, and a retry finds the
                            // video by hash. A refusal must be recorded to be final.
                            tracing::warn!(upload_id = %act.core.record.id, error = %e, "could not close a finished session");
                            if state == SessionState::Failed
                                && let Err(e) = closed
                            {
                                act.door.keep_for_retry(writer);
                                return Err(e.into());
                            }
                        }
                        act.core.record.state = state;
                        match &outcome {
                            Outcome::Refused(why) => act.core.record.error = Some(why.to_string()),
                            other => act.core.record.result = other.result().and_then(|r| serde_json::to_value(r).ok()),
                        }
                        // The writer (dropped with `writer`) and every other
                        // handle close: none stays on a removed spool.
                        act.door.release();
                        ctx.stop();
                    }
                    End::Committing => {
                        // The spool is now the object: no writer may touch it
                        // again. Start-up recovery records it.
                        act.core.record.state = SessionState::Committing;
                        act.door.release();
                        ctx.stop();
                    }
                    End::Open => act.door.keep_for_retry(writer),
                }
                outcome.into_answer()
            }),
        )
    }
}

/// Fails the upload for good (over the size limit): frees the spool.
#[derive(Message)]
#[rtype(result = "Result<(), UploadError>")]
pub struct Fail {
    pub reason: String,
}

impl<D: Door> Handler<Fail> for UploadSession<D> {
    type Result = ResponseActFuture<Self, Result<(), UploadError>>;

    fn handle(&mut self, msg: Fail, _: &mut Context<Self>) -> Self::Result {
        self.door.release();
        self.core.stop_probe();
        let committer = self.core.committer.clone();
        let id = self.core.record.id.clone();
        let reason = msg.reason.clone();
        Box::pin(
            async move {
                committer.discard(&id).await;
                committer.repo.close_session(&id, SessionState::Failed, None, Some(&reason)).await
            }
            .into_actor(self)
            .map(move |closed, act, ctx| {
                act.core.leased = false;
                act.core.record.state = SessionState::Failed;
                act.core.record.error = Some(msg.reason);
                ctx.stop();
                Ok(closed?)
            }),
        )
    }
}

/// Ends the session without an object: expiry (only if nobody is writing to
/// it) or a client's abort. Frees the spool. Answers whether it did.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Abandon {
    pub state: SessionState,
    /// Closed with this result instead of a reason: a whole tus partial
    /// upload taken by a final upload (`Complete`, the final's result).
    pub result: Option<serde_json::Value>,
}

impl<D: Door> Handler<Abandon> for UploadSession<D> {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Abandon, _: &mut Context<Self>) -> Self::Result {
        let busy = match msg.state {
            // An abort also stops pieces in flight: their writes land in an unlinked file.
            SessionState::Aborted => self.core.leased,
            _ => !self.idle(),
        };
        if busy || self.core.record.state != SessionState::Receiving {
            return Box::pin(fut::ready(false));
        }
        self.door.release();
        self.core.stop_probe();
        self.core.leased = true;
        let committer = self.core.committer.clone();
        let id = self.core.record.id.clone();
        let result = msg.result.clone();
        Box::pin(
            async move {
                committer.discard(&id).await;
                match &result {
                    Some(result) => committer.repo.close_session(&id, msg.state, Some(result), None).await,
                    None => committer.repo.close_session(&id, msg.state, None, Some(msg.state.as_str())).await,
                }
            }
            .into_actor(self)
            .map(move |closed, act, ctx| {
                act.core.record.state = msg.state;
                act.core.record.result = msg.result;
                ctx.stop();
                closed.is_ok()
            }),
        )
    }
}
