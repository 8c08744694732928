//! AVIF through a real daemon: the file's structure read back with a parser written here from the ISOBMFF/HEIF
//! specs and the ComfyUI frontend's reader (not from the encoder's code): brand, bit depth, colour signalling,
//! alpha, and the Exif item the frontend restores the workflow from. Decoded pixels are checked in the Python
//! tests (Pillow decodes AVIF; no Rust decoder is a dependency).

use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::{ImageFormat, ImageState, JobMetadata};

use crate::support::TestDaemon;

const PROMPT: &str = "{\"3\": {\"class_type\": \"KSampler\", \"inputs\": {\"text\": \"a: b\"}}}";
const WORKFLOW: &str = "{\"nodes\": [{\"id\": 3}], \"links\": []}";

fn save(daemon: &TestDaemon, options: &JobOptions, image: ImageRef<'_>) -> Vec<u8> {
    let mut client = daemon.client();
    let accepted = client.submit(options, &[image]).unwrap();
    let status = client.wait(&accepted.job_id, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written, "{status:?}");
    let path = status.images[0].path.clone().unwrap();
    assert!(path.ends_with(".avif") == (options.format == ImageFormat::Avif), "{path}");
    std::fs::read(path).unwrap()
}

fn options(daemon: &TestDaemon) -> JobOptions {
    let mut o = JobOptions::new(&daemon.output);
    o.format = ImageFormat::Avif;
    o.avif_speed = 10;
    o.metadata = Some(JobMetadata {
        prompt: Some(PROMPT.to_owned()),
        extra_pnginfo: vec![("workflow".to_owned(), WORKFLOW.to_owned())],
        ..Default::default()
    });
    o
}

/// One box: type, payload range.
#[derive(Debug, Clone, Copy)]
struct Bx {
    kind: [u8; 4],
    start: usize,
    end: usize,
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The boxes in `b[start..end]` (32-bit sizes only; size 0 or 1 is not written by the daemon, so it fails here).
fn boxes(b: &[u8], start: usize, end: usize) -> Vec<Bx> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let size = be32(b, at);
        assert!(size >= 8 && at + size <= end, "box at {at}: size {size} overruns {end}");
        out.push(Bx { kind: b[at + 4..at + 8].try_into().unwrap(), start: at + 8, end: at + size });
        at += size;
    }
    out
}

fn find(list: &[Bx], kind: &[u8; 4]) -> Bx {
    *list.iter().find(|x| &x.kind == kind).unwrap_or_else(|| panic!("no {} box", String::from_utf8_lossy(kind)))
}

/// What the test reads back from a file.
#[derive(Debug)]
struct Avif {
    top_level: Vec<[u8; 4]>,
    major_brand: [u8; 4],
    /// `(item id, item type)` from `iinf`.
    items: Vec<(usize, [u8; 4])>,
    /// The primary item's `pixi` bits per channel.
    bits: Vec<u8>,
    /// `colr` nclx: primaries, transfer, matrix, full range (absent: MIAF's defaults).
    nclx: Option<(usize, usize, usize, bool)>,
    /// The first `av1C`'s high bit depth, monochrome, and chroma subsampling (x, y) bits.
    av1c: (bool, bool, u8),
    /// Whether an item carries the alpha auxiliary type.
    has_alpha: bool,
    /// The Exif item's bytes, as `iloc` locates them (first extent, absolute offset, as the frontend reads it).
    exif_item: Option<Vec<u8>>,
}

fn parse(b: &[u8]) -> Avif {
    let top = boxes(b, 0, b.len());
    let ftyp = find(&top, b"ftyp");
    let meta = find(&top, b"meta");
    // `meta` is a full box: version and flags first.
    let children = boxes(b, meta.start + 4, meta.end);
    let iinf = find(&children, b"iinf");
    assert_eq!(b[iinf.start], 0, "iinf version 0");
    let count = be16(b, iinf.start + 4);
    let infes = boxes(b, iinf.start + 6, iinf.end);
    assert_eq!(infes.len(), count);
    let items: Vec<(usize, [u8; 4])> = infes
        .iter()
        .map(|infe| {
            assert_eq!(b[infe.start], 2, "infe version 2 (the only one the frontend reads)");
            (be16(b, infe.start + 4), b[infe.start + 8..infe.start + 12].try_into().unwrap())
        })
        .collect();
    let iloc = find(&children, b"iloc");
    let v = b[iloc.start];
    assert_eq!(v, 0, "iloc version 0");
    // offset_size 4, length_size 4, base_offset_size 0: the frontend reads 32-bit offsets and ignores base offsets.
    assert_eq!((b[iloc.start + 4], b[iloc.start + 5]), (0x44, 0x00), "iloc field sizes");
    let mut at = iloc.start + 8;
    let mut extents = Vec::new();
    for _ in 0..be16(b, iloc.start + 6) {
        let id = be16(b, at);
        let n = be16(b, at + 4);
        at += 6;
        let first = (be32(b, at), be32(b, at + 4));
        at += 8 * n;
        extents.push((id, first));
    }
    let exif_item = items.iter().find(|(_, t)| t == b"Exif").map(|(id, _)| {
        let (offset, len) = extents.iter().find(|(i, _)| i == id).expect("Exif item has a location").1;
        b[offset..offset + len].to_vec()
    });
    let iprp = find(&children, b"iprp");
    let ipco = boxes(
        b,
        find(&boxes(b, iprp.start, iprp.end), b"ipco").start,
        find(&boxes(b, iprp.start, iprp.end), b"ipco").end,
    );
    let pixi = find(&ipco, b"pixi");
    let n = usize::from(b[pixi.start + 4]);
    let bits = b[pixi.start + 5..pixi.start + 5 + n].to_vec();
    // `colr` is left out when it holds MIAF's defaults (BT.709 primaries, sRGB transfer, BT.601 matrix, full
    // range); the AV1 sequence header carries the same colour description.
    let nclx = ipco.iter().find(|x| &x.kind == b"colr").map(|colr| {
        assert_eq!(&b[colr.start..colr.start + 4], b"nclx");
        (be16(b, colr.start + 4), be16(b, colr.start + 6), be16(b, colr.start + 8), b[colr.start + 10] & 0x80 != 0)
    });
    // av1C: marker/version, profile/level, then tier, high_bitdepth, twelve_bit, monochrome, subsampling x, y.
    let av1c = find(&ipco, b"av1C");
    let flags = b[av1c.start + 2];
    let av1c = (flags & 0x40 != 0, flags & 0x10 != 0, (flags >> 2) & 3);
    let has_alpha = ipco.iter().any(|x| {
        &x.kind == b"auxC" && b[x.start + 4..x.end].starts_with(b"urn:mpeg:mpegB:cicp:systems:auxiliary:alpha")
    });
    Avif {
        top_level: top.iter().map(|x| x.kind).collect(),
        major_brand: b[ftyp.start..ftyp.start + 4].try_into().unwrap(),
        items,
        bits,
        nclx,
        av1c,
        has_alpha,
        exif_item,
    }
}

/// IFD0's ASCII entries of a TIFF block, as the frontend's `parseExifData` reads them (either byte order).
fn ifd0_ascii(tiff: &[u8]) -> Vec<(u16, String)> {
    let little = &tiff[..2] == b"II";
    let r16 = |at: usize| {
        let v = [tiff[at], tiff[at + 1]];
        if little { u16::from_le_bytes(v) } else { u16::from_be_bytes(v) }
    };
    let r32 = |at: usize| {
        let v: [u8; 4] = tiff[at..at + 4].try_into().unwrap();
        (if little { u32::from_le_bytes(v) } else { u32::from_be_bytes(v) }) as usize
    };
    let ifd = r32(4);
    (0..usize::from(r16(ifd)))
        .filter_map(|i| {
            let e = ifd + 2 + 12 * i;
            (r16(e + 2) == 2).then(|| {
                let (count, offset) = (r32(e + 4), r32(e + 8));
                (r16(e), String::from_utf8(tiff[offset..offset + count - 1].to_vec()).unwrap())
            })
        })
        .collect()
}

/// What the ComfyUI frontend restores from a file: `prompt` and `workflow` from `<key>:<json>` strings.
fn restored(exif_item: &[u8]) -> Vec<(String, String)> {
    let tiff_at = exif_item.windows(4).position(|w| w == b"MM\0*" || w == b"II*\0").expect("a TIFF header");
    ifd0_ascii(&exif_item[tiff_at..])
        .into_iter()
        .filter_map(|(_, s)| {
            let (key, value) = s.split_once(':')?;
            matches!(key.to_lowercase().as_str(), "prompt" | "workflow").then(|| (key.to_lowercase(), value.to_owned()))
        })
        .collect()
}

fn gradient(w: u32, h: u32, channels: u8) -> Vec<f32> {
    let c = usize::from(channels);
    (0..(w * h) as usize * c)
        .map(|i| {
            let (p, ch) = (i / c, i % c);
            let (x, y) = ((p % w as usize) as f32, (p / w as usize) as f32);
            if ch == 3 { x / w as f32 } else { (x + y * (ch as f32 + 1.0)) / (w + h * 4) as f32 }
        })
        .collect()
}

#[test]
fn avif_files_carry_the_workflow_where_the_comfyui_frontend_reads_it() {
    let daemon = TestDaemon::start();
    let (w, h) = (48u32, 32u32);
    for (channels, bits) in [(3u8, 10u8), (3, 8), (4, 10), (1, 8)] {
        let f = gradient(w, h, channels);
        let mut o = options(&daemon);
        o.avif_bit_depth = bits;
        o.filename = format!("c{channels}_b{bits}");
        let bytes = save(&daemon, &o, ImageRef { width: w, height: h, channels, pixels: Pixels::F32(&f) });
        let avif = parse(&bytes);
        assert_eq!(&avif.major_brand, b"avif", "the frontend checks the major brand");
        assert_eq!(avif.top_level, [*b"ftyp", *b"meta", *b"mdat"], "{channels} channels, {bits} bits");
        assert!(avif.bits.iter().all(|&b| b == bits), "pixi {:?} for {bits} bits", avif.bits);
        assert!(
            avif.nclx.is_none_or(|n| n == (1, 13, 6, true)),
            "BT.709 primaries, sRGB transfer, BT.601 matrix, full range: {:?}",
            avif.nclx
        );
        assert_eq!(avif.av1c, (bits == 10, false, 0), "high bit depth iff 10 bits; colour; 4:4:4");
        assert_eq!(avif.has_alpha, channels == 4, "{channels} channels");
        let exif = avif.exif_item.expect("an Exif item");
        assert_eq!(&exif[..4], [0, 0, 0, 0], "HEIF Exif item: the TIFF header offset, 0");
        assert_eq!(
            restored(&exif),
            [("workflow".to_owned(), WORKFLOW.to_owned()), ("prompt".to_owned(), PROMPT.to_owned())],
            "workflow (0x010F) and prompt (0x0110), in tag order, as the frontend reads them"
        );
        assert!(avif.items.iter().filter(|(_, t)| t == b"av01").count() == 1 + usize::from(channels == 4));
    }
}

#[test]
fn the_exif_item_holds_the_same_exif_as_webp() {
    let daemon = TestDaemon::start();
    let f = gradient(16, 16, 3);
    let image = ImageRef { width: 16, height: 16, channels: 3, pixels: Pixels::F32(&f) };
    let avif = parse(&save(&daemon, &options(&daemon), image)).exif_item.unwrap();
    let mut o = options(&daemon);
    o.format = ImageFormat::Webp;
    let webp = save(&daemon, &o, image);
    let at = webp.windows(4).position(|w| w == b"EXIF").expect("a WebP EXIF chunk");
    let len = u32::from_le_bytes(webp[at + 4..at + 8].try_into().unwrap()) as usize;
    let webp = &webp[at + 8..at + 8 + len];
    // One EXIF block for both formats; the two jobs' UserComment summaries may name different seconds.
    let summary = webp.windows(8).position(|w| w == b"UNICODE\0").unwrap();
    assert_eq!(avif.len() - 4, webp.len());
    assert_eq!(&avif[4..4 + summary], &webp[..summary], "IFD0, the Exif IFD and the prompt and workflow values");
}

#[test]
fn without_metadata_there_is_no_exif_item() {
    let daemon = TestDaemon::start();
    let f = gradient(8, 8, 3);
    let mut o = options(&daemon);
    o.embed_metadata = false;
    let avif = parse(&save(&daemon, &o, ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::F32(&f) }));
    assert!(avif.exif_item.is_none());
    assert!(avif.items.iter().all(|(_, t)| t == b"av01"), "{:?}", avif.items);
}

#[test]
fn bad_avif_options_are_refused_with_the_field_named() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let pixels = vec![0u8; 12];
    let image = ImageRef { width: 2, height: 2, channels: 3, pixels: Pixels::U8(&pixels) };
    type Change = fn(&mut JobOptions);
    let cases: [(Change, &str); 5] = [
        (|o| o.avif_bit_depth = 16, "avif_bit_depth 16 is not 8 or 10"),
        (|o| o.avif_quality = 0, "avif_quality 0 is outside 1..=100"),
        (|o| o.avif_quality = 101, "avif_quality 101 is outside 1..=100"),
        (|o| o.avif_speed = 0, "avif_speed 0 is outside 1..=10"),
        (|o| o.avif_speed = 11, "avif_speed 11 is outside 1..=10"),
    ];
    for (change, message) in cases {
        let mut o = options(&daemon);
        change(&mut o);
        let err = client.submit(&o, &[image]).unwrap_err().to_string();
        assert!(err.contains("invalid_job") && err.contains(message), "{err}");
    }
}

#[test]
fn the_cli_writes_avif_with_its_settings_and_refuses_a_bit_depth_avif_lacks() {
    let daemon = TestDaemon::start();
    let out = daemon.dir.path().join("cli-avif");
    let dir = out.to_str().unwrap();
    let cli = |args: &[&str]| {
        let base = ["submit", "--synthetic", "1", "--size", "24x16", "--wait", "--output-dir", dir, "--format", "avif"];
        std::process::Command::new(crate::support::daemon_exe())
            .env("LUNA_DAEMON_SOCKET", &daemon.socket)
            .args(base.iter().chain(args))
            .output()
            .unwrap()
    };
    for (name, bits) in [("ten", "10"), ("eight", "8")] {
        let o = cli(&["--filename", name, "--bit-depth", bits, "--avif-quality", "60", "--avif-speed", "10"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let avif = parse(&std::fs::read(out.join(format!("{name}.avif"))).unwrap());
        assert_eq!(avif.bits, [bits.parse::<u8>().unwrap(); 3], "{name}");
    }
    let o = cli(&["--bit-depth", "16"]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--bit-depth 16 is not available for avif: PNG takes 8 or 16, EXR 16 or 32, AVIF 8 or 10"),
        "{stderr}"
    );
    let o = cli(&["--avif-quality", "0"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 is not in 1..=100"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
