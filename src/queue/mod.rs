//! The job queue: one interface, two backends. The embedded backend keeps
//! jobs in the database (the `jobs` table) and needs nothing else; the
//! Kafka backend moves them through a broker so that workers on other
//! machines can take them. Both deliver at least once: a job is finished
//! (its lease acknowledged, its offset stored) only after its handler
//! returned, so a worker that dies mid-job leaves it to be delivered again.
//!
//! Transcode jobs always enter through the database, in the transaction
//! that stores their video. With Kafka, a relay forwards them to the
//! broker and acknowledges them only once the broker has them: the
//! database is the outbox, so a broker that is down loses nothing.
//!
//! Only this module touches rdkafka.

mod embedded;
mod events;
mod kafka;

pub use events::{Event, EventBus};

use crate::config::{KafkaSettings, TranscodeSettings};
use crate::storage::Repository;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Topic of transcode jobs in the `jobs` table (embedded queue and outbox).
pub const TRANSCODE_TOPIC: &str = "transcode";
/// Dead transcode jobs in the `jobs` table (the embedded dead-letter queue).
pub const DLQ_TOPIC: &str = "transcode.dlq";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error(transparent)]
    Repo(#[from] crate::storage::RepoError),
}

impl QueueError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Kafka(_) => "queue-unavailable",
            Self::Repo(_) => "database-error",
        }
    }
}

/// One rung of a job's ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRung {
    pub height: u32,
    pub video_kbps: u32,
}

/// A transcode job as the contract writes it:
/// `{"type": "transcode", "version": 1, "hash", "ladder"}`, plus the
/// attempt it is on (Kafka carries retries as new messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscodeJob {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub hash: String,
    pub ladder: Vec<JobRung>,
    #[serde(default)]
    pub segment_secs: Option<u32>,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The error of the attempt that failed last (on retries and in the DLQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// A project's own job for a video it claimed that another project
    /// holds already (section 8): it takes the project's view of the
    /// transcode through `processing` to the video's own status, as long as
    /// a new transcode of it would take, and tells that project only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

impl TranscodeJob {
    pub fn new(hash: &str, settings: &TranscodeSettings) -> Self {
        let ladder = settings
            .rungs()
            .unwrap_or_default()
            .into_iter()
            .map(|r| JobRung { height: r.height, video_kbps: r.video_kbps })
            .collect();
        Self {
            kind: "transcode".into(),
            version: 1,
            hash: hash.to_owned(),
            ladder,
            segment_secs: Some(settings.segment_secs),
            attempt: 1,
            last_error: None,
            project: None,
        }
    }

    /// `project`'s own job for `hash` (see `project`).
    pub fn for_project(hash: &str, project: &str, settings: &TranscodeSettings) -> Self {
        Self { project: Some(project.to_owned()), ..Self::new(hash, settings) }
    }

    /// A job read from a message: JSON of the right type, a hash, a ladder.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let job: Self = serde_json::from_slice(bytes).map_err(|e| format!("not a transcode job: {e}"))?;
        if job.kind != "transcode" || job.version != 1 {
            return Err(format!("unsupported message type {:?} version {}", job.kind, job.version));
        }
        crate::domain::ContentHash::parse(&job.hash).map_err(|e| e.to_string())?;
        if job.ladder.len() > 8 || job.ladder.iter().any(|r| !(16..=4320).contains(&r.height)) {
            return Err("the ladder must have at most 8 rungs of 16 to 4320 lines".into());
        }
        Ok(job)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a job serialises")
    }
}

/// What runs jobs. Both backends call it; it is given the job and the
/// attempt, and says whether the job's outputs are now durable.
pub trait JobHandler: Send + Sync + 'static {
    fn handle(&self, job: TranscodeJob) -> BoxFuture<'static, Result<(), String>>;
    /// The job failed its last attempt and went to the dead-letter queue.
    fn dead(&self, job: TranscodeJob, error: String) -> BoxFuture<'static, ()>;
}

/// Outside producers' ingest requests (Kafka only).
pub trait IngestHandler: Send + Sync + 'static {
    /// Handles one request (its result goes out as an event); the offset is
    /// stored after it returns.
    fn ingest(&self, request: serde_json::Value) -> BoxFuture<'static, ()>;
}

/// Asks consumers to take no new work. Each finishes the job it holds
/// (outputs published, offset or row recorded), then returns.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

/// The side that asks: `Drain::run` asks, then waits for the consumers.
pub struct Drain(tokio::sync::watch::Sender<bool>);

impl Drain {
    pub fn new() -> (Self, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (Self(tx), Shutdown(rx))
    }

    /// Asks for the drain, then waits up to `limit` for `tasks` to end;
    /// those still running then are aborted (their jobs are delivered again).
    pub async fn run(self, tasks: Vec<JoinHandle<()>>, limit: std::time::Duration) {
        let _ = self.0.send(true);
        let waiting = tasks.iter().filter(|t| !t.is_finished()).count();
        if waiting > 0 {
            tracing::info!(consumers = waiting, limit_s = limit.as_secs(), "draining: waiting for jobs in progress");
        }
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(limit, futures_util::future::join_all(tasks)).await.is_err() {
            tracing::warn!("draining took too long: jobs still in progress are cut off and will be delivered again");
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

impl Shutdown {
    /// A shutdown that never comes (tests, one-shot commands).
    pub fn never() -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(tx);
        Self(rx)
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a shutdown is asked for.
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The queue handle every part of the daemon shares.
#[derive(Clone)]
pub struct Queue {
    repo: Repository,
    transcode: Arc<TranscodeSettings>,
    kafka: Option<Arc<kafka::Kafka>>,
    events: EventBus,
    worker_id: Arc<str>,
    /// Rung when a job is queued in this process, so an idle worker or the
    /// relay takes it at once instead of at its next poll.
    queued: Arc<tokio::sync::Notify>,
}

impl Queue {
    /// The embedded queue, or Kafka when brokers are configured (topics are
    /// created first if `kafka.create_topics`).
    pub async fn connect(
        repo: Repository,
        transcode: &TranscodeSettings,
        settings: &KafkaSettings,
        metrics: crate::telemetry::Metrics,
    ) -> Result<Self, QueueError> {
        let worker_id: Arc<str> =
            format!("{}-{}-{}", hostname(), std::process::id(), crate::domain::UploadId::generate()).into();
        let kafka = if settings.enabled() {
            Some(kafka::Kafka::connect(settings, metrics.kafka_messages_skipped.clone())?)
        } else {
            None
        };
        let events = EventBus::new(kafka.clone(), metrics);
        let queued = Arc::new(tokio::sync::Notify::new());
        Ok(Self { repo, transcode: Arc::new(transcode.clone()), kafka, events, worker_id, queued })
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// What to notify after queuing a job outside `requeue` (the committer).
    pub fn queued_signal(&self) -> Arc<tokio::sync::Notify> {
        self.queued.clone()
    }

    pub fn backend(&self) -> &'static str {
        if self.kafka.is_some() { "kafka" } else { "embedded" }
    }

    /// A new job for `hash` with the configured ladder.
    pub fn job_for(&self, hash: &str) -> TranscodeJob {
        TranscodeJob::new(hash, &self.transcode)
    }

    /// Queues a transcode of a stored video (status `queued`). `false` when
    /// there is no such video.
    pub async fn requeue(&self, hash: &crate::domain::ContentHash) -> Result<bool, QueueError> {
        let job = self.job_for(&hash.to_hex());
        let queued = self.repo.queue_transcode(hash, TRANSCODE_TOPIC, &job.to_json()).await?;
        self.queued.notify_one();
        Ok(queued)
    }

    /// Makes a variant its own video and queues its transcode, in one
    /// transaction. `None` when it is not a variant.
    pub async fn unmerge(
        &self,
        variant: &crate::domain::ContentHash,
    ) -> Result<Option<crate::storage::Video>, QueueError> {
        let job = self.job_for(&variant.to_hex()).to_json();
        let row = self.repo.unmerge(variant, Some((TRANSCODE_TOPIC, &job))).await?;
        self.queued.notify_one();
        Ok(row)
    }

    /// Kafka reachable (metadata answered); the embedded queue always is.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match &self.kafka {
            Some(kafka) => kafka.ping().await,
            None => Ok(()),
        }
    }

    /// Starts what moves transcode jobs to workers: with Kafka, the relay
    /// from the database to the broker. `serve` runs it; a `worker` need not.
    pub fn start_relay(&self) -> Option<JoinHandle<()>> {
        let kafka = self.kafka.clone()?;
        Some(tokio::spawn(kafka::relay(kafka, self.repo.clone(), self.worker_id.clone(), self.queued.clone())))
    }

    /// Starts `transcode.workers` consumers of transcode jobs, which stop
    /// taking jobs once `shutdown` is asked for and end when theirs are done.
    pub fn start_workers(&self, handler: Arc<dyn JobHandler>, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        let workers = self.transcode.workers;
        if workers == 0 {
            return Vec::new();
        }
        match &self.kafka {
            None => vec![tokio::spawn(embedded::run(
                self.repo.clone(),
                self.transcode.clone(),
                handler,
                self.worker_id.clone(),
                self.queued.clone(),
                shutdown,
            ))],
            Some(kafka) => (0..workers)
                .map(|_| {
                    tokio::spawn(kafka::consume_jobs(
                        kafka.clone(),
                        self.transcode.clone(),
                        handler.clone(),
                        shutdown.clone(),
                    ))
                })
                .collect(),
        }
    }

    /// Starts the consumer of outside producers' ingest requests (Kafka
    /// only). It runs on the calling actix arbiter: an ingest drives the
    /// upload engine's actors, which need one.
    pub fn start_ingest(&self, handler: Arc<dyn IngestHandler>) -> Option<JoinHandle<()>> {
        let kafka = self.kafka.clone()?;
        kafka.settings.consume_ingest.then(|| actix::spawn(kafka::consume_ingest(kafka, handler)))
    }

    /// Streams events from the broker into this process's bus, so that
    /// `GET /events` shows events of workers on other machines (Kafka only;
    /// the embedded bus is fed directly).
    pub fn start_event_tail(&self) -> Option<JoinHandle<()>> {
        let kafka = self.kafka.clone()?;
        Some(tokio::spawn(kafka::tail_events(kafka, self.events.clone())))
    }
}

#[allow(clippy::disallowed_methods)] // a read of procfs, once at start-up
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "host".into())
}
