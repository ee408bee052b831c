//! `Uploads`: the cloneable handle through which every front door (HTTP
//! routes, the URL fetcher, later chunked, multipart and tus) drives the engine.

use super::committer::{Committer, IngestResult};
use super::pieces::{BeginPiece, EndPiece, FinishPieces, PieceTarget, Tally};
use super::pump::{Checked, Digest, DigestKind, PumpEnd, PumpLimits, pump};
use super::ranged::ChunkSink;
use super::registry::{FindSession, Found, Registry, SweepNow};
use super::session::{AppendDoor, Durable, Fail, Lease, ReturnLease, TakeLease, UploadSession};
use super::{SpoolWriter, UploadError};
use crate::domain::{Bucket, ContentHash, Prefix, SourceUrl, UploadId};
use crate::storage::{NewEntry, Piece, SessionRecord, SessionState, UploadKind};
use actix::Addr;
use bytes::Bytes;
use futures_util::Stream;

/// What a new upload will be stored as.
pub struct NewUpload {
    pub url: Option<SourceUrl>,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub meta: serde_json::Value,
    pub kind: UploadKind,
    pub total_size: Option<u64>,
    pub chunk_size: Option<u64>,
    /// Who opens it, and how many open uploads they may have.
    pub owner: Option<(String, u64)>,
    /// The user-facing video entry to make with it.
    pub entry: Option<NewEntry>,
    /// The project the upload is for (`DEFAULT_PROJECT` for anonymous callers).
    pub project: String,
    /// Its video's media is to be public (section 8).
    pub public: bool,
}

impl NewUpload {
    /// A streamed upload of the cache API.
    pub fn stream(
        url: Option<SourceUrl>,
        bucket: Bucket,
        prefix: Prefix,
        meta: serde_json::Value,
        project: String,
    ) -> Self {
        Self {
            url,
            bucket,
            prefix,
            meta,
            kind: UploadKind::Stream,
            total_size: None,
            chunk_size: None,
            owner: None,
            entry: None,
            project,
            public: false,
        }
    }
}

/// How one chunk or part went.
#[derive(Debug, Clone)]
pub struct PieceOutcome {
    pub tally: Tally,
    /// The BLAKE3 of the piece (a part's ETag).
    pub hash: ContentHash,
}

/// How one tus PATCH went: the new offset, and the result if it completed the upload.
#[derive(Debug, Clone)]
pub struct TusAppend {
    pub offset: u64,
    pub result: Option<IngestResult>,
}

/// When a lease's body ends, what then.
enum Finish {
    /// The body is the whole upload: finalize when it ends.
    AtBodyEnd,
    /// Finalize once this many bytes are written (tus `Upload-Length`).
    AtLength(u64),
    /// The length is not known yet (tus `creation-defer-length`): keep
    /// what comes, up to the size limit, and never finalize.
    Deferred,
}

#[derive(Clone)]
pub struct Uploads {
    pub(super) registry: Addr<Registry>,
    pub(super) committer: Committer,
    checkpoint_bytes: u64,
    reserve_bytes: u64,
    /// The span of a claim on a shared upload, renewed while held (`upload.claim_secs`).
    claim: std::time::Duration,
    /// `storage.s3.share_uploads`: new uploads on a bucket are shared.
    share: bool,
}

impl Uploads {
    pub fn new(registry: Addr<Registry>, committer: Committer, checkpoint_bytes: u64, reserve_bytes: u64) -> Self {
        let claim = std::time::Duration::from_secs(3);
        Self { registry, committer, checkpoint_bytes, reserve_bytes, claim, share: false }
    }

    /// Sets whether new uploads on a bucket are shared between daemons.
    pub fn with_sharing(mut self, share: bool) -> Self {
        self.share = share;
        self
    }

    /// Sets the span of a claim on a shared upload: a dead holder's runs
    /// out within it, and another daemon may take the upload over.
    pub fn with_claim(mut self, claim: std::time::Duration) -> Self {
        self.claim = claim;
        self
    }

    /// Opens a session (and its video entry). Nothing touches the disk until the first byte.
    pub async fn create(&self, new: NewUpload) -> Result<SessionRecord, UploadError> {
        self.create_with_id(UploadId::generate(), new).await
    }

    /// `create` with an id chosen by the caller (which needs it beforehand).
    pub async fn create_with_id(&self, id: UploadId, new: NewUpload) -> Result<SessionRecord, UploadError> {
        if let Some(size) = new.total_size {
            let store = self.committer.store.clone();
            let free = tokio::task::spawn_blocking(move || store.free_bytes())
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))?
                .map_err(UploadError::Io)?;
            if size.saturating_add(self.reserve_bytes) > free {
                self.committer.metrics.uploads_failed.with_label_values(&["insufficient-storage"]).inc();
                return Err(UploadError::StorageFull(format!(
                    "{size} bytes do not fit in the {free} bytes free beside the {} bytes kept in reserve",
                    self.reserve_bytes
                )));
            }
        }
        if let Some((owner, limit)) = &new.owner
            && self.committer.repo.open_sessions_of(owner).await? >= *limit
        {
            return Err(UploadError::TooManySessions { limit: *limit });
        }
        let now = chrono::Utc::now();
        let record = SessionRecord {
            id,
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
            kind: new.kind,
            total_size: new.total_size,
            chunk_size: new.chunk_size,
            owner: new.owner.map(|(owner, _)| owner),
            entry_id: None,
            project: new.project,
            public: new.public,
            staged: None,
        };
        // Shared: any daemon takes its requests (`upload::shared`).
        let bucket = self.committer.store.bucket().filter(|_| self.share);
        let sharing = super::shared::sharing(bucket, record.kind, record.total_size, record.chunk_size);
        let record = match (bucket, sharing) {
            (Some(_), super::shared::Sharing::Chunks(chunk)) => {
                SessionRecord { staged: Some(super::shared::LAYOUT.to_owned()), chunk_size: Some(chunk), ..record }
            }
            (Some(_), super::shared::Sharing::Parts) => {
                SessionRecord { staged: Some(super::shared::LAYOUT.to_owned()), ..record }
            }
            _ => record,
        };
        let record =
            self.committer.repo.insert_session(&record, new.entry.as_ref()).await?.ok_or(UploadError::IdTaken)?;
        self.committer.metrics.uploads_started.inc();
        Ok(record)
    }

    /// Where a session stands (for clients that resume).
    pub async fn status(&self, id: &UploadId) -> Result<SessionRecord, UploadError> {
        match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => match addr.snapshot().await {
                Ok(record) => Ok(record),
                // It stopped between the look-up and the ask (it has just
                // settled, or gone idle): its row says where it is.
                Err(_) => self.committer.repo.find_session(id).await?.ok_or(UploadError::UnknownSession),
            },
            Found::Closed(record) | Found::Shared(record) => Ok(*record),
        }
    }

    /// The pieces an upload has stored (recorded only once durable).
    pub async fn pieces(&self, id: &UploadId) -> Result<Vec<Piece>, UploadError> {
        Ok(self.committer.repo.pieces_of(id).await?)
    }

    /// Expires abandoned sessions now rather than at the next sweep.
    pub fn sweep_now(&self) {
        self.registry.do_send(SweepNow);
    }

    /// Abandons an upload on its client's request and frees its disk.
    pub async fn abort(&self, id: &UploadId) -> Result<(), UploadError> {
        match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => match addr.abandon(SessionState::Aborted).await? {
                true => Ok(()),
                false => Err(UploadError::Busy),
            },
            Found::Shared(record) => {
                match super::shared::abandon(&self.committer, &record, SessionState::Aborted).await? {
                    true => Ok(()),
                    false => Err(UploadError::Busy),
                }
            }
            Found::Closed(record) => match record.state {
                SessionState::Aborted => Err(UploadError::UnknownSession),
                SessionState::Complete => Err(UploadError::Failed("the upload is already complete".into())),
                _ => Ok(()),
            },
        }
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
            Found::Live(addr) => addr.append()?,
            Found::Shared(record) if record.kind == crate::storage::UploadKind::Stream => {
                let (reset, offset) = (offset.is_none(), offset.unwrap_or(0));
                let write = super::shared::Append {
                    offset,
                    declare_length: None,
                    body,
                    checksum: None,
                    max_bytes,
                    ends_upload: true,
                    reset,
                };
                let appended = super::shared::append(&self.committer, &record, write, self.claim).await?;
                return appended.result.ok_or_else(|| UploadError::Internal("a finished body left no result".into()));
            }
            Found::Shared(_) => return Err(UploadError::WrongDoor),
            Found::Closed(record) => return closed_outcome(*record),
        };
        let lease = addr.send(TakeLease { offset, declare_length: None }).await??;
        let this = self.clone();
        let (_, result) = actix_web::rt::spawn(async move {
            this.work_lease(addr, lease, body, max_bytes, Finish::AtBodyEnd, None).await
        })
        .await
        .map_err(|e| UploadError::Internal(format!("upload task failed: {e}")))??;
        result.ok_or_else(|| UploadError::Internal("a finished body left no result".into()))
    }

    /// A tus PATCH: appends `body` at `offset` (which must be the durable
    /// length), verifies the client's checksum if it sent one, and finalizes
    /// when the upload reaches its declared length.
    ///
    /// An upload created with its length deferred takes bodies up to
    /// `max_bytes` without finalizing, until a request declares the length
    /// (`declare_length`, tus `Upload-Length` on a PATCH).
    pub async fn append_tus<S, E>(
        &self,
        id: &UploadId,
        offset: u64,
        declare_length: Option<u64>,
        max_bytes: u64,
        body: S,
        checksum: Option<(DigestKind, Vec<u8>)>,
    ) -> Result<TusAppend, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let addr = match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => addr.append()?,
            Found::Shared(record) => {
                let write = super::shared::Append {
                    offset,
                    declare_length,
                    body,
                    checksum,
                    max_bytes,
                    ends_upload: false,
                    reset: false,
                };
                return super::shared::append(&self.committer, &record, write, self.claim).await;
            }
            // A shared upload whose commit a dead daemon began: taken over.
            Found::Closed(record) if record.staged.is_some() && record.state == SessionState::Committing => {
                let result = super::shared::finish(&self.committer, id, self.claim, Default::default()).await?;
                return Ok(TusAppend {
                    offset: record.total_size.unwrap_or(record.durable_bytes),
                    result: Some(result),
                });
            }
            Found::Closed(record) => return Err(super::check_receiving(&record).err().unwrap_or(UploadError::Busy)),
        };
        let lease = addr.send(TakeLease { offset: Some(offset), declare_length }).await??;
        let (limit, finish) = match (lease.record.total_size, lease.record.kind) {
            // A partial upload, whole, waits for the final upload that takes it.
            (Some(total), crate::storage::UploadKind::TusPartial) => (total, Finish::Deferred),
            (Some(total), _) => (total, Finish::AtLength(total)),
            (None, _) => (max_bytes, Finish::Deferred),
        };
        let this = self.clone();
        let (offset, result) =
            actix_web::rt::spawn(async move { this.work_lease(addr, lease, body, limit, finish, checksum).await })
                .await
                .map_err(|e| UploadError::Internal(format!("upload task failed: {e}")))??;
        Ok(TusAppend { offset, result })
    }

    /// Commits a tus upload that holds all its declared bytes but was never
    /// committed (the daemon died between its last durable byte and the
    /// commit): an empty append at its full length, the same path a last
    /// PATCH takes. `None` when it is not such an upload.
    pub async fn commit_if_whole(&self, id: &UploadId) -> Result<Option<IngestResult>, UploadError> {
        let record = self.status(id).await?;
        let whole = record.kind == crate::storage::UploadKind::Tus
            && record.state == SessionState::Receiving
            && record.total_size == Some(record.durable_bytes);
        if !whole {
            return Ok(None);
        }
        let empty = futures_util::stream::empty::<Result<Bytes, std::convert::Infallible>>();
        Ok(self.append_tus(id, record.durable_bytes, None, record.durable_bytes, empty, None).await?.result)
    }

    /// The session of a tus upload once it is settled, if it holds all its
    /// declared bytes: committed here, or, when a commit is already under
    /// way (start-up, or another request, holds the lease), waited for up
    /// to `wait`. An upload still missing bytes is answered at once.
    pub async fn settle_whole(&self, id: &UploadId, wait: std::time::Duration) -> Result<SessionRecord, UploadError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let record = self.status(id).await?;
            let whole = record.total_size == Some(record.durable_bytes);
            let open = matches!(record.state, SessionState::Receiving | SessionState::Committing);
            // A partial upload is never committed: nothing to wait for.
            let partial = record.kind == crate::storage::UploadKind::TusPartial;
            if !whole || !open || partial || std::time::Instant::now() >= deadline {
                return Ok(record);
            }
            match self.commit_if_whole(id).await {
                Ok(Some(_)) => {}
                // Committing elsewhere: look again shortly.
                Ok(None) | Err(UploadError::Busy) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(e) => {
                    // A commit elsewhere may have settled it as this one
                    // started (its actor stopping under the request): the
                    // row tells; an upload still open failed for real.
                    let record = self.status(id).await?;
                    if matches!(record.state, SessionState::Receiving | SessionState::Committing) {
                        return Err(e);
                    }
                    return Ok(record);
                }
            }
        }
    }

    /// Finalizes a chunked upload (every chunk must be there) or completes a
    /// multipart one with the client's ordered parts. Idempotent.
    pub async fn finish_pieces(
        &self,
        id: &UploadId,
        parts: Option<Vec<(u32, String)>>,
        min_part_bytes: u64,
    ) -> Result<IngestResult, UploadError> {
        let session = match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => Some(addr.pieces()?),
            Found::Shared(_) => None,
            // A shared upload whose commit a dead daemon began: taken over.
            Found::Closed(record) if record.staged.is_some() && record.state == SessionState::Committing => None,
            Found::Closed(record) => return closed_outcome(*record),
        };
        let started = std::time::Instant::now();
        let metrics = self.committer.metrics.clone();
        let outcome = match session {
            Some(session) => session.finish.send(FinishPieces { parts, min_part_bytes }).await?,
            None => {
                let parts = super::shared::Complete { parts, min_part_bytes };
                super::shared::finish(&self.committer, id, self.claim, parts).await
            }
        };
        metrics.upload_finalize_seconds.observe(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(_) => metrics.uploads_completed.inc(),
            Err(e) => metrics.uploads_failed.with_label_values(&[e.code()]).inc(),
        }
        outcome
    }

    /// Receives one chunk (at its fixed offset) or part (into a file of its
    /// own). `checksum` is the digest the client says the piece has.
    pub async fn write_piece<S, E>(
        &self,
        id: &UploadId,
        number: u32,
        body: S,
        checksum: Option<(DigestKind, Vec<u8>)>,
        max_piece_bytes: u64,
    ) -> Result<PieceOutcome, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + 'static,
        E: std::fmt::Display + 'static,
    {
        let session = match self.registry.send(FindSession(id.clone())).await?? {
            Found::Live(addr) => addr.pieces()?,
            Found::Shared(record) if record.kind == crate::storage::UploadKind::Multipart => {
                return super::shared::write_part(&self.committer, &record, number, body, max_piece_bytes).await;
            }
            Found::Shared(record) => {
                return super::shared::write_chunk(&self.committer, &record, number, body, checksum).await;
            }
            Found::Closed(record) => return Err(super::check_receiving(&record).err().unwrap_or(UploadError::Busy)),
        };
        let grant = session.begin.send(BeginPiece { number }).await??;
        let this = self.clone();
        let id = id.clone();
        // As with a lease, the piece is worked in a task of its own, so that
        // it always reports back even if the client goes away.
        actix_web::rt::spawn(async move {
            let outcome = this.work_piece(&id, number, grant, body, checksum, max_piece_bytes).await;
            let recorded = match &outcome {
                Ok((piece, _)) => session.end.send(EndPiece { number, piece: piece.clone() }).await,
                Err(_) => session.end.send(EndPiece { number, piece: None }).await,
            };
            let (_, hash) = outcome?;
            Ok(PieceOutcome { tally: recorded??, hash })
        })
        .await
        .map_err(|e| UploadError::Internal(format!("upload task failed: {e}")))?
    }

    /// Moves a piece's body to disk. Answers the piece to record (`None`
    /// for an identical re-send) and its hash.
    async fn work_piece<S, E>(
        &self,
        id: &UploadId,
        number: u32,
        grant: super::pieces::PieceGrant,
        body: S,
        checksum: Option<(DigestKind, Vec<u8>)>,
        max_piece_bytes: u64,
    ) -> Result<(Option<Piece>, ContentHash), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let metrics = self.committer.metrics.clone();
        let on_received = |n| metrics.upload_received_bytes.inc_by(n);
        let too_big = |limit| UploadError::BadPiece(format!("piece {number} is larger than {limit} bytes"));
        // BLAKE3 is the piece's own hash; another algorithm is digested beside it.
        let (expected_sum, digest) = match checksum {
            None => (None, None),
            Some((DigestKind::Blake3, sum)) => (Some(sum), None),
            Some((kind, sum)) => (Some(sum), Some(Digest::new(kind))),
        };
        let verify = |hash: &ContentHash, digest: Option<Digest>| match &expected_sum {
            Some(sum) if *sum != digest.map_or_else(|| hash.as_bytes().to_vec(), Digest::finish) => {
                Err(UploadError::ChecksumMismatch)
            }
            _ => Ok(()),
        };
        match grant.target {
            PieceTarget::At { spool, offset, write } => {
                let expected = grant.expected.unwrap_or(0);
                let sink = Checked { inner: ChunkSink::new(spool, offset, write), digest, feed: None };
                let (sink, end) = pump(sink, body, PumpLimits::piece(expected), on_received, |_| {}).await;
                match end? {
                    PumpEnd::Complete { .. } => {}
                    PumpEnd::TooLarge => return Err(too_big(expected)),
                    PumpEnd::Interrupted(e) => return Err(e),
                }
                let Checked { inner: sink, digest, .. } =
                    sink.ok_or_else(|| UploadError::Internal("the chunk writer was lost".into()))?;
                if sink.received != expected {
                    return Err(UploadError::BadPiece(format!(
                        "chunk {number} has {} bytes; it must have {expected}",
                        sink.received
                    )));
                }
                let hash = ContentHash::from(sink.hasher.finalize());
                verify(&hash, digest)?;
                match grant.stored {
                    Some(stored) if stored.hash == hash => Ok((None, hash)),
                    Some(_) => Err(UploadError::PieceConflict(number)),
                    None => Ok((Some(Piece { number, size: expected, hash }), hash)),
                }
            }
            PieceTarget::File { incoming } => {
                let path = incoming.clone();
                let writer = tokio::task::spawn_blocking(move || -> std::io::Result<SpoolWriter> {
                    SpoolWriter::create(crate::storage::create_piece_file(&path)?)
                })
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))??;
                let writer = Checked { inner: writer, digest, feed: None };
                let (writer, end) = pump(writer, body, PumpLimits::piece(max_piece_bytes), on_received, |_| {}).await;
                let kept = match (end, writer) {
                    (Ok(PumpEnd::Complete { .. }), Some(Checked { inner: writer, digest, .. })) => {
                        let hash = ContentHash::from(writer.hash());
                        verify(&hash, digest).map(|()| (writer.written(), hash))
                    }
                    (Ok(PumpEnd::TooLarge), _) => Err(too_big(max_piece_bytes)),
                    (Ok(PumpEnd::Interrupted(e)), _) | (Err(e), _) => Err(e),
                    (Ok(PumpEnd::Complete { .. }), None) => {
                        Err(UploadError::Internal("the part writer was lost".into()))
                    }
                };
                let store = self.committer.store.clone();
                let id = id.clone();
                tokio::task::spawn_blocking(move || -> Result<(Option<Piece>, ContentHash), UploadError> {
                    let (size, hash) = match kept {
                        Ok(kept) => kept,
                        Err(e) => {
                            crate::storage::remove_quietly(&incoming);
                            return Err(e);
                        }
                    };
                    // Named by its hash, so the record never points at a file
                    // a later re-send of the same part number is overwriting.
                    let target = store.piece_path(&id, number, &hash.to_hex());
                    crate::storage::keep_piece(&incoming, &target)?;
                    Ok((Some(Piece { number, size, hash }), hash))
                })
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))?
            }
        }
    }

    /// Works a lease: writes the body, then finalizes or hands the writer
    /// back. Answers the new durable length and, if finalized, the result.
    async fn work_lease<S, E>(
        self,
        addr: Addr<UploadSession<AppendDoor>>,
        lease: Lease,
        body: S,
        max_bytes: u64,
        finish: Finish,
        checksum: Option<(DigestKind, Vec<u8>)>,
    ) -> Result<(u64, Option<IngestResult>), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Lease { record, writer, reset, feed } = lease;
        let store = self.committer.store.clone();
        let (id, durable) = (record.id.clone(), record.durable_bytes);
        let prepared = tokio::task::spawn_blocking(move || -> std::io::Result<SpoolWriter> {
            let mut writer = match writer {
                Some(writer) => writer,
                None if durable == 0 => SpoolWriter::create(store.open_spool(&id)?)?,
                // A spool shorter than the recorded length is not this
                // upload's: its bytes are on another daemon's disk.
                #[allow(clippy::disallowed_methods)] // on a blocking thread
                None if std::fs::metadata(store.spool_path(&id)).map_or(0, |m| m.len()) < durable => {
                    return Err(std::io::Error::new(std::io::ErrorKind::NotFound, ELSEWHERE));
                }
                None => SpoolWriter::resume(store.open_spool(&id)?, durable)?,
            };
            if reset {
                writer.reset()?;
            }
            Ok(writer)
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))
        .and_then(|r| r.map_err(elsewhere_or_io));
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
        let mark = writer.mark();
        let checked = checksum.is_some();
        let (digest, expected_sum) = match checksum {
            Some((kind, sum)) => (Some(Digest::new(kind)), Some(sum)),
            None => (None, None),
        };
        // Bytes under a checksum are recorded only once it is verified.
        let on_durable = {
            let addr = addr.clone();
            move |durable| {
                if !checked {
                    addr.do_send(Durable(durable))
                }
            }
        };
        let checkpoint = if checked { u64::MAX } else { self.checkpoint_bytes };
        let sink = Checked { inner: writer, digest, feed: feed.clone() };
        let (sink, end) = pump(
            sink,
            body,
            PumpLimits::body(max_bytes, checkpoint),
            |n| metrics.upload_received_bytes.inc_by(n),
            on_durable,
        )
        .await;
        let mut writer = sink.map(|Checked { inner, digest, .. }| (inner, digest));

        // A checksum that does not match undoes the whole body.
        if let Some(sum) = &expected_sum {
            let whole = matches!(end, Ok(PumpEnd::Complete { .. }));
            let digest = writer.as_mut().and_then(|(_, d)| d.take()).map(Digest::finish);
            if whole && digest.as_ref() == Some(sum) {
                if let Some((w, _)) = &writer {
                    addr.do_send(Durable(w.written()));
                    if let Some(feed) = &feed {
                        feed.advance(w.written());
                    }
                }
            } else {
                let Some((w, _)) = writer.take() else {
                    addr.do_send(ReturnLease { writer: None, finish: false });
                    return Err(UploadError::Internal("the spool writer was lost".into()));
                };
                let rolled = tokio::task::spawn_blocking(move || {
                    let mut w = w;
                    w.rollback(mark).map(|()| w)
                })
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))
                .and_then(|r| r.map_err(UploadError::Io));
                let w = match rolled {
                    Ok(w) => w,
                    Err(e) => {
                        addr.do_send(ReturnLease { writer: None, finish: false });
                        return Err(e);
                    }
                };
                addr.do_send(Durable(w.written()));
                addr.send(ReturnLease { writer: Some(w), finish: false }).await??;
                return Err(match end {
                    Ok(PumpEnd::Complete { .. }) => UploadError::ChecksumMismatch,
                    Ok(PumpEnd::Interrupted(e)) | Err(e) => e,
                    Ok(PumpEnd::TooLarge) => UploadError::TooLarge { limit: max_bytes },
                });
            }
        }
        let writer = writer.map(|(w, _)| w);
        let written = writer.as_ref().map_or(durable, SpoolWriter::written);

        match (end, finish) {
            (Ok(PumpEnd::Complete { body_ended }), finish)
                if matches!(finish, Finish::AtBodyEnd) || matches!(finish, Finish::AtLength(n) if n == written) =>
            {
                let outcome = addr.send(ReturnLease { writer, finish: true }).await?;
                metrics.upload_finalize_seconds.observe(body_ended.elapsed().as_secs_f64());
                match outcome {
                    Ok(Some(result)) => {
                        metrics.uploads_completed.inc();
                        Ok((written, Some(result)))
                    }
                    Ok(None) => Err(UploadError::Internal("the spool writer was lost".into())),
                    Err(e) => {
                        metrics.uploads_failed.with_label_values(&[e.code()]).inc();
                        Err(e)
                    }
                }
            }
            (Ok(PumpEnd::Complete { .. }), _) => {
                addr.send(ReturnLease { writer, finish: false }).await??;
                Ok((written, None))
            }
            (Ok(PumpEnd::TooLarge), Finish::AtBodyEnd) => {
                let e = UploadError::TooLarge { limit: max_bytes };
                addr.send(Fail { reason: e.to_string() }).await??;
                metrics.uploads_failed.with_label_values(&[e.code()]).inc();
                Err(e)
            }
            // A declared length (or, undeclared, the size limit) was
            // overrun: what came before it is kept.
            (Ok(PumpEnd::TooLarge), Finish::AtLength(limit)) => {
                addr.send(ReturnLease { writer, finish: false }).await??;
                Err(UploadError::TooLarge { limit })
            }
            (Ok(PumpEnd::TooLarge), Finish::Deferred) => {
                addr.send(ReturnLease { writer, finish: false }).await??;
                Err(UploadError::TooLarge { limit: max_bytes })
            }
            (Ok(PumpEnd::Interrupted(e)), _) | (Err(e), _) => {
                addr.send(ReturnLease { writer, finish: false }).await??;
                Err(e)
            }
        }
    }
}

/// How a closed (or committing) upload answers a finalize.
pub(super) fn closed_outcome(record: SessionRecord) -> Result<IngestResult, UploadError> {
    match record.state {
        // Finalize is idempotent: the same answer as the first time.
        SessionState::Complete => record
            .result
            .and_then(|r| serde_json::from_value(r).ok())
            .ok_or_else(|| UploadError::Internal("a complete upload lost its result".into())),
        SessionState::Receiving | SessionState::Committing => {
            Err(UploadError::Internal("the upload is being committed; ask again shortly".into()))
        }
        _ => Err(super::check_receiving(&record).err().unwrap_or(UploadError::Busy)),
    }
}

/// The marker of a spool that belongs to another daemon (`UploadError::Elsewhere`).
pub(super) const ELSEWHERE: &str = "the upload's bytes are not on this daemon";

pub(super) fn elsewhere_or_io(e: std::io::Error) -> UploadError {
    if e.kind() == std::io::ErrorKind::NotFound && e.to_string() == ELSEWHERE {
        UploadError::Elsewhere
    } else {
        UploadError::Io(e)
    }
}
