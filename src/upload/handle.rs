//! `Uploads`: the cloneable handle through which every front door (HTTP
//! routes, the URL fetcher, later chunked, multipart and tus) drives the engine.

use super::committer::{Committer, IngestResult};
use super::pump::{PumpEnd, PumpLimits, pump};
use super::registry::{FindSession, Found, Registry, SweepNow};
use super::session::{Durable, Fail, Lease, ReturnLease, Snapshot, TakeLease, UploadSession};
use super::{SpoolWriter, UploadError};
use crate::domain::{Bucket, Prefix, SourceUrl, UploadId};
use crate::storage::{SessionRecord, SessionState};
use actix::Addr;
use bytes::Bytes;
use futures_util::Stream;

/// What a new upload will be stored as.
pub struct NewUpload {
    pub url: Option<SourceUrl>,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub meta: serde_json::Value,
}

#[derive(Clone)]
pub struct Uploads {
    registry: Addr<Registry>,
    committer: Committer,
    checkpoint_bytes: u64,
}

impl Uploads {
    pub fn new(registry: Addr<Registry>, committer: Committer, checkpoint_bytes: u64) -> Self {
        Self { registry, committer, checkpoint_bytes }
    }

    /// Opens a session. Nothing touches the disk until the first byte.
    pub async fn create(&self, new: NewUpload) -> Result<UploadId, UploadError> {
        let now = chrono::Utc::now();
        let record = SessionRecord {
            id: UploadId::generate(),
            url: new.url,
            bucket: new.bucket,
            prefix: new.prefix,
            meta: new.meta,
            state: SessionState::Receiving,
            durable_bytes: 0,
            commit: None,
            result: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.committer.repo.insert_session(&record).await?;
        self.committer.metrics.uploads_started.inc();
        Ok(record.id)
    }

    /// Where a session stands (for clients that resume).
    pub async fn status(&self, id: &UploadId) -> Result<SessionRecord, UploadError> {
        match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => Ok(addr.send(Snapshot).await?),
            Found::Closed(record) => Ok(*record),
        }
    }

    /// Expires abandoned sessions now rather than at the next sweep.
    pub fn sweep_now(&self) {
        self.registry.do_send(SweepNow);
    }

    /// Writes a whole body (or the rest of one, from `offset`) into the
    /// session and finalizes it when the body ends. A body that breaks off
    /// leaves the session resumable at its last durable byte.
    pub async fn write_body<S, E>(
        &self,
        id: &UploadId,
        offset: Option<u64>,
        body: S,
        max_bytes: u64,
    ) -> Result<IngestResult, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let addr = match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => addr,
            Found::Closed(record) => return Self::closed_outcome(*record),
        };
        let lease = addr.send(TakeLease { offset }).await??;
        // The lease is worked in a task of its own, so that a request future
        // dropped by a vanished client cannot strand the writer: the task
        // always hands it back.
        let this = self.clone();
        actix_web::rt::spawn(async move { this.work_lease(addr, lease, body, max_bytes).await })
            .await
            .map_err(|e| UploadError::Internal(format!("upload task failed: {e}")))?
    }

    fn closed_outcome(record: SessionRecord) -> Result<IngestResult, UploadError> {
        match record.state {
            // Finalize is idempotent: the same answer as the first time.
            SessionState::Complete => record
                .result
                .and_then(|r| serde_json::from_value(r).ok())
                .ok_or_else(|| UploadError::Internal("a complete upload lost its result".into())),
            SessionState::Failed => Err(UploadError::Failed(record.error.unwrap_or_default())),
            SessionState::Expired => Err(UploadError::Expired),
            SessionState::Receiving | SessionState::Committing => {
                Err(UploadError::Internal("the upload is being committed; ask again shortly".into()))
            }
        }
    }

    async fn work_lease<S, E>(
        self,
        addr: Addr<UploadSession>,
        lease: Lease,
        body: S,
        max_bytes: u64,
    ) -> Result<IngestResult, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Lease { record, writer, reset } = lease;
        let store = self.committer.store.clone();
        let (id, durable) = (record.id.clone(), record.durable_bytes);
        let prepared = tokio::task::spawn_blocking(move || -> std::io::Result<SpoolWriter> {
            let mut writer = match writer {
                Some(writer) => writer,
                None if durable == 0 => SpoolWriter::create(store.open_spool(&id)?)?,
                None => SpoolWriter::resume(store.open_spool(&id)?, durable)?,
            };
            if reset {
                writer.reset()?;
            }
            Ok(writer)
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))
        .and_then(|r| r.map_err(UploadError::Io));
        let writer = match prepared {
            Ok(writer) => writer,
            Err(e) => {
                addr.do_send(ReturnLease { writer: None, finish: false });
                return Err(e);
            }
        };
        if reset {
            addr.do_send(Durable(0));
        }

        let metrics = self.committer.metrics.clone();
        let on_durable = {
            let addr = addr.clone();
            move |durable| addr.do_send(Durable(durable))
        };
        let limits = PumpLimits { max_bytes, checkpoint_bytes: self.checkpoint_bytes };
        let (writer, end) = pump(writer, body, limits, |n| metrics.upload_received_bytes.inc_by(n), on_durable).await;

        match end {
            Ok(PumpEnd::Complete { body_ended }) => {
                let outcome = addr.send(ReturnLease { writer, finish: true }).await?;
                metrics.upload_finalize_seconds.observe(body_ended.elapsed().as_secs_f64());
                match outcome {
                    Ok(Some(result)) => {
                        metrics.uploads_completed.inc();
                        Ok(result)
                    }
                    Ok(None) => Err(UploadError::Internal("the spool writer was lost".into())),
                    Err(e) => {
                        metrics.uploads_failed.with_label_values(&[e.code()]).inc();
                        Err(e)
                    }
                }
            }
            Ok(PumpEnd::TooLarge) => {
                let e = UploadError::TooLarge { limit: max_bytes };
                addr.send(Fail { reason: e.to_string() }).await??;
                metrics.uploads_failed.with_label_values(&[e.code()]).inc();
                Err(e)
            }
            Ok(PumpEnd::Interrupted(e)) | Err(e) => {
                addr.send(ReturnLease { writer, finish: false }).await??;
                Err(e)
            }
        }
    }
}
