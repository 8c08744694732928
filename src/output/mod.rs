//! Where files go and how they get there: confinement of every path to the job's output root, and atomic,
//! never-overwriting writes (temp file in the target directory, fsync, no-clobber rename, directory fsync).

mod confine;
mod dirs;
mod template;
mod winname;
mod write;

pub use confine::{OutputError, check_sub_path, resolve_dir, validate_stem};
pub use dirs::OutputDirs;
pub use template::{ModelInfo, TemplateContext, expand, save_timestamp};
pub use write::{TEMP_PREFIX, TEMP_SUFFIX, Written, write_new_file};
