//! Prints what the near-duplicate analysis sees in each file: the
//! information score of every sample, the audio, and for every pair the
//! picture match, the audio verdict and the tone difference. Used to choose
//! `dedup.min_frame_information`, `dedup.max_audio_error` and
//! `dedup.max_tone_difference`:
//! `cargo run --release --example dedup_eval -- FILE...`
#![allow(clippy::disallowed_methods)] // a one-shot measurement, not the daemon (clippy.toml)

use vidcache::dedup::{Disposal, FrameIndex, MatchRule, VideoFrames};
use vidcache::domain::ContentHash;
use vidcache::media::{AnalysisSettings, analysis::analyze_file};

fn main() {
    vidcache::media::init_ffmpeg();
    let files: Vec<String> = std::env::args().skip(1).collect();
    let settings = AnalysisSettings::default();
    let rule = MatchRule {
        max_frame_distance: 13,
        min_matched_share: 0.6,
        min_matched_frames: 3,
        min_duration_ratio: 0.6,
        min_frame_information: std::env::var("MIN_INFO").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        max_audio_error: 0.25,
        max_tone_difference: 6.0,
    };
    let mut all = Vec::new();
    for file in &files {
        let analysis = analyze_file(std::path::Path::new(file), &settings).expect("analysable");
        let mut infos: Vec<u8> = analysis.samples.iter().map(|s| s.info).collect();
        infos.sort_unstable();
        let name = std::path::Path::new(file).file_stem().unwrap().to_string_lossy().into_owned();
        println!(
            "{name:28} samples {:3} info min {:2} median {:2} max {:2}  audio {}",
            infos.len(),
            infos.first().unwrap_or(&0),
            infos.get(infos.len() / 2).unwrap_or(&0),
            infos.last().unwrap_or(&0),
            analysis.audio.kind()
        );
        if let vidcache::dedup::AudioPrint::Print(items) = &analysis.audio {
            let changes: u32 = items.windows(2).map(|w| (w[0] ^ w[1]).count_ones()).sum();
            let distinct: std::collections::HashSet<u32> = items.iter().copied().collect();
            println!(
                "    audio items {} change per item {:.3} distinct {}",
                items.len(),
                f64::from(changes) / (items.len().max(2) - 1) as f64 / 32.0,
                distinct.len()
            );
        }
        all.push((name, analysis));
    }
    for (i, (a, x)) in all.iter().enumerate() {
        for (b, y) in all.iter().skip(i + 1) {
            let mut index = FrameIndex::new();
            let frames = |s: &vidcache::media::Analysis| -> Vec<(u64, vidcache::dedup::FrameHash)> {
                s.samples.iter().filter(|s| s.info >= rule.min_frame_information).map(|s| (s.pts_ms, s.hash)).collect()
            };
            let video = ContentHash::from(blake3::hash(b"stored"));
            let duration = |s: &vidcache::media::Analysis| s.media.duration_s.map_or(0, |d| (d * 1000.0) as u64);
            index.insert(&VideoFrames { video, frames: frames(y), duration_ms: duration(y) });
            let ours = frames(x);
            let matched =
                if ours.len() < rule.min_matched_frames { None } else { index.best_match(&ours, duration(x), &rule) };
            let offset = matched.as_ref().map_or(0, |m| m.offset_ms);
            let disposal = Disposal::of(&x.samples, &x.audio, &y.samples, &y.audio, offset, &rule);
            let audio = disposal.audio;
            if matched.is_some() || audio.error().is_some_and(|e| e < 0.35) {
                println!(
                    "{a:28} ~ {b:28} pictures {:?} audio {} {:?} tone {:?}",
                    matched.map(|m| (m.distance, (m.share * 100.0) as u32, m.matched, m.offset_ms)),
                    audio.as_str(),
                    audio.error().map(|e| (e * 1000.0).round() / 1000.0),
                    disposal.tone.difference().map(|t| (t * 10.0).round() / 10.0)
                );
            }
        }
    }
}
