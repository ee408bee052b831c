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
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
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
        builder.json(ErrorBody { code: self.code, message: &self.message })
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
        let message = e.to_string();
        match e {
            E::UnknownSession => Self::not_found("unknown-upload", message),
            E::Expired => Self::new(StatusCode::GONE, "upload-expired", message),
            E::Busy => Self::new(StatusCode::CONFLICT, "upload-busy", message),
            E::Failed(_) => Self::new(StatusCode::CONFLICT, "upload-failed", message),
            E::OffsetMismatch { expected, .. } => Self::new(StatusCode::CONFLICT, "offset-mismatch", message)
                .with_header("Upload-Offset", expected.to_string()),
            E::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message),
            E::Truncated(_) => Self::bad_request("truncated-body", message),
            E::Source(_) => Self::new(StatusCode::BAD_GATEWAY, "fetch-failed", message),
            E::Empty => Self::bad_request("empty-body", message),
            E::NotAVideo(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "not-a-video", message),
            E::Repo(inner) => inner.into(),
            E::Io(_) | E::Internal(_) => {
                tracing::error!(error = %message, "upload failed inside the daemon");
                Self::internal("the upload could not be stored")
            }
        }
    }
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        use crate::ingest::IngestError as E;
        let message = e.to_string();
        match e {
            E::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden-address", message),
            E::Timeout => Self::new(StatusCode::GATEWAY_TIMEOUT, "fetch-timeout", message),
            E::Status(_) | E::Fetch(_) | E::TooManyRedirects => {
                Self::new(StatusCode::BAD_GATEWAY, "fetch-failed", message)
            }
            E::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message),
            E::Upload(inner) => inner.into(),
        }
    }
}
