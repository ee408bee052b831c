//! The analysis of an upload: the probe, then one decoding pass over the
//! video stream that samples frames for the perceptual hash, records the
//! keyframe index and checks that the whole stream decodes.
//!
//! It runs on the early-probe thread over a `StreamingBuffer` while the bytes
//! arrive, or (no slot, or too slow) over the finished file on the `Prober`
//! threads. Either way the writer never waits for it: when the reader falls
//! more than `full_decode_bytes` behind the bytes received, the pass skips
//! ahead, sending only keyframes to the decoder until it has caught up. Once
//! the upload is complete (finalize is waiting), it decodes the rest in full
//! if it is under 1 MiB or fits `finish_budget_ms` at the decode rate it
//! measured, skims a
//! longer rest of up to `full_decode_bytes`, and stops at once if further
//! behind: finalize never waits for a pass over gigabytes that arrived
//! faster than they decode. The signature then covers the part sampled.
//!
//! Sampling: one frame per `sample_interval_ms` of presentation time, plus
//! every keyframe that is not within a quarter interval of a sample (encoders
//! put keyframes at scene cuts, so this is the cheap scene-change detector).
//! Each sample is scaled to 32x32 grey by swscale (area filter) and hashed.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Prober SyncArbiter and probe threads (clippy.toml)

use super::probe::{describe, init_ffmpeg, rational};
use super::streaming::BufferReader;
use super::{MediaInfo, ProbeError};
use crate::dedup::{AudioPrint, FrameHash};
use ffmpeg_next::format::context::Input;
use ffmpeg_next::software::scaling;
use std::path::Path;
use std::time::SystemTime;

/// How the pass samples and how strict it is (`[analysis]` in the config).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AnalysisSettings {
    /// `false`: probe only (headers and a first frame), no frame hashes, so
    /// no near-duplicates; for ingest machines that must spend no CPU on it.
    pub enabled: bool,
    /// One sample per this many milliseconds of video.
    pub sample_interval_ms: u64,
    /// Decode every frame while the reader is at most this far behind the
    /// bytes received (and for finished files up to this size); beyond it,
    /// decode keyframes only.
    pub full_decode_bytes: u64,
    /// Once every byte is there (finalize waiting), the rest is decoded in
    /// full only if that should take at most this long at the decode rate
    /// measured so far; otherwise it is skimmed by keyframes.
    pub finish_budget_ms: u64,
    /// Stop sampling (and decoding) after this many samples.
    pub max_samples: usize,
    /// Refuse a video whose fully decoded stream has errors or ends early.
    pub reject_corrupt: bool,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_interval_ms: 1000,
            full_decode_bytes: 32 << 20,
            finish_budget_ms: 500,
            max_samples: 7200,
            reject_corrupt: true,
        }
    }
}

/// One sampled frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Presentation time from the start of the stream, in milliseconds.
    pub pts_ms: u64,
    pub hash: FrameHash,
    /// Sampled because it is a keyframe (a scene change), not by the clock.
    pub keyframe: bool,
    /// How much the frame says: of the hash's 64 bits, how many are decided
    /// by a clear brightness step (`Hasher::information`). Black, white and
    /// near-blank frames score near 0; their hashes are noise.
    pub info: u8,
    /// Brightness levels of the frame's content (`dedup::Tone`); `None` in
    /// signatures stored before tones were taken.
    pub tone: Option<crate::dedup::Tone>,
}

/// What the analysis found.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub media: MediaInfo,
    pub samples: Vec<Sample>,
    /// Presentation times of the keyframes, in milliseconds.
    pub keyframes_ms: Vec<u64>,
    pub frames_decoded: u64,
    /// Packets passed over without decoding while the pass was behind.
    pub packets_skipped: u64,
    /// The samples do not cover the whole video: the sample limit was
    /// reached, or this is what was handed to finalize while the pass went on.
    pub partial: bool,
    /// Handed to finalize while the pass went on; the complete analysis follows.
    pub handed_over: bool,
    /// A 320-pixel-wide JPEG of the frame a tenth into the video (at most
    /// 1 s in), the video's thumbnail.
    pub thumbnail: Option<Vec<u8>>,
    /// The sound: its fingerprint, or why there is none.
    pub audio: AudioPrint,
    /// When the first bytes arrived (stream analysis only).
    pub first_byte_at: Option<SystemTime>,
    /// When the first sample was hashed.
    pub first_hash_at: Option<SystemTime>,
    /// When the last byte arrived (stream analysis only).
    pub bytes_complete_at: Option<SystemTime>,
    pub finished_at: SystemTime,
}

impl Analysis {
    /// What a probe alone knows: no samples.
    pub fn probed(media: MediaInfo) -> Self {
        Self {
            media,
            samples: Vec::new(),
            keyframes_ms: Vec::new(),
            frames_decoded: 0,
            packets_skipped: 0,
            partial: true,
            handed_over: false,
            thumbnail: None,
            audio: AudioPrint::Unknown,
            first_byte_at: None,
            first_hash_at: None,
            bytes_complete_at: None,
            finished_at: SystemTime::now(),
        }
    }
}

/// Analyses bytes that may still be arriving. Blocks until the upload ends.
/// If the upload completes while the pass is further behind than it can
/// decode within `finish_budget_ms`, it calls `handoff` once with what it
/// has so far (`partial`), for finalize to use at once, and carries on to
/// the end; the result is then the complete analysis.
pub fn analyze_stream(
    reader: BufferReader,
    settings: &AnalysisSettings,
    handoff: &mut dyn FnMut(Analysis),
) -> Result<Analysis, ProbeError> {
    init_ffmpeg();
    let gauge = reader.gauge();
    // Seekable only with a declared size. Without one, FFmpeg's size query
    // would wait for the last byte, and the MP4 demuxer, unable to tell that
    // `mdat` ends the file, skips over it to look for more atoms: the whole
    // upload. As a pipe, a faststart MP4, MKV or WebM is read at once; an MP4
    // with its index at the end fails here and is analysed from its file
    // after the upload.
    let io = if reader.declared_size().is_some() {
        ffmpeg_next::format::context::StreamIo::from_read_seek(reader)
    } else {
        ffmpeg_next::format::context::StreamIo::from_read(reader)
    };
    let io = io.map_err(|e| ProbeError::NotAVideo(format!("could not read the stream ({e})")))?;
    let ictx = ffmpeg_next::format::input_from_stream(io, None, None)
        .map_err(|e| ProbeError::NotAVideo(format!("no known container ({e})")))?;
    let mut pacer = Pacer::new(gauge.clone(), settings);
    let stamped = |mut analysis: Analysis| {
        analysis.first_byte_at = gauge.first_byte_at();
        analysis.bytes_complete_at = gauge.completed_at();
        analysis
    };
    let mut handoff = |analysis: Analysis| handoff(stamped(analysis));
    run(ictx, settings, &mut pacer, &mut handoff).map(stamped)
}

/// Analyses a finished file: in full up to `full_decode_bytes`, keyframes
/// only beyond.
pub fn analyze_file(path: &Path, settings: &AnalysisSettings) -> Result<Analysis, ProbeError> {
    init_ffmpeg();
    if !settings.enabled {
        return super::probe::probe_file(path).map(Analysis::probed);
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX);
    let ictx =
        ffmpeg_next::format::input(path).map_err(|e| ProbeError::NotAVideo(format!("no known container ({e})")))?;
    let pace = if size > settings.full_decode_bytes { Pace::Skim } else { Pace::Full };
    run(ictx, settings, &mut Fixed(pace), &mut |_| {})
}

/// How a pass keeps up: asked before each video packet, told what decoding cost.
trait Pacing {
    fn pace(&mut self) -> Pace;
    /// A packet of `bytes` was decoded in full, which took `took`.
    fn decoded(&mut self, _bytes: usize, _took: std::time::Duration) {}
}

/// A finished file: one pace throughout.
struct Fixed(Pace);

impl Pacing for Fixed {
    fn pace(&mut self) -> Pace {
        self.0
    }
}

/// Decides, packet by packet, how a pass over arriving bytes keeps up.
struct Pacer {
    gauge: super::streaming::Gauge,
    limit: u64,
    budget: std::time::Duration,
    /// Compressed bytes decoded in full, and the time that took: the rate.
    full_bytes: u64,
    full_time: std::time::Duration,
    handed_off: bool,
}

/// Assumed until measured: a slow decode (1080p H.264 at high bitrate).
const ASSUMED_FULL_RATE: f64 = 8e6;

impl Pacer {
    fn new(gauge: super::streaming::Gauge, settings: &AnalysisSettings) -> Self {
        let budget = std::time::Duration::from_millis(settings.finish_budget_ms);
        Self {
            gauge,
            limit: settings.full_decode_bytes,
            budget,
            full_bytes: 0,
            full_time: Default::default(),
            handed_off: false,
        }
    }
}

impl Pacing for Pacer {
    fn decoded(&mut self, bytes: usize, took: std::time::Duration) {
        self.full_bytes += bytes as u64;
        self.full_time += took;
    }

    fn pace(&mut self) -> Pace {
        let backlog = self.gauge.backlog();
        if self.gauge.completed_at().is_none() || self.handed_off {
            // Arriving, or nobody waiting any more: in full unless far behind.
            return if backlog > self.limit { Pace::Skim } else { Pace::Full };
        }
        // Every byte is there and finalize waits: decode the rest in full if
        // it is small (a 32nd of `limit`) or fits the budget at the rate
        // measured; otherwise hand finalize what there is and go on alone.
        let rate = if self.full_time.as_millis() >= 20 {
            self.full_bytes as f64 / self.full_time.as_secs_f64()
        } else {
            ASSUMED_FULL_RATE
        };
        if backlog <= self.limit / 32 || backlog as f64 <= rate * self.budget.as_secs_f64() {
            Pace::Full
        } else {
            self.handed_off = true;
            Pace::HandOff
        }
    }
}

/// How the pass keeps up with the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Decode every packet.
    Full,
    /// Behind: decode keyframes only.
    Skim,
    /// Every byte is there and the rest takes too long for finalize to
    /// wait: hand over what is sampled, then carry on.
    HandOff,
}

/// Consecutive demuxer errors after which the input is given up on.
const MAX_READ_ERRORS_IN_A_ROW: usize = 32;

fn run(
    mut ictx: Input,
    settings: &AnalysisSettings,
    pacing: &mut dyn Pacing,
    handoff: &mut dyn FnMut(Analysis),
) -> Result<Analysis, ProbeError> {
    let (media, index) = describe(&ictx)?;
    let stream = ictx.stream(index).expect("described");
    let time_base = rational(stream.time_base()).unwrap_or(1.0 / 90_000.0);
    let start = if stream.start_time() == ffmpeg_next::ffi::AV_NOPTS_VALUE { 0 } else { stream.start_time() };
    let indexed_frames = u64::try_from(stream.frames()).unwrap_or(0);
    let mut ctx = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| ProbeError::NotAVideo(format!("no decoder for the video stream ({e})")))?;
    if settings.reject_corrupt {
        // Report bitstream damage as errors instead of hiding it: what
        // `ffmpeg -err_detect explode -xerror` refuses, the pass refuses.
        // SAFETY: the context is allocated and not opened yet.
        unsafe {
            (*ctx.as_mut_ptr()).err_recognition |= ffmpeg_next::ffi::AV_EF_EXPLODE | ffmpeg_next::ffi::AV_EF_CRCCHECK;
        }
    }
    let decoder =
        ctx.decoder().video().map_err(|e| ProbeError::NotAVideo(format!("the video decoder failed ({e})")))?;

    let mut pass = Pass {
        decoder,
        settings,
        time_base,
        start,
        hasher: Hasher::default(),
        samples: Vec::new(),
        next_due_ms: 0,
        last_sample_ms: None,
        frames_decoded: 0,
        decode_errors: 0,
        first_hash_at: None,
        last_error: None,
        thumbnail_at_ms: media.duration_s.map_or(0, |d| ((d * 100.0) as u64).min(1000)),
        thumbnail: None,
        thumbnail_fallback: None,
    };
    // The sound is decoded in the same pass, every packet of it (cheap
    // beside the video, even while the video is skimmed).
    let (mut audio, mut no_audio) = match super::audio::AudioPass::open(&ictx) {
        None => (None, AudioPrint::Absent),
        Some(Ok(pass)) => (Some(pass), AudioPrint::Unknown),
        Some(Err(())) => (None, AudioPrint::Unknown),
    };
    let (mut keyframes_ms, mut packets, mut skipped) = (Vec::new(), 0u64, 0u64);
    let (mut read_errors, mut errors_in_a_row, mut skimming, mut last_end_ms) = (0u64, 0usize, false, 0u64);
    let mut stopped = false;
    loop {
        if pass.samples.len() >= settings.max_samples {
            stopped = true;
            break;
        }
        let mut packet = ffmpeg_next::Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => errors_in_a_row = 0,
            Err(ffmpeg_next::Error::Eof) => break,
            Err(e) => {
                read_errors += 1;
                errors_in_a_row += 1;
                pass.last_error = Some(format!("the container is damaged ({e})"));
                if errors_in_a_row >= MAX_READ_ERRORS_IN_A_ROW {
                    break;
                }
                continue;
            }
        }
        if let Some(audio) = audio.as_mut()
            && packet.stream() == audio.index()
        {
            audio.send(&packet);
            continue;
        }
        if packet.stream() != index {
            continue;
        }
        packets += 1;
        let pts_ms = packet.pts().or(packet.dts()).map(|t| pass.ms(t)).unwrap_or(0);
        last_end_ms = last_end_ms.max(pts_ms + pass.ms_len(packet.duration()));
        if packet.is_key() {
            keyframes_ms.push(pts_ms);
        }
        let mut now = pacing.pace();
        if now == Pace::HandOff {
            let mut sorted = keyframes_ms.clone();
            sorted.sort_unstable();
            sorted.dedup();
            let mut snapshot = pass.snapshot(&media, sorted, skipped);
            snapshot.audio = audio.as_ref().map_or(no_audio.clone(), |a| a.so_far());
            handoff(snapshot);
            now = pacing.pace();
        }
        if !packet.is_key() && (skimming || now != Pace::Full) {
            // Behind: pass over everything up to the next keyframe.
            skimming = true;
            skipped += 1;
            continue;
        }
        skimming = false;
        let started = std::time::Instant::now();
        if let Err(e) = pass.decoder.send_packet(&packet) {
            pass.decode_error(e);
        }
        pass.drain()?;
        if now == Pace::Full {
            pacing.decoded(packet.size(), started.elapsed());
        }
    }
    let _ = pass.decoder.send_eof();
    pass.drain()?;

    if pass.frames_decoded == 0 {
        return Err(ProbeError::NotAVideo("no video frame could be decoded".into()));
    }
    if settings.reject_corrupt && skipped == 0 && !stopped {
        if read_errors > 0 || pass.decode_errors > 0 {
            return Err(ProbeError::Corrupt(pass.last_error.unwrap_or_else(|| "the stream does not decode".into())));
        }
        if indexed_frames > 0 && packets < indexed_frames {
            return Err(ProbeError::Corrupt(format!(
                "the file is truncated: {packets} of {indexed_frames} video frames are there"
            )));
        }
        if let Some(duration) = media.duration_s {
            let declared_ms = (duration * 1000.0) as u64;
            if indexed_frames == 0 && last_end_ms + 1000.max(declared_ms / 20) < declared_ms {
                return Err(ProbeError::Corrupt(format!(
                    "the file is truncated: the video ends at {last_end_ms} ms of {declared_ms} ms"
                )));
            }
        }
    }
    keyframes_ms.sort_unstable();
    keyframes_ms.dedup();
    if let Some(pass) = audio.take() {
        no_audio = pass.finish();
    }
    Ok(Analysis {
        media,
        samples: pass.samples,
        keyframes_ms,
        frames_decoded: pass.frames_decoded,
        packets_skipped: skipped,
        partial: stopped,
        handed_over: false,
        thumbnail: match pass.thumbnail {
            Some((_, jpeg)) => jpeg,
            None => pass.thumbnail_fallback.as_ref().and_then(thumbnail_of),
        },
        audio: no_audio,
        first_byte_at: None,
        first_hash_at: pass.first_hash_at,
        bytes_complete_at: None,
        finished_at: SystemTime::now(),
    })
}

struct Pass<'a> {
    decoder: ffmpeg_next::decoder::Video,
    settings: &'a AnalysisSettings,
    time_base: f64,
    start: i64,
    hasher: Hasher,
    samples: Vec<Sample>,
    next_due_ms: u64,
    last_sample_ms: Option<u64>,
    frames_decoded: u64,
    decode_errors: u64,
    first_hash_at: Option<SystemTime>,
    last_error: Option<String>,
    thumbnail_at_ms: u64,
    /// Set once the thumbnail's frame went by (with its JPEG if it encoded).
    thumbnail: Option<(u64, Option<Vec<u8>>)>,
    thumbnail_fallback: Option<ffmpeg_next::frame::Video>,
}

fn thumbnail_of(frame: &ffmpeg_next::frame::Video) -> Option<Vec<u8>> {
    super::frames::Encoder::new(super::frames::ImageFormat::Jpeg, Some(THUMBNAIL_WIDTH)).encode(frame).ok()
}

impl Pass<'_> {
    /// What the pass has found so far, as a partial analysis.
    fn snapshot(&self, media: &MediaInfo, keyframes_ms: Vec<u64>, skipped: u64) -> Analysis {
        Analysis {
            media: media.clone(),
            samples: self.samples.clone(),
            keyframes_ms,
            frames_decoded: self.frames_decoded,
            packets_skipped: skipped,
            partial: true,
            handed_over: true,
            thumbnail: match &self.thumbnail {
                Some((_, jpeg)) => jpeg.clone(),
                None => self.thumbnail_fallback.as_ref().and_then(thumbnail_of),
            },
            // The caller adds what the sound says so far.
            audio: AudioPrint::Unknown,
            first_byte_at: None,
            first_hash_at: self.first_hash_at,
            bytes_complete_at: None,
            finished_at: SystemTime::now(),
        }
    }

    fn ms(&self, ts: i64) -> u64 {
        let ms = (ts.saturating_sub(self.start)) as f64 * self.time_base * 1000.0;
        if ms.is_finite() && ms > 0.0 { ms as u64 } else { 0 }
    }

    fn ms_len(&self, duration: i64) -> u64 {
        let ms = duration as f64 * self.time_base * 1000.0;
        if ms.is_finite() && ms > 0.0 { ms as u64 } else { 0 }
    }

    fn decode_error(&mut self, e: ffmpeg_next::Error) {
        self.decode_errors += 1;
        self.last_error = Some(format!("a frame does not decode ({e})"));
    }

    /// Takes every frame the decoder has ready, sampling the ones due.
    fn drain(&mut self) -> Result<(), ProbeError> {
        let mut frame = ffmpeg_next::frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => return Ok(()),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(e) => {
                    self.decode_error(e);
                    return Ok(());
                }
            }
            self.frames_decoded += 1;
            // What `ffmpeg -xerror` stops on: a frame the decoder flags as
            // damaged (concealed errors) rather than failing outright.
            // SAFETY: the frame was just filled by the decoder.
            let flagged = unsafe { (*frame.as_ptr()).decode_error_flags != 0 };
            if frame.is_corrupt() || flagged {
                self.decode_errors += 1;
                self.last_error = Some("a frame decodes with errors".into());
            }
            let pts_ms = frame.timestamp().or(frame.pts()).map(|t| self.ms(t)).unwrap_or(0);
            if self.thumbnail.is_none() {
                if pts_ms >= self.thumbnail_at_ms {
                    self.thumbnail = Some((pts_ms, thumbnail_of(&frame)));
                } else {
                    // Skimming may pass the thumbnail's time without a frame
                    // there: the last frame before it will do.
                    self.thumbnail_fallback = Some(frame.clone());
                }
            }
            let interval = self.settings.sample_interval_ms.max(1);
            let by_clock = pts_ms >= self.next_due_ms;
            let scene = frame.is_key() && self.last_sample_ms.is_none_or(|last| pts_ms >= last + interval / 4);
            if !(by_clock || scene) || self.samples.len() >= self.settings.max_samples {
                continue;
            }
            let Some((hash, info, tone)) = self.hasher.hash(&frame) else { continue };
            self.first_hash_at.get_or_insert_with(SystemTime::now);
            self.samples.push(Sample { pts_ms, hash, keyframe: !by_clock, info, tone: Some(tone) });
            self.last_sample_ms = Some(pts_ms);
            if by_clock {
                self.next_due_ms = (pts_ms / interval + 1) * interval;
            }
        }
    }
}

/// Scales a frame to grey, cuts away black borders (letterbox, pillarbox),
/// hashes what is left at 32x32 and scores how informative it is; keeps its
/// scaler while the frame format stays the same.
#[derive(Default)]
struct Hasher {
    scaler: Option<(scaling::Context, (ffmpeg_next::format::Pixel, u32, u32))>,
}

/// The grey image borders are looked for in (each side), before the crop is
/// scaled to `SIDE`.
const WORK: u32 = 128;
const SIDE: u32 = 32;
/// A row or column of the frame is border while no pixel in it is brighter
/// than this (video black is 16; compression noise adds a little).
const BORDER_MAX_LUMA: u8 = 32;
/// Borders are cut only if at least this share of each side is left.
const MIN_CONTENT_SHARE: f32 = 0.5;
/// A hash bit counts as decided when the two cells it compares differ by at
/// least this much brightness (of 255), on the 9x8 grid the hash is made of.
const DECIDED_STEP: f32 = 2.0;

/// Width of the thumbnail, in pixels.
pub const THUMBNAIL_WIDTH: u32 = 320;

impl Hasher {
    fn hash(&mut self, frame: &ffmpeg_next::frame::Video) -> Option<(FrameHash, u8, crate::dedup::Tone)> {
        let key = (frame.format(), frame.width(), frame.height());
        if key.1 == 0 || key.2 == 0 || key.0 == ffmpeg_next::format::Pixel::None {
            return None;
        }
        if self.scaler.as_ref().is_none_or(|(_, k)| *k != key) {
            let ctx = scaling::Context::get(
                key.0,
                key.1,
                key.2,
                ffmpeg_next::format::Pixel::GRAY8,
                WORK,
                WORK,
                scaling::Flags::AREA,
            )
            .ok()?;
            self.scaler = Some((ctx, key));
        }
        let (scaler, _) = self.scaler.as_mut()?;
        let mut grey = ffmpeg_next::frame::Video::empty();
        scaler.run(frame, &mut grey).ok()?;
        let (stride, data) = (grey.stride(0), grey.data(0));
        let mut packed = Vec::with_capacity((WORK * WORK) as usize);
        for row in 0..WORK as usize {
            packed.extend_from_slice(&data[row * stride..row * stride + WORK as usize]);
        }
        let image = image::GrayImage::from_raw(WORK, WORK, packed)?;
        Some(hash_grey(&image))
    }
}

/// Hash, information score and tone of a grey frame (any size): borders
/// cut, then scaled to 32x32.
pub fn hash_grey(image: &image::GrayImage) -> (FrameHash, u8, crate::dedup::Tone) {
    let (x, y, w, h) = content_box(image);
    let content = image::imageops::crop_imm(image, x, y, w, h).to_image();
    let small = image::imageops::resize(&content, SIDE, SIDE, image::imageops::FilterType::Triangle);
    (FrameHash::of_image(&small), information(&small), crate::dedup::Tone::of_grey(&small))
}

/// The part of the image inside its black borders: (x, y, width, height).
/// The whole image when the borders would leave too little (a dark frame is
/// not all border).
fn content_box(image: &image::GrayImage) -> (u32, u32, u32, u32) {
    let (w, h) = image.dimensions();
    let row_lit = |y: u32| (0..w).any(|x| image.get_pixel(x, y).0[0] > BORDER_MAX_LUMA);
    let col_lit = |x: u32| (0..h).any(|y| image.get_pixel(x, y).0[0] > BORDER_MAX_LUMA);
    let (Some(top), Some(bottom)) = ((0..h).find(|&y| row_lit(y)), (0..h).rev().find(|&y| row_lit(y))) else {
        return (0, 0, w, h);
    };
    let (Some(left), Some(right)) = ((0..w).find(|&x| col_lit(x)), (0..w).rev().find(|&x| col_lit(x))) else {
        return (0, 0, w, h);
    };
    let (cw, ch) = (right - left + 1, bottom - top + 1);
    if (cw as f32) < MIN_CONTENT_SHARE * w as f32 || (ch as f32) < MIN_CONTENT_SHARE * h as f32 {
        return (0, 0, w, h);
    }
    (left, top, cw, ch)
}

/// How many of the 64 bits of the frame's gradient hash are decided by a
/// clear step between neighbouring cells of its 9x8 grid. The idea of PDQ's
/// quality metric (gradient energy), measured where the hash looks: a flat
/// or near-blank frame's bits are decided by noise, so its hash says nothing
/// about what it shows (see ARCHITECTURE.md, "Which frames vote").
pub fn information(small: &image::GrayImage) -> u8 {
    let (w, h) = small.dimensions();
    // Mean brightness of each cell of a 9x8 grid, unrounded.
    let cell = |cx: u32, cy: u32| {
        let (x0, x1) = (cx * w / 9, ((cx + 1) * w / 9).max(cx * w / 9 + 1));
        let (y0, y1) = (cy * h / 8, ((cy + 1) * h / 8).max(cy * h / 8 + 1));
        let mut sum = 0u32;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += u32::from(small.get_pixel(x, y).0[0]);
            }
        }
        sum as f32 / ((x1 - x0) * (y1 - y0)) as f32
    };
    let mut decided = 0u8;
    for y in 0..8 {
        for x in 0..8 {
            if (cell(x, y) - cell(x + 1, y)).abs() >= DECIDED_STEP {
                decided += 1;
            }
        }
    }
    decided
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::AudioVerdict;
    use crate::media::streaming::streaming_buffer;
    use std::io::Write;

    fn make(dir: &Path, name: &str, source: &str, extra: &[&str]) -> std::path::PathBuf {
        let path = dir.join(name);
        let status = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source])
            .args(["-t", "6", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"])
            .args(extra)
            .arg(&path)
            .status()
            .expect("ffmpeg is installed");
        assert!(status.success());
        path
    }

    /// Audio fingerprints from real encodes: the same soundtrack re-encoded
    /// (AAC to Opus, 22 kHz mono) agrees, another does not, silence is no
    /// audio, a video without a stream has none, a steady tone never
    /// agrees with anything, and two noises never agree.
    #[test]
    fn audio_fingerprints_agree_across_encodes_and_tell_soundtracks_apart() {
        let dir = tempfile::tempdir().unwrap();
        let song = |notes: &str| format!("-f lavfi -i aevalsrc=0.3*sin(2*PI*t*({notes})):s=44100:d=10");
        let picture = "-f lavfi -i testsrc2=size=320x180:rate=25:duration=10";
        let a = song("330+110*mod(floor(t*3)\\,4)");
        let b = song("262*pow(2\\,mod(floor(t*2)\\,5)/6)");
        let noise = |colour: &str, seed: u32| {
            format!("-f lavfi -i anoisesrc=color={colour}:seed={seed}:sample_rate=44100:amplitude=0.3:d=10")
        };
        let x264 = "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -shortest";
        let files = [
            ("aac", format!("{picture} {a} {x264} -c:a aac -b:a 128k")),
            ("opus", format!("{picture} {a} {x264} -c:a libopus -b:a 48k")),
            ("mono", format!("{picture} {a} {x264} -c:a aac -ac 1 -ar 22050 -b:a 48k")),
            ("other", format!("{picture} {b} {x264} -c:a aac -b:a 128k")),
            ("silent", format!("{picture} -f lavfi -i anullsrc=r=44100:cl=stereo {x264} -c:a aac")),
            ("none", format!("{picture} {x264}")),
            ("tone", format!("{picture} -f lavfi -i sine=frequency=440:sample_rate=44100 {x264} -c:a aac")),
            ("tone2", format!("{picture} -f lavfi -i sine=frequency=660:sample_rate=44100 {x264} -c:a aac")),
            ("white", format!("{picture} {} {x264} -c:a aac", noise("white", 1))),
            ("white2", format!("{picture} {} {x264} -c:a aac", noise("white", 2))),
            ("white-opus", format!("{picture} {} {x264} -c:a libopus -b:a 48k", noise("white", 1))),
            ("pink", format!("{picture} {} {x264} -c:a aac", noise("pink", 3))),
            ("brown", format!("{picture} {} {x264} -c:a aac", noise("brown", 4))),
        ];
        let mut prints = std::collections::HashMap::new();
        for (name, args) in &files {
            let path = dir.path().join(format!("{name}.mp4"));
            let status = std::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(args.split_whitespace())
                .arg(&path)
                .status()
                .unwrap();
            assert!(status.success(), "{args}");
            prints.insert(*name, analyze_file(&path, &AnalysisSettings::default()).unwrap().audio);
        }
        let verdict = |x: &str, y: &str| prints[x].compare(&prints[y], 0, 0.25);
        assert!(matches!(verdict("aac", "opus"), AudioVerdict::Agree(_)), "{:?}", verdict("aac", "opus"));
        assert!(matches!(verdict("mono", "aac"), AudioVerdict::Agree(_)), "{:?}", verdict("mono", "aac"));
        assert!(
            matches!(verdict("aac", "other"), AudioVerdict::Disagree(e) if e > 0.35),
            "{:?}",
            verdict("aac", "other")
        );
        assert_eq!(prints["silent"], AudioPrint::Silent);
        assert_eq!(prints["none"], AudioPrint::Absent);
        assert_eq!(verdict("aac", "silent"), AudioVerdict::NoAudio);
        assert_eq!(verdict("tone", "tone2"), AudioVerdict::Abstain, "steady tones never agree, nor veto");
        assert_eq!(verdict("tone", "aac"), AudioVerdict::Abstain, "a steady tone says nothing of a song");
        // Two noises agree about as well as each agrees with itself a
        // second later, so they never agree (and never veto: noise says
        // nothing either way); the same noise re-encoded does agree.
        for (x, y) in [("white", "white2"), ("white", "pink"), ("pink", "brown"), ("white", "brown")] {
            assert!(!matches!(verdict(x, y), AudioVerdict::Agree(_)), "{x} {y}: {:?}", verdict(x, y));
        }
        assert!(
            matches!(verdict("white", "white-opus"), AudioVerdict::Agree(_)),
            "{:?}",
            verdict("white", "white-opus")
        );
    }

    #[test]
    fn a_file_is_sampled_once_a_second_plus_its_keyframes() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), "a.mp4", "testsrc2=size=320x240:rate=25", &["-g", "50"]);
        let analysis = analyze_file(&path, &AnalysisSettings::default()).unwrap();
        let clock: Vec<u64> = analysis.samples.iter().filter(|s| !s.keyframe).map(|s| s.pts_ms).collect();
        assert_eq!(clock, vec![0, 1000, 2000, 3000, 4000, 5000]);
        assert_eq!(analysis.keyframes_ms, vec![0, 2000, 4000]);
        assert_eq!(analysis.frames_decoded, 150);
        assert_eq!(analysis.packets_skipped, 0);
        assert!(analysis.first_hash_at.is_some());
    }

    #[test]
    fn a_stream_gives_the_same_samples_as_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), "b.mkv", "mandelbrot=size=320x240:rate=25", &[]);
        let bytes = std::fs::read(&path).unwrap();
        let from_file = analyze_file(&path, &AnalysisSettings::default()).unwrap();
        let mut spool = tempfile::NamedTempFile::new().unwrap();
        let (writer, reader) = streaming_buffer(std::fs::File::open(spool.path()).unwrap(), None);
        let thread = std::thread::spawn(move || analyze_stream(reader, &AnalysisSettings::default(), &mut |_| {}));
        for (i, piece) in bytes.chunks(7_919).enumerate() {
            spool.write_all(piece).unwrap();
            writer.advance(((i + 1) * 7_919).min(bytes.len()) as u64);
        }
        writer.complete();
        let from_stream = thread.join().unwrap().unwrap();
        assert_eq!(from_stream.samples, from_file.samples);
        assert!(from_stream.first_byte_at.unwrap() <= from_stream.first_hash_at.unwrap());
        assert!(from_stream.bytes_complete_at.is_some());
    }

    #[test]
    fn a_truncated_file_is_damaged_and_the_whole_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), "c.mp4", "testsrc2=size=320x240:rate=25", &["-movflags", "+faststart"]);
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        assert!(matches!(analyze_file(&cut, &AnalysisSettings::default()), Err(ProbeError::Corrupt(_))));
        let lenient = AnalysisSettings { reject_corrupt: false, ..AnalysisSettings::default() };
        assert!(analyze_file(&cut, &lenient).is_ok());
        assert!(analyze_file(&path, &AnalysisSettings::default()).is_ok());
    }

    #[test]
    fn far_behind_a_finished_upload_the_pass_hands_over_what_it_has_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), "e.mkv", "testsrc2=size=320x240:rate=25", &["-g", "25"]);
        let bytes = std::fs::read(&path).unwrap();
        let mut spool = tempfile::NamedTempFile::new().unwrap();
        spool.write_all(&bytes).unwrap();
        let (writer, reader) = streaming_buffer(std::fs::File::open(spool.path()).unwrap(), None);
        writer.advance(bytes.len() as u64);
        writer.complete();
        let tight = AnalysisSettings { full_decode_bytes: 1000, finish_budget_ms: 0, ..AnalysisSettings::default() };
        let mut handed = Vec::new();
        let full = analyze_stream(reader, &tight, &mut |a| handed.push(a)).unwrap();
        assert_eq!(handed.len(), 1, "handed over once");
        let early = &handed[0];
        assert!(early.partial && early.handed_over);
        assert!(!full.handed_over);
        assert!(early.frames_decoded < 150, "{}", early.frames_decoded);
        assert!(!full.partial);
        assert_eq!(full.samples.len(), 6, "the pass went on to the end");
        assert_eq!(early.samples[..], full.samples[..early.samples.len()]);
    }

    #[test]
    fn behind_the_writer_only_keyframes_are_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), "d.mp4", "testsrc2=size=320x240:rate=25", &["-g", "25"]);
        let skim = AnalysisSettings { full_decode_bytes: 0, ..AnalysisSettings::default() };
        let analysis = analyze_file(&path, &skim).unwrap();
        assert_eq!(analysis.frames_decoded, 6, "one keyframe a second");
        assert_eq!(analysis.packets_skipped, 144);
        assert_eq!(analysis.samples.len(), 6);
    }
}
