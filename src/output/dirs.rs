//! The set of output directories the daemon writes into, for the janitor's temp-file sweeps. With a state
//! directory it is also kept on disk (`<state>/output-dirs`, one path per line, appended and synced the first
//! time a directory is used, before any temp file is created in it), so a restarted daemon knows every
//! directory a killed one may have left temp files in.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Directories written into. Bounded, so a client cycling through endless folders cannot grow it forever.
#[derive(Debug, Default)]
pub struct OutputDirs {
    dirs: Mutex<HashSet<PathBuf>>,
    record: Option<Mutex<File>>,
}

/// Most output directories remembered.
const MAX_DIRS: usize = 10_000;

/// The file in the state directory.
pub const OUTPUT_DIRS_FILE: &str = "output-dirs";

impl OutputDirs {
    /// Loads the directories a previous run recorded in `state_dir` (those that still exist), rewrites the
    /// record with just them, and keeps recording there.
    pub fn persistent(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join(OUTPUT_DIRS_FILE);
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let dirs: HashSet<PathBuf> =
            text.lines().filter(|l| !l.is_empty()).map(PathBuf::from).filter(|d| d.is_dir()).take(MAX_DIRS).collect();
        let temp = state_dir.join(format!("{OUTPUT_DIRS_FILE}.new"));
        let mut file = File::create(&temp)?;
        for dir in &dirs {
            writeln!(file, "{}", dir.display())?;
        }
        file.sync_data()?;
        std::fs::rename(&temp, &path)?;
        let file = File::options().append(true).open(&path)?;
        Ok(Self { dirs: Mutex::new(dirs), record: Some(Mutex::new(file)) })
    }

    /// Remembers a directory (ignored once the set is full); a new one is recorded durably first.
    pub fn record(&self, dir: &Path) {
        let mut dirs = self.dirs.lock();
        if dirs.len() >= MAX_DIRS || dirs.contains(dir) {
            return;
        }
        if let Some(record) = &self.record
            && dir.to_str().is_some_and(|d| !d.contains('\n'))
        {
            let mut file = record.lock();
            let written = writeln!(file, "{}", dir.display()).and_then(|()| file.sync_data());
            if let Err(e) = written {
                tracing::warn!("could not record output directory {}: {e}", dir.display());
            }
        }
        dirs.insert(dir.to_path_buf());
    }

    /// The directories remembered so far.
    pub fn snapshot(&self) -> Vec<PathBuf> {
        self.dirs.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_daemon_knows_the_directories_of_the_last_run() {
        let state = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let (a, b) = (out.path().join("a"), out.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        {
            let dirs = OutputDirs::persistent(state.path()).unwrap();
            dirs.record(&a);
            dirs.record(&b);
            dirs.record(&a);
        }
        std::fs::remove_dir(&b).unwrap();
        let dirs = OutputDirs::persistent(state.path()).unwrap();
        assert_eq!(dirs.snapshot(), vec![a.clone()], "a directory that is gone is forgotten");
        let text = std::fs::read_to_string(state.path().join(OUTPUT_DIRS_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", a.display()));
    }
}
