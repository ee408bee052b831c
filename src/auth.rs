//! Who may use the multipart door: HTTP Basic API keys per project, and
//! presigned part URLs (HMAC-SHA256 over method, upload, part number and
//! expiry) that need no other credentials. Comparisons are constant-time.

use crate::config::{ApiKey, AuthSettings};
use crate::error::ApiError;
use actix_web::HttpRequest;
use actix_web::http::{StatusCode, header};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Auth {
    keys: Vec<ApiKey>,
    secret: Vec<u8>,
    pub presign_ttl: Duration,
}

impl Auth {
    /// Takes the configured secret, or the one kept under the storage root
    /// (made on first start), so presigned URLs survive a restart. Start-up
    /// only, before serving: it reads and writes a file.
    #[allow(clippy::disallowed_methods)]
    pub fn from_settings(settings: &AuthSettings, root: &Path) -> std::io::Result<Self> {
        let secret = if settings.presign_secret.is_empty() {
            let path = root.join(".presign-secret");
            match std::fs::read(&path) {
                Ok(secret) if secret.len() >= 32 => secret,
                _ => {
                    let secret: [u8; 32] = rand::random();
                    let encoded = hex::encode(secret).into_bytes();
                    std::fs::write(&path, &encoded)?;
                    encoded
                }
            }
        } else {
            settings.presign_secret.as_bytes().to_vec()
        };
        Ok(Self {
            keys: settings.api_keys.clone(),
            secret,
            presign_ttl: Duration::from_secs(settings.presign_ttl_secs),
        })
    }

    /// The API key of an HTTP Basic `Authorization` header, if it is one of
    /// `project_id`'s keys. Anything else answers 401.
    pub fn authenticate(&self, req: &HttpRequest, project_id: &str) -> Result<&ApiKey, ApiError> {
        let unauthorized = |why: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
                .with_header("WWW-Authenticate", "Basic realm=\"vidcache\"")
        };
        let raw = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("this API needs HTTP Basic auth with an API key (id:key)"))?;
        let encoded = raw.strip_prefix("Basic ").ok_or_else(|| unauthorized("only HTTP Basic auth is accepted"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| unauthorized("the Authorization header is not valid Basic credentials"))?;
        let (id, key) = decoded.split_once(':').ok_or_else(|| unauthorized("credentials must be id:key"))?;
        // Every configured key is compared, so timing does not tell which ids exist.
        let mut found = None;
        for candidate in &self.keys {
            let matches = constant_time_eq(candidate.id.as_bytes(), id.as_bytes())
                & constant_time_eq(candidate.key.as_bytes(), key.as_bytes());
            if matches {
                found = Some(candidate);
            }
        }
        match found {
            Some(key) if key.project_id == project_id => Ok(key),
            Some(_) => Err(unauthorized("this API key belongs to another project")),
            None => Err(unauthorized("unknown API key or wrong secret")),
        }
    }

    fn mac(&self, method: &str, upload_id: &str, part: u32, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(format!("{method}\n{upload_id}\n{part}\n{expires}").as_bytes());
        mac
    }

    /// The expiry (Unix seconds) and signature of a part URL.
    pub fn presign(&self, method: &str, upload_id: &str, part: u32) -> (u64, String) {
        let expires = unix_now() + self.presign_ttl.as_secs();
        (expires, hex::encode(self.mac(method, upload_id, part, expires).finalize().into_bytes()))
    }

    /// Checks a presigned URL's signature (constant-time) and expiry; 403 otherwise.
    pub fn verify(
        &self,
        method: &str,
        upload_id: &str,
        part: u32,
        expires: u64,
        signature: &str,
    ) -> Result<(), ApiError> {
        let forbidden = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "bad-signature", why);
        let given = hex::decode(signature).map_err(|_| forbidden("the signature is not hex"))?;
        self.mac(method, upload_id, part, expires)
            .verify_slice(&given)
            .map_err(|_| forbidden("the signature does not match this upload, part and expiry"))?;
        if expires < unix_now() {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "url-expired", "the presigned URL has expired"));
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Equal without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth { keys: Vec::new(), secret: b"secret".to_vec(), presign_ttl: Duration::from_secs(60) }
    }

    #[test]
    fn a_signature_binds_method_upload_and_part() {
        let auth = auth();
        let (expires, sig) = auth.presign("PUT", "abc", 3);
        assert!(auth.verify("PUT", "abc", 3, expires, &sig).is_ok());
        assert!(auth.verify("PUT", "abc", 4, expires, &sig).is_err());
        assert!(auth.verify("PUT", "abd", 3, expires, &sig).is_err());
        assert!(auth.verify("GET", "abc", 3, expires, &sig).is_err());
        assert!(auth.verify("PUT", "abc", 3, expires + 1, &sig).is_err());
    }

    #[test]
    fn an_expired_signature_is_refused() {
        let auth = auth();
        let expires = unix_now() - 1;
        let sig = hex::encode(auth.mac("PUT", "abc", 1, expires).finalize().into_bytes());
        assert_eq!(auth.verify("PUT", "abc", 1, expires, &sig).unwrap_err().code, "url-expired");
    }
}
