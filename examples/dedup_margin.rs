//! The false-merge margin at scale: analyses every file given (distinct
//! videos, so any match among them is a false one) with the daemon's
//! analysis, then
//!
//! 1. for every pair, the smallest `max_frame_distance` at which their
//!    pictures would match under the default rule (the share and frame
//!    count of the shorter signature, informative frames only). The chain
//!    of matches is not required to run in time order here, so this is a
//!    lower bound of the real rule's distance: the margin it reports is the
//!    pessimistic one;
//! 2. the real index and rule, as the daemon runs them (each video looked up
//!    among the ones before it, then added): picture matches, and how many
//!    of them the audio or the tones veto.
//!
//! `cargo run --release --example dedup_margin -- FILE...` prints one JSON
//! object (the benchmark `tests/bench/analysis_bench.py --only scale` runs
//! it on 1,000 generated videos).
#![allow(clippy::disallowed_methods)] // a one-shot measurement, not the daemon (clippy.toml)

use std::collections::BTreeMap;
use vidcache::dedup::{Disposal, FrameHash, FrameIndex, MatchRule, VideoFrames};
use vidcache::domain::ContentHash;
use vidcache::media::{Analysis, AnalysisSettings, analysis::analyze_file};

struct Video {
    name: String,
    frames: Vec<(u64, FrameHash)>,
    duration_ms: u64,
    analysis: Analysis,
}

/// The smallest frame distance at which `ours` would match `theirs` on
/// pictures (see the module's text), or None if the rule's durations or
/// frame counts rule the pair out.
fn pair_distance(ours: &Video, theirs: &Video, rule: &MatchRule) -> Option<u32> {
    let (short, long) = (ours.duration_ms.min(theirs.duration_ms), ours.duration_ms.max(theirs.duration_ms));
    if short > 0 && (short as f64) < rule.min_duration_ratio * long as f64 {
        return None;
    }
    let shorter = ours.frames.len().min(theirs.frames.len());
    if ours.frames.len() < rule.min_matched_frames || theirs.frames.len() < rule.min_matched_frames {
        return None;
    }
    let needed = ((rule.min_matched_share * shorter as f64).ceil() as usize).max(rule.min_matched_frames.min(shorter));
    let mut nearest: Vec<u32> = ours
        .frames
        .iter()
        .map(|(_, a)| theirs.frames.iter().map(|(_, b)| a.distance(*b)).min().unwrap_or(64))
        .collect();
    nearest.sort_unstable();
    nearest.get(needed.checked_sub(1)?).copied()
}

fn main() {
    vidcache::media::init_ffmpeg();
    let files: Vec<String> = std::env::args().skip(1).collect();
    let settings = AnalysisSettings::default();
    // The daemon's defaults, read where the daemon reads them.
    let rule = vidcache::config::Settings::defaults_only().expect("the built-in defaults parse").dedup.rule();
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let analysed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..std::thread::available_parallelism().map_or(2, |n| n.get()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    match analyze_file(std::path::Path::new(file), &settings) {
                        Ok(analysis) => analysed.lock().unwrap().push((i, analysis)),
                        Err(e) => eprintln!("{file}: {e}"),
                    }
                }
            });
        }
    });
    let mut analysed = analysed.into_inner().unwrap();
    analysed.sort_by_key(|(i, _)| *i);
    let analysis_s = started.elapsed().as_secs_f64();
    let videos: Vec<Video> = analysed
        .into_iter()
        .map(|(i, analysis)| Video {
            name: std::path::Path::new(&files[i]).file_stem().unwrap().to_string_lossy().into_owned(),
            frames: analysis
                .samples
                .iter()
                .filter(|s| s.info >= rule.min_frame_information)
                .map(|s| (s.pts_ms, s.hash))
                .collect(),
            duration_ms: analysis.media.duration_s.map_or(0, |d| (d * 1000.0) as u64),
            analysis,
        })
        .collect();
    let voting = videos.iter().filter(|v| v.frames.len() >= rule.min_matched_frames).count();

    // 1. Every pair, both directions.
    let mut closest: Vec<(u32, usize, usize)> = Vec::new();
    let mut histogram: BTreeMap<u32, usize> = BTreeMap::new();
    let mut comparable = 0usize;
    for a in 0..videos.len() {
        for b in a + 1..videos.len() {
            let d = [pair_distance(&videos[a], &videos[b], &rule), pair_distance(&videos[b], &videos[a], &rule)]
                .into_iter()
                .flatten()
                .min();
            if let Some(d) = d {
                comparable += 1;
                *histogram.entry(d).or_default() += 1;
                closest.push((d, a, b));
            }
        }
    }
    closest.sort_unstable();
    let closest_pairs: Vec<serde_json::Value> = closest
        .iter()
        .take(10)
        .map(|&(d, a, b)| {
            let verdict = videos[a].analysis.audio.compare(&videos[b].analysis.audio, 0, rule.max_audio_error);
            serde_json::json!({
                "distance": d,
                "a": videos[a].name,
                "b": videos[b].name,
                "audio": verdict.as_str(),
            })
        })
        .collect();

    // 2. The index and the rule, as the daemon uses them.
    let mut index = FrameIndex::new();
    let (mut picture_matches, mut vetoed, mut tone_vetoed, mut merges) = (0usize, 0usize, 0usize, Vec::new());
    let mut tones = Vec::new();
    for video in &videos {
        let hash = ContentHash::from(blake3::hash(video.name.as_bytes()));
        if video.frames.len() >= rule.min_matched_frames {
            for candidate in index.matches(&video.frames, video.duration_ms, &rule) {
                picture_matches += 1;
                let stored = videos
                    .iter()
                    .find(|v| ContentHash::from(blake3::hash(v.name.as_bytes())) == candidate.video)
                    .expect("indexed");
                let disposal = Disposal::of(
                    &video.analysis.samples,
                    &video.analysis.audio,
                    &stored.analysis.samples,
                    &stored.analysis.audio,
                    candidate.offset_ms,
                    &rule,
                );
                tones.push(serde_json::json!({
                    "a": video.name, "b": stored.name, "distance": candidate.distance,
                    "audio": disposal.audio.as_str(), "tone": disposal.tone.difference(), "tones": disposal.tone.as_str(),
                }));
                if disposal.allows_match(&rule) {
                    merges.push(format!("{} -> {} (distance {})", video.name, stored.name, candidate.distance));
                    break;
                }
                if disposal.audio.allows_match() {
                    tone_vetoed += 1;
                } else {
                    vetoed += 1;
                }
            }
        }
        index.insert(&VideoFrames { video: hash, frames: video.frames.clone(), duration_ms: video.duration_ms });
    }

    let below: usize = histogram.range(..=rule.max_frame_distance).map(|(_, n)| n).sum();
    let report = serde_json::json!({
        "videos": videos.len(),
        "videos with enough informative frames to be matched": voting,
        "pairs the duration rule lets be compared": comparable,
        "threshold (max_frame_distance)": rule.max_frame_distance,
        "closest pair distance": closest.first().map(|c| c.0),
        "pairs within the threshold (pictures, order not required)": below,
        "pair distance histogram (distance: pairs), lowest 12": histogram.iter().take(12).map(|(d, n)| format!("{d}: {n}")).collect::<Vec<_>>(),
        "closest pairs": closest_pairs,
        "index: picture matches": picture_matches,
        "index: vetoed by audio": vetoed,
        "index: vetoed by tone": tone_vetoed,
        "index: picture matches with their audio and tone": tones,
        "index: false merges": merges,
        "analysis seconds": (analysis_s * 10.0).round() / 10.0,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
