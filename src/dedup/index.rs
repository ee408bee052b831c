//! `FrameIndex`: every stored video's frame hashes, searchable by Hamming
//! distance without looking at every frame. Multi-index hashing: the 64 bits
//! are cut into four 16-bit blocks, each with a table from block value to
//! frames. Two hashes within distance `r` agree to within `r / 4` bits on at
//! least one block (pigeonhole), so a query looks up, in each table, every
//! value within `r / 4` bits of its own block (137 values per table for
//! r = 10) and checks the few frames found there in full.

use super::FrameHash;
use crate::domain::ContentHash;
use std::collections::HashMap;

/// The sampled frames of one video, in time order.
#[derive(Debug, Clone)]
pub struct VideoFrames {
    pub video: ContentHash,
    pub hashes: Vec<FrameHash>,
    /// Length of the video, in milliseconds (0: unknown).
    pub duration_ms: u64,
}

/// A stored video that the new one matches.
#[derive(Debug, Clone, PartialEq)]
pub struct NearMatch {
    pub video: ContentHash,
    /// Median distance of the matched frames.
    pub distance: u32,
    /// Share of the shorter signature's frames matched in time order.
    pub share: f64,
}

/// When two videos are the same video (`[dedup]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct MatchRule {
    /// Two frames match within this Hamming distance (of 64 bits).
    pub max_frame_distance: u32,
    /// Share of the shorter signature's frames that must match, in time order.
    pub min_matched_share: f64,
    /// Frames that must match at least (fewer if a signature is shorter).
    pub min_matched_frames: usize,
    /// The shorter video must be at least this share of the longer one.
    pub min_duration_ratio: f64,
}

struct Video {
    hash: ContentHash,
    frames: u32,
    duration_ms: u64,
}

const BLOCKS: usize = 4;

/// One stored frame: its hash, its video's slot and its position there.
#[derive(Clone, Copy)]
struct Entry {
    hash: u64,
    slot: u32,
    pos: u32,
}

#[derive(Default)]
pub struct FrameIndex {
    entries: Vec<Entry>,
    tables: [HashMap<u16, Vec<u32>>; BLOCKS],
    videos: Vec<Option<Video>>,
    slots: HashMap<ContentHash, u32>,
}

fn block(hash: u64, i: usize) -> u16 {
    (hash >> (16 * i)) as u16
}

/// Every 16-bit value within `k` bits of `value`.
fn neighbours(value: u16, k: u32, out: &mut Vec<u16>) {
    out.clear();
    out.push(value);
    let mut frontier = vec![(value, 0u32)];
    for _ in 0..k.min(16) {
        let mut next = Vec::new();
        for &(v, lowest) in &frontier {
            for bit in lowest..16 {
                let flipped = v ^ (1 << bit);
                out.push(flipped);
                next.push((flipped, bit + 1));
            }
        }
        frontier = next;
    }
}

impl FrameIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames held, including those of removed videos until the next rebuild.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn insert(&mut self, frames: &VideoFrames) {
        if self.slots.contains_key(&frames.video) {
            return;
        }
        let slot = self.videos.len() as u32;
        self.videos.push(Some(Video {
            hash: frames.video,
            frames: frames.hashes.len() as u32,
            duration_ms: frames.duration_ms,
        }));
        self.slots.insert(frames.video, slot);
        for (pos, hash) in frames.hashes.iter().enumerate() {
            let id = self.entries.len() as u32;
            self.entries.push(Entry { hash: hash.0, slot, pos: pos as u32 });
            for (i, table) in self.tables.iter_mut().enumerate() {
                table.entry(block(hash.0, i)).or_default().push(id);
            }
        }
    }

    /// Forgets a video (deleted). Its frames stay in the tables as dead
    /// entries that queries skip; a rebuild at start-up drops them.
    pub fn remove(&mut self, video: &ContentHash) {
        if let Some(slot) = self.slots.remove(video) {
            self.videos[slot as usize] = None;
        }
    }

    /// Every live (video, frame position, distance) within `max` of `hash`.
    pub fn within(&self, hash: FrameHash, max: u32) -> Vec<(ContentHash, u32, u32)> {
        let mut out = Vec::new();
        let k = max / BLOCKS as u32;
        let mut values = Vec::new();
        for (i, table) in self.tables.iter().enumerate() {
            neighbours(block(hash.0, i), k, &mut values);
            for value in &values {
                let Some(ids) = table.get(value) else { continue };
                for &id in ids {
                    let entry = self.entries[id as usize];
                    // Found through an earlier block already?
                    let earlier = (0..i).any(|j| {
                        u32::from((block(entry.hash, j) ^ block(hash.0, j)).count_ones() as u16) <= k
                    });
                    if earlier {
                        continue;
                    }
                    let d = (entry.hash ^ hash.0).count_ones();
                    if d > max {
                        continue;
                    }
                    if let Some(video) = &self.videos[entry.slot as usize] {
                        out.push((video.hash, entry.pos, d));
                    }
                }
            }
        }
        out
    }

    /// The best stored video that a new one (`frames`, `duration_ms`)
    /// near-duplicates: enough of the shorter signature's frames match the
    /// other's within `max_frame_distance`, counted only along a time-ordered
    /// chain (matched positions increase in both videos), and the lengths
    /// are comparable. Best: the highest share, then the smallest distance.
    pub fn best_match(&self, frames: &[FrameHash], duration_ms: u64, rule: &MatchRule) -> Option<NearMatch> {
        if frames.is_empty() {
            return None;
        }
        // Per candidate video: for each new frame, its best (position, distance).
        let mut per_video: HashMap<ContentHash, Vec<Option<(u32, u32)>>> = HashMap::new();
        for (i, &hash) in frames.iter().enumerate() {
            for (video, pos, d) in self.within(hash, rule.max_frame_distance) {
                let slots = per_video.entry(video).or_insert_with(|| vec![None; frames.len()]);
                if slots[i].is_none_or(|(_, best)| d < best) {
                    slots[i] = Some((pos, d));
                }
            }
        }
        let mut best: Option<NearMatch> = None;
        for (video, matches) in per_video {
            let Some(stored) = self.slots.get(&video).and_then(|&s| self.videos[s as usize].as_ref()) else {
                continue;
            };
            let (short, long) = (duration_ms.min(stored.duration_ms), duration_ms.max(stored.duration_ms));
            if short > 0 && (short as f64) < rule.min_duration_ratio * long as f64 {
                continue;
            }
            let shorter = frames.len().min(stored.frames as usize).max(1);
            let chain = longest_ordered_chain(&matches);
            let share = chain.len() as f64 / shorter as f64;
            if share < rule.min_matched_share || chain.len() < rule.min_matched_frames.min(shorter) {
                continue;
            }
            let mut distances: Vec<u32> = chain.iter().map(|&(_, d)| d).collect();
            distances.sort_unstable();
            let distance = distances[distances.len() / 2];
            let better = best.as_ref().is_none_or(|b| share > b.share || (share == b.share && distance < b.distance));
            if better {
                best = Some(NearMatch { video, distance, share: share.min(1.0) });
            }
        }
        best
    }
}

/// The longest run of matches whose stored positions increase with the new
/// video's frame order (O(n^2); n is a few hundred sampled frames at most).
fn longest_ordered_chain(matches: &[Option<(u32, u32)>]) -> Vec<(u32, u32)> {
    let points: Vec<(u32, u32)> = matches.iter().flatten().copied().collect();
    if points.is_empty() {
        return Vec::new();
    }
    let mut len = vec![1usize; points.len()];
    let mut prev = vec![usize::MAX; points.len()];
    for i in 0..points.len() {
        for j in 0..i {
            if points[j].0 <= points[i].0 && len[j] + 1 > len[i] {
                len[i] = len[j] + 1;
                prev[i] = j;
            }
        }
    }
    let mut at = (0..points.len()).max_by_key(|&i| len[i]).expect("not empty");
    let mut chain = vec![points[at]];
    while prev[at] != usize::MAX {
        at = prev[at];
        chain.push(points[at]);
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(seed: u8) -> ContentHash {
        ContentHash::from(blake3::hash(&[seed]))
    }

    /// A pseudo-random frame sequence, and a copy with a few bits flipped.
    fn frames(seed: u64, n: usize) -> Vec<FrameHash> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                FrameHash(x)
            })
            .collect()
    }

    fn noisy(frames: &[FrameHash], bits: u32) -> Vec<FrameHash> {
        frames.iter().enumerate().map(|(i, h)| FrameHash(h.0 ^ ((1u64 << bits) - 1) << (i % 50))).collect()
    }

    #[test]
    fn within_finds_exactly_what_a_linear_scan_finds() {
        let mut index = FrameIndex::new();
        let all: Vec<(ContentHash, Vec<FrameHash>)> =
            (0..20).map(|s| (video(s), frames(u64::from(s) + 1, 50))).collect();
        for (v, f) in &all {
            index.insert(&VideoFrames { video: *v, hashes: f.clone(), duration_ms: 0 });
        }
        let query = FrameHash(all[3].1[7].0 ^ 0b1011_0000_0000_0000_0001_0000_0000_0100_0001);
        let mut got: Vec<_> = index.within(query, 10).into_iter().map(|(v, p, d)| (v.to_hex(), p, d)).collect();
        let mut want: Vec<_> = all
            .iter()
            .flat_map(|(v, f)| f.iter().enumerate().map(move |(p, h)| (v.to_hex(), p as u32, h.distance(query))))
            .filter(|(_, _, d)| *d <= 10)
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(!got.is_empty());
    }

    #[test]
    fn within_agrees_with_a_linear_scan_at_every_distance() {
        let mut index = FrameIndex::new();
        let all: Vec<Vec<FrameHash>> = (0..50).map(|s| frames(s + 100, 40)).collect();
        for (i, f) in all.iter().enumerate() {
            index.insert(&VideoFrames { video: video(i as u8), hashes: f.clone(), duration_ms: 0 });
        }
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300u64 {
            let base = all[(next() % 50) as usize][(next() % 40) as usize].0;
            let flips = round % 14;
            let mut query = base;
            for _ in 0..flips {
                query ^= 1 << (next() % 64);
            }
            let max = (round % 13) as u32;
            let mut got: Vec<_> = index.within(FrameHash(query), max).into_iter().map(|(_, p, d)| (p, d)).collect();
            let mut want: Vec<_> = all
                .iter()
                .flat_map(|f| f.iter().enumerate())
                .map(|(p, h)| (p as u32, (h.0 ^ query).count_ones()))
                .filter(|(_, d)| *d <= max)
                .collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "query {query:x} within {max}");
        }
    }

    #[test]
    fn a_noisy_trimmed_copy_matches_its_source_and_nothing_else() {
        let mut index = FrameIndex::new();
        let source = frames(7, 60);
        index.insert(&VideoFrames { video: video(1), hashes: source.clone(), duration_ms: 60_000 });
        index.insert(&VideoFrames { video: video(2), hashes: frames(8, 60), duration_ms: 60_000 });
        // Trimmed by 10 frames at the start, 3 bits of noise per frame.
        let copy = noisy(&source[10..], 3);
        let rule = MatchRule { max_frame_distance: 6, min_matched_share: 0.6, min_matched_frames: 3, min_duration_ratio: 0.5 };
        let found = index.best_match(&copy, 50_000, &rule).expect("the copy matches");
        assert_eq!(found.video, video(1));
        assert_eq!(found.distance, 3);
        assert!(found.share > 0.95);
        // Another sequence matches nothing.
        assert!(index.best_match(&frames(9, 40), 40_000, &rule).is_none());
        // Frames in reverse order are not a copy.
        let reversed: Vec<_> = source.iter().rev().copied().collect();
        assert!(index.best_match(&reversed, 60_000, &rule).is_none());
        // A removed video is not found any more.
        // A short clip of the source is not the same video.
        assert!(index.best_match(&source[..20], 20_000, &rule).is_none());
        index.remove(&video(1));
        assert!(index.best_match(&copy, 50_000, &rule).is_none());
    }
}
