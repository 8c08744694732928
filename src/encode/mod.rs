//! Pure encoding: sample conversion to 8 bits, quality-gate scores, metadata layout, and pixels + options to
//! image bytes through any `Write`. No sockets, no shared memory, no file names.

mod gate;
mod jpeg_encoder;
mod metadata;
mod pixels;
mod png_deflate;
mod png_encoder;
mod png_fast;
mod png_huffman;
pub mod pyjson;
mod thumbnail;
mod webp_encoder;

use std::io::Write;

pub use gate::{EDGE_SCALE, Scores, VARIANCE_SCALE, scores};
pub use jpeg_encoder::encode_jpeg;
pub use metadata::{MAX_APP1_PAYLOAD, Metadata, jpeg_app1};
pub use pixels::{Image8, SampleFormat, convert_row};
pub use png_encoder::{PngOptions, encode_png};
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
}

/// Encodes `image` in `format` with `metadata` (if any) into `out`. Returns notes for the user (for example
/// metadata left out of a JPEG to fit its 64 KiB EXIF segment).
pub fn encode<W: Write>(
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
    }
}
