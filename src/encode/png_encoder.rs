//! PNG encoding with ComfyUI's `compress_level` scale 0..9.
//!
//! Level mapping (same pixels at every level; measurements in docs/BENCHMARKS.md):
//! - 0 stores uncompressed;
//! - 1..=4 filter adaptively and deflate with [`super::png_fast`]: Huffman codes fitted to each block of
//!   filtered rows, runs for flat areas, LZ77 only where the data is predictable;
//! - 5..=9 take the smallest of that stream and miniz_oxide's RLE (from 7 also LZ77) streams, see
//!   [`super::png_deflate`], so a higher level never gives a larger file.

use std::io::Write;

use super::png_deflate::Rows;
use super::{EncodeError, Image8, RawImage};

/// PNG options. `#[non_exhaustive]`: construct with [`PngOptions::default`] and set fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PngOptions {
    /// ComfyUI's `compress_level`, 0..=9. Default 4.
    pub compression: u8,
    /// tEXt chunks, written in order before the image data.
    pub text: Vec<(String, String)>,
}

impl Default for PngOptions {
    fn default() -> Self {
        Self { compression: 4, text: Vec::new() }
    }
}

impl From<png::EncodingError> for EncodeError {
    fn from(e: png::EncodingError) -> Self {
        match e {
            png::EncodingError::IoError(io) => Self::Io(io),
            other => Self::Codec(format!("PNG encoder: {other}")),
        }
    }
}

/// Encodes `image` as PNG into `out`.
pub fn encode_png<W: Write>(image: &Image8, options: &PngOptions, out: W) -> Result<(), EncodeError> {
    if options.compression > 9 {
        return Err(EncodeError::InvalidOption(format!("png_compression {} is outside 0..=9", options.compression)));
    }
    let color = color_type(image.channels)?;
    let expected = image.width as usize * image.height as usize * usize::from(image.channels);
    if image.data.len() != expected {
        return Err(EncodeError::InvalidImage(format!("{} bytes, expected {expected}", image.data.len())));
    }
    encode_filtered_deflate(Rows::of(image), 8, color, options, out)
}

/// Encodes `image` as a 16-bit PNG into `out`, from its samples as submitted (f32 through [`super::u16_of_f32`],
/// u16 as is, u8 widened by 257), with the same compression levels and text chunks as 8-bit PNG.
pub fn encode_png16<W: Write>(image: &RawImage, options: &PngOptions, out: W) -> Result<(), EncodeError> {
    if options.compression > 9 {
        return Err(EncodeError::InvalidOption(format!("png_compression {} is outside 0..=9", options.compression)));
    }
    let color = color_type(image.channels)?;
    let expected = image.width as usize * image.height as usize * usize::from(image.channels);
    if image.samples.len() != expected {
        return Err(EncodeError::InvalidImage(format!("{} samples, expected {expected}", image.samples.len())));
    }
    let be: Vec<u8> = image.to_u16().iter().flat_map(|v| v.to_be_bytes()).collect();
    let rows = Rows { data: &be, width: image.width, height: image.height, bpp: 2 * usize::from(image.channels) };
    encode_filtered_deflate(rows, 16, color, options, out)
}

fn color_type(channels: u8) -> Result<png::ColorType, EncodeError> {
    match channels {
        1 => Ok(png::ColorType::Grayscale),
        3 => Ok(png::ColorType::Rgb),
        4 => Ok(png::ColorType::Rgba),
        n => Err(EncodeError::InvalidImage(format!("{n} channels"))),
    }
}

/// The container written here, the image data from [`super::png_deflate`].
fn encode_filtered_deflate<W: Write>(
    image: Rows<'_>,
    bit_depth: u8,
    color: png::ColorType,
    options: &PngOptions,
    mut out: W,
) -> Result<(), EncodeError> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(image.width.to_be_bytes());
    ihdr.extend(image.height.to_be_bytes());
    // bit depth, colour type, deflate, adaptive filtering, no interlace
    ihdr.extend([bit_depth, color as u8, 0, 0, 0]);
    out.write_all(b"\x89PNG\r\n\x1a\n")?;
    write_chunk(&mut out, png::chunk::IHDR, &ihdr)?;
    for (key, value) in &options.text {
        let (kind, data) = text_chunk(key, value)?;
        write_chunk(&mut out, kind, &data)?;
    }
    let idat = super::png_deflate::idat_rows(image, options.compression)?;
    // IDAT in pieces of at most 1 MiB, as encoders conventionally do.
    for piece in idat.chunks(1 << 20) {
        write_chunk(&mut out, png::chunk::IDAT, piece)?;
    }
    write_chunk(&mut out, png::chunk::IEND, &[])?;
    out.flush()?;
    Ok(())
}

fn write_chunk<W: Write>(out: &mut W, kind: png::chunk::ChunkType, data: &[u8]) -> Result<(), EncodeError> {
    let len = u32::try_from(data.len()).map_err(|_| EncodeError::InvalidImage("chunk over 4 GiB".into()))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&kind.0);
    crc.update(data);
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&kind.0)?;
    out.write_all(data)?;
    out.write_all(&crc.finalize().to_be_bytes())?;
    Ok(())
}

/// The chunk type and body of one text entry.
fn text_chunk(key: &str, value: &str) -> Result<(png::chunk::ChunkType, Vec<u8>), EncodeError> {
    let latin1 = |s: &str| s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect::<Option<Vec<u8>>>();
    let keyword = latin1(key).filter(|k| (1..=79).contains(&k.len()) && !k.contains(&0)).ok_or_else(|| {
        EncodeError::InvalidOption(format!("PNG text key {key:?} must be 1 to 79 Latin-1 characters"))
    })?;
    let mut data = keyword;
    data.push(0);
    match latin1(value) {
        Some(text) => {
            data.extend(text);
            Ok((png::chunk::tEXt, data))
        }
        None => {
            // compression flag 0, method 0, empty language tag, empty translated keyword, then UTF-8 text.
            data.extend([0, 0, 0, 0]);
            data.extend(value.as_bytes());
            Ok((png::chunk::iTXt, data))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(channels: u8) -> Image8 {
        let (w, h) = (37u32, 23u32);
        let data = (0..w * h * u32::from(channels)).map(|i| (i * 7 % 251) as u8).collect();
        Image8 { width: w, height: h, channels, data }
    }

    fn decode(bytes: &[u8], channels: u8) -> Vec<u8> {
        let decoded = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).unwrap();
        match channels {
            1 => decoded.to_luma8().into_raw(),
            3 => decoded.to_rgb8().into_raw(),
            _ => decoded.to_rgba8().into_raw(),
        }
    }

    fn assert_round_trip(image: &Image8, what: &str) {
        for level in 0..=9 {
            let mut bytes = Vec::new();
            let options = PngOptions { compression: level, ..PngOptions::default() };
            encode_png(image, &options, &mut bytes).unwrap();
            assert!(decode(&bytes, image.channels) == image.data, "{what}: level {level} decodes to other pixels");
        }
    }

    #[test]
    fn every_level_decodes_to_the_same_pixels() {
        for channels in [1, 3, 4] {
            assert_round_trip(&gradient(channels), &format!("gradient, {channels} channels"));
        }
    }

    /// The benchmark corpus's classes in small: flat, near-flat, heavy noise, smooth gradients, transparency,
    /// repeated texture, and an image of more than one deflate block.
    #[test]
    fn every_image_class_round_trips_at_every_level() {
        let (w, h) = (301u32, 257u32);
        let n = (w * h) as usize;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let flat = vec![37u8; n * 3];
        let near_flat: Vec<u8> = (0..n * 3).map(|_| 120 + (next() % 3) as u8).collect();
        let noise: Vec<u8> = (0..n * 3).map(|_| next() as u8).collect();
        let smooth: Vec<u8> =
            (0..n).flat_map(|i| [(i % 301) as u8, (i / 301) as u8, ((i % 301 + i / 301) / 3) as u8]).collect();
        let rgba: Vec<u8> =
            (0..n).flat_map(|i| if i % 301 < 150 { [0, 0, 0, 0] } else { [200, 10, (i % 256) as u8, 128] }).collect();
        let texture: Vec<u8> = (0..n).map(|i| [9u8, 200, 45, 77, 77, 3][i % 301 % 6]).collect();
        let cases = [
            ("flat", 3, flat),
            ("near flat", 3, near_flat),
            ("noise", 3, noise),
            ("smooth", 3, smooth),
            ("rgba", 4, rgba),
            ("grey texture", 1, texture),
        ];
        for (what, channels, data) in cases {
            assert_round_trip(&Image8 { width: w, height: h, channels, data }, what);
        }
        let big = Image8 { width: 700, height: 300, channels: 3, data: crate::synthetic::rgb_u8(700, 300, 2) };
        assert_round_trip(&big, "several blocks");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Random images, odd widths and 1-pixel images included, decode to their pixels at every level.
        #[test]
        fn random_images_round_trip(
            width in 1u32..40,
            height in 1u32..12,
            channels in proptest::sample::select(vec![1u8, 3, 4]),
            seed in proptest::prelude::any::<u64>(),
            levels in 1u8..8,
        ) {
            // `levels`: how many distinct values, from pure noise (many) to long runs (few).
            let n = (width * height) as usize * usize::from(channels);
            let mut x = seed | 1;
            let data = (0..n).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ((x >> 32) % u64::from(levels * 32)) as u8 }).collect();
            assert_round_trip(&Image8 { width, height, channels, data }, "random image");
        }
    }

    #[test]
    fn text_keeps_its_order_when_latin1_and_utf8_values_mix() {
        let text = vec![
            ("prompt".to_owned(), "{}".to_owned()),
            ("custom_metadata".to_owned(), "check \u{2713}".to_owned()),
            ("image_type".to_owned(), "ORIG".to_owned()),
        ];
        let mut bytes = Vec::new();
        encode_png(&gradient(3), &PngOptions { compression: 4, text }, &mut bytes).unwrap();
        let kinds: Vec<&[u8]> = bytes.windows(4).filter(|w| *w == b"tEXt" || *w == b"iTXt").collect();
        assert_eq!(kinds, [b"tEXt".as_slice(), b"iTXt", b"tEXt"]);
    }

    /// 16-bit PNG from float samples: every level decodes to exactly the u16 values of PROTOCOL.md 10.7.
    #[test]
    fn sixteen_bit_png_decodes_to_the_specified_u16_values() {
        use super::super::{Samples, u16_of_f32};
        let (w, h) = (53u32, 19u32);
        for channels in [1u8, 3, 4] {
            let n = (w * h) as usize * usize::from(channels);
            let f: Vec<f32> = (0..n).map(|i| if i % 97 == 0 { 1.5 } else { (i % 1009) as f32 / 1008.0 }).collect();
            let raw = RawImage { width: w, height: h, channels, samples: Samples::F32(f.clone()) };
            for level in [0u8, 1, 4, 6, 9] {
                let mut bytes = Vec::new();
                encode_png16(&raw, &PngOptions { compression: level, ..PngOptions::default() }, &mut bytes).unwrap();
                let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
                let got: Vec<u16> = match channels {
                    1 => decoded.to_luma16().into_raw(),
                    3 => decoded.to_rgb16().into_raw(),
                    _ => decoded.to_rgba16().into_raw(),
                };
                let want: Vec<u16> = f.iter().map(|&x| u16_of_f32(x)).collect();
                assert!(got == want, "{channels} channels, level {level}: other samples");
                assert_eq!(bytes[24], 16, "IHDR bit depth");
            }
        }
    }

    #[test]
    fn level_ten_is_a_clear_error() {
        let options = PngOptions { compression: 10, ..PngOptions::default() };
        let err = encode_png(&gradient(3), &options, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "png_compression 10 is outside 0..=9");
    }
}

#[cfg(test)]
mod monotonic_tests {
    use super::*;

    fn size(image: &Image8, level: u8) -> usize {
        let mut bytes = Vec::new();
        encode_png(image, &PngOptions { compression: level, ..PngOptions::default() }, &mut bytes).unwrap();
        bytes.len()
    }

    /// Files never grow with the level, on a noisy photo-like image and on a flat illustration-like one.
    #[test]
    fn sizes_do_not_grow_with_the_level() {
        let noisy = Image8 { width: 256, height: 256, channels: 3, data: crate::synthetic::rgb_u8(256, 256, 3) };
        let flat_data: Vec<u8> = (0..256 * 256)
            .flat_map(|i| if (i % 256 / 32 + i / 256 / 32) % 2 == 0 { [200, 80, 40] } else { [20, 20, 90] })
            .collect();
        let flat = Image8 { width: 256, height: 256, channels: 3, data: flat_data };
        for image in [&noisy, &flat] {
            let sizes: Vec<usize> = (0..=9).map(|level| size(image, level)).collect();
            assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        }
    }
}
