//! The upload engine that every front door shares. One `UploadSession` actor
//! per upload owns its spool and running hash; the `Registry` actor finds or
//! revives sessions by id and expires abandoned ones; the `Committer` turns a
//! finished spool into a stored object (or a duplicate) without reading it
//! again. HTTP code talks to all of it through the cloneable `Uploads` handle.

mod assembler;
mod committer;
mod concat;
mod early_probe;
mod handle;
mod local_copy;
pub use local_copy::LocalCopies;
mod pieces;
mod pump;
mod ranged;
mod registry;
mod session;
mod shared;
mod tree;
mod writer;

pub use committer::{Committer, IngestResult, IngestStatus};
pub use concat::{check_partial, taken_by};
pub use early_probe::ProbeSlots;
pub use handle::{NewUpload, PieceOutcome, TusAppend, Uploads};
pub use local_copy::SWEEP_EVERY as LOCAL_COPY_SWEEP;
pub use pieces::{MAX_PART_NUMBER, Tally, chunk_layout};
pub use pump::DigestKind;
pub use registry::Registry;
pub use shared::MIN_SHARED_CHUNK;
pub use tree::{PieceTree, root as tree_root};
pub use writer::SpoolWriter;

use crate::storage::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no upload with that id")]
    UnknownSession,
    #[error("the upload expired and its bytes were freed; start a new one")]
    Expired,
    #[error("another request is writing to this upload right now")]
    Busy,
    #[error("the upload failed earlier: {0}")]
    Failed(String),
    #[error("the upload has {expected} bytes; a resumed body must start at that offset (got {got})")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the body ended early ({0}); the upload can be resumed")]
    Truncated(String),
    #[error("{0}")]
    NotAVideo(String),
    /// A video whose stream is damaged: truncated, or with frames that do not decode.
    #[error("the video is damaged: {0}")]
    CorruptVideo(String),
    #[error("the video is stored but could not be recorded ({0}); it is recorded when the daemon restarts")]
    CommitInterrupted(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    /// The disk (or the storage's quota) is full. What the body brought
    /// past the last durable point was taken back and its space freed; the
    /// upload resumes from the offset its status reports.
    #[error(
        "the storage is full ({0}); bytes past the upload's last durable point were not kept: resume from the offset its status reports once space is free"
    )]
    StorageFull(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    BadPiece(String),
    #[error("chunk {0} is stored already with different bytes")]
    PieceConflict(u32),
    #[error("piece {0} is being uploaded by another request right now")]
    PieceBusy(u32),
    #[error("the body does not match the checksum the client sent")]
    ChecksumMismatch,
    #[error("the upload is missing {} chunk(s)", .0.len())]
    MissingPieces(Vec<u32>),
    #[error("{0}")]
    BadParts(String),
    #[error("this upload was not opened through this API")]
    WrongDoor,
    #[error("too many open uploads for this client (limit {limit}); finish or abort one first")]
    TooManySessions { limit: u64 },
    /// The upload id chosen in advance (a signed upload URL's) is taken:
    /// such a URL creates one upload only, even when two requests race.
    #[error("this upload URL has been used: it creates one upload only")]
    IdTaken,
    /// tus `creation-defer-length`: a length declared again differently, or
    /// shorter than the bytes already received.
    #[error("Upload-Length {got} does not fit the upload: {why}")]
    LengthMismatch { got: u64, why: String },
    /// The upload's bytes so far are in another daemon's spool (an upload
    /// that is not shared, reached through a daemon that did not create
    /// it), or were lost with that disk.
    #[error(
        "the bytes of this upload are held by the daemon that received them: send the request there (only uploads of a declared length, in chunks of 5 MiB or more, are taken by any daemon)"
    )]
    Elsewhere,
}

impl UploadError {
    /// Stable code, also used as the `reason` label of the failure counter.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown-upload",
            Self::Expired => "upload-expired",
            Self::Busy => "upload-busy",
            Self::Failed(_) => "upload-failed",
            Self::OffsetMismatch { .. } => "offset-mismatch",
            Self::TooLarge { .. } => "too-large",
            Self::Truncated(_) => "truncated-body",
            Self::NotAVideo(_) => "not-a-video",
            Self::CorruptVideo(_) => "corrupt-video",
            Self::CommitInterrupted(_) => "commit-interrupted",
            Self::Repo(_) => "database-unavailable",
            Self::Io(_) => "storage",
            Self::StorageFull(_) => "insufficient-storage",
            Self::Internal(_) => "internal",
            Self::BadPiece(_) => "bad-chunk",
            Self::PieceConflict(_) => "chunk-conflict",
            Self::PieceBusy(_) => "chunk-in-progress",
            Self::ChecksumMismatch => "checksum-mismatch",
            Self::MissingPieces(_) => "missing-chunks",
            Self::BadParts(_) => "invalid-parts",
            Self::WrongDoor => "wrong-upload-api",
            Self::TooManySessions { .. } => "too-many-uploads",
            Self::IdTaken => "upload-url-used",
            Self::LengthMismatch { .. } => "upload-length-mismatch",
            Self::Elsewhere => "upload-elsewhere",
        }
    }
}

/// Why a session takes no more bytes: `Ok` while it is receiving, else the
/// error every door answers for its state.
pub(crate) fn check_receiving(record: &crate::storage::SessionRecord) -> Result<(), UploadError> {
    use crate::storage::SessionState as S;
    match record.state {
        S::Receiving => Ok(()),
        S::Complete => Err(UploadError::Failed("the upload is already complete".into())),
        S::Failed => Err(UploadError::Failed(record.error.clone().unwrap_or_default())),
        S::Expired => Err(UploadError::Expired),
        S::Aborted => Err(UploadError::UnknownSession),
        S::Committing => Err(UploadError::Busy),
    }
}

impl UploadError {
    /// A storage error as the client should see it: a full disk is an
    /// answer (507, resumable), anything else a failure inside the daemon.
    pub fn storage(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Self::StorageFull(e.to_string()),
            _ => Self::Io(e),
        }
    }
}

impl From<actix::MailboxError> for UploadError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Internal(format!("upload actor unavailable: {e}"))
    }
}
