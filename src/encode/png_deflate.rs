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

/// Filters every row (a leading filter-type byte per row, as PNG's IDAT expects).
pub(crate) fn filter_rows(image: &Image8) -> Vec<u8> {
    let bpp = usize::from(image.channels);
    let row_len = image.width as usize * bpp;
    let mut out = Vec::with_capacity((row_len + 1) * image.height as usize);
    let zero = vec![0u8; row_len];
    let mut candidates: [Vec<u8>; 5] = std::array::from_fn(|_| vec![0u8; row_len]);
    for (y, row) in image.data.chunks_exact(row_len).enumerate() {
        let prior = if y == 0 { &zero[..] } else { &image.data[(y - 1) * row_len..y * row_len] };
        for i in 0..row_len {
            let a = if i >= bpp { row[i - bpp] } else { 0 };
            let b = prior[i];
            let c = if i >= bpp { prior[i - bpp] } else { 0 };
            let x = row[i];
            candidates[0][i] = x;
            candidates[1][i] = x.wrapping_sub(a);
            candidates[2][i] = x.wrapping_sub(b);
            candidates[3][i] = x.wrapping_sub(((u16::from(a) + u16::from(b)) / 2) as u8);
            candidates[4][i] = x.wrapping_sub(paeth(a, b, c));
        }
        let cost = |v: &Vec<u8>| v.iter().map(|&d| u32::from((d as i8).unsigned_abs())).sum::<u32>();
        let best = (0..5).min_by_key(|&f| cost(&candidates[f])).expect("five candidates");
        out.push(best as u8);
        out.extend_from_slice(&candidates[best]);
    }
    out
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
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

/// The IDAT payload (zlib stream of the filtered rows) for `level` 5..=9.
pub(crate) fn idat(image: &Image8, level: u8) -> Result<Vec<u8>, EncodeError> {
    let filtered = filter_rows(image);
    let mut best: Option<Vec<u8>> = None;
    for &(strategy, effort) in candidates(level) {
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
        let filtered = filter_rows(&image);
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
