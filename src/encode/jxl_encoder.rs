//! JPEG XL, lossless only, through the pure-Rust `zune-jpegxl` (a port of libjxl's fast-lossless encoder:
//! modular mode, YCoCg for colour, 8 or 16 bits per sample, gray, RGB and RGBA). Lossy JPEG XL (VarDCT) is not
//! offered: no encoder whose licence fits this MIT project builds here for Linux and Windows (ARCHITECTURE.md).
//!
//! Metadata (PROTOCOL.md section 12.6): without any, the file is the bare codestream (`FF 0A`). With metadata it
//! is the ISO/IEC 18181-2 container: the `JXL ` signature box, `ftyp`, an `Exif` box (a 4-byte TIFF header
//! offset of 0, then the same big-endian TIFF WebP carries: IFD0 0x0110 `prompt:<json>`, 0x010F
//! `workflow:<json>` counting down, the UserComment summary), then the codestream in one `jxlc` box. The `Exif`
//! box comes before the codestream so a reader that stops at the image data has already seen it.

use std::io::Write;

use zune_core::bit_depth::BitDepth;
use zune_core::colorspace::ColorSpace;
use zune_core::options::EncoderOptions;
use zune_jpegxl::{JxlEncodeErrors, JxlSimpleEncoder};

use super::{EncodeError, Image8, RawImage};

/// The smallest width and height the encoder takes (zune-jpegxl refuses images one pixel wide or high).
pub const JXL_MIN_SIDE: u32 = 2;

/// The ISO/IEC 18181-2 signature box, then `ftyp` with brand `jxl `, minor version 0, compatible `jxl `.
const CONTAINER_HEAD: &[u8] = b"\0\0\0\x0cJXL \r\n\x87\n\0\0\0\x14ftypjxl \0\0\0\0jxl ";

/// Encodes `image` (8 bits per sample) as lossless JPEG XL; `exif` (TIFF bytes) goes into an `Exif` box.
pub fn encode_jxl<W: Write>(image: &Image8, exif: Option<&[u8]>, out: W) -> Result<(), EncodeError> {
    let codestream = codestream(&image.data, image.width, image.height, image.channels, BitDepth::Eight)?;
    write_file(&codestream, exif, out)
}

/// Encodes `image` as lossless 16-bit JPEG XL from its samples as submitted (f32 through
/// [`super::u16_of_f32`], u16 as is, u8 widened by 257, as 16-bit PNG).
pub fn encode_jxl16<W: Write>(image: &RawImage, exif: Option<&[u8]>, out: W) -> Result<(), EncodeError> {
    // zune-jpegxl reads 16-bit samples as native-endian byte pairs.
    let bytes: Vec<u8> = image.to_u16().iter().flat_map(|v| v.to_ne_bytes()).collect();
    let codestream = codestream(&bytes, image.width, image.height, image.channels, BitDepth::Sixteen)?;
    write_file(&codestream, exif, out)
}

fn codestream(data: &[u8], width: u32, height: u32, channels: u8, depth: BitDepth) -> Result<Vec<u8>, EncodeError> {
    let colorspace = match channels {
        1 => ColorSpace::Luma,
        3 => ColorSpace::RGB,
        4 => ColorSpace::RGBA,
        n => return Err(EncodeError::InvalidImage(format!("{n} channels"))),
    };
    if width < JXL_MIN_SIDE || height < JXL_MIN_SIDE {
        return Err(EncodeError::InvalidImage(format!(
            "JPEG XL needs at least {JXL_MIN_SIDE}x{JXL_MIN_SIDE} pixels, the image is {width}x{height}"
        )));
    }
    let options = EncoderOptions::new(width as usize, height as usize, colorspace, depth).set_num_threads(1);
    let mut codestream = Vec::with_capacity(data.len() / 2);
    JxlSimpleEncoder::new(data, options).encode(&mut codestream).map_err(|e| match e {
        JxlEncodeErrors::IoErrors(io) => EncodeError::Codec(format!("JPEG XL encoder: {io:?}")),
        other => EncodeError::Codec(format!("JPEG XL encoder: {}", format!("{other:?}").trim_end())),
    })?;
    Ok(codestream)
}

/// Writes the bare codestream, or the container with an `Exif` box when there is metadata.
fn write_file<W: Write>(codestream: &[u8], exif: Option<&[u8]>, mut out: W) -> Result<(), EncodeError> {
    let Some(exif) = exif else {
        out.write_all(codestream)?;
        return Ok(());
    };
    out.write_all(CONTAINER_HEAD)?;
    write_box(&mut out, b"Exif", &[&0u32.to_be_bytes(), exif])?;
    write_box(&mut out, b"jxlc", &[codestream])?;
    Ok(())
}

/// One ISOBMFF box: a 32-bit size, or size 1 and a 64-bit size when the box outgrows 32 bits.
fn write_box<W: Write>(out: &mut W, kind: &[u8; 4], parts: &[&[u8]]) -> std::io::Result<()> {
    let payload: u64 = parts.iter().map(|p| p.len() as u64).sum();
    match u32::try_from(payload + 8) {
        Ok(size) => {
            out.write_all(&size.to_be_bytes())?;
            out.write_all(kind)?;
        }
        Err(_) => {
            out.write_all(&1u32.to_be_bytes())?;
            out.write_all(kind)?;
            out.write_all(&(payload + 16).to_be_bytes())?;
        }
    }
    parts.iter().try_for_each(|p| out.write_all(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes with jxl-oxide (an independent decoder): the bits per sample and the 8-bit samples.
    fn decode8(bytes: &[u8]) -> (u32, Vec<u8>) {
        let image = jxl_oxide::JxlImage::builder().read(std::io::Cursor::new(bytes)).unwrap();
        let bits = image.image_header().metadata.bit_depth.bits_per_sample();
        let render = image.render_frame(0).unwrap();
        let mut stream = render.stream();
        let mut samples = vec![0u8; (stream.width() * stream.height() * stream.channels()) as usize];
        stream.write_to_buffer(&mut samples);
        (bits, samples)
    }

    #[test]
    fn eight_bit_rgba_decodes_to_the_same_samples() {
        let (w, h) = (300u32, 7u32);
        let data: Vec<u8> = (0..w * h * 4).map(|i| (i * 37 % 251) as u8).collect();
        let image = Image8 { width: w, height: h, channels: 4, data: data.clone() };
        let mut bytes = Vec::new();
        encode_jxl(&image, None, &mut bytes).unwrap();
        assert_eq!(&bytes[..2], b"\xff\x0a", "bare codestream without metadata");
        let (bits, got) = decode8(&bytes);
        assert_eq!(bits, 8);
        assert!(got == data, "decoded samples differ");
    }

    #[test]
    fn exif_goes_in_a_box_before_the_codestream() {
        let image = Image8 { width: 2, height: 2, channels: 1, data: vec![0, 64, 128, 255] };
        let mut bytes = Vec::new();
        encode_jxl(&image, Some(b"MM\0*\0\0\0\x08"), &mut bytes).unwrap();
        assert_eq!(&bytes[..32], CONTAINER_HEAD);
        assert_eq!(&bytes[32..48], b"\0\0\0\x14Exif\0\0\0\0MM\0*");
        let jxlc = u32::from_be_bytes(bytes[52..56].try_into().unwrap()) as usize;
        assert_eq!((&bytes[56..62], 52 + jxlc), (&b"jxlc\xff\x0a"[..], bytes.len()));
    }

    #[test]
    fn one_pixel_wide_images_get_a_clear_error() {
        let image = Image8 { width: 1, height: 9, channels: 3, data: vec![7; 27] };
        let err = encode_jxl(&image, None, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "invalid image: JPEG XL needs at least 2x2 pixels, the image is 1x9");
    }
}
