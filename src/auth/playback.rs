//! Signed playback: an expiring token bound to one video, carried in the
//! media path (`/media/t/{token}/{hash}/...`) so that the relative segment
//! URLs of HLS and DASH manifests keep it without any rewriting.
//!
//! A token is `{expires}-{mac}`: the Unix expiry and the first 128 bits of
//! HMAC-SHA256(server secret, "playback", hash, expires), in hex. It needs
//! no database: checking one is a MAC and a comparison in constant time.

use super::{Auth, unix_now};
use crate::domain::ContentHash;
use crate::error::ApiError;
use actix_web::http::StatusCode;
use hmac::Mac;

/// Bytes of the MAC a token carries (128 bits).
const TAG_BYTES: usize = 16;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    /// The MAC does not match this video and expiry.
    Forged,
    Expired,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Malformed | TokenError::Forged => ApiError::new(
                StatusCode::FORBIDDEN,
                "bad-token",
                "the playback token is not valid for this video (ask /api/v1/videos/{id}/playback for one)",
            ),
            TokenError::Expired => ApiError::new(
                StatusCode::FORBIDDEN,
                "token-expired",
                "the playback token has expired: ask /api/v1/videos/{id}/playback for a new one",
            ),
        }
    }
}

impl Auth {
    fn playback_mac(&self, hash: &str, expires: u64) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = self.mac();
        mac.update(b"vidcache playback\0");
        mac.update(hash.as_bytes());
        mac.update(b"\0");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// A token for `hash` that expires `ttl_secs` from now: (token, expiry).
    pub fn playback_token(&self, hash: &ContentHash, ttl_secs: u64) -> (String, u64) {
        let expires = unix_now() + ttl_secs;
        let tag = self.playback_mac(&hash.to_hex(), expires).finalize().into_bytes();
        (format!("{expires}-{}", hex::encode(&tag[..TAG_BYTES])), expires)
    }

    /// Checks a token against the video it is used for; answers its expiry.
    /// `hash` is the path's, as written (a token is only ever valid for the
    /// lowercase hex the daemon itself wrote).
    pub fn check_playback(&self, token: &str, hash: &str) -> Result<u64, TokenError> {
        let (expires, tag) = token.split_once('-').ok_or(TokenError::Malformed)?;
        if expires.is_empty() || expires.len() > 20 || tag.len() != TAG_BYTES * 2 {
            return Err(TokenError::Malformed);
        }
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = hex::decode(tag).map_err(|_| TokenError::Malformed)?;
        self.playback_mac(hash, expires).verify_truncated_left(&tag).map_err(|_| TokenError::Forged)?;
        if expires < unix_now() {
            return Err(TokenError::Expired);
        }
        Ok(expires)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> ContentHash {
        ContentHash::parse(&hex::encode([byte; 32])).unwrap()
    }

    #[test]
    fn a_token_opens_its_own_video_only_until_it_expires() {
        let auth = Auth::for_tests(&[]);
        let (token, expires) = auth.playback_token(&hash(1), 60);
        assert_eq!(auth.check_playback(&token, &hash(1).to_hex()), Ok(expires));
        assert_eq!(auth.check_playback(&token, &hash(2).to_hex()), Err(TokenError::Forged));
        let later = token.replacen(&expires.to_string(), &(expires + 3600).to_string(), 1);
        assert_eq!(auth.check_playback(&later, &hash(1).to_hex()), Err(TokenError::Forged));
        let (old, _) = {
            let expires = unix_now() - 1;
            let tag = auth.playback_mac(&hash(1).to_hex(), expires).finalize().into_bytes();
            (format!("{expires}-{}", hex::encode(&tag[..TAG_BYTES])), expires)
        };
        assert_eq!(auth.check_playback(&old, &hash(1).to_hex()), Err(TokenError::Expired));
        for bad in ["", "-", "12", "x-00", "99999999999999999999999-00112233445566778899aabbccddeeff"] {
            assert_eq!(auth.check_playback(bad, &hash(1).to_hex()), Err(TokenError::Malformed), "{bad}");
        }
    }
}
