//! The ladder's facts, read back from its segments, and the manifests
//! written from them.
//!
//! The dash muxer's HLS master states nominal bitrates and no frame rate,
//! and neither manifest can know whether the encoder kept its promise of an
//! IDR frame at every segment start. So the ladder reads every segment it
//! wrote ([`super::cmaf`]), checks its guarantees ([`LadderFacts::check`]),
//! and writes the HLS master and the MPD's `bandwidth` and `codecs` from
//! what it measured.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Transcoder SyncArbiter (clippy.toml)

use super::cmaf::{self, Codec, Init, Segment, SegmentStart};
use std::fmt::Write as _;
use std::path::Path;

/// One representation of the ladder (a video rung or the audio), as written.
#[derive(Debug, Clone)]
pub struct Track {
    /// The muxer's representation id: `init-{id}.m4s`, `chunk-{id}-N.m4s`,
    /// `media_{id}.m3u8`.
    pub id: usize,
    pub init: Init,
    pub segments: Vec<Segment>,
}

impl Track {
    pub fn is_video(&self) -> bool {
        matches!(self.init.codec, Codec::Avc { .. })
    }

    fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / f64::from(self.init.timescale)
    }

    pub fn duration_s(&self) -> f64 {
        self.seconds(self.segments.iter().map(|s| s.duration).sum())
    }

    /// The highest bit rate of one segment (HLS `BANDWIDTH` is the peak
    /// segment bit rate). A final segment shorter than half a second (the
    /// AAC encoder's padding) is left out: its box overhead over a few
    /// milliseconds would be a peak no network ever sees.
    pub fn peak_bps(&self) -> u64 {
        let rate = |s: &Segment| (s.bytes * 8) as f64 / self.seconds(s.duration).max(1e-3);
        let long: Vec<&Segment> = self.segments.iter().filter(|s| self.seconds(s.duration) >= 0.5).collect();
        let considered: Vec<&Segment> = if long.is_empty() { self.segments.iter().collect() } else { long };
        considered.into_iter().map(rate).fold(0.0, f64::max).ceil() as u64
    }

    /// All bytes over the whole duration (HLS `AVERAGE-BANDWIDTH`).
    pub fn average_bps(&self) -> u64 {
        let bytes: u64 = self.segments.iter().map(|s| s.bytes).sum();
        ((bytes * 8) as f64 / self.duration_s().max(1e-3)).ceil() as u64
    }
}

/// Every representation the ladder wrote, video rungs first.
#[derive(Debug, Clone)]
pub struct LadderFacts {
    pub video: Vec<Track>,
    pub audio: Option<Track>,
}

/// A guarantee the written segments break; the ladder is not published.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("reading the segments: {0}")]
    Unreadable(String),
    #[error("segment {segment} of rung {rung} starts with NAL unit type {nal}, not an IDR frame")]
    NotIdr { rung: usize, segment: usize, nal: u8 },
    #[error("segment {segment} of rung {rung} starts with no coded slice")]
    NoSlice { rung: usize, segment: usize },
    #[error("rung {rung} has segments starting at {got:?}, rung 0 at {want:?} (decode time in the timescale)")]
    Misaligned { rung: usize, got: Vec<u64>, want: Vec<u64> },
    #[error("rung {rung} has timescale {got}, rung 0 {want}")]
    Timescale { rung: usize, got: u32, want: u32 },
}

impl LadderFacts {
    /// Reads `init-{id}.m4s` and `chunk-{id}-NNNNN.m4s` of `video_ids` and
    /// `audio_id` in `dir`. Blocks.
    pub fn read(dir: &Path, video_ids: &[usize], audio_id: Option<usize>) -> Result<Self, Broken> {
        let read = |id: usize| -> Result<Track, Broken> {
            let unreadable = |e: &dyn std::fmt::Display| Broken::Unreadable(format!("representation {id}: {e}"));
            let init = std::fs::read(dir.join(format!("init-{id}.m4s"))).map_err(|e| unreadable(&e))?;
            let init = cmaf::read_init(&init).map_err(|e| unreadable(&e))?;
            let prefix = format!("chunk-{id}-");
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| unreadable(&e))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix) && n.ends_with(".m4s"))
                .collect();
            names.sort();
            let segments = names
                .iter()
                .map(|n| {
                    let data = std::fs::read(dir.join(n)).map_err(|e| unreadable(&e))?;
                    cmaf::read_segment(&init, &data).map_err(|e| unreadable(&format!("{n}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Track { id, init, segments })
        };
        Ok(Self {
            video: video_ids.iter().map(|&id| read(id)).collect::<Result<_, _>>()?,
            audio: audio_id.map(read).transpose()?,
        })
    }

    /// What the ladder promises players: every video segment starts with
    /// an IDR frame, and every rung's segments start at the same times in
    /// the same timescale.
    pub fn check(&self) -> Result<(), Broken> {
        let Some(first) = self.video.first() else { return Ok(()) };
        let want: Vec<u64> = first.segments.iter().map(|s| s.decode_time).collect();
        for (rung, track) in self.video.iter().enumerate() {
            for (segment, s) in track.segments.iter().enumerate() {
                match s.start {
                    SegmentStart::Idr => {}
                    SegmentStart::NotIdr(nal) => return Err(Broken::NotIdr { rung, segment, nal }),
                    SegmentStart::Unknown => return Err(Broken::NoSlice { rung, segment }),
                }
            }
            if track.init.timescale != first.init.timescale {
                return Err(Broken::Timescale { rung, got: track.init.timescale, want: first.init.timescale });
            }
            let got: Vec<u64> = track.segments.iter().map(|s| s.decode_time).collect();
            if got != want {
                return Err(Broken::Misaligned { rung, got, want });
            }
        }
        Ok(())
    }

    /// The HLS master playlist: one variant per video rung, highest first,
    /// with the measured peak and average bit rates (audio included), the
    /// codecs of the init segments, the size and the frame rate; the audio
    /// as one rendition group. Only written for a ladder that passed
    /// [`Self::check`], hence `#EXT-X-INDEPENDENT-SEGMENTS`.
    pub fn hls_master(&self, sizes: &[(u32, u32)], frame_rate: f64) -> String {
        let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        let (audio_peak, audio_avg, audio_codec) = match &self.audio {
            Some(a) => {
                let _ = writeln!(
                    out,
                    "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"media_{}.m3u8\"",
                    a.id
                );
                (a.peak_bps(), a.average_bps(), Some(a.init.codec.rfc6381()))
            }
            None => (0, 0, None),
        };
        for (track, &(width, height)) in self.video.iter().zip(sizes) {
            let codecs = match &audio_codec {
                Some(a) => format!("{},{a}", track.init.codec),
                None => track.init.codec.to_string(),
            };
            let _ = write!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={width}x{height},FRAME-RATE={frame_rate:.3},CODECS=\"{codecs}\"",
                track.peak_bps() + audio_peak,
                track.average_bps() + audio_avg,
            );
            if self.audio.is_some() {
                out.push_str(",AUDIO=\"audio\"");
            }
            let _ = writeln!(out, "\nmedia_{}.m3u8", track.id);
        }
        out
    }

    /// The muxer's MPD with each representation's `bandwidth` set to its
    /// measured peak and its `codecs` to what its init segment says, and
    /// without the muxer's `bitstreamSwitching="true"`: each rung has its
    /// own init segment (parameter sets out of band, `avc1`), so a player
    /// must append the new rung's init segment when it switches, which is
    /// what the attribute's absence (false) tells it.
    pub fn fix_mpd(&self, mpd: &str) -> String {
        let tracks: Vec<&Track> = self.video.iter().chain(&self.audio).collect();
        let mut out = String::with_capacity(mpd.len());
        for line in mpd.split_inclusive('\n') {
            let without;
            let line = if line.trim_start().starts_with("<AdaptationSet ") {
                without = line.replace(" bitstreamSwitching=\"true\"", "");
                without.as_str()
            } else {
                line
            };
            let track = line
                .trim_start()
                .strip_prefix("<Representation id=\"")
                .and_then(|rest| rest.split('"').next()?.parse::<usize>().ok())
                .and_then(|id| tracks.iter().find(|t| t.id == id));
            match track {
                Some(track) => {
                    let line = set_attr(line, "bandwidth", &track.peak_bps().to_string());
                    out.push_str(&set_attr(&line, "codecs", &track.init.codec.rfc6381()));
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// `line` with the value of attribute `name` replaced (or left as it is
/// when the attribute is absent).
fn set_attr(line: &str, name: &str, value: &str) -> String {
    let key = format!(" {name}=\"");
    let Some(start) = line.find(&key).map(|i| i + key.len()) else { return line.to_owned() };
    let Some(len) = line[start..].find('"') else { return line.to_owned() };
    format!("{}{value}{}", &line[..start], &line[start + len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: usize, codec: Codec, timescale: u32, segs: &[(u64, u64, u64)]) -> Track {
        Track {
            id,
            init: Init { timescale, codec },
            segments: segs
                .iter()
                .map(|&(decode_time, duration, bytes)| Segment {
                    decode_time,
                    duration,
                    bytes,
                    start: SegmentStart::Idr,
                })
                .collect(),
        }
    }

    const AVC: Codec = Codec::Avc { profile: 100, constraints: 0, level: 31, nal_length_size: 4 };

    #[test]
    fn bandwidths_are_measured_peaks_and_averages() {
        // 2 s segments of 250 kB and 500 kB: peak 2 Mbit/s, average 1.5 Mbit/s.
        let v = track(0, AVC, 1000, &[(0, 2000, 250_000), (2000, 2000, 500_000)]);
        assert_eq!(v.peak_bps(), 2_000_000);
        assert_eq!(v.average_bps(), 1_500_000);
        // A last audio segment of 64 ms is no peak.
        let a = track(2, Codec::Mp4a { object_type: 2 }, 48000, &[(0, 96000, 32_000), (96000, 3072, 4_000)]);
        assert_eq!(a.peak_bps(), 128_000);
        let facts = LadderFacts { video: vec![v], audio: Some(a) };
        let master = facts.hls_master(&[(1280, 720)], 30.0);
        assert!(master.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{master}");
        assert!(master.contains("BANDWIDTH=2128000,AVERAGE-BANDWIDTH="), "{master}");
        assert!(
            master.contains("FRAME-RATE=30.000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"audio\"\nmedia_0.m3u8"),
            "{master}"
        );
        assert!(master.contains("URI=\"media_2.m3u8\""), "{master}");
    }

    #[test]
    fn the_mpd_gets_measured_bandwidths_and_init_codecs() {
        let facts = LadderFacts { video: vec![track(0, AVC, 1000, &[(0, 2000, 250_000)])], audio: None };
        let mpd = "<AdaptationSet id=\"0\" bitstreamSwitching=\"true\" par=\"16:9\">\n\t<Representation id=\"0\" mimeType=\"video/mp4\" codecs=\"avc1.640028\" bandwidth=\"5000000\" width=\"1\">\n<Representation id=\"7\" bandwidth=\"1\">\n";
        let fixed = facts.fix_mpd(mpd);
        assert!(fixed.contains("codecs=\"avc1.64001f\" bandwidth=\"1000000\" width=\"1\""), "{fixed}");
        assert!(fixed.contains("<Representation id=\"7\" bandwidth=\"1\">"), "an unknown id is left alone: {fixed}");
        assert!(fixed.starts_with("<AdaptationSet id=\"0\" par=\"16:9\">"), "{fixed}");
    }

    #[test]
    fn a_segment_that_does_not_start_with_idr_breaks_the_ladder() {
        let mut v = track(0, AVC, 1000, &[(0, 2000, 1), (2000, 2000, 1)]);
        let w = track(1, AVC, 1000, &[(0, 2000, 1), (2000, 2000, 1)]);
        assert!(LadderFacts { video: vec![v.clone(), w.clone()], audio: None }.check().is_ok());
        v.segments[1].start = SegmentStart::NotIdr(1);
        assert!(matches!(
            LadderFacts { video: vec![v, w.clone()], audio: None }.check(),
            Err(Broken::NotIdr { rung: 0, segment: 1, nal: 1 })
        ));
        let shifted = track(0, AVC, 1000, &[(0, 2000, 1), (2033, 2000, 1)]);
        assert!(matches!(
            LadderFacts { video: vec![w, shifted], audio: None }.check(),
            Err(Broken::Misaligned { rung: 1, .. })
        ));
    }
}
