//! JPEG through libjpeg-turbo-compatible settings (mozjpeg's "fastest" profile is libjpeg v6 / turbo behaviour:
//! baseline, 4:2:0, no trellis), so speed and files match PIL's. Alpha is dropped; EXIF goes in APP1.

use std::io::Write;

use super::{EncodeError, Image8};

/// Encodes `image` as JPEG at `quality` with an optional APP1 payload (`Exif\0\0` + TIFF, at most 65533 bytes).
pub fn encode_jpeg<W: Write>(image: &Image8, quality: u8, app1: Option<&[u8]>, mut out: W) -> Result<(), EncodeError> {
    let (pixels, color) = match image.channels {
        1 => (image.data.clone(), mozjpeg::ColorSpace::JCS_GRAYSCALE),
        3 => (image.data.clone(), mozjpeg::ColorSpace::JCS_RGB),
        4 => (image.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(), mozjpeg::ColorSpace::JCS_RGB),
        n => return Err(EncodeError::InvalidImage(format!("{n} channels"))),
    };
    let (width, height) = (image.width as usize, image.height as usize);
    // libjpeg reports errors by unwinding (the crate's documented contract), so contain them here.
    let encoded = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
        let mut comp = mozjpeg::Compress::new(color);
        comp.set_fastest_defaults();
        comp.set_size(width, height);
        comp.set_quality(f32::from(quality));
        let mut started = comp.start_compress(Vec::with_capacity(width * height / 2))?;
        if let Some(app1) = app1 {
            started.write_marker(mozjpeg::Marker::APP(1), app1);
        }
        started.write_scanlines(&pixels)?;
        started.finish()
    })
    .map_err(|_| EncodeError::Codec("libjpeg failed while encoding".into()))??;
    out.write_all(&encoded)?;
    Ok(())
}
