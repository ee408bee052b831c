//! The last step of every upload: from a finished spool and its hash to a
//! stored object, or to one more alias of an object already stored.
//!
//! Order matters for crash safety: probe, then rename the spool into place,
//! then record it. A crash before the record leaves an unreferenced file that
//! no API can see; a crash never leaves a record that points at half a file.

use super::UploadError;
use crate::config::NearDuplicatePolicy;
use crate::dedup::{NearDuplicates, PerceptualMatch};
use crate::domain::{ContentHash, ObjectKey, UploadId};
use crate::media::{Analysis, AnalyzeFile, MediaInfo, ProbeError, Prober};
use crate::storage::{NewVideo, RepoError, Repository, SessionRecord, SessionState, Signature, Store, Video};
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
    /// A duplicate: `exact` (the same bytes) or `perceptual` (the same video
    /// by its pictures and sound; the upload's bytes are kept as `variant`).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_kind: Option<MatchKind>,
    /// A perceptual duplicate: the hash the upload's own bytes are kept
    /// under (`GET /video/{variant}` reads them back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    Exact,
    Perceptual,
}

impl IngestResult {
    /// The answer about a stored video: new, an alias, or an exact duplicate
    /// of it. A variant's row stands for the video it was merged into.
    pub fn of_stored(row: &Video, status: IngestStatus) -> Self {
        let duplicate = status == IngestStatus::Duplicate;
        Self {
            hash: row.hash.to_hex(),
            status,
            file_path: row.file_path.clone(),
            size_bytes: row.size_bytes,
            duration_s: row.duration_s,
            phash_distance: duplicate.then_some(0),
            near_duplicate_of: None,
            match_kind: duplicate.then_some(MatchKind::Exact),
            variant: None,
        }
    }

    /// The answer for bytes kept as `variant` of the stored video `stored`.
    pub fn of_variant(stored: &Video, variant: &str, distance: u32) -> Self {
        Self {
            phash_distance: Some(distance),
            match_kind: Some(MatchKind::Perceptual),
            variant: Some(variant.to_owned()),
            ..Self::of_stored(stored, IngestStatus::Duplicate)
        }
    }
}

/// What a perceptual match makes of an upload.
#[derive(Debug, Clone)]
enum Matched {
    /// Nothing near: a new video.
    Nothing,
    /// `dedup.near_duplicate = "keep"`: a new video, marked as near that one.
    Kept(PerceptualMatch),
    /// `"merge"`: kept as a variant of that one, answered as its duplicate.
    Variant(PerceptualMatch),
}

/// What the analysis of a committed upload found.
struct Found {
    media: MediaInfo,
    signature: Option<Signature>,
    matched: Matched,
}

/// How a commit ended. Every way it can end is one variant, and the session
/// maps each to its end in one exhaustive `match` (`Outcome::end`), so a new
/// outcome cannot be added without deciding what it leaves behind.
#[derive(Debug)]
pub enum Outcome {
    /// The bytes became a new object (`status: new`, perhaps marked near
    /// another video under `dedup.near_duplicate = "keep"`).
    Stored(IngestResult),
    /// The same bytes were stored already: the spool is surplus.
    Duplicate(IngestResult),
    /// A perceptual match under `merge`: the bytes became an object of their
    /// own, kept as a variant, answered as a duplicate of the stored video.
    Variant(IngestResult),
    /// Not a video, or a damaged one: the upload fails for good.
    Refused(UploadError),
    /// The spool became the object, but its record could not be written:
    /// start-up recovery writes it (the session stays `committing`).
    Interrupted(String),
    /// Failed before anything irreversible (database, disk, a lost actor):
    /// the spool is intact and the upload can be finalized again.
    Retryable(UploadError),
}

/// What a session becomes after an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Closed in this state; then its spool and parts are removed.
    Closed(SessionState),
    /// Left `committing` for start-up recovery; nothing is removed.
    Committing,
    /// Still receiving: a retry finalizes again from the same bytes.
    Open,
}

impl Outcome {
    /// Sorts what `commit_once` answered. The error variants that are
    /// outcomes are matched by name; every other error happened before the
    /// rename (its only irreversible step), so it is retryable.
    fn of(result: Result<IngestResult, UploadError>) -> Self {
        match result {
            Ok(r) if r.status == IngestStatus::New => Self::Stored(r),
            Ok(r) if r.variant.is_some() => Self::Variant(r),
            Ok(r) => Self::Duplicate(r),
            Err(e @ (UploadError::NotAVideo(_) | UploadError::CorruptVideo(_))) => Self::Refused(e),
            Err(UploadError::CommitInterrupted(why)) => Self::Interrupted(why),
            Err(e) => Self::Retryable(e),
        }
    }

    pub fn end(&self) -> End {
        match self {
            Self::Stored(_) | Self::Duplicate(_) | Self::Variant(_) => End::Closed(SessionState::Complete),
            Self::Refused(_) => End::Closed(SessionState::Failed),
            Self::Interrupted(_) => End::Committing,
            Self::Retryable(_) => End::Open,
        }
    }

    /// The ingest result, for outcomes that have one.
    pub fn result(&self) -> Option<&IngestResult> {
        match self {
            Self::Stored(r) | Self::Duplicate(r) | Self::Variant(r) => Some(r),
            Self::Refused(_) | Self::Interrupted(_) | Self::Retryable(_) => None,
        }
    }

    /// What the client is answered.
    pub fn into_answer(self) -> Result<IngestResult, UploadError> {
        match self {
            Self::Stored(r) | Self::Duplicate(r) | Self::Variant(r) => Ok(r),
            Self::Refused(e) | Self::Retryable(e) => Err(e),
            Self::Interrupted(why) => Err(UploadError::CommitInterrupted(why)),
        }
    }
}

/// Where the bytes being committed are, besides this daemon's spool.
#[derive(Debug, Clone)]
pub enum Source {
    /// Only there: the object is made from the spool.
    Spool,
    /// Also as the pieces of a shared upload in the bucket, in this order:
    /// the store may keep the object as them, where they are.
    Pieces(Vec<crate::storage::PieceAt>),
}

#[derive(Clone)]
pub struct Committer {
    pub(crate) repo: Repository,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) prober: Addr<Prober>,
    pub(crate) metrics: Metrics,
    /// Limits the probes run while uploads arrive.
    pub(crate) early_probes: super::early_probe::ProbeSlots,
    /// What this daemon keeps of the shared uploads whose pieces it took.
    pub(crate) local_copies: super::local_copy::LocalCopies,
    pub(crate) near: Arc<NearDuplicates>,
    /// `upload.completed` and `video.duplicate` go here.
    pub(crate) events: crate::queue::EventBus,
    /// When set, each new video is stored with this transcode job
    /// (`transcode.on_upload`).
    pub(crate) transcode: Option<Arc<crate::config::TranscodeSettings>>,
    /// Notified after a new video's job is stored.
    pub(crate) job_queued: Arc<tokio::sync::Notify>,
    /// How long committing a new video takes lately (section 8: a "new to
    /// you" answer waits as long, so its time does not tell).
    pub(crate) commit_time: CommitTime,
}

/// A moving mean of the time from the start of a new video's commit to its
/// answer. A project's upload of bytes another project holds is answered
/// `new` after the same time, so the answer's timing does not say that the
/// bytes were known.
#[derive(Clone, Default)]
pub struct CommitTime(Arc<std::sync::Mutex<Option<std::time::Duration>>>);

impl CommitTime {
    /// Before any new video was committed: a guess of the same order.
    const FIRST: std::time::Duration = std::time::Duration::from_millis(100);

    fn record(&self, took: std::time::Duration) {
        let mut mean = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Each new commit counts for a quarter: recent disks and loads win.
        *mean = Some(match *mean {
            None => took,
            Some(mean) => (mean * 3 + took) / 4,
        });
    }

    fn current(&self) -> std::time::Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or(Self::FIRST)
    }
}

fn utc(t: Option<std::time::SystemTime>) -> Option<chrono::DateTime<chrono::Utc>> {
    t.map(chrono::DateTime::<chrono::Utc>::from)
}

/// What of an analysis is kept with the video.
fn signature_of(analysis: &Analysis) -> Signature {
    Signature {
        duration_ms: analysis.media.duration_s.map(|d| (d * 1000.0) as u64).unwrap_or(0),
        samples: analysis.samples.clone(),
        audio: analysis.audio.clone(),
        keyframes_ms: analysis.keyframes_ms.clone(),
        frames_decoded: analysis.frames_decoded,
        packets_skipped: analysis.packets_skipped,
        first_byte_at: utc(analysis.first_byte_at),
        first_hash_at: utc(analysis.first_hash_at),
        bytes_complete_at: utc(analysis.bytes_complete_at),
        analysed_at: utc(Some(analysis.finished_at)).unwrap_or_else(chrono::Utc::now),
        partial: analysis.partial,
        pending: analysis.handed_over,
    }
}

/// The frame distance a stored variant was matched at.
fn distance_of(variant: &Video) -> u32 {
    variant.match_info.as_ref().map_or(0, |m| m.distance)
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
        source: Source,
    ) -> Outcome {
        let outcome = Outcome::of(self.commit_once(session, hash, size, early, refined, source).await);
        if let Some(result) = outcome.result() {
            self.announce(session, result);
            // A job stored with a new video (or a project's claim) is
            // signalled only now, so that an idle worker's
            // `transcode.started` follows the answer's `upload.completed`.
            if result.status == IngestStatus::New && self.transcode.is_some() {
                self.job_queued.notify_one();
            }
        }
        outcome
    }

    /// Closes `session` as `outcome` says: with its answer (or its reason)
    /// first; the spool (unless it became the object) and the parts go only
    /// after that, so a kill before the close finds the upload whole, and
    /// one after it finds the answer. Outcomes that leave the session open
    /// or committing change nothing.
    pub async fn settle(&self, session: &SessionRecord, outcome: &Outcome) -> Result<(), RepoError> {
        let closed = match (outcome.end(), outcome) {
            (End::Closed(state), Outcome::Refused(why)) => {
                self.repo.close_session(&session.id, state, None, Some(&why.to_string())).await
            }
            (End::Closed(state), outcome) => {
                let json = outcome.result().and_then(|r| serde_json::to_value(r).ok());
                self.repo.close_session(&session.id, state, json.as_ref(), None).await
            }
            (End::Committing | End::Open, _) => return Ok(()),
        };
        if closed.is_ok() {
            self.discard(&session.id).await;
        }
        closed
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
            fields.insert("project".into(), session.project.clone().into());
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
        source: Source,
    ) -> Result<IngestResult, UploadError> {
        // Every answer but `New` leaves the spool (and any parts) where they
        // are: the session closes with the answer first, and only then are
        // they removed (`UploadSession::finish`). Killed in between, the
        // upload is still whole and a retry, or start-up, answers the same.
        let id = &session.id;
        let started = std::time::Instant::now();
        if let Some(stored) = self.repo.find_video(&hash).await? {
            // To a project that does not hold it, this is answered as a new
            // video: analysed from the file when no analysis ran while the
            // bytes arrived, as a new video is, and answered after as long as
            // a new video's commit takes lately (`CommitTime`; BENCHMARKS.md,
            // "Does the time of an answer tell").
            if early.is_none() && !self.repo.holds(&session.project, &stored.hash).await? {
                let _ = self.prober.send(AnalyzeFile(self.store.spool_path(id))).await;
            }
            return self.duplicate_of(&stored, session, started).await;
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
        // No samples (analysis disabled): nothing to compare or keep. A
        // partial analysis handed over is kept even with no sample yet
        // (finalize outran the decoder), marked pending: if a kill stops the
        // background pass, start-up completes it; without a row it would
        // never be analysed again and its copies never found.
        let signature = (!analysis.samples.is_empty() || analysis.handed_over).then(|| signature_of(&analysis));
        // A perceptual match never discards the upload: its bytes are
        // committed like a new video's, as a variant or marked as near.
        let matched = self.decide(signature.as_ref(), &session.project).await?;

        let key = ObjectKey::new(&session.bucket, &session.prefix, &hash, analysis.media.ext);
        self.repo.begin_commit(id, &hash, &key).await?;
        let store = self.store.clone();
        let (commit_id, commit_key) = (id.clone(), key.clone());
        let renamed = tokio::task::spawn_blocking(move || match source {
            Source::Spool => store.commit(&commit_id, &commit_key).map(|()| false),
            Source::Pieces(pieces) => store.commit_pieces(&commit_id, &commit_key, &pieces),
        })
        .await
        .map_err(|e| UploadError::Internal(e.to_string()))
        .and_then(|r| r.map_err(UploadError::Io))
        .map(|laid_out| {
            if laid_out {
                self.metrics.objects_laid_out.inc();
            }
        });
        if let Err(e) = renamed {
            // The spool is where it was: the session can take a retry.
            self.repo.reopen_session(id).await?;
            return Err(e);
        }
        let thumbnail = analysis.thumbnail;
        let found = Found { media: analysis.media, signature, matched };
        let result = self
            .record(session, hash, size, found, key)
            .await
            .map_err(|e| UploadError::CommitInterrupted(e.to_string()))?;
        // This upload's bytes became an object (a new video or a variant).
        let stored_here = result.status == IngestStatus::New || result.variant == Some(hash.to_hex());
        if let (true, Some(jpeg)) = (stored_here, thumbnail) {
            let store = self.store.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || store.put_derived(&hash, "thumbnail.jpg", &jpeg)).await
            {
                tracing::warn!(error = %e, "could not keep the thumbnail");
            }
        }
        if let (true, Some(refined)) = (stored_here, refined) {
            let this = self.clone();
            actix::spawn(async move { this.refine(hash, refined).await });
        }
        if result.status == IngestStatus::New {
            self.commit_time.record(started.elapsed());
        }
        Ok(result)
    }

    /// Whether `signature` matches a stored video, and what that makes of
    /// the upload under the policy.
    /// Only videos `project` holds can match: the near-duplicate index is
    /// per project (section 8).
    async fn decide(&self, signature: Option<&Signature>, project: &str) -> Result<Matched, UploadError> {
        let Some(signature) = signature else { return Ok(Matched::Nothing) };
        let lookup = self.near.find(signature, &self.repo).await?;
        self.metrics.audio_vetoes.inc_by(lookup.vetoed);
        self.metrics.tone_vetoes.inc_by(lookup.tone_vetoed);
        let Some(found) = lookup.found else { return Ok(Matched::Nothing) };
        match ContentHash::parse(&found.video) {
            Ok(video) if self.repo.holds(project, &video).await? => {}
            _ => return Ok(Matched::Nothing),
        }
        tracing::info!(
            near = %found.video,
            distance = found.distance,
            share = found.share,
            audio = %found.audio,
            "near-duplicate"
        );
        self.metrics.near_duplicates.inc();
        Ok(match self.near.policy {
            NearDuplicatePolicy::Merge => Matched::Variant(found),
            NearDuplicatePolicy::Keep | NearDuplicatePolicy::Off => Matched::Kept(found),
        })
    }

    /// The complete analysis of a video stored on a partial one, when it
    /// comes: its signature replaces the partial one, in the database and
    /// in the index. (A sender dropped without sending means there is none.)
    async fn refine(&self, hash: ContentHash, refined: super::early_probe::Refined) {
        match refined.await {
            // Kept even without samples: it is complete, no longer pending.
            Ok(Ok(analysis)) => {
                // Deleted meanwhile: nothing to complete.
                let Ok(Some(row)) = self.repo.find_video(&hash).await else { return };
                let signature = signature_of(&analysis);
                match self.repo.put_signature(&hash, &signature).await {
                    Ok(()) => {
                        let samples = signature.samples.len();
                        // A variant is not in the index (unmerge puts it there).
                        if row.variant_of.is_none() {
                            self.near.replace_blocking(hash, signature).await;
                        }
                        tracing::info!(%hash, samples, "signature completed after the upload");
                    }
                    Err(e) => tracing::warn!(%hash, error = %e, "could not keep the completed signature"),
                }
            }
            Err(_) => {}
            Ok(Err(e)) => {
                // Stored on its first part, which decoded; the rest did not.
                self.metrics.damaged_after_commit.inc();
                tracing::warn!(%hash, error = %e, "a stored video turned out damaged past the part analysed at finalize");
            }
        }
    }

    /// At start-up, in the background: analyses again every stored video
    /// whose signature is still the partial one finalize had (the daemon
    /// died before the background pass completed it), so that its copies
    /// are found as they would have been.
    pub async fn complete_pending_signatures(&self) {
        let pending = match self.repo.pending_signatures().await {
            Ok(pending) => pending,
            Err(e) => return tracing::warn!(error = %e, "could not list partial signatures"),
        };
        for hash in pending {
            let Ok(Some(row)) = self.repo.find_video(&hash).await else { continue };
            let Ok(key) = ObjectKey::from_stored(&row.file_path) else { continue };
            let store = self.store.clone();
            let Ok(Ok(path)) = tokio::task::spawn_blocking(move || store.fetch_object(&key)).await else { continue };
            let analysed = match self.prober.send(AnalyzeFile(path)).await {
                Ok(analysed) => analysed,
                Err(e) => return tracing::warn!(error = %e, "the prober is gone"),
            };
            let (tx, refined) = tokio::sync::oneshot::channel();
            let _ = tx.send(analysed);
            self.refine(hash, refined).await;
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
        let (variant_of, near_duplicate_of, match_info) = match found.matched {
            Matched::Nothing => (None, None, None),
            Matched::Kept(m) => (None, ContentHash::parse(&m.video).ok().map(|h| (h, m.distance)), Some(m)),
            Matched::Variant(m) => (ContentHash::parse(&m.video).ok(), None, Some(m)),
        };
        let new = NewVideo {
            hash,
            size_bytes: size,
            media: found.media,
            bucket: session.bucket.clone(),
            prefix: session.prefix.clone(),
            file_path: key.as_str().to_owned(),
            meta: session.meta.clone(),
            signature: found.signature,
            near_duplicate_of,
            variant_of,
            match_info,
            // A variant is not transcoded: the video it was merged into is.
            transcode_job: self.transcode_job(&hash).filter(|_| variant_of.is_none()),
            project: session.project.clone(),
            public: session.public,
        };
        if self.repo.insert_video(&new, session.url.as_ref()).await? {
            if let Some(stored) = new.variant_of {
                return self.settle_variant(hash, stored, &new).await;
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
                match_kind: None,
                variant: None,
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
        self.duplicate_of(&stored, session, std::time::Instant::now()).await
    }

    /// A variant is recorded: the answer is about the video it was merged
    /// into. If that video was deleted between the decision and the record,
    /// the variant is made its own video (nothing is lost either way).
    async fn settle_variant(
        &self,
        hash: ContentHash,
        stored: ContentHash,
        new: &NewVideo,
    ) -> Result<IngestResult, UploadError> {
        let distance = new.match_info.as_ref().map_or(0, |m| m.distance);
        if let Some(row) = self.repo.find_video(&stored).await? {
            self.metrics.perceptual_merges.inc();
            self.metrics.duplicates.inc();
            return self.as_seen_by(IngestResult::of_variant(&row, &hash.to_hex(), distance), &new.project).await;
        }
        let job = self.transcode_job(&hash);
        let own = self.repo.unmerge(&hash, job.as_ref().map(|(t, p)| (t.as_str(), p))).await?;
        if let Some(signature) = &new.signature {
            self.near.add_blocking(hash, signature.clone()).await;
        }
        let own = own.ok_or_else(|| UploadError::Internal("a variant vanished as it was recorded".into()))?;
        Ok(IngestResult::of_stored(&own, IngestStatus::New))
    }

    /// The transcode job a new video gets, if `transcode.on_upload` is set.
    fn transcode_job(&self, hash: &ContentHash) -> Option<(String, serde_json::Value)> {
        self.transcode.as_ref().map(|settings| {
            (
                crate::queue::TRANSCODE_TOPIC.to_owned(),
                crate::queue::TranscodeJob::new(&hash.to_hex(), settings).to_json(),
            )
        })
    }

    /// At start-up, before any upload is served: finishes every commit that a
    /// crash interrupted between `begin_commit` and the session's close.
    pub async fn recover_interrupted(&self) -> Result<(), UploadError> {
        for session in self.repo.sessions_in(SessionState::Committing).await? {
            // A shared upload may be committing on another daemon right
            // now: only one whose finalize claim has run out is ours.
            let claim = super::shared::claim_token(std::time::Duration::from_secs(60));
            if session.staged.is_some() && self.repo.claim_finalize(&session.id, claim).await?.is_none() {
                continue;
            }
            if let Err(e) = self.recover_one(&session).await {
                tracing::error!(upload_id = %session.id, error = %e, "could not finish an interrupted commit");
            }
            if session.staged.is_some() {
                self.repo.release_claim(&session.id, claim).await?;
            }
        }
        Ok(())
    }

    /// Settles one commit a crash interrupted: closed with its answer
    /// (`Some`), or put back to receiving when its bytes were never
    /// committed (`None`), to be finalized again.
    pub async fn recover_one(&self, session: &SessionRecord) -> Result<Option<IngestResult>, UploadError> {
        let id = session.id.clone();
        let outcome = match session.commit.clone() {
            Some((hash, key)) => self.finish_interrupted(session, hash, key).await,
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
                Ok(Some(result))
            }
            Ok(None) => Ok(None),
            Err(e @ (UploadError::NotAVideo(_) | UploadError::CorruptVideo(_))) => {
                self.repo.close_session(&id, SessionState::Failed, None, Some(&e.to_string())).await?;
                self.discard(&id).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
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
            if stored.file_path == key.as_str() && self.repo.holds(&session.project, &hash).await? {
                // The insert wrote the alias in its transaction.
                return self.answer_for(&stored, IngestStatus::New).await.map(Some);
            }
            if stored.file_path != key.as_str() {
                self.delete_object(key).await;
            }
            return self.duplicate_of(&stored, session, std::time::Instant::now()).await.map(Some);
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
            // Renamed but not recorded: analyse what is there, decide again
            // (the same bytes give the same answer), and record it.
            (false, Some((size, path))) => match self.prober.send(AnalyzeFile(path)).await? {
                Ok(analysis) => {
                    let signature = (!analysis.samples.is_empty()).then(|| signature_of(&analysis));
                    let matched = self.decide(signature.as_ref(), &session.project).await?;
                    let found = Found { media: analysis.media, signature, matched };
                    self.record(session, hash, size, found, key).await.map(Some)
                }
                Err(e) => {
                    self.delete_object(key).await;
                    Err(refused(e))
                }
            },
            // A shared upload's bytes are still in the bucket (its parts, or
            // the object they were completed into): finalize it again.
            (false, None) if session.staged.is_some() => {
                self.repo.reopen_session(&id).await?;
                Ok(None)
            }
            (false, None) => {
                self.repo.close_session(&id, SessionState::Expired, None, Some("lost during commit")).await?;
                Ok(None)
            }
        }
    }

    /// Settles an upload whose bytes are stored already as `stored`; its
    /// URL becomes one more alias. Bytes stored as a variant stand for the
    /// video that variant was merged into.
    ///
    /// Projects are tenants (section 8): a project that did not hold these
    /// bytes is answered as for a new video of its own (`new`, at the path
    /// its upload asked for), and holds them from now on; nothing in the
    /// answer tells that another project holds them.
    async fn duplicate_of(
        &self,
        stored: &Video,
        session: &SessionRecord,
        started: std::time::Instant,
    ) -> Result<IngestResult, UploadError> {
        let ext = stored.file_path.rsplit_once('.').map_or("bin", |(_, e)| e);
        let ext = if ext.bytes().all(|b| b.is_ascii_alphanumeric()) { ext } else { "bin" };
        let own_path = ObjectKey::new(&session.bucket, &session.prefix, &stored.hash, ext);
        let view = crate::storage::Holding {
            bucket: session.bucket.as_str().to_owned(),
            prefix: session.prefix.as_str().to_owned(),
            file_path: own_path.as_str().to_owned(),
            meta: session.meta.clone(),
            since: chrono::Utc::now(),
            public: session.public,
            // Its transcode goes as a new video's would: its own job.
            transcode: self.transcode.is_some().then_some(crate::storage::TranscodeStatus::Queued),
            upload: Some(session.id.clone()),
        };
        let job = self.transcode.as_ref().map(|settings| {
            crate::queue::TranscodeJob::for_project(&stored.hash.to_hex(), &session.project, settings).to_json()
        });
        let job = job.as_ref().map(|payload| (crate::queue::TRANSCODE_TOPIC, payload));
        // As long as a new video's commit would take, before the claim (so
        // that the project's own transcode job, queued with it, starts after
        // the answer, as a new video's does).
        let held = self.repo.holding(&session.project, &stored.hash).await?;
        if held.is_none() {
            tokio::time::sleep(self.commit_time.current().saturating_sub(started.elapsed())).await;
        }
        let claimed = self.repo.hold(&stored.hash, &session.project, &view, job).await?;
        // Claimed by this very upload before a kill interrupted its commit:
        // answered as it would have been.
        let claimed = claimed || held.is_some_and(|held| held.upload.as_ref() == Some(&session.id));
        if claimed {
            if let Some(url) = &session.url {
                self.repo.add_alias(url, &stored.hash, &session.project).await?;
            }
            return Ok(IngestResult {
                file_path: view.file_path,
                ..IngestResult::of_stored(stored, IngestStatus::New)
            });
        }
        self.metrics.duplicates.inc();
        let result = self.answer_for(stored, IngestStatus::Duplicate).await?;
        if let (Some(url), Ok(hash), own) = (&session.url, ContentHash::parse(&result.hash), stored.hash) {
            match result.variant {
                Some(_) => self.repo.add_alias_via(url, &hash, &own, &session.project).await?,
                None => self.repo.add_alias(url, &hash, &session.project).await?,
            }
        }
        self.as_seen_by(result, &session.project).await
    }

    /// A duplicate answered at the path the project's own upload put the
    /// video, never at another project's (section 8).
    async fn as_seen_by(&self, mut result: IngestResult, project: &str) -> Result<IngestResult, UploadError> {
        if let Ok(hash) = ContentHash::parse(&result.hash)
            && let Some(own) = self.repo.holding(project, &hash).await?
        {
            result.file_path = own.file_path;
        }
        Ok(result)
    }

    /// The answer about bytes stored as `stored`: a variant stands for the
    /// video it was merged into (while that is there); anything else is
    /// answered as itself, with `plain`.
    async fn answer_for(&self, stored: &Video, plain: IngestStatus) -> Result<IngestResult, UploadError> {
        if let Some(primary) = stored.variant_of
            && let Some(row) = self.repo.find_video(&primary).await?
        {
            return Ok(IngestResult::of_variant(&row, &stored.hash.to_hex(), distance_of(stored)));
        }
        Ok(IngestResult::of_stored(stored, plain))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: IngestStatus, variant: Option<&str>) -> IngestResult {
        IngestResult {
            hash: "h".into(),
            status,
            file_path: "b/h.mp4".into(),
            size_bytes: 1,
            duration_s: None,
            phash_distance: None,
            near_duplicate_of: None,
            match_kind: None,
            variant: variant.map(str::to_owned),
        }
    }

    /// Each way a commit ends has one end for its session: closed with an
    /// answer, closed as failed, left for recovery, or open for a retry.
    #[test]
    fn every_outcome_has_its_end() {
        let cases = [
            (Ok(result(IngestStatus::New, None)), "Stored", End::Closed(SessionState::Complete)),
            (Ok(result(IngestStatus::Duplicate, None)), "Duplicate", End::Closed(SessionState::Complete)),
            (Ok(result(IngestStatus::Duplicate, Some("v"))), "Variant", End::Closed(SessionState::Complete)),
            (Err(UploadError::NotAVideo("x".into())), "Refused", End::Closed(SessionState::Failed)),
            (Err(UploadError::CorruptVideo("x".into())), "Refused", End::Closed(SessionState::Failed)),
            (Err(UploadError::CommitInterrupted("x".into())), "Interrupted", End::Committing),
            (Err(UploadError::Internal("x".into())), "Retryable", End::Open),
            (Err(UploadError::StorageFull("x".into())), "Retryable", End::Open),
        ];
        for (raw, kind, end) in cases {
            let outcome = Outcome::of(raw);
            assert!(format!("{outcome:?}").starts_with(kind), "{outcome:?} is not {kind}");
            assert_eq!(outcome.end(), end, "{outcome:?}");
            // Only the outcomes with an answer give one, and only those close `complete`.
            assert_eq!(outcome.result().is_some(), end == End::Closed(SessionState::Complete), "{outcome:?}");
            let answered = outcome.into_answer();
            assert_eq!(answered.is_ok(), end == End::Closed(SessionState::Complete));
            if kind == "Interrupted" {
                assert_eq!(answered.unwrap_err().code(), "commit-interrupted");
            }
        }
    }
}
