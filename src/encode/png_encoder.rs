//! PNG encoding with ComfyUI's `compress_level` scale 0..9.
//!
//! Level mapping (same pixels at every level; see docs/ARCHITECTURE.md and docs/BENCHMARKS.md):
//! 0 stores uncompressed; 1..=4 use fdeflate with adaptive filtering; 5..=9 use zlib-compatible deflate at that
//! level with adaptive filtering. Measured against Pillow (zlib-ng) on the benchmark image: fdeflate is >30x PIL's
//! level 4 per core but ~8% larger; flate2 `Level(4)` would be ~20x slower than fdeflate for a file only 0.4%
//! smaller, and levels 5..=9 are 1.6-2x faster than PIL and ~7% larger. No deflate option of the `png` crate comes
//! within 3% of zlib-ng at levels 4..=9 on that image: closing the gap needs a Huffman-only/RLE deflate strategy
//! (docs/BENCHMARKS.md lists what was tried).

use std::io::Write;

use super::{EncodeError, Image8};

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
    let color = match image.channels {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        n => return Err(EncodeError::InvalidImage(format!("{n} channels"))),
    };
    let expected = image.width as usize * image.height as usize * usize::from(image.channels);
    if image.data.len() != expected {
        return Err(EncodeError::InvalidImage(format!("{} bytes, expected {expected}", image.data.len())));
    }
    let mut encoder = png::Encoder::new(out, image.width, image.height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    match options.compression {
        0 => encoder.set_deflate_compression(png::DeflateCompression::NoCompression),
        1..=4 => encoder.set_compression(png::Compression::Fast),
        level => {
            encoder.set_deflate_compression(png::DeflateCompression::Level(level));
            encoder.set_filter(png::Filter::Adaptive);
        }
    }
    let mut writer = encoder.write_header()?;
    // Text chunks are written by hand, in the caller's order, before the image data: like PIL's
    // PngInfo.add_text, tEXt when the value is Latin-1 and iTXt (UTF-8) otherwise. (The encoder's own text
    // support would group all tEXt before all iTXt and change the order ComfyUI's readers see.)
    for (key, value) in &options.text {
        let (kind, data) = text_chunk(key, value)?;
        writer.write_chunk(kind, &data)?;
    }
    writer.write_image_data(&image.data)?;
    writer.finish()?;
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

    #[test]
    fn every_level_decodes_to_the_same_pixels() {
        for channels in [1, 3, 4] {
            let image = gradient(channels);
            for level in 0..=9 {
                let mut bytes = Vec::new();
                let options = PngOptions { compression: level, ..PngOptions::default() };
                encode_png(&image, &options, &mut bytes).unwrap();
                let decoded = image::load_from_memory(&bytes).unwrap();
                let raw = match channels {
                    1 => decoded.to_luma8().into_raw(),
                    3 => decoded.to_rgb8().into_raw(),
                    _ => decoded.to_rgba8().into_raw(),
                };
                assert_eq!(raw, image.data, "channels {channels} level {level}");
            }
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

    #[test]
    fn level_ten_is_a_clear_error() {
        let options = PngOptions { compression: 10, ..PngOptions::default() };
        let err = encode_png(&gradient(3), &options, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "png_compression 10 is outside 0..=9");
    }
}
