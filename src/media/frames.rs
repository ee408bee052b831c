//! Frames of a stored video as images: the frame shown at a time, or many
//! in one pass. Requests are sorted by time; the decoder seeks (to the
//! keyframe before a time) only when the next time is behind it or far
//! ahead, and otherwise decodes forward, so a batch costs about one pass
//! over the blocks it touches. Frames before a target that no other frame
//! references (B-frames, mostly) are not decoded at all. A batch over a long
//! video is split by time between up to `MAX_WORKERS` decoders on threads of
//! their own, each with its own file handle. Runs on the `FrameGrabber`
//! threads.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the FrameGrabber SyncArbiter (clippy.toml)

use super::probe::init_ffmpeg;
use actix::{Actor, Handler, Message, SyncContext};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame::Video;
use ffmpeg_next::software::scaling;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameError {
    #[error("{pts_ns} ns is beyond the end of the video ({duration_ns} ns)")]
    BeyondEnd { pts_ns: i64, duration_ns: i64 },
    #[error("the video could not be decoded: {0}")]
    Undecodable(String),
}

/// Frames at `pts_ns` (answered in request order) of the file at `path`.
#[derive(Message)]
#[rtype(result = "Result<Vec<Vec<u8>>, FrameError>")]
pub struct GrabFrames {
    pub path: PathBuf,
    pub pts_ns: Vec<i64>,
    pub format: ImageFormat,
    pub width: Option<u32>,
}

/// A `SyncArbiter` actor: decoding is CPU-bound and blocking.
pub struct FrameGrabber;

impl Actor for FrameGrabber {
    type Context = SyncContext<Self>;
}

impl Handler<GrabFrames> for FrameGrabber {
    type Result = Result<Vec<Vec<u8>>, FrameError>;

    fn handle(&mut self, msg: GrabFrames, _: &mut SyncContext<Self>) -> Self::Result {
        grab_frames(&msg)
    }
}

/// Decoding forward is preferred to seeking when the next time is at most
/// this far ahead (about one keyframe interval of common encodes).
const FORWARD_NS: i64 = 2_000_000_000;
const MAX_ERRORS_IN_A_ROW: usize = 32;

fn undecodable(e: impl std::fmt::Display) -> FrameError {
    FrameError::Undecodable(e.to_string())
}

/// Images made by one decoder, with the request index of each.
type Encoded = Vec<(usize, Vec<u8>)>;

/// Decoders one batch may use at once.
const MAX_WORKERS: usize = 2;

pub fn grab_frames(req: &GrabFrames) -> Result<Vec<Vec<u8>>, FrameError> {
    init_ffmpeg();
    let ictx = ffmpeg_next::format::input(&req.path).map_err(undecodable)?;
    let duration_ns = ictx.duration().max(0) * 1000;
    if let Some(&pts_ns) = req.pts_ns.iter().find(|&&t| t < 0 || t >= duration_ns) {
        return Err(FrameError::BeyondEnd { pts_ns, duration_ns });
    }
    let mut order: Vec<usize> = (0..req.pts_ns.len()).collect();
    order.sort_by_key(|&i| req.pts_ns[i]);
    // Blocks: runs of targets each within FORWARD_NS of the previous one,
    // decoded forward by one decoder after one seek. Up to MAX_WORKERS
    // decoders take blocks from a shared queue, in time order.
    let mut blocks: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        match blocks.last_mut() {
            Some(block) if req.pts_ns[i] - req.pts_ns[*block.last().expect("not empty")] <= FORWARD_NS => block.push(i),
            _ => blocks.push(vec![i]),
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = MAX_WORKERS.min(cores).min(blocks.len()).max(1);
    let queue = std::sync::Mutex::new(blocks.into_iter());
    let mut first = Some(ictx);
    let results: Vec<Result<Encoded, FrameError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (ictx, queue) = (first.take(), &queue);
                scope.spawn(move || -> Result<Encoded, FrameError> {
                    let ictx = match ictx {
                        Some(ictx) => ictx,
                        None => ffmpeg_next::format::input(&req.path).map_err(undecodable)?,
                    };
                    let mut cursor = Cursor::open(ictx)?;
                    let mut encoder = Encoder::new(req.format, req.width);
                    let mut done = Vec::new();
                    loop {
                        let Some(block) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else {
                            return Ok(done);
                        };
                        for i in block {
                            let frame = cursor.frame_at(req.pts_ns[i])?;
                            done.push((i, encoder.encode(&frame)?));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(FrameError::Undecodable("the decoder failed".into()))))
            .collect()
    });
    let mut out = vec![Vec::new(); req.pts_ns.len()];
    for group in results {
        for (i, bytes) in group? {
            out[i] = bytes;
        }
    }
    Ok(out)
}

/// Frames shown more than four frame durations (at least this) before a
/// target are never the answer: those no other frame references need not
/// be decoded.
const MIN_SKIP_MARGIN_NS: i64 = 50_000_000;

/// A decoder over one video stream that remembers where it is.
struct Cursor {
    ictx: ffmpeg_next::format::context::Input,
    decoder: ffmpeg_next::decoder::Video,
    index: usize,
    time_base: f64,
    /// The frame decoded past the last target, kept for the next one.
    pending: Option<(i64, Video)>,
    /// The frame answered last (shown at the last target).
    shown: Option<(i64, Video)>,
    eof: bool,
    /// The time being decoded towards.
    target: i64,
    skipping: bool,
    skip_margin: i64,
}

impl Cursor {
    fn open(ictx: ffmpeg_next::format::context::Input) -> Result<Self, FrameError> {
        let stream = ictx
            .streams()
            .best(ffmpeg_next::media::Type::Video)
            .ok_or_else(|| FrameError::Undecodable("no video stream".into()))?;
        let index = stream.index();
        let time_base = f64::from(stream.time_base());
        let decoder = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(undecodable)?;
        let frame_ns = super::probe::rational(stream.avg_frame_rate()).map_or(0, |fps| (1e9 / fps) as i64);
        let skip_margin = (4 * frame_ns).max(MIN_SKIP_MARGIN_NS);
        Ok(Self {
            ictx,
            decoder,
            index,
            time_base,
            pending: None,
            shown: None,
            eof: false,
            target: 0,
            skipping: false,
            skip_margin,
        })
    }

    fn pts_ns(&self, frame: &Video) -> i64 {
        let ts = frame.timestamp().or(frame.pts()).unwrap_or(0);
        (ts as f64 * self.time_base * 1e9).round() as i64
    }

    fn next_frame(&mut self) -> Result<Option<(i64, Video)>, FrameError> {
        if let Some(pending) = self.pending.take() {
            return Ok(Some(pending));
        }
        let mut errors = 0;
        loop {
            let mut frame = Video::empty();
            if self.decoder.receive_frame(&mut frame).is_ok() {
                let pts = self.pts_ns(&frame);
                return Ok(Some((pts, frame)));
            }
            if self.eof {
                return Ok(None);
            }
            let mut packet = ffmpeg_next::Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    errors = 0;
                    if packet.stream() == self.index {
                        let at = packet.pts().or(packet.dts()).map(|ts| (ts as f64 * self.time_base * 1e9) as i64);
                        let skip = at.is_some_and(|at| at < self.target - self.skip_margin);
                        if skip != self.skipping {
                            self.skipping = skip;
                            self.decoder.skip_frame(if skip {
                                ffmpeg_next::Discard::NonReference
                            } else {
                                ffmpeg_next::Discard::Default
                            });
                        }
                        let _ = self.decoder.send_packet(&packet);
                    }
                }
                Err(ffmpeg_next::Error::Eof) => {
                    self.eof = true;
                    let _ = self.decoder.send_eof();
                }
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_ERRORS_IN_A_ROW {
                        return Err(undecodable(e));
                    }
                }
            }
        }
    }

    fn seek(&mut self, pts_ns: i64) -> Result<(), FrameError> {
        let us = pts_ns / 1000;
        self.ictx.seek(us, ..us + 1).map_err(undecodable)?;
        self.decoder.flush();
        self.pending = None;
        self.shown = None;
        self.eof = false;
        Ok(())
    }

    /// The frame shown at `target`: the last one whose time is not after it.
    fn frame_at(&mut self, target: i64) -> Result<Video, FrameError> {
        self.target = target;
        let here = self.shown.as_ref().map(|(t, _)| *t).or(self.pending.as_ref().map(|(t, _)| *t));
        let forward = here.is_some_and(|t| t <= target && target - t <= FORWARD_NS)
            || self.pending.as_ref().is_some_and(|(t, _)| *t > target && self.shown.is_some());
        if !forward {
            self.seek(target)?;
        }
        let mut best = self.shown.take();
        while let Some((t, frame)) = self.next_frame()? {
            if t <= target || best.is_none() {
                best = Some((t, frame));
                if t > target {
                    break;
                }
            } else {
                self.pending = Some((t, frame));
                break;
            }
        }
        let (t, frame) = best.ok_or_else(|| FrameError::Undecodable("no frame at that time".into()))?;
        self.shown = Some((t, frame.clone()));
        Ok(frame)
    }
}

/// Frames to PNG or JPEG bytes, scaled to a width (aspect kept).
pub(crate) struct Encoder {
    scaler: Option<(scaling::Context, (Pixel, u32, u32))>,
    format: ImageFormat,
    width: Option<u32>,
}

impl Encoder {
    pub(crate) fn new(format: ImageFormat, width: Option<u32>) -> Self {
        Self { scaler: None, format, width }
    }

    pub(crate) fn encode(&mut self, frame: &Video) -> Result<Vec<u8>, FrameError> {
        let (fw, fh) = (frame.width(), frame.height());
        let w = self.width.unwrap_or(fw).max(2);
        let h = ((u64::from(w) * u64::from(fh) / u64::from(fw.max(1))) as u32).max(2);
        let key = (frame.format(), fw, fh);
        // Built from a decoded frame's own format: a scaler made while the
        // format is still unknown aborts the process (BUILD-NOTES).
        if self.scaler.as_ref().is_none_or(|(_, k)| *k != key) {
            let ctx = scaling::Context::get(frame.format(), fw, fh, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)
                .map_err(undecodable)?;
            self.scaler = Some((ctx, key));
        }
        let (scaler, _) = self.scaler.as_mut().expect("set above");
        let mut rgb = Video::empty();
        scaler.run(frame, &mut rgb).map_err(undecodable)?;
        let stride = rgb.stride(0);
        let data = rgb.data(0);
        let mut packed = Vec::with_capacity((w * h * 3) as usize);
        for row in 0..h as usize {
            packed.extend_from_slice(&data[row * stride..row * stride + w as usize * 3]);
        }
        let image = image::RgbImage::from_raw(w, h, packed).ok_or_else(|| undecodable("frame size mismatch"))?;
        let mut out = std::io::Cursor::new(Vec::new());
        match self.format {
            ImageFormat::Png => image.write_to(&mut out, image::ImageFormat::Png).map_err(undecodable)?,
            ImageFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
                .encode_image(&image)
                .map_err(undecodable)?,
        }
        Ok(out.into_inner())
    }
}
