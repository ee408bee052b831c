//! The last step of every upload: from a finished spool and its hash to a
//! stored object, or to one more alias of an object already stored.
//!
//! Order matters for crash safety: probe, then rename the spool into place,
//! then record it. A crash before the record leaves an unreferenced file that
//! no API can see; a crash never leaves a record that points at half a file.

use super::UploadError;
use crate::config::NearDuplicatePolicy;
use crate::dedup::NearDuplicates;
use crate::domain::{ContentHash, ObjectKey, UploadId};
use crate::media::{Analysis, AnalyzeFile, MediaInfo, ProbeError, Prober};
use crate::storage::{NewVideo, Repository, SessionRecord, SessionState, Signature, Store};
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
    /// With `dedup.near_duplicate = "keep"`: the stored video this new one
    /// near-duplicates (`phash_distance` says how near).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near_duplicate_of: Option<String>,
}

impl IngestResult {
    /// The answer about a stored video; a duplicate of it at `distance`
    /// (0: the same bytes).
    pub fn of_stored(row: &crate::storage::entities::video::Model, status: IngestStatus, distance: u32) -> Self {
        Self {
            hash: row.hash.clone(),
            status,
            file_path: row.file_path.clone(),
            size_bytes: row.size_bytes as u64,
            duration_s: row.duration_s,
            phash_distance: (status == IngestStatus::Duplicate).then_some(distance),
            near_duplicate_of: None,
        }
    }
}

/// What the analysis of a committed upload found.
struct Found {
    media: MediaInfo,
    signature: Option<Signature>,
    near_duplicate_of: Option<(ContentHash, u32)>,
}

#[derive(Clone)]
pub struct Committer {
    pub(crate) repo: Repository,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) prober: Addr<Prober>,
    pub(crate) metrics: Metrics,
    /// Limits the probes run while uploads arrive.
    pub(crate) early_probes: super::early_probe::ProbeSlots,
    pub(crate) near: Arc<NearDuplicates>,
    /// `upload.completed` and `video.duplicate` go here.
    pub(crate) events: crate::queue::EventBus,
    /// When set, each new video is stored with this transcode job
    /// (`transcode.on_upload`).
    pub(crate) transcode: Option<Arc<crate::config::TranscodeSettings>>,
    /// Notified after a new video's job is stored.
    pub(crate) job_queued: Arc<tokio::sync::Notify>,
}

fn utc(t: Option<std::time::SystemTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.map(chrono::DateTime::<chrono::Utc>::from)
}

/// What of an analysis is kept with the video.
fn signature_of(analysis: &Analysis) -> Signature {
    Signature {
        duration_ms: analysis.media.duration_s.map(|d| (d * 1000.0) as u64).unwrap_or(0),
        samples: analysis.samples.iter().map(|s| (s.pts_ms, s.hash, s.keyframe)).collect(),
        keyframes_ms: analysis.keyframes_ms.clone(),
        frames_decoded: analysis.frames_decoded,
        packets_skipped: analysis.packets_skipped,
        first_byte_at: utc(analysis.first_byte_at),
        first_hash_at: utc(analysis.first_hash_at),
        bytes_complete_at: utc(analysis.bytes_complete_at),
        analysed_at: utc(Some(analysis.finished_at)).unwrap_or_else(chrono::Utc::now),
        partial: analysis.partial,
    }
}

fn refused(e: ProbeError) -> UploadError {
    match e {
        ProbeError::NotAVideo(why) => UploadError::NotAVideo(why),
        ProbeError::Corrupt(why) => UploadError::CorruptVideo(why),
    }
}

impl Committer {
    /// Commits the spool of `session`, whose bytes hash to `hash`.
    #[tracing::instrument(skip_all, fields(upload_id = %session.id, hash = %hash))]
    pub async fn commit(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        size: u64,
        early: Option<Result<Analysis, ProbeError>>,
        refined: Option<super::early_probe::Refined>,
    ) -> Result<IngestResult, UploadError> {
        let result = self.commit_once(session, hash, size, early, refined).await;
        if let Ok(result) = &result {
            self.announce(session, result);
        }
        result
    }

    /// `upload.completed` for a new video, `video.duplicate` otherwise,
    /// with the client's `meta.request_id` when there is one (the Kafka
    /// ingest consumer puts its request's id there).
    fn announce(&self, session: &SessionRecord, result: &IngestResult) {
        let kind = match result.status {
            IngestStatus::New => "upload.completed",
            IngestStatus::Duplicate | IngestStatus::UrlAlias => "video.duplicate",
        };
        let mut fields = serde_json::to_value(result).unwrap_or_default();
        if let (Some(fields), Some(request_id)) = (fields.as_object_mut(), session.meta.get("request_id")) {
            fields.insert("request_id".into(), request_id.clone());
        }
        if let Some(fields) = fields.as_object_mut() {
            fields.insert("upload_id".into(), session.id.as_str().into());
        }
        self.events.publish(crate::queue::Event::new(kind, &result.hash, fields));
    }

    async fn commit_once(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        size: u64,
        early: Option<Result<Analysis, ProbeError>>,
        refined: Option<super::early_probe::Refined>,
    ) -> Result<IngestResult, UploadError> {
        // Every answer but `New` leaves the spool (and any parts) where they
        // are: the session closes with the answer first, and only then are
        // they removed (`UploadSession::finish`). Killed in between, the
        // upload is still whole and a retry, or start-up, answers the same.
        let id = &session.id;
        if let Some(stored) = self.repo.find_video(&hash).await? {
            return self.duplicate_of(&stored, session, 0).await;
        }

        // The analysis that ran while the bytes arrived saw exactly these
        // bytes; without its answer (no slot, failed, too slow), analyse the file.
        let analysis = match early {
            Some(Ok(analysis)) => {
                self.metrics.probes.with_label_values(&["stream"]).inc();
                analysis
            }
            _ => {
                self.metrics.probes.with_label_values(&["file"]).inc();
                match self.prober.send(AnalyzeFile(self.store.spool_path(id))).await? {
                    Ok(analysis) => analysis,
                    Err(e) => return Err(refused(e)),
                }
            }
        };
        tracing::debug!(
            samples = analysis.samples.len(),
            frames_decoded = analysis.frames_decoded,
            packets_skipped = analysis.packets_skipped,
            partial = analysis.partial,
            "analysed"
        );
        if analysis.handed_over {
            self.metrics.analyses_handed_over.inc();
            tracing::info!(samples = analysis.samples.len(), "finalize goes on a partial analysis");
        }
        // No samples (analysis disabled): nothing to compare or keep.
        let signature = (!analysis.samples.is_empty()).then(|| signature_of(&analysis));
        let near = match signature.clone() {
            Some(signature) => {
                let index = self.near.clone();
                tokio::task::spawn_blocking(move || index.find(&signature))
                    .await
                    .map_err(|e| UploadError::Internal(e.to_string()))?
            }
            None => None,
        };
        let mut near_duplicate_of = None;
        if let Some(found) = near {
            tracing::info!(near = %found.video, distance = found.distance, share = found.share, "near-duplicate");
            self.metrics.near_duplicates.inc();
            if self.near.policy == NearDuplicatePolicy::Merge
                && let Some(stored) = self.repo.find_video(&found.video).await?
            {
                return self.duplicate_of(&stored, session, found.distance).await;
            }
            near_duplicate_of = Some((found.video, found.distance));
        }

        let key = ObjectKey::new(&session.bucket, &session.prefix, &hash, analysis.media.ext);
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
        let thumbnail = analysis.thumbnail;
        let found = Found { media: analysis.media, signature, near_duplicate_of };
        let result = self
            .record(session, hash, size, found, key)
            .await
            .map_err(|e| UploadError::CommitInterrupted(e.to_string()))?;
        if let (IngestStatus::New, Some(jpeg)) = (result.status, thumbnail) {
            let store = self.store.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || store.put_derived(&hash, "thumbnail.jpg", &jpeg)).await
            {
                tracing::warn!(error = %e, "could not keep the thumbnail");
            }
        }
        if let (IngestStatus::New, Some(refined)) = (result.status, refined) {
            let this = self.clone();
            actix::spawn(async move { this.refine(hash, refined).await });
        }
        Ok(result)
    }

    /// The complete analysis of a video stored on a partial one, when it
    /// comes: its signature replaces the partial one, in the database and
    /// in the index. (A sender dropped without sending means there is none.)
    async fn refine(&self, hash: ContentHash, refined: super::early_probe::Refined) {
        match refined.await {
            Ok(Ok(analysis)) if !analysis.samples.is_empty() => {
                // Deleted meanwhile: nothing to complete.
                if !matches!(self.repo.find_video(&hash).await, Ok(Some(_))) {
                    return;
                }
                let signature = signature_of(&analysis);
                match self.repo.put_signature(&hash, &signature).await {
                    Ok(()) => {
                        let samples = signature.samples.len();
                        self.near.replace_blocking(hash, signature).await;
                        tracing::info!(%hash, samples, "signature completed after the upload");
                    }
                    Err(e) => tracing::warn!(%hash, error = %e, "could not keep the completed signature"),
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                // Stored on its first part, which decoded; the rest did not.
                self.metrics.damaged_after_commit.inc();
                tracing::warn!(%hash, error = %e, "a stored video turned out damaged past the part analysed at finalize");
            }
        }
    }

    /// With the object in place: records it, or settles as a duplicate if
    /// another upload of the same bytes was recorded first.
    async fn record(
        &self,
        session: &SessionRecord,
        hash: ContentHash,
        size: u64,
        found: Found,
        key: ObjectKey,
    ) -> Result<IngestResult, UploadError> {
        let new = NewVideo {
            hash,
            size_bytes: size,
            media: found.media,
            bucket: session.bucket.clone(),
            prefix: session.prefix.clone(),
            file_path: key.as_str().to_owned(),
            meta: session.meta.clone(),
            signature: found.signature,
            near_duplicate_of: found.near_duplicate_of,
            transcode_job: self.transcode.as_ref().map(|settings| {
                (
                    crate::queue::TRANSCODE_TOPIC.to_owned(),
                    crate::queue::TranscodeJob::new(&hash.to_hex(), settings).to_json(),
                )
            }),
        };
        if self.repo.insert_video(&new, session.url.as_ref()).await? {
            if new.transcode_job.is_some() {
                self.job_queued.notify_one();
            }
            if let Some(signature) = &new.signature {
                self.near.add_blocking(hash, signature.clone()).await;
            }
            return Ok(IngestResult {
                hash: hash.to_hex(),
                status: IngestStatus::New,
                file_path: new.file_path,
                size_bytes: size,
                duration_s: new.media.duration_s,
                phash_distance: new.near_duplicate_of.map(|(_, d)| d),
                near_duplicate_of: new.near_duplicate_of.map(|(h, _)| h.to_hex()),
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
        self.duplicate_of(&stored, session, 0).await
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
                    // Closed: its spool (if the crash came before the
                    // rename) and its multipart parts are not needed again.
                    self.discard(&id).await;
                }
                Ok(None) => {}
                Err(e @ (UploadError::NotAVideo(_) | UploadError::CorruptVideo(_))) => {
                    self.repo.close_session(&id, SessionState::Failed, None, Some(&e.to_string())).await?;
                    self.discard(&id).await;
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
            // insert) or by another one. (Its spool and parts go once the
            // session is closed, in `recover_interrupted`.)
            if stored.file_path == key.as_str() {
                if let Some(url) = &session.url {
                    self.repo.add_alias(url, &hash).await?;
                }
                return Ok(Some(IngestResult::of_stored(&stored, IngestStatus::New, 0)));
            }
            self.delete_object(key).await;
            return self.duplicate_of(&stored, session, 0).await.map(Some);
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
            // Renamed but not recorded: analyse what is there and record it.
            (false, Some((size, path))) => match self.prober.send(AnalyzeFile(path)).await? {
                Ok(analysis) => {
                    let signature = (!analysis.samples.is_empty()).then(|| signature_of(&analysis));
                    let found = Found { media: analysis.media, signature, near_duplicate_of: None };
                    self.record(session, hash, size, found, key).await.map(Some)
                }
                Err(e) => {
                    self.delete_object(key).await;
                    Err(refused(e))
                }
            },
            (false, None) => {
                self.repo.close_session(&id, SessionState::Expired, None, Some("lost during commit")).await?;
                Ok(None)
            }
        }
    }

    /// Settles an upload as a duplicate of `stored`, `distance` away (0:
    /// the same bytes); its URL becomes one more alias.
    async fn duplicate_of(
        &self,
        stored: &crate::storage::entities::video::Model,
        session: &SessionRecord,
        distance: u32,
    ) -> Result<IngestResult, UploadError> {
        if let (Some(url), Ok(hash)) = (&session.url, ContentHash::parse(&stored.hash)) {
            self.repo.add_alias(url, &hash).await?;
        }
        self.metrics.duplicates.inc();
        Ok(IngestResult::of_stored(stored, IngestStatus::Duplicate, distance))
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
