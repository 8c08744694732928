//! Atomic, never-overwriting file creation.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::OutputError;
use super::dir::OutputDir;

/// A file that is now durably on disk under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The final path (with a counter suffix if the plain name was taken).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Temp files are named `<TEMP_PREFIX><pid>-<instance>-<random><TEMP_SUFFIX>` (hidden), so the janitor can
/// find orphans and tell whose they are; see [`TempOwner`].
pub const TEMP_PREFIX: &str = ".luna-";
/// See [`TEMP_PREFIX`].
pub const TEMP_SUFFIX: &str = ".tmp";

/// Highest counter suffix tried before giving up.
const MAX_COUNTER: u32 = 99_999;

/// The writer a temp file name names: the process id and a random id of that process's run. A live writer
/// also holds an exclusive `flock` on its temp file until the rename, so "lock free and writer gone" means
/// nobody will ever finish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempOwner {
    /// The writing process.
    pub pid: u32,
    /// Random per process run, so a restarted daemon that got the same pid (containers) is told apart.
    pub instance: String,
}

impl TempOwner {
    /// This process.
    pub fn current() -> Self {
        Self { pid: std::process::id(), instance: instance_id().to_owned() }
    }

    /// The owner encoded in a temp file's name, if it is one of ours in the current format.
    pub fn from_temp_name(name: &str) -> Option<Self> {
        let inner = name.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
        let mut fields = inner.splitn(3, '-');
        let pid = fields.next()?.parse().ok()?;
        let instance = fields.next().filter(|i| i.len() == INSTANCE_LEN)?.to_owned();
        fields.next()?;
        Some(Self { pid, instance })
    }
}

/// Whether a directory entry's name is a temp file of ours (any format, including older ones).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)
}

const INSTANCE_LEN: usize = 8;

fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..INSTANCE_LEN].to_owned())
}

fn temp_name() -> String {
    let random = &uuid::Uuid::new_v4().simple().to_string()[..12];
    format!("{TEMP_PREFIX}{}-{}-{random}{TEMP_SUFFIX}", std::process::id(), instance_id())
}

/// [`write_new_file_in`] for a directory given by path (which must exist; symlinks in it are followed).
pub fn write_new_file<F, T, E>(
    dir: &Path,
    stem: &str,
    ext: &str,
    fill: F,
) -> Result<Result<(Written, T), E>, OutputError>
where
    F: FnOnce(&mut dyn Write) -> Result<T, E>,
{
    let handle = OutputDir::open(dir).map_err(|source| OutputError::Dir { path: dir.to_path_buf(), source })?;
    write_new_file_in(&handle, stem, ext, fill)
}

/// Writes a new file `<stem>.<ext>` in `dir`: the content goes to a hidden temp file created relative to the
/// directory's handle, is flushed and fsynced, and is then renamed into place (again relative to the handle)
/// without ever replacing an existing file. If the name is taken (by a file or by a racing writer),
/// `<stem>_00001.<ext>`, `<stem>_00002.<ext>`, ... are tried; each attempt is an atomic no-clobber rename,
/// never an existence check. The directory is fsynced. `fill` writes the content and returns a value that is
/// handed back with the result; if it fails, nothing is left behind and its error is returned inside `Ok`.
/// A name the file system finds too long is [`OutputError::NameTooLong`], which no retry can heal.
pub fn write_new_file_in<F, T, E>(
    dir: &OutputDir,
    stem: &str,
    ext: &str,
    fill: F,
) -> Result<Result<(Written, T), E>, OutputError>
where
    F: FnOnce(&mut dyn Write) -> Result<T, E>,
{
    let first = dir.path().join(format!("{stem}.{ext}"));
    let write_err = |source: io::Error| OutputError::Write { path: first.clone(), source };
    // Test holds (no-ops in release builds): between the directory check and the create, and before the rename.
    crate::fault::hold("output.before_create");
    let temp = sys::Temp::create(dir).map_err(write_err)?;
    let value = {
        let mut out = BufWriter::with_capacity(1 << 16, temp.file());
        match fill(&mut out) {
            Ok(value) => {
                out.flush().map_err(write_err)?;
                value
            }
            Err(e) => return Ok(Err(e)),
        }
    };
    temp.file().sync_all().map_err(write_err)?;
    let bytes = temp.file().metadata().map_err(write_err)?.len();
    let mut temp = temp;
    crate::fault::hold("output.before_rename");
    for counter in 0..=MAX_COUNTER {
        let name = match counter {
            0 => format!("{stem}.{ext}"),
            n => format!("{stem}_{n:05}.{ext}"),
        };
        let path = dir.path().join(&name);
        match temp.persist_noclobber(&name) {
            Ok(()) => {
                sys::sync_dir(dir).map_err(|source| OutputError::Write { path: path.clone(), source })?;
                return Ok(Ok((Written { path, bytes }, value)));
            }
            Err((t, e)) if e.kind() == io::ErrorKind::AlreadyExists => temp = t,
            Err((_, e)) if is_name_too_long(&e) => {
                return Err(OutputError::NameTooLong {
                    what: "file name",
                    value: name,
                    bytes: path.file_name().map_or(0, |n| n.len()),
                    reason: format!("the file system refused it: {e}"),
                });
            }
            Err((_, e)) => return Err(OutputError::Write { path, source: e }),
        }
    }
    Err(OutputError::NamesExhausted(first))
}

/// A temp file in an output directory (named, locked and cleaned up like every temp file of ours) that the
/// caller fills and then puts under a name of its choice: [`PendingFile::persist_new`] never replaces a file,
/// [`PendingFile::persist_replace`] replaces one the caller owns (an archive it rewrites). Dropped unpersisted,
/// it is removed.
pub struct PendingFile<'a> {
    temp: sys::Temp<'a>,
    dir: &'a OutputDir,
}

impl<'a> PendingFile<'a> {
    /// Creates the temp file in `dir`.
    pub fn create(dir: &'a OutputDir) -> io::Result<Self> {
        Ok(Self { temp: sys::Temp::create(dir)?, dir })
    }

    /// The open file, to write (and seek) through.
    pub fn file(&self) -> &std::fs::File {
        self.temp.file()
    }

    /// Renames the file to `name` unless that name exists, then syncs the directory. `Ok(Err(self))`: the name
    /// is taken, the file is handed back; `Err`: another failure (the temp file is removed).
    pub fn persist_new(self, name: &str) -> io::Result<Result<(), Self>> {
        let dir = self.dir;
        match self.temp.persist_noclobber(name) {
            Ok(()) => sys::sync_dir(dir).map(Ok),
            Err((temp, e)) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Err(Self { temp, dir })),
            Err((_, e)) => Err(e),
        }
    }

    /// Renames the file to `name`, atomically replacing what is there, then syncs the directory.
    pub fn persist_replace(self, name: &str) -> io::Result<()> {
        let dir = self.dir;
        self.temp.persist_replace(name)?;
        sys::sync_dir(dir)
    }
}

fn is_name_too_long(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(nix::errno::Errno::ENAMETOOLONG as i32)
    }
    #[cfg(not(unix))]
    {
        e.kind() == io::ErrorKind::InvalidFilename
    }
}

#[cfg(unix)]
mod sys {
    //! Temp files by directory handle: `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, an exclusive `flock` held
    //! until the rename, `renameat2(RENAME_NOREPLACE)` (else `linkat` + `unlinkat`, which also never
    //! replaces), `fsync` of the handle.
    use std::fs::File;
    use std::io;

    use nix::errno::Errno;
    use nix::fcntl::{AtFlags, OFlag, openat};
    use nix::sys::stat::Mode;
    use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

    use super::{OutputDir, temp_name};

    pub(super) struct Temp<'a> {
        dir: &'a OutputDir,
        file: File,
        name: String,
        /// Unlinked on drop unless persisted.
        armed: bool,
    }

    impl<'a> Temp<'a> {
        pub(super) fn create(dir: &'a OutputDir) -> io::Result<Self> {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            // Mode 0666 minus the umask, like any file a user's program writes (0600 would hide images from
            // other users).
            let mode = Mode::from_bits_truncate(0o666);
            loop {
                let name = temp_name();
                match openat(dir.fd(), name.as_str(), flags, mode) {
                    Ok(fd) => {
                        let file = File::from(fd);
                        // The liveness token the start-up sweep checks; released by the OS however we exit.
                        file.lock()?;
                        return Ok(Self { dir, file, name, armed: true });
                    }
                    Err(Errno::EEXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }

        pub(super) fn file(&self) -> &File {
            &self.file
        }

        pub(super) fn persist_replace(mut self, name: &str) -> io::Result<()> {
            nix::fcntl::renameat(self.dir.fd(), self.name.as_str(), self.dir.fd(), name)?;
            self.armed = false;
            Ok(())
        }

        pub(super) fn persist_noclobber(mut self, name: &str) -> Result<(), (Self, io::Error)> {
            match rename_noreplace(self.dir, &self.name, name) {
                Ok(()) => {
                    self.armed = false;
                    Ok(())
                }
                Err(e) => Err((self, e.into())),
            }
        }
    }

    impl Drop for Temp<'_> {
        fn drop(&mut self) {
            if self.armed {
                let _ = unlinkat(self.dir.fd(), self.name.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
    }

    fn rename_noreplace(dir: &OutputDir, from: &str, to: &str) -> Result<(), Errno> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            use nix::fcntl::{RenameFlags, renameat2};
            match renameat2(dir.fd(), from, dir.fd(), to, RenameFlags::RENAME_NOREPLACE) {
                // File systems without RENAME_NOREPLACE: fall through to link + unlink.
                Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
                other => return other,
            }
        }
        linkat(dir.fd(), from, dir.fd(), to, AtFlags::empty())?;
        let _ = unlinkat(dir.fd(), from, UnlinkatFlags::NoRemoveDir);
        Ok(())
    }

    pub(super) fn sync_dir(dir: &OutputDir) -> io::Result<()> {
        Ok(nix::unistd::fsync(dir.fd())?)
    }
}

#[cfg(not(unix))]
mod sys {
    //! Windows: tempfile's named temp file in the directory (no directory handles for `*at` calls there).
    use std::fs::File;
    use std::io;

    use super::{OutputDir, TEMP_SUFFIX, temp_name};

    pub(super) struct Temp<'a>(&'a OutputDir, tempfile::NamedTempFile);

    impl<'a> Temp<'a> {
        pub(super) fn create(dir: &'a OutputDir) -> io::Result<Self> {
            let name = temp_name();
            let prefix = name.strip_suffix(TEMP_SUFFIX).unwrap_or(&name);
            let temp =
                tempfile::Builder::new().prefix(prefix).suffix(TEMP_SUFFIX).rand_bytes(0).tempfile_in(dir.path())?;
            Ok(Self(dir, temp))
        }

        pub(super) fn file(&self) -> &File {
            self.1.as_file()
        }

        pub(super) fn persist_replace(self, name: &str) -> io::Result<()> {
            self.1.persist(self.0.path().join(name)).map(|_| ()).map_err(|e| e.error)
        }

        pub(super) fn persist_noclobber(self, name: &str) -> Result<(), (Self, io::Error)> {
            let dir = self.0;
            match self.1.persist_noclobber(dir.path().join(name)) {
                Ok(_) => Ok(()),
                Err(e) => Err((Self(dir, e.file), e.error)),
            }
        }
    }

    pub(super) fn sync_dir(_dir: &OutputDir) -> io::Result<()> {
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

    #[cfg(unix)] // for the symlink test below
    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    /// Issue 11, failure 5: the directory is swapped for a symlink to another place after it was resolved
    /// (the hold between the check and the create) and again while the file is being written (the hold
    /// between the create and the rename). The file and its temp file stay in the directory that was resolved.
    #[cfg(unix)]
    #[test]
    fn a_directory_swapped_for_a_symlink_cannot_redirect_the_write() {
        for how in [super::super::dir::Walk::Best, super::super::dir::Walk::NoFollow] {
            let root = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let dir = super::super::confine::resolve_dir_with(root.path(), "sub", how).unwrap();
            let swap = |moved: &str| {
                std::fs::rename(root.path().join("sub"), root.path().join(moved)).unwrap();
                std::os::unix::fs::symlink(outside.path(), root.path().join("sub")).unwrap();
            };
            // Hold 1: between resolving the directory and creating the temp file.
            swap("moved-before-create");
            let first = write_new_file_in(&dir, "img", "png", |w| w.write_all(b"one")).unwrap().unwrap().0;
            // Hold 2: inside the write, between creating the temp file and renaming it into place.
            std::fs::remove_file(root.path().join("sub")).unwrap();
            std::fs::create_dir(root.path().join("sub")).unwrap();
            let dir = super::super::confine::resolve_dir_with(root.path(), "sub", how).unwrap();
            let second = write_new_file_in(&dir, "img", "png", |w| {
                swap("moved-during-write");
                w.write_all(b"two")
            })
            .unwrap()
            .unwrap()
            .0;
            assert_eq!(files_in(outside.path()), Vec::<String>::new(), "{how:?}: nothing lands outside");
            assert_eq!(files_in(&root.path().join("moved-before-create")), ["img.png"], "{how:?}");
            assert_eq!(files_in(&root.path().join("moved-during-write")), ["img.png"], "{how:?}");
            assert_eq!(std::fs::read(root.path().join("moved-during-write/img.png")).unwrap(), b"two");
            assert_eq!((first.bytes, second.bytes), (3, 3));
        }
    }

    #[test]
    fn temp_names_carry_the_writer_and_parse_back() {
        let name = temp_name();
        assert!(is_temp_name(&name), "{name}");
        assert_eq!(TempOwner::from_temp_name(&name), Some(TempOwner::current()));
        assert_eq!(TempOwner::from_temp_name(".luna-abc123.tmp"), None, "the old format names no writer");
        assert_eq!(TempOwner::from_temp_name("img.png"), None);
    }

    /// A live writer holds an exclusive lock on its temp file until the rename: the sweep's liveness test.
    #[cfg(unix)]
    #[test]
    fn a_temp_file_being_written_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        write_new_file(dir.path(), "img", "png", |w| {
            let temp = files_in(dir.path()).into_iter().find(|n| is_temp_name(n)).unwrap();
            let other = std::fs::File::open(dir.path().join(temp)).unwrap();
            assert!(matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
            w.write_all(b"x")
        })
        .unwrap()
        .unwrap();
    }
}
