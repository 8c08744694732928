//! Pure encoding: sample conversion to 8 bits, and pixels + options to image bytes through any `Write`.
//! No sockets, no shared memory, no file names: the caller hands in rows and a writer.

mod pixels;
mod png_encoder;

pub use pixels::{Image8, SampleFormat, convert_row};
pub use png_encoder::{EncodeError, PngOptions, encode_png};
