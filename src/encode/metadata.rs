//! What gets embedded, and how: PNG tEXt chunks in the node's order, and the EXIF block WebP and JPEG carry
//! (big-endian TIFF, IFD0 ASCII tags 0x0110 `prompt:<json>`, 0x010F `<first extra key>:<json>` counting down,
//! plus an Exif sub-IFD with a UserComment summary), the layout ComfyUI's frontend reads back.

/// Everything embedded in one image. JSON values arrive already serialised (`json.dumps` text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// `json.dumps(prompt)`.
    pub prompt: Option<String>,
    /// `(key, json.dumps(value))` for each extra_pnginfo key, in order.
    pub extra: Vec<(String, String)>,
    /// `json.dumps(metadata)`.
    pub generation_metadata: Option<String>,
    /// `(key, str(value))` per metadata key.
    pub generation_fields: Vec<(String, String)>,
    /// Free text (only when there is no metadata dict).
    pub custom_metadata: Option<String>,
    /// The slot's affix.
    pub image_type: String,
    /// Parsed model name.
    pub model_name: String,
    /// Parsed model path.
    pub model_path: String,
    /// `YYYY_mm_dd_HHMMSS` of the node's run.
    pub save_timestamp: String,
    /// Position in the batch.
    pub batch_index: u32,
}

impl Metadata {
    /// PNG text chunks in order: prompt, extra keys, `generation_metadata` + `gen_<key>` (or `custom_metadata`),
    /// image_type, model_name, model_path, save_timestamp, batch_index.
    pub fn png_text(&self) -> Vec<(String, String)> {
        let mut t = Vec::new();
        if let Some(p) = &self.prompt {
            t.push(("prompt".to_owned(), p.clone()));
        }
        t.extend(self.extra.iter().cloned());
        if let Some(g) = &self.generation_metadata {
            t.push(("generation_metadata".to_owned(), g.clone()));
            t.extend(self.generation_fields.iter().map(|(k, v)| (format!("gen_{k}"), v.clone())));
        } else if let Some(c) = self.custom_metadata.as_ref().filter(|c| !c.is_empty()) {
            t.push(("custom_metadata".to_owned(), c.clone()));
        }
        t.push(("image_type".to_owned(), self.image_type.clone()));
        t.push(("model_name".to_owned(), self.model_name.clone()));
        t.push(("model_path".to_owned(), self.model_path.clone()));
        t.push(("save_timestamp".to_owned(), self.save_timestamp.clone()));
        t.push(("batch_index".to_owned(), self.batch_index.to_string()));
        t
    }

    /// The UserComment summary: `Image Type: …, Model: …, Model Path: …, Timestamp: …, Batch: …` plus
    /// `, Generation Metadata: <json>` or `, Custom: <text>`.
    pub fn user_comment(&self) -> String {
        let mut s = format!(
            "Image Type: {}, Model: {}, Model Path: {}, Timestamp: {}, Batch: {}",
            self.image_type, self.model_name, self.model_path, self.save_timestamp, self.batch_index
        );
        if let Some(g) = &self.generation_metadata {
            s.push_str(&format!(", Generation Metadata: {g}"));
        } else if let Some(c) = self.custom_metadata.as_ref().filter(|c| !c.is_empty()) {
            s.push_str(&format!(", Custom: {c}"));
        }
        s
    }

    /// The EXIF block (TIFF bytes, without the JPEG `Exif\0\0` prefix), leaving out `prompt` when
    /// `with_prompt` is false and the extra keys named in `without`.
    pub fn exif(&self, with_prompt: bool, without: &[&str]) -> Vec<u8> {
        const PROMPT_TAG: u16 = 0x0110;
        const FIRST_EXTRA_TAG: u16 = 0x010F;
        let mut ascii: Vec<(u16, String)> = Vec::new();
        if let (true, Some(p)) = (with_prompt, &self.prompt) {
            ascii.push((PROMPT_TAG, format!("prompt:{p}")));
        }
        for (i, (key, value)) in self.extra.iter().enumerate() {
            if !without.contains(&key.as_str()) {
                ascii.push((FIRST_EXTRA_TAG.wrapping_sub(i as u16), format!("{key}:{value}")));
            }
        }
        let mut comment = b"UNICODE\0".to_vec();
        comment.extend(self.user_comment().encode_utf16().flat_map(u16::to_be_bytes));
        tiff(&ascii, &comment)
    }
}

/// Tag numbers and types used below.
const EXIF_IFD_POINTER: u16 = 0x8769;
const USER_COMMENT: u16 = 0x9286;
const ASCII: u16 = 2;
const LONG: u16 = 4;
const UNDEFINED: u16 = 7;

/// A big-endian TIFF with IFD0 = the ASCII entries (sorted by tag) plus the Exif IFD pointer, and an Exif IFD
/// holding the UserComment. Values longer than 4 bytes live after the IFDs at even offsets.
fn tiff(ascii: &[(u16, String)], user_comment: &[u8]) -> Vec<u8> {
    let mut entries: Vec<(u16, u16, Vec<u8>)> = ascii
        .iter()
        .map(|(tag, text)| {
            let mut bytes = text.as_bytes().to_vec();
            bytes.push(0);
            (*tag, ASCII, bytes)
        })
        .collect();
    entries.sort_by_key(|e| e.0);
    let ifd0_len = 2 + 12 * (entries.len() + 1) + 4;
    let exif_ifd_len = 2 + 12 + 4;
    let exif_ifd_offset = 8 + ifd0_len;
    let mut data_offset = exif_ifd_offset + exif_ifd_len;
    let mut out = b"MM\0*".to_vec();
    out.extend(8u32.to_be_bytes());
    let mut data = Vec::new();
    let mut entry = |out: &mut Vec<u8>, tag: u16, typ: u16, bytes: &[u8]| {
        out.extend(tag.to_be_bytes());
        out.extend(typ.to_be_bytes());
        out.extend((bytes.len() as u32).to_be_bytes());
        if bytes.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..bytes.len()].copy_from_slice(bytes);
            out.extend(inline);
        } else {
            out.extend((data_offset as u32).to_be_bytes());
            data.extend_from_slice(bytes);
            if bytes.len() % 2 == 1 {
                data.push(0);
            }
            data_offset += bytes.len().next_multiple_of(2);
        }
    };
    out.extend(((entries.len() + 1) as u16).to_be_bytes());
    for (tag, typ, bytes) in &entries {
        entry(&mut out, *tag, *typ, bytes);
    }
    // The Exif IFD pointer is a LONG count 1 whose value is the offset itself.
    out.extend(EXIF_IFD_POINTER.to_be_bytes());
    out.extend(LONG.to_be_bytes());
    out.extend(1u32.to_be_bytes());
    out.extend((exif_ifd_offset as u32).to_be_bytes());
    out.extend(0u32.to_be_bytes());
    out.extend(1u16.to_be_bytes());
    entry(&mut out, USER_COMMENT, UNDEFINED, user_comment);
    out.extend(0u32.to_be_bytes());
    out.extend(data);
    out
}

/// Largest JPEG APP1 payload (`Exif\0\0` + TIFF): the segment length field is 16 bits and counts itself.
pub const MAX_APP1_PAYLOAD: usize = 65_533;

/// The APP1 payload for a JPEG, dropping `prompt`, then `workflow`, then the other extra keys until it fits.
/// Returns the payload (None if even the summary alone does not fit) and a note per dropped item.
pub fn jpeg_app1(meta: &Metadata) -> (Option<Vec<u8>>, Vec<String>) {
    let mut notes = Vec::new();
    let mut with_prompt = true;
    let mut without: Vec<&str> = Vec::new();
    let mut droppable: Vec<&str> = Vec::new();
    if meta.extra.iter().any(|(k, _)| k == "workflow") {
        droppable.push("workflow");
    }
    droppable.extend(meta.extra.iter().map(|(k, _)| k.as_str()).filter(|k| *k != "workflow"));
    loop {
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend(meta.exif(with_prompt, &without));
        if payload.len() <= MAX_APP1_PAYLOAD {
            return (Some(payload), notes);
        }
        if with_prompt && meta.prompt.is_some() {
            with_prompt = false;
            notes.push("prompt left out of the JPEG metadata: it does not fit the 64 KiB EXIF segment".to_owned());
        } else if let Some(key) = droppable.first().copied() {
            droppable.remove(0);
            without.push(key);
            notes.push(format!("{key} left out of the JPEG metadata: it does not fit the 64 KiB EXIF segment"));
        } else {
            notes.push("no metadata embedded: even the summary does not fit the 64 KiB EXIF segment".to_owned());
            return (None, notes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        Metadata {
            prompt: Some("{\"1\": {}}".to_owned()),
            extra: vec![
                ("workflow".to_owned(), "{\"nodes\": []}".to_owned()),
                ("luna_extra".to_owned(), "1".to_owned()),
            ],
            custom_metadata: Some("hello".to_owned()),
            image_type: "ORIG".to_owned(),
            model_name: "foo".to_owned(),
            model_path: "a/foo".to_owned(),
            save_timestamp: "2025_01_02_030405".to_owned(),
            batch_index: 1,
            ..Metadata::default()
        }
    }

    #[test]
    fn png_text_is_in_the_node_order() {
        let keys: Vec<String> = sample().png_text().into_iter().map(|(k, _)| k).collect();
        let expected = [
            "prompt",
            "workflow",
            "luna_extra",
            "custom_metadata",
            "image_type",
            "model_name",
            "model_path",
            "save_timestamp",
            "batch_index",
        ];
        assert_eq!(keys, expected);
    }

    #[test]
    fn exif_ifd0_holds_prompt_and_extras_under_comfyui_tags() {
        let exif = sample().exif(true, &[]);
        assert_eq!(&exif[..8], b"MM\0*\0\0\0\x08");
        let count = u16::from_be_bytes([exif[8], exif[9]]);
        let tags: Vec<u16> =
            (0..count as usize).map(|i| u16::from_be_bytes([exif[10 + 12 * i], exif[11 + 12 * i]])).collect();
        assert_eq!(tags, [0x010E, 0x010F, 0x0110, 0x8769]);
        let text = String::from_utf8_lossy(&exif);
        assert!(text.contains("prompt:{\"1\": {}}\0"));
        assert!(text.contains("workflow:{\"nodes\": []}\0"));
    }

    #[test]
    fn oversized_jpeg_metadata_drops_prompt_then_workflow() {
        let mut meta = sample();
        meta.prompt = Some(format!("\"{}\"", "p".repeat(40_000)));
        meta.extra[0].1 = format!("\"{}\"", "w".repeat(40_000));
        let (payload, notes) = jpeg_app1(&meta);
        let payload = payload.unwrap();
        assert!(payload.len() <= MAX_APP1_PAYLOAD);
        let text = String::from_utf8_lossy(&payload);
        assert!(!text.contains("prompt:") && text.contains("workflow:"), "only the prompt had to go");
        assert_eq!(notes.len(), 1);
        meta.extra[0].1 = format!("\"{}\"", "w".repeat(70_000));
        let (payload, notes) = jpeg_app1(&meta);
        assert!(!String::from_utf8_lossy(&payload.unwrap()).contains("workflow:"));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
