//! Property tests over the decoders a hostile peer reaches: frames, messages and descriptor geometry.
//! (cargo-fuzz needs a nightly toolchain; proptest runs on stable, in the normal test run.)

use luna_daemon::protocol::{self, FrameError, MAX_FRAME_LEN, Request, Response};
use luna_daemon::shm::{HEADER_LEN, Layout, LayoutError};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any byte stream either yields frames within the cap or a typed error; it never panics or over-allocates.
    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut input = bytes.as_slice();
        match protocol::read_frame(&mut input) {
            Ok(body) => prop_assert!(body.len() <= MAX_FRAME_LEN as usize),
            Err(FrameError::TooLarge { len, .. }) => prop_assert!(len > u64::from(MAX_FRAME_LEN)),
            Err(_) => {}
        }
    }

    /// Arbitrary message bodies decode to a message or a typed error, never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = protocol::decode_message::<Request>(&body);
        let _ = protocol::decode_message::<Response>(&body);
    }

    /// Whatever the fields, a layout that validates lies inside its segment, after the header, and its rows fit.
    #[test]
    fn valid_layouts_are_inside_their_segment(
        offset in any::<u64>(), length in any::<u64>(), width in any::<u32>(), height in any::<u32>(),
        channels in any::<u8>(), sample in prop_oneof![Just(1u64), Just(2), Just(4), Just(3)],
        row_stride in any::<u64>(), segment_len in any::<u64>(),
    ) {
        let layout = Layout { offset, length, width, height, channels, sample_size: sample, row_stride };
        match layout.validate(segment_len) {
            Ok(()) => {
                prop_assert!(offset >= HEADER_LEN);
                let end = offset.checked_add(length).expect("validated ranges do not overflow");
                prop_assert!(end <= segment_len);
                let rows = u128::from(row_stride) * u128::from(height - 1) + u128::from(layout.row_bytes());
                prop_assert!(rows <= u128::from(length));
            }
            Err(LayoutError::Invalid(msg)) => prop_assert!(!msg.is_empty()),
            Err(LayoutError::OutOfBounds { .. }) => {}
        }
    }

    /// Small realistic layouts: exactly the ones whose rows fit are accepted.
    #[test]
    fn small_layouts_are_accepted_iff_they_fit(
        width in 1u32..50, height in 1u32..50, channels in prop_oneof![Just(1u8), Just(3), Just(4)],
        pad in 0u64..16, extra in 0u64..64, shrink in 0u64..2,
    ) {
        let row = u64::from(width) * u64::from(channels) * 4;
        let stride = row + pad * 4;
        let needed = stride * u64::from(height - 1) + row;
        let layout = Layout {
            offset: HEADER_LEN, length: needed, width, height, channels, sample_size: 4, row_stride: stride,
        };
        let segment_len = HEADER_LEN + needed + extra - shrink.min(extra + needed);
        let fits = HEADER_LEN + needed <= segment_len;
        prop_assert_eq!(layout.validate(segment_len).is_ok(), fits);
    }
}
