//! The last step of every upload: from a finished spool and its hash to a
//! stored object, or to one more alias of an object already stored.
//!
//! Order matters for crash safety: probe, then rename the spool into place,
//! then record it. A crash before the record leaves an unreferenced file that
//! no API can see; a crash never leaves a record that points at half a file.

use super::UploadError;
use crate::domain::{ContentHash, ObjectKey, UploadId};
use crate::media::{MediaInfo, ProbeError, ProbeFile, Prober};
use crate::storage::{NewVideo, Repository, SessionRecord, SessionState, Store};
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
    /// Limits the probes run while uploads arrive.
    pub(crate) early_probes: super::early_probe::ProbeSlots,
}

impl Committer {
    /// Commits the spool of `session`, whose bytes hash to `hash`.
    #[tracing::instrument(skip_all, fields(upload_id = %session.id, hash = %hash))]
    pub async fn commit(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        size: u64,
        early: Option<Result<MediaInfo, ProbeError>>,
    ) -> Result<IngestResult, UploadError> {
        let id = &session.id;
        if let Some(stored) = self.repo.find_video(&hash).await? {
            self.discard(id).await;
            return self.duplicate_of(&stored, session).await;
        }

        // The probe that ran while the bytes arrived saw exactly these bytes;
        // without its answer (no slot, failed, too slow), probe the file.
        let media = match early {
            Some(Ok(media)) => {
                self.metrics.probes.with_label_values(&["stream"]).inc();
                media
            }
            _ => {
                self.metrics.probes.with_label_values(&["file"]).inc();
                match self.prober.send(ProbeFile(self.store.spool_path(id))).await? {
                    Ok(media) => media,
                    Err(ProbeError::NotAVideo(why)) => {
                        self.discard(id).await;
                        return Err(UploadError::NotAVideo(why));
                    }
                }
            }
        };

        let key = ObjectKey::new(&session.bucket, &session.prefix, &hash, media.ext);
        self.repo.begin_commit(id, &hash, &key).await?;
        let store = self.store.clone();
        let (commit_id, commit_key) = (id.clone(), key.clone());
        let renamed = tokio::task::spawn_blocking(move || store.commit(&commit_id, &commit_key))
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))
            .and_then(|r| r.map_err(UploadError::Io));
        if let Err(e) = renamed {
            // The spool is where it was: the session can take a retry.
            self.repo.reopen_session(id).await?;
            return Err(e);
        }
        self.record(session, hash, size, media, key).await.map_err(|e| UploadError::CommitInterrupted(e.to_string()))
    }

    /// With the object in place: records it, or settles as a duplicate if
    /// another upload of the same bytes was recorded first.
    async fn record(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        size: u64,
        media: crate::media::MediaInfo,
        key: ObjectKey,
    ) -> Result<IngestResult, UploadError> {
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
            self.delete_object(key).await;
        }
        self.duplicate_of(&stored, session).await
    }

    /// At start-up, before any upload is served: finishes every commit that a
    /// crash interrupted between `begin_commit` and the session's close.
    pub async fn recover_interrupted(&self) -> Result<(), UploadError> {
        for session in self.repo.sessions_in(SessionState::Committing).await? {
            let id = session.id.clone();
            let outcome = match session.commit.clone() {
                Some((hash, key)) => self.finish_interrupted(&session, hash, key).await,
                None => self.repo.reopen_session(&id).await.map(|()| None).map_err(UploadError::from),
            };
            match outcome {
                Ok(Some(result)) => {
                    tracing::info!(upload_id = %id, hash = %result.hash, "finished an interrupted commit");
                    let json = serde_json::to_value(&result).ok();
                    self.repo.close_session(&id, SessionState::Complete, json.as_ref(), None).await?;
                }
                Ok(None) => {}
                Err(UploadError::NotAVideo(why)) => {
                    self.repo.close_session(&id, SessionState::Failed, None, Some(&why)).await?;
                }
                Err(e) => tracing::error!(upload_id = %id, error = %e, "could not finish an interrupted commit"),
            }
        }
        Ok(())
    }

    async fn finish_interrupted(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        key: ObjectKey,
    ) -> Result<Option<IngestResult>, UploadError> {
        let id = session.id.clone();
        if let Some(stored) = self.repo.find_video(&hash).await? {
            // Recorded already, by this upload (the crash came after the
            // insert) or by another one.
            self.discard(&id).await;
            if stored.file_path == key.as_str() {
                if let Some(url) = &session.url {
                    self.repo.add_alias(url, &hash).await?;
                }
                return Ok(Some(IngestResult::of_stored(&stored, IngestStatus::New)));
            }
            self.delete_object(key).await;
            return self.duplicate_of(&stored, session).await.map(Some);
        }
        let store = self.store.clone();
        let (spool, object) = {
            let (id, key) = (id.clone(), key.clone());
            tokio::task::spawn_blocking(move || {
                (
                    store.spool_path(&id).exists(),
                    store.open_object(&key).ok().map(|(_, len)| (len, store.object_path(&key))),
                )
            })
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))?
        };
        match (spool, object) {
            // The crash came before the rename: the upload is still whole in its spool.
            (true, _) => {
                self.repo.reopen_session(&id).await?;
                Ok(None)
            }
            // Renamed but not recorded: probe what is there and record it.
            (false, Some((size, path))) => match self.prober.send(ProbeFile(path)).await? {
                Ok(media) => self.record(session, hash, size, media, key).await.map(Some),
                Err(ProbeError::NotAVideo(why)) => {
                    self.delete_object(key).await;
                    Err(UploadError::NotAVideo(why))
                }
            },
            (false, None) => {
                self.repo.close_session(&id, SessionState::Expired, None, Some("lost during commit")).await?;
                Ok(None)
            }
        }
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

    async fn delete_object(&self, key: ObjectKey) {
        let store = self.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.delete_object(&key)).await {
            tracing::warn!(error = %e, "could not remove an orphan object");
        }
    }

    /// Drops the separate pieces of a committed upload.
    pub async fn discard_pieces(&self, id: &UploadId) {
        let store = self.store.clone();
        let id = id.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.discard_pieces(&id)).await {
            tracing::warn!(error = %e, "could not remove the pieces of an upload");
        }
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
