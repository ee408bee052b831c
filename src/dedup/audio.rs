//! Audio fingerprints: what a video's soundtrack is, so that two videos with
//! the same pictures and different sound (podcast episodes over one cover
//! image, a slide deck narrated twice) are never taken for one another.
//!
//! The analysis makes a Chromaprint fingerprint (`rusty-chromaprint`,
//! `preset_test2`, the configuration AcoustID uses: 11,025 Hz mono, one
//! 32-bit item every 0.124 s) in the same pass that samples frames. Two
//! soundtracks agree when, aligned at the time offset their frames matched
//! at (give or take `ALIGN_SLACK_MS`), their items differ in few bits: a
//! re-encode (AAC to Opus, another bitrate, sample rate or channel layout)
//! keeps the bit error rate under 0.2, other audio sits near 0.5.

use base64::Engine;

/// What a video's analysis knows of its sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioPrint {
    /// No audio stream.
    Absent,
    /// An audio stream that is silent throughout (quieter than
    /// `SILENCE_DBFS`): counts as no audio.
    Silent,
    /// Not known: the analysis did not read the audio (a partial analysis,
    /// or a signature stored before audio was fingerprinted). Never agrees
    /// and never lets pictures decide alone.
    Unknown,
    /// The fingerprint of audible audio.
    Print(Vec<u32>),
}

/// RMS level under which a whole soundtrack is silence, in dB full scale.
pub const SILENCE_DBFS: f64 = -50.0;
/// Seconds of audio one fingerprint item stands for (`preset_test2`:
/// 4,096-sample frames overlapping by two thirds at 11,025 Hz).
pub const ITEM_MS: f64 = 4096.0 / 3.0 / 11025.0 * 1000.0;
/// How far from the frames' offset the best audio alignment is looked for.
const ALIGN_SLACK_MS: f64 = 1500.0;
/// Items that must overlap for a comparison to mean anything (about 2.5 s).
const MIN_OVERLAP_ITEMS: usize = 20;
/// A print with fewer different items than this, or whose items change by
/// less than `MIN_CHANGE` of their bits from one to the next, is a steady
/// sound (a test tone, a hum): Chromaprint gives every steady tone nearly
/// the same print (440 Hz and 660 Hz agree at 0.06, measured), so it tells
/// nothing about which sound it is.
const MIN_DISTINCT_ITEMS: usize = 4;
const MIN_CHANGE: f64 = 0.02;
/// Two prints agree only if they agree clearly better than each agrees
/// with itself 1 to 3 s later (the median bit error rate over those lags):
/// at most this share of it. Broadband noise (rain, hiss, `anoisesrc`)
/// changes its items at random but keeps their distribution, so two
/// different noises agree about as well as a noise agrees with itself later
/// on. Measured (`analysis::tests`): two white noises 0.163 against a self
/// error of 0.166 (0.98 of it), white against pink 1.46; the same white
/// noise re-encoded to Opus at 48 kb/s 0.101 (0.61); a melody re-encoded
/// 0.003 against 0.23 (0.01). Such a near-agreement says nothing of which
/// sound it is, so it abstains.
const MAX_SHARE_OF_SELF_ERROR: f64 = 0.75;
const SELF_LAGS_ITEMS: std::ops::RangeInclusive<usize> = 8..=24;

/// How two videos' soundtracks compare. Only a clear disagreement vetoes a
/// match the pictures proposed; a soundtrack that cannot tell one sound
/// from another abstains, and the pictures decide alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AudioVerdict {
    /// Both have audible audio, and it is the same (bit error rate).
    Agree(f64),
    /// Both have audible audio, and it is not the same: a veto.
    Disagree(f64),
    /// At least one side has no audible audio: the pictures decide alone.
    NoAudio,
    /// Both have audible audio, and it says nothing either way: a steady
    /// tone or hum (every steady tone prints alike), broadband noise (two
    /// noises agree as well as one agrees with itself later on), or too
    /// little of it overlaps at the pictures' offset (a short clip, a
    /// trim). The pictures decide alone (issue 27: treating this as a veto
    /// lost re-encodes of videos with a test tone, the seed client's own
    /// example).
    Abstain,
    /// A side's audio was not read (a partial analysis, or a signature
    /// stored before audio was fingerprinted): it might disagree, so it
    /// vetoes.
    Unknown,
}

impl AudioVerdict {
    /// May the videos be matched, as far as the sound goes?
    pub fn allows_match(self) -> bool {
        match self {
            Self::Agree(_) | Self::NoAudio | Self::Abstain => true,
            Self::Disagree(_) | Self::Unknown => false,
        }
    }

    /// For answers and meta: `agree`, `disagree`, `no-audio`, `abstained`,
    /// `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agree(_) => "agree",
            Self::Disagree(_) => "disagree",
            Self::NoAudio => "no-audio",
            Self::Abstain => "abstained",
            Self::Unknown => "unknown",
        }
    }

    pub fn error(self) -> Option<f64> {
        match self {
            Self::Agree(e) | Self::Disagree(e) => Some(e),
            _ => None,
        }
    }
}

impl AudioPrint {
    /// Compares `self` (the new video) with `other` (a stored one), whose
    /// frames matched ours `offset_ms` later in its timeline. `max_error`:
    /// the highest bit error rate that is still the same audio.
    pub fn compare(&self, other: &AudioPrint, offset_ms: i64, max_error: f64) -> AudioVerdict {
        match (self, other) {
            (Self::Unknown, _) | (_, Self::Unknown) => AudioVerdict::Unknown,
            (Self::Absent | Self::Silent, _) | (_, Self::Absent | Self::Silent) => AudioVerdict::NoAudio,
            (Self::Print(ours), Self::Print(theirs)) if steady(ours) || steady(theirs) => AudioVerdict::Abstain,
            (Self::Print(ours), Self::Print(theirs)) => match best_error(ours, theirs, offset_ms as f64) {
                None => AudioVerdict::Abstain,
                Some(e) if e <= max_error && !distinctive(e, ours, theirs) => AudioVerdict::Abstain,
                Some(e) if e <= max_error => AudioVerdict::Agree(e),
                Some(e) => AudioVerdict::Disagree(e),
            },
        }
    }

    /// Storage form: `absent`, `silent`, `unknown`, or `p:` and the items
    /// as little-endian bytes in base64.
    pub fn to_stored(&self) -> String {
        match self {
            Self::Absent => "absent".into(),
            Self::Silent => "silent".into(),
            Self::Unknown => "unknown".into(),
            Self::Print(items) => {
                let bytes: Vec<u8> = items.iter().flat_map(|i| i.to_le_bytes()).collect();
                format!("p:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
            }
        }
    }

    /// Reads the storage form; anything else (a row from before audio was
    /// fingerprinted) is `Unknown`.
    pub fn from_stored(stored: Option<&str>) -> Self {
        match stored {
            Some("absent") => Self::Absent,
            Some("silent") => Self::Silent,
            Some(s) if s.starts_with("p:") => match base64::engine::general_purpose::STANDARD_NO_PAD.decode(&s[2..]) {
                Ok(bytes) if bytes.len() % 4 == 0 => {
                    Self::Print(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                }
                _ => Self::Unknown,
            },
            _ => Self::Unknown,
        }
    }

    /// For meta: `absent`, `silent`, `unknown` or `fingerprinted`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Silent => "silent",
            Self::Unknown => "unknown",
            Self::Print(_) => "fingerprinted",
        }
    }
}

/// A steady sound's print: its items hardly change (a tone, a hum).
fn steady(items: &[u32]) -> bool {
    let distinct: std::collections::HashSet<u32> = items.iter().copied().collect();
    let changed: u64 = items.windows(2).map(|w| u64::from((w[0] ^ w[1]).count_ones())).sum();
    let change = changed as f64 / (items.len().max(2) - 1) as f64 / 32.0;
    distinct.len() < MIN_DISTINCT_ITEMS || change < MIN_CHANGE
}

/// Whether agreeing at bit error rate `error` tells the two prints apart
/// from any other sound like them (`MAX_SHARE_OF_SELF_ERROR`).
fn distinctive(error: f64, ours: &[u32], theirs: &[u32]) -> bool {
    match (self_error(ours), self_error(theirs)) {
        (Some(a), Some(b)) => error <= MAX_SHARE_OF_SELF_ERROR * a.min(b),
        // Too short to measure: the overlap rule decides.
        _ => true,
    }
}

/// The median, over lags of 1 to 3 s, of the bit error rate between the
/// print and itself that much later; `None` when the print is too short.
pub fn self_error(items: &[u32]) -> Option<f64> {
    let mut errors: Vec<f64> = SELF_LAGS_ITEMS
        .filter(|&lag| items.len() >= lag + MIN_OVERLAP_ITEMS)
        .map(|lag| {
            let bits: u64 = items.iter().zip(&items[lag..]).map(|(a, b)| u64::from((a ^ b).count_ones())).sum();
            bits as f64 / ((items.len() - lag) as f64 * 32.0)
        })
        .collect();
    if errors.len() < SELF_LAGS_ITEMS.count() / 2 {
        return None;
    }
    errors.sort_by(f64::total_cmp);
    Some(errors[errors.len() / 2])
}

/// The lowest bit error rate of `ours` against `theirs` over the shifts
/// within `ALIGN_SLACK_MS` of `offset_ms`; `None` when no shift overlaps
/// enough. Item `i` of ours is at the same moment as item `i + shift` of
/// theirs.
fn best_error(ours: &[u32], theirs: &[u32], offset_ms: f64) -> Option<f64> {
    let centre = (offset_ms / ITEM_MS).round() as i64;
    let slack = (ALIGN_SLACK_MS / ITEM_MS).ceil() as i64;
    let needed = MIN_OVERLAP_ITEMS.max(ours.len().min(theirs.len()) / 2);
    let mut best: Option<f64> = None;
    for shift in centre - slack..=centre + slack {
        let (mut bits, mut items) = (0u64, 0usize);
        for (i, a) in ours.iter().enumerate() {
            let j = i as i64 + shift;
            if j < 0 {
                continue;
            }
            let Some(b) = theirs.get(j as usize) else { break };
            bits += u64::from((a ^ b).count_ones());
            items += 1;
        }
        if items >= needed {
            let error = bits as f64 / (items as f64 * 32.0);
            best = Some(best.map_or(error, |b: f64| b.min(error)));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(seed: u32, n: usize) -> Vec<u32> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            })
            .collect()
    }

    #[test]
    fn the_same_items_shifted_agree_and_others_do_not() {
        let a = AudioPrint::Print(items(3, 200));
        // Theirs starts 16 items (about 2 s) earlier: ours is a trimmed copy.
        let mut longer = items(99, 16);
        longer.extend(items(3, 200));
        let b = AudioPrint::Print(longer);
        let offset = (16.0 * ITEM_MS) as i64;
        assert!(matches!(a.compare(&b, offset, 0.25), AudioVerdict::Agree(e) if e < 0.01));
        let c = AudioPrint::Print(items(4, 200));
        assert!(matches!(a.compare(&c, 0, 0.25), AudioVerdict::Disagree(e) if e > 0.4));
        assert!(!a.compare(&c, 0, 0.25).allows_match(), "a clear disagreement vetoes");
        // Silence, no audio: the pictures decide. Unknown: nothing does.
        assert_eq!(a.compare(&AudioPrint::Silent, 0, 0.25), AudioVerdict::NoAudio);
        assert_eq!(AudioPrint::Absent.compare(&a, 0, 0.25), AudioVerdict::NoAudio);
        assert_eq!(a.compare(&AudioPrint::Unknown, 0, 0.25), AudioVerdict::Unknown);
        assert!(!a.compare(&AudioPrint::Unknown, 0, 0.25).allows_match());
        // Too little overlap to tell: abstains, the pictures decide.
        assert_eq!(a.compare(&AudioPrint::Print(items(3, 5)), 0, 0.25), AudioVerdict::Abstain);
        // A steady tone's print says nothing about which tone it is, even
        // against a soundtrack that changes: abstains, never vetoes.
        let tone = AudioPrint::Print(vec![0x5a5a_0f0f; 80]);
        assert_eq!(tone.compare(&tone, 0, 0.25), AudioVerdict::Abstain);
        assert_eq!(tone.compare(&a, 0, 0.25), AudioVerdict::Abstain);
        assert!(tone.compare(&a, 0, 0.25).allows_match());
    }

    #[test]
    fn the_stored_form_reads_back() {
        for print in [AudioPrint::Absent, AudioPrint::Silent, AudioPrint::Unknown, AudioPrint::Print(items(5, 33))] {
            assert_eq!(AudioPrint::from_stored(Some(&print.to_stored())), print);
        }
        assert_eq!(AudioPrint::from_stored(None), AudioPrint::Unknown);
        assert_eq!(AudioPrint::from_stored(Some("p:!!!")), AudioPrint::Unknown);
    }
}
