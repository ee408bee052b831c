//! Transcoding into an adaptive-bitrate ladder: one decode, one scale and
//! one libx264 encode per rung, keyframes aligned across rungs every
//! segment, CMAF fMP4 segments written by FFmpeg's dash muxer, which also
//! writes the HLS playlists over the same segments (`hls_playlist`); audio,
//! if any, as AAC stereo 48 kHz. `publish` lays the result out for serving
//! and renames it into place; `worker` is what a queued job runs.

pub mod cmaf;
mod ladder;
pub mod manifest;
mod outdated;
mod publish;
mod storyboard;
mod worker;

pub use ladder::{LadderOutput, LadderSpec, Rendition, Rung, TranscodeError, transcode_ladder};
pub use outdated::requeue_outdated;
pub use publish::{LADDER_VERSION, build_and_publish, is_published, published_version, renditions_dir};
pub use worker::{Transcode, TranscodeWorker, Transcoder};
