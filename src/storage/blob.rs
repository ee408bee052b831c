//! The blob store. Bytes land in a spool file under `{root}/.spool/` and
//! become an object by an atomic rename after an fsync, so a crash at any
//! moment leaves either no object or a whole one, never half of one.
//!
//! All methods block; callers run them on blocking threads.
#![allow(clippy::disallowed_methods)] // a blocking module (clippy.toml)

use crate::domain::{ContentHash, ObjectKey, UploadId};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// What the rest of vidcache needs of a place to keep bytes. Spools are
/// always local files (the upload engine writes at offsets and fsyncs them);
/// objects could live elsewhere later.
pub trait Store: Send + Sync + 'static {
    /// The spool file of an upload session.
    fn spool_path(&self, id: &UploadId) -> PathBuf;
    /// Opens (creating if needed) the spool file for writing at offsets.
    fn open_spool(&self, id: &UploadId) -> io::Result<File>;
    /// Makes the spool the object `key`: fsync, rename, fsync the directory.
    fn commit(&self, id: &UploadId, key: &ObjectKey) -> io::Result<()>;
    /// Commits an upload whose bytes are also `pieces` in the bucket (a
    /// shared upload, fetched into its spool): the object may be kept as
    /// those pieces where they are (a layout, `storage::s3`). Answers
    /// whether it was (`false`: made from the spool, as [`Store::commit`]).
    fn commit_pieces(&self, id: &UploadId, key: &ObjectKey, pieces: &[super::PieceAt]) -> io::Result<bool> {
        let _ = pieces;
        self.commit(id, key).map(|()| false)
    }
    /// Removes a spool file and any separate pieces; a missing one is not an error.
    fn discard_spool(&self, id: &UploadId) -> io::Result<()>;
    /// Where a piece kept in a file of its own (a multipart part) lives. The
    /// name carries the piece's hash, so a re-sent part never overwrites the
    /// file a recorded piece points at.
    fn piece_path(&self, id: &UploadId, number: u32, hash: &str) -> PathBuf;
    /// Removes every separate piece of an upload.
    fn discard_pieces(&self, id: &UploadId) -> io::Result<()>;
    /// Removes pieces that were still arriving (a crash cut them off).
    fn discard_incomplete_pieces(&self, id: &UploadId) -> io::Result<()>;
    /// Opens an object for reading and tells its length.
    fn open_object(&self, key: &ObjectKey) -> io::Result<(File, u64)>;
    /// Where an object is on the local disk (for the probe, which reads by path).
    fn object_path(&self, key: &ObjectKey) -> PathBuf;
    /// Removes an object; a missing one is not an error.
    fn delete_object(&self, key: &ObjectKey) -> io::Result<()>;
    /// Whether the store can be written to right now (for `/readyz`).
    fn check_writable(&self) -> io::Result<()>;
    /// Bytes an upload can still write (the filesystem's space available
    /// to this process).
    fn free_bytes(&self) -> io::Result<u64>;
    /// Where media derived from a video (thumbnail, later renditions) live.
    fn derived_dir(&self, hash: &ContentHash) -> PathBuf;
    /// Publishes a derived file by rename: readers see all of it or none.
    fn put_derived(&self, hash: &ContentHash, name: &str, bytes: &[u8]) -> io::Result<()> {
        let dir = self.derived_dir(hash);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{name}.{}.tmp", UploadId::generate()));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, dir.join(name))
    }
    /// Removes everything derived from a video; a missing one is not an error.
    fn delete_derived(&self, hash: &ContentHash) -> io::Result<()>;
    /// An object as a local file, for the readers that read by path (the
    /// prober, frame grabs, the transcoder): fetched first when the object
    /// lives elsewhere.
    fn fetch_object(&self, key: &ObjectKey) -> io::Result<PathBuf> {
        Ok(self.object_path(key))
    }
    /// One derived file's bytes (`thumbnail.jpg`), or `None` if there is none.
    fn read_derived(&self, hash: &ContentHash, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.derived_dir(hash).join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// The ladder version of a video's published renditions, if any.
    fn published_version(&self, hash: &ContentHash) -> Option<u32> {
        crate::transcode::published_version(&self.derived_dir(hash))
    }
    /// Whether renditions of the current ladder are published.
    fn is_published(&self, hash: &ContentHash) -> bool {
        self.published_version(hash) == Some(crate::transcode::LADDER_VERSION)
    }
    /// Publishes a ladder the transcoder built under [`Store::derived_dir`]
    /// where readers find it (on local disk it already is).
    fn publish_ladder(&self, _hash: &ContentHash) -> io::Result<()> {
        Ok(())
    }
    /// The bucket objects and media are read from, when they live in one.
    fn bucket(&self) -> Option<&super::Bucket> {
        None
    }
}

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    spool: PathBuf,
}

impl LocalStore {
    pub fn open(root: &Path) -> io::Result<Self> {
        let spool = root.join(".spool");
        fs::create_dir_all(&spool)?;
        Ok(Self { root: root.to_path_buf(), spool })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the spool the local copy of an object whose home is elsewhere
    /// (a bucket): renamed, not fsynced. The bytes are durable where they
    /// live; a crash that loses the rename leaves the spool, and the commit
    /// runs again.
    pub fn keep_copy(&self, id: &UploadId, key: &ObjectKey) -> io::Result<()> {
        let to = self.object_path(key);
        let dir = to.parent().expect("object keys always have a bucket directory");
        fs::create_dir_all(dir)?;
        fs::rename(self.spool_path(id), &to)
    }

    fn pieces_dir(&self, id: &UploadId) -> PathBuf {
        self.spool.join(format!("{id}.pieces"))
    }
}

impl Store for LocalStore {
    fn free_bytes(&self) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the storage root has a NUL byte"))?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a valid C string and `stat` is writable memory of
        // the right type, which statvfs fills on success.
        let stat = unsafe {
            if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            stat.assume_init()
        };
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn spool_path(&self, id: &UploadId) -> PathBuf {
        self.spool.join(format!("{id}.part"))
    }

    fn open_spool(&self, id: &UploadId) -> io::Result<File> {
        OpenOptions::new().create(true).truncate(false).read(true).write(true).open(self.spool_path(id))
    }

    fn commit(&self, id: &UploadId, key: &ObjectKey) -> io::Result<()> {
        let from = self.spool_path(id);
        File::open(&from)?.sync_all()?;
        let to = self.object_path(key);
        let dir = to.parent().expect("object keys always have a bucket directory");
        fs::create_dir_all(dir)?;
        fs::rename(&from, &to)?;
        // The rename is durable only once the directory entry is.
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn discard_spool(&self, id: &UploadId) -> io::Result<()> {
        self.discard_pieces(id)?;
        ignore_missing(fs::remove_file(self.spool_path(id)))
    }

    fn piece_path(&self, id: &UploadId, number: u32, hash: &str) -> PathBuf {
        self.pieces_dir(id).join(format!("{number:05}-{hash}"))
    }

    fn discard_pieces(&self, id: &UploadId) -> io::Result<()> {
        match fs::remove_dir_all(self.pieces_dir(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn discard_incomplete_pieces(&self, id: &UploadId) -> io::Result<()> {
        let entries = match fs::read_dir(self.pieces_dir(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        for entry in entries {
            let entry = entry?;
            // A piece is written under an `incoming-*` name and renamed to its hash once whole.
            if entry.file_name().to_string_lossy().contains("incoming-") {
                ignore_missing(fs::remove_file(entry.path()))?;
            }
        }
        Ok(())
    }

    fn open_object(&self, key: &ObjectKey) -> io::Result<(File, u64)> {
        let file = File::open(self.object_path(key))?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }

    fn object_path(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey is made only of validated segments, so this stays under root.
        self.root.join(key.as_str())
    }

    fn delete_object(&self, key: &ObjectKey) -> io::Result<()> {
        ignore_missing(fs::remove_file(self.object_path(key)))
    }

    fn derived_dir(&self, hash: &ContentHash) -> PathBuf {
        self.root.join(".media").join(hash.to_hex())
    }

    fn delete_derived(&self, hash: &ContentHash) -> io::Result<()> {
        match fs::remove_dir_all(self.derived_dir(hash)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        let probe = self.spool.join(".ready");
        fs::write(&probe, b"ok")?;
        fs::remove_file(probe)
    }
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes a file; a missing one is not an error worth reporting. Blocking.
pub fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Creates (truncating) a file a piece is received into, with its directory. Blocking.
pub fn create_piece_file(path: &Path) -> io::Result<File> {
    fs::create_dir_all(path.parent().ok_or_else(|| io::Error::other("a piece file needs a directory"))?)?;
    OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)
}

/// Renames a whole piece to the name it is recorded under, durably. Blocking.
pub fn keep_piece(incoming: &Path, target: &Path) -> io::Result<()> {
    fs::rename(incoming, target)?;
    File::open(target.parent().ok_or_else(|| io::Error::other("a piece file needs a directory"))?)?.sync_all()
}

/// Cuts a spool back to its last durable byte (a crash may have left more
/// written than recorded); answers its length after that, or `None` if the
/// spool is gone. Blocking.
pub fn cut_spool(path: &Path, durable: u64) -> io::Result<Option<u64>> {
    match OpenOptions::new().write(true).open(path) {
        Ok(file) => {
            let len = file.metadata()?.len();
            if len > durable {
                file.set_len(durable)?;
            }
            Ok(Some(len.min(durable)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in a directory that are valid UTF-8. Blocking.
pub fn file_names(dir: &Path) -> io::Result<Vec<String>> {
    Ok(fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Bucket, Prefix};
    use std::io::Write;

    #[test]
    fn commit_moves_the_spool_into_place_and_leaves_no_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let id = UploadId::generate();
        store.open_spool(&id).unwrap().write_all(b"bytes").unwrap();
        let key = ObjectKey::new(
            &Bucket::parse("b").unwrap(),
            &Prefix::parse("p").unwrap(),
            &ContentHash::from(blake3::hash(b"bytes")),
            "mp4",
        );
        store.commit(&id, &key).unwrap();
        assert!(!store.spool_path(&id).exists());
        let (_, len) = store.open_object(&key).unwrap();
        assert_eq!(len, 5);
        store.delete_object(&key).unwrap();
        store.delete_object(&key).unwrap();
        assert!(store.open_object(&key).is_err());
    }
}
