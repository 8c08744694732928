//! Where files go and how they get there: confinement of every path to the job's output root, and atomic,
//! never-overwriting writes (temp file in the target directory, fsync, no-clobber rename, directory fsync).

mod archive;
mod confine;
mod dir;
mod dirs;
mod template;
mod winname;
mod write;

pub use archive::{ArchiveError, ArchiveItem, ArchiveUpdate, entry_name, update_archive};
pub use confine::{MAX_NAME_BYTES, OutputError, check_file_name_fits, check_sub_path, resolve_dir, validate_stem};
pub use dir::OutputDir;
pub use dirs::OutputDirs;
pub use template::{ModelInfo, TemplateContext, expand, save_timestamp};
pub use write::{
    PendingFile, TEMP_PREFIX, TEMP_SUFFIX, TempOwner, Written, is_temp_name, write_new_file, write_new_file_in,
};
