//! `luna-daemon submit`: image files, or generated test images, as one job.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::encode::pyjson;
use luna_daemon::protocol::{ExrColorSpace, ImageFormat, JobMetadata, QualityGate};
use luna_daemon::synthetic;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Output root directory (made absolute; created if missing), or `s3://bucket/prefix` for S3-compatible
    /// object storage (the daemon's endpoint and credentials; see `serve --help`).
    #[arg(long)]
    output_dir: PathBuf,
    /// Sub-directory below the output root (templates allowed: %model_name%, %time:YYYY-mm-dd%, ...).
    #[arg(long, default_value = "")]
    save_path: String,
    /// File name template; `_<affix>` and, for several images, `_<batch index>` are appended.
    #[arg(long, default_value = "luna")]
    filename: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Png)]
    format: FormatArg,
    /// PNG compression level 0..9 (ComfyUI's default is 4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(0..=9))]
    png_compression: u8,
    /// JPEG and lossy WebP quality, 70..100 [default: 90]. Not for JPEG XL, which is always lossless.
    #[arg(long, value_parser = clap::value_parser!(u8).range(70..=100))]
    quality: Option<u8>,
    /// Lossless WebP (JPEG XL is always lossless: accepted there, changes nothing).
    #[arg(long)]
    lossless: bool,
    /// Bits per sample where the format has a choice: PNG 8 or 16, EXR 16 (half) or 32 (float, the default),
    /// AVIF 8 or 10 (the default), JPEG XL 8 or 16. 16-bit PNG, EXR, 10-bit AVIF and 16-bit JPEG XL are made from
    /// the samples as submitted (float or 16-bit), never from 8 bits.
    #[arg(long, value_parser = clap::value_parser!(u8).range(8..=32))]
    bit_depth: Option<u8>,
    /// Colour space of the submitted samples, for EXR: srgb (linearised before writing; ComfyUI's images) or
    /// linear (written unchanged).
    #[arg(long, value_enum, default_value_t = ColorSpaceArg::Srgb)]
    exr_color_space: ColorSpaceArg,
    /// AVIF quality, 1..100 (100 is the best; default 80).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    avif_quality: Option<u8>,
    /// AVIF encoder speed, 1 (slowest, smallest files) ..10 (fastest; default 6).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=10))]
    avif_speed: Option<u8>,
    /// Affix appended to file names (and the sub-folder name unless --no-subdir).
    #[arg(long, default_value = "")]
    affix: String,
    /// Do not save into an <affix>/ sub-folder.
    #[arg(long)]
    no_subdir: bool,
    /// Model name for %model_name% / %model_path% / %model_dir% and metadata.
    #[arg(long, default_value = "")]
    model_name: String,
    /// The value of %index%.
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// Quality gate.
    #[arg(long, value_enum, default_value_t = GateArg::Disabled)]
    quality_gate: GateArg,
    /// Quality gate threshold, 0..1.
    #[arg(long, default_value_t = 0.3)]
    threshold: f64,
    /// Embed this API-format prompt (JSON file) as `prompt`.
    #[arg(long, value_name = "FILE")]
    prompt_json: Option<PathBuf>,
    /// Embed this workflow (JSON file) as `workflow`.
    #[arg(long, value_name = "FILE")]
    workflow_json: Option<PathBuf>,
    /// Embed this free text as `custom_metadata`.
    #[arg(long, value_name = "TEXT")]
    custom_metadata: Option<String>,
    /// Embed no metadata at all.
    #[arg(long)]
    no_metadata: bool,
    /// Wait until every image is saved; the exit status tells how it went (1 failed, 3 discarded: see below).
    #[arg(long)]
    wait: bool,
    /// Join this batch group: `status --batch`, `watch --batch` and `wait --batch` report its jobs together.
    #[arg(long, value_name = "NAME", value_parser = parse_batch)]
    batch: Option<String>,
    /// Also write a small WebP thumbnail of each image into a `_thumbnails/` folder beside it.
    #[arg(long)]
    thumbnails: bool,
    /// Largest side of the thumbnails in pixels (16..1024).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=1024), requires = "thumbnails")]
    thumbnail_size: u32,
    /// Also add every written image of the batch to `<batch>.zip` in the output directory (every job of the
    /// batch must pass it).
    #[arg(long, requires = "batch")]
    zip: bool,
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
enum FormatArg {
    Png,
    Webp,
    Jpeg,
    Exr,
    Avif,
    Jxl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorSpaceArg {
    Srgb,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GateArg {
    Disabled,
    Variance,
    EdgeDensity,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    U8,
}

fn parse_batch(s: &str) -> Result<String, String> {
    luna_daemon::jobs::validate_batch_name(s).map(|()| s.to_owned())
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
    let options = job_options(&args)?;
    let images = match args.synthetic {
        Some(n) => (0..n).map(|i| generate(args.size, args.dtype, u64::from(i))).collect(),
        None => args.files.iter().map(|f| load(f)).collect::<anyhow::Result<Vec<_>>>()?,
    };
    if images.is_empty() {
        bail!("nothing to submit");
    }
    let is_object_root = args.output_dir.to_str().is_some_and(|d| d.starts_with(luna_daemon::s3::S3_SCHEME));
    if !is_object_root {
        std::fs::create_dir_all(&args.output_dir)
            .with_context(|| format!("creating output directory {}", args.output_dir.display()))?;
    }
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

fn job_options(args: &SubmitArgs) -> anyhow::Result<JobOptions> {
    let mut o = JobOptions::new(&args.output_dir);
    o.save_path = args.save_path.clone();
    o.filename = args.filename.clone();
    o.format = match args.format {
        FormatArg::Png => ImageFormat::Png,
        FormatArg::Webp => ImageFormat::Webp,
        FormatArg::Jpeg => ImageFormat::Jpeg,
        FormatArg::Exr => ImageFormat::Exr,
        FormatArg::Avif => ImageFormat::Avif,
        FormatArg::Jxl => ImageFormat::Jxl,
    };
    match (args.format, args.bit_depth) {
        (_, None) => {}
        (FormatArg::Png, Some(bits @ (8 | 16))) => o.png_bit_depth = bits,
        (FormatArg::Exr, Some(bits @ (16 | 32))) => o.exr_bit_depth = bits,
        (FormatArg::Avif, Some(bits @ (8 | 10))) => o.avif_bit_depth = bits,
        (FormatArg::Jxl, Some(bits @ (8 | 16))) => o.jxl_bit_depth = bits,
        (FormatArg::Webp | FormatArg::Jpeg, Some(8)) => {}
        (format, Some(bits)) => bail!(
            "--bit-depth {bits} is not available for {}: PNG takes 8 or 16, EXR 16 or 32, AVIF 8 or 10, JPEG XL 8 \
             or 16, WebP and JPEG only 8",
            format.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
        ),
    }
    o.exr_input_color_space = match args.exr_color_space {
        ColorSpaceArg::Srgb => ExrColorSpace::Srgb,
        ColorSpaceArg::Linear => ExrColorSpace::Linear,
    };
    o.avif_quality = args.avif_quality.unwrap_or(o.avif_quality);
    o.avif_speed = args.avif_speed.unwrap_or(o.avif_speed);
    o.png_compression = args.png_compression;
    if let (FormatArg::Jxl, Some(quality)) = (args.format, args.quality) {
        bail!(
            "--quality {quality} does not apply to jxl: JPEG XL is saved losslessly only (this build has no lossy \
             JPEG XL encoder; docs/ARCHITECTURE.md says why); drop --quality, or use --format webp or jpeg"
        );
    }
    o.lossy_quality = args.quality.unwrap_or(90);
    o.lossless_webp = args.lossless;
    o.affix = args.affix.clone();
    o.subdir = !args.no_subdir;
    o.model_name = args.model_name.clone();
    o.filename_index = args.index;
    o.quality_gate = match args.quality_gate {
        GateArg::Disabled => QualityGate::Disabled,
        GateArg::Variance => QualityGate::Variance,
        GateArg::EdgeDensity => QualityGate::EdgeDensity,
        GateArg::Both => QualityGate::Both,
    };
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold {} is outside 0..1", args.threshold);
    }
    o.min_quality_threshold = args.threshold;
    o.embed_metadata = !args.no_metadata;
    o.batch = args.batch.clone();
    o.thumbnails = args.thumbnails;
    o.thumbnail_size = args.thumbnail_size;
    o.zip = args.zip;
    let mut metadata = JobMetadata::default();
    if let Some(path) = &args.prompt_json {
        metadata.prompt = Some(read_json(path)?);
    }
    if let Some(path) = &args.workflow_json {
        metadata.extra_pnginfo.push(("workflow".to_owned(), read_json(path)?));
    }
    metadata.custom_metadata = args.custom_metadata.clone();
    o.metadata = Some(metadata);
    Ok(o)
}

/// A JSON file as Python's `json.dumps` would write it, so files match what ComfyUI embeds.
fn read_json(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(pyjson::dumps(&value))
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
