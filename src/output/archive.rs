//! ZIP archives of batch groups, crash-safe by construction: an update never touches the archive on disk. It
//! writes a new archive to a temp file in the same directory (the existing entries copied raw, byte for byte,
//! then the new images, stored), fsyncs it and renames it over the old one, then fsyncs the directory. At every
//! instant the name holds either the old complete archive or the new complete one; a crash leaves at most an
//! abandoned temp file, which start-up removes like any other.
//!
//! Exactly once: an entry is named by the image's path relative to the archive's directory (unique: images are
//! never overwritten), and an update adds only names the archive does not hold yet. So repeating an update
//! after a crash (the rename done, its journal record not) adds nothing twice.
//!
//! Never overwrite: the first update creates `<batch>.zip` with a no-clobber rename, or `<batch>_00001.zip`,
//! ... when the name is taken. The archive comment carries a token naming the batch (its name and first job
//! id); a file under a candidate name whose comment is that token is the batch's own archive from before a
//! crash, which is adopted instead of starting another one. Entries are stored, not deflated: PNG, WebP and
//! JPEG are compressed already (deflate gains about 0-1 % on them, at a cost of ~20 ms per megabyte).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use super::dir::OutputDir;
use super::write::PendingFile;

/// Highest counter suffix tried for a new archive's name.
const MAX_COUNTER: u32 = 99_999;

/// Why an archive could not be updated. Every variant leaves the archive on disk as it was.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The existing archive could not be read.
    #[error("reading archive {path}: {source}")]
    Read { path: PathBuf, source: zip::result::ZipError },
    /// Writing the new archive failed (disk full, ...).
    #[error("writing archive {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The ZIP writer failed.
    #[error("writing archive {path}: {source}")]
    Zip { path: PathBuf, source: zip::result::ZipError },
    /// Every candidate name is taken by other files.
    #[error("no free archive name for batch {0:?} (counter exhausted)")]
    NamesExhausted(String),
}

/// An image to add: its entry name and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveItem {
    /// The entry name (`/`-separated path relative to the archive's directory).
    pub entry: String,
    /// The file to copy in.
    pub file: PathBuf,
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveUpdate {
    /// The archive's file name in its directory.
    pub name: String,
    /// Entries added now.
    pub added: usize,
    /// Items already in the archive (a repeat after a crash), not added again.
    pub present: usize,
    /// Items whose file is gone (removed by hand): skipped, named here.
    pub missing: Vec<String>,
    /// Entries the archive holds now.
    pub entries: usize,
}

/// The entry name of `file` in an archive in `dir`: its path relative to `dir` with `/`, or its file name if
/// it is not below `dir`.
pub fn entry_name(dir: &Path, file: &Path) -> String {
    match file.strip_prefix(dir) {
        Ok(rel) => rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
        Err(_) => file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    }
}

/// Adds `items` to the batch's archive in `dir` (named `existing` if the batch has one, else found or created
/// as described in the module docs) by writing a new archive and renaming it over the old. `token` is the
/// batch's archive comment.
pub fn update_archive(
    dir: &OutputDir,
    batch: &str,
    token: &str,
    existing: Option<&str>,
    items: &[ArchiveItem],
) -> Result<ArchiveUpdate, ArchiveError> {
    let (name, old, create) = match existing {
        Some(name) => (name.to_owned(), open_archive(dir, name)?, false),
        None => find_or_start(dir, batch, token)?,
    };
    let path = dir.path().join(&name);
    let write_err = |source| ArchiveError::Write { path: path.clone(), source };
    let zip_err = |source| ArchiveError::Zip { path: path.clone(), source };
    let temp = PendingFile::create(dir).map_err(write_err)?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, temp.file()));
    let mut names: HashSet<String> = HashSet::new();
    if let Some(mut old) = old {
        for i in 0..old.len() {
            let entry = old.by_index_raw(i).map_err(|source| ArchiveError::Read { path: path.clone(), source })?;
            names.insert(entry.name().map_err(zip_err)?.into_owned());
            zip.raw_copy_file(entry).map_err(zip_err)?;
        }
    }
    let mut update = ArchiveUpdate { name: name.clone(), added: 0, present: 0, missing: Vec::new(), entries: 0 };
    for item in items {
        if !names.insert(item.entry.clone()) {
            update.present += 1;
            continue;
        }
        let mut file = match File::open(&item.file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                update.missing.push(item.file.display().to_string());
                names.remove(&item.entry);
                continue;
            }
            Err(e) => return Err(write_err(e)),
        };
        let size = file.metadata().map_err(write_err)?.len();
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(size >= u64::from(u32::MAX))
            .last_modified_time(zip_now());
        zip.start_file(item.entry.as_str(), options).map_err(zip_err)?;
        io::copy(&mut file, &mut zip).map_err(write_err)?;
        update.added += 1;
        // A test holds here to kill the daemon with the new archive half written.
        crate::fault::hold("archive.writing");
    }
    update.entries = names.len();
    zip.set_comment(token).map_err(zip_err)?;
    let mut out = zip.finish().map_err(zip_err)?;
    out.flush().map_err(write_err)?;
    drop(out);
    temp.file().sync_all().map_err(write_err)?;
    crate::fault::hold("archive.before_rename");
    if create {
        match temp.persist_new(&name).map_err(write_err)? {
            Ok(()) => {}
            // Someone took the name between the look and the rename: the next update picks another.
            Err(_temp) => {
                return Err(write_err(io::Error::new(io::ErrorKind::AlreadyExists, "archive name taken meanwhile")));
            }
        }
    } else {
        temp.persist_replace(&name).map_err(write_err)?;
    }
    crate::fault::hold("archive.after_rename");
    Ok(update)
}

fn open_archive(dir: &OutputDir, name: &str) -> Result<Option<ZipArchive<File>>, ArchiveError> {
    let path = dir.path().join(name);
    match File::open(&path) {
        Ok(f) => ZipArchive::new(f).map(Some).map_err(|source| ArchiveError::Read { path, source }),
        // Removed by hand: the archive starts anew with what is still to add.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ArchiveError::Write { path, source }),
    }
}

/// The batch's archive name: the first of `<batch>.zip`, `<batch>_00001.zip`, ... that is free (to create) or
/// holds an archive whose comment is `token` (the batch's own, from before a crash: adopted).
fn find_or_start(
    dir: &OutputDir,
    batch: &str,
    token: &str,
) -> Result<(String, Option<ZipArchive<File>>, bool), ArchiveError> {
    for counter in 0..=MAX_COUNTER {
        let name = match counter {
            0 => format!("{batch}.zip"),
            n => format!("{batch}_{n:05}.zip"),
        };
        let path = dir.path().join(&name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((name, None, true)),
            Err(source) => return Err(ArchiveError::Write { path, source }),
            Ok(meta) if !meta.is_file() => continue,
            Ok(_) => {}
        }
        if let Ok(file) = File::open(&path)
            && let Ok(archive) = ZipArchive::new(file)
            && archive.comment() == token.as_bytes()
        {
            return Ok((name, Some(archive), false));
        }
    }
    Err(ArchiveError::NamesExhausted(batch.to_owned()))
}

fn zip_now() -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    let now = chrono::Local::now();
    zip::DateTime::from_date_and_time(
        now.year().clamp(1980, 2107) as u16,
        now.month() as u8,
        now.day() as u8,
        now.hour() as u8,
        now.minute() as u8,
        now.second() as u8,
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(dir: &Path, names: &[&str]) -> Vec<ArchiveItem> {
        names
            .iter()
            .map(|n| {
                let file = dir.join(n);
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, format!("pixels of {n}")).unwrap();
                ArchiveItem { entry: entry_name(dir, &file), file }
            })
            .collect()
    }

    fn entries(path: &Path) -> Vec<String> {
        let archive = ZipArchive::new(File::open(path).unwrap()).unwrap();
        let mut names: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn updates_add_each_image_once_and_keep_the_archive_valid() {
        let root = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(root.path()).unwrap();
        let first = items(root.path(), &["a.png", "ORIG/b.png"]);
        let u = update_archive(&dir, "night", "tok", None, &first).unwrap();
        assert_eq!((u.name.as_str(), u.added, u.present, u.entries), ("night.zip", 2, 0, 2));
        let more = items(root.path(), &["c.png"]);
        let again: Vec<ArchiveItem> = first.iter().chain(&more).cloned().collect();
        let u = update_archive(&dir, "night", "tok", Some("night.zip"), &again).unwrap();
        assert_eq!((u.added, u.present, u.entries), (1, 2, 3), "a repeat adds nothing twice");
        let path = root.path().join("night.zip");
        assert_eq!(entries(&path), ["ORIG/b.png", "a.png", "c.png"]);
        let mut archive = ZipArchive::new(File::open(&path).unwrap()).unwrap();
        let mut text = String::new();
        io::Read::read_to_string(&mut archive.by_name("ORIG/b.png").unwrap(), &mut text).unwrap();
        assert_eq!(text, "pixels of ORIG/b.png");
        assert_eq!(archive.comment(), b"tok");
    }

    #[test]
    fn an_existing_file_is_never_overwritten_and_the_batchs_own_archive_is_adopted() {
        let root = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(root.path()).unwrap();
        std::fs::write(root.path().join("night.zip"), b"someone else's file").unwrap();
        let u = update_archive(&dir, "night", "tok", None, &items(root.path(), &["a.png"])).unwrap();
        assert_eq!(u.name, "night_00001.zip");
        assert_eq!(std::fs::read(root.path().join("night.zip")).unwrap(), b"someone else's file");
        // The journal lost the name (a crash after the rename): the token finds the archive again.
        let u = update_archive(&dir, "night", "tok", None, &items(root.path(), &["a.png", "b.png"])).unwrap();
        assert_eq!((u.name.as_str(), u.added, u.present), ("night_00001.zip", 1, 1));
        // Another batch of the same name (another token) gets a new archive.
        let u = update_archive(&dir, "night", "other", None, &items(root.path(), &["a.png"])).unwrap();
        assert_eq!(u.name, "night_00002.zip");
        let temps = std::fs::read_dir(root.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"));
        assert_eq!(temps.count(), 0);
    }

    #[test]
    fn a_missing_file_is_reported_not_fatal() {
        let root = tempfile::tempdir().unwrap();
        let dir = OutputDir::open(root.path()).unwrap();
        let mut list = items(root.path(), &["a.png"]);
        list.push(ArchiveItem { entry: "gone.png".into(), file: root.path().join("gone.png") });
        let u = update_archive(&dir, "b", "t", None, &list).unwrap();
        assert_eq!((u.added, u.missing.len(), u.entries), (1, 1, 1));
        assert_eq!(entries(&root.path().join("b.zip")), ["a.png"]);
    }
}
