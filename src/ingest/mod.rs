//! `POST /ingest` and Kafka ingest requests: the daemon fetches a URL itself
//! and streams the body through the same upload engine as any client.

mod fetcher;
mod guard;
mod requests;

pub use fetcher::{Fetcher, IngestRequest};
pub use guard::NetworkGuard;
pub use requests::KafkaIngest;

use crate::upload::UploadError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("refusing to fetch from {0}: not a public address (see ingest.allow_private_networks)")]
    Forbidden(String),
    #[error("the fetch timed out")]
    Timeout,
    #[error("the source answered HTTP {0}")]
    Status(u16),
    #[error("the fetch failed: {0}")]
    Fetch(String),
    #[error("too many redirects")]
    TooManyRedirects,
    #[error("the source is larger than the ingest limit of {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Upload(#[from] UploadError),
}

impl IngestError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "forbidden-address",
            Self::Timeout => "fetch-timeout",
            Self::Status(_) | Self::Fetch(_) | Self::TooManyRedirects => "fetch-failed",
            Self::TooLarge(_) => "too-large",
            Self::Upload(e) => e.code(),
        }
    }
}
