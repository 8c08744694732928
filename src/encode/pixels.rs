//! Sample conversion: u8, u16 and f32 samples to u8, bit-identical to ComfyUI's
//! `np.clip(255. * x, 0, 255).astype(np.uint8)` (in f32 arithmetic; NaN becomes 0), and, for the formats that
//! keep more precision (16-bit PNG, EXR, 10-bit AVIF), to u16 and f32 from the samples as submitted, never from
//! the 8-bit image (docs/PROTOCOL.md section 10.7).

use std::borrow::Cow;

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

/// Samples as submitted, decoded from little-endian, rows packed, channels interleaved.
#[derive(Debug, Clone, PartialEq)]
pub enum Samples {
    /// 8-bit.
    U8(Vec<u8>),
    /// 16-bit.
    U16(Vec<u16>),
    /// 32-bit float, unclamped (HDR values, NaN and infinities as sent).
    F32(Vec<f32>),
}

impl Samples {
    /// How many samples.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::F32(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An image at the precision it was submitted in, for the encoders that keep more than 8 bits.
#[derive(Debug, Clone, PartialEq)]
pub struct RawImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (gray), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// `width * height * channels` samples.
    pub samples: Samples,
}

impl RawImage {
    /// The samples as u16 (see [`u16_of_f32`]): u8 `v` gives `257 * v` (0 -> 0, 255 -> 65535), u16 is taken
    /// as is.
    pub fn to_u16(&self) -> Cow<'_, [u16]> {
        match &self.samples {
            Samples::U8(v) => Cow::Owned(v.iter().map(|&x| u16::from(x) * 257).collect()),
            Samples::U16(v) => Cow::Borrowed(v),
            Samples::F32(v) => Cow::Owned(v.iter().map(|&x| u16_of_f32(x)).collect()),
        }
    }

    /// The samples as f32: u8 `v` gives `v / 255`, u16 `v / 65535` (binary32 division), f32 is taken as is.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match &self.samples {
            Samples::U8(v) => Cow::Owned(v.iter().map(|&x| f32::from(x) / 255.0).collect()),
            Samples::U16(v) => Cow::Owned(v.iter().map(|&x| f32::from(x) / 65535.0).collect()),
            Samples::F32(v) => Cow::Borrowed(v),
        }
    }

    /// The 8-bit image, converted exactly as [`convert_row`] does.
    pub fn to_image8(&self) -> Image8 {
        let data = match &self.samples {
            Samples::U8(v) => v.clone(),
            Samples::U16(v) => v.iter().map(|&x| f32_to_u8(f32::from(x) / 65535.0)).collect(),
            Samples::F32(v) => v.iter().map(|&x| f32_to_u8(x)).collect(),
        };
        Image8 { width: self.width, height: self.height, channels: self.channels, data }
    }
}

/// What an encoder gets: an 8-bit image (PNG 8-bit, WebP, JPEG, 8-bit AVIF), or the samples as submitted (the
/// formats with more precision). The worker reads the one the format needs, so 8-bit saves cost what they did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// Converted to 8 bits while reading.
    Eight(Image8),
    /// As submitted.
    Raw(RawImage),
}

impl Pixels {
    /// The 8-bit image (converted if the pixels are raw).
    pub fn image8(&self) -> Cow<'_, Image8> {
        match self {
            Self::Eight(image) => Cow::Borrowed(image),
            Self::Raw(raw) => Cow::Owned(raw.to_image8()),
        }
    }

    /// The samples at full precision (8-bit ones when that is all there is).
    pub fn raw(&self) -> Cow<'_, RawImage> {
        match self {
            Self::Eight(image) => Cow::Owned(RawImage {
                width: image.width,
                height: image.height,
                channels: image.channels,
                samples: Samples::U8(image.data.clone()),
            }),
            Self::Raw(raw) => Cow::Borrowed(raw),
        }
    }

    /// `(width, height, channels)`.
    pub fn geometry(&self) -> (u32, u32, u8) {
        match self {
            Self::Eight(i) => (i.width, i.height, i.channels),
            Self::Raw(r) => (r.width, r.height, r.channels),
        }
    }
}

/// One f32 sample as u16, as ComfyUI core's 16-bit save does (`(x * 65535).clamp(0, 65535)` in binary32, then
/// truncated toward zero); NaN gives 0. So 1.0 -> 65535, 0.5 -> 32767, 1/65535 -> 1, 2.0 -> 65535, -0.1 -> 0.
#[inline]
pub fn u16_of_f32(x: f32) -> u16 {
    (65535.0f32 * x).clamp(0.0, 65535.0) as u16
}

#[inline]
fn f32_to_u8(x: f32) -> u8 {
    // `as` saturates and maps NaN to 0, which is what numpy's cast does on the platforms ComfyUI runs on;
    // the clamp keeps the arithmetic identical to np.clip for finite values.
    (255.0f32 * x).clamp(0.0, 255.0) as u8
}

/// Decodes one row of raw little-endian samples of `format` and appends them to `out` unconverted.
pub fn append_samples(format: SampleFormat, raw: &[u8], out: &mut Samples) {
    match (format, out) {
        (SampleFormat::U8, Samples::U8(v)) => v.extend_from_slice(raw),
        (SampleFormat::U16, Samples::U16(v)) => {
            v.extend(raw.chunks_exact(2).map(|s| u16::from_le_bytes([s[0], s[1]])));
        }
        (SampleFormat::F32, Samples::F32(v)) => {
            v.extend(raw.chunks_exact(4).map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]])));
        }
        (format, out) => unreachable!("samples of {format:?} appended to a {:?} buffer", std::mem::discriminant(out)),
    }
}

impl SampleFormat {
    /// An empty buffer for `capacity` samples of this format.
    pub fn buffer(self, capacity: usize) -> Samples {
        match self {
            Self::U8 => Samples::U8(Vec::with_capacity(capacity)),
            Self::U16 => Samples::U16(Vec::with_capacity(capacity)),
            Self::F32 => Samples::F32(Vec::with_capacity(capacity)),
        }
    }
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

    /// docs/PROTOCOL.md section 10.7's table for 16-bit outputs, value by value.
    #[test]
    fn f32_to_u16_matches_comfyui_core_clamp_then_truncate() {
        let cases: [(f32, u16); 11] = [
            (0.0, 0),
            (1.0, 65535),
            (0.5, 32767),
            (0.25, 16383),
            (1.0 / 65535.0, 1),
            (0.999_99, 65534),
            (2.0, 65535),
            (-0.1, 0),
            (f32::NAN, 0),
            (f32::INFINITY, 65535),
            (f32::NEG_INFINITY, 0),
        ];
        let raw = RawImage { width: 11, height: 1, channels: 1, samples: Samples::F32(cases.map(|c| c.0).to_vec()) };
        assert_eq!(*raw.to_u16(), cases.map(|c| c.1));
    }

    #[test]
    fn u8_and_u16_widen_exactly() {
        let eight = RawImage { width: 3, height: 1, channels: 1, samples: Samples::U8(vec![0, 1, 255]) };
        assert_eq!(*eight.to_u16(), [0, 257, 65535]);
        assert_eq!(*eight.to_f32(), [0.0, 1.0 / 255.0, 1.0]);
        let sixteen = RawImage { width: 3, height: 1, channels: 1, samples: Samples::U16(vec![0, 257, 65535]) };
        assert_eq!(*sixteen.to_u16(), [0, 257, 65535]);
        assert_eq!(*sixteen.to_f32(), [0.0, 257.0 / 65535.0, 1.0]);
        assert_eq!(sixteen.to_image8().data, [0, 1, 255]);
    }

    #[test]
    fn raw_rows_decode_little_endian() {
        let mut out = SampleFormat::F32.buffer(2);
        append_samples(SampleFormat::F32, &f32_bytes(&[1.5, -2.0]), &mut out);
        assert_eq!(out, Samples::F32(vec![1.5, -2.0]));
        let mut out = SampleFormat::U16.buffer(1);
        append_samples(SampleFormat::U16, &[0x34, 0x12], &mut out);
        assert_eq!(out, Samples::U16(vec![0x1234]));
    }

    #[test]
    fn u16_full_range_maps_to_u8_full_range() {
        let raw: Vec<u8> = [0u16, 257, 32768, 65535].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0u8; 4];
        convert_row(SampleFormat::U16, &raw, &mut out);
        assert_eq!(out, [0, 1, 127, 255]);
    }
}
