//! Removing stored videos, shared by `DELETE /video/{hash}` and the sweep of
//! `dedup.variant_retention`: the rows go first (one transaction: the video,
//! its aliases, its variants), so no reader is sent to a file being
//! removed; then each removed video leaves the near-duplicate index, and
//! its object and derived media are deleted on blocking threads.

use crate::config::VariantRetention;
use crate::dedup::NearDuplicates;
use crate::domain::{ContentHash, ObjectKey};
use crate::queue::{Event, EventBus};
use crate::storage::entities::video;
use crate::storage::{RepoError, Repository, Store};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Removal {
    pub repo: Repository,
    pub store: Arc<dyn Store>,
    pub near: Arc<NearDuplicates>,
    pub events: EventBus,
}

impl Removal {
    /// Removes a video with its aliases and variants; the removed rows, the
    /// video's first, empty when there was no such video.
    pub async fn remove(&self, hash: &ContentHash) -> Result<Vec<video::Model>, RepoError> {
        let removed = self.repo.delete_video(hash).await?;
        for video in &removed {
            let Ok(gone) = ContentHash::parse(&video.hash) else { continue };
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
                &video.hash,
                serde_json::json!({"hash": video.hash, "variant_of": video.variant_of}),
            ));
        }
        Ok(removed)
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
