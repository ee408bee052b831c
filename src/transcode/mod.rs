//! Transcoding into an adaptive-bitrate ladder (issue 5 groundwork): one
//! decode, one scale and one libx264 encode per rung, keyframes aligned
//! across rungs every segment, CMAF fMP4 segments written by FFmpeg's dash
//! muxer, which also writes the HLS playlists over the same segments
//! (`hls_playlist`); audio, if any, as AAC stereo 48 kHz. Not wired to a
//! queue yet.

mod ladder;

pub use ladder::{LadderOutput, LadderSpec, Rendition, Rung, TranscodeError, transcode_ladder};
