//! Parse-don't-validate newtypes for everything that crosses the HTTP
//! boundary. Nothing here knows about actix, sea-orm or rdkafka: a value of one
//! of these types is valid by construction, so the rest of the code never
//! re-checks it.

mod hash;
mod location;
mod source_url;
mod tenant;
mod upload_id;

pub use hash::ContentHash;
pub use location::{Bucket, ObjectKey, Prefix};
pub use source_url::SourceUrl;
pub use tenant::{DEFAULT_PROJECT, Tenant};
pub use upload_id::UploadId;

/// Why a raw value was refused. The message is written for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}
