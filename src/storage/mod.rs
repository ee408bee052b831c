//! Ports to durable state: the blob store (bytes on disk) and the repository
//! (metadata in SQLite or PostgreSQL through sea-orm). Only this module
//! touches sea-orm; everything above it speaks in domain types and records.

mod blob;
pub mod entities;
mod jobs;
mod keys;
mod lock;
mod mapped;
mod migrate;
mod repo;
mod s3;

pub use blob::{LocalStore, Store, create_piece_file, cut_spool, file_names, keep_piece, remove_quietly};
pub use jobs::{Job, JobState};
pub use keys::StoredKey;
pub use lock::RootLock;
pub use mapped::{MappedFile, MappedFiles, Published, WHOLE_MAP};
pub use migrate::{MigrateReport, migrate_to_s3};
pub use repo::{
    Entry, EntryRecord, EntryStatus, Holder, Holding, NewEntry, NewVideo, Piece, RepoError, Repository, SessionRecord,
    SessionState, Signature, StagedPiece, TranscodeStatus, UploadKind, Video,
};
pub use s3::{Bucket, Found, Layout, PieceAt, S3Store, StoredObject};
