//! PNG encoding with ComfyUI's `compress_level` scale 0..9.
//!
//! Level mapping (same pixels at every level; see docs/ARCHITECTURE.md and docs/BENCHMARKS.md):
//! 0 stores uncompressed; 1..=4 use fdeflate with adaptive filtering (ComfyUI's default level 4 must not become
//! flate2 `Level(4)`, which is slower than PIL and larger); 5..=9 use zlib-compatible deflate at that level.

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
    for (key, value) in &options.text {
        // Like PIL's PngInfo.add_text: tEXt when the value is Latin-1, iTXt (UTF-8) otherwise.
        if value.chars().all(|c| u32::from(c) < 256) {
            encoder.add_text_chunk(key.clone(), value.clone())?;
        } else {
            encoder.add_itxt_chunk(key.clone(), value.clone())?;
        }
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.data)?;
    writer.finish()?;
    Ok(())
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
    fn level_ten_is_a_clear_error() {
        let options = PngOptions { compression: 10, ..PngOptions::default() };
        let err = encode_png(&gradient(3), &options, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "png_compression 10 is outside 0..=9");
    }
}
