//! The set of output directories the daemon wrote into during this run, for the janitor's temp-file sweep.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Directories written into. Bounded, so a client cycling through endless folders cannot grow it forever.
#[derive(Debug, Default)]
pub struct OutputDirs {
    dirs: Mutex<HashSet<PathBuf>>,
}

/// Most output directories remembered.
const MAX_DIRS: usize = 10_000;

impl OutputDirs {
    /// Remembers a directory (ignored once the set is full).
    pub fn record(&self, dir: &Path) {
        let mut dirs = self.dirs.lock();
        if dirs.len() < MAX_DIRS && !dirs.contains(dir) {
            dirs.insert(dir.to_path_buf());
        }
    }

    /// The directories remembered so far.
    pub fn snapshot(&self) -> Vec<PathBuf> {
        self.dirs.lock().iter().cloned().collect()
    }
}
