//! `UploadSession`: the actor that owns one upload. It hands its spool writer
//! out to one body at a time (a lease), records durable progress as the
//! writer reports it, and finalizes exactly once.

use super::assembler::Assembler;
use super::committer::{Committer, IngestResult};
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

pub struct UploadSession {
    pub(super) record: SessionRecord,
    /// `None` while leased out, or before first use after a revival.
    pub(super) writer: Option<SpoolWriter>,
    /// A body is being written, or the upload is being committed.
    pub(super) leased: bool,
    pub(super) committer: Committer,
    registry: Addr<Registry>,
    pub(super) last_activity: Instant,
    /// Chunked and multipart uploads: the pieces recorded so far (loaded
    /// from the database on first use), and those being received right now.
    pub(super) pieces: Option<BTreeMap<u32, Piece>>,
    pub(super) in_flight: BTreeSet<u32>,
    /// Chunked uploads: the spool that chunks are written into at their offsets.
    pub(super) ranged: Option<Arc<RangedSpool>>,
    /// Multipart uploads: joins parts into the spool as they arrive in order.
    pub(super) assembler: Option<Arc<Assembler>>,
    /// The probe running while the bytes arrive, if this upload got one.
    pub(super) probe: Option<EarlyProbe>,
}

impl UploadSession {
    pub fn new(record: SessionRecord, committer: Committer, registry: Addr<Registry>) -> Self {
        Self {
            record,
            writer: None,
            leased: false,
            committer,
            registry,
            last_activity: Instant::now(),
            pieces: None,
            in_flight: BTreeSet::new(),
            ranged: None,
            assembler: None,
            probe: None,
        }
    }

    /// Starts the early probe of a fresh upload (nothing written yet), if a
    /// slot is free, and returns what feeds it.
    pub(super) fn start_probe(&mut self) -> Option<Arc<BufferWriter>> {
        if self.probe.is_none() {
            let store = self.committer.store.clone();
            // The spool must exist for the probe to open it.
            store.open_spool(&self.record.id).ok()?;
            self.probe =
                EarlyProbe::start(&*store, &self.record.id, self.record.total_size, &self.committer.early_probes);
        }
        self.probe.as_ref().map(|p| p.feed.clone())
    }

    /// Stops the early probe: the bytes it read are about to change, or the
    /// upload ends without an object.
    pub(super) fn stop_probe(&mut self) {
        if let Some(probe) = self.probe.take() {
            probe.abandon();
        }
    }

    /// Nobody is writing and nothing is being committed.
    pub(super) fn idle(&self) -> bool {
        !self.leased && self.in_flight.is_empty()
    }
}

impl Actor for UploadSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_STOP_AFTER / 4, |act, ctx| {
            if act.idle() && act.last_activity.elapsed() >= IDLE_STOP_AFTER {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.registry.do_send(SessionStopped(self.record.id.clone()));
    }
}

/// A snapshot of the session for status answers.
#[derive(Message)]
#[rtype(result = "SessionRecord")]
pub struct Snapshot;

impl Handler<Snapshot> for UploadSession {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.record.clone())
    }
}

/// Asks for the right to write. `offset: None` means the body starts at 0
/// (a client re-sending everything); `Some(n)` must equal the durable length.
#[derive(Message)]
#[rtype(result = "Result<Lease, UploadError>")]
pub struct TakeLease {
    pub offset: Option<u64>,
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

impl Handler<TakeLease> for UploadSession {
    type Result = Result<Lease, UploadError>;

    fn handle(&mut self, msg: TakeLease, _: &mut Context<Self>) -> Self::Result {
        super::check_receiving(&self.record)?;
        if self.leased {
            return Err(UploadError::Busy);
        }
        let durable = self.record.durable_bytes;
        let reset = match msg.offset {
            None => durable > 0,
            Some(got) if got == durable => false,
            Some(got) => return Err(UploadError::OffsetMismatch { expected: durable, got }),
        };
        self.leased = true;
        self.last_activity = Instant::now();
        if reset {
            self.record.durable_bytes = 0;
            // The probe has read bytes that are about to be overwritten.
            self.stop_probe();
        }
        // Only an upload read from its first byte can be probed early; a
        // session revived mid-way is probed from its file at finalize.
        let feed = if self.record.durable_bytes == 0 {
            self.start_probe()
        } else {
            self.probe.as_ref().map(|p| p.feed.clone())
        };
        Ok(Lease { record: self.record.clone(), writer: self.writer.take(), reset, feed })
    }
}

/// Sent by the writer thread after each fdatasync.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Durable(pub u64);

impl Handler<Durable> for UploadSession {
    type Result = ();

    fn handle(&mut self, msg: Durable, ctx: &mut Context<Self>) {
        self.record.durable_bytes = msg.0;
        self.last_activity = Instant::now();
        let repo = self.committer.repo.clone();
        let id = self.record.id.clone();
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

impl Handler<ReturnLease> for UploadSession {
    type Result = ResponseActFuture<Self, Result<Option<IngestResult>, UploadError>>;

    fn handle(&mut self, msg: ReturnLease, _: &mut Context<Self>) -> Self::Result {
        self.last_activity = Instant::now();
        match msg.writer {
            Some(writer) if msg.finish => {
                let (size, hash) = (writer.written(), writer.hash().into());
                // Still leased while finalizing, so no other body can slip in.
                Box::pin(self.finish(hash, size, Some(writer)).map(|r, _, _| r.map(Some)))
            }
            other => {
                self.writer = other;
                self.leased = false;
                Box::pin(fut::ready(Ok(None)))
            }
        }
    }
}

impl UploadSession {
    /// Commits the spool, whose bytes hash to `hash`, and closes the session.
    /// The caller has set `leased`, so nothing else writes meanwhile.
    /// `writer` is kept for a retry if the commit fails before its rename.
    pub(super) fn finish(
        &mut self,
        hash: ContentHash,
        size: u64,
        writer: Option<SpoolWriter>,
    ) -> ResponseActFuture<Self, Result<IngestResult, UploadError>> {
        self.leased = true;
        let committer = self.committer.clone();
        let record = self.record.clone();
        let probe = self.probe.take();
        Box::pin(
            async move {
                let (early, refined) = match probe {
                    Some(probe) => {
                        let (early, refined) = probe.finish().await;
                        (early, Some(refined))
                    }
                    None => (None, None),
                };
                let outcome = committer.commit(&record, hash, size, early, refined).await;
                let closed = match &outcome {
                    Ok(result) => {
                        let json = serde_json::to_value(result).ok();
                        committer.repo.close_session(&record.id, SessionState::Complete, json.as_ref(), None).await
                    }
                    // A refusal is final: the session is closed with its
                    // reason (the spool is gone already), so its status, the
                    // video list and a retry all say so.
                    Err(refused @ (UploadError::NotAVideo(_) | UploadError::CorruptVideo(_))) => {
                        let why = refused.to_string();
                        committer.repo.close_session(&record.id, SessionState::Failed, None, Some(&why)).await
                    }
                    Err(_) => Ok(()),
                };
                // Settled and closed: the spool (unless it became the object)
                // and the parts go only now, so a kill before the close finds
                // the upload whole, and one after it finds the answer.
                let settled = matches!(&outcome, Ok(_) | Err(UploadError::NotAVideo(_) | UploadError::CorruptVideo(_)));
                if settled && closed.is_ok() {
                    committer.discard(&record.id).await;
                }
                (outcome, closed, writer)
            }
            .into_actor(self)
            .map(|(outcome, closed, writer), act, ctx| {
                act.leased = false;
                if let Err(e) = &closed {
                    // The object is committed whatever the session row says; the
                    // client gets its result, and a retry finds the video by hash.
                    tracing::warn!(upload_id = %act.record.id, error = %e, "could not close a finished session");
                }
                match outcome {
                    Ok(result) => {
                        act.record.state = SessionState::Complete;
                        act.record.result = serde_json::to_value(&result).ok();
                        ctx.stop();
                        Ok(result)
                    }
                    Err(refused @ (UploadError::NotAVideo(_) | UploadError::CorruptVideo(_))) => {
                        closed?;
                        act.record.state = SessionState::Failed;
                        act.record.error = Some(refused.to_string());
                        // The writer (`writer` here, dropped with this arm)
                        // closes its file: no handle stays on the unlinked spool.
                        act.writer = None;
                        ctx.stop();
                        Err(refused)
                    }
                    Err(UploadError::CommitInterrupted(why)) => {
                        // The spool is now the object: the writer must never
                        // touch it again. Start-up recovery records it.
                        act.record.state = SessionState::Committing;
                        ctx.stop();
                        Err(UploadError::CommitInterrupted(why))
                    }
                    Err(other) => {
                        // Failed before the rename (database, disk): the spool
                        // is intact, so keep the session open for a retry.
                        act.writer = writer;
                        Err(other)
                    }
                }
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

impl Handler<Fail> for UploadSession {
    type Result = ResponseActFuture<Self, Result<(), UploadError>>;

    fn handle(&mut self, msg: Fail, _: &mut Context<Self>) -> Self::Result {
        self.writer = None;
        self.stop_probe();
        let committer = self.committer.clone();
        let id = self.record.id.clone();
        let reason = msg.reason.clone();
        Box::pin(
            async move {
                committer.discard(&id).await;
                committer.repo.close_session(&id, SessionState::Failed, None, Some(&reason)).await
            }
            .into_actor(self)
            .map(move |closed, act, ctx| {
                act.leased = false;
                act.record.state = SessionState::Failed;
                act.record.error = Some(msg.reason);
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
}

impl Handler<Abandon> for UploadSession {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, msg: Abandon, _: &mut Context<Self>) -> Self::Result {
        let busy = match msg.state {
            // An abort also stops pieces in flight: their writes land in an unlinked file.
            SessionState::Aborted => self.leased,
            _ => !self.idle(),
        };
        if busy || self.record.state != SessionState::Receiving {
            return Box::pin(fut::ready(false));
        }
        self.writer = None;
        self.ranged = None;
        self.stop_probe();
        if let Some(assembler) = self.assembler.take() {
            assembler.close();
        }
        self.leased = true;
        let committer = self.committer.clone();
        let id = self.record.id.clone();
        Box::pin(
            async move {
                committer.discard(&id).await;
                committer.repo.close_session(&id, msg.state, None, Some(msg.state.as_str())).await
            }
            .into_actor(self)
            .map(move |closed, act, ctx| {
                act.record.state = msg.state;
                ctx.stop();
                closed.is_ok()
            }),
        )
    }
}
