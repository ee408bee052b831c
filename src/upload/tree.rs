//! BLAKE3 of a file hashed in pieces, on different daemons, in any order.
//!
//! BLAKE3 is a tree hash: the file is cut in 1 KiB chunks, and every
//! aligned power-of-two run of chunks (a run of 2^k chunks starting at a
//! multiple of 2^k) that lies inside the file is a subtree whose chaining
//! value depends on its bytes and its offset only. A piece at a fixed offset
//! (a chunk of the chunked door, `index * chunk_size`) is cut into the
//! largest such subtrees ([`PieceTree::of`]); their chaining values are
//! kept with the piece in the database. At finalize, [`root`] walks the
//! file's tree from the top, splitting where BLAKE3 splits
//! (`left_subtree_len`), and merges the stored values: the file's hash,
//! without reading a byte of it again.
//!
//! The one piece that cannot be a subtree is the whole file (its hash is a
//! root, with the root flag); a piece that is the whole file keeps its
//! plain hash. Pieces must start at a multiple of 1 KiB.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, left_subtree_len, max_subtree_len, merge_subtrees_non_root};
use blake3::{CHUNK_LEN, Hasher};
use std::collections::BTreeMap;

/// The chaining value of one subtree: `len` bytes at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subtree {
    pub offset: u64,
    pub len: u64,
    pub cv: ChainingValue,
}

/// What a piece contributes to the file's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PieceTree {
    /// The piece is the whole file: its hash is the file's.
    Whole(blake3::Hash),
    /// The piece's subtrees, in order.
    Subtrees(Vec<Subtree>),
}

impl PieceTree {
    /// Hashes `bytes`, which sit at `offset` in a file of `total` bytes.
    /// `offset` must be a multiple of 1 KiB. Blocks (it hashes).
    pub fn of(offset: u64, bytes: &[u8], total: u64) -> Self {
        assert_eq!(offset % CHUNK_LEN as u64, 0, "a piece starts on a 1 KiB boundary");
        if offset == 0 && bytes.len() as u64 == total {
            return Self::Whole(blake3::hash(bytes));
        }
        let mut subtrees = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let here = offset + at as u64;
            let left = (bytes.len() - at) as u64;
            let len = if left <= CHUNK_LEN as u64 {
                left
            } else {
                // The largest power of two of whole chunks that fits what
                // is left and the alignment of `here`.
                let fits = 1u64 << (63 - left.leading_zeros());
                let fits = fits.max(CHUNK_LEN as u64);
                max_subtree_len(here).map_or(fits, |max| max.min(fits))
            };
            let end = at + len as usize;
            let cv = Hasher::new().set_input_offset(here).update(&bytes[at..end]).finalize_non_root();
            subtrees.push(Subtree { offset: here, len, cv });
            at = end;
        }
        Self::Subtrees(subtrees)
    }

    /// The form kept in the database: `whole:<hex>`, or
    /// `<offset>:<len>:<hex>` for each subtree, separated by `,`.
    pub fn encode(&self) -> String {
        match self {
            Self::Whole(hash) => format!("whole:{}", hash.to_hex()),
            Self::Subtrees(subtrees) => subtrees
                .iter()
                .map(|s| format!("{}:{}:{}", s.offset, s.len, hex::encode(s.cv)))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        if let Some(hex_hash) = text.strip_prefix("whole:") {
            return blake3::Hash::from_hex(hex_hash).ok().map(Self::Whole);
        }
        let mut subtrees = Vec::new();
        for item in text.split(',') {
            let mut fields = item.split(':');
            let offset = fields.next()?.parse().ok()?;
            let len = fields.next()?.parse().ok()?;
            let mut cv = [0u8; 32];
            hex::decode_to_slice(fields.next()?, &mut cv).ok()?;
            if fields.next().is_some() || len == 0 {
                return None;
            }
            subtrees.push(Subtree { offset, len, cv });
        }
        Some(Self::Subtrees(subtrees))
    }
}

/// The hash of a file of `total` bytes from the trees of pieces that cover
/// it. `None` if they do not cover it exactly (a gap, an overlap, a piece
/// cut where the file's tree has no node).
pub fn root(total: u64, pieces: &[PieceTree]) -> Option<blake3::Hash> {
    let mut nodes = BTreeMap::new();
    for piece in pieces {
        match piece {
            PieceTree::Whole(hash) => return (pieces.len() == 1).then_some(*hash),
            PieceTree::Subtrees(subtrees) => {
                for s in subtrees {
                    nodes.insert((s.offset, s.len), s.cv);
                }
            }
        }
    }
    if total <= CHUNK_LEN as u64 {
        return None; // one chunk is the root itself: only a whole piece has it
    }
    let split = left_subtree_len(total);
    let left = cv_of(&nodes, 0, split)?;
    let right = cv_of(&nodes, split, total - split)?;
    let used = count(&nodes, 0, split) + count(&nodes, split, total - split);
    (used == nodes.len()).then(|| blake3::hazmat::merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The chaining value of the node `len` bytes at `offset`, from the stored
/// subtrees under it.
fn cv_of(nodes: &BTreeMap<(u64, u64), ChainingValue>, offset: u64, len: u64) -> Option<ChainingValue> {
    if let Some(cv) = nodes.get(&(offset, len)) {
        return Some(*cv);
    }
    if len <= CHUNK_LEN as u64 {
        return None;
    }
    let split = left_subtree_len(len);
    let left = cv_of(nodes, offset, split)?;
    let right = cv_of(nodes, offset + split, len - split)?;
    Some(merge_subtrees_non_root(&left, &right, Mode::Hash))
}

/// How many stored subtrees the walk of `cv_of` uses: all of them, or some
/// were not on the file's tree.
fn count(nodes: &BTreeMap<(u64, u64), ChainingValue>, offset: u64, len: u64) -> usize {
    if nodes.contains_key(&(offset, len)) {
        return 1;
    }
    if len <= CHUNK_LEN as u64 {
        return 0;
    }
    let split = left_subtree_len(len);
    count(nodes, offset, split) + count(nodes, offset + split, len - split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8).collect()
    }

    fn pieces_of(data: &[u8], piece: usize) -> Vec<PieceTree> {
        data.chunks(piece).enumerate().map(|(i, p)| PieceTree::of((i * piece) as u64, p, data.len() as u64)).collect()
    }

    #[test]
    fn pieces_of_any_whole_kib_size_give_the_files_hash() {
        let sizes = [1, 1023, 1024, 1025, 2048, 3000, 4096 + 7, 65_536, 100_000, 1 << 20, (5 << 20) + 12_345];
        let piece_sizes = [1024, 2048, 3072, 5 * 1024, 64 * 1024, 96 * 1024, 1 << 20, 5 << 20];
        for &size in &sizes {
            let data = bytes(size, size as u8);
            for &piece in &piece_sizes {
                let pieces = pieces_of(&data, piece);
                assert_eq!(root(size as u64, &pieces), Some(blake3::hash(&data)), "file {size}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn order_does_not_matter_and_the_encoding_round_trips() {
        let data = bytes((3 << 20) + 999, 7);
        let mut pieces: Vec<PieceTree> = pieces_of(&data, 5 * 1024 * 64)
            .into_iter()
            .map(|p| PieceTree::decode(&p.encode()).expect("decodes"))
            .collect();
        pieces.reverse();
        assert_eq!(root(data.len() as u64, &pieces), Some(blake3::hash(&data)));
        let small = bytes(500, 1);
        let whole = PieceTree::of(0, &small, 500);
        assert_eq!(PieceTree::decode(&whole.encode()), Some(whole.clone()));
        assert_eq!(root(500, &[whole]), Some(blake3::hash(&small)));
    }

    #[test]
    fn a_missing_or_changed_piece_is_seen() {
        let data = bytes(300_000, 3);
        let mut pieces = pieces_of(&data, 64 * 1024);
        let last = pieces.pop().unwrap();
        assert_eq!(root(data.len() as u64, &pieces), None, "a gap");
        pieces.push(last.clone());
        pieces.push(last);
        assert_eq!(root(data.len() as u64, &pieces), Some(blake3::hash(&data)), "a repeat is the same node");
        let mut changed = data.clone();
        changed[70_000] ^= 1;
        let other = pieces_of(&changed, 64 * 1024);
        assert_ne!(root(data.len() as u64, &other), Some(blake3::hash(&data)));
        // Pieces of a different cut overlap the stored ones: refused.
        let mut mixed = pieces_of(&data, 64 * 1024);
        mixed.push(PieceTree::of(0, &data[..3072], data.len() as u64));
        assert_eq!(root(data.len() as u64, &mixed), None);
        assert_eq!(PieceTree::decode("1:2"), None);
        assert_eq!(PieceTree::decode("x"), None);
    }
}
