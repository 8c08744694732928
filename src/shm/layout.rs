//! Where an image's pixels lie inside a segment, and the overflow-checked validation of that against the
//! segment's real size, done before a single pixel byte is read.

use super::HEADER_LEN;

/// Largest width or height accepted (PNG allows more; no diffusion output comes near this).
pub const MAX_DIMENSION: u32 = 65_535;
/// Largest image accepted, in bytes of 8-bit output (`width * height * channels`): 1 GiB, 16k x 16k RGBA.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// The geometry of one image inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Byte offset of the first pixel from the start of the segment.
    pub offset: u64,
    /// Bytes the descriptor claims, starting at `offset`.
    pub length: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Samples per pixel: 1, 3 or 4.
    pub channels: u8,
    /// Bytes per sample: 1, 2 or 4.
    pub sample_size: u64,
    /// Bytes from one row's start to the next row's start.
    pub row_stride: u64,
}

/// Why a layout does not fit its segment. Each message names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A field is outside its allowed range or inconsistent with another.
    #[error("invalid descriptor: {0}")]
    Invalid(String),
    /// The addressed bytes reach past the end of the segment.
    #[error("descriptor reaches past its segment: bytes {start}..{end} requested, segment is {segment_len} bytes")]
    OutOfBounds { start: u64, end: u64, segment_len: u64 },
}

impl Layout {
    /// Bytes of pixel data in one row (without stride padding).
    pub fn row_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(self.channels) * self.sample_size
    }

    /// Checks every field, with overflow-checked arithmetic, against a segment of `segment_len` bytes.
    pub fn validate(&self, segment_len: u64) -> Result<(), LayoutError> {
        let invalid = |msg: String| Err(LayoutError::Invalid(msg));
        if !(1..=MAX_DIMENSION).contains(&self.width) {
            return invalid(format!("width {} is outside 1..={MAX_DIMENSION}", self.width));
        }
        if !(1..=MAX_DIMENSION).contains(&self.height) {
            return invalid(format!("height {} is outside 1..={MAX_DIMENSION}", self.height));
        }
        if !matches!(self.channels, 1 | 3 | 4) {
            return invalid(format!("channels {} is not 1 (gray), 3 (RGB) or 4 (RGBA)", self.channels));
        }
        if !matches!(self.sample_size, 1 | 2 | 4) {
            return invalid(format!("sample size {} is not 1, 2 or 4 bytes", self.sample_size));
        }
        if self.offset < HEADER_LEN {
            return invalid(format!("offset {} overlaps the {HEADER_LEN}-byte segment header", self.offset));
        }
        if !self.offset.is_multiple_of(self.sample_size) || !self.row_stride.is_multiple_of(self.sample_size) {
            return invalid(format!(
                "offset {} and row_stride {} must be multiples of the {}-byte sample size",
                self.offset, self.row_stride, self.sample_size
            ));
        }
        let pixels = u64::from(self.width) * u64::from(self.height) * u64::from(self.channels);
        if pixels > MAX_IMAGE_BYTES {
            return invalid(format!(
                "{}x{}x{} is {pixels} bytes at 8 bits, more than the {MAX_IMAGE_BYTES}-byte limit",
                self.width, self.height, self.channels
            ));
        }
        let row_bytes = self.row_bytes();
        if self.row_stride < row_bytes {
            return invalid(format!("row_stride {} is smaller than a row of {row_bytes} bytes", self.row_stride));
        }
        let needed = self
            .row_stride
            .checked_mul(u64::from(self.height - 1))
            .and_then(|n| n.checked_add(row_bytes))
            .ok_or_else(|| LayoutError::Invalid("row_stride * height overflows".to_owned()))?;
        if self.length < needed {
            return invalid(format!("length {} is smaller than the {needed} bytes the rows need", self.length));
        }
        // At most whole strides: a padded length could make the daemon read (and hash) a huge sparse range.
        let most = self.row_stride.saturating_mul(u64::from(self.height));
        if self.length > most {
            return invalid(format!("length {} is more than row_stride * height = {most}", self.length));
        }
        let end = self.offset.checked_add(self.length).ok_or(LayoutError::OutOfBounds {
            start: self.offset,
            end: u64::MAX,
            segment_len,
        })?;
        if end > segment_len {
            return Err(LayoutError::OutOfBounds { start: self.offset, end, segment_len });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb_f32(width: u32, height: u32) -> Layout {
        let row = u64::from(width) * 12;
        Layout {
            offset: HEADER_LEN,
            length: row * u64::from(height),
            width,
            height,
            channels: 3,
            sample_size: 4,
            row_stride: row,
        }
    }

    #[test]
    fn a_tight_layout_fits_exactly() {
        let l = rgb_f32(4, 2);
        assert!(l.validate(HEADER_LEN + 96).is_ok());
        assert_eq!(
            l.validate(HEADER_LEN + 95),
            Err(LayoutError::OutOfBounds { start: 64, end: 160, segment_len: 159 })
        );
    }

    #[test]
    fn hostile_fields_are_refused_without_overflow() {
        let base = rgb_f32(4, 2);
        let cases = [
            (Layout { width: 0, ..base }, "width 0"),
            (Layout { height: 70_000, ..base }, "height 70000"),
            (Layout { channels: 2, ..base }, "channels 2"),
            (Layout { offset: 0, ..base }, "overlaps"),
            (Layout { offset: 66, ..base }, "multiples"),
            (Layout { row_stride: 8, ..base }, "row_stride 8"),
            (Layout { length: 10, ..base }, "length 10"),
            (Layout { row_stride: u64::MAX - 3, ..base }, "overflows"),
            (Layout { length: 1 << 40, ..base }, "more than row_stride * height"),
            (Layout { width: 65_535, height: 65_535, ..base }, "more than the 1073741824-byte limit"),
        ];
        for (layout, needle) in cases {
            let err = layout.validate(u64::MAX).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        let huge_offset = Layout { offset: u64::MAX - 3, ..base };
        assert!(matches!(huge_offset.validate(1 << 40), Err(LayoutError::OutOfBounds { .. })));
    }
}
