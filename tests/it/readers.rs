//! Metadata readers written independently of the daemon's writers, the way ComfyUI reads files back:
//! PNG text chunks in order, and for WebP, JPEG and JPEG XL the first EXIF block's IFD0 ASCII entries split at
//! the first colon (ComfyUI's frontend), plus the Exif UserComment.

use std::collections::BTreeMap;

/// `(keyword, text)` of every tEXt / iTXt chunk, in file order.
pub fn png_text(bytes: &[u8]) -> Vec<(String, String)> {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let mut out = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        match kind {
            b"tEXt" => {
                let nul = data.iter().position(|&b| b == 0).unwrap();
                let latin1 = |b: &[u8]| b.iter().map(|&c| char::from(c)).collect::<String>();
                out.push((latin1(&data[..nul]), latin1(&data[nul + 1..])));
            }
            b"iTXt" => {
                let nul = data.iter().position(|&b| b == 0).unwrap();
                let key = String::from_utf8(data[..nul].to_vec()).unwrap();
                assert_eq!(data[nul + 1], 0, "compressed iTXt not expected");
                let rest = &data[nul + 3..];
                let lang_end = rest.iter().position(|&b| b == 0).unwrap();
                let rest = &rest[lang_end + 1..];
                let tkey_end = rest.iter().position(|&b| b == 0).unwrap();
                out.push((key, String::from_utf8(rest[tkey_end + 1..].to_vec()).unwrap()));
            }
            _ => {}
        }
        at += 12 + len;
    }
    out
}

/// The TIFF bytes of a WebP's first EXIF chunk (a leading `Exif\0\0` is skipped, as ComfyUI does).
pub fn webp_exif(bytes: &[u8]) -> Option<Vec<u8>> {
    assert!(&bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if &bytes[at..at + 4] == b"EXIF" {
            let data = &bytes[at + 8..at + 8 + len];
            return Some(data.strip_prefix(b"Exif\0\0").unwrap_or(data).to_vec());
        }
        at += 8 + len + (len & 1);
    }
    None
}

/// The TIFF bytes of a JPEG XL container's first `Exif` box (ISO/IEC 18181-2: a 4-byte big-endian offset to the
/// TIFF header, then the TIFF), with every box's size checked to end inside the file. `None` for a bare
/// codestream or a container without one.
pub fn jxl_exif(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(b"\xff\x0a") {
        return None;
    }
    assert_eq!(&bytes[..12], b"\0\0\0\x0cJXL \r\n\x87\n", "JPEG XL container signature");
    let mut at = 0;
    let mut found = None;
    while at < bytes.len() {
        let mut len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
        let mut header = 8;
        if len == 1 {
            len = u64::from_be_bytes(bytes[at + 8..at + 16].try_into().unwrap());
            header = 16;
        }
        let len = if len == 0 { (bytes.len() - at) as u64 } else { len } as usize;
        assert!(at + len <= bytes.len(), "box at {at} runs past the end");
        if &bytes[at + 4..at + 8] == b"Exif" && found.is_none() {
            let data = &bytes[at + header..at + len];
            let offset = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            found = Some(data[4 + offset..].to_vec());
        }
        at += len;
    }
    found
}

/// The TIFF bytes of a JPEG's APP1 Exif segment.
pub fn jpeg_exif(bytes: &[u8]) -> Option<Vec<u8>> {
    assert_eq!(&bytes[..2], b"\xff\xd8");
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xff {
        let marker = bytes[at + 1];
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let data = &bytes[at + 4..at + 2 + len];
        if marker == 0xe1 && data.starts_with(b"Exif\0\0") {
            return Some(data[6..].to_vec());
        }
        if marker == 0xda {
            break;
        }
        at += 2 + len;
    }
    None
}

struct Tiff<'a> {
    b: &'a [u8],
    big: bool,
}

impl Tiff<'_> {
    fn u16(&self, at: usize) -> u16 {
        let v = [self.b[at], self.b[at + 1]];
        if self.big { u16::from_be_bytes(v) } else { u16::from_le_bytes(v) }
    }
    fn u32(&self, at: usize) -> u32 {
        let v: [u8; 4] = self.b[at..at + 4].try_into().unwrap();
        if self.big { u32::from_be_bytes(v) } else { u32::from_le_bytes(v) }
    }
    /// (tag, type, count, value bytes) of each entry of the IFD at `offset`.
    fn ifd(&self, offset: usize) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let n = self.u16(offset) as usize;
        (0..n)
            .map(|i| {
                let e = offset + 2 + 12 * i;
                let (tag, typ, count) = (self.u16(e), self.u16(e + 2), self.u32(e + 4));
                let size = count as usize
                    * match typ {
                        3 => 2,
                        4 => 4,
                        _ => 1,
                    };
                let at = if size <= 4 { e + 8 } else { self.u32(e + 8) as usize };
                (tag, typ, count, self.b[at..at + size].to_vec())
            })
            .collect()
    }
}

fn tiff(bytes: &[u8]) -> Tiff<'_> {
    let big = match &bytes[..4] {
        b"MM\0*" => true,
        b"II*\0" => false,
        other => panic!("not a TIFF header: {other:?}"),
    };
    Tiff { b: bytes, big }
}

/// IFD0 ASCII entries as ComfyUI's frontend reads them: split at the first ':' into key and value.
pub fn exif_ascii_entries(exif: &[u8]) -> BTreeMap<String, String> {
    let t = tiff(exif);
    let ifd0 = t.u32(4) as usize;
    t.ifd(ifd0)
        .into_iter()
        .filter(|e| e.1 == 2)
        .map(|(_, _, _, v)| {
            let text = String::from_utf8(v.strip_suffix(b"\0").unwrap_or(&v).to_vec()).unwrap();
            let (k, v) = text.split_once(':').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The Exif UserComment text (charset prefix `UNICODE\0` with UTF-16 in the TIFF's byte order, or `ASCII\0\0\0`).
pub fn exif_user_comment(exif: &[u8]) -> Option<String> {
    let t = tiff(exif);
    let ifd0 = t.u32(4) as usize;
    let pointer = t.ifd(ifd0).into_iter().find(|e| e.0 == 0x8769)?;
    let exif_ifd = if t.big {
        u32::from_be_bytes(pointer.3[..4].try_into().unwrap())
    } else {
        u32::from_le_bytes(pointer.3[..4].try_into().unwrap())
    } as usize;
    let (_, _, _, v) = t.ifd(exif_ifd).into_iter().find(|e| e.0 == 0x9286)?;
    let (charset, text) = v.split_at(8);
    match charset {
        b"UNICODE\0" => {
            let units: Vec<u16> = text
                .chunks_exact(2)
                .map(|c| if t.big { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) })
                .collect();
            Some(String::from_utf16(&units).unwrap())
        }
        _ => Some(String::from_utf8_lossy(text).into_owned()),
    }
}
