//! `SpoolWriter`: the spool file of one upload plus the BLAKE3 of its bytes,
//! advanced as they are written, so that finalize knows the hash without
//! reading the file again. Blocking; lives on a blocking thread while it writes.
#![allow(clippy::disallowed_methods)] // a blocking module: used on blocking threads (clippy.toml)

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// Invariant: `hasher` has seen exactly the bytes `[0, written)` of `file`,
/// `at_sync` is the hasher as it was at `synced`, and between writes
/// (whenever the session holds the writer) `synced == written`: after a
/// failed write or sync, `undo_unsynced` brings it back there.
pub struct SpoolWriter {
    file: File,
    hasher: blake3::Hasher,
    at_sync: blake3::Hasher,
    written: u64,
    synced: u64,
    /// Bytes whose writeback has been started (see `append`).
    kicked: u64,
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file`
/// without waiting for them.
pub(super) fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `file`, which outlives the call;
    // sync_file_range only reads its arguments. It is advice: an error
    // changes nothing about correctness, so it is ignored.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// See `SpoolWriter::mark`.
pub struct Mark {
    hasher: blake3::Hasher,
    written: u64,
}

const REHASH_BLOCK: usize = 1 << 20;
/// Start writeback after this many new bytes. Small enough that a tus PATCH
/// or a chunk of a few MiB is mostly on its way to disk when its body ends.
pub(super) const WRITEBACK_EVERY: u64 = 1 << 20;

impl SpoolWriter {
    /// A fresh, empty spool.
    pub fn create(file: File) -> io::Result<Self> {
        file.set_len(0)?;
        Ok(Self {
            file,
            hasher: blake3::Hasher::new(),
            at_sync: blake3::Hasher::new(),
            written: 0,
            synced: 0,
            kicked: 0,
        })
    }

    /// Picks up a spool after a restart: cuts it back to the last durable
    /// checkpoint (bytes past it were never recorded, so no client was told
    /// they were safe) and re-hashes that prefix once. This is the only place
    /// vidcache reads a spool back, and it happens on revival, not at finalize.
    pub fn resume(mut file: File, durable: u64) -> io::Result<Self> {
        let on_disk = file.metadata()?.len();
        let keep = durable.min(on_disk);
        file.set_len(keep)?;
        let mut hasher = blake3::Hasher::new();
        file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; REHASH_BLOCK];
        let mut left = keep;
        while left > 0 {
            let want = left.min(REHASH_BLOCK as u64) as usize;
            file.read_exact(&mut buf[..want])?;
            hasher.update(&buf[..want]);
            left -= want as u64;
        }
        Ok(Self { file, at_sync: hasher.clone(), hasher, written: keep, synced: keep, kicked: keep })
    }

    /// Starts over from byte 0 (a client that re-sends a whole body).
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.hasher.reset();
        self.at_sync.reset();
        self.written = 0;
        self.synced = 0;
        self.kicked = 0;
        Ok(())
    }

    /// A point to come back to if what follows turns out to be bad (a tus
    /// body whose checksum does not match).
    pub fn mark(&self) -> Mark {
        Mark { hasher: self.hasher.clone(), written: self.written }
    }

    /// Forgets everything written after `mark`, on disk and in the hash.
    pub fn rollback(&mut self, mark: Mark) -> io::Result<()> {
        self.file.set_len(mark.written)?;
        self.file.sync_data()?;
        self.at_sync = mark.hasher.clone();
        self.hasher = mark.hasher;
        self.written = mark.written;
        self.synced = mark.written;
        self.kicked = mark.written;
        Ok(())
    }

    /// Forgets everything written since the last sync, on disk (the file is
    /// cut back, so a full disk gets its space back at once) and in the
    /// hash: after a failed write or sync, the writer's position, its hash
    /// and the durable offset every door reports agree again, and the next
    /// byte a client sends goes where it was told.
    pub fn undo_unsynced(&mut self) -> io::Result<()> {
        self.file.set_len(self.synced)?;
        self.hasher = self.at_sync.clone();
        self.written = self.synced;
        self.kicked = self.synced;
        Ok(())
    }

    /// Appends at the end of what is written and feeds the hasher. On an
    /// error, part of `bytes` may be in the file past `written`; the caller
    /// undoes it (`undo_unsynced`) before anything else is written.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.written)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if self.written - self.kicked >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(())
    }

    /// Asks the kernel to start writing what is written so far, without
    /// waiting. Dirty pages then never pile up, so the fdatasync at a
    /// checkpoint or after the last byte has little left to do: this is what
    /// keeps finalize latency independent of the upload's size.
    fn start_writeback(&mut self) {
        start_writeback(&self.file, self.kicked, self.written - self.kicked);
        self.kicked = self.written;
    }

    /// Makes everything written durable; returns the durable length.
    pub fn sync(&mut self) -> io::Result<u64> {
        if self.synced != self.written {
            self.file.sync_data()?;
            self.synced = self.written;
            self.at_sync = self.hasher.clone();
        }
        Ok(self.synced)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn unsynced(&self) -> u64 {
        self.written - self.synced
    }

    /// The hash of everything written so far. Cheap: no I/O.
    pub fn hash(&self) -> blake3::Hash {
        self.hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_hash_matches_a_one_shot_hash_and_survives_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let open =
            || std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();

        let mut w = SpoolWriter::create(open()).unwrap();
        w.append(&data[..1_000_000]).unwrap();
        assert_eq!(w.sync().unwrap(), 1_000_000);
        // Bytes written after the last checkpoint are not durable and are cut on resume.
        w.append(&data[1_000_000..1_500_000]).unwrap();
        drop(w);

        let mut w = SpoolWriter::resume(open(), 1_000_000).unwrap();
        assert_eq!(w.written(), 1_000_000);
        w.append(&data[1_000_000..]).unwrap();
        w.sync().unwrap();
        assert_eq!(w.hash(), blake3::hash(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn a_failed_write_is_undone_back_to_the_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 253) as u8).collect();
        let mut w = SpoolWriter::create(file).unwrap();
        w.append(&data[..700_000]).unwrap();
        w.sync().unwrap();
        // Written but not synced when the disk filled up.
        w.append(&data[700_000..1_200_000]).unwrap();
        w.undo_unsynced().unwrap();
        assert_eq!(w.written(), 700_000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 700_000, "the space is given back");
        // The client resumes from the durable offset: the spool is the file.
        w.append(&data[700_000..]).unwrap();
        w.sync().unwrap();
        assert_eq!(w.hash(), blake3::hash(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
