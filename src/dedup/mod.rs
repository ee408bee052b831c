//! Near-duplicate detection: 64-bit perceptual hashes of sampled frames (the
//! analysis makes them), an in-memory multi-index over every stored frame
//! hash, and the video-level rule that turns frame matches into "this video
//! is a near-duplicate of that one, at this distance".
//!
//! `NearDuplicates` is the index the commit asks and feeds. It lives in
//! memory only: start-up rebuilds it from the signatures in the database.

mod audio;
mod index;

pub use audio::{AudioPrint, AudioVerdict, ITEM_MS, SILENCE_DBFS};

pub use index::{FrameIndex, MatchRule, NearMatch, VideoFrames};

use crate::config::{DedupSettings, NearDuplicatePolicy};
use crate::domain::ContentHash;
use crate::storage::{RepoError, Repository, Signature};
use std::sync::{Arc, RwLock};

pub struct NearDuplicates {
    index: RwLock<FrameIndex>,
    pub policy: NearDuplicatePolicy,
    rule: MatchRule,
}

/// What a lookup found: the match, and how many videos whose pictures
/// matched were ruled out by their sound.
#[derive(Debug, Default)]
pub struct Lookup {
    pub found: Option<PerceptualMatch>,
    pub vetoed: u64,
}

/// Why a new video was taken for a stored one: what the operator sees in
/// `/meta` and `GET /videos/{id}`, and what `unmerge` undoes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PerceptualMatch {
    /// The stored video.
    pub video: String,
    /// Median Hamming distance (of 64 bits) of the matched frames.
    pub distance: u32,
    /// Share of the shorter video's informative frames matched in time order.
    pub share: f64,
    /// Informative frames matched in time order.
    pub matched_samples: usize,
    /// Where the new video starts in the stored one, in ms.
    pub offset_ms: i64,
    /// `agree` (the soundtracks are the same) or `no-audio` (one side has
    /// none, so the pictures decided alone).
    pub audio: String,
    /// Bit error rate of the aligned audio fingerprints, when compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_error: Option<f64>,
}

impl NearDuplicates {
    pub fn new(settings: &DedupSettings) -> Self {
        Self { index: RwLock::new(FrameIndex::new()), policy: settings.near_duplicate, rule: settings.rule() }
    }

    /// Reads every stored signature into the index (variants excepted: a
    /// new upload is matched against the videos users see).
    pub async fn rebuild(&self, repo: &Repository) -> Result<usize, RepoError> {
        let mut fresh = FrameIndex::new();
        let (mut after, mut videos) = (None::<String>, 0);
        loop {
            let page = repo.signatures_page(after.as_deref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.to_hex());
            for (hash, signature) in &page {
                fresh.insert(&self.frames_of(*hash, signature));
                videos += 1;
            }
        }
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(videos)
    }

    /// The stored video that `signature` near-duplicates, if any (and if the
    /// policy looks at all). Pictures propose (the index, informative frames
    /// only); sound disposes: when both videos have audible audio, their
    /// fingerprints must agree at the offset the frames matched at. Runs the
    /// index scan on a blocking thread.
    pub async fn find(self: &Arc<Self>, signature: &Signature, repo: &Repository) -> Result<Lookup, RepoError> {
        let mut lookup = Lookup { found: None, vetoed: 0 };
        if self.policy == NearDuplicatePolicy::Off {
            return Ok(lookup);
        }
        let ours = self.informative(signature);
        // Too few frames that say anything (a black screen, a blank page, or
        // what finalize had of an upload that arrived faster than it
        // decodes): never matched.
        if ours.len() < self.rule.min_matched_frames {
            return Ok(lookup);
        }
        let (this, duration_ms) = (self.clone(), signature.duration_ms);
        let candidates = tokio::task::spawn_blocking(move || {
            this.index.read().unwrap_or_else(|p| p.into_inner()).matches(&ours, duration_ms, &this.rule)
        })
        .await
        .unwrap_or_default();
        for candidate in candidates {
            let theirs = repo.find_audio(&candidate.video).await?;
            let verdict = signature.audio.compare(&theirs, candidate.offset_ms, self.rule.max_audio_error);
            if !verdict.allows_match() {
                tracing::info!(
                    near = %candidate.video,
                    distance = candidate.distance,
                    audio = verdict.as_str(),
                    audio_error = verdict.error(),
                    "the pictures match a stored video, the sound does not"
                );
                lookup.vetoed += 1;
                continue;
            }
            lookup.found = Some(PerceptualMatch {
                video: candidate.video.to_hex(),
                distance: candidate.distance,
                share: candidate.share,
                matched_samples: candidate.matched,
                offset_ms: candidate.offset_ms,
                audio: verdict.as_str().to_owned(),
                audio_error: verdict.error(),
            });
            break;
        }
        Ok(lookup)
    }

    /// `add`, `replace` and `remove` take the index's write lock, which waits
    /// for every `find` in progress (a scan of up to millions of frames):
    /// callers on an event loop use these, which wait on a blocking thread.
    pub async fn add_blocking(self: &Arc<Self>, hash: ContentHash, signature: Signature) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.add(hash, &signature)).await;
    }

    pub async fn replace_blocking(self: &Arc<Self>, hash: ContentHash, signature: Signature) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.replace(hash, &signature)).await;
    }

    pub async fn remove_blocking(self: &Arc<Self>, hash: ContentHash) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.remove(&hash)).await;
    }

    pub fn add(&self, hash: ContentHash, signature: &Signature) {
        let frames = self.frames_of(hash, signature);
        self.index.write().unwrap_or_else(|p| p.into_inner()).insert(&frames);
    }

    /// Replaces a video's frames (its signature was completed).
    pub fn replace(&self, hash: ContentHash, signature: &Signature) {
        let frames = self.frames_of(hash, signature);
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.remove(&hash);
        index.insert(&frames);
    }

    pub fn remove(&self, hash: &ContentHash) {
        self.index.write().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    /// Frames in the index (dead ones of deleted videos included).
    pub fn frames(&self) -> usize {
        self.index.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The frames of a signature that vote: the informative ones, as
    /// (time in ms, hash).
    fn informative(&self, signature: &Signature) -> Vec<(u64, FrameHash)> {
        signature
            .samples
            .iter()
            .filter(|s| s.info >= self.rule.min_frame_information)
            .map(|s| (s.pts_ms, s.hash))
            .collect()
    }

    fn frames_of(&self, video: ContentHash, signature: &Signature) -> VideoFrames {
        VideoFrames { video, frames: self.informative(signature), duration_ms: signature.duration_ms }
    }
}

/// A 64-bit perceptual hash of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHash(pub u64);

impl FrameHash {
    pub fn distance(self, other: FrameHash) -> u32 {
        (self.0 ^ other.0).count_ones()
    }

    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten().map(Self)
    }

    /// A 64-bit gradient hash (dHash: image_hasher `Gradient`, 8x8): each bit
    /// says whether brightness rises between neighbouring cells of a 9x8
    /// grid. Chosen by measurement on the generated corpus
    /// (`examples/phash_eval.rs`): copies stay within 11 bits of their
    /// source while different videos are 16 or more apart; the DCT median
    /// hash (pHash) let copies drift 22 bits, as far as different videos.
    pub fn of_image<I: image_hasher::Image>(image: &I) -> Self {
        let hasher =
            image_hasher::HasherConfig::new().hash_size(8, 8).hash_alg(image_hasher::HashAlg::Gradient).to_hasher();
        let hash = hasher.hash_image(image);
        let mut bytes = [0u8; 8];
        for (slot, byte) in bytes.iter_mut().zip(hash.as_bytes()) {
            *slot = *byte;
        }
        Self(u64::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32, f: impl Fn(f32, f32) -> [u8; 3]) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x as f32 / w as f32, y as f32 / h as f32)))
    }

    #[test]
    fn scaling_keeps_a_hash_close_and_another_picture_is_far() {
        let scene = |x: f32, y: f32| {
            let v = if (x - 0.3).powi(2) + (y - 0.5).powi(2) < 0.04 { 230 } else { (x * 120.0) as u8 };
            [v, (y * 200.0) as u8, 60]
        };
        let big = FrameHash::of_image(&pattern(640, 360, scene));
        let small = FrameHash::of_image(&pattern(320, 180, scene));
        let other = FrameHash::of_image(&pattern(640, 360, |x, y| {
            let v = if ((x * 8.0) as u32 + (y * 8.0) as u32).is_multiple_of(2) { 255 } else { 0 };
            [v, v, v]
        }));
        assert!(big.distance(small) <= 4, "scaled: {}", big.distance(small));
        assert!(big.distance(other) >= 10, "different: {}", big.distance(other));
    }
}
