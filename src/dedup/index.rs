//! `FrameIndex`: every stored video's frame hashes, searchable by Hamming
//! distance without looking at every frame. Multi-index hashing: the 64 bits
//! are cut into four 16-bit blocks, each with a table of 65,536 buckets from
//! block value to the frames (hash inline, so a bucket is one contiguous
//! scan). Two hashes within distance `r` agree to within `r / 4` bits on at
//! least one block (pigeonhole), so a query scans, in each table, the
//! buckets within `r / 4` bits of its own block.
//!
//! A video query does not need every near frame, only every near video: it
//! scans, for each of its frames, the buckets within one bit of each block
//! (17 a table) and counts the stored frames there within the rule's
//! distance as hits for their video. A frame within 7 bits is always found
//! that way (pigeonhole); one 13 bits away about half the time, so a copy
//! with a few such frames is still found. The videos hit most are then
//! compared frame by frame with the full rule.

use super::FrameHash;
use crate::domain::ContentHash;
use std::collections::HashMap;

/// The informative sampled frames of one video, in time order.
#[derive(Debug, Clone)]
pub struct VideoFrames {
    pub video: ContentHash,
    /// (presentation time in ms, hash) of each frame.
    pub frames: Vec<(u64, FrameHash)>,
    /// Length of the video, in milliseconds (0: unknown).
    pub duration_ms: u64,
}

/// A stored video whose pictures the new one matches.
#[derive(Debug, Clone, PartialEq)]
pub struct NearMatch {
    pub video: ContentHash,
    /// Median distance of the matched frames.
    pub distance: u32,
    /// Share of the shorter signature's frames matched in time order.
    pub share: f64,
    /// Frames matched in time order.
    pub matched: usize,
    /// Where the new video's timeline sits in the stored one's: the median,
    /// over matched frames, of the stored frame's time minus ours.
    pub offset_ms: i64,
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
    /// A frame votes only if this many of its hash's 64 bits are decided by
    /// a clear step (`Sample::info`); others are not indexed or compared.
    pub min_frame_information: u8,
    /// Audible soundtracks on both sides must agree to within this bit
    /// error rate of their fingerprints.
    pub max_audio_error: f64,
    /// The frames at the same moments must have tones within this median
    /// difference (of 255, `Tone::difference`).
    pub max_tone_difference: f64,
}

/// Bits per block in which a video query's buckets may differ.
const CANDIDATE_BLOCK_BITS: u32 = 1;
/// Candidate videos compared in full per query, the most often hit first.
const MAX_CANDIDATES: usize = 64;

struct Video {
    hash: ContentHash,
    /// Its frames are `entries[first..first + frames]`, in time order.
    first: u32,
    frames: u32,
    duration_ms: u64,
    /// Presentation time of each frame, in ms.
    times: Vec<u64>,
}

const BLOCKS: usize = 4;

/// One stored frame: its hash and its video's slot.
#[derive(Clone, Copy)]
struct Entry {
    hash: u64,
    slot: u32,
}

pub struct FrameIndex {
    entries: Vec<Entry>,
    /// Per block: 65,536 buckets of (frame hash, entry id).
    tables: Vec<Vec<Vec<(u64, u32)>>>,
    videos: Vec<Option<Video>>,
    slots: HashMap<ContentHash, u32>,
}

impl Default for FrameIndex {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            tables: (0..BLOCKS).map(|_| vec![Vec::new(); 1 << 16]).collect(),
            videos: Vec::new(),
            slots: HashMap::new(),
        }
    }
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
            first: self.entries.len() as u32,
            frames: frames.frames.len() as u32,
            duration_ms: frames.duration_ms,
            times: frames.frames.iter().map(|(t, _)| *t).collect(),
        }));
        self.slots.insert(frames.video, slot);
        for (_, hash) in &frames.frames {
            let id = self.entries.len() as u32;
            self.entries.push(Entry { hash: hash.0, slot });
            for (i, table) in self.tables.iter_mut().enumerate() {
                table[usize::from(block(hash.0, i))].push((hash.0, id));
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

    /// Calls `hit(entry id, distance)` once for every stored frame within
    /// `max` of `hash` that agrees with it to within `k` bits on some block,
    /// live or not. With `k = max / 4`, that is every frame within `max`.
    fn scan(&self, hash: u64, max: u32, k: u32, mut hit: impl FnMut(u32, u32)) {
        let mut values = Vec::new();
        for (i, table) in self.tables.iter().enumerate() {
            neighbours(block(hash, i), k, &mut values);
            for &value in &values {
                for &(stored, id) in &table[usize::from(value)] {
                    let d = (stored ^ hash).count_ones();
                    if d > max {
                        continue;
                    }
                    // Found through an earlier block already?
                    let earlier = (0..i).any(|j| (block(stored, j) ^ block(hash, j)).count_ones() <= k);
                    if !earlier {
                        hit(id, d);
                    }
                }
            }
        }
    }

    /// Every live (video, frame position, distance) within `max` of `hash`.
    pub fn within(&self, hash: FrameHash, max: u32) -> Vec<(ContentHash, u32, u32)> {
        let mut out = Vec::new();
        self.scan(hash.0, max, max / BLOCKS as u32, |id, d| {
            let entry = self.entries[id as usize];
            if let Some(video) = &self.videos[entry.slot as usize] {
                out.push((video.hash, id - video.first, d));
            }
        });
        out
    }

    /// The best stored video that a new one (`frames`, `duration_ms`)
    /// near-duplicates; see `matches`.
    pub fn best_match(&self, frames: &[(u64, FrameHash)], duration_ms: u64, rule: &MatchRule) -> Option<NearMatch> {
        self.matches(frames, duration_ms, rule).into_iter().next()
    }

    /// Every stored video whose pictures a new one (`frames`, `duration_ms`)
    /// matches, best first: enough of the shorter signature's frames match
    /// the other's within `max_frame_distance`, counted only along a
    /// time-ordered chain (matched positions increase in both videos), and
    /// the lengths are comparable. Best: the highest share, then the
    /// smallest distance.
    pub fn matches(&self, frames: &[(u64, FrameHash)], duration_ms: u64, rule: &MatchRule) -> Vec<NearMatch> {
        if frames.is_empty() {
            return Vec::new();
        }
        // Candidates: stored videos with frames near ours.
        let (max, k) = (rule.max_frame_distance, CANDIDATE_BLOCK_BITS.min(rule.max_frame_distance / BLOCKS as u32));
        let mut hits: HashMap<u32, u32> = HashMap::new();
        for (_, hash) in frames {
            self.scan(hash.0, max, k, |id, _| {
                *hits.entry(self.entries[id as usize].slot).or_default() += 1;
            });
        }
        let mut candidates: Vec<(u32, u32)> = hits.into_iter().collect();
        candidates.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        candidates.truncate(MAX_CANDIDATES);

        let mut found: Vec<NearMatch> = Vec::new();
        for (slot, _) in candidates {
            let Some(stored) = &self.videos[slot as usize] else { continue };
            let (short, long) = (duration_ms.min(stored.duration_ms), duration_ms.max(stored.duration_ms));
            if short > 0 && (short as f64) < rule.min_duration_ratio * long as f64 {
                continue;
            }
            let theirs = &self.entries[stored.first as usize..(stored.first + stored.frames) as usize];
            // For each of our frames, its nearest frame of theirs within the rule.
            let matches: Vec<Option<(u32, u32)>> = frames
                .iter()
                .map(|(_, ours)| {
                    theirs
                        .iter()
                        .enumerate()
                        .map(|(pos, e)| (pos as u32, (e.hash ^ ours.0).count_ones()))
                        .filter(|&(_, d)| d <= rule.max_frame_distance)
                        .min_by_key(|&(pos, d)| (d, pos))
                })
                .collect();
            let shorter = frames.len().min(theirs.len()).max(1);
            let chain = longest_ordered_chain(&matches);
            let share = chain.len() as f64 / shorter as f64;
            // Both sides need `min_matched_frames` that say something: a
            // stored video with one informative frame would otherwise be
            // matched (share 1.0) by any video with one frame near it.
            if share < rule.min_matched_share || chain.len() < rule.min_matched_frames {
                continue;
            }
            let mut distances: Vec<u32> = chain.iter().map(|&(_, _, d)| d).collect();
            distances.sort_unstable();
            let distance = distances[distances.len() / 2];
            let mut offsets: Vec<i64> = chain
                .iter()
                .map(|&(ours, theirs, _)| stored.times[theirs as usize] as i64 - frames[ours].0 as i64)
                .collect();
            offsets.sort_unstable();
            let offset_ms = offsets[offsets.len() / 2];
            found.push(NearMatch {
                video: stored.hash,
                distance,
                share: share.min(1.0),
                matched: chain.len(),
                offset_ms,
            });
        }
        found.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.distance.cmp(&b.distance)));
        found
    }
}

/// The longest run of matches whose stored positions increase with the new
/// video's frame order (O(n^2); n is a few hundred sampled frames at most),
/// as (our frame, their frame, distance).
fn longest_ordered_chain(matches: &[Option<(u32, u32)>]) -> Vec<(usize, u32, u32)> {
    let points: Vec<(usize, u32, u32)> =
        matches.iter().enumerate().filter_map(|(i, m)| m.map(|(pos, d)| (i, pos, d))).collect();
    if points.is_empty() {
        return Vec::new();
    }
    let mut len = vec![1usize; points.len()];
    let mut prev = vec![usize::MAX; points.len()];
    for i in 0..points.len() {
        for j in 0..i {
            if points[j].1 <= points[i].1 && len[j] + 1 > len[i] {
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

    /// A pseudo-random frame sequence (one a second), and a copy with a few bits flipped.
    fn timed(hashes: &[FrameHash]) -> Vec<(u64, FrameHash)> {
        hashes.iter().enumerate().map(|(i, h)| (i as u64 * 1000, *h)).collect()
    }

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
            index.insert(&VideoFrames { video: *v, frames: timed(f), duration_ms: 0 });
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
            index.insert(&VideoFrames { video: video(i as u8), frames: timed(f), duration_ms: 0 });
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
        index.insert(&VideoFrames { video: video(1), frames: timed(&source), duration_ms: 60_000 });
        index.insert(&VideoFrames { video: video(2), frames: timed(&frames(8, 60)), duration_ms: 60_000 });
        // Trimmed by 10 frames (10 s) at the start, 3 bits of noise per frame.
        let copy = timed(&noisy(&source[10..], 3));
        let rule = MatchRule {
            max_frame_distance: 6,
            min_matched_share: 0.6,
            min_matched_frames: 3,
            min_duration_ratio: 0.5,
            min_frame_information: 16,
            max_audio_error: 0.25,
            max_tone_difference: 8.0,
        };
        let found = index.best_match(&copy, 50_000, &rule).expect("the copy matches");
        assert_eq!(found.video, video(1));
        assert_eq!(found.distance, 3);
        assert!(found.share > 0.95);
        assert_eq!(found.offset_ms, 10_000, "our 0 s is their 10 s");
        assert_eq!(found.matched, 50);
        // Another sequence matches nothing.
        assert!(index.best_match(&timed(&frames(9, 40)), 40_000, &rule).is_none());
        // Frames in reverse order are not a copy.
        let reversed: Vec<_> = source.iter().rev().copied().collect();
        assert!(index.best_match(&timed(&reversed), 60_000, &rule).is_none());
        // A short clip of the source is not the same video.
        assert!(index.best_match(&timed(&source[..20]), 20_000, &rule).is_none());
        // A removed video is not found any more.
        index.remove(&video(1));
        assert!(index.best_match(&copy, 50_000, &rule).is_none());
    }
}
