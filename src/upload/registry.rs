//! `Registry`: finds the live actor of an upload, or revives it from the
//! database after a restart, and expires sessions nobody has touched for the
//! configured time to live, freeing their disk.

use super::UploadError;
use super::committer::Committer;
use super::session::{Abandon, UploadSession};
use crate::domain::UploadId;
use crate::storage::{SessionRecord, SessionState};
use actix::prelude::*;
use std::collections::HashMap;
use std::time::Duration;

pub struct Registry {
    sessions: HashMap<UploadId, Addr<UploadSession>>,
    committer: Committer,
    ttl: Duration,
    sweep_every: Duration,
}

impl Registry {
    pub fn new(committer: Committer, ttl: Duration, sweep_every: Duration) -> Self {
        Self { sessions: HashMap::new(), committer, ttl, sweep_every }
    }

    /// The live actor for a receiving session, starting one if there is none.
    fn live(&mut self, record: SessionRecord, ctx: &mut Context<Self>) -> Addr<UploadSession> {
        if let Some(addr) = self.sessions.get(&record.id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let id = record.id.clone();
        let addr = UploadSession::new(record, self.committer.clone(), ctx.address()).start();
        self.sessions.insert(id, addr.clone());
        addr
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
                    // Expiry goes through the session actor, so it cannot race a writer.
                    let addr = act.live(record, ctx);
                    actix::spawn(async move {
                        if let Ok(true) = addr.send(Abandon { state: SessionState::Expired }).await {
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
    Live(Addr<UploadSession>),
    /// Complete, failed or expired: the record says how it ended.
    Closed(Box<SessionRecord>),
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
            Some(record) if record.state == SessionState::Receiving => Ok(Found::Live(act.live(record, ctx))),
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
