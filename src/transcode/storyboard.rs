//! The storyboard for seek previews: a tile every few seconds, taken from
//! the frames the ladder decodes anyway, laid out in one JPEG sprite, and
//! a WebVTT file that maps each time range to its tile
//! (`storyboard.jpg#xywh=x,y,w,h`), as players' thumbnail tracks read it.
#![allow(clippy::disallowed_methods)] // a blocking module: runs on the Transcoder SyncArbiter (clippy.toml)

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::software::scaling;
use std::io::Write;
use std::path::Path;

/// Tile width in pixels; the height follows the video's shape.
const TILE_WIDTH: u32 = 160;
/// Tiles per row of the sprite.
const COLUMNS: u32 = 10;
/// At most this many tiles: long videos get a wider interval.
const MAX_TILES: u32 = 200;

pub(crate) struct Storyboard {
    interval: f64,
    next: f64,
    tile: Option<(u32, u32)>,
    scaler: Option<(scaling::Context, (Pixel, u32, u32))>,
    /// Packed RGB tiles with their start times.
    tiles: Vec<(f64, Vec<u8>)>,
    failed: bool,
}

impl Storyboard {
    pub fn new(interval_secs: u32, duration_s: Option<f64>) -> Self {
        let mut interval = f64::from(interval_secs.max(1));
        if let Some(d) = duration_s.filter(|d| *d > 0.0) {
            interval = interval.max((d / f64::from(MAX_TILES)).ceil());
        }
        Self { interval, next: 0.0, tile: None, scaler: None, tiles: Vec::new(), failed: false }
    }

    /// Keeps `frame` as a tile if it is the first at or after the next tile time.
    pub fn observe(&mut self, frame: &frame::Video, secs: f64) {
        if self.failed || secs + 1e-6 < self.next || self.tiles.len() as u32 >= MAX_TILES {
            return;
        }
        if let Err(e) = self.take(frame, secs) {
            tracing::warn!(error = %e, "storyboard tile failed; the storyboard is left out");
            self.failed = true;
        }
    }

    fn take(&mut self, frame: &frame::Video, secs: f64) -> Result<(), ffmpeg_next::Error> {
        let (w, h) = *self.tile.get_or_insert_with(|| {
            let h = (u64::from(TILE_WIDTH) * u64::from(frame.height()) / u64::from(frame.width().max(1))) as u32;
            (TILE_WIDTH, (h.max(2) + 1) & !1)
        });
        let key = (frame.format(), frame.width(), frame.height());
        if self.scaler.as_ref().is_none_or(|(_, k)| *k != key) {
            let ctx = scaling::Context::get(key.0, key.1, key.2, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)?;
            self.scaler = Some((ctx, key));
        }
        let (ctx, _) = self.scaler.as_mut().expect("set above");
        let mut rgb = frame::Video::empty();
        ctx.run(frame, &mut rgb)?;
        let stride = rgb.stride(0);
        let row = w as usize * 3;
        let mut packed = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            packed.extend_from_slice(&rgb.data(0)[y * stride..y * stride + row]);
        }
        self.tiles.push((secs, packed));
        while self.next <= secs {
            self.next += self.interval;
        }
        Ok(())
    }

    /// Writes `storyboard.jpg` and `storyboard.vtt` into `dir`; nothing if
    /// no tile was taken. `end` is the video's duration.
    pub fn finish(self, dir: &Path, end: f64) -> std::io::Result<bool> {
        let (Some((w, h)), false) = (self.tile, self.failed) else { return Ok(false) };
        if self.tiles.is_empty() {
            return Ok(false);
        }
        let count = self.tiles.len() as u32;
        let columns = count.min(COLUMNS);
        let rows = count.div_ceil(COLUMNS);
        let mut sprite = image::RgbImage::new(columns * w, rows * h);
        let mut vtt = String::from("WEBVTT\n\n");
        for (i, (start, packed)) in self.tiles.iter().enumerate() {
            let (x, y) = ((i as u32 % COLUMNS) * w, (i as u32 / COLUMNS) * h);
            let tile =
                image::RgbImage::from_raw(w, h, packed.clone()).ok_or_else(|| std::io::Error::other("tile size"))?;
            image::imageops::replace(&mut sprite, &tile, i64::from(x), i64::from(y));
            let stop = self.tiles.get(i + 1).map_or(end.max(*start + 0.001), |(next, _)| *next);
            vtt.push_str(&format!(
                "{} --> {}\nstoryboard.jpg#xywh={x},{y},{w},{h}\n\n",
                vtt_time(*start),
                vtt_time(stop)
            ));
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 75)
            .encode_image(&sprite)
            .map_err(std::io::Error::other)?;
        std::fs::write(dir.join("storyboard.jpg"), jpeg)?;
        std::fs::File::create(dir.join("storyboard.vtt"))?.write_all(vtt.as_bytes())?;
        Ok(true)
    }
}

fn vtt_time(secs: f64) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn vtt_times_are_hours_minutes_seconds_millis() {
        assert_eq!(super::vtt_time(0.0), "00:00:00.000");
        assert_eq!(super::vtt_time(3725.5), "01:02:05.500");
    }
}
