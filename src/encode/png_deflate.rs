//! The PNG path for `compress_level` 5..=9: adaptive per-row filtering (libpng's minimum-sum-of-absolute-values
//! heuristic) and a zlib stream from miniz_oxide with a strategy chosen for filtered image data.
//!
//! Why not the `png` crate's own `Level(n)`: miniz's default strategy spends its time on long LZ77 matches that
//! filtered, mildly noisy diffusion output rarely has, and ends up both slower than PIL and ~7 % larger.
//! Pillow's zlib-ng behaves like zlib's `Z_FILTERED` at these levels. Here: RLE matches (cheap; good on flat
//! areas and on noisy ones) for 5..=6, and from 7 up the smallest of RLE and a few LZ77 strategies (which win on
//! illustrations with repeated texture), so higher levels never give larger files. See docs/BENCHMARKS.md.

use miniz_oxide::deflate::core::{
    CompressionStrategy, CompressorOxide, TDEFLFlush, TDEFLStatus, compress_to_output,
    create_comp_flags_from_zip_params,
};

use super::{EncodeError, Image8};

/// Packed rows of whole pixels: what the filters and deflate see. `bpp` is bytes per pixel (PNG's filter unit):
/// the channel count for 8-bit samples, twice it for 16-bit ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    /// `width * height * bpp` bytes, samples as PNG stores them (16-bit ones big-endian).
    pub data: &'a [u8],
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per pixel.
    pub bpp: usize,
}

impl<'a> Rows<'a> {
    /// The rows of an 8-bit image.
    pub(crate) fn of(image: &'a Image8) -> Self {
        Self { data: &image.data, width: image.width, height: image.height, bpp: usize::from(image.channels) }
    }
}

/// Every row with filter type 0 (None), for level 0.
fn unfiltered_rows(image: Rows<'_>) -> Vec<u8> {
    let row_len = image.width as usize * image.bpp;
    let mut out = Vec::with_capacity((row_len + 1) * image.height as usize);
    for row in image.data.chunks_exact(row_len.max(1)) {
        out.push(0);
        out.extend_from_slice(row);
    }
    out
}

/// A zlib stream of `data` at `level` with `strategy`.
fn zlib(data: &[u8], level: u8, strategy: CompressionStrategy) -> Result<Vec<u8>, EncodeError> {
    let flags = create_comp_flags_from_zip_params(i32::from(level), 15, strategy as i32);
    let mut compressor = CompressorOxide::new(flags);
    let mut out = Vec::with_capacity(data.len() / 2);
    let (status, _) = compress_to_output(&mut compressor, data, TDEFLFlush::Finish, |chunk| {
        out.extend_from_slice(chunk);
        true
    });
    match status {
        TDEFLStatus::Done => Ok(out),
        other => Err(EncodeError::Codec(format!("deflate failed: {other:?}"))),
    }
}

/// The candidates each level tries; the smallest stream wins, so a higher level is never larger. (miniz's
/// effort levels inside a strategy were picked from measurements: RLE is as small at 2 as at 9; `Filtered` and
/// the default strategy grow slow well before they grow small. Level 9 stays within Pillow's time.)
fn candidates(level: u8) -> &'static [(CompressionStrategy, u8)] {
    use CompressionStrategy::{Default, Filtered, RLE};
    match level {
        ..=6 => &[(RLE, 6)],
        7 => &[(RLE, 6), (Filtered, 1)],
        8 => &[(RLE, 6), (Filtered, 2)],
        _ => &[(RLE, 6), (Filtered, 2), (Default, 4)],
    }
}

/// Images up to this many filtered bytes try every candidate of their level; larger ones first compare each
/// strategy with the fast stream on [`SAMPLE_STRIPES`] evenly spaced stripes, 1/[`SAMPLE_SHARE`] of the image
/// in all but at least [`SAMPLE_MIN`] bytes.
const SAMPLE_ALL: usize = 1 << 17;
const SAMPLE_STRIPES: usize = 4;
const SAMPLE_SHARE: usize = 8;
const SAMPLE_MIN: usize = 1 << 16;
/// A strategy is tried on the whole image when its sample stream is at most this much (in 1/1024) larger than
/// the fast stream's: the sample only has to tell "never wins" (noise, textures, most photos: miniz's streams
/// were 0 to 10 % larger there and took 10x to 30x the fast stream's time) from "may win".
const SAMPLE_MARGIN: usize = 1024 + 40;

/// Evenly spaced stripes of the filtered rows, for a cheap first look at whether a slow candidate can beat the
/// fast stream. The answer depends only on the image and the strategy (at the effort level 9 uses), never on the level,
/// so every level tries a superset of the strategies of the level below and sizes stay monotonic.
struct Sample {
    /// `None`: the image is small enough to try everything.
    bytes: Option<Vec<u8>>,
    fast_len: usize,
}

impl Sample {
    fn of(filtered: &[u8], stride: usize) -> Self {
        if filtered.len() <= SAMPLE_ALL {
            return Self { bytes: None, fast_len: 0 };
        }
        let stripe = (filtered.len() / SAMPLE_SHARE).max(SAMPLE_MIN) / SAMPLE_STRIPES;
        let step = (filtered.len() - stripe) / (SAMPLE_STRIPES - 1);
        let bytes: Vec<u8> =
            (0..SAMPLE_STRIPES).flat_map(|k| &filtered[k * step..k * step + stripe]).copied().collect();
        let fast_len = super::png_fast::zlib(&bytes, stride).len();
        Self { bytes: Some(bytes), fast_len }
    }

    fn worth_trying(&self, strategy: CompressionStrategy) -> Result<bool, EncodeError> {
        let Some(bytes) = &self.bytes else { return Ok(true) };
        // The effort level 9 gives the strategy, whatever the level asking.
        let effort = candidates(9).iter().find(|c| c.0 == strategy).map_or(6, |c| c.1);
        let len = zlib(bytes, effort, strategy)?.len();
        Ok(len * 1024 <= self.fast_len * SAMPLE_MARGIN)
    }
}

/// The IDAT payload (zlib stream of the filtered rows) for `level` 0..=9, for rows of any sample size (16-bit
/// PNG passes big-endian sample bytes).
pub(crate) fn idat_rows(image: Rows<'_>, level: u8) -> Result<Vec<u8>, EncodeError> {
    if level == 0 {
        return Ok(super::png_fast::zlib_stored(&unfiltered_rows(image)));
    }
    let filtered = super::png_filter::filter_rows(image);
    let stride = image.width as usize * image.bpp + 1;
    let fast = super::png_fast::zlib(&filtered, stride);
    if level <= 4 {
        return Ok(fast);
    }
    // Highly compressible rows (flat frames) are already near deflate's floor; miniz's LZ77 strategies only
    // add time there, so they keep to the RLE candidate.
    let flat = fast.len().saturating_mul(32) < filtered.len();
    let sample = Sample::of(&filtered, stride);
    let mut best = Some(fast);
    for &(strategy, effort) in candidates(level).iter().take(if flat { 1 } else { usize::MAX }) {
        if !sample.worth_trying(strategy)? {
            continue;
        }
        let stream = zlib(&filtered, effort, strategy)?;
        if best.as_ref().is_none_or(|b| stream.len() < b.len()) {
            best = Some(stream);
        }
    }
    Ok(best.expect("every level has a candidate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exploration aid, not a test of speed: `cargo test --release -- --ignored explore_strategies --nocapture`.
    #[test]
    #[ignore]
    fn explore_strategies() {
        let data = crate::synthetic::rgb_u8(1024, 1024, 7);
        let image = Image8 { width: 1024, height: 1024, channels: 3, data };
        let filtered = super::super::png_filter::filter_rows(Rows::of(&image));
        for (name, strategy) in [
            ("rle", CompressionStrategy::RLE),
            ("filtered", CompressionStrategy::Filtered),
            ("default", CompressionStrategy::Default),
        ] {
            for level in [1u8, 2, 3, 4, 5, 6, 7, 9] {
                let t = std::time::Instant::now();
                let n = zlib(&filtered, level, strategy).unwrap().len();
                println!("{name} level {level}: {n} bytes in {:?}", t.elapsed());
            }
        }
    }
}
