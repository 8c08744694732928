//! WebP through libwebp (the encoder PIL uses, so sizes match what users get from ComfyUI), lossy at a quality
//! or lossless, with an optional EXIF chunk placed after the image data as PIL does (VP8X, VP8/VP8L, EXIF).

use std::io::Write;

use super::{EncodeError, Image8};

/// libwebp's `method` (speed/size trade-off); 4 is PIL's default.
const METHOD: i32 = 4;
/// PIL's default `quality` for lossless WebP, which libwebp reads as encoder effort.
const LOSSLESS_EFFORT: f32 = 80.0;

/// Encodes `image` as WebP: lossless, or lossy at `quality` (0..100); appends `exif` as an EXIF chunk.
pub fn encode_webp<W: Write>(
    image: &Image8,
    lossless: bool,
    quality: u8,
    exif: Option<&[u8]>,
    mut out: W,
) -> Result<(), EncodeError> {
    let expanded;
    let (pixels, layout) = match image.channels {
        1 => {
            expanded = image.data.iter().flat_map(|&g| [g, g, g]).collect::<Vec<u8>>();
            (&expanded[..], webp::PixelLayout::Rgb)
        }
        3 => (&image.data[..], webp::PixelLayout::Rgb),
        4 => (&image.data[..], webp::PixelLayout::Rgba),
        n => return Err(EncodeError::InvalidImage(format!("{n} channels"))),
    };
    let mut config = webp::WebPConfig::new().map_err(|()| EncodeError::Codec("libwebp config init failed".into()))?;
    config.lossless = i32::from(lossless);
    config.quality = if lossless { LOSSLESS_EFFORT } else { f32::from(quality) };
    config.method = METHOD;
    // Keep the colour under fully transparent pixels, so lossless really decodes to the submitted samples.
    config.exact = i32::from(lossless);
    let encoded = webp::Encoder::new(pixels, layout, image.width, image.height)
        .encode_advanced(&config)
        .map_err(|e| EncodeError::Codec(format!("libwebp: {e:?}")))?;
    let riff = match exif {
        Some(exif) => with_exif(&encoded, image, exif)?,
        None => encoded.to_vec(),
    };
    out.write_all(&riff)?;
    Ok(())
}

/// Rebuilds libwebp's RIFF container with a VP8X header whose EXIF flag is set and an EXIF chunk at the end.
fn with_exif(riff: &[u8], image: &Image8, exif: &[u8]) -> Result<Vec<u8>, EncodeError> {
    const EXIF_FLAG: u8 = 0x08;
    const ALPHA_FLAG: u8 = 0x10;
    if riff.len() < 12 || &riff[..4] != b"RIFF" || &riff[8..12] != b"WEBP" {
        return Err(EncodeError::Codec("libwebp returned no RIFF/WEBP container".into()));
    }
    let mut chunks = Vec::new();
    let mut vp8x: Option<[u8; 10]> = None;
    let mut at = 12;
    while at + 8 <= riff.len() {
        let id = &riff[at..at + 4];
        let len = u32::from_le_bytes(riff[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let end = at + 8 + len;
        if end > riff.len() {
            return Err(EncodeError::Codec("libwebp returned a truncated chunk".into()));
        }
        if id == b"VP8X" && len == 10 {
            vp8x = Some(riff[at + 8..end].try_into().expect("10 bytes"));
        } else {
            chunks.extend_from_slice(&riff[at..end + (len & 1)]);
        }
        at = end + (len & 1);
    }
    let mut header = vp8x.unwrap_or_else(|| {
        let mut h = [0u8; 10];
        h[4..7].copy_from_slice(&(image.width - 1).to_le_bytes()[..3]);
        h[7..10].copy_from_slice(&(image.height - 1).to_le_bytes()[..3]);
        if image.channels == 4 {
            h[0] |= ALPHA_FLAG;
        }
        h
    });
    header[0] |= EXIF_FLAG;
    let mut body = b"WEBP".to_vec();
    push_chunk(&mut body, b"VP8X", &header);
    body.extend_from_slice(&chunks);
    push_chunk(&mut body, b"EXIF", exif);
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    Ok(out)
}

fn push_chunk(out: &mut Vec<u8>, id: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(id);
    out.extend((data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}
