//! The repository: every query vidcache makes, behind one small struct. It
//! hands out plain records, and the same code runs on SQLite and PostgreSQL.

use super::entities::{alias, signature, upload_piece, upload_session, video, video_entry, video_project};
use crate::domain::{Bucket, ContentHash, DEFAULT_PROJECT, ObjectKey, Prefix, SourceUrl, Tenant, UploadId};
use chrono::{DateTime, Utc};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct RepoError(#[from] sea_orm::DbErr);

/// Where an upload session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Taking bytes; resumable.
    Receiving,
    /// Finished; `result` holds the ingest result (finalize is idempotent).
    Complete,
    /// Refused (not a video, too large); the spool is gone.
    Failed,
    /// Abandoned past its time to live; the spool is gone.
    Expired,
    /// Abandoned by its client (DELETE); the spool is gone.
    Aborted,
    /// Between the rename of the spool into place and the video's record.
    /// `commit` says where the object went, so that start-up recovery can
    /// finish (or undo) a commit that a crash interrupted.
    Committing,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receiving => "receiving",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Aborted => "aborted",
            Self::Committing => "committing",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "complete" => Self::Complete,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "aborted" => Self::Aborted,
            "committing" => Self::Committing,
            _ => Self::Receiving,
        }
    }
}

/// An upload session as the database knows it.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: UploadId,
    pub url: Option<SourceUrl>,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub meta: serde_json::Value,
    pub state: SessionState,
    /// Bytes fsynced to the spool and recorded: what a resumed upload starts from.
    pub durable_bytes: u64,
    /// Set by the first commit, and kept: the hash and the object key the
    /// last commit went to (being committed, while `Committing`).
    pub commit: Option<(ContentHash, ObjectKey)>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Which front door made it, and so how its bytes arrive.
    pub kind: UploadKind,
    /// The declared size (chunked, tus); `None` when the body's end decides.
    pub total_size: Option<u64>,
    /// Chunked uploads: every chunk but the last has this size.
    pub chunk_size: Option<u64>,
    /// Who opened it (an API key id, or the client address), for per-key limits.
    pub owner: Option<String>,
    /// The user-facing video entry (`video_id`) it fills, if any.
    pub entry_id: Option<i64>,
    /// The project the upload is for: the video it makes is that project's.
    pub project: String,
    /// The upload asked for its video's media to be public.
    pub public: bool,
    /// A chunked upload any daemon takes (S3 backend): the id of the S3
    /// multipart upload its chunks are parts of (`upload::shared`).
    pub staged: Option<String>,
}

/// The front door an upload came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    /// One streamed body, resumable by offset (`POST /upload/{id}`, ingest).
    Stream,
    /// Fixed-size chunks written at their offsets, in any order.
    Chunked,
    /// S3-style parts of free size, each in its own file until complete.
    Multipart,
    /// tus 1.0: bodies appended at the reported offset.
    Tus,
    /// A tus partial upload (`Upload-Concat: partial`): bodies appended as
    /// for `Tus`, but whole it is never committed; a final upload
    /// concatenates it with others (tus `concatenation`).
    TusPartial,
}

impl UploadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Chunked => "chunked",
            Self::Multipart => "multipart",
            Self::Tus => "tus",
            Self::TusPartial => "tus-partial",
        }
    }

    fn parse(raw: &str) -> Self {
        match raw {
            "chunked" => Self::Chunked,
            "multipart" => Self::Multipart,
            "tus" => Self::Tus,
            "tus-partial" => Self::TusPartial,
            _ => Self::Stream,
        }
    }
}

/// Where a video's transcode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscodeStatus {
    /// Never asked for (`transcode.on_upload` off), or a variant.
    None,
    Queued,
    Processing,
    Ready,
    Failed,
}

impl TranscodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    /// A stored status; one this version does not know reads as `failed`,
    /// which a transcode asked for again replaces.
    fn from_stored(raw: &str) -> Self {
        match raw {
            "none" => Self::None,
            "queued" => Self::Queued,
            "processing" => Self::Processing,
            "ready" => Self::Ready,
            _ => Self::Failed,
        }
    }
}

/// A stored video as the rest of vidcache sees it: typed, not the row.
#[derive(Debug, Clone)]
pub struct Video {
    pub hash: ContentHash,
    pub size_bytes: u64,
    pub duration_s: Option<f64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub fps: Option<f64>,
    pub container: String,
    pub content_type: String,
    pub bucket: String,
    pub prefix: String,
    pub file_path: String,
    /// The client's meta (a JSON object).
    pub meta: serde_json::Value,
    pub transcode: TranscodeStatus,
    /// The last error of a failed transcode.
    pub transcode_error: Option<String>,
    /// `[{"width", "height", "video_kbps"}]` of the last published ladder.
    pub renditions: Option<serde_json::Value>,
    pub first_seen: DateTime<Utc>,
    /// Kept near another video (`dedup.near_duplicate = "keep"`).
    pub near_duplicate_of: Option<ContentHash>,
    pub phash_distance: Option<i32>,
    /// A variant: the stored video it was matched to perceptually.
    pub variant_of: Option<ContentHash>,
    /// Why it was matched (a variant, or kept near another video).
    pub match_info: Option<crate::dedup::PerceptualMatch>,
}

impl Video {
    /// The row as a video; a row whose hash is not one (written by hand)
    /// is not a video vidcache can serve.
    fn from_row(row: video::Model) -> Option<Self> {
        let hash = |h: Option<&str>| h.and_then(|h| ContentHash::parse(h).ok());
        Some(Self {
            hash: ContentHash::parse(&row.hash).ok()?,
            size_bytes: row.size_bytes.max(0) as u64,
            duration_s: row.duration_s,
            width: row.width,
            height: row.height,
            video_codec: row.video_codec,
            audio_codec: row.audio_codec,
            fps: row.fps,
            container: row.container,
            content_type: row.content_type,
            bucket: row.bucket,
            prefix: row.prefix,
            file_path: row.file_path,
            meta: serde_json::from_str(&row.meta).unwrap_or_else(|_| serde_json::json!({})),
            transcode: TranscodeStatus::from_stored(&row.transcode_status),
            transcode_error: row.transcode_error,
            renditions: row.renditions.as_deref().and_then(|r| serde_json::from_str(r).ok()),
            first_seen: row.first_seen,
            near_duplicate_of: hash(row.near_duplicate_of.as_deref()),
            phash_distance: row.phash_distance,
            variant_of: hash(row.variant_of.as_deref()),
            match_info: row.match_info.as_deref().and_then(|m| serde_json::from_str(m).ok()),
        })
    }
}

/// A stored chunk or part: its number, size and BLAKE3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub number: u32,
    pub size: u64,
    pub hash: ContentHash,
}

/// A chunk of a shared upload (`upload::shared`): the piece, its subtree
/// chaining values (`upload::tree::PieceTree`, encoded), and the ETag of
/// its part in the bucket once it is there.
#[derive(Debug, Clone)]
pub struct StagedPiece {
    pub piece: Piece,
    pub tree: Option<String>,
    pub etag: Option<String>,
}

/// Where a user-facing video entry stands: its upload's state, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    Uploading,
    Uploaded,
    Failed,
    Expired,
    Aborted,
}

impl EntryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Uploaded => "uploaded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Aborted => "aborted",
        }
    }

    /// The entry of an upload in `state`.
    fn of(state: SessionState) -> Self {
        match state {
            SessionState::Complete => Self::Uploaded,
            SessionState::Failed => Self::Failed,
            SessionState::Expired => Self::Expired,
            SessionState::Aborted => Self::Aborted,
            SessionState::Receiving | SessionState::Committing => Self::Uploading,
        }
    }

    fn from_stored(raw: &str) -> Self {
        match raw {
            "uploaded" => Self::Uploaded,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "aborted" => Self::Aborted,
            _ => Self::Uploading,
        }
    }
}

/// A user-facing video entry (`video_id`), as its row says.
#[derive(Debug, Clone)]
pub struct EntryRecord {
    pub id: i64,
    pub upload_id: Option<String>,
    /// The stored video, once its upload completed.
    pub hash: Option<ContentHash>,
    pub filename: String,
    pub content_type: Option<String>,
    pub project_id: Option<String>,
    /// The door its upload came through (`chunked`, `multipart`, `tus`).
    pub door: String,
    pub status: EntryStatus,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl EntryRecord {
    fn from_row(row: video_entry::Model) -> Self {
        Self {
            id: row.id,
            upload_id: row.upload_id,
            hash: row.hash.as_deref().and_then(|h| ContentHash::parse(h).ok()),
            filename: row.filename,
            content_type: row.content_type,
            project_id: row.project_id,
            door: row.door,
            status: EntryStatus::from_stored(&row.status),
            error: row.error,
            created_at: row.created_at,
        }
    }
}

/// A user-facing video entry, with the stored video once its upload completed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub entry: EntryRecord,
    pub video: Option<Video>,
    /// The variant this entry's upload was kept as, when it was merged into
    /// `video` on a perceptual match (`find_entry` only).
    pub variant: Option<Video>,
}

/// What a door's init records about the video it will fill.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub filename: String,
    pub content_type: Option<String>,
    pub project_id: Option<String>,
}

/// A video about to be recorded.
#[derive(Debug, Clone)]
pub struct NewVideo {
    pub hash: ContentHash,
    pub size_bytes: u64,
    pub media: crate::media::MediaInfo,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub file_path: String,
    pub meta: serde_json::Value,
    /// What the analysis found, recorded with the video (absent when a
    /// commit interrupted by a crash is finished at start-up without one).
    pub signature: Option<Signature>,
    /// Kept although it near-duplicates this video, at this distance.
    pub near_duplicate_of: Option<(ContentHash, u32)>,
    /// Kept as a variant of this stored video (a perceptual match under
    /// `merge`): not transcoded, and the upload's URL becomes an alias of
    /// that video, `via` this one.
    pub variant_of: Option<ContentHash>,
    /// Why it was matched (with `variant_of` or `near_duplicate_of`).
    pub match_info: Option<crate::dedup::PerceptualMatch>,
    /// A transcode job queued in the same transaction as the video (topic
    /// and payload), so a video is never stored without its job.
    pub transcode_job: Option<(String, serde_json::Value)>,
    /// The project that holds it, recorded in the same transaction.
    pub project: String,
    /// Whether that project made its media public.
    pub public: bool,
}

/// The perceptual signature of a video and how its analysis went.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub duration_ms: u64,
    /// The sampled frames, in time order.
    pub samples: Vec<crate::media::Sample>,
    /// The sound's fingerprint, or why there is none.
    pub audio: crate::dedup::AudioPrint,
    pub keyframes_ms: Vec<u64>,
    pub frames_decoded: u64,
    pub packets_skipped: u64,
    pub first_byte_at: Option<DateTime<Utc>>,
    pub first_hash_at: Option<DateTime<Utc>>,
    pub bytes_complete_at: Option<DateTime<Utc>>,
    pub analysed_at: DateTime<Utc>,
    /// What finalize had while the analysis went on (not stored: the
    /// complete signature replaces it).
    pub partial: bool,
    /// Stored as handed over at finalize: the complete signature is still
    /// to come (start-up analyses the video again if a crash lost it).
    pub pending: bool,
}

impl Signature {
    fn from_row(row: signature::Model) -> Option<(ContentHash, Self)> {
        let hash = ContentHash::parse(&row.hash).ok()?;
        let raw: Vec<StoredSample> = serde_json::from_str(&row.samples).ok()?;
        let samples = raw
            .into_iter()
            .map(|stored| {
                // A sample stored before frames were scored carries no vote.
                // A sample stored before tones were taken has none.
                let (pts_ms, hex, keyframe, info, tone) = match stored {
                    StoredSample::Toned(ms, hex, key, info, tone) => (ms, hex, key, info, Some(tone)),
                    StoredSample::Scored(ms, hex, key, info) => (ms, hex, key, info, None),
                    StoredSample::Unscored(ms, hex, key) => (ms, hex, key, 0, None),
                };
                let tone = match tone {
                    Some(hex) => Some(crate::dedup::Tone::from_hex(&hex)?),
                    None => None,
                };
                crate::dedup::FrameHash::from_hex(&hex).map(|hash| crate::media::Sample {
                    pts_ms,
                    hash,
                    keyframe,
                    info,
                    tone,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let signature = Self {
            duration_ms: row.duration_ms.max(0) as u64,
            samples,
            audio: crate::dedup::AudioPrint::from_stored(row.audio.as_deref()),
            keyframes_ms: serde_json::from_str(&row.keyframes_ms).ok()?,
            frames_decoded: row.frames_decoded.max(0) as u64,
            packets_skipped: row.packets_skipped.max(0) as u64,
            first_byte_at: row.first_byte_at,
            first_hash_at: row.first_hash_at,
            bytes_complete_at: row.bytes_complete_at,
            analysed_at: row.analysed_at,
            partial: false,
            pending: row.pending,
        };
        Some((hash, signature))
    }

    fn to_row(&self, hash: &ContentHash) -> signature::ActiveModel {
        let samples: Vec<serde_json::Value> = self
            .samples
            .iter()
            .map(|s| match s.tone {
                Some(tone) => serde_json::json!([s.pts_ms, s.hash.to_hex(), s.keyframe, s.info, tone.to_hex()]),
                None => serde_json::json!([s.pts_ms, s.hash.to_hex(), s.keyframe, s.info]),
            })
            .collect();
        signature::ActiveModel {
            hash: Set(hash.to_hex()),
            duration_ms: Set(self.duration_ms as i64),
            samples: Set(serde_json::to_string(&samples).unwrap_or_else(|_| "[]".into())),
            keyframes_ms: Set(serde_json::to_string(&self.keyframes_ms).unwrap_or_else(|_| "[]".into())),
            frames_decoded: Set(self.frames_decoded as i64),
            packets_skipped: Set(self.packets_skipped as i64),
            first_byte_at: Set(self.first_byte_at),
            first_hash_at: Set(self.first_hash_at),
            bytes_complete_at: Set(self.bytes_complete_at),
            analysed_at: Set(self.analysed_at),
            audio: Set(Some(self.audio.to_stored())),
            pending: Set(self.pending),
        }
    }
}

/// How one project sees a video it holds: where its upload asked for it
/// to go, its client metadata, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub bucket: String,
    pub prefix: String,
    pub file_path: String,
    pub meta: serde_json::Value,
    pub since: DateTime<Utc>,
    /// The project made its media public.
    pub public: bool,
    /// The transcode as the project sees it while its own transcode job
    /// has not finished (a video it claimed that another project holds
    /// already); `None`: it sees the video's own.
    pub transcode: Option<TranscodeStatus>,
    /// The upload that made the project hold it (none for holdings from
    /// before this was kept).
    pub upload: Option<UploadId>,
}

/// A project holding a video, as media access needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub project: String,
    /// It made the video's media public.
    pub public: bool,
    /// Its own transcode of the video has not finished (`Holding::transcode`).
    pub pending: bool,
}

impl Video {
    /// The video as `project`, holding it as `view`, sees it: where its
    /// upload put it, its metadata, since when, and its transcode.
    pub fn seen_as(&mut self, view: Holding) {
        self.bucket = view.bucket;
        self.prefix = view.prefix;
        self.file_path = view.file_path;
        self.meta = view.meta;
        self.first_seen = view.since;
        if let Some(status) = view.transcode {
            self.transcode = status;
            self.transcode_error = None;
            self.renditions = None;
        }
    }
}

/// A sample as stored: `[pts_ms, "hex", keyframe, info]`, or without `info`
/// as stored before frames were scored.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StoredSample {
    Toned(u64, String, bool, u8, String),
    Scored(u64, String, bool, u8),
    Unscored(u64, String, bool),
}

#[derive(Clone, Debug)]
pub struct Repository {
    db: DatabaseConnection,
    holders: Arc<HoldersCache>,
}

/// The projects holding each video, as `holders` last read them: a signed
/// or public media request asks at every segment, and a query per segment
/// cost a fifth of segment throughput (BENCHMARKS.md, "Signed playback
/// after tokens were bound to projects"). Every write to the holdings
/// through this repository empties it, and a read that began before the
/// write is not kept (the generation moved); a write by another daemon on
/// the same database is seen within `HOLDERS_TTL`.
#[derive(Debug, Default)]
struct HoldersCache(std::sync::Mutex<CachedHolders>);

#[derive(Debug, Default)]
struct CachedHolders {
    /// Moved by every `clear`.
    generation: u64,
    videos: std::collections::HashMap<ContentHash, (std::time::Instant, Vec<Holder>)>,
}

/// How long another daemon's change of a video's holders may go unseen.
const HOLDERS_TTL: Duration = Duration::from_secs(1);
/// Beyond this many videos the cache starts again (a scan of many hashes
/// must not grow it without bound).
const HOLDERS_CACHED: usize = 10_000;

impl HoldersCache {
    /// The cached holders, or the generation a read must start in to be kept.
    fn get(&self, hash: &ContentHash) -> Result<Vec<Holder>, u64> {
        let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match cache.videos.get(hash) {
            Some((at, holders)) if at.elapsed() < HOLDERS_TTL => Ok(holders.clone()),
            _ => Err(cache.generation),
        }
    }

    /// Keeps what a read that began in `generation` found, unless a write
    /// has cleared the cache since.
    fn put(&self, hash: ContentHash, holders: Vec<Holder>, generation: u64) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.generation != generation {
            return;
        }
        if cache.videos.len() >= HOLDERS_CACHED {
            cache.videos.clear();
        }
        cache.videos.insert(hash, (std::time::Instant::now(), holders));
    }

    fn clear(&self) {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        cache.generation += 1;
        cache.videos.clear();
    }

    /// Empties the cache when the write it guards has returned (committed
    /// or not): a read between the write's start and its commit may have
    /// cached the old holders.
    fn after_write(&self) -> ClearOnDrop<'_> {
        ClearOnDrop(self)
    }
}

struct ClearOnDrop<'a>(&'a HoldersCache);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// The advisory lock key migrations hold on PostgreSQL: "vidcache" in
/// ASCII, as a bigint.
const MIGRATION_LOCK: i64 = 0x7669_6463_6163_6865;

impl Repository {
    pub(super) fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, RepoError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false)
            // SQLite under many parallel uploads: WAL lets readers and the
            // writer proceed together and makes each commit one append, and
            // writers queue for up to 60 s instead of failing with
            // "database is locked". FULL keeps a commit durable on power loss.
            .map_sqlx_sqlite_opts(|opts| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                opts.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(60))
            });
        let db = Database::connect(options).await?;
        Self::migrate(&db, url).await?;
        Ok(Self { db, holders: Arc::default() })
    }

    /// Brings the schema up to date. Several daemons starting at once on
    /// one PostgreSQL database take turns: each holds a database-wide
    /// advisory lock (on a connection of its own) while it migrates, and the
    /// ones after find nothing left to do. (SQLite serves one daemon.)
    async fn migrate(db: &DatabaseConnection, url: &str) -> Result<(), RepoError> {
        if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(Migrator::up(db, None).await?);
        }
        let mut options = ConnectOptions::new(url.to_owned());
        options.max_connections(1).min_connections(1).sqlx_logging(false);
        let lock = Database::connect(options).await?;
        lock.execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).await?;
        let migrated = Migrator::up(db, None).await;
        let unlocked = lock.execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).await;
        // Closing the lock's session releases it too, whatever happened.
        let _ = lock.close().await;
        migrated?;
        unlocked?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), RepoError> {
        Ok(self.db.ping().await?)
    }

    // ---- videos and aliases ----

    pub async fn find_video(&self, hash: &ContentHash) -> Result<Option<Video>, RepoError> {
        Ok(video::Entity::find_by_id(hash.to_hex()).one(&self.db).await?.and_then(Video::from_row))
    }

    /// The video a URL was ingested as, if it is known.
    pub async fn find_alias(&self, url: &SourceUrl) -> Result<Option<ContentHash>, RepoError> {
        // The operator's view: the URL's first alias, whichever project's.
        let row = alias::Entity::find()
            .filter(alias::Column::Url.eq(url.as_str()))
            .order_by_asc(alias::Column::CreatedAt)
            .one(&self.db)
            .await?;
        Ok(row.and_then(|a| ContentHash::parse(&a.hash).ok()))
    }

    /// Every URL ever ingested for `hash`, oldest first.
    pub async fn aliases_of(&self, hash: &ContentHash) -> Result<Vec<String>, RepoError> {
        let rows = alias::Entity::find()
            .filter(alias::Column::Hash.eq(hash.to_hex()))
            .order_by_asc(alias::Column::CreatedAt)
            .order_by_asc(alias::Column::Url)
            .all(&self.db)
            .await?;
        let mut urls: Vec<String> = Vec::with_capacity(rows.len());
        for row in rows {
            if !urls.contains(&row.url) {
                urls.push(row.url);
            }
        }
        Ok(urls)
    }

    /// Records a new video and its first alias in one transaction. Returns
    /// `false`, writing nothing, when a video with that hash already exists:
    /// the caller lost a race and holds a duplicate, which is a value, not an error.
    pub async fn insert_video(&self, new: &NewVideo, url: Option<&SourceUrl>) -> Result<bool, RepoError> {
        let _holders = self.holders.after_write();
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let row = video::ActiveModel {
            hash: Set(new.hash.to_hex()),
            size_bytes: Set(new.size_bytes as i64),
            duration_s: Set(new.media.duration_s),
            width: Set(new.media.width.map(|v| v as i32)),
            height: Set(new.media.height.map(|v| v as i32)),
            video_codec: Set(new.media.video_codec.clone()),
            audio_codec: Set(new.media.audio_codec.clone()),
            fps: Set(new.media.fps),
            container: Set(new.media.container.clone()),
            content_type: Set(new.media.content_type.to_owned()),
            bucket: Set(new.bucket.as_str().to_owned()),
            prefix: Set(new.prefix.as_str().to_owned()),
            file_path: Set(new.file_path.clone()),
            meta: Set(new.meta.to_string()),
            transcode_status: Set(if new.transcode_job.is_some() { "queued" } else { "none" }.to_owned()),
            transcode_error: Set(None),
            renditions: Set(None),
            first_seen: Set(now),
            near_duplicate_of: Set(new.near_duplicate_of.map(|(h, _)| h.to_hex())),
            phash_distance: Set(new.near_duplicate_of.map(|(_, d)| d as i32)),
            variant_of: Set(new.variant_of.map(|h| h.to_hex())),
            match_info: Set(new.match_info.as_ref().and_then(|m| serde_json::to_string(m).ok())),
        };
        let inserted = video::Entity::insert(row)
            .on_conflict(OnConflict::column(video::Column::Hash).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await?;
        if inserted == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        if let Some(url) = url {
            match new.variant_of {
                Some(stored) => Self::insert_alias_via(&txn, url, &stored, Some(&new.hash), &new.project, now).await?,
                None => Self::insert_alias_in(&txn, url, &new.hash, &new.project, now).await?,
            }
        }
        if let Some(sig) = &new.signature {
            signature::Entity::insert(sig.to_row(&new.hash))
                .on_conflict(OnConflict::column(signature::Column::Hash).do_nothing().to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
        if let Some((topic, payload)) = &new.transcode_job {
            Self::enqueue_job_in(&txn, topic, &new.hash.to_hex(), payload).await?;
        }
        let view = Holding {
            bucket: new.bucket.as_str().to_owned(),
            prefix: new.prefix.as_str().to_owned(),
            file_path: new.file_path.clone(),
            meta: new.meta.clone(),
            since: now,
            public: new.public,
            transcode: None,
            upload: None,
        };
        Self::hold_in(&txn, &new.hash, &new.project, &view).await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn hold_in(
        db: &impl ConnectionTrait,
        hash: &ContentHash,
        project: &str,
        view: &Holding,
    ) -> Result<bool, RepoError> {
        let inserted = video_project::Entity::insert(video_project::ActiveModel {
            hash: Set(hash.to_hex()),
            project_id: Set(project.to_owned()),
            created_at: Set(view.since),
            bucket: Set(Some(view.bucket.clone())),
            prefix: Set(Some(view.prefix.clone())),
            file_path: Set(Some(view.file_path.clone())),
            meta: Set(Some(view.meta.to_string())),
            public: Set(view.public),
            transcode_status: Set(view.transcode.map(|s| s.as_str().to_owned())),
            upload_id: Set(view.upload.as_ref().map(|u| u.as_str().to_owned())),
        })
        .on_conflict(
            OnConflict::columns([video_project::Column::Hash, video_project::Column::ProjectId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
        Ok(inserted > 0)
    }

    // ---- projects (section 8) ----

    /// Makes `project` hold `hash`, seen as `view`; whether it did not
    /// before. With `job`, the project's own transcode job is queued in the
    /// same transaction (keyed `{hash}@{project}`), when it did not.
    pub async fn hold(
        &self,
        hash: &ContentHash,
        project: &str,
        view: &Holding,
        job: Option<(&str, &serde_json::Value)>,
    ) -> Result<bool, RepoError> {
        let _holders = self.holders.after_write();
        let txn = self.db.begin().await?;
        let inserted = Self::hold_in(&txn, hash, project, view).await?;
        if inserted && let Some((topic, payload)) = job {
            Self::enqueue_job_in(&txn, topic, &format!("{}@{project}", hash.to_hex()), payload).await?;
        }
        txn.commit().await?;
        Ok(inserted)
    }

    /// Sets how `project` sees the transcode of `hash` (`None`: as the
    /// video's own); `false` if it does not hold it.
    pub async fn set_project_transcode(
        &self,
        hash: &ContentHash,
        project: &str,
        status: Option<TranscodeStatus>,
    ) -> Result<bool, RepoError> {
        let _holders = self.holders.after_write();
        let updated = video_project::Entity::update_many()
            .col_expr(video_project::Column::TranscodeStatus, Expr::value(status.map(|s| s.as_str())))
            .filter(video_project::Column::Hash.eq(hash.to_hex()))
            .filter(video_project::Column::ProjectId.eq(project))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected > 0)
    }

    /// `entry` as `project` sees it: its video as `as_seen_by` shows it.
    pub async fn entry_as_seen_by(&self, mut entry: Entry, project: &str) -> Result<Entry, RepoError> {
        if let Some(video) = &mut entry.video
            && let Some(view) = self.holding(project, &video.hash).await?
        {
            video.seen_as(view);
        }
        Ok(entry)
    }

    /// `video` as `tenant` sees it (`Video::seen_as`); the operator sees it
    /// as stored.
    pub async fn as_seen_by(&self, mut video: Video, tenant: &Tenant) -> Result<Video, RepoError> {
        if let Some(project) = tenant.confined_to()
            && let Some(view) = self.holding(project, &video.hash).await?
        {
            video.seen_as(view);
        }
        Ok(video)
    }

    /// Whether `project` holds `hash`.
    pub async fn holds(&self, project: &str, hash: &ContentHash) -> Result<bool, RepoError> {
        Ok(video_project::Entity::find_by_id((hash.to_hex(), project.to_owned())).one(&self.db).await?.is_some())
    }

    /// Whether `tenant` may see the stored video `hash` at all.
    pub async fn sees(&self, tenant: &Tenant, hash: &ContentHash) -> Result<bool, RepoError> {
        match tenant.confined_to() {
            None => Ok(true),
            Some(project) => self.holds(project, hash).await,
        }
    }

    /// Sets whether `project`'s copy of `hash` is public; `false` if it
    /// does not hold it.
    pub async fn set_public(&self, hash: &ContentHash, project: &str, public: bool) -> Result<bool, RepoError> {
        let _holders = self.holders.after_write();
        let updated = video_project::Entity::update_many()
            .col_expr(video_project::Column::Public, Expr::value(public))
            .filter(video_project::Column::Hash.eq(hash.to_hex()))
            .filter(video_project::Column::ProjectId.eq(project))
            .exec(&self.db)
            .await?;
        Ok(updated.rows_affected > 0)
    }

    /// The projects holding `hash`.
    pub async fn holders(&self, hash: &ContentHash) -> Result<Vec<Holder>, RepoError> {
        let generation = match self.holders.get(hash) {
            Ok(holders) => return Ok(holders),
            Err(generation) => generation,
        };
        let rows =
            video_project::Entity::find().filter(video_project::Column::Hash.eq(hash.to_hex())).all(&self.db).await?;
        let holders: Vec<Holder> = rows
            .into_iter()
            .map(|r| Holder { pending: r.transcode_status.is_some(), project: r.project_id, public: r.public })
            .collect();
        self.holders.put(*hash, holders.clone(), generation);
        Ok(holders)
    }

    /// How `project` sees `hash` (where its upload put it, its metadata).
    pub async fn holding(&self, project: &str, hash: &ContentHash) -> Result<Option<Holding>, RepoError> {
        let row = video_project::Entity::find_by_id((hash.to_hex(), project.to_owned())).one(&self.db).await?;
        Ok(row.map(|r| Holding {
            bucket: r.bucket.unwrap_or_default(),
            prefix: r.prefix.unwrap_or_default(),
            file_path: r.file_path.unwrap_or_default(),
            meta: r.meta.and_then(|m| serde_json::from_str(&m).ok()).unwrap_or(serde_json::Value::Null),
            since: r.created_at,
            public: r.public,
            transcode: r.transcode_status.as_deref().map(TranscodeStatus::from_stored),
            upload: r.upload_id.as_deref().and_then(|u| UploadId::parse(u).ok()),
        }))
    }

    /// The video a URL was ingested as, if `tenant` may know it: a URL is
    /// its project's (the first to ingest it).
    pub async fn find_alias_as(&self, url: &SourceUrl, tenant: &Tenant) -> Result<Option<ContentHash>, RepoError> {
        let Some(project) = tenant.confined_to() else { return self.find_alias(url).await };
        let row = alias::Entity::find_by_id((url.as_str().to_owned(), project.to_owned())).one(&self.db).await?;
        let Some(hash) = row.and_then(|a| ContentHash::parse(&a.hash).ok()) else { return Ok(None) };
        Ok(self.sees(tenant, &hash).await?.then_some(hash))
    }

    /// The URLs of `hash` that `tenant` may know, oldest first.
    pub async fn aliases_of_as(&self, hash: &ContentHash, tenant: &Tenant) -> Result<Vec<String>, RepoError> {
        let rows = alias::Entity::find()
            .filter(alias::Column::Hash.eq(hash.to_hex()))
            .order_by_asc(alias::Column::CreatedAt)
            .order_by_asc(alias::Column::Url)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter(|a| tenant.confined_to().is_none_or(|p| a.project_id == p)).map(|a| a.url).collect())
    }

    /// `project` lets go of `hash`; how many projects still hold it.
    pub async fn release(&self, hash: &ContentHash, project: &str) -> Result<u64, RepoError> {
        let _holders = self.holders.after_write();
        video_project::Entity::delete_by_id((hash.to_hex(), project.to_owned())).exec(&self.db).await?;
        Ok(video_project::Entity::find().filter(video_project::Column::Hash.eq(hash.to_hex())).count(&self.db).await?)
    }

    /// Queues a transcode job for a stored video and marks it `queued`, in
    /// one transaction. `false` when the video is gone.
    pub async fn queue_transcode(
        &self,
        hash: &ContentHash,
        topic: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, RepoError> {
        let txn = self.db.begin().await?;
        let updated = video::Entity::update_many()
            .col_expr(video::Column::TranscodeStatus, Expr::value("queued"))
            .col_expr(video::Column::TranscodeError, Expr::value(Option::<String>::None))
            .filter(video::Column::Hash.eq(hash.to_hex()))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        Self::enqueue_job_in(&txn, topic, &hash.to_hex(), payload).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Sets a video's transcode status, and its error (`failed`) or
    /// renditions (`ready`); other statuses clear both. `false` when the
    /// video is gone.
    pub async fn set_transcode_status(
        &self,
        hash: &ContentHash,
        status: TranscodeStatus,
        error: Option<&str>,
        renditions: Option<&serde_json::Value>,
    ) -> Result<bool, RepoError> {
        let mut update = video::Entity::update_many()
            .col_expr(video::Column::TranscodeStatus, Expr::value(status.as_str()))
            .col_expr(video::Column::TranscodeError, Expr::value(error.map(str::to_owned)));
        // The renditions of the last published ladder stay until new ones are
        // published: they are served meanwhile (a video transcoded again by a
        // newer ladder stays playable while it is queued and processed).
        if let Some(renditions) = renditions {
            update = update.col_expr(video::Column::Renditions, Expr::value(Some(renditions.to_string())));
        }
        let updated = update.filter(video::Column::Hash.eq(hash.to_hex())).exec(&self.db).await?;
        Ok(updated.rows_affected > 0)
    }

    /// Records (or replaces) the signature of a stored video.
    pub async fn put_signature(&self, hash: &ContentHash, signature: &Signature) -> Result<(), RepoError> {
        use signature::Column as C;
        signature::Entity::insert(signature.to_row(hash))
            .on_conflict(
                OnConflict::column(C::Hash)
                    .update_columns([
                        C::DurationMs,
                        C::Samples,
                        C::KeyframesMs,
                        C::FramesDecoded,
                        C::PacketsSkipped,
                        C::FirstByteAt,
                        C::FirstHashAt,
                        C::BytesCompleteAt,
                        C::AnalysedAt,
                        C::Audio,
                        C::Pending,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// What a stored video's analysis knew of its sound (`Unknown` without
    /// a signature).
    pub async fn find_audio(&self, hash: &ContentHash) -> Result<crate::dedup::AudioPrint, RepoError> {
        let stored: Option<Option<String>> = signature::Entity::find_by_id(hash.to_hex())
            .select_only()
            .column(signature::Column::Audio)
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(crate::dedup::AudioPrint::from_stored(stored.flatten().as_deref()))
    }

    /// Videos whose signature is still the partial one finalize had.
    pub async fn pending_signatures(&self) -> Result<Vec<ContentHash>, RepoError> {
        let rows: Vec<String> = signature::Entity::find()
            .select_only()
            .column(signature::Column::Hash)
            .filter(signature::Column::Pending.eq(true))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.iter().filter_map(|h| ContentHash::parse(h).ok()).collect())
    }

    /// The variants kept of a stored video, oldest first.
    pub async fn variants_of(&self, hash: &ContentHash) -> Result<Vec<Video>, RepoError> {
        Ok(video::Entity::find()
            .filter(video::Column::VariantOf.eq(hash.to_hex()))
            .order_by_asc(video::Column::FirstSeen)
            .order_by_asc(video::Column::Hash)
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(Video::from_row)
            .collect())
    }

    /// The URLs a variant's uploads brought (aliases of the stored video).
    pub async fn aliases_via(&self, variant: &ContentHash) -> Result<Vec<String>, RepoError> {
        Ok(alias::Entity::find()
            .select_only()
            .column(alias::Column::Url)
            .filter(alias::Column::Via.eq(variant.to_hex()))
            .order_by_asc(alias::Column::CreatedAt)
            .order_by_asc(alias::Column::Url)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Makes a variant its own video again, in one transaction: it is no
    /// longer a variant, it is marked as a near-duplicate of the video it was
    /// merged into (the match stays on record), the URLs its uploads brought
    /// become its aliases again, and the video entries of those uploads
    /// point at it. With `transcode_job`, the job is queued with it.
    /// `None` when `variant` is not a variant.
    pub async fn unmerge(
        &self,
        variant: &ContentHash,
        transcode_job: Option<(&str, &serde_json::Value)>,
    ) -> Result<Option<Video>, RepoError> {
        let txn = self.db.begin().await?;
        let Some(row) = video::Entity::find_by_id(variant.to_hex()).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let Some(stored) = row.variant_of.clone() else {
            txn.rollback().await?;
            return Ok(None);
        };
        let status = if transcode_job.is_some() { TranscodeStatus::Queued } else { TranscodeStatus::None };
        video::Entity::update_many()
            .col_expr(video::Column::VariantOf, Expr::value(Option::<String>::None))
            .col_expr(video::Column::NearDuplicateOf, Expr::value(Some(stored.clone())))
            .col_expr(video::Column::TranscodeStatus, Expr::value(status.as_str()))
            .filter(video::Column::Hash.eq(variant.to_hex()))
            .exec(&txn)
            .await?;
        alias::Entity::update_many()
            .col_expr(alias::Column::Hash, Expr::value(variant.to_hex()))
            .col_expr(alias::Column::Via, Expr::value(Option::<String>::None))
            .filter(alias::Column::Via.eq(variant.to_hex()))
            .exec(&txn)
            .await?;
        let uploads: Vec<String> = upload_session::Entity::find()
            .select_only()
            .column(upload_session::Column::Id)
            .filter(upload_session::Column::CommitHash.eq(variant.to_hex()))
            .into_tuple()
            .all(&txn)
            .await?;
        if !uploads.is_empty() {
            video_entry::Entity::update_many()
                .col_expr(video_entry::Column::Hash, Expr::value(Some(variant.to_hex())))
                .filter(video_entry::Column::UploadId.is_in(uploads))
                .exec(&txn)
                .await?;
        }
        if let Some((topic, payload)) = transcode_job {
            Self::enqueue_job_in(&txn, topic, &variant.to_hex(), payload).await?;
        }
        txn.commit().await?;
        Ok(Video::from_row(row))
    }

    /// Variants first seen before `before` (for `dedup.variant_retention`).
    pub async fn variants_before(&self, before: DateTime<Utc>) -> Result<Vec<ContentHash>, RepoError> {
        let rows: Vec<String> = video::Entity::find()
            .select_only()
            .column(video::Column::Hash)
            .filter(video::Column::VariantOf.is_not_null())
            .filter(video::Column::FirstSeen.lt(before))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.iter().filter_map(|h| ContentHash::parse(h).ok()).collect())
    }

    /// The signature of a stored video, if its analysis recorded one.
    pub async fn find_signature(&self, hash: &ContentHash) -> Result<Option<Signature>, RepoError> {
        let row = signature::Entity::find_by_id(hash.to_hex()).one(&self.db).await?;
        Ok(row.and_then(Signature::from_row).map(|(_, s)| s))
    }

    /// Every stored signature but the variants', a page at a time (to rebuild the index).
    pub async fn signatures_page(
        &self,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<(ContentHash, Signature)>, RepoError> {
        // Variants are not indexed: uploads are matched against the videos
        // users see (an unmerged variant is one of those again).
        let variants = sea_orm::sea_query::Query::select()
            .column(video::Column::Hash)
            .from(video::Entity)
            .and_where(video::Column::VariantOf.is_not_null())
            .to_owned();
        let mut query = signature::Entity::find()
            .filter(signature::Column::Hash.not_in_subquery(variants))
            .order_by_asc(signature::Column::Hash)
            .limit(limit);
        if let Some(after) = after {
            query = query.filter(signature::Column::Hash.gt(after));
        }
        Ok(query.all(&self.db).await?.into_iter().filter_map(Signature::from_row).collect())
    }

    /// Adds `url` as an alias of `hash`, brought by its variant `via`.
    pub async fn add_alias_via(
        &self,
        url: &SourceUrl,
        hash: &ContentHash,
        via: &ContentHash,
        project: &str,
    ) -> Result<(), RepoError> {
        Self::insert_alias_via(&self.db, url, hash, Some(via), project, Utc::now()).await
    }

    /// Adds `url` as an alias of `hash` for `project`; a URL already known
    /// keeps its first owner (and project).
    pub async fn add_alias(&self, url: &SourceUrl, hash: &ContentHash, project: &str) -> Result<(), RepoError> {
        Self::insert_alias_in(&self.db, url, hash, project, Utc::now()).await
    }

    async fn insert_alias_in<C: ConnectionTrait>(
        conn: &C,
        url: &SourceUrl,
        hash: &ContentHash,
        project: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        Self::insert_alias_via(conn, url, hash, None, project, now).await
    }

    async fn insert_alias_via<C: ConnectionTrait>(
        conn: &C,
        url: &SourceUrl,
        hash: &ContentHash,
        via: Option<&ContentHash>,
        project: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RepoError> {
        let row = alias::ActiveModel {
            url: Set(url.as_str().to_owned()),
            hash: Set(hash.to_hex()),
            created_at: Set(now),
            via: Set(via.map(ContentHash::to_hex)),
            project_id: Set(project.to_owned()),
        };
        alias::Entity::insert(row)
            .on_conflict(OnConflict::columns([alias::Column::Url, alias::Column::ProjectId]).do_nothing().to_owned())
            .exec_without_returning(conn)
            .await?;
        Ok(())
    }

    /// The hashes of the videos whose transcode status is `status`, in hash
    /// order (`vidcache requeue-outdated` walks the `ready` ones).
    /// Every stored video's hash and object key, variants included, in hash order.
    pub async fn object_keys(&self) -> Result<Vec<(ContentHash, String)>, RepoError> {
        let rows: Vec<(String, String)> = video::Entity::find()
            .select_only()
            .column(video::Column::Hash)
            .column(video::Column::FilePath)
            .order_by_asc(video::Column::Hash)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(|(h, key)| Some((ContentHash::parse(&h).ok()?, key))).collect())
    }

    pub async fn hashes_with_transcode_status(&self, status: TranscodeStatus) -> Result<Vec<ContentHash>, RepoError> {
        let rows: Vec<String> = video::Entity::find()
            .select_only()
            .column(video::Column::Hash)
            .filter(video::Column::TranscodeStatus.eq(status.as_str()))
            .order_by_asc(video::Column::Hash)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.iter().filter_map(|h| ContentHash::parse(h).ok()).collect())
    }

    /// Removes a video, every alias of it, and its variants (copies of it
    /// whose URLs are its aliases), in one transaction. Returns the removed
    /// rows, the video's first, or nothing if there was no such video.
    pub async fn delete_video(&self, hash: &ContentHash) -> Result<Vec<Video>, RepoError> {
        let _holders = self.holders.after_write();
        let txn = self.db.begin().await?;
        let Some(row) = video::Entity::find_by_id(hash.to_hex()).one(&txn).await? else {
            txn.rollback().await?;
            return Ok(Vec::new());
        };
        let variants = video::Entity::find().filter(video::Column::VariantOf.eq(hash.to_hex())).all(&txn).await?;
        let mut removed = vec![row];
        removed.extend(variants);
        for row in &removed {
            let hash = &row.hash;
            alias::Entity::delete_many().filter(alias::Column::Hash.eq(hash)).exec(&txn).await?;
            // A deleted variant's URLs stay aliases of the video it was
            // merged into (they are removed above if that is deleted too).
            alias::Entity::update_many()
                .col_expr(alias::Column::Via, Expr::value(Option::<String>::None))
                .filter(alias::Column::Via.eq(hash))
                .exec(&txn)
                .await?;
            video_entry::Entity::delete_many().filter(video_entry::Column::Hash.eq(hash)).exec(&txn).await?;
            signature::Entity::delete_by_id(hash).exec(&txn).await?;
            video_project::Entity::delete_many().filter(video_project::Column::Hash.eq(hash)).exec(&txn).await?;
            video::Entity::delete_by_id(hash).exec(&txn).await?;
        }
        txn.commit().await?;
        Ok(removed.into_iter().filter_map(Video::from_row).collect())
    }

    // ---- upload sessions ----

    /// Records a new session; with `entry`, also the video entry it fills,
    /// in the same transaction. Returns the session as stored (with its
    /// entry id); `None` when a session with its id exists.
    pub async fn insert_session(
        &self,
        record: &SessionRecord,
        entry: Option<&NewEntry>,
    ) -> Result<Option<SessionRecord>, RepoError> {
        let mut record = record.clone();
        let txn = self.db.begin().await?;
        let row = upload_session::ActiveModel {
            id: Set(record.id.as_str().to_owned()),
            url: Set(record.url.as_ref().map(|u| u.as_str().to_owned())),
            bucket: Set(record.bucket.as_str().to_owned()),
            prefix: Set(record.prefix.as_str().to_owned()),
            meta: Set(record.meta.to_string()),
            state: Set(record.state.as_str().to_owned()),
            durable_bytes: Set(record.durable_bytes as i64),
            commit_hash: Set(None),
            commit_path: Set(None),
            result: Set(None),
            error: Set(None),
            created_at: Set(record.created_at),
            updated_at: Set(record.updated_at),
            kind: Set(record.kind.as_str().to_owned()),
            total_size: Set(record.total_size.map(|v| v as i64)),
            chunk_size: Set(record.chunk_size.map(|v| v as i64)),
            owner: Set(record.owner.clone()),
            entry_id: Set(None),
            project_id: Set(Some(record.project.clone())),
            public: Set(record.public),
            staged: Set(record.staged.clone()),
            claimed_until: Set(None),
        };
        // The session first: when its id is taken (only ids chosen in
        // advance can be), nothing else is written.
        let inserted = upload_session::Entity::insert(row)
            .on_conflict(OnConflict::column(upload_session::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await?;
        if inserted == 0 {
            return Ok(None); // the transaction is rolled back as it drops
        }
        if let Some(entry) = entry {
            let row = video_entry::ActiveModel {
                upload_id: Set(Some(record.id.as_str().to_owned())),
                hash: Set(None),
                filename: Set(entry.filename.clone()),
                content_type: Set(entry.content_type.clone()),
                project_id: Set(entry.project_id.clone()),
                door: Set(record.kind.as_str().to_owned()),
                status: Set(EntryStatus::Uploading.as_str().to_owned()),
                error: Set(None),
                created_at: Set(record.created_at),
                updated_at: Set(record.created_at),
                ..Default::default()
            };
            let entry_id = video_entry::Entity::insert(row).exec(&txn).await?.last_insert_id;
            upload_session::Entity::update_many()
                .col_expr(upload_session::Column::EntryId, Expr::value(entry_id))
                .filter(upload_session::Column::Id.eq(record.id.as_str()))
                .exec(&txn)
                .await?;
            record.entry_id = Some(entry_id);
        }
        txn.commit().await?;
        Ok(Some(record))
    }

    /// Receiving sessions opened by `owner`: the per-key concurrency limit.
    pub async fn open_sessions_of(&self, owner: &str) -> Result<u64, RepoError> {
        Ok(upload_session::Entity::find()
            .filter(upload_session::Column::Owner.eq(owner))
            .filter(upload_session::Column::State.eq(SessionState::Receiving.as_str()))
            .count(&self.db)
            .await?)
    }

    /// Every piece an upload has stored, by number.
    pub async fn pieces_of(&self, id: &UploadId) -> Result<Vec<Piece>, RepoError> {
        let rows = upload_piece::Entity::find()
            .filter(upload_piece::Column::UploadId.eq(id.as_str()))
            // A shared chunk reserved but not yet in the bucket is not stored.
            .filter(
                Condition::any()
                    .add(upload_piece::Column::Tree.is_null())
                    .add(upload_piece::Column::Etag.is_not_null()),
            )
            .order_by_asc(upload_piece::Column::Number)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(Piece {
                    number: r.number as u32,
                    size: r.size_bytes as u64,
                    hash: ContentHash::parse(&r.hash).ok()?,
                })
            })
            .collect())
    }

    /// Records a durable piece (replacing one with its number, as S3
    /// replaces a part) and touches the session, which counts as activity
    /// for expiry. `etag`: a part of a shared multipart
    /// upload, in the bucket as the object with that tag.
    pub async fn put_piece(&self, id: &UploadId, piece: &Piece, etag: Option<&str>) -> Result<(), RepoError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let row = upload_piece::ActiveModel {
            upload_id: Set(id.as_str().to_owned()),
            number: Set(piece.number as i32),
            size_bytes: Set(piece.size as i64),
            hash: Set(piece.hash.to_hex()),
            created_at: Set(now),
            tree: Set(None),
            etag: Set(etag.map(str::to_owned)),
        };
        upload_piece::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([upload_piece::Column::UploadId, upload_piece::Column::Number])
                    .update_columns([
                        upload_piece::Column::SizeBytes,
                        upload_piece::Column::Hash,
                        upload_piece::Column::Etag,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::UpdatedAt, now.into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    // ---- chunked uploads any daemon takes (`upload::shared`) ----

    /// Every chunk of a shared upload: reserved ones (no ETag yet) too.
    pub async fn staged_pieces_of(&self, id: &UploadId) -> Result<Vec<StagedPiece>, RepoError> {
        let rows = upload_piece::Entity::find()
            .filter(upload_piece::Column::UploadId.eq(id.as_str()))
            .order_by_asc(upload_piece::Column::Number)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(StagedPiece {
                    piece: Piece {
                        number: r.number as u32,
                        size: r.size_bytes as u64,
                        hash: ContentHash::parse(&r.hash).ok()?,
                    },
                    tree: r.tree,
                    etag: r.etag,
                })
            })
            .collect())
    }

    /// Reserves chunk `piece.number` of a shared upload for these bytes
    /// (their hash and subtree chaining values) before they go to the
    /// bucket. The first reservation of a number wins: answers the piece
    /// that holds the number now, which is `piece` unless other bytes got
    /// there first.
    pub async fn reserve_staged_piece(
        &self,
        id: &UploadId,
        piece: &Piece,
        tree: &str,
    ) -> Result<StagedPiece, RepoError> {
        let row = upload_piece::ActiveModel {
            upload_id: Set(id.as_str().to_owned()),
            number: Set(piece.number as i32),
            size_bytes: Set(piece.size as i64),
            hash: Set(piece.hash.to_hex()),
            created_at: Set(Utc::now()),
            tree: Set(Some(tree.to_owned())),
            etag: Set(None),
        };
        upload_piece::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([upload_piece::Column::UploadId, upload_piece::Column::Number])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        let held =
            self.staged_pieces_of(id).await?.into_iter().find(|p| p.piece.number == piece.number).ok_or_else(|| {
                RepoError(sea_orm::DbErr::RecordNotFound(format!(
                    "chunk {} of {id} vanished as it was reserved",
                    piece.number
                )))
            })?;
        Ok(held)
    }

    /// Records that the bucket holds chunk `number` (with these bytes) as
    /// a part with `etag`, and touches the session. False if the number is
    /// held by other bytes.
    pub async fn store_staged_piece(
        &self,
        id: &UploadId,
        number: u32,
        hash: &ContentHash,
        etag: &str,
    ) -> Result<bool, RepoError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        let updated = upload_piece::Entity::update_many()
            .col_expr(upload_piece::Column::Etag, etag.into())
            .filter(upload_piece::Column::UploadId.eq(id.as_str()))
            .filter(upload_piece::Column::Number.eq(number as i32))
            .filter(upload_piece::Column::Hash.eq(hash.to_hex()))
            .exec(&txn)
            .await?
            .rows_affected;
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::UpdatedAt, now.into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(updated == 1)
    }

    /// Claims the finalize of a shared upload until `until`: it must be
    /// receiving or committing, and nobody's claim may be running. Answers
    /// the session as claimed, or `None` if another daemon holds it.
    pub async fn claim_finalize(
        &self,
        id: &UploadId,
        until: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, RepoError> {
        let now = Utc::now();
        let claimed = upload_session::Entity::update_many()
            .col_expr(upload_session::Column::ClaimedUntil, until.into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .filter(upload_session::Column::Staged.is_not_null())
            .filter(
                upload_session::Column::State
                    .is_in([SessionState::Receiving.as_str(), SessionState::Committing.as_str()]),
            )
            .filter(
                Condition::any()
                    .add(upload_session::Column::ClaimedUntil.is_null())
                    .add(upload_session::Column::ClaimedUntil.lt(now)),
            )
            .exec(&self.db)
            .await?
            .rows_affected;
        if claimed == 0 {
            return Ok(None);
        }
        self.find_session(id).await
    }

    /// Moves a running claim on from `held` to `next`. False if the claim
    /// is no longer `held` (it ran out and another daemon took it): the
    /// holder must stop writing.
    pub async fn renew_claim(
        &self,
        id: &UploadId,
        held: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> Result<bool, RepoError> {
        let renewed = upload_session::Entity::update_many()
            .col_expr(upload_session::Column::ClaimedUntil, next.into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .filter(upload_session::Column::ClaimedUntil.eq(held))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(renewed == 1)
    }

    /// Records the progress of a shared tus upload under the claim `held`
    /// (the claim is the fence: a writer whose claim another daemon took
    /// records nothing): chunk `stored` now in the bucket with its ETag,
    /// and the upload's durable length. False if the claim is not `held`.
    pub async fn record_shared_progress(
        &self,
        id: &UploadId,
        held: DateTime<Utc>,
        stored: Option<(u32, &ContentHash, &str)>,
        durable_bytes: u64,
    ) -> Result<bool, RepoError> {
        let txn = self.db.begin().await?;
        let moved = upload_session::Entity::update_many()
            .col_expr(upload_session::Column::DurableBytes, (durable_bytes as i64).into())
            .col_expr(upload_session::Column::UpdatedAt, Utc::now().into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .filter(upload_session::Column::ClaimedUntil.eq(held))
            .exec(&txn)
            .await?
            .rows_affected;
        if moved != 1 {
            return Ok(false); // rolled back as `txn` drops
        }
        if let Some((number, hash, etag)) = stored {
            let updated = upload_piece::Entity::update_many()
                .col_expr(upload_piece::Column::Etag, etag.into())
                .filter(upload_piece::Column::UploadId.eq(id.as_str()))
                .filter(upload_piece::Column::Number.eq(number as i32))
                .filter(upload_piece::Column::Hash.eq(hash.to_hex()))
                .exec(&txn)
                .await?
                .rows_affected;
            if updated != 1 {
                return Ok(false);
            }
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Starts a shared upload over under the claim `held`: its pieces go,
    /// its offset is 0 and its length unknown again (a streamed body sent
    /// again whole). False if the claim is not `held`.
    pub async fn reset_shared(&self, id: &UploadId, held: DateTime<Utc>) -> Result<bool, RepoError> {
        let txn = self.db.begin().await?;
        let reset = upload_session::Entity::update_many()
            .col_expr(upload_session::Column::DurableBytes, 0i64.into())
            .col_expr(upload_session::Column::TotalSize, Option::<i64>::None.into())
            .col_expr(upload_session::Column::UpdatedAt, Utc::now().into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .filter(upload_session::Column::ClaimedUntil.eq(held))
            .exec(&txn)
            .await?
            .rows_affected;
        if reset != 1 {
            return Ok(false);
        }
        upload_piece::Entity::delete_many().filter(upload_piece::Column::UploadId.eq(id.as_str())).exec(&txn).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Lets go of a claim that is still `held` (the finalize or the write
    /// ended); one another daemon took after it ran out stays.
    pub async fn release_claim(&self, id: &UploadId, held: DateTime<Utc>) -> Result<(), RepoError> {
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::ClaimedUntil, Option::<DateTime<Utc>>::None.into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .filter(upload_session::Column::ClaimedUntil.eq(held))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Whether a daemon's finalize claim on the session is running now.
    pub async fn finalize_claimed(&self, id: &UploadId) -> Result<bool, RepoError> {
        let row = upload_session::Entity::find_by_id(id.as_str().to_owned()).one(&self.db).await?;
        Ok(row.and_then(|r| r.claimed_until).is_some_and(|until| until > Utc::now()))
    }

    // ---- video entries ----

    pub async fn find_entry(&self, id: i64) -> Result<Option<Entry>, RepoError> {
        let Some(entry) = video_entry::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(None);
        };
        let video = match &entry.hash {
            Some(hash) => video::Entity::find_by_id(hash.clone()).one(&self.db).await?.and_then(Video::from_row),
            None => None,
        };
        // The upload's own bytes: a variant when they differ from `video`.
        let committed: Option<Option<String>> = match &entry.upload_id {
            Some(upload) => {
                upload_session::Entity::find_by_id(upload.clone())
                    .select_only()
                    .column(upload_session::Column::CommitHash)
                    .into_tuple()
                    .one(&self.db)
                    .await?
            }
            None => None,
        };
        let variant = match committed.flatten().filter(|h| Some(h) != entry.hash.as_ref()) {
            Some(own) => video::Entity::find_by_id(own)
                .filter(video::Column::VariantOf.is_not_null())
                .one(&self.db)
                .await?
                .and_then(Video::from_row),
            None => None,
        };
        Ok(Some(Entry { entry: EntryRecord::from_row(entry), video, variant }))
    }

    /// Entries, newest first.
    /// The newest entries, of `project` only when given (entries from before
    /// projects, with none, are `default`'s).
    pub async fn list_entries(&self, limit: u64, offset: u64, project: Option<&str>) -> Result<Vec<Entry>, RepoError> {
        let mut query = video_entry::Entity::find();
        if let Some(project) = project {
            let mut of_project = Condition::any().add(video_entry::Column::ProjectId.eq(project));
            if project == DEFAULT_PROJECT {
                of_project = of_project.add(video_entry::Column::ProjectId.is_null());
            }
            query = query.filter(of_project);
        }
        let entries = query.order_by_desc(video_entry::Column::Id).limit(limit).offset(offset).all(&self.db).await?;
        let hashes: Vec<String> = entries.iter().filter_map(|e| e.hash.clone()).collect();
        let videos = if hashes.is_empty() {
            Vec::new()
        } else {
            video::Entity::find().filter(video::Column::Hash.is_in(hashes)).all(&self.db).await?
        };
        let mut videos: Vec<Video> = videos.into_iter().filter_map(Video::from_row).collect();
        if let Some(project) = project {
            for video in &mut videos {
                if let Some(view) = self.holding(project, &video.hash).await? {
                    video.seen_as(view);
                }
            }
        }
        Ok(entries
            .into_iter()
            .map(|entry| {
                let video = entry.hash.as_ref().and_then(|h| videos.iter().find(|v| v.hash.to_hex() == *h).cloned());
                Entry { entry: EntryRecord::from_row(entry), video, variant: None }
            })
            .collect())
    }

    pub async fn find_session(&self, id: &UploadId) -> Result<Option<SessionRecord>, RepoError> {
        let row = upload_session::Entity::find_by_id(id.as_str().to_owned()).one(&self.db).await?;
        Ok(row.and_then(session_from_row))
    }

    /// Every session in `state`: start-up recovery looks at `Receiving`
    /// (spools to cut back) and `Committing` (commits a crash interrupted).
    pub async fn sessions_in(&self, state: SessionState) -> Result<Vec<SessionRecord>, RepoError> {
        let rows = upload_session::Entity::find()
            .filter(upload_session::Column::State.eq(state.as_str()))
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(session_from_row).collect())
    }

    /// Records, before the spool is renamed into place, where it is going.
    pub async fn begin_commit(&self, id: &UploadId, hash: &ContentHash, key: &ObjectKey) -> Result<(), RepoError> {
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::State, SessionState::Committing.as_str().into())
            .col_expr(upload_session::Column::CommitHash, hash.to_hex().into())
            .col_expr(upload_session::Column::CommitPath, key.as_str().into())
            .col_expr(upload_session::Column::UpdatedAt, Utc::now().into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Puts a session back to receiving (a commit that did not happen). Its
    /// hash and key stay: where its last commit went, which the removal of
    /// a shared upload's pieces reads (a layout there may name them).
    pub async fn reopen_session(&self, id: &UploadId) -> Result<(), RepoError> {
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::State, SessionState::Receiving.as_str().into())
            .col_expr(upload_session::Column::UpdatedAt, Utc::now().into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Receiving sessions untouched since `before`: abandoned.
    pub async fn stale_sessions(&self, before: DateTime<Utc>) -> Result<Vec<SessionRecord>, RepoError> {
        let rows = upload_session::Entity::find()
            .filter(upload_session::Column::State.eq(SessionState::Receiving.as_str()))
            .filter(upload_session::Column::UpdatedAt.lt(before))
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().filter_map(session_from_row).collect())
    }

    /// Records durable progress and touches the session.
    /// Records the length of an upload created without one (tus
    /// `creation-defer-length`); a length once recorded is never changed.
    pub async fn set_total_size(&self, id: &UploadId, total: u64) -> Result<(), RepoError> {
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::TotalSize, (total as i64).into())
            .col_expr(upload_session::Column::UpdatedAt, Utc::now().into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .filter(upload_session::Column::TotalSize.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn record_progress(&self, id: &UploadId, durable_bytes: u64) -> Result<(), RepoError> {
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::DurableBytes, (durable_bytes as i64).into())
            .col_expr(upload_session::Column::UpdatedAt, Utc::now().into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Moves a session to a final state with its result or error.
    pub async fn close_session(
        &self,
        id: &UploadId,
        state: SessionState,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<(), RepoError> {
        let now = Utc::now();
        let txn = self.db.begin().await?;
        upload_session::Entity::update_many()
            .col_expr(upload_session::Column::State, state.as_str().into())
            .col_expr(upload_session::Column::Result, result.map(|r| r.to_string()).into())
            .col_expr(upload_session::Column::Error, error.map(str::to_owned).into())
            .col_expr(upload_session::Column::UpdatedAt, now.into())
            .filter(upload_session::Column::Id.eq(id.as_str()))
            .exec(&txn)
            .await?;
        // The entry follows its upload in the same transaction, so a crash
        // never leaves a finished upload with an entry still "uploading".
        let hash = result.and_then(|r| r.get("hash")).and_then(|h| h.as_str()).map(str::to_owned);
        video_entry::Entity::update_many()
            .col_expr(video_entry::Column::Status, EntryStatus::of(state).as_str().into())
            .col_expr(video_entry::Column::Hash, hash.into())
            .col_expr(video_entry::Column::Error, error.map(str::to_owned).into())
            .col_expr(video_entry::Column::UpdatedAt, now.into())
            .filter(video_entry::Column::UploadId.eq(id.as_str()))
            .exec(&txn)
            .await?;
        upload_piece::Entity::delete_many().filter(upload_piece::Column::UploadId.eq(id.as_str())).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }
}

fn session_from_row(row: upload_session::Model) -> Option<SessionRecord> {
    // A row that does not parse was not written by vidcache; skip it rather
    // than let it reach a path.
    Some(SessionRecord {
        id: UploadId::parse(&row.id).ok()?,
        url: row.url.as_deref().and_then(|u| SourceUrl::parse(u).ok()),
        bucket: Bucket::parse(&row.bucket).ok()?,
        prefix: Prefix::parse(&row.prefix).ok()?,
        meta: serde_json::from_str(&row.meta).unwrap_or(serde_json::Value::Null),
        state: SessionState::parse(&row.state),
        durable_bytes: u64::try_from(row.durable_bytes).ok()?,
        commit: match (row.commit_hash.as_deref(), row.commit_path.as_deref()) {
            (Some(hash), Some(path)) => Some((ContentHash::parse(hash).ok()?, ObjectKey::from_stored(path).ok()?)),
            _ => None,
        },
        result: row.result.as_deref().and_then(|r| serde_json::from_str(r).ok()),
        error: row.error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        kind: UploadKind::parse(&row.kind),
        total_size: row.total_size.and_then(|v| u64::try_from(v).ok()),
        chunk_size: row.chunk_size.and_then(|v| u64::try_from(v).ok()),
        owner: row.owner,
        entry_id: row.entry_id,
        project: row.project_id.unwrap_or_else(|| DEFAULT_PROJECT.to_owned()),
        public: row.public,
        staged: row.staged,
    })
}
