//! The command line as a user runs it.

use std::process::{Command, Output};

use crate::support::{TestDaemon, daemon_exe, decode_png, file_names};

fn cli(daemon: &TestDaemon, args: &[&str]) -> Output {
    Command::new(daemon_exe()).env("LUNA_DAEMON_SOCKET", &daemon.socket).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn submit_synthetic_wait_writes_valid_pngs_and_status_and_stats_report_them() {
    let daemon = TestDaemon::start();
    let out = daemon.dir.path().join("x");
    let o = cli(
        &daemon,
        &["submit", "--synthetic", "4", "--size", "96x64", "--wait", "--output-dir", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert_eq!(file_names(&out), ["luna_0.png", "luna_1.png", "luna_2.png", "luna_3.png"]);
    for name in file_names(&out) {
        let (w, h, c, _) = decode_png(&out.join(&name));
        assert_eq!((w, h, c), (96, 64, 3));
    }
    let job_id = stdout(&o).lines().next().unwrap().trim().to_owned();
    assert_eq!(job_id.len(), 12, "{job_id}");
    assert!(stdout(&o).contains(&format!("job {job_id} (finished, 4 images)")));

    let status = cli(&daemon, &["status", &job_id, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["finished"], true);
    assert_eq!(json["images"].as_array().unwrap().len(), 4);
    assert_eq!(json["images"][2]["state"], "written");
    assert!(json["images"][2]["path"].as_str().unwrap().ends_with("luna_2.png"));

    let stats = cli(&daemon, &["stats", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(json["images_written"], 4);
    assert_eq!(json["jobs_done"], 1);
    assert!(json["workers_alive"].as_u64().unwrap() >= 2);
}

#[test]
fn submit_files_keeps_their_pixels() {
    let daemon = TestDaemon::start();
    let src = daemon.dir.path().join("in.png");
    let pixels = luna_daemon::synthetic::rgb_u8(40, 30, 9);
    image::save_buffer(&src, &pixels, 40, 30, image::ExtendedColorType::Rgb8).unwrap();
    let out = daemon.dir.path().join("files");
    let o = cli(
        &daemon,
        &[
            "submit",
            "--output-dir",
            out.to_str().unwrap(),
            "--filename",
            "copy",
            "--png-compression",
            "9",
            "--wait",
            src.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, _, _, data) = decode_png(&out.join("copy.png"));
    assert_eq!(data, pixels);
}

#[test]
fn client_commands_without_a_daemon_say_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-home.sock");
    let o = Command::new(daemon_exe()).args(["--socket", socket.to_str().unwrap(), "stats"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("cannot reach luna-daemon at"), "{stderr}");
    assert!(stderr.contains("start it with `luna-daemon serve`"), "{stderr}");
}

#[test]
fn an_invalid_job_from_the_cli_is_a_clear_error() {
    let daemon = TestDaemon::start();
    let out = daemon.dir.path().join("bad");
    let o = cli(
        &daemon,
        &[
            "submit",
            "--synthetic",
            "1",
            "--size",
            "8x8",
            "--save-path",
            "../../etc",
            "--output-dir",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("save_path component \"..\" is not allowed") || stderr.contains("'..' would leave"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid_job"), "{stderr}");
}

#[test]
fn stop_from_the_cli_shuts_the_daemon_down() {
    let mut daemon = TestDaemon::start();
    let o = cli(&daemon, &["stop"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("stopping"));
    assert!(daemon.wait_exit().success());
}

/// Issue 11, failure 11: a discarded image is saved (under `_discarded/`), so `submit --wait` does not report
/// it as a failure (1) but with its own exit status, 3; the help lists every exit status.
#[test]
fn a_discarded_image_has_its_own_exit_status() {
    let daemon = TestDaemon::start();
    let out = daemon.dir.path().join("gate");
    let args = ["submit", "--synthetic", "1", "--size", "32x32", "--wait", "--quality-gate", "variance"];
    let o = cli(&daemon, &[&args[..], &["--threshold", "1", "--output-dir", out.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert_eq!(file_names(&out.join("_discarded")), ["luna.png"]);
    let o = cli(
        &daemon,
        &["submit", "--synthetic", "1", "--size", "32x32", "--wait", "--output-dir", out.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&cli(&daemon, &["submit", "--help"]));
    for line in [
        "0  success",
        "1  `submit --wait` / `watch` / `wait`: at least one image failed",
        "2  error",
        "3  `submit --wait`",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn submit_writes_16_bit_png_and_exr_and_refuses_a_bit_depth_the_format_lacks() {
    let daemon = TestDaemon::start();
    let out = daemon.dir.path().join("deep");
    let dir = out.to_str().unwrap();
    let base = ["submit", "--synthetic", "1", "--size", "24x16", "--wait", "--output-dir", dir];
    let o = cli(&daemon, &[&base[..], &["--filename", "p16", "--bit-depth", "16"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(out.join("p16.png")).unwrap();
    assert_eq!(png[24], 16, "IHDR bit depth");
    let o = cli(&daemon, &[&base[..], &["--filename", "h", "--format", "exr", "--bit-depth", "16"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(&std::fs::read(out.join("h.exr")).unwrap()[..4], [0x76, 0x2f, 0x31, 0x01]);
    let o = cli(&daemon, &[&base[..], &["--format", "jpeg", "--bit-depth", "16"]].concat());
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--bit-depth 16 is not available for jpeg"), "{stderr}");
}

#[test]
fn submit_writes_lossless_jpeg_xl_at_8_and_16_bits_and_refuses_what_it_cannot_do() {
    let daemon = TestDaemon::start();
    let out = daemon.dir.path().join("jxl");
    let dir = out.to_str().unwrap();
    let base = ["submit", "--synthetic", "1", "--size", "24x16", "--wait", "--output-dir", dir, "--format", "jxl"];
    let o = cli(&daemon, &[&base[..], &["--filename", "j8", "--lossless"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&daemon, &[&base[..], &["--filename", "j16", "--bit-depth", "16"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (name, bits) in [("j8", 8), ("j16", 16)] {
        let bytes = std::fs::read(out.join(format!("{name}.jxl"))).unwrap();
        let image = jxl_oxide::JxlImage::builder().read(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!((image.width(), image.height()), (24, 16));
        assert_eq!(image.image_header().metadata.bit_depth.bits_per_sample(), bits, "{name}");
    }
    let o = cli(&daemon, &[&base[..], &["--bit-depth", "10"]].concat());
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("--bit-depth 10 is not available for jxl: PNG takes 8 or 16, EXR 16 or 32, AVIF 8 or 10, JPEG XL 8 or 16, WebP"), "{stderr}");
    let o = cli(&daemon, &[&base[..], &["--quality", "80"]].concat());
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr
            .contains("--quality 80 does not apply to jxl: JPEG XL is saved losslessly only (this build has no lossy"),
        "{stderr}"
    );
    let written: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(written.len(), 2, "the refused runs wrote nothing: {written:?}");
}
