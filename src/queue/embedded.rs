//! The embedded backend: workers lease transcode jobs from the `jobs`
//! table. A lease is renewed while its job runs; a worker that dies stops
//! renewing it, the lease runs out, and another worker gets the job again.
//! A job that fails `transcode.max_attempts` times is dead: it is copied to
//! the `transcode.dlq` topic of the table with its last error.

use super::{DLQ_TOPIC, JobHandler, TRANSCODE_TOPIC, TranscodeJob};
use crate::config::TranscodeSettings;
use crate::storage::{Job, JobState, Repository};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub(super) async fn run(
    repo: Repository,
    settings: Arc<TranscodeSettings>,
    handler: Arc<dyn JobHandler>,
    worker: Arc<str>,
    queued: Arc<tokio::sync::Notify>,
    mut shutdown: super::Shutdown,
) {
    let workers = settings.workers.max(1);
    let slots = Arc::new(Semaphore::new(workers));
    let lease = chrono::Duration::seconds(settings.lease_secs as i64);
    let idle = Duration::from_millis(settings.poll_interval_ms.max(10));
    tracing::info!(%worker, workers = settings.workers, "embedded queue: transcode workers started");
    let mut purged_at = std::time::Instant::now();
    loop {
        if purged_at.elapsed() >= PURGE_EVERY {
            purged_at = std::time::Instant::now();
            purge(&repo).await;
        }
        let slot = tokio::select! {
            biased;
            () = shutdown.requested() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        if shutdown.is_requested() {
            break;
        }
        match repo.lease_job(TRANSCODE_TOPIC, &worker, lease).await {
            Ok(Some(job)) => {
                let (repo, settings, handler, worker) =
                    (repo.clone(), settings.clone(), handler.clone(), worker.clone());
                tokio::spawn(async move {
                    process(&repo, &settings, handler.as_ref(), &worker, job).await;
                    drop(slot);
                });
            }
            Ok(None) => {
                drop(slot);
                tokio::select! {
                    () = shutdown.requested() => {}
                    _ = tokio::time::timeout(idle, queued.notified()) => {}
                }
            }
            Err(e) => {
                drop(slot);
                tracing::warn!(error = %e, "embedded queue: leasing a job failed");
                tokio::time::sleep(idle.max(Duration::from_secs(1))).await;
            }
        }
    }
    // Draining: every job in progress ends (its row recorded) before this does.
    let _ = slots.acquire_many(workers as u32).await;
    tracing::info!(%worker, "embedded queue: transcode workers stopped");
}

/// How often finished jobs older than `KEEP_DONE` are deleted.
pub(super) const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Finished jobs are kept this long (for looking into what ran).
pub(super) const KEEP_DONE: chrono::Duration = chrono::Duration::days(1);

pub(super) async fn purge(repo: &Repository) {
    match repo.purge_done_jobs(chrono::Utc::now() - KEEP_DONE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "finished jobs purged"),
        Err(e) => tracing::warn!(error = %e, "purging finished jobs failed"),
    }
}

#[tracing::instrument(skip_all, fields(job = job.id, key = %job.key, attempt = job.attempts))]
async fn process(repo: &Repository, settings: &TranscodeSettings, handler: &dyn JobHandler, worker: &str, job: Job) {
    let lease = chrono::Duration::seconds(settings.lease_secs as i64);
    let parsed = serde_json::to_vec(&job.payload).map_err(|e| e.to_string()).and_then(|b| TranscodeJob::parse(&b));
    let outcome = match parsed.clone() {
        Ok(mut parsed) => {
            parsed.attempt = job.attempts;
            // Renew the lease a few times per lease while the job runs.
            let heartbeat = {
                let (repo, job, worker) = (repo.clone(), job.clone(), worker.to_owned());
                tokio::spawn(async move {
                    let every = Duration::from_secs((lease.num_seconds() as u64 / 3).max(1));
                    loop {
                        tokio::time::sleep(every).await;
                        match repo.extend_lease(&job, &worker, lease).await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!("the job's lease was lost; another worker may run it too");
                                return;
                            }
                            Err(e) => tracing::warn!(error = %e, "renewing a lease failed"),
                        }
                    }
                })
            };
            let outcome = handler.handle(parsed).await;
            heartbeat.abort();
            outcome
        }
        // A job that can never run is dead at once.
        Err(e) => Err(e),
    };
    let result = match outcome {
        Ok(()) => repo.ack_job(job.id).await.map(|_| ()),
        Err(error) => {
            let poison = parsed.is_err();
            let attempts = if poison { 0 } else { settings.max_attempts };
            let retry = chrono::Duration::seconds(settings.retry_delay_secs as i64);
            match repo.fail_job(&job, &error, attempts, retry).await {
                Ok(JobState::Dead) => {
                    tracing::warn!(%error, "the job failed its last attempt: dead-letter queue");
                    let mut dead = job.payload.clone();
                    if let Some(fields) = dead.as_object_mut() {
                        fields.insert("attempt".into(), job.attempts.into());
                        fields.insert("last_error".into(), error.clone().into());
                    }
                    let kept = repo.enqueue_job(DLQ_TOPIC, &job.key, &dead).await.map(|_| ());
                    if let Ok(parsed) = parsed {
                        handler.dead(parsed, error).await;
                    }
                    kept
                }
                Ok(_) => {
                    tracing::info!(%error, "the job failed; it will be tried again");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        // The lease runs out and the job is delivered again: at least once.
        tracing::warn!(error = %e, "recording the job's outcome failed");
    }
}
