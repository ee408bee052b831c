//! Signed webhooks (section 8): every event (the same ones `GET /events`
//! streams) is POSTed to each configured endpoint as its JSON, with
//! `Vidcache-Signature: t=<unix>,v1=<hex>`, where the hex is
//! HMAC-SHA256(endpoint secret, `"{t}.{body}"`), as Stripe signs them. A
//! receiver recomputes it over the raw body and compares in constant time,
//! and refuses a `t` too far from its clock (replays).
//!
//! Deliveries are durable, and each is made by one daemon. The daemon that
//! makes an event records one delivery per endpoint that wants it in the
//! database outbox (the `jobs` table, topic `webhook:<endpoint>`, keyed by
//! the event's `id`); events the Kafka tail brings from other daemons are
//! theirs to record. Every daemon runs a sender per endpoint that leases
//! that endpoint's deliveries oldest first, so several daemons never send
//! one twice at once, and a daemon that dies mid-delivery lets its lease run
//! out and another sends it. A failed attempt (no answer, or not 2xx) is
//! retried with exponential backoff, up to `MAX_ATTEMPTS`; then it is dead,
//! counted, logged, and listed at `GET /api/v1/webhooks` with its error.
//! Delivery is at least once: a kill between the receiver's answer and the
//! record of it sends it again, with the same `id`. What a kill -9 can
//! lose: an event made but not yet recorded (milliseconds after the fact
//! it tells of was committed; the Kafka events topic has the same window).

use crate::config::WebhookSettings;
use crate::storage::{JobState, Repository};
use crate::telemetry::Metrics;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Attempts per event, the first included.
pub const MAX_ATTEMPTS: u32 = 6;
/// Wait before the second attempt; doubled for each after it.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sender holds a delivery: longer than one attempt takes.
const LEASE: Duration = Duration::from_secs(30);
/// How often an idle sender looks for deliveries other daemons recorded
/// (its own daemon's wake it at once).
const IDLE: Duration = Duration::from_millis(250);
/// Deliveries remembered per endpoint.
const LOG_LEN: usize = 50;

/// The header value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac_of(secret, t, body).finalize().into_bytes()))
}

/// HMAC-SHA256(secret) over `"{t}.{body}"`, not yet finalized.
fn mac_of(secret: &str, t: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The documented check a receiver runs: the signature matches the raw
/// body, in constant time, and `t` is within `tolerance` of `now`.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    if now.abs_diff(t) > tolerance {
        return false;
    }
    mac_of(secret, t, body).verify_slice(&v1).is_ok()
}

/// One delivery's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub event: String,
    pub key: Option<String>,
    /// The project the event is about, when it names one.
    #[serde(skip)]
    pub project: Option<String>,
    pub attempts: u32,
    /// `delivered` or `failed`.
    pub result: &'static str,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: String,
}

/// What an endpoint has done, for operators.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointReport {
    pub url: String,
    pub events: Vec<String>,
    /// Delivered and given up on by this daemon since it started.
    pub delivered: u64,
    pub failed: u64,
    /// Events made while the outbox fell too far behind to record them.
    pub skipped: u64,
    /// Deliveries waiting in the outbox (any daemon's), now.
    pub pending: u64,
    /// This daemon's latest outcomes, oldest first.
    pub recent: VecDeque<Delivery>,
    /// Deliveries given up on (any daemon's), oldest first, with the
    /// last error: the durable record of failures.
    pub dead: Vec<DeadDelivery>,
}

/// A delivery given up on, as the outbox keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadDelivery {
    pub event: String,
    pub key: Option<String>,
    #[serde(skip)]
    pub project: Option<String>,
    pub attempts: i32,
    pub error: Option<String>,
    pub at: String,
}

struct Endpoint {
    settings: WebhookSettings,
    /// Its outbox topic: `webhook:` and a digest of its URL.
    topic: String,
    report: Mutex<EndpointReport>,
}

impl Endpoint {
    fn wants(&self, kind: &str) -> bool {
        self.settings.events.is_empty() || self.settings.events.iter().any(|e| e == kind)
    }

    fn record(&self, delivery: Delivery) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        match delivery.result {
            "delivered" => report.delivered += 1,
            _ => report.failed += 1,
        }
        if report.recent.len() == LOG_LEN {
            report.recent.pop_front();
        }
        report.recent.push_back(delivery);
    }
}

/// The configured endpoints, their outbox and senders.
#[derive(Clone, Default)]
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
    repo: Option<Repository>,
}

impl Webhooks {
    pub fn new(settings: &[WebhookSettings], repo: Repository) -> Self {
        let endpoints = settings
            .iter()
            .map(|s| {
                let report = EndpointReport { url: s.url.clone(), events: s.events.clone(), ..Default::default() };
                let digest = blake3::hash(s.url.as_bytes()).to_hex();
                let topic = format!("webhook:{}", &digest[..16]);
                Arc::new(Endpoint { settings: s.clone(), topic, report: Mutex::new(report) })
            })
            .collect();
        Self { endpoints, repo: Some(repo) }
    }

    /// Starts the outbox recorder on the events of `bus` this process
    /// makes, and one sender per endpoint, named `worker` in leases.
    pub fn start(
        &self,
        bus: &crate::queue::EventBus,
        metrics: &Metrics,
        worker: &str,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(repo) = self.repo.clone().filter(|_| !self.endpoints.is_empty()) else { return Vec::new() };
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vidcache-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        let recorded = Arc::new(tokio::sync::Notify::new());
        let mut tasks = vec![tokio::spawn(record(
            bus.subscribe_originated(),
            self.endpoints.clone(),
            repo.clone(),
            metrics.clone(),
            recorded.clone(),
        ))];
        for endpoint in &self.endpoints {
            let sender = Sender {
                endpoint: endpoint.clone(),
                client: client.clone(),
                repo: repo.clone(),
                metrics: metrics.clone(),
                worker: format!("{worker}-webhooks"),
            };
            tasks.push(tokio::spawn(sender.run(recorded.clone())));
        }
        tasks
    }

    /// Each endpoint's report; the outbox's figures read now.
    pub async fn reports(&self) -> Vec<EndpointReport> {
        let mut reports = Vec::new();
        for endpoint in &self.endpoints {
            let mut report = endpoint.report.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(repo) = &self.repo {
                for state in [JobState::Ready, JobState::Leased] {
                    report.pending += repo.jobs_in(&endpoint.topic, state, 10_000).await.map_or(0, |j| j.len() as u64);
                }
                let dead = repo.jobs_in(&endpoint.topic, JobState::Dead, LOG_LEN as u64).await.unwrap_or_default();
                report.dead = dead
                    .into_iter()
                    .map(|job| {
                        let event: Value = serde_json::from_str(&job.payload).unwrap_or_default();
                        DeadDelivery {
                            event: event["type"].as_str().unwrap_or_default().to_owned(),
                            key: event["hash"].as_str().map(str::to_owned),
                            project: event["project"].as_str().map(str::to_owned),
                            attempts: job.attempts,
                            error: job.last_error,
                            at: job.updated_at.to_rfc3339(),
                        }
                    })
                    .collect();
            }
            reports.push(report);
        }
        reports
    }
}

/// Records a delivery per endpoint for each event this process makes.
async fn record(
    mut events: tokio::sync::broadcast::Receiver<Arc<Value>>,
    endpoints: Vec<Arc<Endpoint>>,
    repo: Repository,
    metrics: Metrics,
    recorded: Arc<tokio::sync::Notify>,
) {
    loop {
        match events.recv().await {
            Ok(event) => {
                let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
                let id = match event.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_owned(),
                    None => crate::domain::UploadId::generate().as_str().to_owned(),
                };
                for endpoint in endpoints.iter().filter(|e| e.wants(kind)) {
                    if let Err(e) = repo.enqueue_job(&endpoint.topic, &id, &event).await {
                        tracing::warn!(error = %e, url = %endpoint.settings.url, "a webhook delivery could not be recorded");
                        metrics.webhooks.with_label_values(&["skipped"]).inc();
                        endpoint.report.lock().unwrap_or_else(|e| e.into_inner()).skipped += 1;
                    }
                }
                recorded.notify_waiters();
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "the webhook outbox fell behind; events skipped");
                metrics.webhooks.with_label_values(&["skipped"]).inc_by(n);
                for endpoint in &endpoints {
                    endpoint.report.lock().unwrap_or_else(|e| e.into_inner()).skipped += n;
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Sends one endpoint's deliveries, one attempt per lease.
struct Sender {
    endpoint: Arc<Endpoint>,
    client: reqwest::Client,
    repo: Repository,
    metrics: Metrics,
    worker: String,
}

impl Sender {
    async fn run(self, recorded: Arc<tokio::sync::Notify>) {
        let lease = chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(30));
        loop {
            let woken = recorded.notified();
            match self.repo.lease_job(&self.endpoint.topic, &self.worker, lease).await {
                Ok(Some(job)) => self.attempt(job).await,
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE, woken).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leasing a webhook delivery failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn attempt(&self, job: crate::storage::Job) {
        let event = &job.payload;
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
        let body = serde_json::to_vec(event).unwrap_or_default();
        let settings = &self.endpoint.settings;
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let sent = self
            .client
            .post(&settings.url)
            .header("content-type", "application/json")
            .header("vidcache-signature", signature(&settings.secret, t, &body))
            .header("vidcache-event", &kind)
            .body(body)
            .send()
            .await;
        let (status, error) = match sent {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
            Ok(response) => (Some(response.status().as_u16()), Some(format!("answered {}", response.status()))),
            Err(e) => (None, Some(e.without_url().to_string())),
        };
        let delivery = |result| Delivery {
            event: kind.clone(),
            key: event.get("hash").and_then(Value::as_str).map(str::to_owned),
            project: event.get("project").and_then(Value::as_str).map(str::to_owned),
            attempts: job.attempts,
            result,
            status,
            error: error.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let Some(reason) = &error else {
            if let Err(e) = self.repo.ack_job(job.id).await {
                tracing::warn!(error = %e, "a delivered webhook could not be recorded; it will be sent again");
            }
            self.metrics.webhooks.with_label_values(&["delivered"]).inc();
            self.endpoint.record(delivery("delivered"));
            return;
        };
        let shift = job.attempts.saturating_sub(1).min(16);
        let backoff = (FIRST_BACKOFF * 2u32.pow(shift)).min(MAX_BACKOFF);
        let backoff = chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::seconds(60));
        match self.repo.fail_job(&job, reason, MAX_ATTEMPTS, backoff).await {
            Ok(JobState::Dead) => {
                tracing::warn!(url = %settings.url, event = %kind, error = %reason, "webhook delivery given up after {MAX_ATTEMPTS} attempts");
                self.metrics.webhooks.with_label_values(&["failed"]).inc();
                self.endpoint.record(delivery("failed"));
            }
            Ok(_) => {
                tracing::info!(url = %settings.url, event = %kind, attempt = job.attempts, error = %reason, "webhook delivery failed; will retry");
            }
            Err(e) => tracing::warn!(error = %e, "a failed webhook delivery could not be recorded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_or_old_time_does_not() {
        let header = signature("s3cret", 1_700_000_000, b"{\"type\":\"x\"}");
        assert!(verify("s3cret", &header, b"{\"type\":\"x\"}", 1_700_000_100, 300));
        assert!(!verify("s3cret", &header, b"{\"type\":\"y\"}", 1_700_000_100, 300), "another body");
        assert!(!verify("other", &header, b"{\"type\":\"x\"}", 1_700_000_100, 300), "another secret");
        assert!(!verify("s3cret", &header, b"{\"type\":\"x\"}", 1_700_001_000, 300), "too old");
        assert!(!verify("s3cret", "t=1,v1=zz", b"", 1, 300));
    }
}
