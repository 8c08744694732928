//! WebP through libwebp (the encoder PIL uses, so sizes match what users get from ComfyUI), lossy at a quality
//! or lossless, with an optional EXIF chunk placed right after the VP8X header, before the image data (VP8X,
//! EXIF, ALPH/VP8/VP8L).
//!
//! PIL puts EXIF after the image data; the container spec allows either ("Metadata and unknown chunks MAY appear
//! out of order", RFC 9649 section 2.7). Before the image is the place every reader finds it: ComfyUI's frontend
//! up to at least 1.27 walks chunks without skipping the RIFF padding byte, so after an odd-sized image chunk
//! (lossless WebP, half of the time; an ALPH chunk too) it never reached the EXIF chunk and restored nothing.

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

/// Rebuilds libwebp's RIFF container with a VP8X header whose EXIF flag is set, then the EXIF chunk, then the
/// image chunks (see the module docs for why EXIF comes first).
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
    push_chunk(&mut body, b"EXIF", exif);
    body.extend_from_slice(&chunks);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(fourcc, size)` of every chunk, with the RIFF padding byte after odd-sized chunks skipped.
    fn chunks(riff: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut at = 12;
        while at + 8 <= riff.len() {
            let len = u32::from_le_bytes(riff[at + 4..at + 8].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&riff[at..at + 4]).into_owned(), len));
            at += 8 + len + (len & 1);
        }
        assert_eq!(at, riff.len(), "chunks fill the file exactly");
        out
    }

    /// Whether ComfyUI frontend 1.27's `getWebpMetadata` reaches the EXIF chunk: it walks `8 + size` per chunk,
    /// never skipping a padding byte.
    fn frontend_1_27_finds_exif(riff: &[u8]) -> bool {
        let mut at = 12;
        while at + 8 <= riff.len() {
            if &riff[at..at + 4] == b"EXIF" {
                return true;
            }
            at += 8 + u32::from_le_bytes(riff[at + 4..at + 8].try_into().unwrap()) as usize;
        }
        false
    }

    fn noise(width: u32, height: u32, channels: u8, seed: u32) -> Image8 {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let data = (0..width * height * u32::from(channels))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        Image8 { width, height, channels, data }
    }

    #[test]
    fn exif_comes_right_after_vp8x_so_frontend_1_27_finds_it_after_an_odd_sized_image_chunk() {
        // Regression (issue 13): after an odd-sized VP8L chunk the frontend restored nothing from our files.
        let exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\0\0"; // odd length too
        let mut odd_image_chunks = 0;
        for (seed, (lossless, channels)) in
            [(true, 3), (true, 4), (false, 4), (false, 3)].into_iter().cycle().take(16).enumerate()
        {
            let image = noise(17 + seed as u32, 13, channels, seed as u32);
            let mut out = Vec::new();
            encode_webp(&image, lossless, 90, Some(exif), &mut out).unwrap();
            let list = chunks(&out);
            let names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names[..2], ["VP8X", "EXIF"], "{list:?}");
            assert!(names[2..].iter().all(|n| ["ALPH", "VP8 ", "VP8L"].contains(n)), "{list:?}");
            odd_image_chunks += list[2..].iter().filter(|(_, len)| len % 2 == 1).count();
            assert!(frontend_1_27_finds_exif(&out), "{list:?}");
            // libwebp reads the file (its decoder skips metadata before the image data) to the same pixels.
            let decoded = webp::Decoder::new(&out).decode().expect("libwebp decodes it");
            assert_eq!((decoded.width(), decoded.height()), (image.width, image.height));
            if lossless {
                assert_eq!(&*decoded, &image.data[..], "lossless pixels");
            }
        }
        assert!(odd_image_chunks > 0, "the sizes tried gave no odd-sized image chunk: the test proves nothing");
    }
}
