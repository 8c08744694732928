//! Save semantics beyond the shared vectors: ComfyUI's own files as the reference for metadata, JPEG's 64 KiB
//! EXIF limit, large metadata through shared memory, symlinks in the output tree, and the CLI options.

use std::path::Path;
use std::process::Command;

use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::encode::pyjson;
use luna_daemon::protocol::{ImageFormat, ImageState, JobMetadata};
use serde_json::Value;

use crate::readers::{exif_ascii_entries, exif_user_comment, jpeg_exif, png_text, webp_exif};
use crate::support::{TestDaemon, daemon_exe, file_names, reference_dir};

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The metadata ComfyUI embedded in the reference files, serialised by our json.dumps port.
fn reference_metadata(reference: &Path) -> JobMetadata {
    let prompt = json_file(&reference.join("single_prompt.json"));
    let extra = json_file(&reference.join("extra_pnginfo.json"));
    JobMetadata {
        prompt: Some(pyjson::dumps(&prompt)),
        extra_pnginfo: extra.as_object().unwrap().iter().map(|(k, v)| (k.clone(), pyjson::dumps(v))).collect(),
        ..JobMetadata::default()
    }
}

#[test]
fn our_json_and_exif_match_what_comfyui_wrote() {
    let reference = reference_dir();
    let meta = reference_metadata(&reference);
    // ComfyUI's own WebP: its IFD0 entries are exactly json.dumps of the prompt and each extra_pnginfo key, so
    // both the reader and our json.dumps port agree with real Python here (non-ASCII, quotes, backslashes).
    let theirs = exif_ascii_entries(
        &webp_exif(&std::fs::read(reference.join("single_webp_lossy_q90_00001_.webp")).unwrap()).unwrap(),
    );
    assert_eq!(theirs["prompt"], *meta.prompt.as_ref().unwrap());
    for (key, value) in &meta.extra_pnginfo {
        assert_eq!(&theirs[key], value, "{key}");
    }
    // The daemon's WebP and JPEG carry the same entries; its PNG the same tEXt values.
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let pixels = luna_daemon::synthetic::rgb_u8(64, 48, 5);
    for format in [ImageFormat::Webp, ImageFormat::Jpeg, ImageFormat::Png] {
        let mut options = JobOptions::new(&daemon.output);
        options.format = format;
        options.metadata = Some(meta.clone());
        let image = ImageRef { width: 64, height: 48, channels: 3, pixels: Pixels::U8(&pixels) };
        let job = client.submit(&options, &[image]).unwrap();
        let status = client.wait(&job.job_id, |_| {}).unwrap();
        let bytes = std::fs::read(status.images[0].path.as_deref().unwrap()).unwrap();
        match format {
            ImageFormat::Png => {
                let ours = png_text(&bytes);
                let theirs = png_text(&std::fs::read(reference.join("single_png_00001_.png")).unwrap());
                assert_eq!(&ours[..theirs.len()], &theirs[..], "ComfyUI's keys come first, with the same text");
            }
            ImageFormat::Webp => assert_eq!(exif_ascii_entries(&webp_exif(&bytes).unwrap()), theirs),
            ImageFormat::Jpeg => assert_eq!(exif_ascii_entries(&jpeg_exif(&bytes).unwrap()), theirs),
            other => unreachable!("{other:?} is not in this loop"),
        }
    }
}

#[test]
fn jpeg_metadata_over_64_kib_drops_prompt_then_workflow_and_saves_anyway() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let big = |n: usize| pyjson::dumps(&Value::String("x".repeat(n)));
    let cases = [
        (big(40_000), big(40_000), vec!["prompt left out"], false, true),
        (big(40_000), big(70_000), vec!["prompt left out", "workflow left out"], false, false),
        (big(1_000), big(1_000), vec![], true, true),
    ];
    let pixels = luna_daemon::synthetic::rgb_u8(32, 32, 1);
    for (prompt, workflow, notes, has_prompt, has_workflow) in cases {
        let mut options = JobOptions::new(&daemon.output);
        options.format = ImageFormat::Jpeg;
        options.metadata = Some(JobMetadata {
            prompt: Some(prompt),
            extra_pnginfo: vec![("workflow".to_owned(), workflow)],
            ..JobMetadata::default()
        });
        let image = ImageRef { width: 32, height: 32, channels: 3, pixels: Pixels::U8(&pixels) };
        let job = client.submit(&options, &[image]).unwrap();
        let status = client.wait(&job.job_id, |_| {}).unwrap();
        let image = &status.images[0];
        assert_eq!(image.state, ImageState::Written, "{image:?}");
        assert_eq!(image.notes.len(), notes.len(), "{:?}", image.notes);
        for (note, needle) in image.notes.iter().zip(notes) {
            assert!(note.starts_with(needle) && note.contains("64 KiB"), "{note}");
        }
        let bytes = std::fs::read(image.path.as_deref().unwrap()).unwrap();
        image::load_from_memory(&bytes).expect("the JPEG decodes");
        let exif = jpeg_exif(&bytes).unwrap();
        let entries = exif_ascii_entries(&exif);
        assert_eq!(entries.contains_key("prompt"), has_prompt);
        assert_eq!(entries.contains_key("workflow"), has_workflow);
        assert!(exif_user_comment(&exif).unwrap().starts_with("Image Type: , Model: UnknownModel"));
    }
}

#[test]
fn a_workflow_of_hundreds_of_kilobytes_travels_through_shared_memory() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    // Larger than the 1 MiB frame cap: it can only arrive through the segment.
    let nodes: Vec<Value> =
        (0..25_000).map(|i| serde_json::json!({"id": i, "type": "Node", "widgets": [i, "ü", 0.5]})).collect();
    let workflow = pyjson::dumps(&serde_json::json!({ "nodes": nodes }));
    assert!(workflow.len() > 1_100_000, "{}", workflow.len());
    let mut options = JobOptions::new(&daemon.output);
    options.metadata =
        Some(JobMetadata { extra_pnginfo: vec![("workflow".to_owned(), workflow.clone())], ..JobMetadata::default() });
    let pixels = vec![9u8; 16 * 16 * 3];
    let image = ImageRef { width: 16, height: 16, channels: 3, pixels: Pixels::U8(&pixels) };
    let job = client.submit(&options, &[image]).unwrap();
    let status = client.wait(&job.job_id, |_| {}).unwrap();
    let text = png_text(&std::fs::read(status.images[0].path.as_deref().unwrap()).unwrap());
    assert_eq!(text[0], ("workflow".to_owned(), workflow));
}

#[cfg(unix)] // symlinks: creating one on Windows needs a privilege ordinary users lack
#[test]
fn a_symlink_in_the_output_tree_cannot_redirect_a_write_outside() {
    let daemon = TestDaemon::start();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(&daemon.output).unwrap();
    std::os::unix::fs::symlink(outside.path(), daemon.output.join("escape")).unwrap();
    let mut client = daemon.client();
    let mut options = JobOptions::new(&daemon.output);
    options.save_path = "escape/sub".to_owned();
    let pixels = vec![1u8; 4 * 4 * 3];
    let image = ImageRef { width: 4, height: 4, channels: 3, pixels: Pixels::U8(&pixels) };
    let job = client.submit(&options, &[image]).unwrap();
    let status = client.wait(&job.job_id, |_| {}).unwrap();
    let image = &status.images[0];
    assert_eq!(image.state, ImageState::Failed);
    let error = image.error.as_ref().unwrap();
    assert_eq!(error.code, luna_daemon::protocol::ErrorCode::InvalidJob);
    assert!(error.message.contains("resolves outside the output root"), "{}", error.message);
    assert!(file_names(outside.path()).is_empty(), "nothing lands outside: {:?}", file_names(outside.path()));
}

#[test]
fn the_cli_exposes_every_job_option() {
    let daemon = TestDaemon::start();
    let dir = daemon.dir.path();
    std::fs::write(dir.join("prompt.json"), r#"{"1": {"inputs": {"text": "ünï", "cfg": 7.0}}}"#).unwrap();
    std::fs::write(dir.join("workflow.json"), r#"{"nodes": [], "version": 0.4}"#).unwrap();
    let out = dir.join("cli-out");
    let o = Command::new(daemon_exe())
        .env("LUNA_DAEMON_SOCKET", &daemon.socket)
        .args(["submit", "--synthetic", "2", "--size", "32x24", "--wait", "--output-dir"])
        .arg(&out)
        .args(["--save-path", "%model_dir%", "--filename", "run_%index%", "--format", "webp", "--quality", "80"])
        .args(["--affix", "ORIG", "--model-name", "sdxl/base_v1.safetensors", "--index", "3"])
        .args(["--quality-gate", "variance", "--threshold", "0.0", "--custom-metadata", "note"])
        .arg("--prompt-json")
        .arg(dir.join("prompt.json"))
        .arg("--workflow-json")
        .arg(dir.join("workflow.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(file_names(&out.join("sdxl/ORIG")), ["run_3_ORIG_0.webp", "run_3_ORIG_1.webp"]);
    let bytes = std::fs::read(out.join("sdxl/ORIG/run_3_ORIG_0.webp")).unwrap();
    let exif = webp_exif(&bytes).unwrap();
    let entries = exif_ascii_entries(&exif);
    assert_eq!(entries["prompt"], r#"{"1": {"inputs": {"text": "\u00fcn\u00ef", "cfg": 7.0}}}"#);
    assert_eq!(entries["workflow"], r#"{"nodes": [], "version": 0.4}"#);
    assert!(exif_user_comment(&exif).unwrap().ends_with(", Batch: 0, Custom: note"));

    let o = Command::new(daemon_exe())
        .env("LUNA_DAEMON_SOCKET", &daemon.socket)
        .args([
            "submit",
            "--synthetic",
            "1",
            "--size",
            "8x8",
            "--wait",
            "--no-metadata",
            "--format",
            "png",
            "--output-dir",
        ])
        .arg(dir.join("plain"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(png_text(&std::fs::read(dir.join("plain/luna.png")).unwrap()).is_empty());
}
