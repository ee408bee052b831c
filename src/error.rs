//! The HTTP error type. Every failure a client can see is an `ApiError` with a
//! status and a stable kebab-case `code`, rendered as
//! `{"code": "...", "message": "..."}`. Module errors convert into it here,
//! and only here, so the mapping from failure to status is in one place.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers, such as `Upload-Offset` on an offset mismatch.
    pub headers: Vec<(&'static str, String)>,
    /// Extra body fields, such as `missing` on a finalize with missing chunks.
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), headers: Vec::new(), extra: None }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_field(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra.get_or_insert_with(Default::default).insert(name.to_owned(), value);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status);
        builder.insert_header((header::CONTENT_TYPE, "application/json"));
        for (name, value) in &self.headers {
            builder.insert_header((*name, value.as_str()));
        }
        builder.json(ErrorBody { code: self.code, message: &self.message, extra: self.extra.as_ref() })
    }
}

impl From<crate::domain::ParseError> for ApiError {
    fn from(e: crate::domain::ParseError) -> Self {
        let code = match e.field {
            "bucket" | "prefix" => "invalid-location",
            "url" => "invalid-url",
            "hash" => "invalid-hash",
            "upload_id" => "invalid-upload-id",
            _ => "invalid-input",
        };
        Self::bad_request(code, e.to_string())
    }
}

impl From<crate::storage::RepoError> for ApiError {
    fn from(e: crate::storage::RepoError) -> Self {
        tracing::error!(error = %e, "database failure");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database-unavailable", "the database could not be reached")
    }
}

impl From<crate::upload::UploadError> for ApiError {
    fn from(e: crate::upload::UploadError) -> Self {
        use crate::upload::UploadError as E;
        let status = match e {
            E::Repo(inner) => return inner.into(),
            E::UnknownSession => StatusCode::NOT_FOUND,
            E::Expired => StatusCode::GONE,
            E::Busy
            | E::Failed(_)
            | E::OffsetMismatch { .. }
            | E::PieceConflict(_)
            | E::PieceBusy(_)
            | E::MissingPieces(_)
            | E::Elsewhere => StatusCode::CONFLICT,
            E::BadPiece(_) | E::BadParts(_) | E::WrongDoor | E::LengthMismatch { .. } => StatusCode::BAD_REQUEST,
            E::ChecksumMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            E::TooManySessions { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::IdTaken => StatusCode::FORBIDDEN,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::Truncated(_) => StatusCode::BAD_REQUEST,
            E::NotAVideo(_) | E::CorruptVideo(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::CommitInterrupted(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            E::Io(_) | E::Internal(_) => {
                tracing::error!(error = %e, "upload failed inside the daemon");
                return Self::internal("the upload could not be stored");
            }
        };
        let error = Self::new(status, e.code(), e.to_string());
        match e {
            E::OffsetMismatch { expected, .. } => error.with_header("Upload-Offset", expected.to_string()),
            // Another request (here or on another daemon) holds the upload:
            // a live one finishes, a dead one's claim runs out within
            // `upload.claim_secs`. Come back in a second.
            E::Busy => error.with_header("Retry-After", "1"),
            E::MissingPieces(missing) => error.with_field("missing", serde_json::json!(missing)),
            _ => error,
        }
    }
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        use crate::ingest::IngestError as E;
        let status = match e {
            E::Upload(inner) => return inner.into(),
            E::Forbidden(_) => StatusCode::FORBIDDEN,
            E::Timeout => StatusCode::GATEWAY_TIMEOUT,
            E::Status(_) | E::Fetch(_) | E::TooManyRedirects => StatusCode::BAD_GATEWAY,
            E::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<crate::library::LibraryError> for ApiError {
    fn from(e: crate::library::LibraryError) -> Self {
        use crate::library::LibraryError as E;
        match e {
            E::Unknown => Self::not_found("unknown-video", e.to_string()),
            E::NotAVariant => Self::new(StatusCode::CONFLICT, "not-a-variant", e.to_string()),
            E::IsAVariant => Self::new(StatusCode::CONFLICT, "is-a-variant", e.to_string()),
            E::Repo(e) => e.into(),
            E::Queue(e) => e.into(),
        }
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        use crate::queue::QueueError as E;
        match e {
            E::Repo(inner) => inner.into(),
            E::Kafka(_) => {
                tracing::error!(error = %e, "queue failure");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.code(), "the job queue could not be reached")
            }
        }
    }
}
