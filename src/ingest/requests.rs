//! Ingest requests from outside producers on the Kafka `ingest` topic:
//! `{"type": "ingest", "url", "bucket", "prefix"?, "meta"?, "request_id"?}`.
//! Each is checked and fetched exactly as `POST /ingest` would be (same
//! guard, same limits). The result goes out on the events topic with the
//! request's `request_id`: `upload.completed` or `video.duplicate` from the
//! committer (the id rides in the stored meta as `request_id`), or
//! `ingest.failed` from here.

use super::{Fetcher, IngestRequest};
use crate::domain::{Bucket, Prefix, SourceUrl};
use crate::queue::{Event, EventBus, IngestHandler};
use crate::upload::IngestStatus;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

pub struct KafkaIngest {
    pub fetcher: Fetcher,
    pub events: EventBus,
}

impl IngestHandler for KafkaIngest {
    fn ingest(&self, request: Value) -> BoxFuture<'static, ()> {
        let (fetcher, events) = (self.fetcher.clone(), self.events.clone());
        Box::pin(async move {
            let request_id = request.get("request_id").cloned().unwrap_or(Value::Null);
            let key = request_id.as_str().map(str::to_owned).unwrap_or_default();
            let failed = |code: &str, message: String| {
                tracing::info!(%code, %message, request_id = %key, "an ingest request failed");
                Event::new("ingest.failed", &key, json!({"request_id": request_id, "code": code, "message": message}))
            };
            let parsed = match parse(&request) {
                Ok(parsed) => parsed,
                Err((code, message)) => return events.publish(failed(code, message)),
            };
            let url = parsed.url.as_str().to_owned();
            match fetcher.ingest(parsed).await {
                // The committer announced it; a URL already known did not commit.
                Ok(result) if result.status == IngestStatus::UrlAlias => {
                    let mut fields = serde_json::to_value(&result).unwrap_or_default();
                    if let Some(f) = fields.as_object_mut() {
                        f.insert("request_id".into(), request_id.clone());
                        f.insert("url".into(), url.into());
                    }
                    events.publish(Event::new("video.duplicate", &result.hash, fields));
                }
                Ok(_) => {}
                Err(e) => events.publish(failed(e.code(), e.to_string())),
            }
        })
    }
}

/// The request's fields, validated as `POST /ingest` validates them.
fn parse(request: &Value) -> Result<IngestRequest, (&'static str, String)> {
    let invalid = |m: &str| ("invalid-request", m.to_owned());
    let object = request.as_object().ok_or_else(|| invalid("an ingest request is a JSON object"))?;
    if let Some(reason) = object.get("invalid").and_then(Value::as_str) {
        return Err(("invalid-json", reason.to_owned()));
    }
    if object.get("type").and_then(Value::as_str) != Some("ingest") {
        return Err(invalid("\"type\" must be \"ingest\""));
    }
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    let url = SourceUrl::parse(text("url").ok_or_else(|| invalid("\"url\" is required"))?)
        .map_err(|e| ("invalid-url", e.to_string()))?;
    let bucket = Bucket::parse(text("bucket").ok_or_else(|| invalid("\"bucket\" is required"))?)
        .map_err(|e| ("invalid-bucket", e.to_string()))?;
    let prefix = Prefix::parse(text("prefix").unwrap_or("")).map_err(|e| ("invalid-prefix", e.to_string()))?;
    let mut meta = match object.get("meta") {
        None | Some(Value::Null) => json!({}),
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => return Err(("invalid-meta", "meta must be a JSON object".into())),
    };
    if meta.to_string().len() > 64 * 1024 {
        return Err(("too-large", "meta is limited to 64 KiB".into()));
    }
    if let (Some(m), Some(id)) = (meta.as_object_mut(), object.get("request_id")) {
        m.insert("request_id".into(), id.clone());
    }
    // The ingest topic is the operator's (whoever may produce to it).
    Ok(IngestRequest { url, bucket, prefix, meta, tenant: crate::domain::Tenant::Operator, public: false })
}
