//! The probe: is this file a video we can serve, and what is in it
//! (duration, size, codecs, frame rate, container)?
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Prober SyncArbiter (clippy.toml)

use actix::{Actor, Handler, Message, SyncContext};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// What the probe found. Optional fields are absent when the container does
/// not say (a stream with no audio has no `audio_codec`).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    pub duration_s: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub fps: Option<f64>,
    /// The demuxer's name, such as `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    /// `Content-Type` to serve the original bytes with.
    pub content_type: &'static str,
    /// File extension of the stored object.
    pub ext: &'static str,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error("not a video: {0}")]
    NotAVideo(String),
    /// Headers and a first frame are fine, but the rest does not decode
    /// cleanly: truncated, or damaged on the way.
    #[error("the video is damaged: {0}")]
    Corrupt(String),
}

/// Containers vidcache stores, with the type and extension it serves them as.
/// Anything else, including still images that FFmpeg would also open (PNG,
/// JPEG through `image2`/`*_pipe`) and text (`tty`), is refused.
fn container_kind(format: &str, video_codec: &str, major_brand: Option<&str>) -> Option<(&'static str, &'static str)> {
    Some(match format {
        "mov,mp4,m4a,3gp,3g2,mj2" => match major_brand.map(str::trim) {
            Some("qt") => ("video/quicktime", "mov"),
            Some(b) if b.starts_with("3g") => ("video/3gpp", "3gp"),
            _ => ("video/mp4", "mp4"),
        },
        "matroska,webm" => match video_codec {
            "vp8" | "vp9" | "av1" => ("video/webm", "webm"),
            _ => ("video/x-matroska", "mkv"),
        },
        "avi" => ("video/x-msvideo", "avi"),
        "mpegts" => ("video/mp2t", "ts"),
        "flv" => ("video/x-flv", "flv"),
        "ogg" => ("video/ogg", "ogv"),
        "mpeg" => ("video/mpeg", "mpg"),
        "asf" => ("video/x-ms-asf", "asf"),
        "mxf" => ("application/mxf", "mxf"),
        "nut" => ("video/x-nut", "nut"),
        _ => return None,
    })
}

static FFMPEG_INIT: Once = Once::new();

/// Initialises FFmpeg once and quietens its logging: a hostile file must not
/// be able to flood our logs through libav's.
pub fn init_ffmpeg() {
    FFMPEG_INIT.call_once(|| {
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Fatal);
    });
}

/// Probes a complete file. Blocks; reads headers, not the whole file.
pub fn probe_file(path: &Path) -> Result<MediaInfo, ProbeError> {
    init_ffmpeg();
    let ictx =
        ffmpeg_next::format::input(path).map_err(|e| ProbeError::NotAVideo(format!("no known container ({e})")))?;
    probe_input(ictx)
}

fn probe_input(mut ictx: ffmpeg_next::format::context::Input) -> Result<MediaInfo, ProbeError> {
    let (info, video_index) = describe(&ictx)?;
    let parameters = ictx.stream(video_index).expect("described").parameters();
    if !decodes_a_frame(&mut ictx, video_index, parameters) {
        return Err(ProbeError::NotAVideo("no video frame could be decoded".into()));
    }
    Ok(info)
}

/// What the headers of an opened input say, and which stream is the video.
/// Decodes nothing: the caller checks that frames decode.
pub(crate) fn describe(ictx: &ffmpeg_next::format::context::Input) -> Result<(MediaInfo, usize), ProbeError> {
    let format = ictx.format().name().to_owned();
    let video = ictx
        .streams()
        .filter(|s| s.parameters().medium() == ffmpeg_next::media::Type::Video)
        .find(|s| !s.disposition().contains(ffmpeg_next::format::stream::Disposition::ATTACHED_PIC))
        .ok_or_else(|| ProbeError::NotAVideo(format!("container {format} has no video stream")))?;
    let video_codec = video.parameters().id().name().to_owned();
    let brand = ictx.metadata().get("major_brand").map(str::to_owned);
    let (content_type, ext) = container_kind(&format, &video_codec, brand.as_deref())
        .ok_or_else(|| ProbeError::NotAVideo(format!("{format} is not a video container vidcache stores")))?;

    let (width, height) = match ffmpeg_next::codec::context::Context::from_parameters(video.parameters())
        .and_then(|c| c.decoder().video())
    {
        Ok(decoder) if decoder.width() > 0 && decoder.height() > 0 => (Some(decoder.width()), Some(decoder.height())),
        _ => (None, None),
    };
    let fps = rational(video.avg_frame_rate()).or_else(|| rational(video.rate()));
    let duration_s = if ictx.duration() > 0 {
        Some(ictx.duration() as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE))
    } else if video.duration() > 0 {
        rational(video.time_base()).map(|tb| video.duration() as f64 * tb)
    } else {
        None
    };
    let audio_codec = ictx
        .streams()
        .find(|s| s.parameters().medium() == ffmpeg_next::media::Type::Audio)
        .map(|s| s.parameters().id().name().to_owned());
    let info = MediaInfo {
        duration_s: duration_s.map(round_ms),
        width,
        height,
        video_codec: Some(video_codec),
        audio_codec,
        fps: fps.map(|f| (f * 1000.0).round() / 1000.0),
        container: format,
        content_type,
        ext,
    };
    Ok((info, video.index()))
}

/// Headers can lie (a truncated file, a hostile one): a video is only a
/// video if its first frame decodes. Reads packets by hand with caps, since
/// `packets()` can spin forever on some broken inputs.
fn decodes_a_frame(
    ictx: &mut ffmpeg_next::format::context::Input,
    index: usize,
    parameters: ffmpeg_next::codec::Parameters,
) -> bool {
    const MAX_PACKETS: usize = 600;
    const MAX_ERRORS_IN_A_ROW: usize = 32;
    let Ok(mut decoder) =
        ffmpeg_next::codec::context::Context::from_parameters(parameters).and_then(|c| c.decoder().video())
    else {
        return false;
    };
    let mut frame = ffmpeg_next::frame::Video::empty();
    let (mut packets, mut errors) = (0, 0);
    loop {
        let mut packet = ffmpeg_next::Packet::empty();
        match packet.read(ictx) {
            Ok(()) => {
                errors = 0;
                if packet.stream() != index {
                    continue;
                }
                packets += 1;
                if decoder.send_packet(&packet).is_ok() && decoder.receive_frame(&mut frame).is_ok() {
                    return true;
                }
                if packets >= MAX_PACKETS {
                    return false;
                }
            }
            Err(ffmpeg_next::Error::Eof) => {
                let _ = decoder.send_eof();
                return decoder.receive_frame(&mut frame).is_ok();
            }
            Err(_) => {
                errors += 1;
                if errors >= MAX_ERRORS_IN_A_ROW {
                    return false;
                }
            }
        }
    }
}

pub(crate) fn rational(r: ffmpeg_next::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// The analysis of finished files as an actor on a `SyncArbiter`: a bounded
/// number of threads, so a burst of finalizes queues instead of spawning
/// unbounded decoders.
pub struct Prober {
    pub settings: super::analysis::AnalysisSettings,
}

impl Actor for Prober {
    type Context = SyncContext<Self>;
}

/// Analyse a finished file (`analysis::analyze_file`).
#[derive(Message)]
#[rtype(result = "Result<super::analysis::Analysis, ProbeError>")]
pub struct AnalyzeFile(pub PathBuf);

impl Handler<AnalyzeFile> for Prober {
    type Result = Result<super::analysis::Analysis, ProbeError>;

    fn handle(&mut self, msg: AnalyzeFile, _: &mut SyncContext<Self>) -> Self::Result {
        // A panic inside libav bindings must cost one upload, not the thread pool.
        std::panic::catch_unwind(|| super::analysis::analyze_file(&msg.0, &self.settings))
            .unwrap_or_else(|_| Err(ProbeError::NotAVideo("the probe could not read this file".into())))
    }
}
