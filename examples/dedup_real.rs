//! Recall and false merges of the near-duplicate rule on a corpus laid out
//! as `{family}__{transform}.mp4` (`tests/bench/real_corpus.py` writes the
//! real-footage one): every `__source` file is stored, in turn, after being
//! looked up among the sources before it (any match there is a false
//! merge); then every other file is looked up among all sources, as the
//! daemon's commit does (pictures propose, sound and tones dispose), and
//! must find its own family's source.
//!
//! For every picture match it also prints the tone statistics the rule
//! could use at the matched offset (`TONES=1`), so that a change to the tone
//! check is judged on true copies and distinct pairs together:
//! `abs` (today's: mean absolute cell difference), `abs12` (the same over
//! the 12 closest of 16 cells: a box over a corner or a subtitle band is
//! ignored), `shape12` (the residual of the best gain-and-offset fit of the
//! cells, over the 12 closest: brightness and contrast changes removed),
//! and the fit's gain and offset.
//!
//! `cargo run --release --example dedup_real -- DIR...`
#![allow(clippy::disallowed_methods)] // a one-shot measurement, not the daemon (clippy.toml)

use std::collections::BTreeMap;
use vidcache::dedup::{Disposal, FrameIndex, MatchRule, Tone, VideoFrames};
use vidcache::domain::ContentHash;
use vidcache::media::{Analysis, AnalysisSettings, Sample, analysis::analyze_file};

struct Video {
    path: std::path::PathBuf,
    family: String,
    transform: String,
    hash: ContentHash,
    analysis: Analysis,
}

impl Video {
    fn frames(&self, rule: &MatchRule) -> VideoFrames {
        let frames = self
            .analysis
            .samples
            .iter()
            .filter(|s| s.info >= rule.min_frame_information)
            .map(|s| (s.pts_ms, s.hash))
            .collect();
        VideoFrames { video: self.hash, frames, duration_ms: self.duration_ms() }
    }

    fn duration_ms(&self) -> u64 {
        self.analysis.media.duration_s.map_or(0, |d| (d * 1000.0) as u64)
    }
}

/// What one lookup decided.
#[derive(Debug)]
enum Verdict {
    Found { family: String, distance: u32, audio: &'static str, tone: Option<f64> },
    Vetoed { family: String, distance: u32, audio: &'static str, tone: String },
    NoPictureMatch,
}

fn lookup(video: &Video, index: &FrameIndex, stored: &[&Video], rule: &MatchRule, tones: bool) -> Verdict {
    let ours = video.frames(rule).frames;
    if ours.len() < rule.min_matched_frames {
        return Verdict::NoPictureMatch;
    }
    let mut vetoed = None;
    for candidate in index.matches(&ours, video.duration_ms(), rule) {
        let Some(theirs) = stored.iter().find(|v| v.hash == candidate.video) else { continue };
        let (a, b) = (&video.analysis, &theirs.analysis);
        let disposal = Disposal::of(&a.samples, &a.audio, &b.samples, &b.audio, candidate.offset_ms, rule);
        let stats = tone_stats(&a.samples, &b.samples, candidate.offset_ms, rule);
        // `TONE_RULE=abs12`: the candidate rule, the 12 closest cells.
        let allowed = match std::env::var("TONE_RULE").as_deref() {
            Ok("abs12") => {
                disposal.audio.allows_match()
                    && match (&disposal.tone, stats) {
                        (vidcache::dedup::ToneVerdict::Measured(_), Some((m, _))) => m[1] <= rule.max_tone_difference,
                        (tone, _) => tone.allows_match(rule),
                    }
            }
            _ => disposal.allows_match(rule),
        };
        if tones {
            let stats = describe(stats);
            println!(
                "    {:>10}/{:<10} ~ {:<10} d {:2} share {:.2} matched {:2} of {:2}/{:2} frames, {:5}/{:5} ms audio {:9} {}",
                video.family,
                video.transform,
                theirs.family,
                candidate.distance,
                candidate.share,
                candidate.matched,
                video.frames(rule).frames.len(),
                theirs.frames(rule).frames.len(),
                video.duration_ms(),
                theirs.duration_ms(),
                disposal.audio.as_str(),
                stats
            );
        }
        if allowed {
            return Verdict::Found {
                family: theirs.family.clone(),
                distance: candidate.distance,
                audio: disposal.audio.as_str(),
                tone: disposal.tone.difference(),
            };
        }
        vetoed.get_or_insert(Verdict::Vetoed {
            family: theirs.family.clone(),
            distance: candidate.distance,
            audio: disposal.audio.as_str(),
            tone: format!(
                "{} {:?}",
                disposal.tone.as_str(),
                disposal.tone.difference().map(|t| (t * 10.0).round() / 10.0)
            ),
        });
    }
    vetoed.unwrap_or(Verdict::NoPictureMatch)
}

/// The cells of a tone, as numbers.
fn cells(t: &Tone) -> [f64; 16] {
    t.0.map(f64::from)
}

/// Mean of the `keep` smallest values.
fn mean_smallest(mut v: Vec<f64>, keep: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v.iter().take(keep).sum::<f64>() / keep as f64
}

/// Gain and offset that best map `x` onto `y` (least squares over the
/// cells `use_cell` allows), and the absolute residuals of every cell.
fn fit(x: &[f64; 16], y: &[f64; 16], use_cell: &[bool; 16]) -> (f64, f64, Vec<f64>) {
    let n = use_cell.iter().filter(|u| **u).count() as f64;
    let mean = |v: &[f64; 16]| v.iter().zip(use_cell).filter(|(_, u)| **u).map(|(a, _)| a).sum::<f64>() / n;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for i in 0..16 {
        if use_cell[i] {
            sxy += (x[i] - mx) * (y[i] - my);
            sxx += (x[i] - mx) * (x[i] - mx);
        }
    }
    let gain = if sxx < 1.0 { 1.0 } else { sxy / sxx };
    let offset = my - gain * mx;
    let residuals = (0..16).map(|i| (gain * x[i] + offset - y[i]).abs()).collect();
    (gain, offset, residuals)
}

/// The medians, over the frames at the same moments, of the statistics
/// the module's text names.
fn tone_stats(ours: &[Sample], theirs: &[Sample], offset_ms: i64, rule: &MatchRule) -> Option<([f64; 5], usize)> {
    let voting = |s: &&Sample| s.info >= rule.min_frame_information;
    let theirs: Vec<(i64, Tone)> =
        theirs.iter().filter(voting).filter_map(|s| s.tone.map(|t| (s.pts_ms as i64, t))).collect();
    let mut rows: Vec<[f64; 5]> = Vec::new();
    for s in ours.iter().filter(voting) {
        let Some(tone) = s.tone else { continue };
        let at = s.pts_ms as i64 + offset_ms;
        let Some((when, near)) = theirs.iter().min_by_key(|(t, _)| (t - at).abs()) else { continue };
        if (when - at).abs() > 600 {
            continue;
        }
        let (x, y) = (cells(&tone), cells(near));
        let abs: Vec<f64> = (0..16).map(|i| (x[i] - y[i]).abs()).collect();
        let (_, _, first) = fit(&x, &y, &[true; 16]);
        // Refit without the four cells the first fit explains worst.
        let mut worst: Vec<usize> = (0..16).collect();
        worst.sort_by(|a, b| first[*b].total_cmp(&first[*a]));
        let mut use_cell = [true; 16];
        for i in worst.iter().take(4) {
            use_cell[*i] = false;
        }
        let (gain, offset, residuals) = fit(&x, &y, &use_cell);
        rows.push([abs.iter().sum::<f64>() / 16.0, mean_smallest(abs, 12), mean_smallest(residuals, 12), gain, offset]);
    }
    if rows.is_empty() {
        return None;
    }
    let median = |k: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Some(([median(0), median(1), median(2), median(3), median(4)], rows.len()))
}

fn describe(stats: Option<([f64; 5], usize)>) -> String {
    match stats {
        None => "tones: none aligned".into(),
        Some((m, n)) => format!(
            "abs {:5.1} abs12 {:5.1} shape12 {:5.1} gain {:4.2} offset {:6.1} ({n} frames)",
            m[0], m[1], m[2], m[3], m[4]
        ),
    }
}

fn main() {
    vidcache::media::init_ffmpeg();
    let tones = std::env::var("TONES").is_ok_and(|v| v == "1");
    let settings = AnalysisSettings::default();
    let rule = vidcache::config::Settings::defaults_only().expect("the defaults load").dedup.rule();
    let mut videos = Vec::new();
    for dir in std::env::args().skip(1) {
        let mut paths: Vec<_> = std::fs::read_dir(&dir).expect("a directory").flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let Some((family, transform)) = stem.split_once("__") else { continue };
            let Ok(analysis) = analyze_file(&path, &settings) else {
                eprintln!("{} does not analyse", path.display());
                continue;
            };
            let hash = ContentHash::from(blake3::hash(path.to_string_lossy().as_bytes()));
            videos.push(Video {
                family: family.into(),
                transform: transform.into(),
                hash,
                analysis,
                path: path.clone(),
            });
        }
    }
    // `DUMP=FILE`: every file's informative-or-not samples as JSON lines,
    // for `tests/bench/descriptor_eval.py` (gradient hash against PDQ).
    if let Ok(path) = std::env::var("DUMP") {
        let mut out = String::new();
        for v in &videos {
            let samples: Vec<serde_json::Value> =
                v.analysis.samples.iter().map(|s| serde_json::json!([s.pts_ms, s.hash.to_hex(), s.info])).collect();
            let line = serde_json::json!({"path": v.path, "family": v.family, "transform": v.transform,
                "duration_ms": v.duration_ms(), "samples": samples});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        std::fs::write(path, out).expect("the dump is written");
    }
    // Sources, one after the other: a match among them is a false merge.
    let mut index = FrameIndex::new();
    let mut stored: Vec<&Video> = Vec::new();
    let mut false_merges = Vec::new();
    for video in videos.iter().filter(|v| v.transform == "source") {
        if let Verdict::Found { family, distance, .. } = lookup(video, &index, &stored, &rule, tones) {
            false_merges.push(format!("{} taken for {family} at {distance}", video.family));
        }
        index.insert(&video.frames(&rule));
        stored.push(video);
    }
    // Copies, against every source.
    let mut classes: BTreeMap<String, (u32, u32, Vec<String>)> = BTreeMap::new();
    let mut wrong = Vec::new();
    for video in videos.iter().filter(|v| v.transform != "source") {
        let verdict = lookup(video, &index, &stored, &rule, tones);
        let class = classes.entry(video.transform.clone()).or_default();
        class.1 += 1;
        match &verdict {
            Verdict::Found { family, .. } if *family == video.family => class.0 += 1,
            Verdict::Found { family, distance, .. } => {
                wrong.push(format!("{}/{} taken for {family} at {distance}", video.family, video.transform));
                class.2.push(format!("{}: wrong source {family}", video.family));
            }
            Verdict::Vetoed { family, distance, audio, tone } => class
                .2
                .push(format!("{}: vetoed against {family} at {distance} (audio {audio}, tone {tone})", video.family)),
            Verdict::NoPictureMatch => class.2.push(format!("{}: no picture match", video.family)),
        }
        if let Verdict::Found { audio, tone, distance, .. } = &verdict
            && tones
        {
            println!("      found at {distance}, audio {audio}, tone {tone:?}");
        }
    }
    let (found, total) = classes.values().fold((0, 0), |(f, t), c| (f + c.0, t + c.1));
    println!("transform       found");
    for (name, (f, t, misses)) in &classes {
        println!("{name:15} {f}/{t}  {}", misses.join("; "));
    }
    let required: Vec<_> = classes.iter().filter(|(n, _)| n.as_str() != "mirror").collect();
    let (rf, rt) = required.iter().fold((0, 0), |(f, t), (_, c)| (f + c.0, t + c.1));
    println!(
        "recall {found}/{total} ({:.3}); without mirrored copies {rf}/{rt} ({:.3}); wrong-source matches {}; false merges among sources {}",
        f64::from(found) / f64::from(total.max(1)),
        f64::from(rf) / f64::from(rt.max(1)),
        wrong.len(),
        false_merges.len()
    );
    for line in wrong.iter().chain(&false_merges) {
        println!("  {line}");
    }
}
