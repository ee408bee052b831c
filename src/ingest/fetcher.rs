//! The fetcher: a reqwest client whose resolver and redirect policy enforce
//! the `NetworkGuard`, with size and time limits, streaming the body into an
//! upload session (never holding it in memory).

use super::{IngestError, NetworkGuard};
use crate::domain::{Bucket, Prefix, SourceUrl};
use crate::storage::Repository;
use crate::upload::{IngestResult, IngestStatus, NewUpload, UploadError, Uploads};
use futures_util::TryStreamExt;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Carried through reqwest's error chain to say the guard refused an address.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "address refused: {}", self.0)
    }
}

impl StdError for Refused {}

struct GuardedResolver(Arc<NetworkGuard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // Keep only permitted addresses, so a name with one public and one
            // private answer can only ever be reached at the public one.
            let permitted: Vec<SocketAddr> = found.into_iter().filter(|a| guard.permits(a.ip())).collect();
            if permitted.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// One ingest request, already parsed.
pub struct IngestRequest {
    pub url: SourceUrl,
    pub bucket: Bucket,
    pub prefix: Prefix,
    pub meta: serde_json::Value,
    /// Who asks: a known URL is answered only if it may know it, and the
    /// video becomes its project's.
    pub tenant: crate::domain::Tenant,
    /// The video's media is to be public (section 8).
    pub public: bool,
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Arc<NetworkGuard>,
    uploads: Uploads,
    repo: Repository,
    max_bytes: u64,
}

impl Fetcher {
    pub fn new(
        guard: NetworkGuard,
        uploads: Uploads,
        repo: Repository,
        settings: &crate::config::IngestSettings,
    ) -> Result<Self, reqwest::Error> {
        let guard = Arc::new(guard);
        let redirect_guard = guard.clone();
        let max_redirects = settings.max_redirects;
        let client = reqwest::Client::builder()
            .no_proxy() // a proxy would resolve names itself, out of the guard's sight
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error("too many redirects");
                }
                match ip_literal(attempt.url()) {
                    Some(ip) if !redirect_guard.permits(ip) => {
                        let refused = Refused(ip.to_string());
                        attempt.error(refused)
                    }
                    _ if !matches!(attempt.url().scheme(), "http" | "https") => attempt.stop(),
                    _ => attempt.follow(),
                }
            }))
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .timeout(Duration::from_secs(settings.timeout_secs))
            .user_agent(concat!("vidcache/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, guard, uploads, repo, max_bytes: settings.max_bytes })
    }

    #[tracing::instrument(skip_all, fields(url = %request.url))]
    pub async fn ingest(&self, request: IngestRequest) -> Result<IngestResult, IngestError> {
        if let Some(hash) = self.repo.find_alias_as(&request.url, &request.tenant).await.map_err(UploadError::from)?
            && let Some(stored) = self.repo.find_video(&hash).await.map_err(UploadError::from)?
        {
            return Ok(IngestResult::of_stored(&stored, IngestStatus::UrlAlias));
        }
        if let Some(ip) = ip_literal(request.url.as_url())
            && !self.guard.permits(ip)
        {
            return Err(IngestError::Forbidden(ip.to_string()));
        }

        let response = self.client.get(request.url.as_url().clone()).send().await.map_err(classify)?;
        if !response.status().is_success() {
            return Err(IngestError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|len| len > self.max_bytes) {
            return Err(IngestError::TooLarge(self.max_bytes));
        }

        let id = self
            .uploads
            .create(NewUpload {
                public: request.public,
                ..NewUpload::stream(
                    Some(request.url),
                    request.bucket,
                    request.prefix,
                    request.meta,
                    request.tenant.project().to_owned(),
                )
            })
            .await?
            .id;
        let body = response.bytes_stream().map_err(|e| describe(&e));
        match self.uploads.write_body(&id, Some(0), body, self.max_bytes).await {
            Ok(result) => Ok(result),
            Err(UploadError::TooLarge { limit }) => Err(IngestError::TooLarge(limit)),
            Err(UploadError::Truncated(why)) => Err(IngestError::Fetch(why)),
            Err(other) => Err(other.into()),
        }
    }
}

fn ip_literal(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Maps a reqwest failure to what the client should hear, looking through
/// the error chain for the guard's refusal.
fn classify(e: reqwest::Error) -> IngestError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return IngestError::Forbidden(refused.0.clone());
        }
        source = err.source();
    }
    if e.is_timeout() {
        IngestError::Timeout
    } else if e.is_redirect() {
        IngestError::TooManyRedirects
    } else {
        IngestError::Fetch(describe(&e))
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}
