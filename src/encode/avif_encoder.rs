//! AVIF through `ravif` (the rav1e AV1 encoder and the `avif-serialize` container writer): still image, full
//! resolution colour (4:4:4), full range, BT.601 matrix, sRGB transfer and BT.709 primaries signalled in `colr`.
//! The YCbCr planes are built here, in the exact arithmetic of PROTOCOL.md section 10.7, at 8 bits from the 8-bit
//! image or at 10 bits from the samples as submitted (the node's float32), so a 10-bit file carries the precision
//! the 8-bit image lost. Alpha (4 channels) is a second, monochrome AV1 item at the same depth and quality.
//!
//! Metadata: the same EXIF block as WebP (PROTOCOL.md section 12.6) as an `Exif` item in the `meta` box (`infe`
//! version 2, one `iloc` extent with an absolute 32-bit offset, a `cdsc` reference to the image), the layout the
//! ComfyUI frontend reads back and ComfyUI core's SaveImageAdvanced writes.

use std::io::Write;

use ravif::{Encoder, MatrixCoefficients, PixelRange};

use super::{EncodeError, Image8, Pixels, Samples};

/// Accepted `quality` values (ravif's scale: 100 is the best).
pub const AVIF_QUALITY: std::ops::RangeInclusive<u8> = 1..=100;
/// Accepted `speed` values (rav1e's presets: 1 slowest and smallest, 10 fastest).
pub const AVIF_SPEED: std::ops::RangeInclusive<u8> = 1..=10;

/// BT.601 luma weights (ITU-T H.273 `MatrixCoefficients` 6), in binary64.
const KR: f64 = 0.299;
const KG: f64 = 0.587;
const KB: f64 = 0.114;

/// AVIF settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvifOptions {
    /// 1..=100, ravif's quality scale (also used for the alpha plane).
    pub quality: u8,
    /// 1..=10, rav1e's speed preset.
    pub speed: u8,
    /// 10 bits per sample from the samples as submitted, else 8 bits from the 8-bit image.
    pub ten_bit: bool,
}

/// One pixel's `[Y, Cb, Cr]` codes at `bits` (8 or 10) from colour values in [0, 1] (PROTOCOL.md section 10.7):
/// `Y' = 0.299 R + 0.587 G + 0.114 B`, `Cb' = (B - Y') / (2 (1 - 0.114))`, `Cr' = (R - Y') / (2 (1 - 0.299))` in
/// binary64, in that order; then `Y = round(M Y')`, `Cb = round(M Cb' + 2^(bits-1))`, `Cr = round(M Cr' + 2^(bits-1))` with
/// `M = 2^bits - 1`, `round(v) = floor(v + 0.5)`, each clamped to [0, M] (ITU-T H.273 full range).
#[inline]
pub fn ycbcr(r: f64, g: f64, b: f64, bits: u32) -> [u16; 3] {
    let max = f64::from((1u32 << bits) - 1);
    let mid = f64::from(1u32 << (bits - 1));
    let y = KR * r + KG * g + KB * b;
    let cb = (b - y) / (2.0 * (1.0 - KB));
    let cr = (r - y) / (2.0 * (1.0 - KR));
    [code(max * y, max), code(max * cb + mid, max), code(max * cr + mid, max)]
}

/// An alpha value in [0, 1] as a code at `bits`: `round(M a)`.
#[inline]
pub fn alpha_code(a: f64, bits: u32) -> u16 {
    let max = f64::from((1u32 << bits) - 1);
    code(max * a, max)
}

#[inline]
fn code(v: f64, max: f64) -> u16 {
    (v + 0.5).floor().clamp(0.0, max) as u16
}

/// A submitted f32 sample as the value the planes are built from: clamped to [0, 1], NaN gives 0.
#[inline]
fn unit_f32(x: f32) -> f64 {
    if x.is_nan() { 0.0 } else { f64::from(x.clamp(0.0, 1.0)) }
}

/// The planes of one image: `[Y, Cb, Cr]` per pixel, alpha codes when it has 4 channels.
struct Planes {
    colour: Vec<[u16; 3]>,
    alpha: Option<Vec<u16>>,
}

/// Builds the planes from per-sample values in [0, 1] (`value(i)` for sample index `i`).
fn planes(pixels: usize, channels: u8, bits: u32, value: impl Fn(usize) -> f64) -> Result<Planes, EncodeError> {
    let c = usize::from(channels);
    if !matches!(channels, 1 | 3 | 4) {
        return Err(EncodeError::InvalidImage(format!("{channels} channels")));
    }
    let colour = (0..pixels)
        .map(|p| {
            let i = p * c;
            if c == 1 {
                let v = value(i);
                ycbcr(v, v, v, bits)
            } else {
                ycbcr(value(i), value(i + 1), value(i + 2), bits)
            }
        })
        .collect();
    let alpha = (c == 4).then(|| (0..pixels).map(|p| alpha_code(value(p * 4 + 3), bits)).collect());
    Ok(Planes { colour, alpha })
}

/// Encodes `pixels` as AVIF into `out`: 10-bit planes from the samples as submitted, 8-bit ones from the 8-bit
/// image; `exif` (TIFF bytes) becomes the file's Exif item.
pub fn encode_avif<W: Write>(
    pixels: &Pixels,
    options: AvifOptions,
    exif: Option<&[u8]>,
    out: W,
) -> Result<(), EncodeError> {
    check_options(options)?;
    let planes = if options.ten_bit {
        let raw = pixels.raw();
        let count = raw.width as usize * raw.height as usize;
        let expected = count * usize::from(raw.channels);
        if raw.samples.len() != expected {
            return Err(EncodeError::InvalidImage(format!("{} samples, expected {expected}", raw.samples.len())));
        }
        match &raw.samples {
            Samples::U8(v) => planes(count, raw.channels, 10, |i| f64::from(v[i]) / 255.0)?,
            Samples::U16(v) => planes(count, raw.channels, 10, |i| f64::from(v[i]) / 65535.0)?,
            Samples::F32(v) => planes(count, raw.channels, 10, |i| unit_f32(v[i]))?,
        }
    } else {
        eight_bit_planes(&pixels.image8())?
    };
    let (width, height, _) = pixels.geometry();
    write_avif(width, height, planes, options, exif, out)
}

/// Encodes an 8-bit image as AVIF (at 10 bits if `options.ten_bit`, from the 8-bit values).
pub fn encode_avif_image8<W: Write>(
    image: &Image8,
    options: AvifOptions,
    exif: Option<&[u8]>,
    out: W,
) -> Result<(), EncodeError> {
    check_options(options)?;
    let planes = if options.ten_bit {
        let count = image.width as usize * image.height as usize;
        check_len(image.data.len(), count * usize::from(image.channels))?;
        planes(count, image.channels, 10, |i| f64::from(image.data[i]) / 255.0)?
    } else {
        eight_bit_planes(image)?
    };
    write_avif(image.width, image.height, planes, options, exif, out)
}

fn check_options(options: AvifOptions) -> Result<(), EncodeError> {
    if !AVIF_QUALITY.contains(&options.quality) {
        return Err(EncodeError::InvalidOption(format!("AVIF quality {} is outside 1..=100", options.quality)));
    }
    if !AVIF_SPEED.contains(&options.speed) {
        return Err(EncodeError::InvalidOption(format!("AVIF speed {} is outside 1..=10", options.speed)));
    }
    Ok(())
}

fn check_len(len: usize, expected: usize) -> Result<(), EncodeError> {
    if len != expected {
        return Err(EncodeError::InvalidImage(format!("{len} samples, expected {expected}")));
    }
    Ok(())
}

fn write_avif<W: Write>(
    width: u32,
    height: u32,
    planes: Planes,
    options: AvifOptions,
    exif: Option<&[u8]>,
    mut out: W,
) -> Result<(), EncodeError> {
    let mut encoder = Encoder::new()
        .with_quality(f32::from(options.quality))
        .with_alpha_quality(f32::from(options.quality))
        .with_speed(options.speed)
        // One thread and one tile per image: the daemon's worker pool runs images in parallel.
        .with_num_threads(Some(1));
    if let Some(exif) = exif {
        // A HEIF Exif item starts with the offset of the TIFF header from the item's payload (0 here). Passing
        // it framed keeps the item a single `iloc` extent, which is all the ComfyUI frontend reads.
        let mut item = Vec::with_capacity(4 + exif.len());
        item.extend_from_slice(&[0; 4]);
        item.extend_from_slice(exif);
        encoder = encoder.with_exif(item);
    }
    let (w, h) = (width as usize, height as usize);
    let encoded = if options.ten_bit {
        encoder.encode_raw_planes_10_bit(w, h, planes.colour, planes.alpha, PixelRange::Full, MatrixCoefficients::BT601)
    } else {
        encoder.encode_raw_planes_8_bit(
            w,
            h,
            planes.colour.into_iter().map(|p| p.map(|c| c as u8)),
            planes.alpha.map(|a| a.into_iter().map(|c| c as u8)),
            PixelRange::Full,
            MatrixCoefficients::BT601,
        )
    }
    .map_err(|e| EncodeError::Codec(format!("AVIF encoder: {e}")))?;
    out.write_all(&encoded.avif_file)?;
    Ok(())
}

fn eight_bit_planes(image: &Image8) -> Result<Planes, EncodeError> {
    let count = image.width as usize * image.height as usize;
    check_len(image.data.len(), count * usize::from(image.channels))?;
    planes(count, image.channels, 8, |i| f64::from(image.data[i]) / 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::RawImage;

    /// PROTOCOL.md section 10.7's AVIF table, value by value.
    #[test]
    fn ycbcr_codes_match_the_protocol_table() {
        let ten: [([f64; 3], [u16; 3]); 8] = [
            ([0.0, 0.0, 0.0], [0, 512, 512]),
            ([1.0, 1.0, 1.0], [1023, 512, 512]),
            ([1.0, 0.0, 0.0], [306, 339, 1023]),
            ([0.0, 1.0, 0.0], [601, 173, 84]),
            ([0.0, 0.0, 1.0], [117, 1023, 429]),
            ([0.5, 0.5, 0.5], [511, 512, 512]),
            ([0.25, 0.5, 0.75], [464, 683, 363]),
            ([0.1, 0.2, 0.3], [186, 580, 453]),
        ];
        for (rgb, expected) in ten {
            assert_eq!(ycbcr(rgb[0], rgb[1], rgb[2], 10), expected, "10-bit {rgb:?}");
        }
        let eight: [([f64; 3], [u16; 3]); 4] = [
            ([0.0, 0.0, 0.0], [0, 128, 128]),
            ([1.0, 1.0, 1.0], [255, 128, 128]),
            ([1.0, 0.0, 0.0], [76, 85, 255]),
            ([0.0, 0.0, 1.0], [29, 255, 107]),
        ];
        for (rgb, expected) in eight {
            assert_eq!(ycbcr(rgb[0], rgb[1], rgb[2], 8), expected, "8-bit {rgb:?}");
        }
        assert_eq!([0.0, 0.5, 1.0, 1.0 / 1023.0].map(|a| alpha_code(a, 10)), [0, 512, 1023, 1]);
        assert_eq!([0.0, 0.5, 1.0].map(|a| alpha_code(a, 8)), [0, 128, 255]);
    }

    #[test]
    fn ten_bit_planes_come_from_the_floats_not_from_eight_bits() {
        // Two floats that share one 8-bit value (127) get different 10-bit codes.
        let raw = RawImage { width: 2, height: 1, channels: 1, samples: Samples::F32(vec![0.4985, 0.5]) };
        assert_eq!(raw.to_image8().data, [127, 127]);
        let Samples::F32(v) = &raw.samples else { unreachable!() };
        let p = planes(2, 1, 10, |i| unit_f32(v[i])).unwrap();
        assert_eq!(p.colour, [[510, 512, 512], [511, 512, 512]]);
        // Out-of-range floats clamp; NaN is 0.
        let p = planes(4, 1, 10, |i| unit_f32([2.0, -1.0, f32::NAN, f32::INFINITY][i])).unwrap();
        assert_eq!(p.colour.iter().map(|c| c[0]).collect::<Vec<_>>(), [1023, 0, 0, 1023]);
    }

    #[test]
    fn alpha_is_its_own_plane_and_colour_ignores_it() {
        let image = Image8 { width: 1, height: 1, channels: 4, data: vec![255, 0, 0, 128] };
        let p = eight_bit_planes(&image).unwrap();
        assert_eq!(p.colour, [[76, 85, 255]]);
        assert_eq!(p.alpha, Some(vec![128]));
    }

    #[test]
    fn options_out_of_range_are_refused_with_their_range() {
        let pixels = Pixels::Eight(Image8 { width: 1, height: 1, channels: 3, data: vec![0; 3] });
        let err = |o| encode_avif(&pixels, o, None, Vec::new()).unwrap_err().to_string();
        let ok = AvifOptions { quality: 80, speed: 6, ten_bit: false };
        assert_eq!(err(AvifOptions { quality: 0, ..ok }), "AVIF quality 0 is outside 1..=100");
        assert_eq!(err(AvifOptions { quality: 101, ..ok }), "AVIF quality 101 is outside 1..=100");
        assert_eq!(err(AvifOptions { speed: 0, ..ok }), "AVIF speed 0 is outside 1..=10");
        assert_eq!(err(AvifOptions { speed: 11, ..ok }), "AVIF speed 11 is outside 1..=10");
    }
}
