//! Chooses the perceptual hash by measurement: every video of the generated
//! near-duplicate corpus (`tests/api/corpus.rs`, cached in the temp dir) is
//! sampled at 1 fps and scaled to 32x32 grey by the ffmpeg CLI, then hashed
//! with each candidate algorithm. For each, it prints the median distance of
//! a copy's frames to the nearest frame of its source (same video, lower is
//! better) and of different videos' frames (higher is better).
//!
//! `cargo run --release --example phash_eval -- /tmp/vidcache-corpus-0.1.0-1`
#![allow(clippy::disallowed_methods)] // a one-shot measurement, not the daemon (clippy.toml)

use image_hasher::{HashAlg, HasherConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn frames(video: &Path, work: &Path) -> Vec<image::GrayImage> {
    let out = work.join(video.file_stem().unwrap());
    std::fs::create_dir_all(&out).unwrap();
    if std::fs::read_dir(&out).unwrap().next().is_none() {
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(video)
            .args(["-vf", "fps=1,scale=32:32:flags=area,format=gray"])
            .arg(out.join("%03d.png"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| image::open(p).unwrap().to_luma8()).collect()
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("the corpus directory"));
    let work = std::env::temp_dir().join("vidcache-phash-eval");
    let mut videos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4") && !p.to_string_lossy().contains(".tmp"))
        .collect();
    videos.sort();
    let decoded: Vec<(String, String, Vec<image::GrayImage>)> = videos
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            let (family, variant) = match stem.rsplit_once('-') {
                Some((f, v)) if !f.is_empty() && !["noise"].contains(&v) => (f.to_string(), v.to_string()),
                _ => (stem.clone(), "source".to_string()),
            };
            (family, variant, frames(p, &work))
        })
        .collect();
    let algs: Vec<(&str, HasherConfig<[u8; 8]>)> = vec![
        ("median+dct 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::Median).preproc_dct()),
        ("mean+dct 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::Mean).preproc_dct()),
        ("mean 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::Mean)),
        ("median 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::Median)),
        ("vertgradient 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::VertGradient)),
        ("gradient 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::Gradient)),
        ("blockhash 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::Blockhash)),
        ("doublegradient 8x8", HasherConfig::with_bytes_type().hash_size(8, 8).hash_alg(HashAlg::DoubleGradient)),
    ];
    for (name, config) in algs {
        let hasher = config.to_hasher();
        let hashed: Vec<(String, String, Vec<u64>)> = decoded
            .iter()
            .map(|(f, v, imgs)| {
                let hs = imgs
                    .iter()
                    .map(|i| {
                        let b = hasher.hash_image(i);
                        let mut a = [0u8; 8];
                        a.copy_from_slice(&b.as_bytes()[..8]);
                        u64::from_be_bytes(a)
                    })
                    .collect();
                (f.clone(), v.clone(), hs)
            })
            .collect();
        let nearest = |a: &[u64], b: &[u64]| -> u32 {
            median(a.iter().map(|x| b.iter().map(|y| (x ^ y).count_ones()).min().unwrap_or(64)).collect())
        };
        let mut same: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut other = Vec::new();
        for (f, v, hs) in hashed.iter().filter(|(_, v, _)| v != "source") {
            for (g, _, src) in hashed.iter().filter(|(_, v, _)| v == "source") {
                let d = nearest(hs, src);
                if f == g {
                    if std::env::var("DETAIL").is_ok() {
                        println!("  {name} {f}/{v}: {d}");
                    }
                    same.entry(v.clone()).or_default().push(d);
                } else {
                    other.push(d);
                }
            }
        }
        let worst_same = same.values().flatten().max().copied().unwrap_or(0);
        let best_other = other.iter().min().copied().unwrap_or(64);
        let per: Vec<String> = same.iter().map(|(v, d)| format!("{v} {}", d.iter().max().unwrap())).collect();
        println!(
            "{name:20} same video: worst {worst_same:2} ({}) | different videos: closest {best_other:2}, median {}",
            per.join(", "),
            median(other.clone())
        );
    }
}
