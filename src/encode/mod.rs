//! Pure encoding: sample conversion to 8 bits, quality-gate scores, metadata layout, and pixels + options to
//! image bytes through any `Write`. No sockets, no shared memory, no file names.

mod avif_encoder;
mod exr_encoder;
mod gate;
mod jpeg_encoder;
mod jxl_encoder;
mod metadata;
mod pixels;
mod png_deflate;
mod png_encoder;
mod png_fast;
mod png_filter;
// The one use of `unsafe` in encoding: unaligned vector loads (each with its `// SAFETY:`).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod png_filter_x86;
mod png_huffman;
pub mod pyjson;
mod thumbnail;
mod webp_encoder;

use std::io::Write;

pub use avif_encoder::{AVIF_QUALITY, AVIF_SPEED, AvifOptions, alpha_code, encode_avif, encode_avif_image8, ycbcr};
pub use exr_encoder::{ExrInput, encode_exr, srgb_to_linear};
pub use gate::{EDGE_SCALE, Scores, VARIANCE_SCALE, scores};
pub use jpeg_encoder::encode_jpeg;
pub use jxl_encoder::{JXL_MIN_SIDE, encode_jxl, encode_jxl16};
pub use metadata::{MAX_APP1_PAYLOAD, Metadata, jpeg_app1};
pub use pixels::{Image8, Pixels, RawImage, SampleFormat, Samples, append_samples, convert_row, u16_of_f32};
pub use png_encoder::{PngOptions, encode_png, encode_png16};
pub use thumbnail::{
    THUMBNAIL_QUALITY, THUMBNAIL_SIZES, encode_thumbnail, scale_down, thumbnail_dims, thumbnail_metadata,
};
pub use webp_encoder::encode_webp;

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// The image is inconsistent (a bug in the caller).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The writer failed (disk full, ...).
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The codec library failed.
    #[error("{0}")]
    Codec(String),
}

/// The output format and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG at a ComfyUI compression level 0..9.
    Png { compression: u8 },
    /// WebP, lossless or lossy at a quality.
    Webp { lossless: bool, quality: u8 },
    /// JPEG at a quality.
    Jpeg { quality: u8 },
    /// 16-bit PNG at a ComfyUI compression level 0..9, from the samples as submitted.
    Png16 { compression: u8 },
    /// OpenEXR, 16-bit half or 32-bit float samples, from the samples as submitted.
    Exr { half: bool, input: ExrInput },
    /// AVIF at a quality (1..=100) and speed (1..=10), 8-bit from the 8-bit image or 10-bit from the samples as
    /// submitted.
    Avif(AvifOptions),
    /// Lossless JPEG XL, 8 bits per sample or (`sixteen`) 16 from the samples as submitted.
    Jxl { sixteen: bool },
}

impl Format {
    /// Whether the format keeps more than 8 bits, so the worker must hand it the samples as submitted.
    pub fn wants_raw(self) -> bool {
        matches!(
            self,
            Self::Png16 { .. }
                | Self::Exr { .. }
                | Self::Avif(AvifOptions { ten_bit: true, .. })
                | Self::Jxl { sixteen: true }
        )
    }
}

/// Encodes `image` in `format` with `metadata` (if any) into `out`. Returns notes for the user (for example
/// metadata left out of a JPEG to fit its 64 KiB EXIF segment). A high-precision format gets the 8-bit samples
/// widened; use [`encode_pixels`] to give it the samples as submitted.
pub fn encode<W: Write>(
    image: &Image8,
    format: Format,
    metadata: Option<&Metadata>,
    out: W,
) -> Result<Vec<String>, EncodeError> {
    // AVIF builds its 10-bit planes from the 8-bit values directly; the others take widened samples.
    if format.wants_raw() && !matches!(format, Format::Avif(_)) {
        return encode_pixels(&Pixels::Eight(image.clone()), format, metadata, out);
    }
    encode_eight(image, format, metadata, out)
}

/// Encodes `pixels` in `format`: high-precision formats use the samples as submitted, 8-bit ones the 8-bit image.
pub fn encode_pixels<W: Write>(
    pixels: &Pixels,
    format: Format,
    metadata: Option<&Metadata>,
    out: W,
) -> Result<Vec<String>, EncodeError> {
    match format {
        Format::Png16 { compression } => {
            let text = metadata.map(Metadata::png_text).unwrap_or_default();
            encode_png16(&pixels.raw(), &PngOptions { compression, text }, out)?;
            Ok(Vec::new())
        }
        Format::Exr { half, input } => {
            let text = metadata.map(Metadata::png_text).unwrap_or_default();
            encode_exr(&pixels.raw(), half, input, &text, out)?;
            Ok(Vec::new())
        }
        Format::Avif(options) => {
            let exif = metadata.map(|m| m.exif(true, &[]));
            encode_avif(pixels, options, exif.as_deref(), out)?;
            Ok(Vec::new())
        }
        Format::Jxl { sixteen: true } => {
            let exif = metadata.map(|m| m.exif(true, &[]));
            encode_jxl16(&pixels.raw(), exif.as_deref(), out)?;
            Ok(Vec::new())
        }
        _ => encode_eight(&pixels.image8(), format, metadata, out),
    }
}

fn encode_eight<W: Write>(
    image: &Image8,
    format: Format,
    metadata: Option<&Metadata>,
    out: W,
) -> Result<Vec<String>, EncodeError> {
    match format {
        Format::Png { compression } => {
            let text = metadata.map(Metadata::png_text).unwrap_or_default();
            encode_png(image, &PngOptions { compression, text }, out)?;
            Ok(Vec::new())
        }
        Format::Webp { lossless, quality } => {
            let exif = metadata.map(|m| m.exif(true, &[]));
            encode_webp(image, lossless, quality, exif.as_deref(), out)?;
            Ok(Vec::new())
        }
        Format::Jpeg { quality } => {
            let (app1, notes) = metadata.map(jpeg_app1).unwrap_or((None, Vec::new()));
            encode_jpeg(image, quality, app1.as_deref(), out)?;
            Ok(notes)
        }
        Format::Avif(options) => {
            let exif = metadata.map(|m| m.exif(true, &[]));
            encode_avif_image8(image, options, exif.as_deref(), out)?;
            Ok(Vec::new())
        }
        Format::Jxl { sixteen: false } => {
            let exif = metadata.map(|m| m.exif(true, &[]));
            encode_jxl(image, exif.as_deref(), out)?;
            Ok(Vec::new())
        }
        Format::Png16 { .. } | Format::Exr { .. } | Format::Jxl { sixteen: true } => {
            unreachable!("high-precision formats go through encode_pixels")
        }
    }
}
