//! Finding videos published by an older ladder and queueing them again
//! (`vidcache requeue-outdated`). The job goes through the transactional
//! outbox like every other transcode job, so the command needs only the
//! database and the storage root, not the queue: the running daemons'
//! workers (embedded queue, or Kafka through the relay) take it from there.

use super::publish::LADDER_VERSION;
use crate::config::Settings;
use crate::domain::ContentHash;
use crate::queue::{TRANSCODE_TOPIC, TranscodeJob};
use crate::storage::Repository;

/// Every `ready` video whose published renditions are older than
/// [`LADDER_VERSION`] (or missing), with that version (0: none published);
/// queued unless `dry_run`. Answers them and how many were queued.
pub async fn requeue_outdated(settings: &Settings, dry_run: bool) -> anyhow::Result<(Vec<(ContentHash, u32)>, usize)> {
    let repo = Repository::connect(&settings.database.url, 1).await?;
    let store = crate::startup::open_store(settings).await?;
    let mut outdated = Vec::new();
    for hash in repo.hashes_with_transcode_status(crate::storage::TranscodeStatus::Ready).await? {
        let (store, of) = (store.clone(), hash);
        let version = tokio::task::spawn_blocking(move || store.published_version(&of)).await?.unwrap_or(0);
        if version < LADDER_VERSION {
            outdated.push((hash, version));
        }
    }
    let mut queued = 0;
    if !dry_run {
        for (hash, _) in &outdated {
            let job = TranscodeJob::new(&hash.to_hex(), &settings.transcode);
            if repo.queue_transcode(hash, TRANSCODE_TOPIC, &job.to_json()).await? {
                queued += 1;
            }
        }
    }
    Ok((outdated, queued))
}
