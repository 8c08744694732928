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
    let mut codestream = codestream(&bytes, image.width, image.height, image.channels, BitDepth::Sixteen)?;
    if image.channels == 4 {
        codestream = with_sixteen_bit_alpha(codestream, image.width, image.height)?;
    }
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

/// zune-jpegxl 0.5 declares the alpha channel of every image "all default", which means 8 bits, also in 16-bit
/// images: a decoder then reads their 16-bit alpha samples as 8-bit ones (clamped, wrong). The image header ends
/// on a byte boundary before the frame, so it is replaced by the same header with a 16-bit alpha channel. The
/// header zune-jpegxl wrote is rebuilt first and must match the codestream's first bytes exactly; anything else
/// is an error, never a wrong file.
fn with_sixteen_bit_alpha(codestream: Vec<u8>, width: u32, height: u32) -> Result<Vec<u8>, EncodeError> {
    let theirs = rgba16_image_header(width, height, false);
    if !codestream.starts_with(&theirs) {
        return Err(EncodeError::Codec(
            "JPEG XL encoder: unexpected image header, so its 8-bit alpha declaration cannot be corrected".into(),
        ));
    }
    let mut fixed = rgba16_image_header(width, height, true);
    fixed.extend_from_slice(&codestream[theirs.len()..]);
    Ok(fixed)
}

/// The image header (ISO/IEC 18181-1 section A) zune-jpegxl writes for a 16-bit RGBA image of this size, with
/// the alpha channel's info "all default" (8 bits) or spelled out as 16 bits. Padded to a byte boundary.
fn rgba16_image_header(width: u32, height: u32, alpha16: bool) -> Vec<u8> {
    let mut w = Bits::default();
    w.put(16, 0x0AFF); // signature FF 0A
    w.put(1, 0); // SizeHeader: not small
    for (size, ratio) in [(height, true), (width, false)] {
        let v = u64::from(size - 1);
        let (selector, bits) = match v {
            _ if v < 1 << 9 => (0, 9),
            _ if v < 1 << 13 => (1, 13),
            _ if v < 1 << 18 => (2, 18),
            _ => (3, 30),
        };
        w.put(2, selector);
        w.put(bits, v);
        if ratio {
            w.put(3, 0); // no aspect ratio: the width follows
        }
    }
    w.put(1, 0); // ImageMetadata: not all_default
    w.put(1, 0); // no extra_fields
    w.put(1, 0); // bit_depth: integer samples
    w.put(2, 3); // bits_per_sample = 1 + u(6)
    w.put(6, 15); // 16
    w.put(1, 0); // modular_16_bit_buffer_sufficient: no
    w.put(2, 1); // one extra channel
    if alpha16 {
        w.put(1, 0); // ExtraChannelInfo: not all_default
        w.put(2, 0); // type: alpha
        w.put(1, 0); // bit_depth: integer samples
        w.put(2, 3); // bits_per_sample = 1 + u(6)
        w.put(6, 15); // 16
        w.put(2, 0); // dim_shift 0
        w.put(2, 0); // no name
        w.put(1, 0); // alpha_associated: no (straight alpha)
    } else {
        w.put(1, 1); // ExtraChannelInfo all_default: 8-bit straight alpha
    }
    w.put(1, 0); // not XYB
    w.put(1, 1); // colour encoding all_default: sRGB
    w.put(2, 0); // no extensions
    w.put(1, 1); // transform data all_default
    w.into_bytes()
}

/// A least-significant-bit-first bit writer, as JPEG XL packs its headers.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    fn put(&mut self, n: u32, value: u64) {
        for i in 0..n {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            *self.bytes.last_mut().expect("pushed above") |= bit << (self.used % 8);
            self.used += 1;
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
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

    /// Regression: zune-jpegxl 0.5 declared the alpha of 16-bit images as 8 bits, so decoders clamped it.
    #[test]
    fn sixteen_bit_alpha_is_declared_16_bit_and_decodes_exactly() {
        for (w, h) in [(3u32, 2u32), (600, 300), (9000, 2)] {
            let samples: Vec<u16> = (0..w * h * 4).map(|i| (i.wrapping_mul(40_503) % 65_536) as u16).collect();
            let image =
                RawImage { width: w, height: h, channels: 4, samples: super::super::Samples::U16(samples.clone()) };
            let mut bytes = Vec::new();
            encode_jxl16(&image, None, &mut bytes).unwrap();
            let decoded = jxl_oxide::JxlImage::builder().read(std::io::Cursor::new(&bytes)).unwrap();
            let ec = &decoded.image_header().metadata.ec_info[0];
            assert_eq!(ec.bit_depth.bits_per_sample(), 16, "{w}x{h}");
            let render = decoded.render_frame(0).unwrap();
            let mut stream = render.stream();
            let mut got = vec![0u16; samples.len()];
            stream.write_to_buffer(&mut got);
            assert!(got == samples, "{w}x{h}: decoded samples differ");
        }
    }

    #[test]
    fn one_pixel_wide_images_get_a_clear_error() {
        let image = Image8 { width: 1, height: 9, channels: 3, data: vec![7; 27] };
        let err = encode_jxl(&image, None, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "invalid image: JPEG XL needs at least 2x2 pixels, the image is 1x9");
    }
}
