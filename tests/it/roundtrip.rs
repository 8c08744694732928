//! Pixels in, PNGs out: every sample type and channel count decodes to exactly the expected bytes.

use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::ImageState;

use crate::support::{TestDaemon, decode_png, file_names, read_npy_f32, reference_dir};

/// numpy's `np.clip(255. * x, 0, 255).astype(np.uint8)` for float32 x, written out independently of the daemon.
fn numpy_reference(x: f32) -> u8 {
    let y = 255.0f32 * x;
    if y.is_nan() || y <= 0.0 {
        0
    } else if y >= 255.0 {
        255
    } else {
        y.trunc() as u8
    }
}

/// Float samples including values outside 0..1, NaN and infinities.
fn tricky_floats(n: usize) -> Vec<f32> {
    let specials = [f32::NAN, -0.5, 1.5, f32::INFINITY, f32::NEG_INFINITY, 0.999_999, 1.0 / 255.0, 0.5];
    (0..n).map(|i| if i % 7 == 0 { specials[(i / 7) % specials.len()] } else { (i % 293) as f32 / 290.0 }).collect()
}

#[test]
fn u8_u16_f32_in_gray_rgb_rgba_decode_pixel_identical() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let (w, h) = (37u32, 19u32);
    for channels in [1u8, 3, 4] {
        let n = (w * h) as usize * usize::from(channels);
        let u8s: Vec<u8> = (0..n).map(|i| (i * 31 % 256) as u8).collect();
        let u16s: Vec<u16> = (0..n).map(|i| (i * 2039 % 65536) as u16).collect();
        let f32s = tricky_floats(n);
        let expected_u16: Vec<u8> = u16s.iter().map(|&v| numpy_reference(f32::from(v) / 65535.0)).collect();
        let expected_f32: Vec<u8> = f32s.iter().map(|&v| numpy_reference(v)).collect();
        let cases: [(&str, Pixels<'_>, &[u8]); 3] = [
            ("u8", Pixels::U8(&u8s), &u8s),
            ("u16", Pixels::U16(&u16s), &expected_u16),
            ("f32", Pixels::F32(&f32s), &expected_f32),
        ];
        for (name, pixels, expected) in cases {
            let mut options = JobOptions::new(&daemon.output);
            options.filename = format!("{name}_c{channels}");
            let image = ImageRef { width: w, height: h, channels, pixels };
            let accepted = client.submit(&options, &[image]).unwrap();
            let status = client.wait(&accepted.job_id, |_| {}).unwrap();
            assert_eq!(status.images[0].state, ImageState::Written, "{status:?}");
            let path = status.images[0].path.clone().unwrap();
            assert!(path.ends_with(&format!("{name}_c{channels}.png")), "{path}");
            let (dw, dh, dc, data) = decode_png(path.as_ref());
            assert_eq!((dw, dh, dc), (w, h, channels), "{name} c{channels}");
            assert!(data == expected, "{name} with {channels} channels: decoded pixels differ");
        }
    }
}

#[test]
fn a_batch_gets_index_suffixes_and_a_second_job_never_overwrites() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let pixels: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i * 80; 8 * 8 * 3]).collect();
    let images: Vec<ImageRef<'_>> =
        pixels.iter().map(|p| ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::U8(p) }).collect();
    let options = JobOptions::new(&daemon.output);
    for _ in 0..2 {
        let job = client.submit(&options, &images).unwrap();
        let status = client.wait(&job.job_id, |_| {}).unwrap();
        assert!(status.images.iter().all(|i| i.state == ImageState::Written), "{status:?}");
    }
    let expected =
        ["luna_0.png", "luna_0_00001.png", "luna_1.png", "luna_1_00001.png", "luna_2.png", "luna_2_00001.png"];
    assert_eq!(file_names(&daemon.output), expected);
    let (_, _, _, second_of_first) = decode_png(&daemon.output.join("luna_1.png"));
    assert!(second_of_first.iter().all(|&b| b == 80));
}

#[test]
fn comfyui_golden_tensor_saves_to_the_pixels_comfyui_wrote() {
    let reference = reference_dir();
    let (shape, data) = read_npy_f32(&reference.join("golden_tensor.npy"));
    assert_eq!(shape, [2, 192, 256, 3]);
    let (h, w) = (shape[1] as u32, shape[2] as u32);
    let per_image = (h * w * 3) as usize;
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let images: Vec<ImageRef<'_>> = data
        .chunks_exact(per_image)
        .map(|p| ImageRef { width: w, height: h, channels: 3, pixels: Pixels::F32(p) })
        .collect();
    let job = client.submit(&JobOptions::new(&daemon.output), &images).unwrap();
    let status = client.wait(&job.job_id, |_| {}).unwrap();
    for (i, golden) in ["golden_png_00001_.png", "golden_png_00002_.png"].iter().enumerate() {
        let ours = decode_png(status.images[i].path.as_ref().unwrap().as_ref());
        let theirs = decode_png(&reference.join(golden));
        assert!(ours == theirs, "image {i} differs from ComfyUI's {golden}");
    }
}
