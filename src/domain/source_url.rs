//! `SourceUrl`: the URL a video was ingested from, the cache's alias key.

use super::ParseError;
use std::fmt;

const MAX_URL_LEN: usize = 2048;

/// An absolute `http` or `https` URL with a host, at most 2048 characters.
/// Kept in its normalised (parsed and re-serialised) form so that aliases
/// compare equal however the client spelled them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceUrl(url::Url);

impl SourceUrl {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() > MAX_URL_LEN {
            return Err(ParseError::new("url", format!("longer than {MAX_URL_LEN} characters")));
        }
        let parsed = url::Url::parse(raw).map_err(|e| ParseError::new("url", e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ParseError::new("url", "only http and https URLs are accepted"));
        }
        if parsed.host().is_none() {
            return Err(ParseError::new("url", "has no host"));
        }
        Ok(Self(parsed))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_url(&self) -> &url::Url {
        &self.0
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_restricts_schemes() {
        assert_eq!(SourceUrl::parse("HTTP://Example.com").unwrap().as_str(), "http://example.com/");
        for bad in ["file:///etc/passwd", "ftp://x/y", "not a url", "http://", "javascript:alert(1)"] {
            assert!(SourceUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
