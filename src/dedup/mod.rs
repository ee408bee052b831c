//! Near-duplicate detection: 64-bit perceptual hashes of sampled frames (the
//! analysis makes them), an in-memory multi-index over every stored frame
//! hash, and the video-level rule that turns frame matches into "this video
//! is a near-duplicate of that one, at this distance".
//!
//! `NearDuplicates` is the index the commit asks and feeds. It lives in
//! memory only: start-up rebuilds it from the signatures in the database.

mod audio;
mod index;

pub use audio::{AudioPrint, AudioVerdict, ITEM_MS, SILENCE_DBFS, self_error};

pub use index::{FrameIndex, MatchRule, NearMatch, VideoFrames};

use crate::config::{DedupSettings, NearDuplicatePolicy};
use crate::domain::ContentHash;
use crate::media::Sample;
use crate::storage::{RepoError, Repository, Signature};
use std::sync::{Arc, RwLock};

pub struct NearDuplicates {
    index: RwLock<FrameIndex>,
    pub policy: NearDuplicatePolicy,
    rule: MatchRule,
}

/// What a lookup found: the match, and how many videos whose pictures
/// matched were ruled out by their sound or by their tones.
#[derive(Debug, Default)]
pub struct Lookup {
    pub found: Option<PerceptualMatch>,
    pub vetoed: u64,
    pub tone_vetoed: u64,
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
    /// `agree` (the soundtracks are the same), `no-audio` (one side has
    /// none) or `abstained` (the sound could not tell: a steady tone,
    /// noise, too little overlap); with the last two the pictures decided
    /// alone.
    pub audio: String,
    /// Bit error rate of the aligned audio fingerprints, when compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_error: Option<f64>,
    /// Median difference of the aligned frames' tones (`Tone`), when both
    /// videos have them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tone_difference: Option<f64>,
}

/// What the sound and the tones say of a match the pictures proposed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disposal {
    pub audio: AudioVerdict,
    pub tone: ToneVerdict,
}

/// What the tones of the frames at the same moments say of a match.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ToneVerdict {
    /// The median tone difference of the time-aligned informative frames.
    Measured(f64),
    /// Both videos have tones, but too few of their informative frames meet
    /// at the offset the pictures matched at: the frames that matched are
    /// not at the same moments (a nearly still picture matches any frame of
    /// another), so the match is not confirmed. Vetoes, as `unknown`
    /// sound does.
    Unaligned,
    /// One side has no tones (a signature stored before tones were): no say.
    Unknown,
}

impl ToneVerdict {
    pub fn difference(&self) -> Option<f64> {
        match self {
            Self::Measured(d) => Some(*d),
            Self::Unaligned | Self::Unknown => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Measured(_) => "measured",
            Self::Unaligned => "unaligned",
            Self::Unknown => "unknown",
        }
    }

    pub fn allows_match(&self, rule: &MatchRule) -> bool {
        match self {
            Self::Measured(d) => *d <= rule.max_tone_difference,
            Self::Unaligned => false,
            Self::Unknown => true,
        }
    }
}

impl Disposal {
    /// Pictures propose, the rest dispose: the median frame is taken at the
    /// offset the frames matched at, the sound compared there, and the
    /// tones of the frames at the same moments.
    pub fn of(
        ours: &[Sample],
        our_audio: &AudioPrint,
        theirs: &[Sample],
        their_audio: &AudioPrint,
        offset_ms: i64,
        rule: &MatchRule,
    ) -> Self {
        Self {
            audio: our_audio.compare(their_audio, offset_ms, rule.max_audio_error),
            tone: tone_difference(ours, theirs, offset_ms, rule),
        }
    }

    pub fn tone_agrees(&self, rule: &MatchRule) -> bool {
        self.tone.allows_match(rule)
    }

    pub fn allows_match(&self, rule: &MatchRule) -> bool {
        self.audio.allows_match() && self.tone_agrees(rule)
    }
}

/// The mean brightness of a 4x4 grid over a frame's content (its black
/// borders cut, as for the hash). The gradient hash keeps only which way
/// brightness steps between cells, so two smooth pictures (colour ramps,
/// a wide view of a fractal) whose steps go the same way hash alike however
/// different their brightness is; the tone keeps the levels. A copy keeps
/// them (re-encoded, scaled, cropped a little, watermarked, made grey: the
/// corpus measures at most 5 of 255), another ramp does not (15 and more).
/// A copy with its brightness or contrast changed is not matched: a
/// perceptual match is a guess, and this guess prefers missing a copy to
/// taking one video for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tone(pub [u8; 16]);

impl Tone {
    /// Mean absolute difference of the cells (0 to 255).
    pub fn difference(&self, other: &Tone) -> f64 {
        let sum: u32 = self.0.iter().zip(&other.0).map(|(a, b)| u32::from(a.abs_diff(*b))).sum();
        f64::from(sum) / 16.0
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 32 || !hex.is_ascii() {
            return None;
        }
        let mut cells = [0u8; 16];
        for (i, cell) in cells.iter_mut().enumerate() {
            *cell = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(cells))
    }

    /// The tone of a grey image (already cut to its content).
    pub fn of_grey(image: &image::GrayImage) -> Self {
        let (w, h) = image.dimensions();
        let mut cells = [0u8; 16];
        for (i, cell) in cells.iter_mut().enumerate() {
            let (cx, cy) = (i as u32 % 4, i as u32 / 4);
            let (x0, x1) = (cx * w / 4, ((cx + 1) * w / 4).max(cx * w / 4 + 1));
            let (y0, y1) = (cy * h / 4, ((cy + 1) * h / 4).max(cy * h / 4 + 1));
            let mut sum = 0u64;
            for y in y0..y1.min(h) {
                for x in x0..x1.min(w) {
                    sum += u64::from(image.get_pixel(x, y).0[0]);
                }
            }
            let n = u64::from((x1.min(w) - x0) * (y1.min(h) - y0)).max(1);
            *cell = (sum / n) as u8;
        }
        Self(cells)
    }
}

/// Their frames are compared with ours at most this far from the moment
/// the offset puts ours at (samples are about a second apart).
const TONE_ALIGN_MS: i64 = 600;

/// The median tone difference between our informative frames and theirs
/// at the same moments (`offset_ms`: where our 0 is in their timeline).
pub fn tone_difference(ours: &[Sample], theirs: &[Sample], offset_ms: i64, rule: &MatchRule) -> ToneVerdict {
    let voting = |s: &&Sample| s.info >= rule.min_frame_information;
    let theirs: Vec<(i64, Tone)> =
        theirs.iter().filter(voting).filter_map(|s| s.tone.map(|t| (s.pts_ms as i64, t))).collect();
    if theirs.is_empty() || !ours.iter().filter(voting).any(|s| s.tone.is_some()) {
        return ToneVerdict::Unknown;
    }
    let mut differences: Vec<f64> = ours
        .iter()
        .filter(voting)
        .filter_map(|s| {
            let tone = s.tone?;
            let at = s.pts_ms as i64 + offset_ms;
            let (when, near) = theirs.iter().min_by_key(|(t, _)| (t - at).abs())?;
            ((when - at).abs() <= TONE_ALIGN_MS).then(|| tone.difference(near))
        })
        .collect();
    if differences.len() < rule.min_matched_frames.max(1) {
        return ToneVerdict::Unaligned;
    }
    differences.sort_by(f64::total_cmp);
    ToneVerdict::Measured(differences[differences.len() / 2])
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
        let mut lookup = Lookup::default();
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
            let Some(theirs) = repo.find_signature(&candidate.video).await? else { continue };
            let disposal = Disposal::of(
                &signature.samples,
                &signature.audio,
                &theirs.samples,
                &theirs.audio,
                candidate.offset_ms,
                &self.rule,
            );
            if !disposal.allows_match(&self.rule) {
                tracing::info!(
                    near = %candidate.video,
                    distance = candidate.distance,
                    audio = disposal.audio.as_str(),
                    audio_error = disposal.audio.error(),
                    tone_difference = disposal.tone.difference(),
                    tone = disposal.tone.as_str(),
                    "the pictures match a stored video, the sound or the tones do not"
                );
                if disposal.audio.allows_match() {
                    lookup.tone_vetoed += 1;
                } else {
                    lookup.vetoed += 1;
                }
                continue;
            }
            lookup.found = Some(PerceptualMatch {
                video: candidate.video.to_hex(),
                distance: candidate.distance,
                share: candidate.share,
                matched_samples: candidate.matched,
                offset_ms: candidate.offset_ms,
                audio: disposal.audio.as_str().to_owned(),
                audio_error: disposal.audio.error(),
                tone_difference: disposal.tone.difference(),
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

    /// Two ramps that brighten the same way hash alike (the gradient hash
    /// keeps only the steps' directions); their tones tell them apart, and
    /// the tone difference is taken at the moments the offset aligns.
    #[test]
    fn ramps_that_hash_alike_differ_in_tone_and_a_copy_does_not() {
        let ramp = |low: f32, high: f32| {
            image::GrayImage::from_fn(320, 180, |x, _| image::Luma([(low + (high - low) * x as f32 / 320.0) as u8]))
        };
        let (dark, bright) = (ramp(20.0, 120.0), ramp(110.0, 250.0));
        let small = image::imageops::resize(&dark, 160, 90, image::imageops::FilterType::Triangle);
        assert!(FrameHash::of_image(&dark).distance(FrameHash::of_image(&bright)) <= 4, "the hashes agree");
        let (a, b, c) = (Tone::of_grey(&dark), Tone::of_grey(&bright), Tone::of_grey(&small));
        assert!(a.difference(&b) > 50.0, "{}", a.difference(&b));
        assert!(a.difference(&c) < 2.0, "{}", a.difference(&c));
        assert_eq!(Tone::from_hex(&a.to_hex()), Some(a));
        assert_eq!(Tone::from_hex("zz"), None);

        let rule = MatchRule {
            max_frame_distance: 13,
            min_matched_share: 0.6,
            min_matched_frames: 3,
            min_duration_ratio: 0.6,
            min_frame_information: 24,
            max_audio_error: 0.25,
            max_tone_difference: 8.0,
        };
        let samples = |tones: &[Tone], start: u64| -> Vec<Sample> {
            let hash = FrameHash(0);
            tones
                .iter()
                .enumerate()
                .map(|(i, t)| Sample {
                    pts_ms: start + 1000 * i as u64,
                    hash,
                    keyframe: false,
                    info: 64,
                    tone: Some(*t),
                })
                .collect()
        };
        // Theirs: 2 s of `b`, then `a`; ours: `a` only. At offset 2 s ours
        // meets their `a` frames; at offset 0 their `b` ones.
        let theirs = samples(&[b, b, a, a, a, a], 0);
        let ours = samples(&[a, a, a, a], 0);
        assert_eq!(tone_difference(&ours, &theirs, 2000, &rule), ToneVerdict::Measured(0.0));
        assert!(tone_difference(&ours, &theirs, 0, &rule).difference().unwrap() > 8.0);
        // Too few frames at the same moments: not confirmed, a veto.
        let unaligned = tone_difference(&ours, &theirs, 30_000, &rule);
        assert_eq!(unaligned, ToneVerdict::Unaligned);
        assert!(!unaligned.allows_match(&rule));
        // None with a tone (stored before tones were): no say.
        let toneless: Vec<Sample> = ours.iter().map(|s| Sample { tone: None, ..*s }).collect();
        assert_eq!(tone_difference(&toneless, &theirs, 2000, &rule), ToneVerdict::Unknown);
        assert!(tone_difference(&toneless, &theirs, 2000, &rule).allows_match(&rule));
    }
}
