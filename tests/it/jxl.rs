//! JPEG XL through a real daemon: lossless at 8 bits (from the 8-bit conversion every format shares) and at 16
//! bits (from the samples as submitted, PROTOCOL.md section 10.7), decoded by jxl-oxide (an independent decoder)
//! to exactly the expected samples, with the prompt and workflow read back from the `Exif` box.

use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::encode::{Image8, Metadata, convert_row, u16_of_f32};
use luna_daemon::protocol::{ImageFormat, ImageState, JobMetadata};

use crate::readers::{exif_ascii_entries, exif_user_comment, jxl_exif};
use crate::support::TestDaemon;

const PROMPT: &str = "{\"3\": {\"class_type\": \"KSampler\"}}";
const WORKFLOW: &str = "{\"nodes\": [], \"extra\": {\"ü\": \"日本\"}}";

fn jxl_options(daemon: &TestDaemon, bits: u8) -> JobOptions {
    let mut options = JobOptions::new(&daemon.output);
    options.format = ImageFormat::Jxl;
    options.jxl_bit_depth = bits;
    options.metadata = Some(JobMetadata {
        prompt: Some(PROMPT.to_owned()),
        extra_pnginfo: vec![("workflow".to_owned(), WORKFLOW.to_owned())],
        ..Default::default()
    });
    options
}

fn save(daemon: &TestDaemon, options: &JobOptions, image: ImageRef<'_>) -> (String, Vec<u8>) {
    let mut client = daemon.client();
    let accepted = client.submit(options, &[image]).unwrap();
    let status = client.wait(&accepted.job_id, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written, "{status:?}");
    let path = status.images[0].path.clone().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Bits per sample and the decoded samples, interleaved, as u16 (8-bit files give 0..=255).
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u16>) {
    let image = jxl_oxide::JxlImage::builder().read(std::io::Cursor::new(bytes)).unwrap();
    let bits = image.image_header().metadata.bit_depth.bits_per_sample();
    let render = image.render_frame(0).unwrap();
    let mut stream = render.stream();
    let n = (stream.width() * stream.height() * stream.channels()) as usize;
    let channels = stream.channels();
    let samples = if bits == 8 {
        let mut b = vec![0u8; n];
        stream.write_to_buffer(&mut b);
        b.into_iter().map(u16::from).collect()
    } else {
        let mut b = vec![0u16; n];
        stream.write_to_buffer(&mut b);
        b
    };
    (bits, channels, samples)
}

/// Floats that 8 bits cannot tell apart, plus out-of-range ones and NaN.
fn fine_floats(n: usize) -> Vec<f32> {
    let specials = [1.5, -0.25, 1.0, 0.0, 1.0 / 65535.0, f32::NAN];
    (0..n).map(|i| if i % 11 == 0 { specials[(i / 11) % specials.len()] } else { i as f32 / n as f32 }).collect()
}

fn assert_metadata(bytes: &[u8]) {
    let exif = jxl_exif(bytes).expect("an Exif box");
    let entries = exif_ascii_entries(&exif);
    assert_eq!(entries.get("prompt").map(String::as_str), Some(PROMPT));
    assert_eq!(entries.get("workflow").map(String::as_str), Some(WORKFLOW));
    let comment = exif_user_comment(&exif).unwrap();
    assert!(comment.starts_with("Image Type: , Model: "), "{comment}");
}

#[test]
fn eight_bit_jxl_is_lossless_for_every_channel_count_and_carries_the_workflow() {
    let daemon = TestDaemon::start();
    // 300 wide: more than one 256-pixel group, so the multi-group layout is decoded too.
    let (w, h) = (300u32, 9u32);
    for channels in [1u8, 3, 4] {
        let f = fine_floats((w * h) as usize * usize::from(channels));
        let mut options = jxl_options(&daemon, 8);
        options.filename = format!("eight_c{channels}");
        let (path, bytes) =
            save(&daemon, &options, ImageRef { width: w, height: h, channels, pixels: Pixels::F32(&f) });
        assert!(path.ends_with(&format!("eight_c{channels}.jxl")), "{path}");
        let (bits, got_channels, got) = decode(&bytes);
        assert_eq!((bits, got_channels), (8, u32::from(channels)));
        // The same 8-bit conversion as PNG (PROTOCOL.md section 10.6), kept exactly.
        let raw: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut want = vec![0u8; f.len()];
        convert_row(luna_daemon::encode::SampleFormat::F32, &raw, &mut want);
        assert!(got == want.iter().map(|&v| u16::from(v)).collect::<Vec<_>>(), "{channels} channels differ");
        assert_metadata(&bytes);
    }
}

#[test]
fn sixteen_bit_jxl_keeps_the_float_precision_and_u16_input_unchanged() {
    let daemon = TestDaemon::start();
    let (w, h) = (41u32, 13u32);
    for channels in [1u8, 3, 4] {
        let f = fine_floats((w * h) as usize * usize::from(channels));
        let mut options = jxl_options(&daemon, 16);
        options.filename = format!("deep_c{channels}");
        let (_, bytes) = save(&daemon, &options, ImageRef { width: w, height: h, channels, pixels: Pixels::F32(&f) });
        let (bits, _, got) = decode(&bytes);
        assert_eq!(bits, 16);
        let want: Vec<u16> = f.iter().map(|&x| u16_of_f32(x)).collect();
        assert!(got == want, "{channels} channels: decoded samples differ");
        let distinct: std::collections::BTreeSet<u16> = got.iter().copied().collect();
        assert!(distinct.len() > 256, "{} levels: made from 8 bits?", distinct.len());
        assert_metadata(&bytes);
    }
    let samples: Vec<u16> = (0..64 * 3).map(|i| (i * 1021 % 65536) as u16).collect();
    let mut options = jxl_options(&daemon, 16);
    options.embed_metadata = false;
    options.filename = "u16".to_owned();
    let (_, bytes) =
        save(&daemon, &options, ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::U16(&samples) });
    assert_eq!(&bytes[..2], b"\xff\x0a", "no metadata: the bare codestream");
    assert_eq!(jxl_exif(&bytes), None);
    assert_eq!(decode(&bytes).2, samples);
}

#[test]
fn jxl_options_and_images_it_cannot_take_are_refused_with_clear_errors() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let pixels = vec![0u8; 27];
    let mut options = jxl_options(&daemon, 10);
    let image = ImageRef { width: 3, height: 3, channels: 3, pixels: Pixels::U8(&pixels) };
    let err = client.submit(&options, &[image]).unwrap_err();
    assert!(
        err.to_string()
            .contains("jxl_bit_depth 10 is not 8 or 16 (JPEG XL is saved losslessly at 8 or 16 bits per sample)"),
        "{err}"
    );
    options.jxl_bit_depth = 8;
    let thin = ImageRef { width: 1, height: 9, channels: 3, pixels: Pixels::U8(&pixels) };
    let err = client.submit(&options, &[thin]).unwrap_err();
    assert!(
        err.to_string()
            .contains("image 0: JPEG XL needs at least 2x2 pixels, the image is 1x9 (save it as PNG or WebP)"),
        "{err}"
    );
    // Nothing was written for either refusal.
    assert_eq!(std::fs::read_dir(&daemon.output).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn the_library_entry_point_encodes_jxl_with_the_same_exif_as_webp() {
    // `luna_daemon::encode::encode` (what the benchmarks time) takes JPEG XL like every other format.
    let image = Image8 { width: 16, height: 16, channels: 3, data: (0..768).map(|i| (i % 256) as u8).collect() };
    let metadata = Metadata { prompt: Some(PROMPT.to_owned()), ..Default::default() };
    let mut bytes = Vec::new();
    luna_daemon::encode::encode(
        &image,
        luna_daemon::encode::Format::Jxl { sixteen: false },
        Some(&metadata),
        &mut bytes,
    )
    .unwrap();
    assert_eq!(jxl_exif(&bytes).unwrap(), metadata.exif(true, &[]));
    let (_, _, got) = decode(&bytes);
    assert!(got == image.data.iter().map(|&v| u16::from(v)).collect::<Vec<_>>());
}
