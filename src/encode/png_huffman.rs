//! Deflate building blocks fitted to PNG-filtered data: a bit writer, length-limited Huffman codes built from
//! the block's own symbol counts, and dynamic-block headers (RFC 1951 §3.2.7).
//!
//! Why our own: filtered image rows are mostly small residuals with few long repeats, so what decides the size
//! is a Huffman table fitted to each block (fdeflate's fixed table costs up to 8 % there) and what decides the
//! speed is not searching for matches that are not there (miniz/zlib's default strategies). See
//! [`super::png_fast`] for the tokens and docs/BENCHMARKS.md for the measurements.

/// Literal/length alphabet size (0..=255 literals, 256 end of block, 257..=285 lengths).
pub(crate) const LITLEN_SYMBOLS: usize = 286;
/// Distance alphabet size.
pub(crate) const DIST_SYMBOLS: usize = 30;
const END_OF_BLOCK: usize = 256;
/// Order in which the code-length code lengths are sent.
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/// LSB-first bit writer into a byte vector, branch-free in the common case (fpnge's trick): every `put` stores
/// the whole 64-bit buffer at the write position, then advances by the complete bytes it holds. The vector is
/// kept at least 8 bytes longer than what was written (zeros, cut off by [`BitWriter::finish`]).
pub(crate) struct BitWriter {
    out: Vec<u8>,
    /// Bytes written; `out[pos..]` is slack.
    pos: usize,
    /// Pending bits (fewer than 8 between calls).
    buf: u64,
    nbits: u32,
}

impl BitWriter {
    /// A writer appending to `out` (whose bytes are kept).
    pub(crate) fn new(mut out: Vec<u8>) -> Self {
        let pos = out.len();
        let len = out.capacity().max(pos + 64);
        out.resize(len, 0);
        Self { out, pos, buf: 0, nbits: 0 }
    }

    /// Makes room for at least `bytes` more bytes, so that the next puts do not reallocate.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        let want = self.pos + bytes + 16;
        if self.out.len() < want {
            self.out.resize(want.max(self.out.len() * 3 / 2), 0);
        }
    }

    /// Appends the low `n` bits of `bits` (n <= 56, higher bits of `bits` zero).
    #[inline(always)]
    pub(crate) fn put(&mut self, bits: u64, n: u32) {
        debug_assert!(n <= 56 && (bits >> n) == 0);
        if self.out.len() < self.pos + 8 {
            self.reserve(4096);
        }
        self.buf |= bits << self.nbits;
        self.nbits += n;
        self.out[self.pos..self.pos + 8].copy_from_slice(&self.buf.to_le_bytes());
        let bytes = self.nbits >> 3;
        self.pos += bytes as usize;
        // bytes <= 7: nbits was < 8 and n <= 56.
        self.buf >>= bytes * 8;
        self.nbits &= 7;
    }

    /// Pads to a byte boundary with zero bits.
    pub(crate) fn align(&mut self) {
        if self.nbits > 0 {
            self.put(0, 8 - self.nbits);
        }
        self.buf = 0;
    }

    /// Appends whole bytes (after [`BitWriter::align`]).
    pub(crate) fn bytes(&mut self, data: &[u8]) {
        debug_assert_eq!(self.nbits, 0);
        self.reserve(data.len());
        self.out[self.pos..self.pos + data.len()].copy_from_slice(data);
        self.pos += data.len();
    }

    /// Bits written so far.
    pub(crate) fn bit_len(&self) -> u64 {
        self.pos as u64 * 8 + u64::from(self.nbits)
    }

    /// Flushes the pending bits (byte-aligned) and returns the bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.align();
        self.out.truncate(self.pos);
        self.out
    }
}

/// A canonical Huffman code: per symbol its length and its bit-reversed code (ready for [`BitWriter::put`]).
#[derive(Clone)]
pub(crate) struct Code {
    pub(crate) lengths: Vec<u8>,
    /// Per symbol `code | length << 16`: one load per symbol when writing.
    pub(crate) packed: Vec<u32>,
}

impl Code {
    /// The optimal prefix code for `freq` with no code longer than `max_len`. Every code is complete (Kraft
    /// sum 1) as strict decoders expect: with fewer than two used symbols, the lowest unused ones fill in.
    pub(crate) fn fitted(freq: &[u32], max_len: u8) -> Self {
        let lengths = code_lengths(freq, max_len);
        let packed =
            canonical_codes(&lengths).iter().zip(&lengths).map(|(&c, &l)| u32::from(c) | u32::from(l) << 16).collect();
        Self { lengths, packed }
    }

    /// Bits needed to send symbols with these counts (without extra bits).
    pub(crate) fn cost(&self, freq: &[u32]) -> u64 {
        freq.iter().zip(&self.lengths).map(|(&f, &l)| u64::from(f) * u64::from(l)).sum()
    }

    #[inline(always)]
    pub(crate) fn put(&self, w: &mut BitWriter, symbol: usize) {
        let p = self.packed[symbol];
        w.put(u64::from(p & 0xffff), p >> 16);
    }
}

/// Huffman code lengths limited to `max_len` (the two-queue construction, then the Kraft-sum repair zlib and
/// miniz use when a length exceeds the limit: lengths are re-dealt to symbols by falling frequency).
fn code_lengths(freq: &[u32], max_len: u8) -> Vec<u8> {
    let mut lengths = vec![0u8; freq.len()];
    let mut used: Vec<(u32, usize)> = freq.iter().enumerate().filter(|(_, f)| **f > 0).map(|(s, &f)| (f, s)).collect();
    // Fewer than two symbols: give two symbols length 1 (a complete code).
    if used.len() < 2 {
        let mut fill = used.iter().map(|&(_, s)| s).collect::<Vec<_>>();
        let mut s = 0;
        while fill.len() < 2 && s < freq.len() {
            if !fill.contains(&s) {
                fill.push(s);
            }
            s += 1;
        }
        for s in fill {
            lengths[s] = 1;
        }
        return lengths;
    }
    used.sort_unstable();
    let n = used.len();
    // Node weights: leaves 0..n, internal nodes n..2n-1; parent links for the depths.
    let mut weight: Vec<u64> = used.iter().map(|&(f, _)| u64::from(f)).collect();
    weight.reserve(n);
    let mut parent = vec![0usize; 2 * n - 1];
    let (mut leaf, mut inner) = (0usize, n);
    let take = |weight: &Vec<u64>, leaf: &mut usize, inner: &mut usize| -> usize {
        let next_inner = weight.len();
        if *leaf < n && (*inner >= next_inner || weight[*leaf] <= weight[*inner]) {
            *leaf += 1;
            *leaf - 1
        } else {
            *inner += 1;
            *inner - 1
        }
    };
    for _ in 0..n - 1 {
        let a = take(&weight, &mut leaf, &mut inner);
        let b = take(&weight, &mut leaf, &mut inner);
        let node = weight.len();
        weight.push(weight[a] + weight[b]);
        parent[a] = node;
        parent[b] = node;
    }
    // Depths from the root (the last node) down.
    let root = 2 * n - 2;
    let mut depth = vec![0u32; 2 * n - 1];
    for node in (0..root).rev() {
        depth[node] = depth[parent[node]] + 1;
    }
    let limit = u32::from(max_len);
    let mut count = vec![0u32; limit as usize + 1];
    for &d in &depth[..n] {
        count[d.min(limit) as usize] += 1;
    }
    // Kraft repair: while the clamped code is over-full, move one leaf from the longest level down a level.
    let kraft = |count: &[u32]| -> u64 { (1..=limit).map(|l| u64::from(count[l as usize]) << (limit - l)).sum() };
    let mut total = kraft(&count);
    while total > 1u64 << limit {
        count[limit as usize] -= 1;
        let mut l = limit - 1;
        while count[l as usize] == 0 {
            l -= 1;
        }
        count[l as usize] -= 1;
        count[l as usize + 1] += 2;
        total -= 1;
    }
    // Deal lengths: the most frequent symbols (end of `used`) get the shortest codes.
    let mut symbols = used.iter().rev().map(|&(_, s)| s);
    for (l, &c) in count.iter().enumerate().skip(1) {
        for _ in 0..c {
            lengths[symbols.next().expect("as many lengths as symbols")] = l as u8;
        }
    }
    lengths
}

fn canonical_codes(lengths: &[u8]) -> Vec<u16> {
    let mut count = [0u16; 16];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[usize::from(l)];
            next[usize::from(l)] += 1;
            c.reverse_bits() >> (16 - u16::from(l))
        })
        .collect()
}

/// Writes a dynamic-Huffman block header (BFINAL, BTYPE=2, then the two codes, themselves Huffman-coded).
pub(crate) fn write_dynamic_header(w: &mut BitWriter, last: bool, litlen: &Code, dist: &Code) {
    let hlit = (257..=LITLEN_SYMBOLS).rev().find(|&n| litlen.lengths[n - 1] != 0).unwrap_or(257).max(257);
    let hdist = (1..=DIST_SYMBOLS).rev().find(|&n| dist.lengths[n - 1] != 0).unwrap_or(1);
    let all: Vec<u8> = litlen.lengths[..hlit].iter().chain(&dist.lengths[..hdist]).copied().collect();
    let runs = run_length_code_lengths(&all);
    let mut cl_freq = [0u32; 19];
    for &(sym, _) in &runs {
        cl_freq[usize::from(sym)] += 1;
    }
    let cl = Code::fitted(&cl_freq, 7);
    let hclen = (4..=19).rev().find(|&n| cl.lengths[CL_ORDER[n - 1]] != 0).unwrap_or(4);
    w.put(u64::from(last), 1);
    w.put(2, 2);
    w.put((hlit - 257) as u64, 5);
    w.put((hdist - 1) as u64, 5);
    w.put((hclen - 4) as u64, 4);
    for &sym in &CL_ORDER[..hclen] {
        w.put(u64::from(cl.lengths[sym]), 3);
    }
    for (sym, extra) in runs {
        cl.put(w, usize::from(sym));
        match sym {
            16 => w.put(u64::from(extra), 2),
            17 => w.put(u64::from(extra), 3),
            18 => w.put(u64::from(extra), 7),
            _ => {}
        }
    }
}

/// The code-length sequence as code-length-alphabet symbols with their extra-bit values (16: repeat the
/// previous length 3-6 times, 17: 3-10 zeros, 18: 11-138 zeros).
fn run_length_code_lengths(lengths: &[u8]) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lengths.len() {
        let l = lengths[i];
        let run = lengths[i..].iter().take_while(|&&x| x == l).count();
        if l == 0 && run >= 3 {
            let n = run.min(138);
            out.push(if n >= 11 { (18, (n - 11) as u8) } else { (17, (n - 3) as u8) });
            i += n;
        } else if l != 0 && run >= 4 {
            out.push((l, 0));
            let n = (run - 1).min(6);
            out.push((16, (n - 3) as u8));
            i += 1 + n;
        } else {
            out.push((l, 0));
            i += 1;
        }
    }
    out
}

/// Cost in bits of the header [`write_dynamic_header`] would write (estimated from the lengths).
pub(crate) fn dynamic_header_bits(litlen: &Code, dist: &Code) -> u64 {
    let mut w = BitWriter::new(Vec::new());
    write_dynamic_header(&mut w, false, litlen, dist);
    w.bit_len()
}

/// Writes a stored (uncompressed) block of `data` (at most 65535 bytes).
pub(crate) fn write_stored(w: &mut BitWriter, last: bool, data: &[u8]) {
    debug_assert!(data.len() <= 0xFFFF);
    w.put(u64::from(last), 1);
    w.put(0, 2);
    w.align();
    let len = data.len() as u16;
    w.bytes(&len.to_le_bytes());
    w.bytes(&(!len).to_le_bytes());
    w.bytes(data);
}

/// The end-of-block symbol.
pub(crate) const EOB: usize = END_OF_BLOCK;

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lengths: &[u8], max: u8) -> u64 {
        lengths.iter().filter(|&&l| l > 0).map(|&l| 1u64 << (max - l)).sum()
    }

    #[test]
    fn codes_are_complete_and_within_the_limit() {
        // Fibonacci-like counts force depths past 15 before the repair.
        let mut freq = vec![0u32; LITLEN_SYMBOLS];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut().take(30) {
            *f = a;
            (a, b) = (b, a.saturating_add(b));
        }
        for (freq, max) in [(freq, 15u8), (vec![5, 0, 0, 9, 1, 1, 1, 1, 1, 1, 1, 1, 300], 4)] {
            let code = Code::fitted(&freq, max);
            assert!(code.lengths.iter().all(|&l| l <= max));
            assert_eq!(kraft(&code.lengths, max), 1 << max, "{:?}", code.lengths);
            for (f, l) in freq.iter().zip(&code.lengths) {
                assert_eq!(*f > 0, *l > 0);
            }
        }
    }

    #[test]
    fn one_or_no_symbol_still_gives_a_complete_code() {
        for freq in [vec![0u32; 30], {
            let mut f = vec![0u32; 30];
            f[7] = 4;
            f
        }] {
            let code = Code::fitted(&freq, 15);
            assert_eq!(kraft(&code.lengths, 15), 1 << 15);
        }
    }
}
