//! `UploadId`: the name of one upload session, random and unguessable.

use super::ParseError;
use std::fmt;

/// 32 lowercase hex characters (128 random bits). Used in URLs and as the
/// spool file's name, so the format is strict.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(hex::encode(bytes))
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() != 32 || !raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ParseError::new("upload_id", "expected 32 lowercase hex characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = UploadId::generate();
        assert_eq!(UploadId::parse(a.as_str()).unwrap(), a);
        assert_ne!(a, UploadId::generate());
    }

    #[test]
    fn refuses_traversal_and_wrong_length() {
        assert!(UploadId::parse("../../../../etc/passwd").is_err());
        assert!(UploadId::parse("abc").is_err());
        assert!(UploadId::parse(&"A".repeat(32)).is_err());
    }
}
