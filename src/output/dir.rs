//! A handle on a resolved output directory. Files are created and renamed relative to this handle (`openat`,
//! `renameat2`), never by path, so once the directory has been reached inside the output root, swapping any
//! component for a symlink cannot redirect a write (issue 11, failure 5).
//!
//! The walk that reaches it never follows a symlink out of the root: on Linux each prefix is opened with
//! `openat2(root, prefix, RESOLVE_BENEATH)`, so the kernel follows in-tree symlinks and refuses escaping ones;
//! where `openat2` is missing (Linux < 5.6, seccomp filters, other Unixes) each component is opened with
//! `O_NOFOLLOW` from its parent's handle, and a symlink component is followed only after its canonical target
//! has been checked to lie inside the root and re-walked with `O_NOFOLLOW` from the root's handle.

use std::io;
use std::path::{Path, PathBuf};

use super::OutputError;

/// A directory inside an output root, held open.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

impl OutputDir {
    /// The directory's path as it was reached (for messages and `status`; writes never go through it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens an existing directory the caller trusts, following symlinks (benchmarks, tools).
    pub fn open(path: &Path) -> io::Result<Self> {
        #[cfg(unix)]
        {
            Ok(Self { path: path.to_path_buf(), fd: unix::open_dir(path)? })
        }
        #[cfg(not(unix))]
        {
            if !path.is_dir() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "not a directory"));
            }
            Ok(Self { path: path.to_path_buf() })
        }
    }

    #[cfg(unix)]
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// How the walk resolves components (the fallback is selectable so tests cover both on any kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Walk {
    /// `openat2(RESOLVE_BENEATH)` where available, else [`Walk::NoFollow`].
    Best,
    /// Per-component `O_NOFOLLOW` (Unix; Windows walks by path, `output::dir::portable`).
    #[cfg(unix)]
    #[cfg_attr(not(test), allow(dead_code))]
    NoFollow,
}

/// Creates the root if needed, then reaches `root/parts...` creating missing components, never leaving `root`.
pub(super) fn walk(root: &Path, parts: &[&str], how: Walk) -> Result<OutputDir, OutputError> {
    let dir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Dir { path, source }
    };
    std::fs::create_dir_all(root).map_err(dir_err(root))?;
    #[cfg(unix)]
    {
        let fd = unix::walk(root, parts, how)?;
        let path = parts.iter().fold(root.to_path_buf(), |p, part| p.join(part));
        Ok(OutputDir { path, fd })
    }
    #[cfg(not(unix))]
    {
        let _ = how;
        Ok(OutputDir { path: portable::walk(root, parts)? })
    }
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::path::{Path, PathBuf};

    use nix::errno::Errno;
    use nix::fcntl::{AtFlags, OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};

    use super::{OutputError, Walk};

    const DIR_FLAGS: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY).union(OFlag::O_CLOEXEC);

    pub(super) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
        Ok(nix::fcntl::open(path, DIR_FLAGS, Mode::empty())?)
    }

    pub(super) fn walk(root: &Path, parts: &[&str], how: Walk) -> Result<OwnedFd, OutputError> {
        let root_fd = open_dir(root).map_err(|source| OutputError::Dir { path: root.into(), source })?;
        let mut walker = Walker { root, root_fd, beneath: how == Walk::Best };
        let mut current =
            walker.root_fd.try_clone().map_err(|source| OutputError::Dir { path: root.into(), source })?;
        for (i, part) in parts.iter().enumerate() {
            current = walker.step(current.as_fd(), &parts[..=i], part)?;
        }
        Ok(current)
    }

    struct Walker<'a> {
        root: &'a Path,
        root_fd: OwnedFd,
        /// Still trying `openat2`; cleared when the kernel lacks it.
        beneath: bool,
    }

    impl Walker<'_> {
        /// Opens `prefix` (whose last component is `part`, a child of `parent`), creating it if missing.
        fn step(&mut self, parent: BorrowedFd<'_>, prefix: &[&str], part: &str) -> Result<OwnedFd, OutputError> {
            let path = prefix.iter().fold(self.root.to_path_buf(), |p, c| p.join(c));
            let fail = |source: io::Error| OutputError::Dir { path: path.clone(), source };
            for _ in 0..2 {
                match self.open(parent, prefix, part) {
                    Ok(fd) => return Ok(fd),
                    Err(Errno::ENOENT) => match mkdirat(parent, part, Mode::from_bits_truncate(0o777)) {
                        // Another writer may have created it in between: open it again, under the same rules.
                        Ok(()) | Err(Errno::EEXIST) => continue,
                        Err(e) => return Err(fail(e.into())),
                    },
                    // RESOLVE_BENEATH refuses absolute symlinks even when they point inside: check those by hand.
                    Err(Errno::EXDEV) if is_symlink(parent, part) => return self.follow_inside(parent, part, &path),
                    Err(Errno::EXDEV) => return Err(self.escapes(&path)),
                    Err(Errno::ELOOP) => return self.follow_inside(parent, part, &path),
                    Err(Errno::ENOTDIR) if self.beneath || !is_symlink(parent, part) => {
                        return Err(fail(io::Error::other("exists and is not a directory")));
                    }
                    Err(Errno::ENOTDIR) => return self.follow_inside(parent, part, &path),
                    Err(e) => return Err(fail(e.into())),
                }
            }
            Err(fail(io::Error::other("it keeps disappearing while being created")))
        }

        fn open(&mut self, parent: BorrowedFd<'_>, prefix: &[&str], part: &str) -> Result<OwnedFd, Errno> {
            #[cfg(target_os = "linux")]
            if self.beneath {
                use nix::fcntl::{OpenHow, ResolveFlag, openat2};
                let how = OpenHow::new()
                    .flags(super::unix::DIR_FLAGS)
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                match openat2(self.root_fd.as_fd(), prefix.join("/").as_str(), how) {
                    // No openat2 (old kernel, or a seccomp filter that refuses it): walk by hand from now on.
                    Err(Errno::ENOSYS | Errno::EPERM) => self.beneath = false,
                    other => return other,
                }
            }
            let _ = prefix;
            self.beneath = false;
            openat(parent, part, DIR_FLAGS | OFlag::O_NOFOLLOW, Mode::empty())
        }

        /// The no-follow walk met a symlink: follow it only if its canonical target is inside the root, and
        /// reach that target again from the root's handle without following anything, so a swap in between
        /// is refused rather than followed.
        fn follow_inside(&mut self, parent: BorrowedFd<'_>, part: &str, path: &Path) -> Result<OwnedFd, OutputError> {
            // Prefixes through this link cannot be opened beneath the root by name any more (an absolute link
            // stays refused): the rest of the walk goes component by component from the link's target.
            self.beneath = false;
            let fail = |source: io::Error| OutputError::Dir { path: path.to_path_buf(), source };
            if !is_symlink(parent, part) {
                return Err(fail(io::Error::other("too many levels of symbolic links")));
            }
            let real_root = crate::platform::canonicalize(self.root).map_err(fail)?;
            let target = crate::platform::canonicalize(path).map_err(fail)?;
            let Ok(inside) = target.strip_prefix(&real_root) else { return Err(self.escapes(&target)) };
            let mut current = self.root_fd.try_clone().map_err(fail)?;
            for component in inside.components() {
                let std::path::Component::Normal(name) = component else { return Err(self.escapes(&target)) };
                current = match openat(current.as_fd(), name, DIR_FLAGS | OFlag::O_NOFOLLOW, Mode::empty()) {
                    Ok(fd) => fd,
                    // A component turned into a symlink since `canonicalize` looked: a swap, refused.
                    Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(self.escapes(&target)),
                    Err(e) => return Err(fail(e.into())),
                };
            }
            Ok(current)
        }

        fn escapes(&self, dir: &Path) -> OutputError {
            let root = crate::platform::canonicalize(self.root).unwrap_or_else(|_| self.root.to_path_buf());
            OutputError::Escapes { dir: PathBuf::from(dir), root }
        }
    }

    fn is_symlink(parent: BorrowedFd<'_>, part: &str) -> bool {
        fstatat(parent, part, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK)
    }
}

#[cfg(not(unix))]
mod portable {
    //! Windows: components are checked one at a time by path (a remaining TOCTOU window there; Windows
    //! symlinks need a privilege ordinary users lack by default).
    use std::io;
    use std::path::{Path, PathBuf};

    use super::OutputError;

    pub(super) fn walk(root: &Path, parts: &[&str]) -> Result<PathBuf, OutputError> {
        let dir_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutputError::Dir { path, source }
        };
        let real_root = crate::platform::canonicalize(root).map_err(dir_err(root))?;
        let mut current = real_root.clone();
        for part in parts {
            let next = current.join(part);
            current = match std::fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = crate::platform::canonicalize(&next).map_err(dir_err(&next))?;
                    if !target.starts_with(&real_root) {
                        return Err(OutputError::Escapes { dir: target, root: real_root });
                    }
                    target
                }
                Ok(meta) if meta.is_dir() => next,
                Ok(_) => {
                    return Err(OutputError::Dir {
                        path: next,
                        source: io::Error::other("exists and is not a directory"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&next) {
                    Ok(()) => next,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !next.is_symlink() && next.is_dir() => next,
                    Err(e) => return Err(OutputError::Dir { path: next, source: e }),
                },
                Err(e) => return Err(OutputError::Dir { path: next, source: e }),
            };
        }
        Ok(current)
    }
}
