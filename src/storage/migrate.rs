//! `vidcache migrate-store --to s3`: copies a local installation's objects
//! and derived media to the bucket of `storage.s3.*`.
//!
//! Resumable and verified: each object goes to its own key (the key names
//! its content), is read back from the bucket and hashed with BLAKE3, and
//! counts as copied only if that hash is the video's. A run cut off at any
//! moment leaves whole objects in the bucket or none (a PUT and a completed
//! multipart upload are atomic in S3); the next run skips every key that is
//! there with the right length and a BLAKE3 that matches, and copies the
//! rest. A ladder's `abr/.published` marker is written after its files, as
//! the daemon writes it, so a half-copied ladder is never taken as published.
//! The daemon may keep running on the local backend meanwhile: an upload
//! that lands after the run is copied by the next one.
#![allow(clippy::disallowed_methods)] // a one-shot command on blocking threads

use super::s3::Bucket;
use super::{LocalStore, Repository, Store};
use crate::config::Settings;
use crate::domain::{ContentHash, ObjectKey};
use std::io;
use std::path::Path;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Objects copied and verified by this run.
    pub copied: usize,
    /// Objects already in the bucket, verified.
    pub present: usize,
    /// Derived media files copied (thumbnails, ladders).
    pub media_copied: usize,
    /// Derived media files already there.
    pub media_present: usize,
    /// Objects recorded in the database with no file to copy.
    pub missing: usize,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "objects: {} copied, {} already there, {} missing locally; media files: {} copied, {} already there",
            self.copied, self.present, self.missing, self.media_copied, self.media_present
        )
    }
}

/// Copies every object and media file under `storage.root` to the bucket;
/// `progress` gets a line per file.
pub async fn migrate_to_s3(settings: &Settings, progress: &mut dyn FnMut(String)) -> anyhow::Result<MigrateReport> {
    let repo = Repository::connect(&settings.database.url, 1).await?;
    let local = LocalStore::open(&settings.storage.root)?;
    let bucket = Bucket::connect(&settings.storage.s3).await?;
    let mut report = MigrateReport::default();
    let mut hashes = Vec::new();
    for (hash, key) in repo.object_keys().await? {
        let key = ObjectKey::from_stored(&key)?;
        let (local, bucket, of) = (local.clone(), bucket.clone(), hash);
        let outcome = tokio::task::spawn_blocking(move || copy_object(&local, &bucket, &of, &key)).await??;
        match outcome {
            Copy::Copied => report.copied += 1,
            Copy::Present => report.present += 1,
            Copy::Missing => report.missing += 1,
        }
        progress(format!("object {hash} {}", outcome.word()));
        hashes.push(hash);
    }
    for hash in hashes {
        let (local, bucket, of) = (local.clone(), bucket.clone(), hash);
        let (copied, present) = tokio::task::spawn_blocking(move || copy_media(&local, &bucket, &of)).await??;
        report.media_copied += copied;
        report.media_present += present;
        if copied + present > 0 {
            progress(format!("media {hash} {copied} copied {present} present"));
        }
    }
    Ok(report)
}

#[derive(Debug, Clone, Copy)]
enum Copy {
    Copied,
    Present,
    Missing,
}

impl Copy {
    fn word(self) -> &'static str {
        match self {
            Self::Copied => "copied",
            Self::Present => "present",
            Self::Missing => "missing",
        }
    }
}

/// One object: skipped if the bucket has it whole (BLAKE3 of the bucket's
/// bytes is the video's hash), else copied and then checked so. Blocks.
fn copy_object(local: &LocalStore, bucket: &Bucket, hash: &ContentHash, key: &ObjectKey) -> io::Result<Copy> {
    let remote = format!("objects/{}", key.as_str());
    let path = local.object_path(key);
    if bucket.exists_blocking(&remote)? && ContentHash::from(bucket.blake3_blocking(&remote)?) == *hash {
        return Ok(Copy::Present);
    }
    if !path.is_file() {
        return Ok(Copy::Missing);
    }
    bucket.put_file_blocking(&path, &remote)?;
    let copied = ContentHash::from(bucket.blake3_blocking(&remote)?);
    if copied != *hash {
        return Err(io::Error::other(format!("{remote}: the bucket's copy hashes to {copied}, not {hash}")));
    }
    Ok(Copy::Copied)
}

/// The derived files of one video, the ladder's marker last. Blocks.
fn copy_media(local: &LocalStore, bucket: &Bucket, hash: &ContentHash) -> io::Result<(usize, usize)> {
    let dir = local.derived_dir(hash);
    if !dir.is_dir() {
        return Ok((0, 0));
    }
    let mut files = Vec::new();
    walk_published(&dir, &dir, &mut files)?;
    let prefix = format!("media/{}/", hash.to_hex());
    let there: std::collections::HashMap<String, u64> = bucket.list_blocking(&prefix)?.into_iter().collect();
    let (mut copied, mut present) = (0, 0);
    for rel in &files {
        let file = dir.join(rel);
        let remote = format!("{prefix}{rel}");
        let len = std::fs::metadata(&file)?.len();
        if there.get(&remote) == Some(&len) && bucket.blake3_blocking(&remote)? == hash_file(&file)? {
            present += 1;
            continue;
        }
        bucket.put_file_blocking(&file, &remote)?;
        if bucket.blake3_blocking(&remote)? != hash_file(&file)? {
            return Err(io::Error::other(format!("{remote}: the bucket's copy differs from {}", file.display())));
        }
        copied += 1;
    }
    if let Some(version) = crate::transcode::published_version(&dir) {
        let marker = format!("{prefix}abr/.published");
        let tmp = dir.join(format!(".published.{}.tmp", crate::domain::UploadId::generate()));
        std::fs::write(&tmp, version.to_string())?;
        let put = bucket.put_file_blocking(&tmp, &marker);
        let _ = std::fs::remove_file(&tmp);
        put?;
    }
    Ok((copied, present))
}

/// Files under `dir` relative to `base`, leaving out work in progress
/// (dot-names: `.abr.tmp`, `.abr.old`, temporary files).
fn walk_published(base: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk_published(base, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize())
}
