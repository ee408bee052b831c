//! Building a video's renditions and publishing them in one rename.
//!
//! Layout under the video's derived directory (`{root}/.media/{hash}/`),
//! served at `/media/{hash}/`:
//! ```text
//! abr/hls/master.m3u8, abr/hls/media_N.m3u8   HLS, pointing at ../seg-v2/
//! abr/dash/manifest.mpd                       DASH, pointing at ../seg-v2/
//! abr/seg-v2/init-N.m4s, chunk-N-K.m4s       the CMAF segments both share
//! abr/storyboard.jpg, abr/storyboard.vtt      seek previews
//! ```
//! The segments' directory is named after the ladder's version: segments
//! are served as immutable, so a video transcoded again by a newer ladder
//! must not reuse a URL a player or a CDN may hold the old bytes of.
//! Version 1 (`abr/seg/`) started segments with non-IDR I frames; see
//! [`published_version`] and `vidcache requeue-outdated`.
//! Everything is written to `.abr.tmp` first (one name per video, so a
//! job that runs again after a crash clears what the crashed run left),
//! made durable, and renamed to `abr`: a reader sees all of it or none.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Transcoder SyncArbiter (clippy.toml)

use super::ladder::{LadderOutput, LadderSpec, TranscodeError, write_ladder};
use super::storyboard::Storyboard;
use std::fs;
use std::path::{Path, PathBuf};

/// The version of what the ladder writes. Raise it when the segments
/// change in a way players can tell (with [`SEGMENTS`]): published
/// renditions of an older version are transcoded again on request.
pub const LADDER_VERSION: u32 = 2;
/// The segments' directory of [`LADDER_VERSION`].
const SEGMENTS: &str = "seg-v2";

/// The published directory of a video's renditions.
pub fn renditions_dir(derived: &Path) -> PathBuf {
    derived.join("abr")
}

/// Renditions of the current ladder are published (complete: they were
/// renamed into place whole). Blocks.
pub fn is_published(derived: &Path) -> bool {
    published_version(derived) == Some(LADDER_VERSION)
}

/// The ladder version of a video's published renditions, if any. Blocks.
pub fn published_version(derived: &Path) -> Option<u32> {
    let dir = renditions_dir(derived);
    if !(dir.join("hls/master.m3u8").is_file() && dir.join("dash/manifest.mpd").is_file()) {
        return None;
    }
    if dir.join(SEGMENTS).is_dir() {
        return Some(LADDER_VERSION);
    }
    (1..LADDER_VERSION).rev().find(|v| dir.join(if *v == 1 { "seg".to_owned() } else { format!("seg-v{v}") }).is_dir())
}

/// Transcodes `src` and publishes the result under `derived`. Blocks.
pub fn build_and_publish(
    src: &Path,
    derived: &Path,
    spec: &LadderSpec,
    storyboard_secs: u32,
    duration_s: Option<f64>,
    progress: &mut dyn FnMut(f64),
) -> Result<LadderOutput, TranscodeError> {
    fs::create_dir_all(derived)?;
    let work = derived.join(".abr.tmp");
    remove_if_present(&work)?;
    fs::create_dir_all(&work)?;
    let result = build(src, &work, spec, storyboard_secs, duration_s, progress);
    let output = match result {
        Ok(output) => output,
        Err(e) => {
            let _ = fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    let built = work.join("abr");
    sync_tree(&built)?;
    let dir = renditions_dir(derived);
    // Replacing older renditions: move them aside first, so `abr` is never
    // a mix of two runs.
    let old = derived.join(".abr.old");
    remove_if_present(&old)?;
    if dir.exists() {
        fs::rename(&dir, &old)?;
    }
    fs::rename(&built, &dir)?;
    fs::File::open(derived)?.sync_all()?;
    remove_if_present(&old)?;
    remove_if_present(&work)?;
    Ok(output)
}

fn build(
    src: &Path,
    work: &Path,
    spec: &LadderSpec,
    storyboard_secs: u32,
    duration_s: Option<f64>,
    progress: &mut dyn FnMut(f64),
) -> Result<LadderOutput, TranscodeError> {
    let flat = work.join("flat");
    fs::create_dir_all(&flat)?;
    let mut storyboard = Storyboard::new(storyboard_secs, duration_s);
    let output = write_ladder(src, &flat, spec, progress, &mut |frame, secs| storyboard.observe(frame, secs))?;
    let abr = work.join("abr");
    for sub in ["hls", "dash", SEGMENTS] {
        fs::create_dir_all(abr.join(sub))?;
    }
    for entry in fs::read_dir(&flat)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let from = entry.path();
        if name.ends_with(".m4s") {
            fs::rename(&from, abr.join(SEGMENTS).join(&name))?;
        } else if name == "manifest.mpd" {
            let mpd = fs::read_to_string(&from)?
                .replace("initialization=\"init-", &format!("initialization=\"../{SEGMENTS}/init-"))
                .replace("media=\"chunk-", &format!("media=\"../{SEGMENTS}/chunk-"));
            fs::write(abr.join("dash").join(&name), mpd)?;
        } else if name == "master.m3u8" {
            fs::rename(&from, abr.join("hls").join(&name))?;
        } else if name.starts_with("media_") && name.ends_with(".m3u8") {
            fs::write(abr.join("hls").join(&name), media_playlist(&fs::read_to_string(&from)?))?;
        }
    }
    storyboard.finish(&abr, output.duration_s)?;
    Ok(output)
}

/// A media playlist whose segment and init URIs point at `../{SEGMENTS}/`,
/// marked as video on demand and as made of independent segments (the
/// ladder checked every one starts with an IDR frame before it got here),
/// without the muxer's wall-clock dates (they would claim the video was
/// recorded when it was transcoded).
fn media_playlist(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    for line in text.lines() {
        if line.starts_with("#EXT-X-PROGRAM-DATE-TIME") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            out.push_str("#EXT-X-MAP:URI=\"../");
            out.push_str(SEGMENTS);
            out.push('/');
            out.push_str(rest);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push_str("../");
            out.push_str(SEGMENTS);
            out.push('/');
            out.push_str(line.trim());
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if line.starts_with("#EXT-X-VERSION") {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
    }
    out
}

/// fdatasync of every file and directory below `dir`.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)?.sync_data()?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

fn remove_if_present(dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn media_playlists_point_at_the_shared_segments() {
        let text = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-MAP:URI=\"init-0.m4s\"\n#EXTINF:2.0,\n#EXT-X-PROGRAM-DATE-TIME:2026\nchunk-0-00001.m4s\n#EXT-X-ENDLIST\n";
        let out = super::media_playlist(text);
        assert!(out.contains("#EXT-X-MAP:URI=\"../seg-v2/init-0.m4s\""));
        assert!(out.contains("\n../seg-v2/chunk-0-00001.m4s\n"));
        assert!(out.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
        assert_eq!(super::SEGMENTS, format!("seg-v{}", super::LADDER_VERSION));
        assert!(out.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        assert!(!out.contains("PROGRAM-DATE-TIME"));
    }
}
