//! The transcode worker: what a queued job does. It runs the ladder on the
//! `Transcoder` SyncArbiter (never on an event loop), moves the video's
//! status `queued → processing → ready | failed`, and sends the
//! `transcode.*` events. A job whose renditions are already published
//! completes without encoding again: jobs are delivered at least once.

use super::ladder::{LadderOutput, LadderSpec, Rung, TranscodeError};
use super::publish;
use crate::config::TranscodeSettings;
use crate::domain::{ContentHash, ObjectKey};
use crate::queue::{Event, EventBus, JobHandler, TranscodeJob};
use crate::storage::{Repository, Store, TranscodeStatus};
use crate::telemetry::Metrics;
use actix::{Actor, Addr, Handler, Message, SyncContext};
use futures_util::future::BoxFuture;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs ladders, one per thread of its SyncArbiter.
pub struct Transcoder;

impl Actor for Transcoder {
    type Context = SyncContext<Self>;
}

/// Transcode `src` and publish the renditions under `derived`.
#[derive(Message)]
#[rtype(result = "Result<LadderOutput, TranscodeError>")]
pub struct Transcode {
    pub src: PathBuf,
    pub derived: PathBuf,
    pub spec: LadderSpec,
    pub storyboard_secs: u32,
    pub duration_s: Option<f64>,
    /// Receives the share done, 0 to 1.
    pub progress: tokio::sync::mpsc::UnboundedSender<f64>,
}

impl Handler<Transcode> for Transcoder {
    type Result = Result<LadderOutput, TranscodeError>;

    fn handle(&mut self, msg: Transcode, _: &mut Self::Context) -> Self::Result {
        let Transcode { src, derived, spec, storyboard_secs, duration_s, progress } = msg;
        // FFmpeg bindings can panic on inputs they do not expect; a job's
        // failure must not take the worker thread with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            publish::build_and_publish(&src, &derived, &spec, storyboard_secs, duration_s, &mut |share| {
                let _ = progress.send(share);
            })
        }))
        .unwrap_or_else(|_| Err(TranscodeError::Encode("the transcoder panicked".into())))
    }
}

#[derive(Clone)]
pub struct TranscodeWorker {
    pub repo: Repository,
    pub store: Arc<dyn Store>,
    pub events: EventBus,
    pub metrics: Metrics,
    pub transcoder: Addr<Transcoder>,
    pub settings: Arc<TranscodeSettings>,
}

/// A progress event at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl TranscodeWorker {
    #[tracing::instrument(skip_all, fields(hash = %job.hash, attempt = job.attempt))]
    async fn run(self, job: TranscodeJob) -> Result<(), String> {
        let hash = ContentHash::parse(&job.hash).map_err(|e| e.to_string())?;
        let Some(video) = self.repo.find_video(&hash).await.map_err(|e| e.to_string())? else {
            tracing::info!("the video is gone; nothing to transcode");
            return Ok(());
        };
        let derived = self.store.derived_dir(&hash);
        let check = derived.clone();
        if tokio::task::spawn_blocking(move || publish::is_published(&check)).await.unwrap_or(false) {
            // Delivered again after its outputs were published.
            self.set_status(&hash, TranscodeStatus::Ready, None, video.renditions.as_ref()).await?;
            self.metrics.transcodes.with_label_values(&["reused"]).inc();
            self.events.publish(Event::new(
                "transcode.completed",
                &job.hash,
                self.urls(&job.hash, json!({"reused": true})),
            ));
            return Ok(());
        }

        self.set_status(&hash, TranscodeStatus::Processing, None, None).await?;
        self.events.publish(Event::new(
            "transcode.started",
            &job.hash,
            json!({"hash": job.hash, "attempt": job.attempt}),
        ));
        let started = Instant::now();
        let key = ObjectKey::from_stored(&video.file_path).map_err(|e| e.to_string())?;
        let (progress, mut updates) = tokio::sync::mpsc::unbounded_channel::<f64>();
        let forwarder = {
            let (events, hash) = (self.events.clone(), job.hash.clone());
            tokio::spawn(async move {
                let mut last = Instant::now();
                while let Some(share) = updates.recv().await {
                    if last.elapsed() >= PROGRESS_EVERY && share < 1.0 {
                        last = Instant::now();
                        let percent = (share * 1000.0).round() / 10.0;
                        events.publish(Event::new(
                            "transcode.progress",
                            &hash,
                            json!({"hash": hash, "percent": percent}),
                        ));
                    }
                }
            })
        };
        let spec = self.spec_of(&job);
        let message = Transcode {
            src: self.store.object_path(&key),
            derived,
            spec,
            storyboard_secs: self.settings.storyboard_interval_secs,
            duration_s: video.duration_s,
            progress,
        };
        let result = self.transcoder.send(message).await;
        let _ = forwarder.await;
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.transcode_seconds.observe(elapsed);
        match result {
            Ok(Ok(output)) => {
                let renditions = serde_json::to_value(&output.renditions).unwrap_or_default();
                if !self.set_status(&hash, TranscodeStatus::Ready, None, Some(&renditions)).await? {
                    // Deleted while it was transcoded: drop what was made.
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.delete_derived(&hash)).await;
                    return Ok(());
                }
                self.metrics.transcodes.with_label_values(&["completed"]).inc();
                tracing::info!(
                    seconds = elapsed,
                    frames = output.frames,
                    rungs = output.renditions.len(),
                    "transcoded"
                );
                let realtime = if elapsed > 0.0 { output.duration_s / elapsed } else { 0.0 };
                self.events.publish(Event::new(
                    "transcode.completed",
                    &job.hash,
                    self.urls(
                        &job.hash,
                        json!({"renditions": renditions, "seconds": elapsed, "realtime_factor": realtime, "has_audio": output.has_audio}),
                    ),
                ));
                Ok(())
            }
            Ok(Err(e)) => self.failed_attempt(&hash, &job, e.to_string()).await,
            Err(e) => self.failed_attempt(&hash, &job, format!("the transcoder is gone: {e}")).await,
        }
    }

    /// An attempt failed: the job is retried (status `queued`, with the
    /// error) unless this was its last attempt, in which case `dead` follows.
    async fn failed_attempt(&self, hash: &ContentHash, job: &TranscodeJob, error: String) -> Result<(), String> {
        tracing::warn!(%error, "transcode attempt failed");
        self.metrics.transcodes.with_label_values(&["attempt_failed"]).inc();
        if job.attempt < self.settings.max_attempts {
            self.set_status(hash, TranscodeStatus::Queued, Some(&error), None).await?;
        }
        Err(error)
    }

    fn spec_of(&self, job: &TranscodeJob) -> LadderSpec {
        let mut rungs: Vec<Rung> =
            job.ladder.iter().map(|r| Rung { height: r.height, video_kbps: r.video_kbps }).collect();
        if rungs.is_empty() {
            rungs = self.settings.rungs().unwrap_or_default();
        }
        LadderSpec {
            rungs,
            segment_secs: job.segment_secs.filter(|s| (1..=60).contains(s)).unwrap_or(self.settings.segment_secs),
            preset: self.settings.preset.clone(),
        }
    }

    fn urls(&self, hash: &str, fields: serde_json::Value) -> serde_json::Value {
        let mut body = json!({
            "hash": hash,
            "hls_url": format!("/media/{hash}/hls/master.m3u8"),
            "dash_url": format!("/media/{hash}/dash/manifest.mpd"),
        });
        if let (Some(body), serde_json::Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        body
    }

    async fn set_status(
        &self,
        hash: &ContentHash,
        status: TranscodeStatus,
        error: Option<&str>,
        renditions: Option<&serde_json::Value>,
    ) -> Result<bool, String> {
        self.repo.set_transcode_status(hash, status, error, renditions).await.map_err(|e| e.to_string())
    }
}

impl JobHandler for TranscodeWorker {
    fn handle(&self, job: TranscodeJob) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(self.clone().run(job))
    }

    fn dead(&self, job: TranscodeJob, error: String) -> BoxFuture<'static, ()> {
        let this = self.clone();
        Box::pin(async move {
            this.metrics.transcodes.with_label_values(&["failed"]).inc();
            if let Ok(hash) = ContentHash::parse(&job.hash)
                && let Err(e) = this.set_status(&hash, TranscodeStatus::Failed, Some(&error), None).await
            {
                tracing::warn!(error = %e, "could not record a failed transcode");
            }
            this.events.publish(Event::new(
                "transcode.failed",
                &job.hash,
                json!({"hash": job.hash, "error": error, "attempts": job.attempt}),
            ));
        })
    }
}
