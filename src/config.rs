//! Settings, layered: built-in defaults, then a TOML file (`--config` or
//! `VIDCACHE_CONFIG`), then environment variables `VIDCACHE__SECTION__KEY`.
//!
//! The key names below are relied on by scripts and documented in README.md;
//! rename none of them.
#![allow(clippy::disallowed_methods)] // read once at start-up, before serving (clippy.toml)

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub upload: UploadSettings,
    pub auth: AuthSettings,
    pub analysis: crate::media::AnalysisSettings,
    pub dedup: DedupSettings,
    pub transcode: TranscodeSettings,
    pub kafka: KafkaSettings,
    pub log: LogSettings,
    /// Endpoints that receive every event, signed (`[[webhooks]]`).
    #[serde(deserialize_with = "webhook_list")]
    pub webhooks: Vec<WebhookSettings>,
}

fn webhook_list<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<WebhookSettings>, D::Error> {
    list_or_json(de)
}

/// One webhook endpoint: events are POSTed to `url` as JSON with
/// `Vidcache-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: String,
    /// Event types to send (`upload.completed`, ...); all when empty.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .finish()
    }
}

/// Transcoding into HLS and DASH (`[transcode]`).
#[derive(Debug, Clone, Deserialize)]
pub struct TranscodeSettings {
    /// Queue a transcode for every new video as it is stored.
    pub on_upload: bool,
    /// Jobs this process transcodes at once (each uses several threads).
    /// 0: `serve` only queues jobs and `vidcache worker` processes run them.
    pub workers: usize,
    /// The ladder, highest first, as `height:video_kbps` pairs; rungs above
    /// the source's height are left out.
    pub ladder: String,
    /// Segment length in seconds; every rung has a keyframe at each start.
    pub segment_secs: u32,
    /// x264 preset.
    pub preset: String,
    /// A job that fails this many times goes to the dead-letter queue and
    /// the video's transcode status becomes `failed`.
    pub max_attempts: u32,
    /// Wait before a failed job is tried again, in seconds.
    pub retry_delay_secs: u64,
    /// Embedded queue: a job is leased for this long and the lease renewed
    /// while it runs; a worker that dies lets it run out and the job is
    /// delivered again.
    pub lease_secs: u64,
    /// Embedded queue: how often an idle worker looks for a job.
    pub poll_interval_ms: u64,
    /// Seconds between storyboard tiles (more, for long videos, so that
    /// there are at most 200 tiles).
    pub storyboard_interval_secs: u32,
    /// At shutdown, jobs in progress get this long to finish (their outputs
    /// published, their offsets or rows recorded) before they are cut off
    /// and delivered again later.
    pub drain_secs: u64,
}

impl TranscodeSettings {
    /// The ladder as rungs, highest first.
    pub fn rungs(&self) -> Result<Vec<crate::transcode::Rung>, String> {
        let mut rungs = Vec::new();
        for pair in self.ladder.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (height, kbps) = pair.split_once(':').ok_or_else(|| format!("{pair:?} is not height:video_kbps"))?;
            let height: u32 = height.trim().parse().map_err(|_| format!("bad height in {pair:?}"))?;
            let video_kbps: u32 = kbps.trim().parse().map_err(|_| format!("bad bitrate in {pair:?}"))?;
            if !(16..=4320).contains(&height) || !(50..=100_000).contains(&video_kbps) {
                return Err(format!("{pair:?} is out of range (height 16-4320, 50-100000 kb/s)"));
            }
            rungs.push(crate::transcode::Rung { height, video_kbps });
        }
        if rungs.is_empty() {
            return Err("the ladder has no rungs".into());
        }
        rungs.sort_by_key(|r| std::cmp::Reverse(r.height));
        Ok(rungs)
    }
}

/// Kafka (`[kafka]`). With no brokers, jobs go through the embedded queue
/// in the database.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    /// `host:port,...`; empty: the embedded queue.
    pub brokers: String,
    /// Put before every topic name (`vidcache.transcode`, ...).
    pub topic_prefix: String,
    /// Consumer group of the transcode workers; the ingest consumers use
    /// this name with `-ingest` appended.
    pub group_id: String,
    /// Create missing topics at start-up (definitions in `kafka/topics.json`).
    pub create_topics: bool,
    /// Run the consumer of the ingest topic in `serve`.
    pub consume_ingest: bool,
    /// How long a send may wait for room in a full producer queue before it
    /// fails, in milliseconds: a full queue slows producers down.
    pub queue_timeout_ms: u64,
    /// Extra librdkafka properties as `name=value` (`security.protocol=SASL_SSL`,
    /// `session.timeout.ms=6000`, ...), passed through as they are. In the
    /// environment: `VIDCACHE__KAFKA__PROPERTIES=a.b=1,c.d=2`.
    pub properties: Vec<String>,
}

impl KafkaSettings {
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// The extra properties as pairs.
    pub fn property_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties.iter().filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim()))
    }

    pub fn has_property(&self, name: &str) -> bool {
        self.property_pairs().any(|(k, _)| k == name)
    }
}

/// Near-duplicate detection (`[dedup]`).
#[derive(Debug, Clone, Deserialize)]
pub struct DedupSettings {
    /// `merge`: a near-duplicate is answered as a duplicate of the stored
    /// video (its URL an alias of it), and its bytes are kept as a variant
    /// of that video (see `variant_retention`). `keep`: it is stored as new,
    /// with `near_duplicate_of` in the answer and meta. `off`: no perceptual
    /// check.
    pub near_duplicate: NearDuplicatePolicy,
    /// How long a variant's bytes are kept: `keep` (the default: until the
    /// video is deleted or the variant unmerged) or a number of days, after
    /// which they are removed. Removing them is an opt-in: a wrong merge can
    /// then no longer be undone, and the upload's own bytes are gone.
    pub variant_retention: VariantRetention,
    /// How often variants past `variant_retention` days are looked for.
    pub variant_sweep_secs: u64,
    /// A sampled frame votes only when this many of its hash's 64 bits are
    /// decided by a clear brightness step; flat and near-blank frames do not.
    pub min_frame_information: u8,
    /// When both videos have audible sound, their audio fingerprints must
    /// agree within this bit error rate (0 to 0.5).
    pub max_audio_error: f64,
    /// The frames of a match, taken at the same moments, must have their
    /// brightness levels (a 4x4 grid, 0 to 255) within this median
    /// difference: two smooth pictures whose brightness steps go the same
    /// way hash alike, and this tells them apart. A copy whose brightness
    /// or contrast was changed is not matched.
    pub max_tone_difference: f64,
    /// Two sampled frames match within this Hamming distance (of 64 bits).
    pub max_frame_distance: u32,
    /// Share of the shorter video's samples that must match, in time order.
    pub min_matched_share: f64,
    /// Samples that must match at least (fewer when a video has fewer).
    pub min_matched_frames: usize,
    /// The shorter video must last at least this share of the longer one.
    pub min_duration_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NearDuplicatePolicy {
    Merge,
    Keep,
    Off,
}

/// `dedup.variant_retention`: `"keep"` or a number of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantRetention {
    Keep,
    Days(u32),
}

impl<'de> Deserialize<'de> for VariantRetention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Days(u32),
            Word(String),
        }
        match Form::deserialize(d)? {
            Form::Days(days) => Ok(Self::Days(days)),
            Form::Word(w) if w == "keep" => Ok(Self::Keep),
            Form::Word(w) => match w.parse::<u32>() {
                Ok(days) => Ok(Self::Days(days)),
                Err(_) => Err(serde::de::Error::custom(format!(
                    "dedup.variant_retention must be \"keep\" or a number of days, not {w:?}"
                ))),
            },
        }
    }
}

impl DedupSettings {
    pub fn rule(&self) -> crate::dedup::MatchRule {
        crate::dedup::MatchRule {
            max_frame_distance: self.max_frame_distance,
            min_matched_share: self.min_matched_share,
            min_matched_frames: self.min_matched_frames,
            min_duration_ratio: self.min_duration_ratio,
            min_frame_information: self.min_frame_information,
            max_audio_error: self.max_audio_error,
            max_tone_difference: self.max_tone_difference,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    /// Address to listen on. Port 0 picks a free port (tests use it).
    pub bind: String,
    /// How clients reach this daemon (`https://videos.example.com`), used in
    /// absolute URLs it hands out (presigned part URLs). Empty: taken from
    /// each request's `Host` and scheme.
    pub public_url: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Origins whose pages may call the API from a browser (tus-js-client,
    /// Uppy, the multipart door). `["*"]` allows any; `[]` sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Serve the browser pages from this folder (a checkout's `client/`)
    /// instead of the copies built into the binary: edit them without a rebuild.
    pub client_dir: String,
    /// Bytes of published media (segments, playlists, storyboards) kept
    /// memory-mapped between requests, each for at most a second; 0 keeps
    /// none (every request opens and maps its file).
    pub media_map_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    /// Root directory of objects, the spool and (by default) the SQLite file.
    /// One running vidcache owns it: a second one on the same root refuses to start.
    /// With the `s3` backend it holds only this daemon's spools and a
    /// working copy of the objects it touched; the bucket is the home of
    /// objects and media.
    pub root: PathBuf,
    /// Where committed objects and derived media live.
    pub backend: StorageBackend,
    /// The S3-compatible object store of `backend = "s3"`.
    pub s3: S3Settings,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `storage.root` (the embedded default).
    Local,
    /// An S3-compatible object store (`storage.s3.*`).
    S3,
}

/// `storage.s3.*`: names deployment tooling relies on.
#[derive(Clone, Deserialize)]
pub struct S3Settings {
    /// `http(s)://host:port` of the store; empty: AWS S3 of `region`.
    pub endpoint: String,
    /// Created at start-up when missing.
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `http://endpoint/bucket/key` rather than `http://bucket.endpoint/key`
    /// (most self-hosted stores need it).
    pub path_style: bool,
    /// Object and media reads answer `307` to a presigned GET (for a CDN or
    /// the store to carry the bytes) instead of streaming through.
    pub redirect_reads: bool,
    /// Bytes of working copies of objects this daemon keeps on its disk
    /// (fetched for the prober, frames and transcodes, or kept after a
    /// commit); the least recently used go first. 0 keeps only the one
    /// in use.
    pub working_copy_bytes: u64,
    /// Uploads any daemon takes (`upload::shared`): their pieces go to the
    /// bucket as they arrive, and in S3-sized pieces they become the object
    /// with no byte moved at finalize (BENCHMARKS.md, "The object as its
    /// pieces"). On by default; off, every upload lives in the daemon that
    /// created it and is uploaded from its spool at finalize.
    pub share_uploads: bool,
}

impl std::fmt::Debug for S3Settings {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("path_style", &self.path_style)
            .field("redirect_reads", &self.redirect_reads)
            .field("working_copy_bytes", &self.working_copy_bytes)
            .field("share_uploads", &self.share_uploads)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`. Empty: `sqlite://{storage.root}/vidcache.db`.
    pub url: String,
    /// Upper bound on pooled connections.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IngestSettings {
    /// Let `POST /ingest` fetch from loopback, private, link-local and other
    /// non-public addresses. Off by default: the fetcher is a classic SSRF vector.
    pub allow_private_networks: bool,
    /// Networks (CIDR, such as `10.1.2.0/24`) that may be fetched from even when
    /// private networks are refused: an internal media server, for example.
    pub allow_networks: Vec<String>,
    /// Largest body `POST /ingest` will fetch, in bytes.
    pub max_bytes: u64,
    /// Whole-request time limit for a fetch, in seconds.
    pub timeout_secs: u64,
    /// Connect time limit for a fetch, in seconds.
    pub connect_timeout_secs: u64,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UploadSettings {
    /// Largest upload accepted, in bytes.
    pub max_bytes: u64,
    /// An upload with no bytes for this long is abandoned and its disk freed.
    pub session_ttl_secs: u64,
    /// How often abandoned sessions are looked for.
    pub sweep_interval_secs: u64,
    /// Progress is made durable (fdatasync, then recorded) every this many
    /// bytes; a daemon killed mid-upload resumes from the last such point.
    pub checkpoint_bytes: u64,
    /// Chunk size a chunked upload gets when its init names none.
    pub default_chunk_bytes: u64,
    /// Smallest and largest chunk size a chunked init may ask for.
    pub min_chunk_bytes: u64,
    pub max_chunk_bytes: u64,
    /// Largest multipart part (S3: 5 GiB).
    pub max_part_bytes: u64,
    /// Smallest multipart part but the last (the contract: 5 MiB).
    pub min_part_bytes: u64,
    /// Open uploads one API key (multipart) or one client address (chunked,
    /// tus) may have at once.
    pub max_sessions_per_key: u64,
    /// Uploads probed while their bytes arrive, at most, at once (one thread
    /// each); others are probed from the file at finalize. 0 turns it off.
    pub early_probes: usize,
    /// Space kept free on the storage: an upload of a declared size (chunked,
    /// tus, multipart) that would not fit beside it is refused at init
    /// (`507 insufficient-storage`) rather than filling the disk halfway.
    pub reserve_bytes: u64,
    /// Uploads any daemon takes (S3 backend): how long a claim on an
    /// upload (a finalize, or a tus PATCH's or streamed body's write) runs
    /// before it must be renewed. The holder renews it every third of this
    /// while it works, so a live one keeps it; a dead one's runs out within
    /// this, and another daemon takes the upload over.
    pub claim_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// API keys of the multipart door: `[[auth.api_keys]]` tables in TOML, or
    /// `VIDCACHE__AUTH__API_KEYS` holding the same list as JSON.
    #[serde(deserialize_with = "api_keys")]
    pub api_keys: Vec<ApiKey>,
    /// Secret for presigned part URLs. Empty: a random secret is made once and
    /// kept in `{storage.root}/.presign-secret`, so URLs survive restarts.
    pub presign_secret: String,
    /// How long a presigned part URL is valid, in seconds.
    pub presign_ttl_secs: u64,
    /// Default lifetime of a playback token, in seconds.
    pub playback_ttl_secs: u64,
    /// How often keys minted or revoked by other daemons on the same
    /// database are picked up, in seconds.
    pub key_refresh_secs: u64,
    /// Projects whose videos' media anyone may fetch (`public`); the others'
    /// need a key or a playback token, unless set public one by one.
    pub public_projects: Vec<String>,
    /// Serve anonymously on a non-loopback address with no keys configured.
    /// Off: such a daemon refuses to start (section 8 of the contract).
    pub allow_anonymous: bool,
}

/// A key from configuration. Its secret is hashed at start-up and compared
/// only as a MAC; `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub key: String,
    /// A number in every URL (`{"video": {"id"}}` is a project's), so
    /// `project_id = 7` is accepted as well as `"7"`.
    #[serde(deserialize_with = "string_or_number")]
    pub project_id: String,
    /// What the key may do; all four scopes when left out, so keys written
    /// before scopes existed keep working.
    #[serde(default = "Scope::all")]
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("project_id", &self.project_id)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// What an API key may do. Every route names the one it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Start and finish uploads and ingests, re-queue a transcode, unmerge.
    Upload,
    /// Read videos, their metadata, media, frames and events.
    Read,
    /// Delete videos.
    Delete,
    /// Manage API keys; read metrics.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Upload, Scope::Read, Scope::Delete, Scope::Admin];

    pub fn all() -> Vec<Scope> {
        Self::ALL.to_vec()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Upload => "upload",
            Scope::Read => "read",
            Scope::Delete => "delete",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(i64),
        Text(String),
    }
    Ok(
        match Id::deserialize(de).map_err(|_| serde::de::Error::custom("project_id: expected a number or a string"))? {
            Id::Number(n) => n.to_string(),
            Id::Text(s) => s,
        },
    )
}

/// A list of keys, or a string with the list as JSON (the environment form).
fn api_keys<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Vec<ApiKey>, D::Error> {
    list_or_json(de)
}

/// A list of tables, or a string with the list as JSON (the environment
/// form, `VIDCACHE__WEBHOOKS='[{...}]'`).
fn list_or_json<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(de: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form<T> {
        List(Vec<T>),
        Json(String),
    }
    match Form::deserialize(de)? {
        Form::List(keys) => Ok(keys),
        Form::Json(raw) if raw.trim().is_empty() => Ok(Vec::new()),
        Form::Json(raw) => serde_json::from_str(&raw).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    /// `tracing` filter directive, such as `info` or `vidcache=debug`. `RUST_LOG` wins.
    pub filter: String,
    /// `text` or `json`.
    pub format: String,
}

const GIB: u64 = 1 << 30;

impl Settings {
    /// Loads the layers. `file` is the `--config` argument or `VIDCACHE_CONFIG`.
    pub fn load(file: Option<&Path>) -> Result<Self, config::ConfigError> {
        let mut builder = Self::defaults()?;
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        let env = config::Environment::with_prefix("VIDCACHE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("ingest.allow_networks")
            .with_list_parse_key("server.cors_origins")
            .with_list_parse_key("kafka.properties");
        builder.add_source(env).build()?.try_deserialize::<Self>()?.resolved()
    }

    /// Built-in defaults only, with no file and no environment: what tests
    /// start from before they set their own values explicitly.
    pub fn defaults_only() -> Result<Self, config::ConfigError> {
        Self::defaults()?.build()?.try_deserialize::<Self>()?.resolved()
    }

    fn defaults() -> Result<config::ConfigBuilder<config::builder::DefaultState>, config::ConfigError> {
        config::Config::builder()
            .set_default("server.bind", "127.0.0.1:8020")?
            .set_default("server.workers", 0)?
            .set_default("server.media_map_bytes", 256u64 << 20)?
            .set_default("storage.root", "./data")?
            .set_default("storage.backend", "local")?
            .set_default("storage.s3.endpoint", "")?
            .set_default("storage.s3.bucket", "vidcache")?
            .set_default("storage.s3.region", "us-east-1")?
            .set_default("storage.s3.access_key_id", "")?
            .set_default("storage.s3.secret_access_key", "")?
            .set_default("storage.s3.path_style", true)?
            .set_default("storage.s3.redirect_reads", false)?
            .set_default("storage.s3.working_copy_bytes", 10 * GIB)?
            .set_default("storage.s3.share_uploads", true)?
            .set_default("database.url", "")?
            .set_default("database.max_connections", 10)?
            .set_default("ingest.allow_private_networks", false)?
            .set_default("ingest.allow_networks", Vec::<String>::new())?
            .set_default("ingest.max_bytes", 8 * GIB)?
            .set_default("ingest.timeout_secs", 3600)?
            .set_default("ingest.connect_timeout_secs", 10)?
            .set_default("ingest.max_redirects", 5)?
            .set_default("upload.max_bytes", 64 * GIB)?
            .set_default("upload.session_ttl_secs", 24 * 3600)?
            .set_default("upload.sweep_interval_secs", 60)?
            .set_default("upload.checkpoint_bytes", 64u64 << 20)?
            .set_default("upload.default_chunk_bytes", 8u64 << 20)?
            .set_default("upload.min_chunk_bytes", 64u64 << 10)?
            .set_default("upload.max_chunk_bytes", 256u64 << 20)?
            .set_default("upload.max_part_bytes", 5 * GIB)?
            .set_default("upload.min_part_bytes", 5u64 << 20)?
            .set_default("upload.max_sessions_per_key", 100)?
            .set_default("upload.early_probes", 4)?
            .set_default("upload.reserve_bytes", 64u64 << 20)?
            .set_default("upload.claim_secs", 3)?
            .set_default("server.public_url", "")?
            .set_default("server.cors_origins", vec!["*".to_string()])?
            .set_default("server.client_dir", "")?
            .set_default("auth.api_keys", Vec::<String>::new())?
            .set_default("auth.presign_secret", "")?
            .set_default("auth.presign_ttl_secs", 3600)?
            .set_default("auth.allow_anonymous", false)?
            .set_default("auth.playback_ttl_secs", 3600)?
            .set_default("auth.public_projects", Vec::<String>::new())?
            .set_default("auth.key_refresh_secs", 10)?
            .set_default("webhooks", Vec::<String>::new())?
            .set_default("analysis.enabled", true)?
            .set_default("analysis.sample_interval_ms", 1000)?
            .set_default("analysis.full_decode_bytes", 32u64 << 20)?
            .set_default("analysis.finish_budget_ms", 500)?
            .set_default("analysis.max_samples", 7200)?
            .set_default("analysis.reject_corrupt", true)?
            .set_default("dedup.near_duplicate", "merge")?
            .set_default("dedup.max_frame_distance", 13)?
            .set_default("dedup.min_matched_share", 0.6)?
            .set_default("dedup.min_matched_frames", 3)?
            .set_default("dedup.min_duration_ratio", 0.6)?
            .set_default("dedup.variant_retention", "keep")?
            .set_default("dedup.variant_sweep_secs", 3600)?
            .set_default("dedup.min_frame_information", 24)?
            .set_default("dedup.max_audio_error", 0.25)?
            .set_default("dedup.max_tone_difference", 6.0)?
            .set_default("transcode.on_upload", true)?
            .set_default("transcode.workers", 1)?
            .set_default("transcode.ladder", "1080:5000,720:3000,480:1500,240:400")?
            .set_default("transcode.segment_secs", 2)?
            .set_default("transcode.preset", "veryfast")?
            .set_default("transcode.max_attempts", 3)?
            .set_default("transcode.retry_delay_secs", 10)?
            .set_default("transcode.lease_secs", 60)?
            .set_default("transcode.poll_interval_ms", 500)?
            .set_default("transcode.storyboard_interval_secs", 2)?
            .set_default("transcode.drain_secs", 120)?
            .set_default("kafka.brokers", "")?
            .set_default("kafka.topic_prefix", "vidcache.")?
            .set_default("kafka.group_id", "vidcache-transcode")?
            .set_default("kafka.create_topics", true)?
            .set_default("kafka.consume_ingest", true)?
            .set_default("kafka.queue_timeout_ms", 30_000)?
            .set_default("kafka.properties", Vec::<String>::new())?
            .set_default("log.filter", "info")?
            .set_default("log.format", "text")
    }

    fn resolved(mut self) -> Result<Self, config::ConfigError> {
        if self.database.url.is_empty() {
            self.database.url = Self::sqlite_url_under(&self.storage.root);
        }
        let u = &self.upload;
        if u.min_chunk_bytes == 0 || u.min_chunk_bytes > u.max_chunk_bytes || u.default_chunk_bytes > u.max_chunk_bytes
        {
            return Err(config::ConfigError::Message(
                "upload chunk sizes must satisfy 0 < min <= default <= max".into(),
            ));
        }
        let d = &self.dedup;
        if d.max_frame_distance > 32
            || !(0.0..=1.0).contains(&d.min_matched_share)
            || !(0.0..=1.0).contains(&d.min_duration_ratio)
        {
            return Err(config::ConfigError::Message(
                "dedup: max_frame_distance must be at most 32, and the shares between 0 and 1".into(),
            ));
        }
        if !(0.0..=0.5).contains(&d.max_audio_error)
            || d.min_frame_information > 64
            || !(0.0..=255.0).contains(&d.max_tone_difference)
        {
            return Err(config::ConfigError::Message(
                "dedup: max_audio_error must be between 0 and 0.5, min_frame_information at most 64, and max_tone_difference between 0 and 255".into(),
            ));
        }
        if self.analysis.sample_interval_ms == 0 || self.analysis.max_samples == 0 {
            return Err(config::ConfigError::Message(
                "analysis: sample_interval_ms and max_samples must be positive".into(),
            ));
        }
        self.transcode.rungs().map_err(|e| config::ConfigError::Message(format!("transcode.ladder: {e}")))?;
        if let Some(bad) = self.kafka.properties.iter().find(|p| !p.contains('=')) {
            return Err(config::ConfigError::Message(format!("kafka.properties: {bad:?} is not name=value")));
        }
        let t = &self.transcode;
        if t.segment_secs == 0 || t.segment_secs > 60 || t.max_attempts == 0 || t.lease_secs < 3 {
            return Err(config::ConfigError::Message(
                "transcode: segment_secs must be 1-60, max_attempts positive, lease_secs at least 3".into(),
            ));
        }
        if self.upload.checkpoint_bytes == 0 {
            return Err(config::ConfigError::Message("upload.checkpoint_bytes must be positive".into()));
        }
        Ok(self)
    }

    /// The default database: a SQLite file inside the storage root.
    pub fn sqlite_url_under(root: &Path) -> String {
        format!("sqlite://{}/vidcache.db?mode=rwc", root.display())
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.upload.session_ttl_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let s = Settings::defaults_only().unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8020");
        assert_eq!(s.storage.root, PathBuf::from("./data"));
        assert!(s.database.url.starts_with("sqlite://./data/"));
        assert!(!s.ingest.allow_private_networks);
    }

    #[test]
    fn a_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("vidcache-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vidcache.toml");
        std::fs::write(
            &file,
            "[server]\nbind = \"0.0.0.0:9000\"\n[ingest]\nallow_private_networks = true\nallow_networks = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.server.bind, "0.0.0.0:9000");
        assert!(s.ingest.allow_private_networks);
        assert_eq!(s.ingest.allow_networks, vec!["10.0.0.0/8".to_string()]);
    }

    #[test]
    fn api_keys_come_from_toml_tables_or_a_json_string() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vidcache.toml");
        std::fs::write(&file, "[[auth.api_keys]]\nid = \"k1\"\nkey = \"s3cret\"\nproject_id = \"7\"\n").unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(
            s.auth.api_keys,
            vec![ApiKey { id: "k1".into(), key: "s3cret".into(), project_id: "7".into(), scopes: Scope::all() }]
        );
        assert!(!format!("{:?}", s.auth.api_keys).contains("s3cret"), "Debug must not show a secret");
        // The project id as the number it is in every URL.
        std::fs::write(&file, "[[auth.api_keys]]\nid = \"k1\"\nkey = \"s3cret\"\nproject_id = 7\n").unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        assert_eq!(s.auth.api_keys[0].project_id, "7");

        let from_env: AuthSettings = serde_json::from_value(serde_json::json!({
            "api_keys": "[{\"id\": \"k2\", \"key\": \"x\", \"project_id\": \"p\"}]",
            "presign_secret": "",
            "presign_ttl_secs": 60,
            "allow_anonymous": false,
            "playback_ttl_secs": 3600,
            "public_projects": [],
            "key_refresh_secs": 10,
        }))
        .unwrap();
        assert_eq!(from_env.api_keys[0].id, "k2");
    }
}
