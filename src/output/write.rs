//! Atomic, never-overwriting file creation.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::OutputError;

/// A file that is now durably on disk under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The final path (with a counter suffix if the plain name was taken).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Temp files are named `<TEMP_PREFIX>…<TEMP_SUFFIX>` (hidden), so the janitor can find orphans.
pub const TEMP_PREFIX: &str = ".luna-";
/// See [`TEMP_PREFIX`].
pub const TEMP_SUFFIX: &str = ".tmp";

/// Highest counter suffix tried before giving up.
const MAX_COUNTER: u32 = 99_999;

/// Writes a new file `<stem>.<ext>` in `dir` (which must exist): the content goes to a hidden temp file in
/// `dir`, is flushed and fsynced, and is then renamed into place without ever replacing an existing file. If
/// the name is taken (by a file or by a racing writer), `<stem>_00001.<ext>`, `<stem>_00002.<ext>`, ... are
/// tried; each attempt is an atomic no-clobber rename, never an existence check. The directory is fsynced.
/// `fill` writes the content and returns a value that is handed back with the result; if it fails, nothing is
/// left behind and its error is returned inside `Ok`.
pub fn write_new_file<F, T, E>(
    dir: &Path,
    stem: &str,
    ext: &str,
    fill: F,
) -> Result<Result<(Written, T), E>, OutputError>
where
    F: FnOnce(&mut dyn Write) -> Result<T, E>,
{
    let write_err = |source| OutputError::Write { path: dir.join(format!("{stem}.{ext}")), source };
    let mut temp = temp_builder().tempfile_in(dir).map_err(write_err)?;
    let value = {
        let mut out = BufWriter::with_capacity(1 << 16, temp.as_file_mut());
        match fill(&mut out) {
            Ok(value) => {
                out.flush().map_err(write_err)?;
                value
            }
            Err(e) => return Ok(Err(e)),
        }
    };
    temp.as_file().sync_all().map_err(write_err)?;
    let bytes = temp.as_file().metadata().map_err(write_err)?.len();
    for counter in 0..=MAX_COUNTER {
        let name = match counter {
            0 => format!("{stem}.{ext}"),
            n => format!("{stem}_{n:05}.{ext}"),
        };
        let path = dir.join(name);
        match temp.persist_noclobber(&path) {
            Ok(_) => {
                sync_dir(dir).map_err(|source| OutputError::Write { path: path.clone(), source })?;
                return Ok(Ok((Written { path, bytes }, value)));
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => temp = e.file,
            Err(e) => return Err(OutputError::Write { path, source: e.error }),
        }
    }
    Err(OutputError::NamesExhausted(dir.join(format!("{stem}.{ext}"))))
}

/// Hidden temp files (`.luna-*.tmp`) so directory listings skip them; created with mode 0666 minus the umask,
/// like any file a user's program writes (tempfile's default 0600 would hide images from other users).
fn temp_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
}

/// Makes the directory entry durable (a no-op where directories cannot be opened, as on Windows).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, content: &[u8]) -> Written {
        write_new_file(dir, "img", "png", |w| w.write_all(content)).unwrap().unwrap().0
    }

    #[test]
    fn collisions_get_counter_suffixes_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), b"first");
        let b = write(dir.path(), b"second");
        let c = write(dir.path(), b"third");
        assert_eq!(a.path, dir.path().join("img.png"));
        assert_eq!(b.path, dir.path().join("img_00001.png"));
        assert_eq!(c.path, dir.path().join("img_00002.png"));
        assert_eq!(std::fs::read(&a.path).unwrap(), b"first");
        assert_eq!(b.bytes, 6);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failing_encoder_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let result = write_new_file(dir.path(), "img", "png", |_| Err::<(), _>("encoder broke")).unwrap();
        assert_eq!(result, Err("encoder broke"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn racing_writers_never_share_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8).map(|i| s.spawn(move || write(root, &[i]).path)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::HashSet<_> = paths.iter().collect();
        assert_eq!(unique.len(), 8);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 8);
    }
}
