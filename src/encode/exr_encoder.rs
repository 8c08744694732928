//! OpenEXR through the pure-Rust `exr` crate: scan lines, ZIP (16-line blocks) lossless compression, 32-bit float
//! or 16-bit half samples, channels `Y` (gray) or `R`, `G`, `B` (and `A`). Metadata as ComfyUI core's
//! SaveImageAdvanced writes it: one header attribute of type `string` per key (`prompt`, then each
//! `extra_pnginfo` key such as `workflow`, JSON text), plus our own keys (PROTOCOL.md section 12.6).
//!
//! What is stored (PROTOCOL.md section 10.7): the samples as submitted (f32 as is, u16 `v / 65535`, u8
//! `v / 255`), with colour channels first turned from sRGB-encoded values into linear light when the input colour
//! space is sRGB (ComfyUI's IMAGE tensors are sRGB-encoded; EXR viewers expect linear). Alpha is never changed.
//! Nothing is clamped: values above 1, negative values, infinities and NaN are written as they are (as half,
//! values beyond 65504 become infinity).

use std::io::{Cursor, Write};

use exr::prelude::{
    AnyChannel, AnyChannels, AttributeValue, Encoding, FlatSamples, Image, Layer, LayerAttributes, Text, WritableImage,
    f16,
};

use super::{EncodeError, RawImage};

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
    let names: &[&str] = match image.channels {
        1 => &["Y"],
        3 => &["R", "G", "B"],
        4 => &["R", "G", "B", "A"],
        n => return Err(EncodeError::InvalidImage(format!("{n} channels"))),
    };
    let (width, height) = (image.width as usize, image.height as usize);
    let expected = width * height * names.len();
    if image.samples.len() != expected {
        return Err(EncodeError::InvalidImage(format!("{} samples, expected {expected}", image.samples.len())));
    }
    let samples = image.to_f32();
    let planes = names.iter().enumerate().map(|(c, name)| {
        let colour = *name != "A" && input == ExrInput::Srgb;
        let plane = samples.iter().skip(c).step_by(names.len()).map(|&x| if colour { srgb_to_linear(x) } else { x });
        let data =
            if half { FlatSamples::F16(plane.map(f16::from_f32).collect()) } else { FlatSamples::F32(plane.collect()) };
        AnyChannel::new(*name, data)
    });
    let channels = AnyChannels::sort(planes.collect());
    let layer = Layer::new((width, height), LayerAttributes::default(), Encoding::SMALL_LOSSLESS, channels);
    let mut exr = Image::from_layer(layer);
    for (key, value) in text {
        if key.is_empty() || key.len() > 255 {
            return Err(EncodeError::InvalidOption(format!("EXR attribute name {key:?} must be 1 to 255 bytes")));
        }
        exr.attributes.other.insert(
            Text::from_slice_unchecked(key.as_bytes()),
            AttributeValue::Text(Text::from_slice_unchecked(value.as_bytes())),
        );
    }
    let mut buffer = Cursor::new(Vec::with_capacity(expected * if half { 2 } else { 4 } / 2));
    exr.write().non_parallel().to_buffered(&mut buffer).map_err(|e| match e {
        exr::error::Error::Io(io) => EncodeError::Io(io),
        other => EncodeError::Codec(format!("EXR encoder: {other}")),
    })?;
    out.write_all(buffer.get_ref())?;
    out.flush()?;
    Ok(())
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
