//! `Library`: the use-cases on stored videos that routes and background
//! sweeps call, so that neither runs them itself.
//!
//! - `remove`, shared by `DELETE /video/{hash}` and the sweep of
//!   `dedup.variant_retention`: the rows go first (one transaction: the
//!   video, its aliases, its variants), so no reader is sent to a file being
//!   removed; then each removed video leaves the near-duplicate index, and
//!   its object and derived media are deleted on blocking threads.
//! - `unmerge`: a variant becomes its own video again.
//! - `request_transcode`: a failed, missing or outdated transcode is queued.

use crate::config::VariantRetention;
use crate::dedup::NearDuplicates;
use crate::domain::{ContentHash, ObjectKey};
use crate::queue::{Event, EventBus, Queue, QueueError};
use crate::storage::{RepoError, Repository, Store, TranscodeStatus, Video};
use crate::telemetry::Metrics;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Library {
    pub repo: Repository,
    pub store: Arc<dyn Store>,
    pub near: Arc<NearDuplicates>,
    pub events: EventBus,
    pub queue: Queue,
    pub metrics: Metrics,
}

/// Why a use-case did nothing.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("no video with that hash is stored")]
    Unknown,
    #[error("this video was not merged into another one; only a variant can be unmerged")]
    NotAVariant,
    #[error("this video's bytes are kept as a variant of another video, which is the one transcoded; unmerge it first")]
    IsAVariant,
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A variant made its own video.
pub struct Unmerged {
    pub video: Video,
    /// The video it had been merged into.
    pub merged_into: Option<ContentHash>,
    /// Its aliases now (the URLs its uploads brought).
    pub aliases: Vec<String>,
}

/// What a transcode request did.
pub enum TranscodeRequest {
    /// Ready (and published), or already on its way: left as it is.
    Settled(TranscodeStatus),
    Queued,
}

impl Library {
    /// Removes a video with its aliases and variants; the removed rows, the
    /// video's first, empty when there was no such video.
    pub async fn remove(&self, hash: &ContentHash) -> Result<Vec<Video>, RepoError> {
        let removed = self.repo.delete_video(hash).await?;
        for video in &removed {
            let gone = video.hash;
            self.near.remove_blocking(gone).await;
            let (store, key) = (self.store.clone(), ObjectKey::from_stored(&video.file_path).ok());
            let deleted = tokio::task::spawn_blocking(move || {
                if let Some(key) = key {
                    store.delete_object(&key)?;
                }
                store.delete_derived(&gone)
            })
            .await;
            if let Ok(Err(e)) = deleted {
                tracing::warn!(hash = %gone, error = %e, "could not remove a deleted video's files");
            }
            self.events.publish(Event::new(
                "video.deleted",
                &video.hash.to_hex(),
                serde_json::json!({"hash": video.hash, "variant_of": video.variant_of}),
            ));
        }
        Ok(removed)
    }

    /// Makes a variant its own video: the URLs its upload brought resolve
    /// to it again, its video entries show it, its transcode is queued (one
    /// transaction), and it joins the near-duplicate index. The match stays
    /// on record as `near_duplicate_of` and `match`.
    pub async fn unmerge(&self, hash: &ContentHash) -> Result<Unmerged, LibraryError> {
        let video = self.repo.find_video(hash).await?.ok_or(LibraryError::Unknown)?;
        let Some(merged_into) = video.variant_of else { return Err(LibraryError::NotAVariant) };
        // Unmerged (or deleted) by another request in between: not a variant.
        let video = self.queue.unmerge(hash).await?.ok_or(LibraryError::NotAVariant)?;
        if let Some(signature) = self.repo.find_signature(hash).await? {
            self.near.add_blocking(*hash, signature).await;
        }
        self.metrics.unmerges.inc();
        let aliases = self.repo.aliases_of(hash).await?;
        tracing::info!(%hash, merged_into = %merged_into, "a variant was made its own video");
        Ok(Unmerged { video, merged_into: Some(merged_into), aliases })
    }

    /// Queues a transcode of a video whose transcode failed, never ran, or
    /// was published by an older ladder; one that is ready (published) or
    /// already on its way is left as it is. A variant is not transcoded.
    pub async fn request_transcode(&self, hash: &ContentHash) -> Result<TranscodeRequest, LibraryError> {
        let video = self.repo.find_video(hash).await?.ok_or(LibraryError::Unknown)?;
        if video.variant_of.is_some() {
            return Err(LibraryError::IsAVariant);
        }
        let (store, of) = (self.store.clone(), *hash);
        let published = tokio::task::spawn_blocking(move || store.is_published(&of)).await.unwrap_or(false);
        let settled = match video.transcode {
            TranscodeStatus::Ready => published,
            TranscodeStatus::Processing | TranscodeStatus::Queued => true,
            TranscodeStatus::None | TranscodeStatus::Failed => false,
        };
        if settled {
            return Ok(TranscodeRequest::Settled(video.transcode));
        }
        if !self.queue.requeue(hash).await? {
            return Err(LibraryError::Unknown);
        }
        Ok(TranscodeRequest::Queued)
    }

    /// With `dedup.variant_retention` in days: every `every`, removes the
    /// variants first seen longer ago than that (their URLs stay aliases of
    /// the video they were merged into). Nothing with `keep`.
    pub fn start_variant_sweep(
        self,
        retention: VariantRetention,
        every: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let VariantRetention::Days(days) = retention else { return None };
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
                match self.repo.variants_before(before).await {
                    Ok(old) => {
                        for hash in old {
                            match self.remove(&hash).await {
                                Ok(_) => tracing::info!(%hash, days, "a variant past its retention was removed"),
                                Err(e) => tracing::warn!(%hash, error = %e, "could not remove an old variant"),
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not list old variants"),
                }
            }
        }))
    }
}
