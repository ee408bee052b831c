//! Reading back what the ladder wrote: the facts a strict player or
//! packager checks in fragmented MP4 (CMAF) init and media segments.
//!
//! The ladder does not trust the muxer's manifests for these: the codec
//! string comes from each init segment's `avcC` (or `esds`), the bandwidths
//! from the segments' measured sizes and durations, and the claim that every
//! segment can be started on (`#EXT-X-INDEPENDENT-SEGMENTS`, DASH
//! `startWithSAP="1"`) from the first NAL unit of each segment's first
//! sample. Only ISO BMFF boxes the dash muxer writes are read; anything else
//! is an [`InspectError`], never a panic.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Transcoder SyncArbiter (clippy.toml)

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what}: {why}")]
pub struct InspectError {
    what: &'static str,
    why: String,
}

fn bad(what: &'static str, why: impl Into<String>) -> InspectError {
    InspectError { what, why: why.into() }
}

/// What a track's sample entry says about its codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// H.264: the `avcC` profile, constraint flags and level, and the size
    /// of the NAL unit length prefix in samples.
    Avc { profile: u8, constraints: u8, level: u8, nal_length_size: u8 },
    /// MPEG-4 audio with its audio object type (2 = AAC LC).
    Mp4a { object_type: u8 },
}

impl Codec {
    /// The RFC 6381 string that HLS `CODECS` and DASH `codecs` carry.
    pub fn rfc6381(&self) -> String {
        match self {
            Self::Avc { profile, constraints, level, .. } => format!("avc1.{profile:02x}{constraints:02x}{level:02x}"),
            Self::Mp4a { object_type } => format!("mp4a.40.{object_type}"),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc6381())
    }
}

/// An init segment's one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub timescale: u32,
    pub codec: Codec,
}

/// How a video segment's first sample begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentStart {
    /// The first coded slice is an IDR picture (NAL unit type 5): a decoder
    /// needs nothing from an earlier segment.
    Idr,
    /// The first coded slice is of this other NAL unit type (1: a non-IDR
    /// slice, even when it is an I slice).
    NotIdr(u8),
    /// Not video, or no slice was found.
    Unknown,
}

/// One media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `tfdt`: decode time of the first sample, in the track's timescale.
    pub decode_time: u64,
    /// Sum of the sample durations, in the track's timescale.
    pub duration: u64,
    /// Size of the whole segment file.
    pub bytes: u64,
    pub start: SegmentStart,
}

/// One ISO BMFF box: its type, where it starts in its parent, its payload.
#[derive(Clone, Copy)]
struct Bmff<'a> {
    kind: [u8; 4],
    at: usize,
    payload: &'a [u8],
}

/// The boxes of `data`, in order; a size that runs past the end is an error.
fn boxes(data: &[u8]) -> Result<Vec<Bmff<'_>>, InspectError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < 8 {
            return Err(bad("box", format!("{} stray bytes at {at}", rest.len())));
        }
        let size32 = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes"));
        let kind: [u8; 4] = rest[4..8].try_into().expect("4 bytes");
        let (header, size) = match size32 {
            0 => (8, rest.len()),
            1 => {
                let large = rest.get(8..16).ok_or_else(|| bad("box", "truncated large size"))?;
                (16, usize::try_from(u64::from_be_bytes(large.try_into().expect("8 bytes"))).unwrap_or(usize::MAX))
            }
            n => (8, n as usize),
        };
        if size < header || size > rest.len() {
            return Err(bad("box", format!("{} of size {size} at {at} overruns {}", name(&kind), rest.len())));
        }
        out.push(Bmff { kind, at, payload: &rest[header..size] });
        at += size;
    }
    Ok(out)
}

fn name(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).into_owned()
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<&'a [u8], InspectError> {
    boxes(data)?
        .into_iter()
        .find(|b| &b.kind == kind)
        .map(|b| b.payload)
        .ok_or_else(|| bad("box", format!("no {}", name(kind))))
}

fn path<'a>(data: &'a [u8], kinds: &[&[u8; 4]]) -> Result<&'a [u8], InspectError> {
    kinds.iter().try_fold(data, |at, kind| child(at, kind))
}

/// Big-endian reads that fail instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Self { data, at: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], InspectError> {
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| bad(self.what, "truncated"))?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, InspectError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, InspectError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, InspectError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.at..];
        self.at = self.data.len();
        out
    }
}

/// Reads an init segment (`ftyp` + `moov` with one track).
pub fn read_init(data: &[u8]) -> Result<Init, InspectError> {
    let mdia = path(data, &[b"moov", b"trak", b"mdia"])?;
    let mdhd = child(mdia, b"mdhd")?;
    let mut r = Reader::new(mdhd, "mdhd");
    let version = r.u8()?;
    r.take(3)?;
    r.take(if version == 1 { 16 } else { 8 })?;
    let timescale = r.u32()?;
    if timescale == 0 {
        return Err(bad("mdhd", "timescale 0"));
    }
    let stsd = path(mdia, &[b"minf", b"stbl", b"stsd"])?;
    let mut r = Reader::new(stsd, "stsd");
    r.take(8)?; // version, flags, entry count
    let entries = boxes(r.rest())?;
    let Bmff { kind, payload: entry, .. } = *entries.first().ok_or_else(|| bad("stsd", "no sample entry"))?;
    match &kind {
        b"avc1" | b"avc3" => {
            let mut r = Reader::new(entry, "avc1");
            // Reserved fields, the data reference, the coded size, the
            // resolution, the frame count, the compressor name and the depth.
            r.take(78)?;
            let avcc = child(r.rest(), b"avcC")?;
            let mut r = Reader::new(avcc, "avcC");
            r.u8()?;
            let (profile, constraints, level) = (r.u8()?, r.u8()?, r.u8()?);
            let nal_length_size = (r.u8()? & 3) + 1;
            Ok(Init { timescale, codec: Codec::Avc { profile, constraints, level, nal_length_size } })
        }
        b"mp4a" => {
            let mut r = Reader::new(entry, "mp4a");
            r.take(28)?;
            let esds = child(r.rest(), b"esds")?;
            Ok(Init { timescale, codec: Codec::Mp4a { object_type: audio_object_type(esds)? } })
        }
        other => Err(bad("stsd", format!("unexpected sample entry {}", name(other)))),
    }
}

/// The audio object type in an `esds` box's DecoderSpecificInfo.
fn audio_object_type(esds: &[u8]) -> Result<u8, InspectError> {
    let mut r = Reader::new(esds, "esds");
    r.take(4)?;
    let descriptor = |r: &mut Reader<'_>| -> Result<(u8, usize), InspectError> {
        let tag = r.u8()?;
        let mut len = 0usize;
        for _ in 0..4 {
            let b = r.u8()?;
            len = (len << 7) | usize::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
        Ok((tag, len))
    };
    let (tag, _) = descriptor(&mut r)?;
    if tag != 3 {
        return Err(bad("esds", "no ES descriptor"));
    }
    r.take(2)?;
    let flags = r.u8()?;
    if flags & 0x80 != 0 {
        r.take(2)?;
    }
    if flags & 0x40 != 0 {
        let len = r.u8()?;
        r.take(usize::from(len))?;
    }
    if flags & 0x20 != 0 {
        r.take(2)?;
    }
    let (tag, _) = descriptor(&mut r)?;
    if tag != 4 {
        return Err(bad("esds", "no decoder config"));
    }
    let object = r.u8()?;
    if object != 0x40 {
        return Err(bad("esds", format!("object type 0x{object:02x} is not MPEG-4 audio")));
    }
    r.take(12)?;
    let (tag, _) = descriptor(&mut r)?;
    if tag != 5 {
        return Err(bad("esds", "no decoder specific info"));
    }
    Ok(r.u8()? >> 3)
}

/// Reads a media segment (`styp`? `sidx`? `moof` `mdat`) of the track that
/// `init` describes.
pub fn read_segment(init: &Init, data: &[u8]) -> Result<Segment, InspectError> {
    let (moof_start, moof) = boxes(data)?
        .into_iter()
        .find(|b| &b.kind == b"moof")
        .map(|b| (b.at, b.payload))
        .ok_or_else(|| bad("segment", "no moof"))?;
    let traf = child(moof, b"traf")?;
    let tfhd = child(traf, b"tfhd")?;
    let mut r = Reader::new(tfhd, "tfhd");
    let flags = r.u32()? & 0x00ff_ffff;
    r.u32()?; // track id
    if flags & 0x01 != 0 {
        r.u64()?;
    }
    if flags & 0x02 != 0 {
        r.u32()?;
    }
    let default_duration = if flags & 0x08 != 0 { Some(r.u32()?) } else { None };
    let default_size = if flags & 0x10 != 0 { Some(r.u32()?) } else { None };

    let tfdt = child(traf, b"tfdt")?;
    let mut r = Reader::new(tfdt, "tfdt");
    let version = r.u8()?;
    r.take(3)?;
    let decode_time = if version == 1 { r.u64()? } else { u64::from(r.u32()?) };

    let mut duration = 0u64;
    let mut first: Option<(usize, usize)> = None;
    for Bmff { kind, payload: trun, .. } in boxes(traf)? {
        if &kind != b"trun" {
            continue;
        }
        let mut r = Reader::new(trun, "trun");
        let flags = r.u32()? & 0x00ff_ffff;
        let count = r.u32()?;
        let data_offset = if flags & 0x01 != 0 { Some(r.u32()? as i32) } else { None };
        if flags & 0x04 != 0 {
            r.u32()?;
        }
        for i in 0..count {
            let d = if flags & 0x100 != 0 {
                r.u32()?
            } else {
                default_duration.ok_or_else(|| bad("trun", "no duration"))?
            };
            let s = if flags & 0x200 != 0 { r.u32()? } else { default_size.ok_or_else(|| bad("trun", "no size"))? };
            if flags & 0x400 != 0 {
                r.u32()?;
            }
            if flags & 0x800 != 0 {
                r.u32()?;
            }
            duration += u64::from(d);
            if first.is_none() && i == 0 {
                let off = data_offset.ok_or_else(|| bad("trun", "no data offset"))?;
                let start = usize::try_from(i64::try_from(moof_start).unwrap_or(i64::MAX) + i64::from(off))
                    .map_err(|_| bad("trun", "negative data offset"))?;
                first = Some((start, s as usize));
            }
        }
    }
    let start = match (&init.codec, first) {
        (Codec::Avc { nal_length_size, .. }, Some((at, len))) => {
            let sample = at
                .checked_add(len)
                .and_then(|end| data.get(at..end))
                .ok_or_else(|| bad("mdat", "the first sample is outside the segment"))?;
            first_slice(sample, *nal_length_size)?
        }
        _ => SegmentStart::Unknown,
    };
    Ok(Segment { decode_time, duration, bytes: data.len() as u64, start })
}

/// The type of the first coded slice (NAL unit types 1 to 5) of a sample
/// of length-prefixed NAL units; parameter sets, SEI and delimiters before
/// it are skipped.
fn first_slice(sample: &[u8], length_size: u8) -> Result<SegmentStart, InspectError> {
    let mut r = Reader::new(sample, "sample");
    while r.at < sample.len() {
        let len = r.take(usize::from(length_size))?.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let nal = r.take(len)?;
        let Some(&header) = nal.first() else { continue };
        match header & 0x1f {
            5 => return Ok(SegmentStart::Idr),
            t @ 1..=4 => return Ok(SegmentStart::NotIdr(t)),
            _ => {}
        }
    }
    Ok(SegmentStart::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_types_are_read_past_sei_and_parameter_sets() {
        // SEI (6), then an IDR slice (0x65), 4-byte lengths.
        let sample = [0, 0, 0, 2, 0x06, 0xff, 0, 0, 0, 2, 0x65, 0x88];
        assert_eq!(first_slice(&sample, 4).unwrap(), SegmentStart::Idr);
        let sample = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 2, 0x41, 0x9a];
        assert_eq!(first_slice(&sample, 4).unwrap(), SegmentStart::NotIdr(1));
        assert!(first_slice(&[0, 0, 0, 9, 0x65], 4).is_err(), "a length past the end is an error, not a panic");
    }

    #[test]
    fn hostile_boxes_are_errors() {
        assert!(boxes(&[0, 0, 0, 100, b'm', b'o', b'o', b'f']).is_err());
        assert!(boxes(&[0, 0, 0, 4, b'm', b'o', b'o', b'f']).is_err());
        assert!(read_init(b"").is_err());
        let init = Init { timescale: 1, codec: Codec::Mp4a { object_type: 2 } };
        assert!(read_segment(&init, &[0, 0, 0, 8, b'm', b'd', b'a', b't']).is_err());
    }

    #[test]
    fn codec_strings() {
        assert_eq!(Codec::Avc { profile: 100, constraints: 0, level: 40, nal_length_size: 4 }.rfc6381(), "avc1.640028");
        assert_eq!(Codec::Mp4a { object_type: 2 }.rfc6381(), "mp4a.40.2");
    }
}
