//! OpenEXR: scan lines, ZIP (16-line blocks) lossless compression, 32-bit float or 16-bit half samples, channels
//! `Y` (gray) or `R`, `G`, `B` (and `A`). The pure-Rust `exr` crate writes the header, the offset table and the
//! chunks; the blocks are compressed here, with our fast deflate (issue 15: the crate's miniz at level 4 was
//! ~85 % of an encode). Metadata as ComfyUI core's SaveImageAdvanced writes it: one header attribute of type
//! `string` per key (`prompt`, then each `extra_pnginfo` key such as `workflow`, JSON text), plus our own keys
//! (PROTOCOL.md section 12.6).
//!
//! What is stored (PROTOCOL.md section 10.7): the samples as submitted (f32 as is, u16 `v / 65535`, u8
//! `v / 255`), with colour channels first turned from sRGB-encoded values into linear light when the input colour
//! space is sRGB (ComfyUI's IMAGE tensors are sRGB-encoded; EXR viewers expect linear). Alpha is never changed.
//! Nothing is clamped: values above 1, negative values, infinities and NaN are written as they are (as half,
//! values beyond 65504 become infinity).

use std::io::{Cursor, Write};

use exr::block::chunk::{Chunk, CompressedBlock, CompressedScanLineBlock};
use exr::block::writer::ChunksWriter;
use exr::compression::Compression;
use exr::meta::attribute::{
    AttributeValue, ChannelDescription, ChannelList, IntegerBounds, LineOrder, SampleType, Text,
};
use exr::meta::header::{Header, ImageAttributes, LayerAttributes};
use exr::meta::{BlockDescription, compute_chunk_count};
use exr::prelude::f16;

use super::{EncodeError, RawImage};

/// Scan lines per block of ZIP compression (OpenEXR's `ZIP_COMPRESSION`; the `exr` crate's `ZIP16`).
const BLOCK_LINES: usize = 16;

/// The colour space of the submitted samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExrInput {
    /// sRGB-encoded (ComfyUI's IMAGE): colour channels are linearised with the inverse sRGB transfer function.
    Srgb,
    /// Already linear: written unchanged.
    Linear,
}

/// The inverse sRGB transfer function (IEC 61966-2-1) in binary32: `x <= 0.04045` gives `x / 12.92` (negative
/// values included), above it `((x + 0.055) / 1.055) ^ 2.4` (values above 1 extend the curve). NaN stays NaN.
#[inline]
pub fn srgb_to_linear(x: f32) -> f32 {
    if x <= 0.040_45 { x / 12.92 } else { ((x + 0.055) / 1.055).powf(2.4) }
}

/// Encodes `image` as OpenEXR into `out`: half floats if `half`, else 32-bit floats; `text` becomes string
/// attributes in order.
pub fn encode_exr<W: Write>(
    image: &RawImage,
    half: bool,
    input: ExrInput,
    text: &[(String, String)],
    mut out: W,
) -> Result<(), EncodeError> {
    let names = channel_names(image.channels)?;
    let (width, height) = (image.width as usize, image.height as usize);
    let expected = width * height * names.len();
    if image.samples.len() != expected {
        return Err(EncodeError::InvalidImage(format!("{} samples, expected {expected}", image.samples.len())));
    }
    if width == 0 || height == 0 {
        return Err(EncodeError::InvalidImage(format!("{width}x{height} pixels")));
    }
    let header = header((width, height), names, half, text)?;
    let line_samples = width * names.len();
    // Bytes per line in each half of a block's split bytes: the distance to the same byte one line up.
    let row = line_samples * if half { 2 } else { 4 } / 2;
    let samples = image.to_f32();
    let layout = Layout::new(names, input, half);
    let mut buffer = Cursor::new(Vec::with_capacity(expected * if half { 2 } else { 4 } / 2));
    let mut raw = Vec::new();
    exr::block::write(&mut buffer, std::iter::once(header).collect(), true, |_, chunks| {
        for (index, y) in (0..height).step_by(BLOCK_LINES).enumerate() {
            let lines = &samples[y * line_samples..(y + BLOCK_LINES).min(height) * line_samples];
            layout.block_bytes(lines, line_samples, &mut raw);
            let block = CompressedScanLineBlock {
                y_coordinate: i32::try_from(y).map_err(|_| exr::error::Error::Invalid("image height".into()))?,
                compressed_pixels_le: zip_block(&raw, row),
            };
            chunks.write_chunk(index, Chunk { layer_index: 0, compressed_block: CompressedBlock::ScanLine(block) })?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        exr::error::Error::Io(io) => EncodeError::Io(io),
        other => EncodeError::Codec(format!("EXR encoder: {other}")),
    })?;
    out.write_all(buffer.get_ref())?;
    out.flush()?;
    Ok(())
}

/// How interleaved pixels become a block's bytes.
struct Layout {
    /// The file's channel order (sorted by name) as indices into an interleaved pixel.
    order: Vec<usize>,
    /// Per submitted channel: linearised from sRGB.
    colour: Vec<bool>,
    half: bool,
}

impl Layout {
    fn new(names: &[&str], input: ExrInput, half: bool) -> Self {
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by_key(|&c| names[c]);
        let colour = names.iter().map(|name| *name != "A" && input == ExrInput::Srgb).collect();
        Self { order, colour, half }
    }

    /// The uncompressed block of `lines` (interleaved samples, `line_samples` per line) into `raw`: per line,
    /// per channel in file order, the samples in little-endian order.
    fn block_bytes(&self, lines: &[f32], line_samples: usize, raw: &mut Vec<u8>) {
        raw.clear();
        let stride = self.colour.len();
        for line in lines.chunks_exact(line_samples) {
            for &c in &self.order {
                let colour = self.colour[c];
                let plane = line.iter().skip(c).step_by(stride).map(|&x| if colour { srgb_to_linear(x) } else { x });
                if self.half {
                    raw.extend(plane.flat_map(|x| f16::from_f32(x).to_bits().to_le_bytes()));
                } else {
                    raw.extend(plane.flat_map(f32::to_le_bytes));
                }
            }
        }
    }
}

/// The channel names for a channel count, in the submitted (interleaved) order.
fn channel_names(channels: u8) -> Result<&'static [&'static str], EncodeError> {
    match channels {
        1 => Ok(&["Y"]),
        3 => Ok(&["R", "G", "B"]),
        4 => Ok(&["R", "G", "B", "A"]),
        n => Err(EncodeError::InvalidImage(format!("{n} channels"))),
    }
}

/// The one header: scan lines in increasing order, ZIP blocks of 16 lines, channels sorted by name (as the
/// format requires), `text` as string attributes; no layer name, display window = data window.
fn header(size: (usize, usize), names: &[&str], half: bool, text: &[(String, String)]) -> Result<Header, EncodeError> {
    let sample_type = if half { SampleType::F16 } else { SampleType::F32 };
    let mut channels: Vec<ChannelDescription> = names
        .iter()
        .map(|name| {
            let name = Text::from(*name);
            let linear = ChannelDescription::guess_quantization_linearity(&name);
            ChannelDescription::new(name, sample_type, linear)
        })
        .collect();
    channels.sort_by(|a, b| a.name.cmp(&b.name));
    let mut attributes = ImageAttributes::new(IntegerBounds::from_dimensions(size));
    for (key, value) in text {
        if key.is_empty() || key.len() > 255 {
            return Err(EncodeError::InvalidOption(format!("EXR attribute name {key:?} must be 1 to 255 bytes")));
        }
        attributes.other.insert(
            Text::from_slice_unchecked(key.as_bytes()),
            AttributeValue::Text(Text::from_slice_unchecked(value.as_bytes())),
        );
    }
    let (compression, blocks) = (Compression::ZIP16, BlockDescription::ScanLines);
    Ok(Header {
        channels: ChannelList::new(channels.into_iter().collect()),
        compression,
        blocks,
        chunk_count: compute_chunk_count(compression, size.into(), blocks),
        line_order: LineOrder::Increasing,
        layer_size: size.into(),
        shared_attributes: attributes,
        own_attributes: LayerAttributes::default(),
        deep: false,
        deep_data_version: None,
        max_samples_per_pixel: None,
    })
}

/// One block as OpenEXR's ZIP compressor stores it: the little-endian sample bytes `raw` (per line, per channel,
/// per pixel) split into their even and odd bytes, each byte replaced by its difference from the one before
/// plus 128, then a zlib stream. `row` is a line's share of one half (a distance at which data repeat).
///
/// The zlib stream comes from our fast deflate ([`super::png_fast`], also PNG's levels 1 to 4), not miniz at level
/// 4. As OpenEXR does, a block that does not get smaller is stored raw; readers tell it by its length.
fn zip_block(raw: &[u8], row: usize) -> Vec<u8> {
    let mut predicted = vec![0; raw.len()];
    let (even, odd) = predicted.split_at_mut(raw.len().div_ceil(2));
    for (k, pair) in raw.chunks(2).enumerate() {
        even[k] = pair[0];
        if let Some(&b) = pair.get(1) {
            odd[k] = b;
        }
    }
    let mut previous = predicted.first().copied().unwrap_or(0);
    for byte in predicted.iter_mut().skip(1) {
        let current = *byte;
        *byte = current.wrapping_sub(previous).wrapping_add(128);
        previous = current;
    }
    let compressed = super::png_fast::zlib(&predicted, row.max(1));
    if compressed.len() < raw.len() { compressed } else { raw.to_vec() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Samples;
    use exr::prelude::{ReadChannels, ReadLayers};

    /// Channel name and samples, per channel.
    type Planes = Vec<(String, Vec<f32>)>;

    /// Decodes an EXR: per channel name, its samples as f32; and the string attributes.
    fn decode(bytes: &[u8]) -> (Planes, Vec<(String, String)>) {
        let image = exr::prelude::read()
            .no_deep_data()
            .largest_resolution_level()
            .all_channels()
            .first_valid_layer()
            .all_attributes()
            .from_buffered(Cursor::new(bytes))
            .unwrap();
        let channels = image
            .layer_data
            .channel_data
            .list
            .iter()
            .map(|c| (c.name.to_string(), c.sample_data.values_as_f32().collect()))
            .collect();
        // A reader files unknown header attributes under the image or the layer; either is the one header.
        let mut text: Vec<(String, String)> = image
            .attributes
            .other
            .iter()
            .chain(image.layer_data.attributes.other.iter())
            .filter_map(|(k, v)| match v {
                AttributeValue::Text(t) => Some((k.to_string(), t.to_string())),
                _ => None,
            })
            .collect();
        text.sort();
        (channels, text)
    }

    fn rgba(values: &[f32]) -> RawImage {
        RawImage { width: values.len() as u32 / 4, height: 1, channels: 4, samples: Samples::F32(values.to_vec()) }
    }

    /// 32-bit float EXR stores the submitted floats bit for bit (linear input), HDR and NaN included.
    #[test]
    fn float_exr_stores_the_samples_exactly() {
        let values = [0.0, 0.5, 1.0, 0.25, 7.5, -0.125, f32::INFINITY, 1.0, f32::NAN, 1e-30, 0.333, 0.0];
        let mut bytes = Vec::new();
        encode_exr(&rgba(&values), false, ExrInput::Linear, &[], &mut bytes).unwrap();
        let (channels, _) = decode(&bytes);
        let names: Vec<&str> = channels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["A", "B", "G", "R"], "EXR channels are sorted by name");
        for (name, got) in &channels {
            let c = ["R", "G", "B", "A"].iter().position(|n| n == name).unwrap();
            let want: Vec<f32> = values.iter().skip(c).step_by(4).copied().collect();
            let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same, "channel {name}: {got:?} != {want:?}");
        }
    }

    /// sRGB input: colour channels linearised (PROTOCOL.md 10.7 values), alpha untouched; half rounds to nearest.
    #[test]
    fn srgb_input_is_linearised_and_half_rounds_to_nearest() {
        assert_eq!(srgb_to_linear(0.0), 0.0);
        assert_eq!(srgb_to_linear(1.0), 1.0);
        assert_eq!(srgb_to_linear(0.04045), 0.04045 / 12.92);
        assert!((srgb_to_linear(0.5) - 0.214_041_14).abs() < 1e-7);
        assert!((srgb_to_linear(2.0) - 4.953_846).abs() < 1e-5);
        assert_eq!(srgb_to_linear(-0.5), -0.5 / 12.92);
        assert!(srgb_to_linear(f32::NAN).is_nan());
        let values = [0.5, 0.5, 0.5, 0.5, 1.0, 0.02, 2.0, 0.75];
        let mut bytes = Vec::new();
        encode_exr(&rgba(&values), true, ExrInput::Srgb, &[], &mut bytes).unwrap();
        let (channels, _) = decode(&bytes);
        let get = |n: &str| channels.iter().find(|(name, _)| name == n).unwrap().1.clone();
        let half = |x: f32| f16::from_f32(x).to_f32();
        assert_eq!(get("R"), [half(srgb_to_linear(0.5)), half(1.0)]);
        assert_eq!(get("G"), [half(srgb_to_linear(0.5)), half(0.02 / 12.92)]);
        assert_eq!(get("B"), [half(srgb_to_linear(0.5)), half(srgb_to_linear(2.0))]);
        assert_eq!(get("A"), [half(0.5), half(0.75)]);
    }

    /// The `exr` crate's own writer (the encoder before issue 15): the reference for headers and pixels.
    fn crate_encode(image: &RawImage, half: bool, text: &[(String, String)]) -> Vec<u8> {
        use exr::prelude::{AnyChannel, AnyChannels, Encoding, FlatSamples, Image, Layer, WritableImage};
        let names = channel_names(image.channels).unwrap();
        let samples = image.to_f32();
        let planes = names.iter().enumerate().map(|(c, name)| {
            let plane = samples.iter().skip(c).step_by(names.len()).copied();
            let data = if half {
                FlatSamples::F16(plane.map(f16::from_f32).collect())
            } else {
                FlatSamples::F32(plane.collect())
            };
            AnyChannel::new(*name, data)
        });
        let size = (image.width as usize, image.height as usize);
        let channels = AnyChannels::sort(planes.collect());
        let mut exr =
            Image::from_layer(Layer::new(size, LayerAttributes::default(), Encoding::SMALL_LOSSLESS, channels));
        for (key, value) in text {
            exr.attributes.other.insert(Text::from(key.as_str()), AttributeValue::Text(Text::from(value.as_str())));
        }
        let mut bytes = Cursor::new(Vec::new());
        exr.write().non_parallel().to_buffered(&mut bytes).unwrap();
        bytes.into_inner()
    }

    /// A smooth image (compressible) with a partial last block: `width x 37` (blocks of 16, 16 and 5 lines).
    fn gradient(width: u32, channels: u8) -> RawImage {
        let n = width as usize * 37 * usize::from(channels);
        let samples = (0..n).map(|i| (i % 97) as f32 / 50.0 - 0.3 + (i / 1000) as f32).collect();
        RawImage { width, height: 37, channels, samples: Samples::F32(samples) }
    }

    /// Issue 15 moved block compression out of the `exr` crate: the header (channels, compression, line order,
    /// windows, attributes, chunk count) must stay what the crate itself writes, and the pixels decode the same.
    #[test]
    fn own_zip_blocks_match_the_exr_crates_header_and_pixels() {
        let text = vec![("prompt".to_owned(), "{}".to_owned()), ("workflow".to_owned(), "{\"a\": 1}".to_owned())];
        for channels in [1, 3, 4] {
            for half in [false, true] {
                let image = gradient(45, channels);
                let mut ours = Vec::new();
                encode_exr(&image, half, ExrInput::Linear, &text, &mut ours).unwrap();
                let reference = crate_encode(&image, half, &text);
                let meta = |b: &[u8]| exr::meta::MetaData::read_from_buffered(Cursor::new(b), true).unwrap().headers;
                assert_eq!(meta(&ours), meta(&reference), "{channels} channels, half {half}");
                assert_eq!(decode(&ours), decode(&reference), "{channels} channels, half {half}");
            }
        }
    }

    /// Undoes OpenEXR's ZIP preprocessing: prefix sums minus 128, then the even/odd halves interleaved.
    fn unpredict(mut bytes: Vec<u8>) -> Vec<u8> {
        for i in 1..bytes.len() {
            bytes[i] = bytes[i].wrapping_add(bytes[i - 1]).wrapping_sub(128);
        }
        let half = bytes.len().div_ceil(2);
        (0..bytes.len()).map(|i| if i % 2 == 0 { bytes[i / 2] } else { bytes[half + i / 2] }).collect()
    }

    /// Every block is a standard zlib stream (inflated by miniz_oxide, not the `exr` crate's zune-inflate) of
    /// the preprocessed little-endian samples, line by line and channel by channel in name order.
    #[test]
    fn zip_blocks_are_standard_zlib_streams_of_the_samples() {
        let image = gradient(40, 3);
        let Samples::F32(values) = &image.samples else { unreachable!() };
        let mut bytes = Vec::new();
        encode_exr(&image, false, ExrInput::Linear, &[], &mut bytes).unwrap();
        let reader = exr::block::read(Cursor::new(&bytes), true).unwrap();
        let chunks: Vec<Chunk> = reader.all_chunks(true).unwrap().map(Result::unwrap).collect();
        assert_eq!(chunks.len(), 3);
        for chunk in chunks {
            let CompressedBlock::ScanLine(block) = chunk.compressed_block else { panic!("not a scan line block") };
            let y = block.y_coordinate as usize;
            let lines = (y..(y + BLOCK_LINES).min(37)).collect::<Vec<_>>();
            let mut want = Vec::new();
            for line in &lines {
                for c in [2, 1, 0] {
                    let plane = values[line * 120..(line + 1) * 120].iter().skip(c).step_by(3);
                    want.extend(plane.flat_map(|x| x.to_le_bytes()));
                }
            }
            assert!(block.compressed_pixels_le.len() < want.len(), "block {y} is compressed");
            let inflated = miniz_oxide::inflate::decompress_to_vec_zlib(&block.compressed_pixels_le).unwrap();
            assert_eq!(unpredict(inflated), want, "block at line {y}");
        }
    }

    /// Noise does not compress: such a block is stored raw, which readers recognise by its length.
    #[test]
    fn an_incompressible_block_is_stored_raw_and_still_decodes() {
        let mut state = 0x9e37_79b9_u32;
        let values: Vec<f32> = (0..8 * 3 * 4)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                f32::from_bits(state)
            })
            .collect();
        let image = RawImage { width: 8, height: 3, channels: 4, samples: Samples::F32(values.clone()) };
        let mut bytes = Vec::new();
        encode_exr(&image, false, ExrInput::Linear, &[], &mut bytes).unwrap();
        let reader = exr::block::read(Cursor::new(&bytes), true).unwrap();
        let chunk = reader.all_chunks(true).unwrap().next().unwrap().unwrap();
        let CompressedBlock::ScanLine(block) = chunk.compressed_block else { panic!("not a scan line block") };
        assert_eq!(block.compressed_pixels_le.len(), values.len() * 4, "stored raw");
        let (channels, _) = decode(&bytes);
        let r = &channels.iter().find(|(n, _)| n == "R").unwrap().1;
        let want: Vec<f32> = values.iter().step_by(4).copied().collect();
        assert_eq!(
            r.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn gray_is_channel_y_and_metadata_are_string_attributes() {
        let gray = RawImage { width: 2, height: 2, channels: 1, samples: Samples::U8(vec![0, 51, 255, 102]) };
        let text = vec![("prompt".to_owned(), "{\"1\": {}}".to_owned()), ("workflow".to_owned(), "{}".to_owned())];
        let mut bytes = Vec::new();
        encode_exr(&gray, false, ExrInput::Linear, &text, &mut bytes).unwrap();
        let (channels, attrs) = decode(&bytes);
        assert_eq!(channels, [("Y".to_owned(), vec![0.0, 0.2, 1.0, 0.4])]);
        assert_eq!(attrs, text);
    }
}
