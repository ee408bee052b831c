//! The near-duplicate corpus, generated with the ffmpeg CLI: visually
//! different lavfi sources, and transformed copies of each (re-encoded at
//! CRF 38, scaled to 240p, cropped to the central 95%, a translucent logo box
//! in a corner, trimmed by 2 s, at 15 fps instead of 25). `life` and
//! `cellauto` are drawn coarse (160x90 cells scaled up), since at full
//! resolution they are noise that no frame hash can follow. Made once per run and cached in the temp dir;
//! `tests/bench/dedup_bench.py` builds the same corpus for videohash and vpdq.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// (name, lavfi source graph). 10 s each at 640x360, 25 fps.
pub const SOURCES: &[(&str, &str)] = &[
    ("testsrc2", "testsrc2=size=640x360:rate=25"),
    ("mandelbrot", "mandelbrot=size=640x360:rate=25"),
    ("life", "life=size=160x90:rate=25:mold=10:ratio=0.3:seed=7:life_color=#ffcc00:death_color=#102030,scale=640:360:flags=neighbor"),
    ("cellauto", "cellauto=size=160x90:rate=25:rule=110:seed=3,negate,scale=640:360:flags=neighbor"),
    ("gradients", "gradients=size=640x360:rate=25:speed=0.01:n=5:seed=11"),
    ("bars-noise", "smptehdbars=size=640x360:rate=25,noise=alls=30:allf=t:all_seed=5,hue=H=0.6*t"),
];

/// (name, ffmpeg output options) of each transform.
pub const TRANSFORMS: &[(&str, &str)] = &[
    ("crf38", "-c:v libx264 -preset veryfast -crf 38"),
    ("240p", "-vf scale=-2:240 -c:v libx264 -preset veryfast -crf 23"),
    ("crop5", "-vf crop=iw*0.95:ih*0.95 -c:v libx264 -preset veryfast -crf 23"),
    ("watermark", "-vf drawbox=x=iw*0.84:y=ih*0.04:w=iw*0.12:h=ih*0.08:color=white@0.6:t=fill -c:v libx264 -preset veryfast -crf 23"),
    ("trim2s", "-ss 2 -c:v libx264 -preset veryfast -crf 23"),
    ("15fps", "-r 15 -c:v libx264 -preset veryfast -crf 23"),
];

static LOCK: Mutex<()> = Mutex::new(());

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("vidcache-corpus-{}-4", env!("CARGO_PKG_VERSION")))
}

fn ffmpeg(args: &str, input: Option<&PathBuf>, output: &PathBuf) {
    let tmp = output.with_extension("tmp.mp4");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"]);
    if let Some(input) = input {
        cmd.arg("-i").arg(input);
    }
    let status = cmd.args(args.split_whitespace()).args(["-pix_fmt", "yuv420p"]).arg(&tmp).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg {args}");
    std::fs::rename(tmp, output).unwrap();
}

/// Every source, then every copy: (family, variant, path). The family is
/// the source's name; the variant is "source" or the transform's name.
pub fn corpus() -> Vec<(String, String, PathBuf)> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut sources = Vec::new();
    let mut copies = Vec::new();
    std::thread::scope(|scope| {
        for (name, graph) in SOURCES {
            let dir = dir.clone();
            let path = dir.join(format!("{name}.mp4"));
            sources.push((name.to_string(), "source".to_string(), path.clone()));
            let mut family = Vec::new();
            for (t, _) in TRANSFORMS {
                family.push((name.to_string(), t.to_string(), dir.join(format!("{name}-{t}.mp4"))));
            }
            copies.extend(family);
            scope.spawn(move || {
                if !path.exists() {
                    let args = format!("-f lavfi -i {graph} -t 10 -c:v libx264 -preset veryfast -crf 18 -movflags +faststart");
                    ffmpeg(&args, None, &path);
                }
                for (t, args) in TRANSFORMS {
                    let out = dir.join(format!("{name}-{t}.mp4"));
                    if !out.exists() {
                        ffmpeg(args, Some(&path), &out);
                    }
                }
            });
        }
    });
    sources.extend(copies);
    sources
}
