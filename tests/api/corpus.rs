//! The near-duplicate corpus, generated with the ffmpeg CLI from
//! `tests/corpus.json`: visually different lavfi sources, and transformed
//! copies of each (CRF 38, scaled to 240p, cropped to the central 95%, a
//! translucent logo box in a corner, trimmed by 2 s, 15 fps instead of 25).
//! `life` and `cellauto` are drawn coarse (160x90 cells scaled up): at full
//! resolution they are noise that no frame hash can follow. Made once per
//! run and cached in the temp dir; `tests/bench/dedup_bench.py` builds the
//! same corpus from the same file for videohash and vpdq.

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
            scope.spawn(move || {
                if !path.exists() {
                    ffmpeg(&format!("-f lavfi -i {graph} {source_args}"), None, &path);
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
