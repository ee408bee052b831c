//! Presigned part URLs of the multipart door: HMAC-SHA256 over method,
//! upload, part number and expiry, so a part needs no other credentials.

use super::{Auth, HmacSha256, unix_now};
use crate::error::ApiError;
use actix_web::http::StatusCode;
use hmac::Mac;

impl Auth {
    fn part_mac(&self, method: &str, upload_id: &str, part: u32, expires: u64) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(format!("{method}\n{upload_id}\n{part}\n{expires}").as_bytes());
        mac
    }

    /// The expiry (Unix seconds) and signature of a part URL.
    pub fn presign(&self, method: &str, upload_id: &str, part: u32) -> (u64, String) {
        let expires = unix_now() + self.presign_ttl.as_secs();
        (expires, hex::encode(self.part_mac(method, upload_id, part, expires).finalize().into_bytes()))
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
        self.part_mac(method, upload_id, part, expires)
            .verify_slice(&given)
            .map_err(|_| forbidden("the signature does not match this upload, part and expiry"))?;
        if expires < unix_now() {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "url-expired", "the presigned URL has expired"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_method_upload_and_part() {
        let auth = Auth::for_tests(&[]);
        let (expires, sig) = auth.presign("PUT", "abc", 3);
        assert!(auth.verify("PUT", "abc", 3, expires, &sig).is_ok());
        assert!(auth.verify("PUT", "abc", 4, expires, &sig).is_err());
        assert!(auth.verify("PUT", "abd", 3, expires, &sig).is_err());
        assert!(auth.verify("GET", "abc", 3, expires, &sig).is_err());
        assert!(auth.verify("PUT", "abc", 3, expires + 1, &sig).is_err());
    }

    #[test]
    fn an_expired_signature_is_refused() {
        let auth = Auth::for_tests(&[]);
        let expires = unix_now() - 1;
        let sig = hex::encode(auth.part_mac("PUT", "abc", 1, expires).finalize().into_bytes());
        assert_eq!(auth.verify("PUT", "abc", 1, expires, &sig).unwrap_err().code, "url-expired");
    }
}
