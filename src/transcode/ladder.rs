//! `transcode_ladder`: a source file into `{dir}/manifest.mpd`,
//! `{dir}/master.m3u8` and their fMP4 segments, written to a temporary
//! directory beside `dir` and published by rename, so a half-written
//! rendition is never served.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Transcoder SyncArbiter (clippy.toml)

use super::manifest::{Broken, LadderFacts};
use crate::media::init_ffmpeg;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;
use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, filter, format, frame};
use std::path::Path;

/// One rung of the ladder: a height (the width follows the source's aspect)
/// and a video bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    pub height: u32,
    pub video_kbps: u32,
}

#[derive(Debug, Clone)]
pub struct LadderSpec {
    /// Highest first. Rungs above the source's height are left out.
    pub rungs: Vec<Rung>,
    /// Segment length; every rung has a keyframe at each segment start.
    pub segment_secs: u32,
    /// x264 preset.
    pub preset: String,
}

impl Default for LadderSpec {
    fn default() -> Self {
        Self {
            rungs: vec![
                Rung { height: 1080, video_kbps: 5000 },
                Rung { height: 720, video_kbps: 3000 },
                Rung { height: 480, video_kbps: 1500 },
                Rung { height: 240, video_kbps: 400 },
            ],
            segment_secs: 2,
            preset: "veryfast".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rendition {
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
}

#[derive(Debug, Clone)]
pub struct LadderOutput {
    pub renditions: Vec<Rendition>,
    pub frames: u64,
    pub has_audio: bool,
    pub duration_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("the source cannot be decoded: {0}")]
    Source(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("writing the renditions failed: {0}")]
    Io(#[from] std::io::Error),
    /// The encoder wrote segments that break what the ladder promises
    /// players; nothing is published.
    #[error("the ladder's segments break its guarantees: {0}")]
    Broken(#[from] Broken),
}

fn source(e: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Source(e.to_string())
}

fn encode(e: impl std::fmt::Display) -> TranscodeError {
    TranscodeError::Encode(e.to_string())
}

/// The source's audio as AAC stereo 48 kHz at `AUDIO_KBPS`: decoded,
/// resampled and cut into the encoder's frame size by a filter graph.
struct AudioTrack {
    input: usize,
    output: usize,
    decoder: ffmpeg_next::decoder::Audio,
    encoder: encoder::Audio,
    graph: filter::Graph,
}

const AUDIO_KBPS: usize = 128;
const AUDIO_RATE: i32 = 48_000;

impl AudioTrack {
    fn open(stream: &format::stream::Stream, octx: &mut format::context::Output) -> Result<Self, TranscodeError> {
        let decoder = codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().audio())
            .map_err(source)?;
        let aac = encoder::find(codec::Id::AAC).ok_or_else(|| encode("no AAC encoder"))?;
        let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
        let mut ost = octx.add_stream(aac).map_err(encode)?;
        let mut enc = codec::context::Context::new_with_codec(aac).encoder().audio().map_err(encode)?;
        let layout = ffmpeg_next::channel_layout::ChannelLayout::STEREO;
        enc.set_rate(AUDIO_RATE);
        enc.set_channel_layout(layout);
        enc.set_channels(layout.channels());
        enc.set_format(ffmpeg_next::format::Sample::F32(ffmpeg_next::format::sample::Type::Planar));
        enc.set_bit_rate(AUDIO_KBPS * 1000);
        enc.set_time_base((1, AUDIO_RATE));
        if global_header {
            enc.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let encoder = enc.open_as(aac).map_err(encode)?;
        ost.set_parameters(&encoder);
        ost.set_time_base((1, AUDIO_RATE));

        let in_layout = if decoder.channel_layout().bits() == 0 {
            ffmpeg_next::channel_layout::ChannelLayout::default(i32::from(decoder.channels()))
        } else {
            decoder.channel_layout()
        };
        let mut graph = filter::Graph::new();
        let args = format!(
            "time_base={}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            stream.time_base(),
            decoder.rate(),
            decoder.format().name(),
            in_layout.bits()
        );
        let find = |name| filter::find(name).ok_or_else(|| encode(format!("no {name} filter")));
        graph.add(&find("abuffer")?, "in", &args).map_err(encode)?;
        graph.add(&find("abuffersink")?, "out", "").map_err(encode)?;
        {
            let mut out = graph.get("out").ok_or_else(|| encode("no sink"))?;
            out.set_sample_format(encoder.format());
            out.set_channel_layout(encoder.channel_layout());
            out.set_sample_rate(encoder.rate());
        }
        graph.output("in", 0).and_then(|p| p.input("out", 0)).and_then(|p| p.parse("anull")).map_err(encode)?;
        graph.validate().map_err(encode)?;
        graph.get("out").ok_or_else(|| encode("no sink"))?.sink().set_frame_size(encoder.frame_size());
        Ok(Self { input: stream.index(), output: ost.index(), decoder, encoder, graph })
    }

    /// Everything the decoder has, through the graph and the encoder.
    fn pump(&mut self, out_tb: Rational, octx: &mut format::context::Output, eof: bool) -> Result<(), TranscodeError> {
        let mut decoded = frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            let pts = decoded.timestamp();
            decoded.set_pts(pts);
            if let Some(mut input) = self.graph.get("in") {
                input.source().add(&decoded).map_err(encode)?;
            }
            self.encode_filtered(out_tb, octx)?;
        }
        if eof {
            if let Some(mut input) = self.graph.get("in") {
                input.source().flush().map_err(encode)?;
            }
            self.encode_filtered(out_tb, octx)?;
            self.encoder.send_eof().map_err(encode)?;
            self.write_packets(out_tb, octx)?;
        }
        Ok(())
    }

    fn encode_filtered(&mut self, out_tb: Rational, octx: &mut format::context::Output) -> Result<(), TranscodeError> {
        let mut filtered = frame::Audio::empty();
        while self.graph.get("out").is_some_and(|mut out| out.sink().frame(&mut filtered).is_ok()) {
            self.encoder.send_frame(&filtered).map_err(encode)?;
            self.write_packets(out_tb, octx)?;
        }
        Ok(())
    }

    fn write_packets(&mut self, out_tb: Rational, octx: &mut format::context::Output) -> Result<(), TranscodeError> {
        let mut packet = Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.output);
            packet.rescale_ts(Rational(1, AUDIO_RATE), out_tb);
            packet.write_interleaved(octx).map_err(encode)?;
        }
        Ok(())
    }
}

/// libx264's settings for one rung: a keyframe every `gop` frames and
/// nowhere else (no scene-cut keyframes), so every rung has them at the
/// same times; each of them an IDR frame that closes its GOP; and the VBV
/// that caps the rung's peak at 1.07 × its bitrate over a 2 s buffer (the
/// ffmpeg CLI reference's `-maxrate` and `-bufsize`).
///
/// Measured, not assumed (ARCHITECTURE.md, "What the ladder guarantees"):
/// through FFmpeg 5.1's API, libx264 ran with `open_gop=1` unless told
/// otherwise (the x264 settings string in the first segment's SEI said
/// so), and a keyframe at a segment start was then an I slice of NAL type
/// 1 whose following B frames reference the previous segment; and x264
/// has no `bufsize` key, so the VBV was silently off (`vbv-*` are its
/// names).
pub(crate) fn x264_params(gop: u32, video_kbps: u32) -> String {
    format!(
        "keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:vbv-maxrate={}:vbv-bufsize={}",
        video_kbps * 107 / 100,
        video_kbps * 2
    )
}

struct Output {
    index: usize,
    encoder: encoder::Video,
    width: u32,
    height: u32,
}

/// Transcodes `src` into the ladder under `dir` (replaced if it exists).
/// `progress` is called with the share done, from 0 to 1. Blocks.
pub fn transcode_ladder(
    src: &Path,
    dir: &Path,
    spec: &LadderSpec,
    progress: &mut dyn FnMut(f64),
) -> Result<LadderOutput, TranscodeError> {
    init_ffmpeg();
    let parent = dir.parent().ok_or_else(|| encode("the output directory has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("ladder");
    let tmp = parent.join(format!(".{name}.{}.tmp", crate::domain::UploadId::generate()));
    std::fs::create_dir_all(&tmp)?;
    let result = write_ladder(src, &tmp, spec, progress, &mut |_, _| {});
    match result {
        Ok(output) => {
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            std::fs::rename(&tmp, dir)?;
            Ok(output)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Writes the ladder's manifests and segments into `dir`, all in it.
/// `observe` sees every decoded frame with its time in seconds (the
/// storyboard takes its tiles there, so the source is decoded once).
pub(crate) fn write_ladder(
    src: &Path,
    dir: &Path,
    spec: &LadderSpec,
    progress: &mut dyn FnMut(f64),
    observe: &mut dyn FnMut(&frame::Video, f64),
) -> Result<LadderOutput, TranscodeError> {
    let mut ictx = format::input(&src).map_err(source)?;
    let stream = ictx.streams().best(ffmpeg_next::media::Type::Video).ok_or_else(|| source("no video stream"))?;
    let index = stream.index();
    let in_tb = stream.time_base();
    let duration_s = if ictx.duration() > 0 { ictx.duration() as f64 / 1e6 } else { 0.0 };
    let rate = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .unwrap_or(Rational(25, 1));
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|mut c| {
            // The decoder feeds every rung: it must not be the one thread behind.
            c.set_threading(ffmpeg_next::threading::Config {
                kind: ffmpeg_next::threading::Type::Frame,
                count: 0,
                ..Default::default()
            });
            c.decoder().video()
        })
        .map_err(source)?;
    let (src_w, src_h) = (decoder.width(), decoder.height());
    if src_w == 0 || src_h == 0 {
        return Err(source("the video has no size"));
    }

    // Rungs at or below the source; a source smaller than every rung gets
    // one rung at its own height.
    let mut rungs: Vec<Rung> = spec.rungs.iter().copied().filter(|r| r.height <= src_h).collect();
    if rungs.is_empty() {
        let lowest = spec.rungs.last().map_or(400, |r| r.video_kbps);
        rungs.push(Rung { height: src_h & !1, video_kbps: lowest });
    }
    let gop = ((f64::from(rate.numerator()) / f64::from(rate.denominator())) * f64::from(spec.segment_secs))
        .round()
        .max(1.0) as u32;

    let mpd = dir.join("manifest.mpd");
    let mut octx = format::output_as(&mpd, "dash").map_err(encode)?;
    let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
    let h264 = encoder::find_by_name("libx264").ok_or_else(|| encode("libx264 is not available"))?;
    let mut outputs = Vec::new();
    for rung in &rungs {
        let height = rung.height & !1;
        let width = ((u64::from(src_w) * u64::from(height) / u64::from(src_h)) as u32 + 1) & !1;
        let mut ost = octx.add_stream(h264).map_err(encode)?;
        let mut enc = codec::context::Context::new_with_codec(h264).encoder().video().map_err(encode)?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(Pixel::YUV420P);
        // Rounding the width to even changes the shape a little; the pixel
        // aspect puts it back, so every rung shows as the source does (the
        // dash muxer refuses an adaptation set whose aspects differ).
        let sar = Rational::new((src_w * height) as i32, (width * src_h) as i32).reduce();
        enc.set_aspect_ratio(sar);
        enc.set_time_base(in_tb);
        enc.set_frame_rate(Some(rate));
        enc.set_bit_rate(rung.video_kbps as usize * 1000);
        enc.set_max_bit_rate(rung.video_kbps as usize * 1070);
        enc.set_gop(gop);
        // Closed GOPs (see `x264_params`); the flag says it to libavcodec too.
        enc.set_flags(if global_header {
            codec::Flags::GLOBAL_HEADER | codec::Flags::CLOSED_GOP
        } else {
            codec::Flags::CLOSED_GOP
        });
        let mut options = Dictionary::new();
        options.set("preset", &spec.preset);
        options.set("x264-params", &x264_params(gop, rung.video_kbps));
        let opened = enc.open_with(options).map_err(encode)?;
        ost.set_parameters(&opened);
        ost.set_time_base(in_tb);
        // The dash muxer reads the stream's own aspect, not the codec's.
        // SAFETY: the stream belongs to `octx`, whose header is not written yet.
        unsafe {
            (*ost.as_mut_ptr()).sample_aspect_ratio = sar.into();
            // Progressive, as every rung is encoded (the MPD says
            // `scanType="unknown"` otherwise).
            (*(*ost.as_mut_ptr()).codecpar).field_order = ffmpeg_next::ffi::AVFieldOrder::AV_FIELD_PROGRESSIVE;
        }
        // The MPD's `frameRate` comes from the stream's average rate.
        ost.set_avg_frame_rate(rate);
        outputs.push(Output { index: ost.index(), encoder: opened, width, height });
    }

    let mut audio = match ictx.streams().best(ffmpeg_next::media::Type::Audio) {
        Some(stream) => Some(AudioTrack::open(&stream, &mut octx)?),
        None => None,
    };

    let mut muxer = Dictionary::new();
    muxer.set("seg_duration", &spec.segment_secs.to_string());
    muxer.set("use_template", "1");
    muxer.set("use_timeline", "1");
    muxer.set("hls_playlist", "1");
    muxer.set("adaptation_sets", if audio.is_some() { "id=0,streams=v id=1,streams=a" } else { "id=0,streams=v" });
    muxer.set("init_seg_name", "init-$RepresentationID$.m4s");
    muxer.set("media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s");
    octx.write_header_with(muxer).map_err(encode)?;
    let out_tbs: Vec<Rational> = outputs.iter().map(|o| octx.stream(o.index).expect("added").time_base()).collect();
    let audio_tb = audio.as_ref().map(|a| octx.stream(a.output).expect("added").time_base());

    // One thread per rung scales and encodes; this thread demuxes, decodes
    // and is the only writer of the muxer. Frames go out through small
    // bounded queues (reference-counted, no copy); packets come back.
    let sizes: Vec<(u32, u32)> = outputs.iter().map(|o| (o.width, o.height)).collect();
    let streams: Vec<usize> = outputs.iter().map(|o| o.index).collect();
    let (packet_tx, packets) = std::sync::mpsc::channel::<Result<(usize, Packet), TranscodeError>>();
    let mut frames = 0u64;
    std::thread::scope(|scope| -> Result<(), TranscodeError> {
        let mut queues = Vec::new();
        for (rung, output) in outputs.drain(..).enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<frame::Video>(2);
            queues.push(tx);
            let packet_tx = packet_tx.clone();
            scope.spawn(move || {
                if let Err(e) = encode_rung(rung, output.encoder, output.width, output.height, rx, &packet_tx) {
                    let _ = packet_tx.send(Err(e));
                }
            });
        }
        drop(packet_tx);
        let write = |octx: &mut format::context::Output, sent: Result<(usize, Packet), TranscodeError>| {
            let (rung, mut packet) = sent?;
            packet.set_stream(streams[rung]);
            packet.rescale_ts(in_tb, out_tbs[rung]);
            packet.write_interleaved(octx).map_err(encode)
        };
        let mut decoded = frame::Video::empty();
        let mut step = |decoder: &mut ffmpeg_next::decoder::Video,
                        octx: &mut format::context::Output,
                        frames: &mut u64|
         -> Result<(), TranscodeError> {
            while decoder.receive_frame(&mut decoded).is_ok() {
                *frames += 1;
                let pts = decoded.timestamp();
                decoded.set_pts(pts);
                if let Some(ts) = pts {
                    observe(&decoded, f64::from(in_tb) * ts as f64);
                }
                for queue in &queues {
                    queue.send(decoded.clone()).map_err(|_| encode("a rung's encoder stopped"))?;
                }
                while let Ok(sent) = packets.try_recv() {
                    write(octx, sent)?;
                }
                if duration_s > 0.0
                    && let Some(ts) = pts
                {
                    progress((f64::from(in_tb) * ts as f64 / duration_s).clamp(0.0, 1.0));
                }
            }
            Ok(())
        };
        for (stream, packet) in ictx.packets() {
            if let (Some(track), Some(tb)) = (audio.as_mut(), audio_tb)
                && stream.index() == track.input
            {
                let _ = track.decoder.send_packet(&packet);
                track.pump(tb, &mut octx, false)?;
                continue;
            }
            if stream.index() != index {
                continue;
            }
            // A damaged packet costs its frame, not the whole ladder.
            let _ = decoder.send_packet(&packet);
            step(&mut decoder, &mut octx, &mut frames)?;
        }
        let _ = decoder.send_eof();
        step(&mut decoder, &mut octx, &mut frames)?;
        if let (Some(track), Some(tb)) = (audio.as_mut(), audio_tb) {
            let _ = track.decoder.send_eof();
            track.pump(tb, &mut octx, true)?;
        }
        // Closing the queues ends the encoders; their last packets follow.
        drop(queues);
        for sent in packets.iter() {
            write(&mut octx, sent)?;
        }
        Ok(())
    })?;
    octx.write_trailer().map_err(encode)?;
    drop(octx);
    if frames == 0 {
        return Err(source("no frame decoded"));
    }
    // Read back what was written: the guarantees are checked on the
    // segments themselves, and the manifests state measured figures.
    let audio_id = audio.as_ref().map(|a| a.output);
    let facts = LadderFacts::read(dir, &streams, audio_id)?;
    facts.check()?;
    let frame_rate = f64::from(rate.numerator()) / f64::from(rate.denominator());
    std::fs::write(dir.join("master.m3u8"), facts.hls_master(&sizes, frame_rate))?;
    std::fs::write(&mpd, facts.fix_mpd(&std::fs::read_to_string(&mpd)?))?;
    progress(1.0);
    let renditions = sizes
        .iter()
        .zip(&rungs)
        .map(|(&(width, height), r)| Rendition { width, height, video_kbps: r.video_kbps })
        .collect();
    Ok(LadderOutput { renditions, frames, has_audio: audio_id.is_some(), duration_s })
}

/// A rung's thread: scales each frame from `frames` to the rung's size,
/// encodes it, and hands the packets back (numbered by `rung`) until the
/// queue closes; then flushes the encoder.
fn encode_rung(
    rung: usize,
    mut encoder: encoder::Video,
    width: u32,
    height: u32,
    frames: std::sync::mpsc::Receiver<frame::Video>,
    packets: &std::sync::mpsc::Sender<Result<(usize, Packet), TranscodeError>>,
) -> Result<(), TranscodeError> {
    let mut scaler: Option<(scaling::Context, (Pixel, u32, u32))> = None;
    let drain = |encoder: &mut encoder::Video| {
        let mut packet = Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            let _ = packets.send(Ok((rung, std::mem::replace(&mut packet, Packet::empty()))));
        }
    };
    // One output frame, reused: a 1080p buffer allocated per frame is a
    // fresh mmap, zero-fill and munmap each time with the daemon's fixed
    // mmap threshold. It is reused only once the encoder let go of it.
    let mut scaled = frame::Video::empty();
    for decoded in frames {
        let key = (decoded.format(), decoded.width(), decoded.height());
        if key == (Pixel::YUV420P, width, height) {
            // The rung is the source's own size and format: no scaling.
            let mut same = decoded.clone();
            same.set_kind(ffmpeg_next::picture::Type::None);
            encoder.send_frame(&same).map_err(encode)?;
            drain(&mut encoder);
            continue;
        }
        if scaler.as_ref().is_none_or(|(_, k)| *k != key) {
            let ctx =
                scaling::Context::get(key.0, key.1, key.2, Pixel::YUV420P, width, height, scaling::Flags::BICUBIC)
                    .map_err(encode)?;
            scaler = Some((ctx, key));
        }
        // SAFETY: `scaled` owns a valid AVFrame; av_frame_is_writable only
        // reads its buffer references.
        if !unsafe { scaled.is_empty() } && unsafe { ffmpeg_next::ffi::av_frame_is_writable(scaled.as_mut_ptr()) } == 0
        {
            scaled = frame::Video::empty();
        }
        let (ctx, _) = scaler.as_mut().expect("set above");
        ctx.run(&decoded, &mut scaled).map_err(encode)?;
        scaled.set_pts(decoded.pts());
        scaled.set_kind(ffmpeg_next::picture::Type::None);
        encoder.send_frame(&scaled).map_err(encode)?;
        drain(&mut encoder);
    }
    encoder.send_eof().map_err(encode)?;
    drain(&mut encoder);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ffprobe(args: &[&str]) -> String {
        let out = std::process::Command::new("ffprobe").args(["-v", "error"]).args(args).output().expect("ffprobe");
        assert!(out.status.success(), "ffprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_ladder_is_written_as_dash_and_hls_over_the_same_segments() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.mp4");
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "6", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1"])
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success());
        let spec = LadderSpec {
            rungs: vec![
                Rung { height: 720, video_kbps: 3000 },
                Rung { height: 360, video_kbps: 800 },
                Rung { height: 240, video_kbps: 300 },
            ],
            segment_secs: 2,
            preset: "ultrafast".into(),
        };
        let out = dir.path().join("media").join("ladder");
        let mut seen = Vec::new();
        let result = transcode_ladder(&src, &out, &spec, &mut |p| seen.push(p)).unwrap();
        assert_eq!(result.frames, 150);
        assert_eq!(
            result.renditions,
            vec![
                Rendition { width: 640, height: 360, video_kbps: 800 },
                Rendition { width: 426, height: 240, video_kbps: 300 }
            ],
            "no rung above the source"
        );
        assert_eq!(seen.last(), Some(&1.0));
        let mpd = std::fs::read_to_string(out.join("manifest.mpd")).unwrap();
        assert_eq!(mpd.matches("<Representation ").count(), 3, "two video rungs and the audio: {mpd}");
        assert!(mpd.contains("mp4a.40.2") && mpd.contains("audioSamplingRate=\"48000\""), "{mpd}");
        let master = std::fs::read_to_string(out.join("master.m3u8")).unwrap();
        assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 2, "{master}");
        assert!(master.contains("RESOLUTION=640x360") && master.contains("RESOLUTION=426x240"), "{master}");
        assert!(master.contains("CODECS=\"avc1.") && master.contains("BANDWIDTH="), "{master}");
        assert!(master.contains("TYPE=AUDIO"), "{master}");
        // Both manifests decode, to the source's duration, through the same segments.
        for manifest in ["manifest.mpd", "master.m3u8"] {
            let path = out.join(manifest);
            let duration: f64 =
                ffprobe(&["-show_entries", "format=duration", "-of", "csv=p=0", path.to_str().unwrap()])
                    .trim()
                    .parse()
                    .unwrap();
            assert!((duration - 6.0).abs() < 0.2, "{manifest}: {duration}");
        }
        let segments: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("chunk-"))
            .collect();
        let of = |rep: &str| segments.iter().filter(|s| s.starts_with(&format!("chunk-{rep}-"))).count();
        assert_eq!((of("0"), of("1")), (3, 3), "3 segments of 2 s per rung: {segments:?}");
        // AAC frames do not fall on 2 s: the encoder's padding can make a short 4th.
        assert!((3..=4).contains(&of("2")), "the audio's segments: {segments:?}");
        // Keyframes at the same times on every rung.
        let keys = |rep: &str| {
            let init = out.join(format!("init-{rep}.m4s"));
            let mut joined = std::fs::read(&init).unwrap();
            let mut chunks: Vec<_> = segments.iter().filter(|s| s.starts_with(&format!("chunk-{rep}-"))).collect();
            chunks.sort();
            for c in chunks {
                joined.extend(std::fs::read(out.join(c)).unwrap());
            }
            let file = dir.path().join(format!("joined-{rep}.mp4"));
            std::fs::write(&file, joined).unwrap();
            let times = ffprobe(&[
                "-select_streams",
                "v",
                "-skip_frame",
                "nokey",
                "-show_entries",
                "frame=pts_time",
                "-of",
                "csv=p=0",
                file.to_str().unwrap(),
            ]);
            times
                .lines()
                .map(|l| l.trim().trim_end_matches(','))
                .filter(|l| !l.is_empty())
                .map(|l| l.parse::<f64>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("0"), vec![0.0, 2.0, 4.0], "a keyframe at every segment start");
        assert_eq!(keys("1"), keys("0"), "the same on every rung");
        // Nothing half-written was left beside the ladder.
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
    }
}

#[cfg(test)]
mod small_source_tests {
    use super::*;

    #[test]
    fn a_source_below_every_rung_gets_one_rung_at_its_own_size_and_no_audio_set() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("small.mkv");
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "mandelbrot=size=320x180:rate=30"])
            .args(["-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(&src)
            .status()
            .unwrap();
        assert!(status.success());
        let out = dir.path().join("ladder");
        let result = transcode_ladder(&src, &out, &LadderSpec::default(), &mut |_| {}).unwrap();
        assert_eq!(result.renditions, vec![Rendition { width: 320, height: 180, video_kbps: 400 }]);
        let mpd = std::fs::read_to_string(out.join("manifest.mpd")).unwrap();
        assert_eq!(mpd.matches("<Representation ").count(), 1, "{mpd}");
        assert!(!mpd.contains("mp4a"), "{mpd}");
    }

    #[test]
    fn what_is_not_a_video_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("noise.mp4");
        std::fs::write(&src, b"not a video at all").unwrap();
        let out = dir.path().join("ladder");
        assert!(matches!(
            transcode_ladder(&src, &out, &LadderSpec::default(), &mut |_| {}),
            Err(TranscodeError::Source(_))
        ));
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the source is left");
    }
}
