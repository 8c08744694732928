//! Confinement: a relative sub-path or file name may never lead outside the output root, whatever it
//! contains (`..`, absolute or drive paths, UNC prefixes, NUL or control characters, Windows reserved names),
//! and a symlink inside the tree may not redirect a write outside it.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path was refused or could not be prepared. Messages name the offending part.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output root is not an absolute path.
    #[error("output directory {0:?} must be an absolute path")]
    RootNotAbsolute(String),
    /// A part of a sub-path or file name is not allowed.
    #[error("{what} {value:?} is not allowed: {reason}")]
    Refused { what: &'static str, value: String, reason: &'static str },
    /// The resolved directory lies outside the output root (through a symlink).
    #[error("{dir} resolves outside the output root {root}")]
    Escapes { dir: PathBuf, root: PathBuf },
    /// Creating or resolving a directory failed.
    #[error("could not prepare directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    /// Writing the file failed.
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// Every counter suffix up to 99999 is taken.
    #[error("no free file name for {0} (counter exhausted)")]
    NamesExhausted(PathBuf),
}

fn check_part(what: &'static str, part: &str) -> Result<(), OutputError> {
    let refuse = |reason| Err(OutputError::Refused { what, value: part.to_owned(), reason });
    if part.chars().any(char::is_control) {
        return refuse("it contains NUL or control characters");
    }
    if part == ".." {
        return refuse("'..' would leave the output directory");
    }
    if let Some(reason) = super::winname::windows_name_problem(part) {
        return refuse(reason);
    }
    Ok(())
}

/// Checks a file name stem: one non-empty path component with no separators.
pub fn validate_stem(stem: &str) -> Result<(), OutputError> {
    if stem.is_empty() || stem == "." {
        return Err(OutputError::Refused { what: "filename", value: stem.to_owned(), reason: "it is empty" });
    }
    if stem.contains(['/', '\\']) {
        return Err(OutputError::Refused {
            what: "filename",
            value: stem.to_owned(),
            reason: "it contains a path separator",
        });
    }
    check_part("filename", stem)
}

/// Checks a relative sub-path (`/` or `\\` separated) without touching the disk; returns its components.
pub fn check_sub_path(sub_path: &str) -> Result<Vec<&str>, OutputError> {
    let refused = |reason| OutputError::Refused { what: "save_path", value: sub_path.to_owned(), reason };
    if sub_path.starts_with(['/', '\\']) || Path::new(sub_path).is_absolute() {
        return Err(refused("absolute paths would leave the output directory"));
    }
    let mut parts = Vec::new();
    for part in sub_path.split(['/', '\\']).filter(|p| !p.is_empty() && *p != ".") {
        check_part("save_path component", part)?;
        let mut components = Path::new(part).components();
        if !matches!((components.next(), components.next()), (Some(Component::Normal(_)), None)) {
            return Err(refused("it is not a plain relative path"));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// Joins `sub_path` to `root` and creates the directories one component at a time, checking each existing
/// component first: a symlink is followed only if it resolves inside `root`, so nothing (not even an empty
/// directory) is created outside. Returns the resolved directory.
pub fn resolve_dir(root: &Path, sub_path: &str) -> Result<PathBuf, OutputError> {
    if !root.is_absolute() {
        return Err(OutputError::RootNotAbsolute(root.display().to_string()));
    }
    let parts = check_sub_path(sub_path)?;
    let dir_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Dir { path, source }
    };
    std::fs::create_dir_all(root).map_err(dir_err(root))?;
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
                return Err(OutputError::Dir { path: next, source: io::Error::other("exists and is not a directory") });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&next) {
                Ok(()) => next,
                // Another writer created it in between: take it if it is a real directory.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !next.is_symlink() && next.is_dir() => next,
                Err(e) => return Err(OutputError::Dir { path: next, source: e }),
            },
            Err(e) => return Err(OutputError::Dir { path: next, source: e }),
        };
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_hostile_parts_are_refused_naming_the_part() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["../x", "a/../../x", "/etc", "..\\x", "C:\\x", "\\\\?\\x", "con", "a/nul.txt", "a\0b", "x:y"] {
            let err = resolve_dir(root.path(), bad).unwrap_err().to_string();
            assert!(err.contains("not allowed") || err.contains("absolute"), "{bad:?}: {err}");
        }
        assert!(resolve_dir(root.path(), "a/./b").unwrap().ends_with("a/b"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_inside_the_tree_cannot_redirect_outside() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let err = resolve_dir(root.path(), "link/sub").unwrap_err();
        assert!(matches!(err, OutputError::Escapes { .. }), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "not even a directory is created outside");
        // A symlink that stays inside the root is followed.
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(root.path().join("real"), root.path().join("inside")).unwrap();
        let dir = resolve_dir(root.path(), "inside/sub").unwrap();
        assert!(dir.ends_with("real/sub"), "{}", dir.display());
    }

    #[test]
    fn stems_are_single_components() {
        assert!(validate_stem("ComfyUI_2024").is_ok());
        for bad in ["", "a/b", "a\\b", "..", "lpt1", "x\n"] {
            assert!(validate_stem(bad).is_err(), "{bad:?}");
        }
    }
}
