//! The fast deflate for PNG levels 1..=4 (and the first candidate of 5..=9; also EXR's ZIP blocks, whose
//! predicted bytes look like filtered rows), in the style of fpnge: the filtered rows are cut into pieces of
//! 64 KiB, each piece is turned into literals and matches, and blocks of pieces are sent with Huffman codes
//! fitted to the block's own counts (or stored, when that is smaller, as for noise).
//!
//! How a piece is matched depends on its byte entropy (sampled): noisy pieces get only long runs at distance 1,
//! found eight bytes at a time; predictable ones also short runs, and the most predictable ones greedy LZ77
//! (one hash probe and the same place one row up). Every match is taken only when it costs fewer bits than
//! the literals it replaces, by the piece's own byte statistics: a 4-byte match at a far distance costs more
//! than four frequent small residuals (which is what made the previous matcher larger than Huffman coding
//! alone on near-flat frames). Literals are the bytes between matches: counted and written in tight loops,
//! with a branch-free bit writer ([`BitWriter`]).

use super::png_huffman::{BitWriter, Code, DIST_SYMBOLS, EOB, LITLEN_SYMBOLS, write_dynamic_header, write_stored};

/// Tokens per block: a new Huffman table every 32 Ki tokens follows changes in the image at ~0.1 % header
/// cost; flat areas (few tokens) share one table.
const BLOCK_TOKENS: usize = 1 << 15;
/// Input bytes looked at before a block's entropy is estimated again.
const BLOCK_BYTES: usize = 1 << 16;
/// Shortest run at distance 1 looked for in noisy pieces.
const MIN_RUN: usize = 8;
/// Shortest run at distance 1 looked for in predictable pieces (deflate's shortest match).
const MIN_SHORT_RUN: usize = 3;
/// Shortest LZ77 match taken.
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;
const WINDOW: usize = 32 * 1024;
const HASH_BITS: u32 = 15;
/// Pieces whose order-0 entropy is below this (bits per byte) also get LZ77 matching.
const LZ_ENTROPY: f64 = 3.0;
/// Bytes of a piece tried with LZ77 first; the rest gets it only if matches other than runs covered at least
/// 1/[`LZ_TRIAL_SHARE`] of the trial.
const LZ_TRIAL_BYTES: usize = 4096;
const LZ_TRIAL_SHARE: usize = 16;
/// After every this many hash probes in a row without an LZ77 match, the probes are one byte further apart (up
/// to [`LZ_MAX_STEP`] bytes); runs are still looked for at every byte.
const LZ_ACCELERATION: usize = 32;
const LZ_MAX_STEP: usize = 32;
/// Pieces whose order-0 entropy is below this also get short runs.
const SHORT_RUN_ENTROPY: f64 = 5.0;
/// Estimated cost of a match's length symbol and of a distance symbol, in 1/16 bits (before extra bits).
const LENGTH_SYMBOL_COST: u32 = 7 * 16;
const DISTANCE_1_COST: u32 = 2 * 16;
const DISTANCE_COST: u32 = 6 * 16;

/// A zlib stream (RFC 1950) of `data`, filtered rows of `stride` bytes each (filter byte included).
pub(crate) fn zlib(data: &[u8], stride: usize) -> Vec<u8> {
    let mut w = BitWriter::new(Vec::with_capacity(data.len() / 2 + 1024));
    // CMF: deflate, 32 KiB window; FLG: "fast" level, check bits.
    w.bytes(&[0x78, 0x5e]);
    deflate(data, stride, &mut w);
    let mut out = w.finish();
    out.extend_from_slice(&simd_adler32::adler32(&data).to_be_bytes());
    out
}

/// A zlib stream of `data` in stored (uncompressed) blocks: PNG level 0.
pub(crate) fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut w = BitWriter::new(Vec::with_capacity(data.len() + data.len() / 0xFFFF * 5 + 16));
    w.bytes(&[0x78, 0x01]);
    let pieces = data.len().div_ceil(0xFFFF).max(1);
    for k in 0..pieces {
        let piece = &data[(k * 0xFFFF).min(data.len())..((k + 1) * 0xFFFF).min(data.len())];
        write_stored(&mut w, k + 1 == pieces, piece);
    }
    let mut out = w.finish();
    out.extend_from_slice(&simd_adler32::adler32(&data).to_be_bytes());
    out
}

/// A match: `len` bytes at `pos` repeat those `dist` bytes back. Literals are the bytes between matches.
#[derive(Clone, Copy)]
struct Match {
    pos: u32,
    len: u32,
    dist: u32,
}

fn deflate(data: &[u8], stride: usize, w: &mut BitWriter) {
    if data.is_empty() {
        write_stored(w, true, &[]);
        return;
    }
    let mut table = vec![0u32; 1 << HASH_BITS];
    let mut matches = Vec::with_capacity(BLOCK_BYTES);
    let mut scratch = Vec::with_capacity(BLOCK_BYTES);
    let (mut start, mut at, mut tokens) = (0, 0, 0);
    while at < data.len() {
        // Tokenize a piece at a time (its entropy decides on LZ77) until the block has enough tokens.
        let end = (at + BLOCK_BYTES).min(data.len());
        let (from, first) = (at, matches.len());
        let (entropy, costs) = byte_costs(&data[at..end]);
        at = if entropy < LZ_ENTROPY {
            tokenize_lz_or_not(data, at, end, stride, &mut table, &costs, &mut matches, &mut scratch)
        } else if entropy < SHORT_RUN_ENTROPY {
            tokenize_short_runs(data, at, end, &costs, &mut matches)
        } else {
            tokenize_runs(data, at, end, &mut matches)
        };
        let matched: usize = matches[first..].iter().map(|m| m.len as usize).sum();
        tokens += at - from - matched + (matches.len() - first);
        if tokens >= BLOCK_TOKENS || at == data.len() {
            write_block(w, data, start, at, &matches, at == data.len());
            matches.clear();
            (start, tokens) = (at, 0);
        }
    }
}

/// A predictable piece with LZ77 or with short runs only, whichever Huffman-codes smaller: LZ77 matches that
/// each cost fewer bits than their literals can still make the whole larger, because the literals they leave
/// behind are the less frequent ones (smooth grey photos lost 20 % that way). LZ77 runs on a trial stretch first;
/// where it finds little, the piece gets short runs only, without a hash probe per byte.
#[allow(clippy::too_many_arguments)]
fn tokenize_lz_or_not(
    data: &[u8],
    start: usize,
    end: usize,
    stride: usize,
    table: &mut [u32],
    costs: &[u32; 256],
    matches: &mut Vec<Match>,
    scratch: &mut Vec<Match>,
) -> usize {
    scratch.clear();
    let trial = (start + LZ_TRIAL_BYTES).min(end);
    let at = tokenize_costed(data, start, trial, stride, Some(&mut *table), costs, scratch);
    let found: usize = scratch.iter().filter(|m| m.dist != 1).map(|m| m.len as usize).sum();
    let plain_first = matches.len();
    let plain_end = tokenize_short_runs(data, start, end, costs, matches);
    if found * LZ_TRIAL_SHARE < at - start {
        return plain_end;
    }
    let lz_end = tokenize_costed(data, at, end, stride, Some(table), costs, scratch);
    // Bits per input byte of each, compared without division.
    let plain_bits = Counts::new(data, start, plain_end, &matches[plain_first..]).huffman_bits();
    let lz_bits = Counts::new(data, start, lz_end, scratch).huffman_bits();
    if lz_bits * ((plain_end - start) as u64) < plain_bits * ((lz_end - start) as u64) {
        matches.truncate(plain_first);
        matches.extend_from_slice(scratch);
        lz_end
    } else {
        plain_end
    }
}

/// Order-0 entropy of `bytes` in bits per byte and each byte value's cost in 1/16 bits, from a sample (every
/// 4th byte is enough to tell residuals apart). Values not seen cost two bits more than the rarest seen.
fn byte_costs(bytes: &[u8]) -> (f64, [u32; 256]) {
    let mut hist = [0u32; 256];
    for &b in bytes.iter().step_by(4) {
        hist[usize::from(b)] += 1;
    }
    let n = f64::from(hist.iter().sum::<u32>().max(1));
    let entropy = hist.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n * (n / f64::from(c)).log2()).sum();
    // A Huffman code spends at least one bit per symbol.
    let unseen = (n.log2() + 2.0) * 16.0;
    let costs = hist.map(|c| if c == 0 { unseen as u32 } else { ((n / f64::from(c)).log2().max(1.0) * 16.0) as u32 });
    (entropy, costs)
}

/// Estimated cost in 1/16 bits of a match of `len` at `dist`.
#[inline(always)]
fn match_cost(len: usize, dist: usize) -> u32 {
    let (_, length_extra, _) = length_symbol(len as u32);
    let (_, dist_extra, _) = distance_symbol(dist as u32);
    let dist_cost = if dist == 1 { DISTANCE_1_COST } else { DISTANCE_COST };
    LENGTH_SYMBOL_COST + dist_cost + (length_extra + dist_extra) * 16
}

#[inline(always)]
fn hash4(bytes: &[u8]) -> usize {
    let v = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
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

/// Runs at distance 1 (of at least [`MIN_RUN`]) in `data[start..]` up to at least `end` (a run may go past
/// it); returns where it stopped. Eight bytes are compared with their left neighbours at a time: a run can only
/// start after the last byte of the eight that differs from its neighbour.
fn tokenize_runs(data: &[u8], start: usize, end: usize, matches: &mut Vec<Match>) -> usize {
    const { assert!(MIN_RUN == 8) };
    let mut i = start.max(1);
    while i < end {
        if i + 8 > data.len() {
            return tokenize_tail(data, i, end, matches);
        }
        let x = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(data[i - 1..i + 7].try_into().expect("8 bytes"));
        let diff = x ^ y;
        if diff != 0 {
            // Little-endian: the highest differing byte is the last one in memory order.
            i += 8 - (diff.leading_zeros() / 8) as usize;
            continue;
        }
        let run = match_len(data, i - 1, i, (data.len() - i).min(MAX_MATCH));
        matches.push(Match { pos: i as u32, len: run as u32, dist: 1 });
        i += run;
    }
    i
}

/// The last few bytes, one at a time.
fn tokenize_tail(data: &[u8], mut i: usize, end: usize, matches: &mut Vec<Match>) -> usize {
    while i < end {
        let max = (data.len() - i).min(MAX_MATCH);
        if i > 0 && max >= MIN_RUN && data[i] == data[i - 1] {
            let run = match_len(data, i - 1, i, max);
            if run >= MIN_RUN {
                matches.push(Match { pos: i as u32, len: run as u32, dist: 1 });
                i += run;
                continue;
            }
        }
        i += 1;
    }
    i
}

/// Per byte value the shortest run at distance 1 that costs fewer bits than its literals.
fn run_thresholds(costs: &[u32; 256]) -> [usize; 256] {
    std::array::from_fn(|b| {
        if costs[b] * MAX_MATCH as u32 <= match_cost(MAX_MATCH, 1) {
            return MAX_MATCH + 1;
        }
        (MIN_SHORT_RUN..=MAX_MATCH).find(|&l| costs[b] * l as u32 > match_cost(l, 1)).unwrap_or(MAX_MATCH + 1)
    })
}

/// What [`tokenize_costed`] does without a hash table, eight bytes at a time: the bytes equal to their left
/// neighbour are a mask, and a run worth a match can only start where the mask has as many consecutive bytes
/// as the shortest worthwhile run.
fn tokenize_short_runs(data: &[u8], start: usize, end: usize, costs: &[u32; 256], matches: &mut Vec<Match>) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let min_run = run_thresholds(costs);
    let m = min_run.iter().copied().min().unwrap_or(MIN_SHORT_RUN).min(8);
    let mut i = start.max(1);
    while i < end {
        if i + 8 > data.len() {
            return tokenize_costed(data, i, end, 0, None, costs, matches);
        }
        let x = u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(data[i - 1..i + 7].try_into().expect("8 bytes"));
        let diff = x ^ y;
        // The top bit of each byte of `same`: that byte equals its left neighbour.
        let same = !((((diff & LOW7) + LOW7) | diff) & HIGH) & HIGH;
        let mut starts = same;
        for j in 1..m {
            starts &= same >> (8 * j);
        }
        if starts == 0 {
            i += 9 - m;
            continue;
        }
        let p = i + (starts.trailing_zeros() / 8) as usize;
        let (need, max) = (min_run[usize::from(data[p])], (data.len() - p).min(MAX_MATCH));
        if need <= max {
            let run = match_len(data, p - 1, p, max);
            if run >= need {
                matches.push(Match { pos: p as u32, len: run as u32, dist: 1 });
                i = p + run;
                continue;
            }
        }
        i = p + 1;
    }
    i
}

/// Runs at distance 1 from [`MIN_SHORT_RUN`] on and, with a hash `table`, LZ77 matches (the same place one row
/// up, `stride` back: rows that repeat the row above after filtering, as in gradients; and one hash probe),
/// each taken only when it costs fewer bits than its bytes as literals (`costs`, 1/16 bits per byte value).
fn tokenize_costed(
    data: &[u8],
    start: usize,
    end: usize,
    stride: usize,
    mut table: Option<&mut [u32]>,
    costs: &[u32; 256],
    matches: &mut Vec<Match>,
) -> usize {
    let literal_cost =
        |from: usize, len: usize| -> u32 { data[from..from + len].iter().map(|&b| costs[usize::from(b)]).sum() };
    // Per byte value the shortest run worth a match, and the shortest LZ77 match worth looking at (a far match
    // replacing bytes of average cost): checking the last byte such a match needs first rejects most candidates
    // without comparing the bytes in between (zlib's scan-end trick).
    let min_run = run_thresholds(costs);
    let average = (costs.iter().sum::<u32>() / 256).max(16);
    let min_lz = (MIN_MATCH..=MAX_MATCH).find(|&l| average * l as u32 > match_cost(l, WINDOW)).unwrap_or(MIN_MATCH);
    let (mut probe_from, mut misses) = (0, 0);
    let mut i = start;
    while i < end {
        let max = (data.len() - i).min(MAX_MATCH);
        let b = data[i];
        let need = min_run[usize::from(b)];
        if i > 0 && need <= max && b == data[i - 1] && data[i + need - 1] == b {
            let run = match_len(data, i - 1, i, max);
            if run >= need {
                matches.push(Match { pos: i as u32, len: run as u32, dist: 1 });
                i += run;
                continue;
            }
        }
        if let Some(table) = table.as_deref_mut()
            && max >= min_lz
            && i >= probe_from
        {
            let h = hash4(&data[i..]);
            let candidate = table[h] as usize;
            table[h] = i as u32;
            let (mut best_len, mut best_dist) = (0, 0);
            let last = min_lz - 1;
            if candidate < i && i - candidate <= WINDOW && data[candidate + last] == data[i + last] {
                best_len = match_len(data, candidate, i, max);
                best_dist = i - candidate;
            }
            if stride <= WINDOW && i >= stride && best_len < max && data[i - stride + last] == data[i + last] {
                let len = match_len(data, i - stride, i, max);
                if len > best_len {
                    (best_len, best_dist) = (len, stride);
                }
            }
            if best_len >= min_lz && literal_cost(i, best_len) > match_cost(best_len, best_dist) {
                matches.push(Match { pos: i as u32, len: best_len as u32, dist: best_dist as u32 });
                i += best_len;
                misses = 0;
                continue;
            }
            // Stretches without matches (texture, noise) are probed ever more sparsely (LZ4's acceleration).
            misses += 1;
            probe_from = i + 1 + (misses / LZ_ACCELERATION).min(LZ_MAX_STEP);
        }
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

/// Adds the bytes to `freq` (four interleaved tables, so that equal neighbours do not wait on each other).
fn histogram(bytes: &[u8], freq: &mut [[u32; 256]; 4]) {
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        freq[0][usize::from(c[0])] += 1;
        freq[1][usize::from(c[1])] += 1;
        freq[2][usize::from(c[2])] += 1;
        freq[3][usize::from(c[3])] += 1;
    }
    for &b in chunks.remainder() {
        freq[0][usize::from(b)] += 1;
    }
}

/// Writes literals, three codes per [`BitWriter::put`] (at most 45 bits).
#[inline(always)]
fn put_literals(w: &mut BitWriter, bytes: &[u8], table: &[u32; 256]) {
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let (a, b, d) = (table[usize::from(c[0])], table[usize::from(c[1])], table[usize::from(c[2])]);
        let (la, lb) = (a >> 16, b >> 16);
        let bits = u64::from(a & 0xffff) | u64::from(b & 0xffff) << la | u64::from(d & 0xffff) << (la + lb);
        w.put(bits, la + lb + (d >> 16));
    }
    for &x in chunks.remainder() {
        let a = table[usize::from(x)];
        w.put(u64::from(a & 0xffff), a >> 16);
    }
}

/// Symbol counts of literals and matches over `data[start..end]`.
struct Counts {
    litlen: [u32; LITLEN_SYMBOLS],
    dist: [u32; DIST_SYMBOLS],
    extra_bits: u64,
}

impl Counts {
    fn new(data: &[u8], start: usize, end: usize, matches: &[Match]) -> Self {
        let mut freq4 = [[0u32; 256]; 4];
        let mut counts = Self { litlen: [0; LITLEN_SYMBOLS], dist: [0; DIST_SYMBOLS], extra_bits: 0 };
        let mut p = start;
        for m in matches {
            histogram(&data[p..m.pos as usize], &mut freq4);
            let (ls, le, _) = length_symbol(m.len);
            let (ds, de, _) = distance_symbol(m.dist);
            counts.litlen[ls] += 1;
            counts.dist[ds] += 1;
            counts.extra_bits += u64::from(le + de);
            p = (m.pos + m.len) as usize;
        }
        histogram(&data[p..end], &mut freq4);
        for (s, f) in counts.litlen.iter_mut().take(256).enumerate() {
            *f = freq4[0][s] + freq4[1][s] + freq4[2][s] + freq4[3][s];
        }
        counts.litlen[EOB] = 1;
        counts
    }

    /// The codes fitted to these counts.
    fn codes(&self) -> (Code, Code) {
        (Code::fitted(&self.litlen, 15), Code::fitted(&self.dist, 15))
    }

    /// Bits of the symbols and extra bits with fitted codes (without the block header).
    fn huffman_bits(&self) -> u64 {
        let (litlen, dist) = self.codes();
        litlen.cost(&self.litlen) + dist.cost(&self.dist) + self.extra_bits
    }
}

fn write_block(w: &mut BitWriter, data: &[u8], start: usize, end: usize, matches: &[Match], last: bool) {
    let counts = Counts::new(data, start, end, matches);
    let (litlen, dist) = counts.codes();
    let huffman_bits = super::png_huffman::dynamic_header_bits(&litlen, &dist)
        + litlen.cost(&counts.litlen)
        + dist.cost(&counts.dist)
        + counts.extra_bits;
    let input = &data[start..end];
    // Stored blocks hold at most 65535 bytes each, 5 bytes of header.
    let stored_bits = (input.len() as u64 + 5 * input.len().div_ceil(0xFFFF).max(1) as u64) * 8 + 7;
    if stored_bits < huffman_bits {
        let pieces: Vec<&[u8]> = input.chunks(0xFFFF).collect();
        for (k, piece) in pieces.iter().enumerate() {
            write_stored(w, last && k + 1 == pieces.len(), piece);
        }
        return;
    }
    w.reserve((huffman_bits / 8) as usize + 64);
    write_dynamic_header(w, last, &litlen, &dist);
    let table: &[u32; 256] = litlen.packed[..256].try_into().expect("256 literals");
    let mut p = start;
    for m in matches {
        put_literals(w, &data[p..m.pos as usize], table);
        let (ls, le, lv) = length_symbol(m.len);
        let (ds, de, dv) = distance_symbol(m.dist);
        let (lc, dc) = (litlen.packed[ls], dist.packed[ds]);
        // At most 15 + 5 + 15 + 13 = 48 bits in one put.
        let (l1, l2, l3) = (lc >> 16, (lc >> 16) + le, (lc >> 16) + le + (dc >> 16));
        let bits = u64::from(lc & 0xffff) | u64::from(lv) << l1 | u64::from(dc & 0xffff) << l2 | u64::from(dv) << l3;
        w.put(bits, l3 + de);
        p = (m.pos + m.len) as usize;
    }
    put_literals(w, &data[p..end], table);
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
            let filtered = super::super::png_filter::filter_rows(super::super::png_deflate::Rows::of(&image));
            let f = t.elapsed();
            let t = std::time::Instant::now();
            let z = zlib(&filtered, 3073);
            println!("filter {f:?}, deflate {:?}, {} bytes", t.elapsed(), z.len());
        }
    }

    /// The eight-at-a-time run finder takes exactly the runs a byte-at-a-time scan takes.
    #[test]
    fn run_finder_skips_no_run() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in [1usize, 9, 17, 300, 5000] {
            for values in [2u64, 3, 256] {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Long stretches of one value, broken by others.
                        if x % 16 < 13 { 5 } else { ((x >> 32) % values) as u8 }
                    })
                    .collect();
                let (mut fast, mut plain) = (Vec::new(), Vec::new());
                let a = tokenize_runs(&data, 0, data.len(), &mut fast);
                let b = tokenize_tail(&data, 0, data.len(), &mut plain);
                assert_eq!(a, b);
                let key = |m: &Match| (m.pos, m.len, m.dist);
                assert_eq!(fast.iter().map(key).collect::<Vec<_>>(), plain.iter().map(key).collect::<Vec<_>>());
            }
        }
    }

    /// The eight-at-a-time short-run finder takes exactly the runs the byte-at-a-time one takes.
    #[test]
    fn short_run_finder_skips_no_run() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [1usize, 9, 17, 300, 5000] {
            for values in [2u64, 3, 256] {
                let data: Vec<u8> =
                    (0..len).map(|_| if next() % 4 == 0 { 5 } else { (next() % values) as u8 }).collect();
                let costs: [u32; 256] = std::array::from_fn(|_| 16 + (next() % 96) as u32);
                let (mut fast, mut plain) = (Vec::new(), Vec::new());
                let a = tokenize_short_runs(&data, 0, data.len(), &costs, &mut fast);
                let b = tokenize_costed(&data, 0, data.len(), 0, None, &costs, &mut plain);
                assert_eq!(a, b);
                let key = |m: &Match| (m.pos, m.len, m.dist);
                assert_eq!(fast.iter().map(key).collect::<Vec<_>>(), plain.iter().map(key).collect::<Vec<_>>());
            }
        }
    }

    /// Regression (issue 14): greedy 4-byte matches at far distances cost more than the frequent small residuals
    /// they replace, which made near-flat frames larger than Huffman coding alone.
    #[test]
    fn near_flat_rows_are_no_larger_than_huffman_coding_alone() {
        let (w, h) = (512usize, 128usize);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let rows: Vec<u8> = (0..h)
            .flat_map(|_| {
                let mut row = vec![1u8];
                row.extend((0..w * 3).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    [0u8, 0, 0, 0, 1, 255, 1, 255, 2, 254][(x >> 40) as usize % 10]
                }));
                row
            })
            .collect();
        let flags = miniz_oxide::deflate::core::create_comp_flags_from_zip_params(
            6,
            15,
            miniz_oxide::deflate::core::CompressionStrategy::HuffmanOnly as i32,
        );
        let mut huffman = Vec::new();
        let mut c = miniz_oxide::deflate::core::CompressorOxide::new(flags);
        miniz_oxide::deflate::core::compress_to_output(
            &mut c,
            &rows,
            miniz_oxide::deflate::core::TDEFLFlush::Finish,
            |chunk| {
                huffman.extend_from_slice(chunk);
                true
            },
        );
        let ours = zlib(&rows, w * 3 + 1);
        assert_eq!(inflate(&ours), rows);
        assert!(ours.len() <= huffman.len(), "{} bytes against Huffman coding alone {}", ours.len(), huffman.len());
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
