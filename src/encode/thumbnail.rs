//! Thumbnails: the image scaled down to fit a square of `size` pixels (aspect kept, never enlarged, an area
//! average: `image::imageops::thumbnail`), encoded as lossy WebP. The metadata is a reference to the full image
//! and its summary, never the prompt or the workflow (those stay in the image itself).

use std::io::Write;

use image::{ImageBuffer, Luma, Rgb, Rgba, imageops};

use super::{EncodeError, Image8, Metadata, encode_webp};

/// WebP quality of thumbnails (small, and good enough for a preview).
pub const THUMBNAIL_QUALITY: u8 = 80;
/// Smallest and largest thumbnail size a job may ask for.
pub const THUMBNAIL_SIZES: std::ops::RangeInclusive<u32> = 16..=1024;

/// The dimensions of a thumbnail of a `width` x `height` image fitting in `size` x `size` (at least 1 pixel).
pub fn thumbnail_dims(width: u32, height: u32, size: u32) -> (u32, u32) {
    if width <= size && height <= size {
        return (width, height);
    }
    let scale = f64::from(size) / f64::from(width.max(height));
    let fit = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, size);
    (fit(width), fit(height))
}

/// Scales `image` down to fit `size` x `size`.
pub fn scale_down(image: &Image8, size: u32) -> Result<Image8, EncodeError> {
    let (w, h) = thumbnail_dims(image.width, image.height, size);
    let bad = || EncodeError::InvalidImage(format!("{}x{}x{}", image.width, image.height, image.channels));
    let data = &image.data[..];
    let data = match image.channels {
        1 => imageops::thumbnail(
            &ImageBuffer::<Luma<u8>, _>::from_raw(image.width, image.height, data).ok_or_else(bad)?,
            w,
            h,
        )
        .into_raw(),
        3 => imageops::thumbnail(
            &ImageBuffer::<Rgb<u8>, _>::from_raw(image.width, image.height, data).ok_or_else(bad)?,
            w,
            h,
        )
        .into_raw(),
        4 => imageops::thumbnail(
            &ImageBuffer::<Rgba<u8>, _>::from_raw(image.width, image.height, data).ok_or_else(bad)?,
            w,
            h,
        )
        .into_raw(),
        _ => return Err(bad()),
    };
    Ok(Image8 { width: w, height: h, channels: image.channels, data })
}

/// The thumbnail's metadata: `full`'s summary (affix, model, timestamp, batch index) and a reference to the
/// full image (`source:<path relative to the output root>` in the EXIF tag where images carry the workflow),
/// without the prompt, the workflow or the generation metadata.
pub fn thumbnail_metadata(full: &Metadata, source: &str) -> Metadata {
    Metadata {
        prompt: None,
        extra: vec![("source".to_owned(), source.to_owned())],
        generation_metadata: None,
        generation_fields: Vec::new(),
        custom_metadata: None,
        ..full.clone()
    }
}

/// Encodes the thumbnail of `image` (fitting `size` x `size`) as lossy WebP with `metadata`.
pub fn encode_thumbnail<W: Write>(
    image: &Image8,
    size: u32,
    metadata: Option<&Metadata>,
    out: W,
) -> Result<(u32, u32), EncodeError> {
    let small = scale_down(image, size)?;
    let exif = metadata.map(|m| m.exif(false, &[]));
    encode_webp(&small, false, THUMBNAIL_QUALITY, exif.as_deref(), out)?;
    Ok((small.width, small.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_fit_the_square_keep_the_aspect_and_never_grow() {
        assert_eq!(thumbnail_dims(1024, 1024, 256), (256, 256));
        assert_eq!(thumbnail_dims(1024, 512, 256), (256, 128));
        assert_eq!(thumbnail_dims(600, 1200, 256), (128, 256));
        assert_eq!(thumbnail_dims(100, 50, 256), (100, 50), "never enlarged");
        assert_eq!(thumbnail_dims(10_000, 3, 64), (64, 1), "at least one pixel");
    }

    #[test]
    fn a_thumbnail_decodes_to_the_scaled_image_and_carries_no_workflow() {
        let (w, h) = (300u32, 200u32);
        let data: Vec<u8> = (0..w * h * 3).map(|i| (i % 256) as u8).collect();
        let image = Image8 { width: w, height: h, channels: 3, data };
        let full = Metadata {
            prompt: Some("{\"1\": {}}".to_owned()),
            extra: vec![("workflow".to_owned(), "{\"nodes\": []}".to_owned())],
            image_type: "ORIG".to_owned(),
            model_name: "foo".to_owned(),
            ..Metadata::default()
        };
        let meta = thumbnail_metadata(&full, "ORIG/x_ORIG.png");
        let mut bytes = Vec::new();
        assert_eq!(encode_thumbnail(&image, 64, Some(&meta), &mut bytes).unwrap(), (64, 43));
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 43));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("source:ORIG/x_ORIG.png"), "the reference");
        let summary: Vec<u8> = "Image Type: ORIG, Model: foo".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert!(bytes.windows(summary.len()).any(|w| w == summary), "the summary (UserComment, UTF-16)");
        assert!(!text.contains("workflow") && !text.contains("prompt"), "no workflow, no prompt");
    }
}
