//! Logs and metrics. `Metrics` owns typed Prometheus handles and its own
//! `Registry`, so every test app has separate counters. Names follow
//! `vidcache_<name>_<unit>` with low-cardinality labels.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub uploads_started: IntCounter,
    pub uploads_completed: IntCounter,
    pub uploads_failed: IntCounterVec,
    pub upload_received_bytes: IntCounter,
    pub duplicates: IntCounter,
    /// Uploads found to near-duplicate a stored video (merged or kept).
    pub near_duplicates: IntCounter,
    /// Perceptual matches merged into a stored video, their bytes kept as a
    /// variant; and variants made their own video again.
    pub perceptual_merges: IntCounter,
    pub unmerges: IntCounter,
    /// Uploads whose pictures matched a stored video but whose sound did not.
    pub audio_vetoes: IntCounter,
    pub tone_vetoes: IntCounter,
    /// Videos stored on a partial analysis whose complete one failed.
    pub damaged_after_commit: IntCounter,
    /// Finalizes that used a partial analysis while the rest went on.
    pub analyses_handed_over: IntCounter,
    /// Objects of shared uploads committed as their pieces in the bucket
    /// (a layout) rather than uploaded from a spool.
    pub objects_laid_out: IntCounter,
    /// Bytes of shared uploads fetched from the bucket at finalize (the
    /// pieces other daemons took).
    pub shared_bytes_fetched: IntCounter,
    pub upload_finalize_seconds: Histogram,
    pub http_request_duration_seconds: HistogramVec,
    /// Where a committed upload's media info came from: `stream` (probed
    /// while the bytes arrived) or `file` (probed at finalize).
    pub probes: IntCounterVec,
    /// Events published, by type.
    pub events: IntCounterVec,
    /// Events that could not be delivered to Kafka.
    pub events_dropped: IntCounter,
    /// Job retries and dead letters that could not be sent to Kafka (a
    /// final error, or every try failed) and were given up on.
    pub kafka_messages_skipped: IntCounter,
    /// Transcode jobs by outcome: `completed`, `reused` (outputs existed),
    /// `attempt_failed`, `failed` (dead-lettered).
    pub transcodes: IntCounterVec,
    pub transcode_seconds: Histogram,
    /// Mutating calls and every refusal, by route, method and result
    /// (`ok`, `refused`, `failed`): the audit log's counter.
    pub audit: IntCounterVec,
    /// Webhook deliveries by result: `delivered`, `failed` (given up after
    /// every retry), `skipped` (the endpoint fell too far behind).
    pub webhooks: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("vidcache".into()), None).expect("a static prefix is valid");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definitions are valid");
            registry.register(Box::new(c.clone())).expect("each metric is registered once");
            c
        };
        let uploads_started = counter("uploads_started_total", "Upload sessions opened.");
        let uploads_completed = counter("uploads_completed_total", "Uploads finalized as new or duplicate.");
        let upload_received_bytes =
            counter("upload_received_bytes_total", "Body bytes received by uploads and ingests.");
        let duplicates =
            counter("duplicates_total", "Uploads whose bytes (or, perceptually, video) were already stored.");
        let near_duplicates = counter("near_duplicates_total", "Uploads that near-duplicate a stored video.");
        let perceptual_merges = counter(
            "perceptual_merges_total",
            "Uploads merged into a stored video on a perceptual match, their bytes kept as a variant.",
        );
        let unmerges = counter("unmerges_total", "Variants made their own video again (POST /video/{hash}/unmerge).");
        let audio_vetoes =
            counter("audio_vetoes_total", "Uploads whose pictures matched a stored video and whose sound did not.");
        let tone_vetoes = counter(
            "tone_vetoes_total",
            "Uploads whose picture hashes matched a stored video and whose brightness levels did not.",
        );
        let objects_laid_out = counter(
            "objects_laid_out_total",
            "Objects of shared uploads committed as their pieces in the bucket (a layout), with no byte moved.",
        );
        let shared_bytes_fetched = counter(
            "shared_bytes_fetched_total",
            "Bytes of shared uploads fetched from the bucket at finalize (pieces this daemon did not take).",
        );
        let analyses_handed_over = counter(
            "analyses_handed_over_total",
            "Finalizes that used a partial analysis while the pass went on in the background.",
        );
        let damaged_after_commit = counter(
            "damaged_after_commit_total",
            "Videos stored on a partial analysis whose complete analysis then found damage.",
        );
        let uploads_failed =
            IntCounterVec::new(Opts::new("uploads_failed_total", "Uploads that ended in failure."), &["reason"])
                .expect("static metric definitions are valid");
        registry.register(Box::new(uploads_failed.clone())).expect("each metric is registered once");
        let probes = IntCounterVec::new(
            Opts::new("probes_total", "Media probes of committed uploads, by source: stream (early) or file."),
            &["source"],
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(probes.clone())).expect("each metric is registered once");
        let upload_finalize_seconds = Histogram::with_opts(
            HistogramOpts::new("upload_finalize_seconds", "From the last body byte to the ingest result.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(upload_finalize_seconds.clone())).expect("each metric is registered once");
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route pattern.")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
            &["method", "route", "status"],
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(http_request_duration_seconds.clone())).expect("each metric is registered once");
        let events = IntCounterVec::new(Opts::new("events_total", "Events published, by type."), &["type"])
            .expect("static metric definitions are valid");
        registry.register(Box::new(events.clone())).expect("each metric is registered once");
        let events_dropped = counter("events_dropped_total", "Events that could not be delivered to Kafka.");
        let kafka_messages_skipped = counter(
            "kafka_messages_skipped_total",
            "Job retries and dead letters that could not be sent to Kafka and were given up on.",
        );
        let transcodes = IntCounterVec::new(
            Opts::new("transcodes_total", "Transcode jobs by outcome: completed, reused, attempt_failed, failed."),
            &["outcome"],
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(transcodes.clone())).expect("each metric is registered once");
        let transcode_seconds = Histogram::with_opts(
            HistogramOpts::new("transcode_seconds", "Time to transcode and publish a video's renditions.")
                .buckets(vec![1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]),
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(transcode_seconds.clone())).expect("each metric is registered once");
        let audit = IntCounterVec::new(
            Opts::new(
                "audit_events_total",
                "Mutating calls and refused calls, by route, method and result (ok, refused, failed).",
            ),
            &["route", "method", "result"],
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(audit.clone())).expect("each metric is registered once");
        let webhooks = IntCounterVec::new(
            Opts::new("webhook_deliveries_total", "Webhook deliveries by result: delivered, failed, skipped."),
            &["result"],
        )
        .expect("static metric definitions are valid");
        registry.register(Box::new(webhooks.clone())).expect("each metric is registered once");
        Self {
            webhooks,
            audit,
            events,
            events_dropped,
            kafka_messages_skipped,
            transcodes,
            transcode_seconds,
            probes,
            registry,
            uploads_started,
            uploads_completed,
            uploads_failed,
            upload_received_bytes,
            duplicates,
            near_duplicates,
            perceptual_merges,
            unmerges,
            audio_vetoes,
            tone_vetoes,
            damaged_after_commit,
            analyses_handed_over,
            objects_laid_out,
            shared_bytes_fetched,
            upload_finalize_seconds,
            http_request_duration_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `filter`.
/// Safe to call more than once (later calls do nothing), which tests rely on.
pub fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
