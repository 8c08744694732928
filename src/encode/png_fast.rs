//! The fast deflate for PNG levels 1..=4 (and the first candidate of 5..=9), in the style of fpnge: the filtered
//! rows are cut into blocks; each block is turned into literals, runs (matches at distance 1, which is what a
//! flat area leaves after filtering) and, in blocks whose bytes are predictable enough for repeats to matter,
//! greedy single-probe LZ77 matches; then it is sent with Huffman codes fitted to that block's own counts (or
//! stored, when that is smaller, as for pure noise).
//!
//! The matcher is used only where a block's byte entropy is low (gradients, flat or graphic areas, scans):
//! on photographic residuals LZ77 matches are rare and searching for them is most of the time zlib spends.

use super::png_huffman::{BitWriter, Code, DIST_SYMBOLS, EOB, LITLEN_SYMBOLS, write_dynamic_header, write_stored};

/// Tokens per block: a new Huffman table every 32 Ki tokens follows changes in the image at ~0.1 % header
/// cost; flat areas (few tokens) share one table.
const BLOCK_TOKENS: usize = 1 << 15;
/// Input bytes looked at before a block's entropy is estimated again.
const BLOCK_BYTES: usize = 1 << 16;
/// Shortest run at distance 1 worth a match: shorter runs of a frequent residual cost less as literals.
const MIN_RUN: usize = 8;
/// Shortest LZ77 match taken.
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
const WINDOW: usize = 32 * 1024;
const HASH_BITS: u32 = 15;
/// Blocks whose order-0 entropy is below this (bits per byte) also get LZ77 matching.
const LZ_ENTROPY: f64 = 3.0;

/// A token: literal byte (< 256), or a match: `MATCH | distance << 9 | length`.
const MATCH: u32 = 1 << 31;

/// A zlib stream (RFC 1950) of `data`, filtered rows of `stride` bytes each (filter byte included).
pub(crate) fn zlib(data: &[u8], stride: usize) -> Vec<u8> {
    let mut w = BitWriter::new(Vec::with_capacity(data.len() / 2 + 1024));
    // CMF: deflate, 32 KiB window; FLG: "fast" level, check bits.
    w.out.extend_from_slice(&[0x78, 0x5e]);
    deflate(data, stride, &mut w);
    let mut out = w.finish();
    out.extend_from_slice(&simd_adler32::adler32(&data).to_be_bytes());
    out
}

/// A zlib stream of `data` in stored (uncompressed) blocks: PNG level 0.
pub(crate) fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::new(Vec::with_capacity(data.len() + data.len() / 0xFFFF * 5 + 16));
    w.out.extend_from_slice(&[0x78, 0x01]);
    let pieces = data.len().div_ceil(0xFFFF).max(1);
    for k in 0..pieces {
        let piece = &data[(k * 0xFFFF).min(data.len())..((k + 1) * 0xFFFF).min(data.len())];
        write_stored(&mut w, k + 1 == pieces, piece);
    }
    let mut out = w.finish();
    out.extend_from_slice(&simd_adler32::adler32(&data).to_be_bytes());
    out
}

fn deflate(data: &[u8], stride: usize, w: &mut BitWriter) {
    if data.is_empty() {
        write_stored(w, true, &[]);
        return;
    }
    let mut table = vec![0u32; 1 << HASH_BITS];
    let mut tokens = Vec::with_capacity(BLOCK_TOKENS + BLOCK_BYTES);
    let (mut start, mut at) = (0, 0);
    while at < data.len() {
        // Tokenize a piece at a time (its entropy decides on LZ77) until the block has enough tokens.
        let end = (at + BLOCK_BYTES).min(data.len());
        let lz = entropy_bits(&data[at..end]) < LZ_ENTROPY;
        at = tokenize(data, at, end, lz, stride, &mut table, &mut tokens);
        if tokens.len() >= BLOCK_TOKENS || at == data.len() {
            write_block(w, &data[start..at], &tokens, at == data.len());
            tokens.clear();
            start = at;
        }
    }
}

/// Order-0 entropy of `bytes` in bits per byte (sampled: every 4th byte is enough to tell residuals apart).
fn entropy_bits(bytes: &[u8]) -> f64 {
    let mut hist = [0u32; 256];
    for &b in bytes.iter().step_by(4) {
        hist[usize::from(b)] += 1;
    }
    let n = f64::from(hist.iter().sum::<u32>().max(1));
    hist.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n * (n / f64::from(c)).log2()).sum()
}

#[inline(always)]
fn hash4(bytes: &[u8]) -> usize {
    let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// How many bytes from `a` and `b` on are equal (at most `max`, `b > a`, both ranges inside `data`).
#[inline(always)]
fn match_len(data: &[u8], a: usize, b: usize, max: usize) -> usize {
    let mut n = 0;
    while n + 8 <= max {
        let x = u64::from_le_bytes(data[a + n..a + n + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(data[b + n..b + n + 8].try_into().expect("8 bytes"));
        let diff = x ^ y;
        if diff != 0 {
            return n + (diff.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < max && data[a + n] == data[b + n] {
        n += 1;
    }
    n
}

/// Tokens for `data[start..]` up to at least `end` (a run or match may go past it); returns where it stopped.
/// With `lz`, besides runs it tries the same place one row up (`stride` back: rows that repeat the row above
/// after filtering, as in gradients) and one hash probe, and takes the longest match.
fn tokenize(
    data: &[u8],
    start: usize,
    end: usize,
    lz: bool,
    stride: usize,
    table: &mut [u32],
    tokens: &mut Vec<u32>,
) -> usize {
    let mut i = start;
    while i < end {
        let max = (data.len() - i).min(MAX_MATCH);
        if i > 0 && max >= MIN_RUN && data[i] == data[i - 1] {
            let run = match_len(data, i - 1, i, max);
            if run >= MIN_RUN {
                tokens.push(MATCH | 1 << 9 | run as u32);
                i += run;
                continue;
            }
        }
        if lz && max >= MIN_MATCH {
            let h = hash4(&data[i..]);
            let candidate = table[h] as usize;
            table[h] = i as u32;
            let (mut best_len, mut best_dist) = (0, 0);
            if candidate < i && i - candidate <= WINDOW {
                best_len = match_len(data, candidate, i, max);
                best_dist = i - candidate;
            }
            if stride <= WINDOW && i >= stride && best_len < max {
                let len = match_len(data, i - stride, i, max);
                if len > best_len {
                    (best_len, best_dist) = (len, stride);
                }
            }
            if best_len >= MIN_MATCH {
                tokens.push(MATCH | (best_dist as u32) << 9 | best_len as u32);
                i += best_len;
                continue;
            }
        }
        tokens.push(u32::from(data[i]));
        i += 1;
    }
    i
}

/// Symbol, extra-bit count and extra-bit value of a match length 3..=258.
#[inline(always)]
fn length_symbol(len: u32) -> (usize, u32, u32) {
    if len == 258 {
        return (285, 0, 0);
    }
    let l = len - 3;
    if l < 8 {
        return (257 + l as usize, 0, 0);
    }
    let nb = 31 - l.leading_zeros();
    let extra = nb - 2;
    (257 + (4 * (nb - 1) + ((l >> extra) & 3)) as usize, extra, l & ((1 << extra) - 1))
}

/// Symbol, extra-bit count and extra-bit value of a distance 1..=32768.
#[inline(always)]
fn distance_symbol(dist: u32) -> (usize, u32, u32) {
    let d = dist - 1;
    if d < 4 {
        return (d as usize, 0, 0);
    }
    let nb = 31 - d.leading_zeros();
    let extra = nb - 1;
    ((2 * nb + ((d >> extra) & 1)) as usize, extra, d & ((1 << extra) - 1))
}

fn write_block(w: &mut BitWriter, input: &[u8], tokens: &[u32], last: bool) {
    let mut litlen_freq = [0u32; LITLEN_SYMBOLS];
    let mut dist_freq = [0u32; DIST_SYMBOLS];
    let mut extra_bits = 0u64;
    for &t in tokens {
        if t & MATCH == 0 {
            litlen_freq[t as usize] += 1;
        } else {
            let (ls, le, _) = length_symbol(t & 0x1ff);
            let (ds, de, _) = distance_symbol((t & !MATCH) >> 9);
            litlen_freq[ls] += 1;
            dist_freq[ds] += 1;
            extra_bits += u64::from(le + de);
        }
    }
    litlen_freq[EOB] = 1;
    let litlen = Code::fitted(&litlen_freq, 15);
    let dist = Code::fitted(&dist_freq, 15);
    let huffman_bits = super::png_huffman::dynamic_header_bits(&litlen, &dist)
        + litlen.cost(&litlen_freq)
        + dist.cost(&dist_freq)
        + extra_bits;
    // Stored blocks hold at most 65535 bytes each, 5 bytes of header.
    let stored_bits = (input.len() as u64 + 5 * input.len().div_ceil(0xFFFF).max(1) as u64) * 8 + 7;
    if stored_bits < huffman_bits {
        let pieces: Vec<&[u8]> = input.chunks(0xFFFF).collect();
        for (k, piece) in pieces.iter().enumerate() {
            write_stored(w, last && k + 1 == pieces.len(), piece);
        }
        return;
    }
    write_dynamic_header(w, last, &litlen, &dist);
    for &t in tokens {
        if t & MATCH == 0 {
            litlen.put(w, t as usize);
        } else {
            let (ls, le, lv) = length_symbol(t & 0x1ff);
            let (ds, de, dv) = distance_symbol((t & !MATCH) >> 9);
            litlen.put(w, ls);
            w.put(u64::from(lv), le);
            dist.put(w, ds);
            w.put(u64::from(dv), de);
        }
    }
    litlen.put(w, EOB);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(z: &[u8]) -> Vec<u8> {
        miniz_oxide::inflate::decompress_to_vec_zlib(z).expect("valid zlib stream")
    }

    /// Exploration aid, not a test of speed: `cargo test --release --lib -- --ignored stage_times --nocapture`.
    #[test]
    #[ignore]
    fn stage_times() {
        let data = crate::synthetic::rgb_u8(1024, 1024, 7);
        let image = super::super::Image8 { width: 1024, height: 1024, channels: 3, data };
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let filtered = super::super::png_deflate::filter_rows(super::super::png_deflate::Rows::of(&image));
            let f = t.elapsed();
            let t = std::time::Instant::now();
            let z = zlib(&filtered, 3073);
            println!("filter {f:?}, deflate {:?}, {} bytes", t.elapsed(), z.len());
        }
    }

    #[test]
    fn length_and_distance_symbols_match_rfc1951() {
        assert_eq!(length_symbol(3), (257, 0, 0));
        assert_eq!(length_symbol(11), (265, 1, 0));
        assert_eq!(length_symbol(12), (265, 1, 1));
        assert_eq!(length_symbol(19), (269, 2, 0));
        assert_eq!(length_symbol(257), (284, 5, 30));
        assert_eq!(length_symbol(258), (285, 0, 0));
        assert_eq!(distance_symbol(1), (0, 0, 0));
        assert_eq!(distance_symbol(5), (4, 1, 0));
        assert_eq!(distance_symbol(7), (5, 1, 0));
        assert_eq!(distance_symbol(24577), (29, 13, 0));
        assert_eq!(distance_symbol(32768), (29, 13, 8191));
    }

    #[test]
    fn streams_inflate_to_their_input() {
        let noise: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let runs: Vec<u8> = (0..300_000u32).map(|i| if i % 5000 < 4000 { 0 } else { (i % 7) as u8 }).collect();
        let text: Vec<u8> = b"a repeated phrase, ".iter().cycle().take(150_000).copied().collect();
        let rows: Vec<u8> = (0..120_000u32).map(|i| ((i % 301) * 3 % 7) as u8).collect();
        for data in [vec![], vec![9], noise, runs, text, rows] {
            assert_eq!(inflate(&zlib(&data, 301)), data);
            assert_eq!(inflate(&zlib_stored(&data)), data);
        }
    }
}
