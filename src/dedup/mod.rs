//! Near-duplicate detection (issue 4 groundwork): 64-bit perceptual hashes of
//! sampled frames, an in-memory BK-tree over every stored frame hash, and the
//! video-level rule that turns frame matches into "this video is a
//! near-duplicate of that one, at this distance". Not wired into the commit
//! yet; the sampler that feeds it runs on the early-probe thread next.

mod index;

pub use index::{FrameIndex, NearMatch, VideoFrames};

/// A 64-bit perceptual hash of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHash(pub u64);

impl FrameHash {
    pub fn distance(self, other: FrameHash) -> u32 {
        (self.0 ^ other.0).count_ones()
    }

    /// A DCT mean hash of 8x8 (image_hasher `Mean` with `preproc_dct`): the
    /// low frequencies of the frame, which survive re-encoding and scaling.
    pub fn of_image(image: &image::RgbImage) -> Self {
        let hasher = image_hasher::HasherConfig::new()
            .hash_size(8, 8)
            .hash_alg(image_hasher::HashAlg::Mean)
            .preproc_dct()
            .to_hasher();
        let hash = hasher.hash_image(image);
        let mut bytes = [0u8; 8];
        for (slot, byte) in bytes.iter_mut().zip(hash.as_bytes()) {
            *slot = *byte;
        }
        Self(u64::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32, f: impl Fn(f32, f32) -> [u8; 3]) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x as f32 / w as f32, y as f32 / h as f32)))
    }

    #[test]
    fn scaling_keeps_a_hash_close_and_another_picture_is_far() {
        let scene = |x: f32, y: f32| {
            let v = if (x - 0.3).powi(2) + (y - 0.5).powi(2) < 0.04 { 230 } else { (x * 120.0) as u8 };
            [v, (y * 200.0) as u8, 60]
        };
        let big = FrameHash::of_image(&pattern(640, 360, scene));
        let small = FrameHash::of_image(&pattern(320, 180, scene));
        let other = FrameHash::of_image(&pattern(640, 360, |x, y| {
            let v = if ((x * 8.0) as u32 + (y * 8.0) as u32).is_multiple_of(2) { 255 } else { 0 };
            [v, v, v]
        }));
        assert!(big.distance(small) <= 4, "scaled: {}", big.distance(small));
        assert!(big.distance(other) >= 10, "different: {}", big.distance(other));
    }
}
