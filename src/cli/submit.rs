//! `luna-daemon submit`: image files, or generated test images, as one job.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::synthetic;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Output root directory (made absolute; created if missing).
    #[arg(long)]
    output_dir: PathBuf,
    /// Sub-directory below the output root.
    #[arg(long, default_value = "")]
    save_path: String,
    /// File name stem; `_<index>` is appended for more than one image.
    #[arg(long, default_value = "luna")]
    filename: String,
    /// PNG compression level 0..9 (ComfyUI's default is 4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=9))]
    png_compression: u8,
    /// Wait until every image is saved; exit non-zero if any failed.
    #[arg(long)]
    wait: bool,
    /// Print the final status as JSON (with --wait).
    #[arg(long, requires = "wait")]
    json: bool,
    /// Submit N generated test images instead of files.
    #[arg(long, value_name = "N", conflicts_with = "files")]
    synthetic: Option<u32>,
    /// Size of generated images, WIDTHxHEIGHT.
    #[arg(long, default_value = "1024x1024", value_parser = parse_size)]
    size: (u32, u32),
    /// Sample type of generated images.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Image files to submit (PNG, JPEG, WebP, TIFF, BMP); gray, RGB and RGBA kept, 16-bit kept as u16.
    #[arg(required_unless_present = "synthetic")]
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    U8,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT"))?;
    let parse = |v: &str| v.trim().parse::<u32>().ok().filter(|&n| n > 0).ok_or(format!("bad size {s:?}"));
    Ok((parse(w)?, parse(h)?))
}

/// Decoded or generated pixels, owned while the job is built.
enum Owned {
    U8(Vec<u8>),
    U16(Vec<u16>),
    F32(Vec<f32>),
}

struct OwnedImage {
    width: u32,
    height: u32,
    channels: u8,
    pixels: Owned,
}

impl OwnedImage {
    fn as_ref(&self) -> ImageRef<'_> {
        let pixels = match &self.pixels {
            Owned::U8(p) => Pixels::U8(p),
            Owned::U16(p) => Pixels::U16(p),
            Owned::F32(p) => Pixels::F32(p),
        };
        ImageRef { width: self.width, height: self.height, channels: self.channels, pixels }
    }
}

pub fn run(args: SubmitArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    let images = match args.synthetic {
        Some(n) => (0..n).map(|i| generate(args.size, args.dtype, u64::from(i))).collect(),
        None => args.files.iter().map(|f| load(f)).collect::<anyhow::Result<Vec<_>>>()?,
    };
    if images.is_empty() {
        bail!("nothing to submit");
    }
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating output directory {}", args.output_dir.display()))?;
    let mut options = JobOptions::new(&args.output_dir);
    options.save_path = args.save_path;
    options.filename = args.filename;
    options.png_compression = args.png_compression;
    let mut client = super::connect(socket)?;
    let refs: Vec<ImageRef<'_>> = images.iter().map(OwnedImage::as_ref).collect();
    let accepted = client.submit(&options, &refs)?;
    println!("{}", accepted.job_id);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let status = super::status::wait_with_progress(&mut client, &accepted.job_id)?;
    super::status::print_status(&status, args.json)?;
    Ok(super::status::exit_code(&status))
}

fn generate((width, height): (u32, u32), dtype: Dtype, seed: u64) -> OwnedImage {
    let pixels = match dtype {
        Dtype::F32 => Owned::F32(synthetic::rgb_f32(width, height, seed)),
        Dtype::U8 => Owned::U8(synthetic::rgb_u8(width, height, seed)),
    };
    OwnedImage { width, height, channels: 3, pixels }
}

fn load(path: &Path) -> anyhow::Result<OwnedImage> {
    let img = image::open(path).with_context(|| format!("decoding {}", path.display()))?;
    let (width, height) = (img.width(), img.height());
    let sixteen = matches!(img.color().bytes_per_pixel() / img.color().channel_count(), 2);
    let channels = match img.color().channel_count() {
        1 | 2 => 1,
        3 => 3,
        _ => 4,
    };
    let pixels = match (sixteen, channels) {
        (false, 1) => Owned::U8(img.to_luma8().into_raw()),
        (false, 3) => Owned::U8(img.to_rgb8().into_raw()),
        (false, _) => Owned::U8(img.to_rgba8().into_raw()),
        (true, 1) => Owned::U16(img.to_luma16().into_raw()),
        (true, 3) => Owned::U16(img.to_rgb16().into_raw()),
        (true, _) => Owned::U16(img.to_rgba16().into_raw()),
    };
    Ok(OwnedImage { width, height, channels, pixels })
}
