//! sea-orm entities, one module per table of `migrations/`.

pub mod video {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "videos")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        pub size_bytes: i64,
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
        pub meta: String,
        pub transcode_status: String,
        pub first_seen: DateTimeUtc,
        pub near_duplicate_of: Option<String>,
        pub phash_distance: Option<i32>,
        /// The last error of a failed transcode.
        pub transcode_error: Option<String>,
        /// JSON `[{"width", "height", "video_kbps"}]` of a finished transcode.
        pub renditions: Option<String>,
        /// A variant: the stored video it was matched to perceptually. Its
        /// bytes are kept, it is not transcoded, and its upload's URLs are
        /// aliases of that video until it is unmerged.
        pub variant_of: Option<String>,
        /// JSON `PerceptualMatch`: why it was matched (a variant, or kept
        /// with `near_duplicate_of`).
        pub match_info: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod signature {
    use sea_orm::entity::prelude::*;

    /// `samples` is JSON `[[pts_ms, "16 hex digits", keyframe, info], ...]`
    /// in time order (`info` missing in rows from before frames were
    /// scored); `keyframes_ms` is a JSON array of milliseconds.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "video_signatures")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        pub duration_ms: i64,
        pub samples: String,
        pub keyframes_ms: String,
        pub frames_decoded: i64,
        pub packets_skipped: i64,
        pub first_byte_at: Option<DateTimeUtc>,
        pub first_hash_at: Option<DateTimeUtc>,
        pub bytes_complete_at: Option<DateTimeUtc>,
        pub analysed_at: DateTimeUtc,
        /// `AudioPrint::to_stored`; NULL before audio was fingerprinted.
        pub audio: Option<String>,
        /// What finalize had while the analysis went on; the complete one
        /// replaces it (start-up analyses the video again if a crash lost it).
        pub pending: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod alias {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "url_aliases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub url: String,
        /// The project that ingested the URL: each project has its own.
        #[sea_orm(primary_key, auto_increment = false)]
        pub project_id: String,
        pub hash: String,
        pub created_at: DateTimeUtc,
        /// The variant whose upload brought this URL (`unmerge` gives it back).
        pub via: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod upload_session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "upload_sessions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub url: Option<String>,
        pub bucket: String,
        pub prefix: String,
        pub meta: String,
        pub state: String,
        pub durable_bytes: i64,
        pub commit_hash: Option<String>,
        pub commit_path: Option<String>,
        pub result: Option<String>,
        pub error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub kind: String,
        pub total_size: Option<i64>,
        pub chunk_size: Option<i64>,
        pub owner: Option<String>,
        pub entry_id: Option<i64>,
        pub project_id: Option<String>,
        pub public: bool,
        pub staged: Option<String>,
        pub claimed_until: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A received chunk (chunked door) or part (multipart door) of an upload.
pub mod upload_piece {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "upload_pieces")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub upload_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub number: i32,
        pub size_bytes: i64,
        pub hash: String,
        pub created_at: DateTimeUtc,
        pub tree: Option<String>,
        pub etag: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user-facing video with an integer id (`GET /videos`), made by a door's
/// init and tied to a content hash when its upload completes.
pub mod video_entry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "video_entries")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub upload_id: Option<String>,
        pub hash: Option<String>,
        pub filename: String,
        pub content_type: Option<String>,
        pub project_id: Option<String>,
        pub door: String,
        pub status: String,
        pub error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod job {
    use sea_orm::entity::prelude::*;

    /// A job of the embedded queue. `state`: `ready`, `leased` (until
    /// `available_at`), `done` or `dead`.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub topic: String,
        pub key: String,
        pub payload: String,
        pub state: String,
        pub attempts: i32,
        pub available_at: DateTimeUtc,
        pub leased_by: Option<String>,
        pub last_error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod api_key {
    use sea_orm::entity::prelude::*;

    /// A key minted at run time. `scopes` is a comma-separated list; `mac`
    /// is the hex HMAC of the secret (the secret itself is never stored).
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub project_id: String,
        pub scopes: String,
        pub mac: String,
        pub label: Option<String>,
        pub created_by: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod video_project {
    use sea_orm::entity::prelude::*;

    /// A project that holds a stored video (section 8: projects as tenants).
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "video_projects")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub hash: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub project_id: String,
        pub created_at: DateTimeUtc,
        pub bucket: Option<String>,
        pub prefix: Option<String>,
        pub file_path: Option<String>,
        pub meta: Option<String>,
        pub public: bool,
        /// The transcode as this project sees it while its own job runs;
        /// `None`: the video's own.
        pub transcode_status: Option<String>,
        /// The upload that made the project hold it.
        pub upload_id: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
