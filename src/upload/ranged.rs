//! `RangedSpool`: the spool of a chunked upload, written at any offset by
//! many requests at once, with a BLAKE3 that advances over the contiguous
//! prefix of received bytes as gaps fill. When the last gap fills the hash is
//! (nearly) done, so finalize still never reads the whole file back.
//!
//! Which byte ranges are received is the session actor's business (it records
//! them); this type only writes, syncs and hashes. Blocking; used on blocking threads.
#![allow(clippy::disallowed_methods)] // a blocking module: used on blocking threads (clippy.toml)

use super::pump::BlockSink;
use crate::media::streaming::BufferWriter;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

pub struct RangedSpool {
    file: File,
    size: u64,
    prefix: Mutex<Prefix>,
    /// The early probe reads the contiguous prefix as the hash covers it.
    feed: Mutex<Option<Arc<BufferWriter>>>,
}

/// Invariant: `hasher` has seen exactly the bytes `[0, hashed)` of the file,
/// and every one of them belongs to a recorded piece.
struct Prefix {
    hasher: blake3::Hasher,
    hashed: u64,
}

const READ_BLOCK: usize = 1 << 20;

impl RangedSpool {
    /// Opens a spool of `size` bytes. The file gets its final length at once
    /// (sparse where nothing is written yet); what it already holds is kept,
    /// for a session revived after a restart. The hash starts from zero and
    /// catches up with the received prefix at the first `advance_to`.
    pub fn open(file: File, size: u64) -> io::Result<Self> {
        if file.metadata()?.len() != size {
            file.set_len(size)?;
        }
        Ok(Self {
            file,
            size,
            prefix: Mutex::new(Prefix { hasher: blake3::Hasher::new(), hashed: 0 }),
            feed: Mutex::new(None),
        })
    }

    /// Lets the early probe read each byte once the hash has covered it.
    pub fn feed_probe(&self, feed: Arc<BufferWriter>) {
        *self.feed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(feed);
    }

    pub fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// Starts writeback of a range just written (see `SpoolWriter::append`).
    pub fn start_writeback(&self, offset: u64, len: u64) {
        super::writer::start_writeback(&self.file, offset, len);
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Feeds the hasher up to `end`, which must be the end of the contiguous
    /// prefix of recorded pieces. Concurrent callers queue on the lock; the
    /// later ones find the work done. Returns how far the hash has got.
    pub fn advance_to(&self, end: u64) -> io::Result<u64> {
        let mut prefix = self.prefix.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let end = end.min(self.size);
        let mut buf = vec![0u8; READ_BLOCK.min((end.saturating_sub(prefix.hashed)) as usize)];
        while prefix.hashed < end {
            let want = (end - prefix.hashed).min(READ_BLOCK as u64) as usize;
            self.file.read_exact_at(&mut buf[..want], prefix.hashed)?;
            prefix.hasher.update(&buf[..want]);
            prefix.hashed += want as u64;
        }
        if let Some(feed) = &*self.feed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            feed.advance(prefix.hashed);
        }
        Ok(prefix.hashed)
    }

    /// The hash of the whole file, once `advance_to(size)` has got there.
    pub fn hash(&self) -> Option<blake3::Hash> {
        let prefix = self.prefix.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (prefix.hashed == self.size).then(|| prefix.hasher.finalize())
    }
}

/// One chunk on its way into a `RangedSpool`. It hashes the chunk on its own
/// (for `X-Chunk-Checksum` and to tell an identical re-send from a conflicting
/// one); with `write: false` it only hashes, for a chunk already stored.
pub struct ChunkSink {
    pub spool: Arc<RangedSpool>,
    pub offset: u64,
    pub write: bool,
    pub received: u64,
    pub hasher: blake3::Hasher,
    kicked: u64,
}

impl ChunkSink {
    pub fn new(spool: Arc<RangedSpool>, offset: u64, write: bool) -> Self {
        Self { spool, offset, write, received: 0, hasher: blake3::Hasher::new(), kicked: 0 }
    }
}

impl BlockSink for ChunkSink {
    fn put(&mut self, block: &[u8]) -> io::Result<()> {
        if self.write {
            self.spool.write_at(block, self.offset + self.received)?;
        }
        self.hasher.update(block);
        self.received += block.len() as u64;
        if self.write && self.received - self.kicked >= super::writer::WRITEBACK_EVERY {
            self.spool.start_writeback(self.offset + self.kicked, self.received - self.kicked);
            self.kicked = self.received;
        }
        Ok(())
    }
    fn position(&self) -> u64 {
        self.received
    }
    fn unsynced(&self) -> u64 {
        0
    }
    fn sync(&mut self) -> io::Result<u64> {
        if self.write {
            self.spool.sync()?;
        }
        Ok(self.received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_hash_of_out_of_order_writes_equals_a_one_shot_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let open =
            || std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
        let chunk = 1_000_000usize;
        let spool = RangedSpool::open(open(), data.len() as u64).unwrap();
        // Chunks 3, 1, 0 arrive; the hash can only cover chunks 0 and 1.
        for i in [3usize, 1, 0] {
            spool.write_at(&data[i * chunk..(i + 1) * chunk], (i * chunk) as u64).unwrap();
        }
        assert_eq!(spool.advance_to(2 * chunk as u64).unwrap(), 2 * chunk as u64);
        assert!(spool.hash().is_none());
        drop(spool);
        // A revived spool keeps its bytes and catches up from zero.
        let spool = RangedSpool::open(open(), data.len() as u64).unwrap();
        for i in [4usize, 2] {
            spool.write_at(&data[i * chunk..(i + 1) * chunk], (i * chunk) as u64).unwrap();
        }
        spool.advance_to(data.len() as u64).unwrap();
        assert_eq!(spool.hash(), Some(blake3::hash(&data)));
    }
}
