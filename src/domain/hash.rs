//! `ContentHash`: the BLAKE3 of a video's original bytes, the key of the cache.

use super::ParseError;
use std::fmt;

/// 32 bytes of BLAKE3, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Accepts exactly 64 lowercase hex characters: the form the API hands out,
    /// so a client that echoes a hash back always matches.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() != 64 || !raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ParseError::new("hash", "expected 64 lowercase hex characters (BLAKE3)"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(raw, &mut out).map_err(|e| ParseError::new("hash", e.to_string()))?;
        Ok(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// As in every answer: 64 lowercase hex characters.
impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_lowercase_hex() {
        let hash = ContentHash::from(blake3::hash(b"abc"));
        assert_eq!(ContentHash::parse(&hash.to_hex()).unwrap(), hash);
    }

    #[test]
    fn refuses_uppercase_short_and_non_hex() {
        let hex = ContentHash::from(blake3::hash(b"abc")).to_hex();
        assert!(ContentHash::parse(&hex.to_uppercase()).is_err());
        assert!(ContentHash::parse(&hex[..63]).is_err());
        assert!(ContentHash::parse(&format!("{}g", &hex[..63])).is_err());
        assert!(ContentHash::parse("../../etc/passwd").is_err());
    }
}
