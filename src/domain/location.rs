//! Where an object lives: `Bucket`, `Prefix`, and the `ObjectKey` built from
//! them. Both come from clients and become path components under the storage
//! root, so they are the first line of defence against path traversal.

use super::{ContentHash, ParseError};
use std::fmt;

const MAX_BUCKET_LEN: usize = 63;
const MAX_PREFIX_LEN: usize = 512;
const MAX_SEGMENT_LEN: usize = 128;

/// One path segment: letters, digits, `-`, `_` and `.`, not starting with a
/// dot (names starting with `.` are reserved for vidcache's own files, such
/// as the spool and the lock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket(String);

impl Bucket {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.len() > MAX_BUCKET_LEN {
            return Err(ParseError::new("bucket", format!("must be 1 to {MAX_BUCKET_LEN} characters")));
        }
        check_segment("bucket", raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Zero or more segments joined by `/`, each a valid bucket-like segment: no
/// `..`, no absolute paths, no empty segments, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.len() > MAX_PREFIX_LEN {
            return Err(ParseError::new("prefix", format!("must be at most {MAX_PREFIX_LEN} characters")));
        }
        if raw.is_empty() {
            return Ok(Self::default());
        }
        if raw.starts_with('/') {
            return Err(ParseError::new("prefix", "must be relative, not start with '/'"));
        }
        for segment in raw.split('/') {
            check_segment("prefix", segment)?;
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_segment(field: &'static str, segment: &str) -> Result<(), ParseError> {
    if segment.is_empty() {
        return Err(ParseError::new(field, "empty path segment"));
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(ParseError::new(field, format!("path segment longer than {MAX_SEGMENT_LEN}")));
    }
    if segment.starts_with('.') {
        return Err(ParseError::new(field, "path segments may not start with '.' (no '..' or hidden names)"));
    }
    if let Some(bad) = segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(ParseError::new(field, format!("character {bad:?} is not allowed (use A-Z a-z 0-9 - _ .)")));
    }
    Ok(())
}

/// The object's path relative to the storage root:
/// `{bucket}/{prefix}/{hash}.{ext}`, or `{bucket}/{hash}.{ext}` with no prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn new(bucket: &Bucket, prefix: &Prefix, hash: &ContentHash, ext: &str) -> Self {
        debug_assert!(ext.bytes().all(|b| b.is_ascii_alphanumeric()));
        if prefix.as_str().is_empty() {
            Self(format!("{}/{}.{}", bucket.as_str(), hash, ext))
        } else {
            Self(format!("{}/{}/{}.{}", bucket.as_str(), prefix.as_str(), hash, ext))
        }
    }

    /// Rebuilds a key read back from the database, re-checking every segment
    /// so that a tampered row can never point outside the storage root.
    pub fn from_stored(raw: &str) -> Result<Self, ParseError> {
        let (dir, file) = raw.rsplit_once('/').ok_or_else(|| ParseError::new("file_path", "no bucket"))?;
        let (bucket, prefix) = dir.split_once('/').unwrap_or((dir, ""));
        Bucket::parse(bucket)?;
        Prefix::parse(prefix)?;
        check_segment("file_path", file)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        assert!(Bucket::parse("videos").is_ok());
        assert!(Bucket::parse("my-bucket_2.0").is_ok());
        assert_eq!(Prefix::parse("").unwrap().as_str(), "");
        assert!(Prefix::parse("2026/11/cats").is_ok());
    }

    #[test]
    fn refuses_traversal_absolute_and_control_characters() {
        for bad in ["..", ".", "../x", "a/b", "/etc", "a\0b", "a\nb", "a\\b", ".spool", ""] {
            assert!(Bucket::parse(bad).is_err(), "bucket {bad:?} accepted");
        }
        for bad in ["..", "a/../b", "/abs", "a//b", "a/", "x\u{7}", "a\\..\\b", "ü"] {
            assert!(Prefix::parse(bad).is_err(), "prefix {bad:?} accepted");
        }
        assert!(Bucket::parse(&"a".repeat(64)).is_err());
        assert!(Prefix::parse(&"a/".repeat(300)).is_err());
    }

    #[test]
    fn object_key_layout_matches_the_contract() {
        let hash = ContentHash::from(blake3::hash(b"x"));
        let b = Bucket::parse("b").unwrap();
        assert_eq!(ObjectKey::new(&b, &Prefix::default(), &hash, "mp4").as_str(), format!("b/{hash}.mp4"));
        let key = ObjectKey::new(&b, &Prefix::parse("p/q").unwrap(), &hash, "mp4");
        assert_eq!(key.as_str(), format!("b/p/q/{hash}.mp4"));
        assert_eq!(ObjectKey::from_stored(key.as_str()).unwrap(), key);
        assert!(ObjectKey::from_stored("../x/y.mp4").is_err());
    }
}
