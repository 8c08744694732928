//! The AVX2 sums for [`super::png_filter`]: the five filters' residuals of 32 bytes at a time, each summed in
//! absolute value with `vpsadbw`, without writing any candidate row (the way fpnge chooses filters). Only the
//! vector loads are `unsafe`; the first pixel and the last bytes of a row go through the scalar code.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi64, _mm256_adds_epu8, _mm256_and_si256, _mm256_avg_epu8, _mm256_blendv_epi8,
    _mm256_cmpeq_epi8, _mm256_extract_epi64, _mm256_loadu_si256, _mm256_min_epu8, _mm256_or_si256, _mm256_sad_epu8,
    _mm256_set1_epi8, _mm256_setzero_si256, _mm256_sub_epi8, _mm256_subs_epu8, _mm256_xor_si256,
};

use super::png_filter::{abs, residual};

/// Whether this CPU has AVX2 (checked once, then cached by the standard library).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx2")
}

/// The five sums of absolute residuals of `row` over `prior` (same length), as
/// `png_filter::Path::Scalar` computes them. Panics when the CPU lacks AVX2 (callers check [`available`]).
pub(crate) fn costs(row: &[u8], prior: &[u8], bpp: usize) -> [u64; 5] {
    assert!(available() && row.len() == prior.len() && bpp > 0, "AVX2 and rows of equal length");
    // SAFETY: AVX2 is available (asserted above), the only requirement of a `target_feature` function.
    unsafe { costs_avx2(row, prior, bpp) }
}

#[target_feature(enable = "avx2")]
fn costs_avx2(row: &[u8], prior: &[u8], bpp: usize) -> [u64; 5] {
    let n = row.len();
    let head = bpp.min(n);
    let zero = _mm256_setzero_si256();
    let one = _mm256_set1_epi8(1);
    let mut acc = [zero; 5];
    let load = |bytes: &[u8], at: usize| -> __m256i {
        let chunk = &bytes[at..at + 32];
        // SAFETY: `chunk` is 32 readable bytes (the slice index checked it); loadu has no alignment requirement.
        unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) }
    };
    // |d| of residuals read as signed bytes, summed into four u64 lanes.
    let add = |acc: &mut __m256i, d: __m256i| {
        let abs = _mm256_min_epu8(d, _mm256_sub_epi8(zero, d));
        *acc = _mm256_add_epi64(*acc, _mm256_sad_epu8(abs, zero));
    };
    let absdiff = |x: __m256i, y: __m256i| _mm256_or_si256(_mm256_subs_epu8(x, y), _mm256_subs_epu8(y, x));
    // x <= y, unsigned, as a byte mask.
    let le = |x: __m256i, y: __m256i| _mm256_cmpeq_epi8(_mm256_min_epu8(x, y), x);
    let mut i = head;
    while i + 32 <= n {
        let (x, a, b, c) = (load(row, i), load(row, i - bpp), load(prior, i), load(prior, i - bpp));
        add(&mut acc[0], x);
        add(&mut acc[1], _mm256_sub_epi8(x, a));
        add(&mut acc[2], _mm256_sub_epi8(x, b));
        // floor((a + b) / 2): the rounding-up average minus the lost low bit.
        let avg = _mm256_sub_epi8(_mm256_avg_epu8(a, b), _mm256_and_si256(_mm256_xor_si256(a, b), one));
        add(&mut acc[3], _mm256_sub_epi8(x, avg));
        // Paeth in bytes: pa = |b - c|, pb = |a - c|, pc = |(b - c) + (a - c)|, which is pa + pb when both
        // differences have the same sign and |pa - pb| otherwise (saturating at 255 keeps every comparison).
        let (pa, pb) = (absdiff(b, c), absdiff(a, c));
        let b_ge_c = _mm256_cmpeq_epi8(_mm256_subs_epu8(c, b), zero);
        let a_ge_c = _mm256_cmpeq_epi8(_mm256_subs_epu8(c, a), zero);
        let same_sign = _mm256_cmpeq_epi8(b_ge_c, a_ge_c);
        let pc = _mm256_blendv_epi8(absdiff(pa, pb), _mm256_adds_epu8(pa, pb), same_sign);
        let take_a = _mm256_and_si256(le(pa, pb), le(pa, pc));
        let b_or_c = _mm256_blendv_epi8(c, b, le(pb, pc));
        add(&mut acc[4], _mm256_sub_epi8(x, _mm256_blendv_epi8(b_or_c, a, take_a)));
        i += 32;
    }
    let lanes = |v: __m256i| -> u64 {
        (_mm256_extract_epi64::<0>(v) + _mm256_extract_epi64::<1>(v))
            .wrapping_add(_mm256_extract_epi64::<2>(v) + _mm256_extract_epi64::<3>(v)) as u64
    };
    // The first pixel and the tail, byte by byte.
    let mut sums = acc.map(lanes);
    for (kind, sum) in sums.iter_mut().enumerate() {
        *sum += (0..head).chain(i..n).map(|j| abs(residual(kind, row, prior, bpp, j))).sum::<u64>();
    }
    sums
}
