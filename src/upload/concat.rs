//! tus `concatenation`: a final upload made of whole partial uploads.
//!
//! A partial upload (`UploadKind::TusPartial`) takes bodies like any tus
//! upload, on any daemon when it is shared, and whole it waits. A final
//! upload is an ordinary tus upload whose length is the partials' sum and
//! whose only body is the partials' bytes, in order, fed by the daemon
//! through the same engine as a PATCH (`Uploads::append_tus`): hashed as
//! they arrive, committed at the end (duplicate, near-duplicate, refused or
//! new). Its record names its partials (`meta.tus_concat`), so a
//! concatenation cut off (a kill, a lost store) resumes from the final's
//! durable offset: `Uploads::concatenate` is idempotent. The partials are
//! closed (with the final's result) and their bytes removed only after the
//! final is committed.

use super::handle::{TusAppend, Uploads};
use super::{UploadError, shared};
use crate::domain::UploadId;
use crate::storage::{SessionRecord, SessionState, UploadKind};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::path::PathBuf;
use std::pin::Pin;

const READ_BYTES: u64 = 1 << 20;

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>>>>;

/// The final upload that took these partials, in this order, and was
/// committed: what a final created again over them (a client whose first
/// `POST` was cut off by a kill after the commit) is answered with, rather
/// than a refusal of partials already taken.
pub fn taken_by(records: &[SessionRecord], project: &str) -> Option<UploadId> {
    let mut finals = records.iter().map(|r| {
        let by = r.result.as_ref()?.get(CONCATENATED_INTO)?.as_str()?;
        (r.kind == UploadKind::TusPartial && r.state == SessionState::Complete && r.project == project)
            .then(|| UploadId::parse(by).ok())
            .flatten()
    });
    let first = finals.next()??;
    finals.all(|by| by.as_ref() == Some(&first)).then_some(first)
}

/// The field of a taken partial's result that names the final upload.
const CONCATENATED_INTO: &str = "concatenated_into";

/// Whole, receiving, and of the project `project`: a partial a final may take.
pub fn check_partial(record: &SessionRecord, project: &str) -> Result<u64, UploadError> {
    let whole = record.total_size.filter(|total| *total == record.durable_bytes);
    match (record.kind, record.state, whole) {
        _ if record.project != project => Err(UploadError::UnknownSession),
        (UploadKind::TusPartial, SessionState::Receiving, Some(total)) => Ok(total),
        (UploadKind::TusPartial, SessionState::Receiving, None) => {
            Err(UploadError::BadPiece(format!("partial upload {} is not whole yet", record.id)))
        }
        (UploadKind::TusPartial, _, _) => {
            Err(UploadError::BadPiece(format!("partial upload {} was taken or has ended", record.id)))
        }
        _ => Err(UploadError::BadPiece(format!("upload {} is not a partial upload", record.id))),
    }
}

impl Uploads {
    /// Feeds the partials' bytes into the final upload `id` from its durable
    /// offset on, and closes the partials once it is committed. Answers the
    /// final's offset and, once committed, its result.
    pub async fn concatenate(&self, id: &UploadId, partials: &[UploadId]) -> Result<TusAppend, UploadError> {
        let record = self.status(id).await?;
        let total = record.total_size.ok_or_else(|| UploadError::Internal("a final upload has a length".into()))?;
        let mut records = Vec::with_capacity(partials.len());
        for partial in partials {
            records.push(self.status(partial).await?);
        }
        let appended = if record.state == SessionState::Receiving {
            let mut sources: Vec<ByteStream> = Vec::new();
            let mut at = 0u64;
            for partial in &records {
                let len = check_partial(partial, &record.project)?;
                let start = record.durable_bytes.clamp(at, at + len) - at;
                if start < len {
                    sources.push(self.bytes_of(partial, start, len - start).await?);
                }
                at += len;
            }
            if at != total {
                return Err(UploadError::Internal(format!("the partials hold {at} bytes, the final {total}")));
            }
            let body = futures_util::stream::iter(sources).flatten();
            self.append_tus(id, record.durable_bytes, None, total, Box::pin(body), None).await?
        } else {
            TusAppend {
                offset: total,
                result: self.status(id).await?.result.and_then(|r| serde_json::from_value(r).ok()),
            }
        };
        if let Some(result) = &appended.result {
            let mut json = serde_json::to_value(result).map_err(|e| UploadError::Internal(e.to_string()))?;
            json[CONCATENATED_INTO] = id.as_str().into();
            for partial in records.iter().filter(|p| p.state == SessionState::Receiving) {
                self.take_partial(partial, json.clone()).await?;
            }
        }
        Ok(appended)
    }

    /// Closes a partial upload the final one took (with the final's
    /// result) and removes its bytes: through its actor when it has one.
    async fn take_partial(&self, partial: &SessionRecord, result: serde_json::Value) -> Result<(), UploadError> {
        if partial.staged.is_some() {
            self.committer.repo.close_session(&partial.id, SessionState::Complete, Some(&result), None).await?;
            shared::discard_staged(&self.committer, partial).await;
            return Ok(());
        }
        match self.registry.send(super::registry::FindSession(partial.id.clone())).await?? {
            super::registry::Found::Live(addr) => {
                if !addr.taken(result).await? {
                    return Err(UploadError::Busy);
                }
            }
            super::registry::Found::Closed(_) | super::registry::Found::Shared(_) => {}
        }
        Ok(())
    }

    /// `len` bytes of a whole partial upload from `start`: from the bucket
    /// (its parts completed into one object first) or from its spool here.
    async fn bytes_of(&self, partial: &SessionRecord, start: u64, len: u64) -> Result<ByteStream, UploadError> {
        let store = &self.committer.store;
        match (&partial.staged, store.bucket()) {
            (Some(_), Some(bucket)) => {
                // Its pieces, in order, each from where the range meets it.
                let pieces = self.committer.repo.staged_pieces_of(&partial.id).await?;
                let (_, placed) = shared::merged(partial, &pieces)?;
                Ok(Box::pin(bucket.stream_pieces(&partial.id, &placed, start, len)))
            }
            _ => Ok(Box::pin(file_bytes(store.spool_path(&partial.id), start, len))),
        }
    }
}

/// `len` bytes of the file at `path` from `start`, read 1 MiB at a time on
/// blocking threads.
fn file_bytes(path: PathBuf, start: u64, len: u64) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let end = start + len;
    futures_util::stream::try_unfold((path, start), move |(path, at)| async move {
        if at >= end {
            return Ok(None);
        }
        let want = (end - at).min(READ_BYTES) as usize;
        let (path, block) = tokio::task::spawn_blocking(move || -> std::io::Result<(PathBuf, Vec<u8>)> {
            use std::os::unix::fs::FileExt;
            let mut block = vec![0u8; want];
            #[allow(clippy::disallowed_methods)] // on a blocking thread
            std::fs::File::open(&path)?.read_exact_at(&mut block, at)?;
            Ok((path, block))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Some((Bytes::from(block), (path, at + want as u64))))
    })
}
