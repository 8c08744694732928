//! The high-precision formats through a real daemon: 16-bit PNG and EXR are made from the samples as submitted
//! (never from 8 bits), decode to exactly the values PROTOCOL.md section 10.7 specifies, and carry the metadata.

use std::io::Cursor;

use exr::prelude::{AttributeValue, ReadChannels, ReadLayers};
use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::encode::{srgb_to_linear, u16_of_f32};
use luna_daemon::protocol::{ExrColorSpace, ImageFormat, ImageState, JobMetadata};

use crate::support::TestDaemon;

/// Floats that 8 bits cannot tell apart, plus out-of-range ones.
fn fine_floats(n: usize) -> Vec<f32> {
    let specials = [1.5, -0.25, 1.0, 0.0, 1.0 / 65535.0];
    (0..n).map(|i| if i % 11 == 0 { specials[(i / 11) % specials.len()] } else { i as f32 / n as f32 }).collect()
}

fn save(daemon: &TestDaemon, options: &JobOptions, image: ImageRef<'_>) -> Vec<u8> {
    let mut client = daemon.client();
    let accepted = client.submit(options, &[image]).unwrap();
    let status = client.wait(&accepted.job_id, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written, "{status:?}");
    std::fs::read(status.images[0].path.as_ref().unwrap()).unwrap()
}

fn with_metadata(mut options: JobOptions) -> JobOptions {
    options.metadata = Some(JobMetadata {
        prompt: Some("{\"3\": {\"class_type\": \"KSampler\"}}".to_owned()),
        extra_pnginfo: vec![("workflow".to_owned(), "{\"nodes\": []}".to_owned())],
        ..Default::default()
    });
    options
}

#[test]
fn sixteen_bit_png_keeps_float_precision_for_every_channel_count() {
    let daemon = TestDaemon::start();
    let (w, h) = (41u32, 13u32);
    for channels in [1u8, 3, 4] {
        let f = fine_floats((w * h) as usize * usize::from(channels));
        let mut options = with_metadata(JobOptions::new(&daemon.output));
        options.png_bit_depth = 16;
        options.filename = format!("deep_c{channels}");
        let bytes = save(&daemon, &options, ImageRef { width: w, height: h, channels, pixels: Pixels::F32(&f) });
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        let got = match channels {
            1 => decoded.to_luma16().into_raw(),
            3 => decoded.to_rgb16().into_raw(),
            _ => decoded.to_rgba16().into_raw(),
        };
        let want: Vec<u16> = f.iter().map(|&x| u16_of_f32(x)).collect();
        assert!(got == want, "{channels} channels: decoded samples differ");
        // More than 256 distinct levels: the file was not made from 8-bit samples.
        let distinct: std::collections::BTreeSet<u16> = got.iter().copied().collect();
        assert!(distinct.len() > 256, "{} levels", distinct.len());
        let text = png_text(&bytes);
        assert_eq!(text[0], ("prompt".to_owned(), "{\"3\": {\"class_type\": \"KSampler\"}}".to_owned()));
        assert_eq!(text[1], ("workflow".to_owned(), "{\"nodes\": []}".to_owned()));
    }
}

#[test]
fn u16_input_is_stored_unchanged_in_16_bit_png() {
    let daemon = TestDaemon::start();
    let samples: Vec<u16> = (0..64 * 3).map(|i| (i * 1021 % 65536) as u16).collect();
    let mut options = JobOptions::new(&daemon.output);
    options.png_bit_depth = 16;
    let bytes = save(&daemon, &options, ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::U16(&samples) });
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
    assert_eq!(decoded.to_rgb16().into_raw(), samples);
}

/// The tEXt chunks of a PNG, in order.
fn png_text(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if &bytes[at + 4..at + 8] == b"tEXt" {
            let body = &bytes[at + 8..at + 8 + len];
            let nul = body.iter().position(|&b| b == 0).unwrap();
            out.push((
                String::from_utf8_lossy(&body[..nul]).into_owned(),
                String::from_utf8_lossy(&body[nul + 1..]).into_owned(),
            ));
        }
        at += 12 + len;
    }
    out
}

/// Channel name and samples, per channel.
type Planes = Vec<(String, Vec<f32>)>;

/// Channel name -> samples, and the string attributes, of an EXR file.
fn read_exr(bytes: &[u8]) -> (Planes, Vec<(String, String)>) {
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
        .map(|c| (c.name.to_string(), c.sample_data.values_as_f32().collect()));
    let text =
        image.attributes.other.iter().chain(image.layer_data.attributes.other.iter()).filter_map(|(k, v)| {
            if let AttributeValue::Text(t) = v { Some((k.to_string(), t.to_string())) } else { None }
        });
    (channels.collect(), text.collect())
}

#[test]
fn exr_stores_the_floats_linearised_or_as_is_in_float_or_half() {
    let daemon = TestDaemon::start();
    let f = fine_floats(16 * 4 * 3);
    let image = ImageRef { width: 16, height: 4, channels: 3, pixels: Pixels::F32(&f) };
    for (bits, space) in [(32u8, ExrColorSpace::Linear), (32, ExrColorSpace::Srgb), (16, ExrColorSpace::Srgb)] {
        let mut options = with_metadata(JobOptions::new(&daemon.output));
        options.format = ImageFormat::Exr;
        options.exr_bit_depth = bits;
        options.exr_input_color_space = space;
        options.filename = format!("hdr_{bits}_{space:?}");
        let bytes = save(&daemon, &options, image);
        assert_eq!(&bytes[..4], [0x76, 0x2f, 0x31, 0x01], "EXR magic");
        let (channels, text) = read_exr(&bytes);
        for (c, name) in ["R", "G", "B"].iter().enumerate() {
            let got = &channels.iter().find(|(n, _)| n == name).unwrap().1;
            let want: Vec<f32> = f
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&x| if space == ExrColorSpace::Srgb { srgb_to_linear(x) } else { x })
                .map(|x| if bits == 16 { exr::prelude::f16::from_f32(x).to_f32() } else { x })
                .collect();
            assert!(*got == want, "{bits}-bit {space:?}, channel {name}");
        }
        assert!(text.contains(&("prompt".to_owned(), "{\"3\": {\"class_type\": \"KSampler\"}}".to_owned())));
        assert!(text.contains(&("workflow".to_owned(), "{\"nodes\": []}".to_owned())));
        // ComfyUI core's layout: a `string` attribute named `prompt` in the header.
        assert!(bytes.windows(14).any(|w| w == b"prompt\0string\0"), "prompt as a string attribute");
    }
}

#[test]
fn bad_bit_depths_are_refused_with_the_field_named() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let pixels = vec![0u8; 12];
    let image = ImageRef { width: 2, height: 2, channels: 3, pixels: Pixels::U8(&pixels) };
    let mut options = JobOptions::new(&daemon.output);
    options.png_bit_depth = 12;
    let err = client.submit(&options, &[image]).unwrap_err();
    assert!(err.to_string().contains("png_bit_depth 12 is not 8 or 16"), "{err}");
    let mut options = JobOptions::new(&daemon.output);
    options.exr_bit_depth = 8;
    let err = client.submit(&options, &[image]).unwrap_err();
    assert!(err.to_string().contains("exr_bit_depth 8 is not 16 (half) or 32 (float)"), "{err}");
}
