//! Events of the contract (`upload.completed`, `transcode.progress`, ...):
//! JSON with `"type"` and `"version": 1`, keyed by content hash. They go to
//! the Kafka events topic when there is one, and to this process's
//! subscribers (`GET /events`). Events are notifications, not jobs: one that
//! cannot be delivered is logged and counted, never retried forever.

use super::kafka::Kafka;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Events a slow `GET /events` client may fall behind by before it skips.
const SUBSCRIBER_BACKLOG: usize = 1024;
/// Events waiting for the broker before new ones are dropped.
const SEND_BACKLOG: usize = 10_000;

/// One event: `type`, `version`, `at`, `id` (unique: a consumer told twice,
/// as at-least-once delivery may, knows it), the key (hash or request id)
/// and its own fields.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub body: Value,
}

impl Event {
    /// An event of `kind` about `key`, with `fields` (an object) merged in.
    pub fn new(kind: &str, key: &str, fields: Value) -> Self {
        let mut body = Map::new();
        body.insert("type".into(), json!(kind));
        body.insert("version".into(), json!(1));
        body.insert("at".into(), json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
        body.insert("id".into(), json!(crate::domain::UploadId::generate().as_str()));
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        Self { key: key.to_owned(), body: Value::Object(body) }
    }

    pub fn kind(&self) -> &str {
        self.body.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<Value>>,
    /// The events this process made (not those the Kafka tail brings from
    /// other daemons): what its webhook outbox records.
    originated: broadcast::Sender<Arc<Value>>,
    /// With Kafka: events go to the broker, in order, from one task.
    outgoing: Option<mpsc::Sender<Event>>,
    metrics: crate::telemetry::Metrics,
}

impl EventBus {
    pub(super) fn new(kafka: Option<Arc<Kafka>>, metrics: crate::telemetry::Metrics) -> Self {
        let (local, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        let (originated, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        let outgoing = kafka.map(|kafka| {
            let (tx, mut rx) = mpsc::channel::<Event>(SEND_BACKLOG);
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Events wait here (up to the backlog) until the topics exist.
                kafka.wait_ready().await;
                while let Some(event) = rx.recv().await {
                    if let Err(e) = kafka.send(&kafka.topics.events, &event.key, &event.body).await {
                        metrics.events_dropped.inc();
                        tracing::warn!(error = %e, kind = event.kind(), "an event could not be sent to Kafka");
                    }
                }
            });
            tx
        });
        Self { local, originated, outgoing, metrics }
    }

    /// Sends `event` on: to Kafka (whose tail brings it back to local
    /// subscribers), or straight to local subscribers. Never blocks.
    pub fn publish(&self, event: Event) {
        tracing::debug!(kind = event.kind(), key = %event.key, "event");
        self.metrics.events.with_label_values(&[event.kind()]).inc();
        if self.originated.receiver_count() > 0 {
            let _ = self.originated.send(Arc::new(event.body.clone()));
        }
        match &self.outgoing {
            Some(tx) => {
                if tx.try_send(event).is_err() {
                    self.metrics.events_dropped.inc();
                    tracing::warn!("the event backlog to Kafka is full; an event was dropped");
                }
            }
            None => self.deliver_locally(event.body),
        }
    }

    pub(super) fn deliver_locally(&self, body: Value) {
        // No subscriber is not an error.
        let _ = self.local.send(Arc::new(body));
    }

    /// Events from now on, for `GET /events`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.local.subscribe()
    }

    /// The events this process makes from now on (each made once, on one
    /// daemon), for the webhook outbox.
    pub fn subscribe_originated(&self) -> broadcast::Receiver<Arc<Value>> {
        self.originated.subscribe()
    }
}
