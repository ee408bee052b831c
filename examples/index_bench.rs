//! Near-duplicate lookup with 1,000,000 frame signatures in the index
//! (issue 4's benchmark): p50/p99 of one video query (30 frames, the
//! time-ordered match rule) and of one frame query, memory per signature,
//! and the same frame queries by a linear scan in the same run.
//!
//! `cargo run --release --example index_bench [-- SIGNATURES]`
#![allow(clippy::disallowed_methods)] // a one-shot measurement, not the daemon (clippy.toml)

use std::time::Instant;
use vidcache::dedup::{FrameHash, FrameIndex, MatchRule, VideoFrames};
use vidcache::domain::ContentHash;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let total: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    const FRAMES: usize = 30;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let videos: Vec<Vec<FrameHash>> =
        (0..total / FRAMES).map(|_| (0..FRAMES).map(|_| FrameHash(rng.next())).collect()).collect();
    let before = rss_bytes();
    let started = Instant::now();
    let mut index = FrameIndex::new();
    for (i, hashes) in videos.iter().enumerate() {
        let video = ContentHash::from(blake3::hash(&(i as u64).to_le_bytes()));
        let frames = hashes.iter().enumerate().map(|(i, h)| (i as u64 * 1000, *h)).collect();
        index.insert(&VideoFrames { video, frames, duration_ms: 30_000 });
    }
    let build = started.elapsed().as_secs_f64();
    let per_signature = (rss_bytes().saturating_sub(before)) as f64 / index.len() as f64;
    let rule = MatchRule {
        max_frame_distance: 13,
        min_matched_share: 0.6,
        min_matched_frames: 3,
        min_duration_ratio: 0.6,
        min_frame_information: 24,
        max_audio_error: 0.25,
        max_tone_difference: 6.0,
    };

    // Video queries: half are stored videos with 0-6 bits flipped per frame, half are new.
    let mut video_ms = Vec::new();
    let mut found = 0;
    for q in 0..400 {
        let query: Vec<FrameHash> = if q % 2 == 0 {
            let source = &videos[(rng.next() % videos.len() as u64) as usize];
            source
                .iter()
                .map(|h| {
                    let mut x = h.0;
                    for _ in 0..(rng.next() % 7) {
                        x ^= 1 << (rng.next() % 64);
                    }
                    FrameHash(x)
                })
                .collect()
        } else {
            (0..FRAMES).map(|_| FrameHash(rng.next())).collect()
        };
        let t = Instant::now();
        let query: Vec<(u64, FrameHash)> = query.iter().enumerate().map(|(i, h)| (i as u64 * 1000, *h)).collect();
        let matched = index.best_match(&query, 30_000, &rule);
        video_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        found += usize::from(matched.is_some());
        assert_eq!(matched.is_some(), q % 2 == 0, "planted copies are found, new videos are not");
    }
    // Frame queries, by the index and by a linear scan over the same hashes.
    let all: Vec<u64> = videos.iter().flatten().map(|h| h.0).collect();
    // The same video query by a linear scan: every stored frame against each of ours.
    let mut scan_video_ms = Vec::new();
    for _ in 0..20 {
        let source = &videos[(rng.next() % videos.len() as u64) as usize];
        let t = Instant::now();
        let near: usize = source
            .iter()
            .map(|q| all.iter().filter(|h| (*h ^ q.0).count_ones() <= rule.max_frame_distance).count())
            .sum();
        scan_video_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(near >= FRAMES);
    }
    scan_video_ms.sort_by(f64::total_cmp);
    let (mut frame_ms, mut scan_ms) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let query = FrameHash(all[(rng.next() % all.len() as u64) as usize] ^ (1 << (rng.next() % 64)));
        let t = Instant::now();
        let hits = index.within(query, rule.max_frame_distance).len();
        frame_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let scanned = all.iter().filter(|h| (*h ^ query.0).count_ones() <= rule.max_frame_distance).count();
        scan_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(hits, scanned, "the index finds what a scan finds");
    }
    for v in [&mut video_ms, &mut frame_ms, &mut scan_ms] {
        v.sort_by(f64::total_cmp);
    }
    println!("signatures in the index: {}  (built in {build:.2} s)", index.len());
    println!("memory per signature: {per_signature:.1} bytes (RSS growth / signatures)");
    println!(
        "video query ({FRAMES} frames, distance <= 13): p50 {:.3} ms  p99 {:.3} ms  (found {found}/400, 200 planted)",
        percentile(&video_ms, 0.5),
        percentile(&video_ms, 0.99)
    );
    println!(
        "video query by a linear scan: p50 {:.3} ms | scan/index at p50: {:.0}x",
        percentile(&scan_video_ms, 0.5),
        percentile(&scan_video_ms, 0.5) / percentile(&video_ms, 0.5)
    );
    println!(
        "frame query: index p50 {:.3} ms p99 {:.3} ms | linear scan p50 {:.3} ms p99 {:.3} ms | scan/index at p99: {:.1}x",
        percentile(&frame_ms, 0.5),
        percentile(&frame_ms, 0.99),
        percentile(&scan_ms, 0.5),
        percentile(&scan_ms, 0.99),
        percentile(&scan_ms, 0.99) / percentile(&frame_ms, 0.99)
    );
}
