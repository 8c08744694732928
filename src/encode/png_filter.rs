//! PNG's adaptive row filtering for levels 1..=9: per row the filter with the smallest sum of absolute
//! residuals (libpng's and Pillow's heuristic), ties going to the lower filter type.
//!
//! Choosing a filter means computing all five candidates and their sums: that was ~17 instructions per byte
//! in plain Rust (five candidate rows written out and summed again). With AVX2 (detected at run time,
//! [`super::png_filter_x86`]) the five residuals and their sums come from one pass of 32 bytes at a time that
//! writes nothing, and only the chosen filter is then applied. The scalar path elsewhere computes the same sums,
//! so both paths choose the same filters and write the same bytes (tested).

use super::png_deflate::Rows;

/// Filter types in PNG's numbering.
pub(crate) const NONE: usize = 0;
pub(crate) const SUB: usize = 1;
pub(crate) const UP: usize = 2;
pub(crate) const AVERAGE: usize = 3;
pub(crate) const PAETH: usize = 4;

/// Filters every row (a leading filter-type byte per row, as PNG's IDAT expects) with the fastest path this
/// CPU has.
pub(crate) fn filter_rows(image: Rows<'_>) -> Vec<u8> {
    filter_rows_with(image, Path::best())
}

/// How the per-row sums are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Plain Rust (the compiler vectorises it with the target's baseline instructions).
    Scalar,
    /// AVX2, x86_64 only, when the CPU has it.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Path {
    /// The fastest path available on this CPU.
    pub(crate) fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if super::png_filter_x86::available() {
            return Path::Avx2;
        }
        Path::Scalar
    }

    /// The five sums of absolute residuals of `row` over `prior`.
    fn costs(self, row: &[u8], prior: &[u8], bpp: usize, scratch: &mut [u8]) -> [u64; 5] {
        match self {
            Path::Scalar => std::array::from_fn(|kind| {
                apply(kind, row, prior, bpp, scratch);
                cost(scratch)
            }),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => super::png_filter_x86::costs(row, prior, bpp),
        }
    }
}

/// [`filter_rows`] with the sums from `path`.
pub(crate) fn filter_rows_with(image: Rows<'_>, path: Path) -> Vec<u8> {
    let bpp = image.bpp;
    let row_len = image.width as usize * bpp;
    let mut out = vec![0u8; (row_len + 1) * image.height as usize];
    if row_len == 0 {
        return out;
    }
    let zero = vec![0u8; row_len];
    let mut scratch = vec![0u8; row_len];
    for ((y, row), dst) in image.data.chunks_exact(row_len).enumerate().zip(out.chunks_exact_mut(row_len + 1)) {
        let prior = if y == 0 { &zero[..] } else { &image.data[(y - 1) * row_len..y * row_len] };
        let costs = path.costs(row, prior, bpp, &mut scratch);
        let best = (0..5).min_by_key(|&f| costs[f]).expect("five candidates");
        dst[0] = best as u8;
        apply(best, row, prior, bpp, &mut dst[1..]);
    }
    out
}

/// Sum of the residuals read as signed bytes, in absolute value (`min(d, -d)` on bytes: a form the compiler
/// turns into vector minimum and horizontal-add instructions).
pub(crate) fn cost(residuals: &[u8]) -> u64 {
    residuals.iter().map(|&d| abs(d)).sum()
}

/// A residual read as a signed byte, in absolute value.
#[inline(always)]
pub(crate) fn abs(d: u8) -> u64 {
    u64::from(d.min(d.wrapping_neg()))
}

/// Filter `kind`'s residual of byte `i` of `row`, as the specification writes it (one byte at a time).
pub(crate) fn residual(kind: usize, row: &[u8], prior: &[u8], bpp: usize, i: usize) -> u8 {
    let (a, c) = if i >= bpp { (row[i - bpp], prior[i - bpp]) } else { (0, 0) };
    let b = prior[i];
    let predicted = match kind {
        NONE => 0,
        SUB => a,
        UP => b,
        AVERAGE => ((u16::from(a) + u16::from(b)) >> 1) as u8,
        _ => paeth(a, b, c),
    };
    row[i].wrapping_sub(predicted)
}

/// Filter `kind` (None, Sub, Up, Average, Paeth) of one row into `out`. The loops are written over zipped slices
/// without branches so that the compiler vectorises them.
pub(crate) fn apply(kind: usize, row: &[u8], prior: &[u8], bpp: usize, out: &mut [u8]) {
    debug_assert!(kind <= PAETH, "filter type {kind}");
    let n = row.len();
    // The first pixel has no left neighbour (a = c = 0).
    let head = bpp.min(n);
    let (x, a) = (&row[head..], &row[..n - head]);
    let (b, c) = (&prior[head..], &prior[..n - head]);
    let out = &mut out[..n];
    if kind == NONE {
        out.copy_from_slice(row);
        return;
    }
    if kind == UP {
        for ((d, &x), &b) in out.iter_mut().zip(row).zip(prior) {
            *d = x.wrapping_sub(b);
        }
        return;
    }
    let (out_head, out_rest) = out.split_at_mut(head);
    match kind {
        SUB => {
            out_head.copy_from_slice(&row[..head]);
            for ((d, &x), &a) in out_rest.iter_mut().zip(x).zip(a) {
                *d = x.wrapping_sub(a);
            }
        }
        AVERAGE => {
            for ((d, &x), &b) in out_head.iter_mut().zip(&row[..head]).zip(&prior[..head]) {
                *d = x.wrapping_sub(b >> 1);
            }
            for (((d, &x), &a), &b) in out_rest.iter_mut().zip(x).zip(a).zip(b) {
                *d = x.wrapping_sub(((u16::from(a) + u16::from(b)) >> 1) as u8);
            }
        }
        _ => {
            for ((d, &x), &b) in out_head.iter_mut().zip(&row[..head]).zip(&prior[..head]) {
                *d = x.wrapping_sub(b);
            }
            for ((((d, &x), &a), &b), &c) in out_rest.iter_mut().zip(x).zip(a).zip(b).zip(c) {
                *d = x.wrapping_sub(paeth(a, b, c));
            }
        }
    }
}

/// The Paeth predictor, without branches (selects), in the order the PNG specification breaks ties.
#[inline(always)]
pub(crate) fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (a16, b16, c16) = (i16::from(a), i16::from(b), i16::from(c));
    let pa = (b16 - c16).abs();
    let pb = (a16 - c16).abs();
    let pc = (a16 + b16 - 2 * c16).abs();
    let b_or_c = if pb <= pc { b } else { c };
    if pa <= pb && pa <= pc { a } else { b_or_c }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// The PNG specification's filters, written plainly, against the vectorisable ones.
    #[test]
    fn filters_match_the_specification() {
        let reference_paeth = |a: u8, b: u8, c: u8| {
            let p = i16::from(a) + i16::from(b) - i16::from(c);
            let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
            if pa <= pb && pa <= pc {
                a
            } else if pb <= pc {
                b
            } else {
                c
            }
        };
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for bpp in [1usize, 2, 3, 4, 6, 8] {
            for width in [1usize, 2, 7, 33] {
                let n = width * bpp;
                let mut bytes = || (0..n).map(|_| (next() >> 40) as u8).collect::<Vec<u8>>();
                let (row, prior) = (bytes(), bytes());
                let mut out = vec![0u8; n];
                for kind in 0..5 {
                    apply(kind, &row, &prior, bpp, &mut out);
                    for i in 0..n {
                        let a = if i >= bpp { row[i - bpp] } else { 0 };
                        let c = if i >= bpp { prior[i - bpp] } else { 0 };
                        let b = prior[i];
                        let want = [
                            row[i],
                            row[i].wrapping_sub(a),
                            row[i].wrapping_sub(b),
                            row[i].wrapping_sub(((u16::from(a) + u16::from(b)) / 2) as u8),
                            row[i].wrapping_sub(reference_paeth(a, b, c)),
                        ];
                        assert_eq!(out[i], want[kind], "filter {kind}, bpp {bpp}, width {width}, byte {i}");
                    }
                }
            }
        }
    }

    /// Every path this CPU has gives the scalar path's sums and so the same bytes, on rows of every length
    /// around the vector width and on data from noise to flat (ties decide the filter there).
    #[test]
    fn every_path_writes_the_scalar_bytes() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let paths = [Path::Scalar, Path::best()];
        for bpp in [1usize, 2, 3, 4, 6, 8] {
            for width in [1u32, 2, 3, 5, 10, 11, 16, 31, 33, 64, 65, 100] {
                for spread in [1u64, 3, 16, 256] {
                    let height = 5u32;
                    let n = width as usize * bpp * height as usize;
                    let data: Vec<u8> = (0..n).map(|_| (100 + next() % spread) as u8).collect();
                    let rows = Rows { data: &data, width, height, bpp };
                    let outs: Vec<Vec<u8>> = paths.iter().map(|&p| filter_rows_with(rows, p)).collect();
                    assert!(outs.windows(2).all(|w| w[0] == w[1]), "bpp {bpp}, width {width}, spread {spread}");
                    let row_len = width as usize * bpp;
                    let mut scratch = vec![0u8; row_len];
                    for y in 1..height as usize {
                        let (row, prior) = (&data[y * row_len..][..row_len], &data[(y - 1) * row_len..][..row_len]);
                        let want = Path::Scalar.costs(row, prior, bpp, &mut scratch);
                        assert_eq!(Path::best().costs(row, prior, bpp, &mut scratch), want, "bpp {bpp} w {width}");
                    }
                }
            }
        }
    }
}
