//! The Kafka backend (rdkafka, with its bundled librdkafka).
//!
//! - One idempotent producer sends jobs, retries, dead letters and events.
//!   A full local queue makes a send wait (up to `kafka.queue_timeout_ms`):
//!   backpressure, not loss.
//! - Transcode consumers share one consumer group. Offsets are stored by
//!   hand (`enable.auto.offset.store=false`) only after a job's handler
//!   returned, and committed in the background from there: a worker that
//!   dies mid-job has its partition's job delivered again to another one.
//!   A failed attempt is sent again as a new message with `attempt + 1`;
//!   the last one goes to the DLQ topic.
//! - The relay moves jobs from the database outbox (`jobs`, topic
//!   `transcode`) to the broker, acknowledging each only once the broker
//!   has it.

use super::{EventBus, IngestHandler, JobHandler, TRANSCODE_TOPIC, TranscodeJob};
use crate::config::{KafkaSettings, TranscodeSettings};
use crate::storage::Repository;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

use super::QueueError;

/// The topic definitions `kafka/create-topics.py` also reads.
const TOPICS_JSON: &str = include_str!("../../kafka/topics.json");

#[derive(Debug, Clone)]
pub(super) struct Topics {
    pub transcode: String,
    pub dlq: String,
    pub ingest: String,
    pub events: String,
}

impl Topics {
    fn new(prefix: &str) -> Self {
        Self {
            transcode: format!("{prefix}transcode"),
            dlq: format!("{prefix}transcode.dlq"),
            ingest: format!("{prefix}ingest"),
            events: format!("{prefix}events"),
        }
    }
}

pub(super) struct Kafka {
    pub settings: KafkaSettings,
    pub topics: Topics,
    producer: FutureProducer,
    /// True once the topics exist (created at start-up, or by an operator).
    ready: tokio::sync::watch::Sender<bool>,
    /// Retries and dead letters given up on (`deliver`).
    skipped: prometheus::IntCounter,
}

fn kafka_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Kafka(e.to_string())
}

impl Kafka {
    fn base_config(settings: &KafkaSettings) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", settings.brokers.trim());
        for (key, value) in settings.property_pairs() {
            config.set(key, value);
        }
        config
    }

    /// The client. It does not wait for a broker: creating the topics is
    /// retried in the background until one answers, and consumers, the
    /// relay and the event sender start once they exist. A daemon can
    /// therefore start before its broker (`/readyz` says when it is there).
    pub fn connect(settings: &KafkaSettings, skipped: prometheus::IntCounter) -> Result<Arc<Self>, QueueError> {
        let topics = Topics::new(&settings.topic_prefix);
        let mut config = Self::base_config(settings);
        // Idempotence keeps retried sends from duplicating or reordering;
        // acks=all waits for the replicas.
        config.set("enable.idempotence", "true").set("acks", "all").set("compression.type", "zstd");
        if !settings.has_property("message.timeout.ms") {
            // A broker that is down for a restart is waited for.
            config.set("message.timeout.ms", "300000");
        }
        let producer: FutureProducer = config.create().map_err(kafka_err)?;
        let (ready, _) = tokio::sync::watch::channel(!settings.create_topics);
        let kafka = Arc::new(Self { settings: settings.clone(), topics, producer, ready, skipped });
        if settings.create_topics {
            let kafka = kafka.clone();
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(500);
                loop {
                    match kafka.create_topics().await {
                        Ok(()) => {
                            kafka.ready.send_replace(true);
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "kafka topics not created yet; retrying"),
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            });
        }
        Ok(kafka)
    }

    /// Waits until the topics exist.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Creates the topics of `kafka/topics.json` under our prefix; those
    /// that exist already are left as they are.
    async fn create_topics(&self) -> Result<(), QueueError> {
        #[derive(serde::Deserialize)]
        struct Definition {
            name: String,
            partitions: i32,
            #[serde(default)]
            config: std::collections::BTreeMap<String, String>,
        }
        let definitions: Vec<Definition> = serde_json::from_str(TOPICS_JSON).map_err(kafka_err)?;
        let admin: AdminClient<DefaultClientContext> = Self::base_config(&self.settings).create().map_err(kafka_err)?;
        let names: Vec<String> =
            definitions.iter().map(|d| format!("{}{}", self.settings.topic_prefix, d.name)).collect();
        let new: Vec<NewTopic> = definitions
            .iter()
            .zip(&names)
            .map(|(d, name)| {
                let mut topic = NewTopic::new(name, d.partitions, TopicReplication::Fixed(1));
                for (k, v) in &d.config {
                    topic = topic.set(k, v);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &options).await.map_err(kafka_err)? {
            match result {
                Ok(name) => tracing::info!(topic = %name, "kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(QueueError::Kafka(format!("creating topic {name}: {code}"))),
            }
        }
        Ok(())
    }

    /// Sends `value` to `topic` under `key` and waits until the broker has it.
    pub async fn send(&self, topic: &str, key: &str, value: &serde_json::Value) -> Result<(), QueueError> {
        let payload = value.to_string();
        let record = FutureRecord::to(topic).key(key).payload(&payload);
        let timeout = Timeout::After(Duration::from_millis(self.settings.queue_timeout_ms));
        self.producer.send(record, timeout).await.map(|_| ()).map_err(|(e, _)| kafka_err(e))
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        if !*self.ready.borrow() {
            return Err(QueueError::Kafka("the topics do not exist yet".into()));
        }
        let producer = self.producer.clone();
        let topic = self.topics.transcode.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.client().fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(3))).map(|_| ())
        })
        .await
        .map_err(kafka_err)?
        .map_err(kafka_err)
    }

    fn consumer(&self, group: &str, extra: &[(&str, &str)]) -> Result<StreamConsumer, QueueError> {
        let mut config = Self::base_config(&self.settings);
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        if !self.settings.has_property("max.poll.interval.ms") {
            // A transcode may take long; the consumer is not stuck meanwhile.
            config.set("max.poll.interval.ms", "86400000");
        }
        for (k, v) in extra {
            config.set(*k, *v);
        }
        config.create().map_err(kafka_err)
    }

    /// A consumer of `group` subscribed to `topic`, once the topics exist;
    /// `None` (logged) if that fails.
    async fn subscribed(&self, group: &str, topic: &str) -> Option<StreamConsumer> {
        self.wait_ready().await;
        let consumer = self
            .consumer(group, &[])
            .and_then(|c| c.subscribe(&[topic]).map(|()| c).map_err(kafka_err))
            .inspect_err(|e| tracing::error!(error = %e, %topic, %group, "the kafka consumer could not start"))
            .ok()?;
        tracing::info!(%topic, %group, "kafka consumer started");
        Some(consumer)
    }

    /// Sends a job's retry or dead letter, trying again while the error can
    /// go away (each try waits up to `message.timeout.ms` for the broker),
    /// at most `DELIVERY_TRIES` times. A final error (see `is_final`), or
    /// the last try failing, gives up: logged, counted in
    /// `vidcache_kafka_messages_skipped_total`, and `false`, so a consumer
    /// moves on instead of stalling on one message forever.
    async fn deliver(&self, topic: &str, key: &str, value: &serde_json::Value) -> bool {
        let payload = value.to_string();
        let timeout = Timeout::After(Duration::from_millis(self.settings.queue_timeout_ms));
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=DELIVERY_TRIES {
            let record = FutureRecord::to(topic).key(key).payload(&payload);
            match self.producer.send(record, timeout).await {
                Ok(_) => return true,
                Err((e, _)) if is_final(e.rdkafka_error_code()) || attempt == DELIVERY_TRIES => {
                    tracing::error!(error = %e, %topic, %key, attempt, "a message could not be delivered; it is skipped");
                    self.skipped.inc();
                    return false;
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, %topic, attempt, "kafka send failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        false
    }
}

/// Sends of one retry or dead letter before it is given up on.
const DELIVERY_TRIES: u32 = 5;

/// A producer error that no retry fixes for this message, as vector's Kafka
/// sink sorts them: the message is invalid or too large, the topic is not
/// ours to write or not valid, the broker does not speak the request, or
/// the producer is in a fatal state. Anything else (the broker away, a
/// time-out, a full queue, a leader election, a topic still being
/// created) may go away by itself.
fn is_final(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        Some(
            C::BadMessage
                | C::InvalidArgument
                | C::Fatal
                | C::InvalidMessage
                | C::InvalidMessageSize
                | C::MessageSizeTooLarge
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::UnsupportedVersion
                | C::PolicyViolation
                | C::InvalidRecord
        )
    )
}

/// The next message; a failed receive (the broker away, a rebalance) is
/// logged and tried again after a pause.
async fn next_message(consumer: &StreamConsumer) -> rdkafka::message::BorrowedMessage<'_> {
    loop {
        match consumer.recv().await {
            Ok(message) => return message,
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Forwards transcode jobs from the database outbox to the broker.
pub(super) async fn relay(kafka: Arc<Kafka>, repo: Repository, worker: Arc<str>, queued: Arc<tokio::sync::Notify>) {
    kafka.wait_ready().await;
    let lease = chrono::Duration::seconds(60);
    let mut purged_at = std::time::Instant::now();
    loop {
        // Relayed jobs are done outbox rows: they go after a day too.
        if purged_at.elapsed() >= super::embedded::PURGE_EVERY {
            purged_at = std::time::Instant::now();
            super::embedded::purge(&repo).await;
        }
        match repo.lease_job(TRANSCODE_TOPIC, &format!("relay-{worker}"), lease).await {
            Ok(Some(job)) => {
                let result = kafka.send(&kafka.topics.transcode, &job.key, &job.payload).await;
                let recorded = match result {
                    Ok(()) => repo.ack_job(job.id).await,
                    Err(e) => {
                        tracing::warn!(error = %e, key = %job.key, "relaying a job to kafka failed; will retry");
                        repo.fail_job(&job, &e.to_string(), u32::MAX, chrono::Duration::seconds(2)).await.map(|_| ())
                    }
                };
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "recording a relayed job failed");
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), queued.notified()).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the outbox could not be read");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One transcode consumer of the group: a job at a time, its offset stored
/// once it is handled (done, sent again for a retry, or dead-lettered).
/// Once `shutdown` is asked for it takes no new message; the job in hand is
/// finished and its offset stored, and dropping the consumer commits it.
pub(super) async fn consume_jobs(
    kafka: Arc<Kafka>,
    settings: Arc<TranscodeSettings>,
    handler: Arc<dyn JobHandler>,
    mut shutdown: super::Shutdown,
) {
    let Some(consumer) = kafka.subscribed(&kafka.settings.group_id, &kafka.topics.transcode).await else { return };
    loop {
        let message = tokio::select! {
            biased;
            () = shutdown.requested() => return,
            message = next_message(&consumer) => message,
        };
        let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        match TranscodeJob::parse(message.payload().unwrap_or_default()) {
            Err(error) => {
                tracing::warn!(%error, "a message on the transcode topic is not a job: dead-letter queue");
                let dead = serde_json::json!({
                    "type": "transcode", "version": 1, "invalid": String::from_utf8_lossy(message.payload().unwrap_or_default()),
                    "last_error": error,
                });
                kafka.deliver(&kafka.topics.dlq, &key, &dead).await;
            }
            Ok(job) => match handler.handle(job.clone()).await {
                Ok(()) => {}
                Err(error) if job.attempt < settings.max_attempts => {
                    tracing::info!(hash = %job.hash, attempt = job.attempt, %error, "the job failed; it will be tried again");
                    tokio::time::sleep(Duration::from_secs(settings.retry_delay_secs)).await;
                    let retry =
                        TranscodeJob { attempt: job.attempt + 1, last_error: Some(error.clone()), ..job.clone() };
                    if !kafka.deliver(&kafka.topics.transcode, &job.hash, &retry.to_json()).await {
                        // The retry cannot be sent: the job ends here, as a
                        // dead letter if that can be sent, and failed either way.
                        let dead = TranscodeJob { last_error: Some(error.clone()), ..job.clone() };
                        kafka.deliver(&kafka.topics.dlq, &job.hash, &dead.to_json()).await;
                        handler.dead(job, error).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(hash = %job.hash, attempt = job.attempt, %error, "the job failed its last attempt: dead-letter queue");
                    let dead = TranscodeJob { last_error: Some(error.clone()), ..job.clone() };
                    kafka.deliver(&kafka.topics.dlq, &job.hash, &dead.to_json()).await;
                    handler.dead(job, error).await;
                }
            },
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %e, "storing the offset failed; the job may be delivered again");
        }
    }
}

/// The consumer of outside producers' ingest requests.
pub(super) async fn consume_ingest(kafka: Arc<Kafka>, handler: Arc<dyn IngestHandler>) {
    let group = format!("{}-ingest", kafka.settings.group_id);
    let Some(consumer) = kafka.subscribed(&group, &kafka.topics.ingest).await else { return };
    loop {
        let message = next_message(&consumer).await;
        let request = serde_json::from_slice(message.payload().unwrap_or_default())
            .unwrap_or_else(|e| serde_json::json!({"invalid": e.to_string()}));
        handler.ingest(request).await;
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %e, "storing the offset failed; the request may be handled again");
        }
    }
}

/// Reads the events topic from its end, without a group's commits, into
/// this process's bus.
pub(super) async fn tail_events(kafka: Arc<Kafka>, bus: EventBus) {
    let group = format!("{}-events-{}", kafka.settings.group_id, crate::domain::UploadId::generate());
    let consumer = match kafka.consumer(&group, &[("enable.auto.commit", "false")]) {
        Ok(c) => Arc::new(c),
        Err(e) => return tracing::error!(error = %e, "the events consumer could not be created"),
    };
    // Partitions are assigned by hand, at their end: no group to join.
    kafka.wait_ready().await;
    let topic = kafka.topics.events.clone();
    let assigned = {
        let consumer = consumer.clone();
        tokio::task::spawn_blocking(move || -> Result<(), QueueError> {
            let metadata =
                consumer.fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(10))).map_err(kafka_err)?;
            let mut list = TopicPartitionList::new();
            for t in metadata.topics() {
                for p in t.partitions() {
                    list.add_partition_offset(t.name(), p.id(), Offset::End).map_err(kafka_err)?;
                }
            }
            consumer.assign(&list).map_err(kafka_err)
        })
        .await
    };
    if let Err(e) = assigned.map_err(kafka_err).and_then(|r| r) {
        return tracing::error!(error = %e, "the events topic could not be read");
    }
    loop {
        match consumer.recv().await {
            Ok(message) => {
                if let Ok(body) = serde_json::from_slice(message.payload().unwrap_or_default()) {
                    bus.deliver_locally(body);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "kafka receive failed (events)");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_no_retry_fixes_are_final_and_outages_are_not() {
        for code in
            [RDKafkaErrorCode::MessageSizeTooLarge, RDKafkaErrorCode::TopicAuthorizationFailed, RDKafkaErrorCode::Fatal]
        {
            assert!(is_final(Some(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(!is_final(Some(code)), "{code:?}");
        }
        assert!(!is_final(None), "an error with no code (a cancelled future) may go away");
    }

    /// A message the producer refuses for good (larger than
    /// `message.max.bytes`) is given up on at once and counted, rather than
    /// sent again forever: a consumer never stalls on it. No broker is
    /// needed: librdkafka refuses it before sending.
    #[tokio::test]
    async fn a_message_refused_for_good_is_skipped_and_counted() {
        let settings = KafkaSettings {
            brokers: "127.0.0.1:9".into(),
            create_topics: false,
            properties: vec!["message.max.bytes=1000".into()],
            ..crate::config::Settings::defaults_only().unwrap().kafka
        };
        let skipped = prometheus::IntCounter::new("skipped", "test").unwrap();
        let kafka = Kafka::connect(&settings, skipped.clone()).unwrap();
        let big = serde_json::json!({"padding": "x".repeat(5000)});
        let started = std::time::Instant::now();
        assert!(!kafka.deliver("vidcache.transcode", "k", &big).await);
        assert_eq!(skipped.get(), 1);
        assert!(started.elapsed() < Duration::from_secs(5), "no retries: {:?}", started.elapsed());
    }
}
