//! Conversion of u8, u16 and f32 samples to u8, bit-identical to ComfyUI's
//! `np.clip(255. * x, 0, 255).astype(np.uint8)` (in f32 arithmetic; NaN becomes 0).

/// The sample formats the daemon accepts. Multi-byte samples are little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Taken as is.
    U8,
    /// `x = v / 65535` in f32, then converted like [`SampleFormat::F32`].
    U16,
    /// `clip(255 * x, 0, 255)` in f32, truncated toward zero; NaN gives 0.
    F32,
}

impl SampleFormat {
    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::F32 => 4,
        }
    }
}

/// An 8-bit image, rows packed without padding, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (gray), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// `width * height * channels` bytes.
    pub data: Vec<u8>,
}

#[inline]
fn f32_to_u8(x: f32) -> u8 {
    // `as` saturates and maps NaN to 0, which is what numpy's cast does on the platforms ComfyUI runs on;
    // the clamp keeps the arithmetic identical to np.clip for finite values.
    (255.0f32 * x).clamp(0.0, 255.0) as u8
}

/// Converts one row of raw little-endian samples (`out.len() * format.size()` bytes) into `out`.
pub fn convert_row(format: SampleFormat, raw: &[u8], out: &mut [u8]) {
    debug_assert_eq!(raw.len(), out.len() * format.size());
    match format {
        SampleFormat::U8 => out.copy_from_slice(raw),
        SampleFormat::U16 => {
            for (o, s) in out.iter_mut().zip(raw.chunks_exact(2)) {
                let v = u16::from_le_bytes([s[0], s[1]]);
                *o = f32_to_u8(f32::from(v) / 65535.0);
            }
        }
        SampleFormat::F32 => {
            for (o, s) in out.iter_mut().zip(raw.chunks_exact(4)) {
                *o = f32_to_u8(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn f32_matches_numpy_clip_then_truncate() {
        // Expected values are what `np.clip(255. * np.float32(x), 0, 255).astype(np.uint8)` gives.
        let cases: [(f32, u8); 12] = [
            (0.0, 0),
            (1.0, 255),
            (0.5, 127),
            (0.999, 254),
            (1.0 / 255.0, 1),
            (0.003_921_568, 0),
            (-0.2, 0),
            (1.7, 255),
            (f32::NAN, 0),
            (f32::INFINITY, 255),
            (f32::NEG_INFINITY, 0),
            (-0.0, 0),
        ];
        let raw = f32_bytes(&cases.map(|c| c.0));
        let mut out = [0u8; 12];
        convert_row(SampleFormat::F32, &raw, &mut out);
        assert_eq!(out, cases.map(|c| c.1));
    }

    #[test]
    fn u16_full_range_maps_to_u8_full_range() {
        let raw: Vec<u8> = [0u16, 257, 32768, 65535].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0u8; 4];
        convert_row(SampleFormat::U16, &raw, &mut out);
        assert_eq!(out, [0, 1, 127, 255]);
    }
}
