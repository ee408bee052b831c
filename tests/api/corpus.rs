//! The near-duplicate corpus, generated with the ffmpeg CLI from
//! `tests/corpus.json`: visually different lavfi sources (three with a
//! generated soundtrack), and transformed copies of each (CRF 38 with Opus
//! audio, scaled to 240p with mono 22 kHz audio, cropped to the central 95%,
//! a translucent logo box in a corner, trimmed by 2 s, 15 fps instead of 25,
//! letterboxed, grey). And the look-alikes: distinct videos that look or
//! sound alike (stills, black and blank screens, slides, a shared intro, two
//! halves of one video, one picture sequence with two soundtracks).
//! `life` and `cellauto` are drawn coarse (160x90 cells scaled up): at full
//! resolution they are noise that no frame hash can follow. Made once per
//! run and cached in the temp dir (a dedup benchmark against videohash and
//! vpdq on the same file is still to be written).

use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;

const DEFINITION: &str = include_str!("../corpus.json");

static LOCK: Mutex<()> = Mutex::new(());

fn definition() -> Value {
    serde_json::from_str(DEFINITION).expect("tests/corpus.json is JSON")
}

/// (name, value of `field`) of each entry of `list`.
fn entries(def: &Value, list: &str, field: &str) -> Vec<(String, String)> {
    def[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e[field].as_str().unwrap().to_owned()))
        .collect()
}

/// How many sources the corpus has.
pub fn source_count() -> usize {
    entries(&definition(), "sources", "lavfi").len()
}

fn dir() -> PathBuf {
    // Keyed by the definition, so an edited corpus is made again.
    let key = &blake3::hash(DEFINITION.as_bytes()).to_hex()[..12];
    std::env::temp_dir().join(format!("vidcache-corpus-{key}"))
}

fn ffmpeg(args: &str, input: Option<&PathBuf>, output: &PathBuf) {
    let tmp = output.with_extension("tmp.mp4");
    let args = match input {
        Some(input) => format!("-i {} {args}", input.display()),
        None => args.to_owned(),
    };
    crate::helpers::ffmpeg_to(&tmp, &args);
    std::fs::rename(tmp, output).unwrap();
}

/// Every source, then every copy: (family, variant, path). The family is
/// the source's name; the variant is "source" or the transform's name.
pub fn corpus() -> Vec<(String, String, PathBuf)> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let def = definition();
    let (sources, transforms) = (entries(&def, "sources", "lavfi"), entries(&def, "transforms", "args"));
    let source_args = def["source_args"].as_str().unwrap().to_owned();
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut all = Vec::new();
    let mut copies = Vec::new();
    std::thread::scope(|scope| {
        for (name, graph) in &sources {
            let path = dir.join(format!("{name}.mp4"));
            all.push((name.clone(), "source".to_owned(), path.clone()));
            for (t, _) in &transforms {
                copies.push((name.clone(), t.clone(), dir.join(format!("{name}-{t}.mp4"))));
            }
            let (dir, transforms, source_args) = (&dir, &transforms, &source_args);
            let audio = def["sources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name.as_str())
                .and_then(|s| s["audio"].as_str())
                .map(|a| format!("-f lavfi -i {a} -c:a aac -b:a 128k -shortest"))
                .unwrap_or_default();
            scope.spawn(move || {
                if !path.exists() {
                    ffmpeg(&format!("-f lavfi -i {graph} {audio} {source_args}"), None, &path);
                }
                for (t, args) in transforms {
                    let out = dir.join(format!("{name}-{t}.mp4"));
                    if !out.exists() {
                        ffmpeg(args, Some(&path), &out);
                    }
                }
            });
        }
    });
    all.extend(copies);
    all
}

/// The look-alikes: (name, path), every one a different video.
pub fn lookalikes() -> Vec<(String, PathBuf)> {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let def = definition();
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let all: Vec<(String, PathBuf, String)> = entries(&def, "lookalikes", "args")
        .into_iter()
        .map(|(name, args)| (name.clone(), dir.join(format!("lookalike-{name}.mp4")), args))
        .collect();
    std::thread::scope(|scope| {
        for chunk in all.chunks(4) {
            scope.spawn(move || {
                for (_, path, args) in chunk {
                    if !path.exists() {
                        ffmpeg(args, None, path);
                    }
                }
            });
        }
    });
    all.into_iter().map(|(name, path, _)| (name, path)).collect()
}
