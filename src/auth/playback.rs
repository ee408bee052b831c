//! Signed playback: an expiring token bound to one video, carried in the
//! media path (`/media/t/{token}/{hash}/...`) so that the relative segment
//! URLs of HLS and DASH manifests keep it without any rewriting.
//!
//! A token is `{expires}-{mac}`: the Unix expiry and the first 128 bits of
//! HMAC-SHA256(server secret, "playback", hash, expires, project), in hex.
//! It is bound to the project it was made for, and good while that project
//! holds the video: checking one reads the video's holders (the one indexed
//! query a public video's media needs too) and compares a MAC per holder in
//! constant time.

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

/// A token that checked out: when it expires, and whether its project's
/// own transcode of the video is still pending (its transcoded media are
/// not there for it yet, as a new video's are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackGrant {
    pub expires: u64,
    pub pending: bool,
}

/// The project an operator's token (an open daemon) is made for: any
/// project name is non-empty.
const OPERATOR: &str = "";

impl Auth {
    fn playback_mac(&self, hash: &str, expires: u64, project: &str) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = self.mac();
        mac.update(b"vidcache playback\0");
        mac.update(hash.as_bytes());
        mac.update(b"\0");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(project.as_bytes());
        mac
    }

    /// A token for `hash`, as `project` holds it (`None`: the operator),
    /// that expires `ttl_secs` from now: (token, expiry).
    pub fn playback_token(&self, hash: &ContentHash, project: Option<&str>, ttl_secs: u64) -> (String, u64) {
        let expires = unix_now() + ttl_secs;
        let tag = self.playback_mac(&hash.to_hex(), expires, project.unwrap_or(OPERATOR)).finalize().into_bytes();
        (format!("{expires}-{}", hex::encode(&tag[..TAG_BYTES])), expires)
    }

    /// Checks a token against the video it is used for, and the projects
    /// that hold it now (each with whether its own transcode is pending):
    /// a token is good while the project it was made for holds the video.
    /// `hash` is the path's, as written (a token is only ever valid for
    /// the lowercase hex the daemon itself wrote).
    pub fn check_playback(
        &self,
        token: &str,
        hash: &str,
        holders: &[(String, bool)],
    ) -> Result<PlaybackGrant, TokenError> {
        let (expires, tag) = token.split_once('-').ok_or(TokenError::Malformed)?;
        if expires.is_empty() || expires.len() > 20 || tag.len() != TAG_BYTES * 2 {
            return Err(TokenError::Malformed);
        }
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = hex::decode(tag).map_err(|_| TokenError::Malformed)?;
        let operator = std::iter::once((OPERATOR, false));
        let pending = operator
            .chain(holders.iter().map(|(project, pending)| (project.as_str(), *pending)))
            .find(|(project, _)| self.playback_mac(hash, expires, project).verify_truncated_left(&tag).is_ok())
            .map(|(_, pending)| pending)
            .ok_or(TokenError::Forged)?;
        if expires < unix_now() {
            return Err(TokenError::Expired);
        }
        Ok(PlaybackGrant { expires, pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> ContentHash {
        ContentHash::parse(&hex::encode([byte; 32])).unwrap()
    }

    #[test]
    fn a_token_opens_its_own_video_only_while_its_project_holds_it_and_until_it_expires() {
        let auth = Auth::for_tests(&[]);
        let holders = |list: &[(&str, bool)]| list.iter().map(|(p, x)| (p.to_string(), *x)).collect::<Vec<_>>();
        let a = holders(&[("a", false)]);
        let (token, expires) = auth.playback_token(&hash(1), Some("a"), 60);
        let good = Ok(PlaybackGrant { expires, pending: false });
        assert_eq!(auth.check_playback(&token, &hash(1).to_hex(), &a), good);
        assert_eq!(auth.check_playback(&token, &hash(1).to_hex(), &holders(&[("b", false), ("a", false)])), good);
        // Another video; the project let go of it; another project's token.
        assert_eq!(auth.check_playback(&token, &hash(2).to_hex(), &a), Err(TokenError::Forged));
        assert_eq!(auth.check_playback(&token, &hash(1).to_hex(), &[]), Err(TokenError::Forged));
        let (theirs, _) = auth.playback_token(&hash(1), Some("b"), 60);
        assert_eq!(auth.check_playback(&theirs, &hash(1).to_hex(), &a), Err(TokenError::Forged));
        // While the project's own transcode is pending, the grant says so.
        let pending = auth.check_playback(&theirs, &hash(1).to_hex(), &holders(&[("a", false), ("b", true)]));
        assert_eq!(pending.map(|g| g.pending), Ok(true));
        // The operator's token (an open daemon) needs no holder.
        let (operator, _) = auth.playback_token(&hash(1), None, 60);
        assert!(auth.check_playback(&operator, &hash(1).to_hex(), &[]).is_ok());
        let later = token.replacen(&expires.to_string(), &(expires + 3600).to_string(), 1);
        assert_eq!(auth.check_playback(&later, &hash(1).to_hex(), &a), Err(TokenError::Forged));
        let (old, _) = {
            let expires = unix_now() - 1;
            let tag = auth.playback_mac(&hash(1).to_hex(), expires, "a").finalize().into_bytes();
            (format!("{expires}-{}", hex::encode(&tag[..TAG_BYTES])), expires)
        };
        assert_eq!(auth.check_playback(&old, &hash(1).to_hex(), &a), Err(TokenError::Expired));
        for bad in ["", "-", "12", "x-00", "99999999999999999999999-00112233445566778899aabbccddeeff"] {
            assert_eq!(auth.check_playback(bad, &hash(1).to_hex(), &a), Err(TokenError::Malformed), "{bad}");
        }
    }
}
