//! Confinement: a relative sub-path or file name may never lead outside the output root, whatever it
//! contains (`..`, absolute or drive paths, UNC prefixes, NUL or control characters, Windows reserved names),
//! and a symlink inside the tree may not redirect a write outside it.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::dir::{OutputDir, Walk};

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
    /// A name component is longer than file systems allow (refused at submit; final if met at write time).
    #[error("{what} {value:?} is too long ({bytes} bytes): {reason}")]
    NameTooLong { what: &'static str, value: String, bytes: usize, reason: String },
    /// Every counter suffix up to 99999 is taken.
    #[error("no free file name for {0} (counter exhausted)")]
    NamesExhausted(PathBuf),
}

fn check_part(what: &'static str, part: &str) -> Result<(), OutputError> {
    let refuse = |reason| Err(OutputError::Refused { what, value: part.to_owned(), reason });
    if part.len() > MAX_NAME_BYTES {
        return Err(OutputError::NameTooLong {
            what,
            value: shorten(part),
            bytes: part.len(),
            reason: format!("file systems allow {MAX_NAME_BYTES} bytes per name"),
        });
    }
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

/// Joins `sub_path` to `root` and reaches the directory one component at a time, creating missing ones,
/// through directory handles: a symlink is followed only if it resolves inside `root`, so nothing (not even an
/// empty directory) is created outside, and the returned handle keeps later writes inside whatever is swapped
/// meanwhile (see [`OutputDir`]).
pub fn resolve_dir(root: &Path, sub_path: &str) -> Result<OutputDir, OutputError> {
    resolve_dir_with(root, sub_path, Walk::Best)
}

pub(super) fn resolve_dir_with(root: &Path, sub_path: &str, how: Walk) -> Result<OutputDir, OutputError> {
    if !root.is_absolute() {
        return Err(OutputError::RootNotAbsolute(root.display().to_string()));
    }
    let parts = check_sub_path(sub_path)?;
    super::dir::walk(root, &parts, how)
}

/// Checks, at submit time, that `<stem>_NNNNN.<ext>` (the longest name a collision counter can produce) fits
/// in one file-system name component, so a name can never fail only at write time.
pub fn check_file_name_fits(stem: &str, ext: &str) -> Result<(), OutputError> {
    let longest = stem.len() + COUNTER_SUFFIX_LEN + 1 + ext.len();
    if longest > MAX_NAME_BYTES {
        return Err(OutputError::NameTooLong {
            what: "file name",
            value: shorten(stem),
            bytes: longest,
            reason: format!(
                "with the `_NNNNN.{ext}` a name collision adds it is {longest} bytes; file systems allow \
                 {MAX_NAME_BYTES} bytes per name, so the stem may be at most {} bytes",
                MAX_NAME_BYTES - COUNTER_SUFFIX_LEN - 1 - ext.len()
            ),
        });
    }
    Ok(())
}

/// Most bytes in one path component on common file systems (ext4, XFS, Btrfs, tmpfs, APFS, NTFS in UTF-16
/// units).
pub const MAX_NAME_BYTES: usize = 255;

/// `_NNNNN`: the collision counter suffix.
const COUNTER_SUFFIX_LEN: usize = 6;

/// The first characters of a long value, for messages.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &value[..i]),
        None => value.to_owned(),
    }
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
        assert!(resolve_dir(root.path(), "a/./b").unwrap().path().ends_with("a/b"));
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_inside_the_tree_cannot_redirect_outside() {
        for how in [Walk::Best, Walk::NoFollow] {
            let root = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
            let err = resolve_dir_with(root.path(), "link/sub", how).unwrap_err();
            assert!(matches!(err, OutputError::Escapes { .. }), "{how:?}: {err}");
            assert_eq!(
                std::fs::read_dir(outside.path()).unwrap().count(),
                0,
                "not even a directory is created outside"
            );
            // A symlink that stays inside the root is followed.
            std::fs::create_dir(root.path().join("real")).unwrap();
            std::os::unix::fs::symlink(root.path().join("real"), root.path().join("inside")).unwrap();
            resolve_dir_with(root.path(), "inside/sub", how).unwrap();
            assert!(root.path().join("real/sub").is_dir(), "{how:?}");
            // A relative in-tree link too.
            std::os::unix::fs::symlink("../real", root.path().join("real/up")).unwrap();
            resolve_dir_with(root.path(), "real/up/deeper", how).unwrap();
            assert!(root.path().join("real/deeper").is_dir(), "{how:?}");
        }
    }

    #[test]
    fn a_file_where_a_directory_should_be_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        let err = resolve_dir(root.path(), "f/sub").unwrap_err().to_string();
        assert!(err.contains("exists and is not a directory"), "{err}");
    }

    /// Issue 11, failure 6: a 300-byte component is refused at submit, naming the limit.
    #[test]
    fn components_longer_than_255_bytes_are_refused() {
        let long = "a".repeat(300);
        let err = check_sub_path(&format!("ok/{long}")).unwrap_err().to_string();
        assert!(err.contains("too long (300 bytes)") && err.contains("255 bytes per name"), "{err}");
        let err = validate_stem(&long).unwrap_err().to_string();
        assert!(err.contains("too long (300 bytes)"), "{err}");
        assert!(check_sub_path(&"b".repeat(255)).is_ok());
    }

    /// Issue 11, failure 6: a stem that fits alone but not with `_NNNNN.png` is refused before any write.
    #[test]
    fn stems_leave_room_for_the_counter_and_extension() {
        assert!(check_file_name_fits(&"a".repeat(245), "png").is_ok()); // 245 + 6 + 4 = 255
        let err = check_file_name_fits(&"a".repeat(246), "png").unwrap_err().to_string();
        assert!(err.contains("256 bytes") && err.contains("at most 245 bytes"), "{err}");
        let err = check_file_name_fits(&"é".repeat(126), "webp").unwrap_err().to_string(); // 252 bytes of UTF-8
        assert!(err.contains("at most 244 bytes"), "{err}");
    }

    #[test]
    fn stems_are_single_components() {
        assert!(validate_stem("ComfyUI_2024").is_ok());
        for bad in ["", "a/b", "a\\b", "..", "lpt1", "x\n"] {
            assert!(validate_stem(bad).is_err(), "{bad:?}");
        }
    }
}
