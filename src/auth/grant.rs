//! Signed upload URLs (section 8): a backend with an `upload` key asks
//! `POST /api/v1/uploads` for a token that lets a browser or a tus client
//! make exactly one upload, with no other credential.
//!
//! The token is stateless: `{claims}.{mac}`, the claims as base64url JSON
//! (the upload id chosen beforehand, expiry, project, limits, metadata) and
//! the first 128 bits of HMAC-SHA256(server secret, "upload", claims). It
//! is single-use because it names its upload id: creating that upload a
//! second time is refused. It must be used to create the upload before it
//! expires; after that it keeps working for that one upload only, so that a
//! long upload can be resumed until the session itself expires.

use super::{Auth, unix_now};
use crate::domain::UploadId;
use crate::error::ApiError;
use actix_web::http::StatusCode;
use base64::Engine;
use hmac::Mac;
use serde::{Deserialize, Serialize};

const TAG_BYTES: usize = 16;
/// Largest token accepted (claims with 1 KiB of metadata fit well).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What an upload token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadGrant {
    /// The upload it creates (and the only one it opens).
    #[serde(rename = "u")]
    pub upload_id: String,
    /// Unix seconds after which it no longer creates the upload.
    #[serde(rename = "e")]
    pub expires: u64,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Allowed content type (exact, or `video/*`).
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The only `Origin` that may use it, when set.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Client metadata recorded with the upload, over what the client sends.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
    /// The key that asked for it (for the audit log).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The upload's video's media is public (the backend's say).
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
}

impl UploadGrant {
    pub fn upload_id(&self) -> Result<UploadId, ApiError> {
        UploadId::parse(&self.upload_id).map_err(|_| refused("bad-upload-token", "the upload token is damaged"))
    }

    /// Whether it may still create its upload.
    pub fn creatable(&self) -> Result<(), ApiError> {
        if self.expires < unix_now() {
            return Err(refused("upload-url-expired", "the upload URL has expired: ask for a new one"));
        }
        Ok(())
    }

    /// Checks a declared size and content type against the grant's limits.
    pub fn allows(&self, size: Option<u64>, content_type: Option<&str>) -> Result<(), ApiError> {
        if let (Some(max), Some(size)) = (self.max_size, size)
            && size > max
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("this upload URL takes at most {max} bytes"),
            ));
        }
        if let Some(allowed) = &self.content_type {
            let given = content_type.unwrap_or("");
            let ok = match allowed.strip_suffix("/*") {
                Some(family) => given.split('/').next() == Some(family),
                None => given.eq_ignore_ascii_case(allowed),
            };
            if !ok {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    format!("this upload URL takes {allowed} only"),
                ));
            }
        }
        Ok(())
    }
}

fn refused(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message)
}

impl Auth {
    fn grant_tag(&self, claims: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(b"vidcache upload\0");
        mac.update(claims.as_bytes());
        mac.finalize().into_bytes()[..TAG_BYTES].to_vec()
    }

    /// The token for a grant.
    pub fn upload_token(&self, grant: &UploadGrant) -> String {
        let json = serde_json::to_vec(grant).expect("a grant serializes");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let tag = hex::encode(self.grant_tag(&claims));
        format!("{claims}.{tag}")
    }

    /// The grant a token carries, if the server made it (constant-time).
    pub fn check_upload_token(&self, token: &str) -> Result<UploadGrant, ApiError> {
        let bad = || refused("bad-upload-token", "the upload token is not valid");
        if token.len() > MAX_TOKEN_BYTES {
            return Err(bad());
        }
        let (claims, tag) = token.rsplit_once('.').ok_or_else(bad)?;
        let tag = hex::decode(tag).map_err(|_| bad())?;
        // A whole tag only, compared in constant time.
        if !super::constant_time_eq(&tag, &self.grant_tag(claims)) {
            return Err(bad());
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).map_err(|_| bad())?;
        serde_json::from_slice(&json).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> UploadGrant {
        UploadGrant {
            upload_id: UploadId::generate().to_string(),
            expires: unix_now() + 60,
            project: Some("p".into()),
            max_size: Some(1000),
            content_type: Some("video/*".into()),
            origin: None,
            meta: Some(serde_json::json!({"title": "x"})),
            key_id: Some("k".into()),
            public: None,
        }
    }

    #[test]
    fn a_token_carries_its_grant_and_cannot_be_altered() {
        let auth = Auth::for_tests(&[]);
        let grant = grant();
        let token = auth.upload_token(&grant);
        assert_eq!(auth.check_upload_token(&token).unwrap(), grant);
        let (claims, tag) = token.rsplit_once('.').unwrap();
        let mut bigger = grant.clone();
        bigger.max_size = Some(1 << 40);
        let forged = format!("{}.{tag}", auth.upload_token(&bigger).rsplit_once('.').unwrap().0);
        assert_eq!(auth.check_upload_token(&forged).unwrap_err().code, "bad-upload-token");
        assert!(auth.check_upload_token(&format!("{claims}.{}", &tag[..8])).is_err(), "a short tag");
        assert!(auth.check_upload_token("").is_err());
    }

    #[test]
    fn limits_are_kept() {
        let grant = grant();
        assert!(grant.allows(Some(1000), Some("video/mp4")).is_ok());
        assert_eq!(grant.allows(Some(1001), Some("video/mp4")).unwrap_err().code, "too-large");
        assert_eq!(grant.allows(Some(10), Some("image/png")).unwrap_err().code, "unsupported-media-type");
        let mut expired = grant.clone();
        expired.expires = unix_now() - 1;
        assert_eq!(expired.creatable().unwrap_err().code, "upload-url-expired");
    }
}
