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

/// Transcode the object `source` of `store` and publish the renditions
/// under `derived`, then where the store's readers find them (a bucket).
#[derive(Message)]
#[rtype(result = "Result<LadderOutput, TranscodeError>")]
pub struct Transcode {
    pub store: Arc<dyn Store>,
    pub hash: ContentHash,
    pub source: ObjectKey,
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
        let Transcode { store, hash, source, derived, spec, storyboard_secs, duration_s, progress } = msg;
        // With a bucket, the source is fetched to this machine's disk first.
        let src = store.fetch_object(&source)?;
        // FFmpeg bindings can panic on inputs they do not expect; a job's
        // failure must not take the worker thread with it.
        let output = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            publish::build_and_publish(&src, &derived, &spec, storyboard_secs, duration_s, &mut |share| {
                let _ = progress.send(share);
            })
        }))
        .unwrap_or_else(|_| Err(TranscodeError::Encode("the transcoder panicked".into())))?;
        store.publish_ladder(&hash)?;
        Ok(output)
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
    /// Seconds of transcoding per second of video, lately (`Pace`).
    pub pace: Pace,
}

/// How long a transcode takes per second of video: a moving mean of this
/// worker's own transcodes. A project's own job for a video another
/// project holds (section 8) takes as long as a new transcode of it would.
#[derive(Clone, Default)]
pub struct Pace(Arc<std::sync::Mutex<Option<f64>>>);

impl Pace {
    /// Before any transcode was measured: about real time, what the
    /// default ladder takes on two cores.
    const FIRST: f64 = 1.0;

    fn record(&self, seconds: f64, duration_s: f64) {
        if duration_s <= 0.0 || !seconds.is_finite() {
            return;
        }
        let sample = seconds / duration_s;
        let mut pace = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *pace = Some(pace.map_or(sample, |p| 0.8 * p + 0.2 * sample));
    }

    /// How long a new transcode of `duration_s` seconds of video takes.
    fn of(&self, duration_s: f64) -> Duration {
        let pace = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unwrap_or(Self::FIRST);
        Duration::from_secs_f64((pace * duration_s.max(0.0)).min(3600.0))
    }
}

/// A progress event at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl TranscodeWorker {
    #[tracing::instrument(skip_all, fields(hash = %job.hash, attempt = job.attempt))]
    async fn run(self, job: TranscodeJob) -> Result<(), String> {
        if let Some(project) = job.project.clone() {
            return self.run_for(project, job).await;
        }
        let hash = ContentHash::parse(&job.hash).map_err(|e| e.to_string())?;
        let Some(video) = self.repo.find_video(&hash).await.map_err(|e| e.to_string())? else {
            tracing::info!("the video is gone; nothing to transcode");
            return Ok(());
        };
        let derived = self.store.derived_dir(&hash);
        let (store, of) = (self.store.clone(), hash);
        if tokio::task::spawn_blocking(move || store.is_published(&of)).await.unwrap_or(false) {
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
            store: self.store.clone(),
            hash,
            source: key,
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
        if matches!(result, Ok(Ok(_))) {
            self.pace.record(elapsed, video.duration_s.unwrap_or(0.0));
        }
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

    /// `project`'s own job for a video another project holds (section 8):
    /// the project's view goes `queued → processing`, waits for the
    /// video's own transcode if it has not finished, then for as long as a
    /// new transcode of the video takes, and becomes the video's own status.
    /// Its events name the project, so no other project is told of them.
    /// Delivered again after it finished, it does nothing.
    async fn run_for(self, project: String, job: TranscodeJob) -> Result<(), String> {
        let hash = ContentHash::parse(&job.hash).map_err(|e| e.to_string())?;
        let fail = |e: crate::storage::RepoError| e.to_string();
        let Some(view) = self.repo.holding(&project, &hash).await.map_err(fail)? else {
            return Ok(()); // the project let go of it
        };
        if view.transcode.is_none() {
            return Ok(()); // finished before
        }
        let started = Instant::now();
        self.repo.set_project_transcode(&hash, &project, Some(TranscodeStatus::Processing)).await.map_err(fail)?;
        self.events.publish(Event::new(
            "transcode.started",
            &job.hash,
            json!({"hash": job.hash, "attempt": job.attempt, "project": project}),
        ));
        let video = loop {
            let Some(video) = self.repo.find_video(&hash).await.map_err(fail)? else { return Ok(()) };
            match video.transcode {
                TranscodeStatus::Ready | TranscodeStatus::Failed => break video,
                // Nobody asked for the video's own: this job makes it.
                TranscodeStatus::None => {
                    Box::pin(self.clone().run(TranscodeJob { project: None, ..job.clone() })).await?;
                }
                TranscodeStatus::Queued | TranscodeStatus::Processing => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        // Progress as a transcode's: at most once a second.
        let takes = self.pace.of(video.duration_s.unwrap_or(0.0));
        while let Some(left) = takes.checked_sub(started.elapsed()).filter(|d| !d.is_zero()) {
            tokio::time::sleep(left.min(PROGRESS_EVERY)).await;
            let share = started.elapsed().as_secs_f64() / takes.as_secs_f64();
            if share < 1.0 {
                let percent = (share * 1000.0).round() / 10.0;
                self.events.publish(Event::new(
                    "transcode.progress",
                    &job.hash,
                    json!({"hash": job.hash, "percent": percent, "project": project}),
                ));
            }
        }
        if !self.repo.set_project_transcode(&hash, &project, None).await.map_err(fail)? {
            return Ok(()); // let go of meanwhile
        }
        let elapsed = started.elapsed().as_secs_f64();
        let event = match video.transcode {
            TranscodeStatus::Ready => {
                let realtime = video.duration_s.filter(|_| elapsed > 0.0).map_or(0.0, |d| d / elapsed);
                Event::new(
                    "transcode.completed",
                    &job.hash,
                    self.urls(
                        &job.hash,
                        json!({"renditions": video.renditions, "seconds": elapsed, "realtime_factor": realtime,
                               "has_audio": video.audio_codec.is_some(), "project": project}),
                    ),
                )
            }
            _ => Event::new(
                "transcode.failed",
                &job.hash,
                json!({"hash": job.hash, "error": video.transcode_error, "attempts": job.attempt, "project": project}),
            ),
        };
        self.events.publish(event);
        Ok(())
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
            let recorded = match (ContentHash::parse(&job.hash), &job.project) {
                (Err(_), _) => Ok(true),
                // A project's own job: its view becomes the video's own.
                (Ok(hash), Some(project)) => {
                    this.repo.set_project_transcode(&hash, project, None).await.map_err(|e| e.to_string())
                }
                (Ok(hash), None) => this.set_status(&hash, TranscodeStatus::Failed, Some(&error), None).await,
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "could not record a failed transcode");
            }
            let mut fields = json!({"hash": job.hash, "error": error, "attempts": job.attempt});
            if let Some(project) = &job.project {
                fields["project"] = project.as_str().into();
            }
            this.events.publish(Event::new("transcode.failed", &job.hash, fields));
        })
    }
}
