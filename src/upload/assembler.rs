//! `Assembler`: joins the parts of a multipart upload into its spool, in
//! part-number order, while the upload is still going on. Each time a part is
//! recorded, the run of parts 1, 2, 3, ... that is complete so far is
//! appended (through the running BLAKE3) on a blocking thread, while it is
//! still in the page cache. At complete, only what the background work has
//! not reached yet is left, so completing a large upload does not mean
//! reading all of it again.
//!
//! The joined prefix is only a head start: complete checks that it is a
//! prefix of the client's list (same numbers, same hashes) and otherwise
//! starts over, so a re-sent or skipped part can never leak into the object.
#![allow(clippy::disallowed_methods)] // a blocking module: used on blocking threads (clippy.toml)

use super::writer::SpoolWriter;
use crate::domain::UploadId;
use crate::storage::{Piece, Store};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Assembler {
    store: Arc<dyn Store>,
    id: UploadId,
    state: Mutex<Option<Joined>>,
    /// Set once the upload is committed or abandoned: the spool is no
    /// longer this assembler's to write, and a late join must not recreate it.
    closed: AtomicBool,
}

/// The spool holds exactly `parts`, in order, and `writer` has hashed them.
struct Joined {
    writer: SpoolWriter,
    parts: Vec<Piece>,
}

const COPY_BLOCK: usize = 1 << 20;

impl Assembler {
    pub fn new(store: Arc<dyn Store>, id: UploadId) -> Self {
        Self { store, id, state: Mutex::new(None), closed: AtomicBool::new(false) }
    }

    /// No more joins: the spool was committed or discarded. Does not wait for
    /// a join in progress (it notices, and cleans up after itself).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    fn check_open(&self) -> io::Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the upload is closed"));
        }
        Ok(())
    }

    /// Makes the spool hold exactly `parts`, reusing what is joined when it
    /// is a prefix of them. Returns the hash and size once it does. Blocking.
    pub fn join(&self, parts: &[Piece]) -> io::Result<(blake3::Hash, u64)> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let joined = self.join_into(&mut state, parts)?;
        Ok((joined.writer.hash(), joined.writer.written()))
    }

    /// Joins `parts`, makes the spool durable and closes the assembler, all
    /// under its lock, so that no background join can touch the spool
    /// between this and the commit's rename. Closes it even on failure: a
    /// retry uses a fresh assembler, and this one must never write again.
    pub fn finish(&self, parts: &[Piece]) -> io::Result<(blake3::Hash, u64)> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = self.join_into(&mut state, parts).and_then(|joined| {
            joined.writer.sync()?;
            Ok((joined.writer.hash(), joined.writer.written()))
        });
        self.close();
        result
    }

    fn join_into<'a>(&self, state: &'a mut Option<Joined>, parts: &[Piece]) -> io::Result<&'a mut Joined> {
        self.check_open()?;
        let reusable =
            state.as_ref().is_some_and(|j| j.parts.len() <= parts.len() && j.parts == parts[..j.parts.len()]);
        if !reusable {
            *state = None;
            let writer = SpoolWriter::create(self.store.open_spool(&self.id)?)?;
            // Closed while the spool was being opened: the discard may have
            // run before this open, so remove what the open created.
            if let Err(e) = self.check_open() {
                let _ = self.store.discard_spool(&self.id);
                return Err(e);
            }
            *state = Some(Joined { writer, parts: Vec::new() });
        }
        let mut buf = vec![0u8; COPY_BLOCK];
        let joined = state.as_mut().expect("set above");
        for piece in &parts[joined.parts.len()..] {
            if let Err(e) = self.check_open().and_then(|()| self.append(&mut joined.writer, piece, &mut buf)) {
                // Half a part may be in the spool: forget it all, start over next time.
                *state = None;
                return Err(e);
            }
            joined.parts.push(piece.clone());
        }
        Ok(state.as_mut().expect("still set"))
    }

    fn append(&self, writer: &mut SpoolWriter, piece: &Piece, buf: &mut [u8]) -> io::Result<()> {
        let path = self.store.piece_path(&self.id, piece.number, &piece.hash.to_hex());
        let mut file = std::fs::File::open(path)?;
        let mut copied = 0u64;
        loop {
            let n = file.read(buf)?;
            if n == 0 {
                break;
            }
            writer.append(&buf[..n])?;
            copied += n as u64;
        }
        if copied != piece.size {
            return Err(io::Error::other(format!(
                "part {} has {copied} bytes on disk, {} recorded",
                piece.number, piece.size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ContentHash;
    use crate::storage::LocalStore;

    fn put(store: &LocalStore, id: &UploadId, number: u32, bytes: &[u8]) -> Piece {
        let hash = ContentHash::from(blake3::hash(bytes));
        let path = store.piece_path(id, number, &hash.to_hex());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        Piece { number, size: bytes.len() as u64, hash }
    }

    #[test]
    fn a_joined_prefix_is_reused_and_a_changed_part_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let id = UploadId::generate();
        let (a, b, c, b2) = (vec![1u8; 3000], vec![2u8; 2000], vec![3u8; 1000], vec![9u8; 2500]);
        let (pa, pb, pc) = (put(&store, &id, 1, &a), put(&store, &id, 2, &b), put(&store, &id, 3, &c));
        let assembler = Assembler::new(Arc::new(store.clone()), id.clone());

        assembler.join(&[pa.clone(), pb.clone()]).unwrap();
        let (hash, size) = assembler.join(&[pa.clone(), pb.clone(), pc.clone()]).unwrap();
        assert_eq!(hash, blake3::hash(&[a.clone(), b.clone(), c.clone()].concat()));
        assert_eq!(size, 6000);

        // Part 2 was sent again with other bytes: what was joined is not a prefix.
        let pb2 = put(&store, &id, 2, &b2);
        let (hash, _) = assembler.finish(&[pa.clone(), pb2, pc]).unwrap();
        assert!(assembler.join(&[pa]).is_err(), "a finished assembler joins nothing more");
        let whole = [a, b2, c].concat();
        assert_eq!(hash, blake3::hash(&whole));
        assert_eq!(std::fs::read(store.spool_path(&id)).unwrap(), whole);
    }
}
