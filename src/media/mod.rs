//! Looking inside media files with ffmpeg-next. Every call here blocks and
//! burns CPU, so it runs on the `Prober` SyncArbiter, never on an event loop.

pub mod analysis;
mod audio;
pub mod frames;
mod probe;
pub mod streaming;

pub use analysis::{Analysis, AnalysisSettings, Sample};
pub use probe::{AnalyzeFile, MediaInfo, ProbeError, Prober, init_ffmpeg, probe_file};
