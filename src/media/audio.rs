//! The audio half of the analysis pass: decodes the best audio stream as
//! its packets go by, resamples it with swresample to what Chromaprint
//! reads (11,025 Hz mono, 16 bit), measures its level and fingerprints it.
//! Never fails the analysis: audio that does not decode is `Unknown`.
#![allow(clippy::disallowed_methods)] // a blocking module (clippy.toml)

use crate::dedup::{AudioPrint, SILENCE_DBFS};
use ffmpeg_next::software::resampling;
use ffmpeg_next::{ChannelLayout, format::Sample, format::sample::Type};
use rusty_chromaprint::{Configuration, Fingerprinter};

/// Audio after this much is not fingerprinted: ten minutes tell one
/// soundtrack from another, and keep a signature small (about 20 KB).
const MAX_SECONDS: u64 = 600;

pub(super) struct AudioPass {
    index: usize,
    decoder: ffmpeg_next::decoder::Audio,
    resampler: Option<(resampling::Context, (Sample, ChannelLayout, u32))>,
    printer: Fingerprinter,
    rate: u32,
    samples: u64,
    sum_squares: f64,
    /// Set when the audio stopped decoding: the print would be wrong.
    failed: bool,
}

impl AudioPass {
    /// The pass over the input's best audio stream, if it has one that can
    /// be decoded. `Err(())` when there is a stream but no decoder for it.
    pub(super) fn open(ictx: &ffmpeg_next::format::context::Input) -> Option<Result<Self, ()>> {
        let stream = ictx.streams().best(ffmpeg_next::media::Type::Audio)?;
        let open = || -> Result<Self, ffmpeg_next::Error> {
            let ctx = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())?;
            let decoder = ctx.decoder().audio()?;
            let config = Configuration::preset_test2();
            let mut printer = Fingerprinter::new(&config);
            let rate = config.sample_rate();
            printer.start(rate, 1).map_err(|_| ffmpeg_next::Error::InvalidData)?;
            Ok(Self {
                index: stream.index(),
                decoder,
                resampler: None,
                printer,
                rate,
                samples: 0,
                sum_squares: 0.0,
                failed: false,
            })
        };
        Some(open().map_err(|_| ()))
    }

    pub(super) fn index(&self) -> usize {
        self.index
    }

    fn done(&self) -> bool {
        self.failed || self.samples >= MAX_SECONDS * u64::from(self.rate)
    }

    pub(super) fn send(&mut self, packet: &ffmpeg_next::Packet) {
        if self.done() {
            return;
        }
        // A packet that does not decode is skipped, as a player would.
        if self.decoder.send_packet(packet).is_ok() {
            self.drain();
        }
    }

    fn drain(&mut self) {
        let mut frame = ffmpeg_next::frame::Audio::empty();
        while !self.done() && self.decoder.receive_frame(&mut frame).is_ok() {
            if frame.channel_layout().is_empty() {
                frame.set_channel_layout(ChannelLayout::default(i32::from(frame.channels().max(1))));
            }
            let key = (frame.format(), frame.channel_layout(), frame.rate());
            if self.resampler.as_ref().is_none_or(|(_, k)| *k != key) {
                match resampling::Context::get(
                    key.0,
                    key.1,
                    key.2,
                    Sample::I16(Type::Packed),
                    ChannelLayout::MONO,
                    self.rate,
                ) {
                    Ok(ctx) => self.resampler = Some((ctx, key)),
                    Err(_) => {
                        self.failed = true;
                        return;
                    }
                }
            }
            let Some((resampler, _)) = self.resampler.as_mut() else { return };
            let mut out = ffmpeg_next::frame::Audio::empty();
            if resampler.run(&frame, &mut out).is_err() {
                self.failed = true;
                return;
            }
            self.consume(&out);
        }
    }

    fn consume(&mut self, out: &ffmpeg_next::frame::Audio) {
        let n = out.samples();
        if n == 0 {
            return;
        }
        let bytes = &out.data(0)[..n * 2];
        let pcm: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_ne_bytes([b[0], b[1]])).collect();
        self.sum_squares += pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>();
        self.samples += pcm.len() as u64;
        self.printer.consume(&pcm);
    }

    /// What the audio decoded so far says, for an analysis handed over
    /// before the end: its print so far when it is audible, else `Unknown`
    /// (quiet so far is not silent throughout).
    pub(super) fn so_far(&self) -> AudioPrint {
        if self.failed || self.samples == 0 || self.level_dbfs() < SILENCE_DBFS {
            return AudioPrint::Unknown;
        }
        AudioPrint::Print(self.printer.fingerprint().to_vec())
    }

    fn level_dbfs(&self) -> f64 {
        let rms = (self.sum_squares / self.samples.max(1) as f64).sqrt() / 32768.0;
        if rms > 0.0 { 20.0 * rms.log10() } else { f64::NEG_INFINITY }
    }

    /// The fingerprint of everything decoded, or what the audio is instead.
    pub(super) fn finish(mut self) -> AudioPrint {
        if !self.failed {
            let _ = self.decoder.send_eof();
            self.drain();
        }
        if self.failed {
            return AudioPrint::Unknown;
        }
        if self.samples == 0 {
            return AudioPrint::Silent;
        }
        if self.level_dbfs() < SILENCE_DBFS {
            return AudioPrint::Silent;
        }
        self.printer.finish();
        AudioPrint::Print(self.printer.fingerprint().to_vec())
    }
}
