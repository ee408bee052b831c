//! `FrameIndex`: a BK-tree over the frame hashes of every stored video, so
//! that the frames within Hamming distance `d` of a query are found without
//! looking at every frame: the triangle inequality prunes whole subtrees.

use super::FrameHash;
use crate::domain::ContentHash;
use std::collections::HashMap;

/// The sampled frames of one video, in time order.
#[derive(Debug, Clone)]
pub struct VideoFrames {
    pub video: ContentHash,
    pub hashes: Vec<FrameHash>,
}

/// A stored video that the new one matches.
#[derive(Debug, Clone, PartialEq)]
pub struct NearMatch {
    pub video: ContentHash,
    /// Median distance of the matched frames.
    pub distance: u32,
    /// Share of the new video's frames matched in time order.
    pub share: f64,
}

struct Node {
    hash: FrameHash,
    /// (video slot, frame position) of every frame with exactly this hash.
    entries: Vec<(u32, u32)>,
    children: HashMap<u32, usize>,
}

#[derive(Default)]
pub struct FrameIndex {
    nodes: Vec<Node>,
    videos: Vec<Option<ContentHash>>,
    slots: HashMap<ContentHash, u32>,
}

impl FrameIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, frames: &VideoFrames) {
        if self.slots.contains_key(&frames.video) {
            return;
        }
        let slot = self.videos.len() as u32;
        self.videos.push(Some(frames.video));
        self.slots.insert(frames.video, slot);
        for (pos, &hash) in frames.hashes.iter().enumerate() {
            self.insert_hash(hash, (slot, pos as u32));
        }
    }

    /// Forgets a video (deleted). Its frames stay in the tree as dead entries
    /// that queries skip; a rebuild at start-up drops them.
    pub fn remove(&mut self, video: &ContentHash) {
        if let Some(slot) = self.slots.remove(video) {
            self.videos[slot as usize] = None;
        }
    }

    fn insert_hash(&mut self, hash: FrameHash, entry: (u32, u32)) {
        if self.nodes.is_empty() {
            self.nodes.push(Node { hash, entries: vec![entry], children: HashMap::new() });
            return;
        }
        let mut at = 0;
        loop {
            let d = self.nodes[at].hash.distance(hash);
            if d == 0 {
                self.nodes[at].entries.push(entry);
                return;
            }
            match self.nodes[at].children.get(&d) {
                Some(&next) => at = next,
                None => {
                    let index = self.nodes.len();
                    self.nodes.push(Node { hash, entries: vec![entry], children: HashMap::new() });
                    self.nodes[at].children.insert(d, index);
                    return;
                }
            }
        }
    }

    /// Every live (video, frame position, distance) within `max` of `hash`.
    pub fn within(&self, hash: FrameHash, max: u32) -> Vec<(ContentHash, u32, u32)> {
        let mut out = Vec::new();
        if self.nodes.is_empty() {
            return out;
        }
        let mut stack = vec![0usize];
        while let Some(at) = stack.pop() {
            let node = &self.nodes[at];
            let d = node.hash.distance(hash);
            if d <= max {
                for &(slot, pos) in &node.entries {
                    if let Some(video) = self.videos[slot as usize] {
                        out.push((video, pos, d));
                    }
                }
            }
            let (lo, hi) = (d.saturating_sub(max), d + max);
            stack.extend(node.children.iter().filter(|(k, _)| (lo..=hi).contains(*k)).map(|(_, &i)| i));
        }
        out
    }

    /// The best stored video that `frames` near-duplicates: the share of its
    /// frames that match a candidate's frames within `max_distance`, counted
    /// only along a time-ordered chain (longest increasing run of matched
    /// positions), must reach `min_share`.
    pub fn best_match(&self, frames: &[FrameHash], max_distance: u32, min_share: f64) -> Option<NearMatch> {
        if frames.is_empty() {
            return None;
        }
        // Per candidate video: for each new frame, its best (position, distance).
        let mut per_video: HashMap<ContentHash, Vec<Option<(u32, u32)>>> = HashMap::new();
        for (i, &hash) in frames.iter().enumerate() {
            for (video, pos, d) in self.within(hash, max_distance) {
                let slots = per_video.entry(video).or_insert_with(|| vec![None; frames.len()]);
                if slots[i].is_none_or(|(_, best)| d < best) {
                    slots[i] = Some((pos, d));
                }
            }
        }
        let mut best: Option<NearMatch> = None;
        for (video, matches) in per_video {
            let chain = longest_ordered_chain(&matches);
            let share = chain.len() as f64 / frames.len() as f64;
            if share < min_share {
                continue;
            }
            let mut distances: Vec<u32> = chain.iter().map(|&(_, d)| d).collect();
            distances.sort_unstable();
            let distance = distances[distances.len() / 2];
            let better = best.as_ref().is_none_or(|b| share > b.share || (share == b.share && distance < b.distance));
            if better {
                best = Some(NearMatch { video, distance, share });
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
            index.insert(&VideoFrames { video: *v, hashes: f.clone() });
        }
        let query = FrameHash(all[3].1[7].0 ^ 0b1011);
        let mut got: Vec<_> = index.within(query, 6).into_iter().map(|(v, p, d)| (v.to_hex(), p, d)).collect();
        let mut want: Vec<_> = all
            .iter()
            .flat_map(|(v, f)| f.iter().enumerate().map(move |(p, h)| (v.to_hex(), p as u32, h.distance(query))))
            .filter(|(_, _, d)| *d <= 6)
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(!got.is_empty());
    }

    #[test]
    fn a_noisy_trimmed_copy_matches_its_source_and_nothing_else() {
        let mut index = FrameIndex::new();
        let source = frames(7, 60);
        index.insert(&VideoFrames { video: video(1), hashes: source.clone() });
        index.insert(&VideoFrames { video: video(2), hashes: frames(8, 60) });
        // Trimmed by 10 frames at the start, 3 bits of noise per frame.
        let copy = noisy(&source[10..], 3);
        let found = index.best_match(&copy, 6, 0.6).expect("the copy matches");
        assert_eq!(found.video, video(1));
        assert_eq!(found.distance, 3);
        assert!(found.share > 0.95);
        // Another sequence matches nothing.
        assert!(index.best_match(&frames(9, 40), 6, 0.6).is_none());
        // Frames in reverse order are not a copy.
        let reversed: Vec<_> = source.iter().rev().copied().collect();
        assert!(index.best_match(&reversed, 6, 0.6).is_none());
        // A removed video is not found any more.
        index.remove(&video(1));
        assert!(index.best_match(&copy, 6, 0.6).is_none());
    }
}
