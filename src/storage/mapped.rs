//! Published media files kept memory-mapped between requests, so that a
//! segment asked for again costs a hash-map look-up: no thread hop, no
//! `open`, `fstat`, `mmap` or `munmap` (whose TLB shootdown stops every core
//! the process runs on). What a request for a segment costs is measured in
//! BENCHMARKS.md ("Media served at nginx's speed").
//!
//! A mapping is kept at most `ttl` (a second by default, the bound within
//! which another daemon's change of a video's holders is seen too) and the
//! mappings together hold at most `limit` bytes; the oldest go first. A
//! file replaced by a new transcode or removed with its video is therefore
//! served from its old mapping for at most `ttl`, and its disk space is
//! given back within twice that (`sweep` runs every `ttl`).
//!
//! Only files of at most [`WHOLE_MAP`] bytes are mapped; larger ones are
//! opened for each request and streamed.
#![allow(clippy::disallowed_methods)] // `map_blocking` runs on a blocking thread; the rest never touches the disk

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Files (and, in `routes::files`, ranges) up to this size are mapped
/// whole; larger ones stream (segments are 0.1-5 MB).
pub const WHOLE_MAP: u64 = 4 << 20;

/// A published file as a request finds it.
pub enum Published {
    /// Mapped whole: the page cache's pages are the reply's body.
    Mapped(MappedFile),
    /// Too large to map: opened, to be streamed.
    Large { file: std::fs::File, len: u64, modified: Option<SystemTime> },
    /// Not there (or not a file).
    Missing,
}

#[derive(Clone)]
pub struct MappedFile {
    pub bytes: Bytes,
    pub modified: Option<SystemTime>,
    mapped_at: Instant,
}

pub struct MappedFiles {
    limit: u64,
    ttl: Duration,
    inner: Mutex<Mappings>,
}

#[derive(Default)]
struct Mappings {
    files: HashMap<PathBuf, MappedFile>,
    /// Paths in the order they were mapped, with when: the front is the
    /// oldest. An entry whose file was mapped again since is skipped.
    order: VecDeque<(PathBuf, Instant)>,
    bytes: u64,
}

impl Mappings {
    /// Drops the front entry, if the map still holds that mapping.
    fn pop_oldest(&mut self) -> bool {
        let Some((path, at)) = self.order.pop_front() else { return false };
        if self.files.get(&path).is_some_and(|f| f.mapped_at == at) {
            let gone = self.files.remove(&path).map_or(0, |f| f.bytes.len() as u64);
            self.bytes -= gone;
        }
        true
    }
}

impl MappedFiles {
    /// `limit`: bytes mapped at most (0 maps nothing: every request opens
    /// and maps its file, and unmaps it when sent).
    pub fn new(limit: u64, ttl: Duration) -> Self {
        Self { limit, ttl, inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mappings> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file at `path`: from its kept mapping when it is fresh, else
    /// opened (and mapped, and kept) on a blocking thread.
    pub async fn open(&self, path: PathBuf) -> std::io::Result<Published> {
        if let Some(found) = self.lock().files.get(&path).filter(|f| f.mapped_at.elapsed() < self.ttl) {
            return Ok(Published::Mapped(found.clone()));
        }
        let keep = self.limit > 0;
        let (opened, path) = tokio::task::spawn_blocking(move || (map_blocking(&path), path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let opened = opened?;
        if let Published::Mapped(file) = &opened
            && keep
        {
            self.keep(path, file.clone());
        }
        Ok(opened)
    }

    fn keep(&self, path: PathBuf, file: MappedFile) {
        let len = file.bytes.len() as u64;
        if len > self.limit {
            return;
        }
        let mut maps = self.lock();
        if let Some(old) = maps.files.remove(&path) {
            maps.bytes -= old.bytes.len() as u64;
        }
        while maps.bytes + len > self.limit && maps.pop_oldest() {}
        maps.order.push_back((path.clone(), file.mapped_at));
        maps.bytes += len;
        maps.files.insert(path, file);
    }

    /// Unmaps what is older than `ttl`.
    pub fn sweep(&self) {
        let mut maps = self.lock();
        while maps.order.front().is_some_and(|(_, at)| at.elapsed() >= self.ttl) {
            maps.pop_oldest();
        }
    }

    /// Unmaps every file under `dir` at once (a video deleted through this
    /// daemon; a transcode published again is seen within `ttl`).
    pub fn forget_under(&self, dir: &Path) {
        let mut maps = self.lock();
        let gone: Vec<PathBuf> = maps.files.keys().filter(|p| p.starts_with(dir)).cloned().collect();
        for path in gone {
            let len = maps.files.remove(&path).map_or(0, |f| f.bytes.len() as u64);
            maps.bytes -= len;
        }
    }

    /// Bytes mapped now, and files.
    pub fn held(&self) -> (u64, usize) {
        let maps = self.lock();
        (maps.bytes, maps.files.len())
    }

    /// Runs `sweep` every `ttl` on the current event loop.
    pub fn start_sweep(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(this.ttl.max(Duration::from_millis(100)));
            loop {
                every.tick().await;
                this.sweep();
            }
        })
    }
}

/// Opens `path` and, when it is small enough, maps it whole. Blocks.
fn map_blocking(path: &Path) -> std::io::Result<Published> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(Published::Missing);
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Published::Missing);
    }
    let (len, modified) = (meta.len(), meta.modified().ok());
    if len > WHOLE_MAP {
        return Ok(Published::Large { file, len, modified });
    }
    let bytes = if len == 0 {
        Bytes::new()
    } else {
        // SAFETY: published media are never written in place (they are
        // replaced by rename and removed by unlink), so the mapping cannot
        // change or shrink under a reader.
        let map = unsafe { memmap2::MmapOptions::new().len(len as usize).populate().map(&file)? };
        Bytes::from_owner(map)
    };
    Ok(Published::Mapped(MappedFile { bytes, modified, mapped_at: Instant::now() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, len: usize, byte: u8) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![byte; len]).unwrap();
        path
    }

    fn bytes_of(found: Published) -> Bytes {
        match found {
            Published::Mapped(file) => file.bytes,
            _ => panic!("not mapped"),
        }
    }

    #[actix_web::test]
    async fn a_kept_mapping_is_served_until_it_is_old_then_the_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let files = MappedFiles::new(1 << 20, Duration::from_millis(200));
        let path = write(dir.path(), "a.m4s", 1000, 1);
        assert_eq!(bytes_of(files.open(path.clone()).await.unwrap()), vec![1u8; 1000]);
        // Replaced by rename, as a new transcode does: the kept mapping is
        // still the old file's, until it is older than the ttl.
        let next = write(dir.path(), "b.m4s", 500, 2);
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(bytes_of(files.open(path.clone()).await.unwrap()), vec![1u8; 1000]);
        assert_eq!(files.held(), (1000, 1));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(bytes_of(files.open(path.clone()).await.unwrap()), vec![2u8; 500]);
        assert_eq!(files.held(), (500, 1));
        // Swept when old; forgotten at once under a directory.
        std::thread::sleep(Duration::from_millis(250));
        files.sweep();
        assert_eq!(files.held(), (0, 0));
        files.open(path.clone()).await.unwrap();
        files.forget_under(dir.path());
        assert_eq!(files.held(), (0, 0));
    }

    #[actix_web::test]
    async fn the_mappings_never_hold_more_than_the_limit_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let files = MappedFiles::new(2500, Duration::from_secs(60));
        for (i, name) in ["1", "2", "3"].iter().enumerate() {
            files.open(write(dir.path(), name, 1000, i as u8)).await.unwrap();
        }
        assert_eq!(files.held(), (2000, 2));
        let kept: Vec<_> = files.lock().files.keys().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert!(!kept.contains(&"1".into()), "{kept:?}");
        // Larger than the limit: served, not kept.
        let big = write(dir.path(), "big", 3000, 9);
        assert_eq!(bytes_of(files.open(big).await.unwrap()).len(), 3000);
        assert_eq!(files.held(), (2000, 2));
    }

    #[actix_web::test]
    async fn missing_empty_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = MappedFiles::new(1 << 20, Duration::from_secs(60));
        assert!(matches!(files.open(dir.path().join("none")).await.unwrap(), Published::Missing));
        assert!(matches!(files.open(dir.path().join("none/deeper")).await.unwrap(), Published::Missing));
        assert!(matches!(files.open(dir.path().to_owned()).await.unwrap(), Published::Missing));
        assert!(bytes_of(files.open(write(dir.path(), "empty", 0, 0)).await.unwrap()).is_empty());
        let large = write(dir.path(), "large", WHOLE_MAP as usize + 1, 3);
        assert!(matches!(files.open(large).await.unwrap(), Published::Large { len, .. } if len == WHOLE_MAP + 1));
    }
}
