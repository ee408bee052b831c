//! The last step of every upload: from a finished spool and its hash to a
//! stored object, or to one more alias of an object already stored.
//!
//! Order matters for crash safety: probe, then rename the spool into place,
//! then record it. A crash before the record leaves an unreferenced file that
//! no API can see; a crash never leaves a record that points at half a file.

use super::UploadError;
use crate::domain::{ContentHash, ObjectKey, UploadId};
use crate::media::{ProbeError, ProbeFile, Prober};
use crate::storage::{NewVideo, Repository, SessionRecord, Store};
use crate::telemetry::Metrics;
use actix::Addr;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    New,
    Duplicate,
    UrlAlias,
}

/// The ingest result of the contract (section 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestResult {
    pub hash: String,
    pub status: IngestStatus,
    pub file_path: String,
    pub size_bytes: u64,
    pub duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phash_distance: Option<u32>,
}

impl IngestResult {
    pub fn of_stored(row: &crate::storage::entities::video::Model, status: IngestStatus) -> Self {
        Self {
            hash: row.hash.clone(),
            status,
            file_path: row.file_path.clone(),
            size_bytes: row.size_bytes as u64,
            duration_s: row.duration_s,
            phash_distance: (status == IngestStatus::Duplicate).then_some(0),
        }
    }
}

#[derive(Clone)]
pub struct Committer {
    pub(crate) repo: Repository,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) prober: Addr<Prober>,
    pub(crate) metrics: Metrics,
}

impl Committer {
    /// Commits the spool of `session`, whose bytes hash to `hash`.
    #[tracing::instrument(skip_all, fields(upload_id = %session.id, hash = %hash))]
    pub async fn commit(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        size: u64,
    ) -> Result<IngestResult, UploadError> {
        let id = &session.id;
        if let Some(stored) = self.repo.find_video(&hash).await? {
            self.discard(id).await;
            return self.duplicate_of(&stored, session).await;
        }

        let media = match self.prober.send(ProbeFile(self.store.spool_path(id))).await? {
            Ok(media) => media,
            Err(ProbeError::NotAVideo(why)) => {
                self.discard(id).await;
                return Err(UploadError::NotAVideo(why));
            }
        };

        let key = ObjectKey::new(&session.bucket, &session.prefix, &hash, media.ext);
        let store = self.store.clone();
        let (commit_id, commit_key) = (id.clone(), key.clone());
        tokio::task::spawn_blocking(move || store.commit(&commit_id, &commit_key))
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))??;

        let new = NewVideo {
            hash,
            size_bytes: size,
            media,
            bucket: session.bucket.clone(),
            prefix: session.prefix.clone(),
            file_path: key.as_str().to_owned(),
            meta: session.meta.clone(),
        };
        if self.repo.insert_video(&new, session.url.as_ref()).await? {
            return Ok(IngestResult {
                hash: hash.to_hex(),
                status: IngestStatus::New,
                file_path: new.file_path,
                size_bytes: size,
                duration_s: new.media.duration_s,
                phash_distance: None,
            });
        }

        // Another upload of the same bytes committed first. If it chose a
        // different path, ours is an orphan; on the same path the bytes are identical.
        let stored = self
            .repo
            .find_video(&hash)
            .await?
            .ok_or_else(|| UploadError::Internal("a video vanished while its duplicate committed".into()))?;
        if stored.file_path != key.as_str() {
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.delete_object(&key)).await;
        }
        self.duplicate_of(&stored, session).await
    }

    async fn duplicate_of(
        &self,
        stored: &crate::storage::entities::video::Model,
        session: &SessionRecord,
    ) -> Result<IngestResult, UploadError> {
        if let (Some(url), Ok(hash)) = (&session.url, ContentHash::parse(&stored.hash)) {
            self.repo.add_alias(url, &hash).await?;
        }
        self.metrics.duplicates.inc();
        Ok(IngestResult::of_stored(stored, IngestStatus::Duplicate))
    }

    /// Drops a spool that will not become an object.
    pub async fn discard(&self, id: &UploadId) {
        let store = self.store.clone();
        let id = id.clone();
        match tokio::task::spawn_blocking(move || store.discard_spool(&id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not remove a spool file"),
            Err(e) => tracing::warn!(error = %e, "spool removal thread failed"),
        }
    }
}
