//! Signed webhooks (section 8): every event this process sees (the same
//! ones `GET /events` streams) is POSTed to each configured endpoint as
//! its JSON, with `Vidcache-Signature: t=<unix>,v1=<hex>`, where the hex is
//! HMAC-SHA256(endpoint secret, `"{t}.{body}"`), as Stripe signs them. A
//! receiver recomputes it over the raw body and compares in constant time,
//! and refuses a `t` too far from its clock (replays).
//!
//! One task per endpoint sends its events in order. A failed delivery (no
//! answer, or not 2xx) is retried with exponential backoff, up to
//! `MAX_ATTEMPTS`; then it is given up on, counted and logged. The outcome
//! of each is kept (the last `LOG_LEN`) and shown at `GET /api/v1/webhooks`.
//! Deliveries are at most once per attempt series and live in memory: a
//! restart forgets what was pending (the events topic in Kafka is the
//! durable record).

use crate::config::WebhookSettings;
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
    pub delivered: u64,
    pub failed: u64,
    /// Events this endpoint fell too far behind to receive.
    pub skipped: u64,
    pub recent: VecDeque<Delivery>,
}

struct Endpoint {
    settings: WebhookSettings,
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

/// The configured endpoints and their senders.
#[derive(Clone, Default)]
pub struct Webhooks {
    endpoints: Vec<Arc<Endpoint>>,
}

impl Webhooks {
    pub fn new(settings: &[WebhookSettings]) -> Self {
        let endpoints = settings
            .iter()
            .map(|s| {
                let report = EndpointReport { url: s.url.clone(), events: s.events.clone(), ..Default::default() };
                Arc::new(Endpoint { settings: s.clone(), report: Mutex::new(report) })
            })
            .collect();
        Self { endpoints }
    }

    /// Starts one sender per endpoint on the events of `bus`.
    pub fn start(&self, bus: &crate::queue::EventBus, metrics: &Metrics) -> Vec<tokio::task::JoinHandle<()>> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vidcache-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client");
        self.endpoints
            .iter()
            .map(|endpoint| {
                let (endpoint, client, metrics) = (endpoint.clone(), client.clone(), metrics.clone());
                let mut events = bus.subscribe();
                tokio::spawn(async move {
                    loop {
                        match events.recv().await {
                            Ok(event) => {
                                let kind = event.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
                                if endpoint.wants(&kind) {
                                    let delivery = deliver(&client, &endpoint.settings, &kind, &event).await;
                                    metrics.webhooks.with_label_values(&[delivery.result]).inc();
                                    endpoint.record(delivery);
                                }
                            }
                            Err(RecvError::Lagged(n)) => {
                                tracing::warn!(url = %endpoint.settings.url, skipped = n, "a webhook endpoint fell behind; events skipped");
                                endpoint.report.lock().unwrap_or_else(|e| e.into_inner()).skipped += n;
                                metrics.webhooks.with_label_values(&["skipped"]).inc_by(n);
                            }
                            Err(RecvError::Closed) => return,
                        }
                    }
                })
            })
            .collect()
    }

    pub fn reports(&self) -> Vec<EndpointReport> {
        self.endpoints.iter().map(|e| e.report.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }
}

/// Sends one event, retrying with backoff; the outcome.
async fn deliver(client: &reqwest::Client, endpoint: &WebhookSettings, kind: &str, event: &Value) -> Delivery {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let key = event.get("hash").and_then(Value::as_str).map(str::to_owned);
    let mut backoff = FIRST_BACKOFF;
    let mut last = (None, None);
    for attempt in 1..=MAX_ATTEMPTS {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let sent = client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("vidcache-signature", signature(&endpoint.secret, t, &body))
            .header("vidcache-event", kind)
            .body(body.clone())
            .send()
            .await;
        last = match sent {
            Ok(response) if response.status().is_success() => {
                return Delivery {
                    event: kind.to_owned(),
                    key,
                    attempts: attempt,
                    result: "delivered",
                    status: Some(response.status().as_u16()),
                    error: None,
                    at: chrono::Utc::now().to_rfc3339(),
                };
            }
            Ok(response) => (Some(response.status().as_u16()), Some(format!("answered {}", response.status()))),
            Err(e) => (None, Some(e.without_url().to_string())),
        };
        tracing::info!(url = %endpoint.url, event = kind, attempt, error = ?last.1, "webhook delivery failed");
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    tracing::warn!(url = %endpoint.url, event = kind, error = ?last.1, "webhook delivery given up after {MAX_ATTEMPTS} attempts");
    Delivery {
        event: kind.to_owned(),
        key,
        attempts: MAX_ATTEMPTS,
        result: "failed",
        status: last.0,
        error: last.1,
        at: chrono::Utc::now().to_rfc3339(),
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
