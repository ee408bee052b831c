//! `Registry`: finds the live actor of an upload, or revives it from the
//! database after a restart, and expires sessions nobody has touched for the
//! configured time to live, freeing their disk.

use super::UploadError;
use super::committer::Committer;
use super::pieces::{BeginPiece, EndPiece, FinishPieces};
use super::session::{Abandon, AppendDoor, ChunkedDoor, MultipartDoor, Snapshot, UploadSession};
use crate::domain::UploadId;
use crate::storage::{SessionRecord, SessionState, UploadKind};
use actix::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

/// The live actor of one upload, typed by its door.
#[derive(Clone)]
pub enum SessionAddr {
    /// Streamed and tus uploads.
    Append(Addr<UploadSession<AppendDoor>>),
    Chunked(Addr<UploadSession<ChunkedDoor>>),
    Multipart(Addr<UploadSession<MultipartDoor>>),
}

/// A chunked or multipart session, through the messages both doors take.
pub struct PieceSession {
    pub begin: Recipient<BeginPiece>,
    pub end: Recipient<EndPiece>,
    pub finish: Recipient<FinishPieces>,
}

impl SessionAddr {
    fn connected(&self) -> bool {
        match self {
            Self::Append(a) => a.connected(),
            Self::Chunked(a) => a.connected(),
            Self::Multipart(a) => a.connected(),
        }
    }

    pub async fn snapshot(&self) -> Result<SessionRecord, MailboxError> {
        match self {
            Self::Append(a) => a.send(Snapshot).await,
            Self::Chunked(a) => a.send(Snapshot).await,
            Self::Multipart(a) => a.send(Snapshot).await,
        }
    }

    pub async fn abandon(&self, state: SessionState) -> Result<bool, MailboxError> {
        match self {
            Self::Append(a) => a.send(Abandon { state, result: None }).await,
            Self::Chunked(a) => a.send(Abandon { state, result: None }).await,
            Self::Multipart(a) => a.send(Abandon { state, result: None }).await,
        }
    }

    /// Closes a whole tus partial upload that a final upload took, with the
    /// final's result, and frees its spool.
    pub async fn taken(&self, result: serde_json::Value) -> Result<bool, MailboxError> {
        let close = Abandon { state: SessionState::Complete, result: Some(result) };
        match self {
            Self::Append(a) => a.send(close).await,
            Self::Chunked(a) => a.send(close).await,
            Self::Multipart(a) => a.send(close).await,
        }
    }

    /// The session of a body door (stream, tus); another door's upload is
    /// not written through one.
    pub fn append(self) -> Result<Addr<UploadSession<AppendDoor>>, UploadError> {
        match self {
            Self::Append(a) => Ok(a),
            Self::Chunked(_) | Self::Multipart(_) => Err(UploadError::WrongDoor),
        }
    }

    /// The session of a piece door (chunked, multipart).
    pub fn pieces(self) -> Result<PieceSession, UploadError> {
        match self {
            Self::Chunked(a) => {
                Ok(PieceSession { begin: a.clone().recipient(), end: a.clone().recipient(), finish: a.recipient() })
            }
            Self::Multipart(a) => {
                Ok(PieceSession { begin: a.clone().recipient(), end: a.clone().recipient(), finish: a.recipient() })
            }
            Self::Append(_) => Err(UploadError::WrongDoor),
        }
    }
}

pub struct Registry {
    sessions: HashMap<UploadId, SessionAddr>,
    committer: Committer,
    ttl: Duration,
    sweep_every: Duration,
}

impl Registry {
    pub fn new(committer: Committer, ttl: Duration, sweep_every: Duration) -> Self {
        Self { sessions: HashMap::new(), committer, ttl, sweep_every }
    }

    /// The live actor for a receiving session, starting one with the door
    /// its record was opened through if there is none.
    fn live(&mut self, record: SessionRecord, ctx: &mut Context<Self>) -> Result<SessionAddr, UploadError> {
        if let Some(addr) = self.sessions.get(&record.id).filter(|a| a.connected()) {
            return Ok(addr.clone());
        }
        let id = record.id.clone();
        let (committer, registry) = (self.committer.clone(), ctx.address());
        let addr = match (record.kind, record.total_size, record.chunk_size) {
            (UploadKind::Stream | UploadKind::Tus | UploadKind::TusPartial, _, _) => {
                SessionAddr::Append(UploadSession::new(record, AppendDoor::default(), committer, registry).start())
            }
            (UploadKind::Chunked, Some(size), Some(chunk)) if chunk > 0 => SessionAddr::Chunked(
                UploadSession::new(record, ChunkedDoor::new(size, chunk), committer, registry).start(),
            ),
            (UploadKind::Chunked, _, _) => {
                return Err(UploadError::Internal(format!("chunked upload {id} has no size or chunk size on record")));
            }
            (UploadKind::Multipart, _, _) => {
                SessionAddr::Multipart(UploadSession::new(record, MultipartDoor::new(), committer, registry).start())
            }
        };
        self.sessions.insert(id, addr.clone());
        Ok(addr)
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let repo = self.committer.repo.clone();
        let before = chrono::Utc::now() - chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        ctx.spawn(
            async move {
                repo.stale_sessions(before).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not look for abandoned uploads");
                    Vec::new()
                })
            }
            .into_actor(self)
            .map(|records, act, ctx| {
                for record in records {
                    let id = record.id.clone();
                    if record.staged.is_some() {
                        let committer = act.committer.clone();
                        actix::spawn(async move {
                            match super::shared::abandon(&committer, &record, SessionState::Expired).await {
                                Ok(true) => tracing::info!(upload_id = %id, "expired an abandoned shared upload"),
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(upload_id = %id, error = %e, "could not expire a shared upload")
                                }
                            }
                        });
                        continue;
                    }
                    // Expiry goes through the session actor, so it cannot race a writer.
                    let Ok(addr) = act.live(record, ctx) else { continue };
                    actix::spawn(async move {
                        if let Ok(true) = addr.abandon(SessionState::Expired).await {
                            tracing::info!(upload_id = %id, "expired an abandoned upload");
                        }
                    });
                }
            }),
        );
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_every, |act, ctx| act.sweep(ctx));
    }
}

pub enum Found {
    /// Still taking bytes: talk to its actor.
    Live(SessionAddr),
    /// Complete, failed or expired: the record says how it ended.
    Closed(Box<SessionRecord>),
    /// Receiving, and shared between daemons (`upload::shared`): it has no
    /// actor; the database and the bucket hold it.
    Shared(Box<SessionRecord>),
}

#[derive(Message)]
#[rtype(result = "Result<Found, UploadError>")]
pub struct FindSession(pub UploadId);

impl Handler<FindSession> for Registry {
    type Result = ResponseActFuture<Self, Result<Found, UploadError>>;

    fn handle(&mut self, msg: FindSession, _: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.sessions.get(&msg.0).filter(|a| a.connected()) {
            return Box::pin(fut::ready(Ok(Found::Live(addr.clone()))));
        }
        let repo = self.committer.repo.clone();
        Box::pin(async move { repo.find_session(&msg.0).await }.into_actor(self).map(|found, act, ctx| match found? {
            None => Err(UploadError::UnknownSession),
            Some(record) if record.state == SessionState::Receiving && record.staged.is_some() => {
                Ok(Found::Shared(Box::new(record)))
            }
            Some(record) if record.state == SessionState::Receiving => act.live(record, ctx).map(Found::Live),
            Some(record) => Ok(Found::Closed(Box::new(record))),
        }))
    }
}

/// Sent by a session actor as it stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SessionStopped(pub UploadId);

impl Handler<SessionStopped> for Registry {
    type Result = ();

    fn handle(&mut self, msg: SessionStopped, _: &mut Context<Self>) {
        if self.sessions.get(&msg.0).is_some_and(|a| !a.connected()) {
            self.sessions.remove(&msg.0);
        }
    }
}

/// Runs one expiry sweep now (tests and operators use it instead of waiting).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SweepNow;

impl Handler<SweepNow> for Registry {
    type Result = ();

    fn handle(&mut self, _: SweepNow, ctx: &mut Context<Self>) {
        self.sweep(ctx);
    }
}
