//! Offline maintenance of a state directory: check, back up and restore the database file, and
//! the names damaged or replaced files are kept aside under (`meridian state ...`).
//!
//! Each step opens the database the way the server does (which takes redb's exclusive file lock
//! and verifies every checksum), so it refuses to run beside a server using the same directory
//! and never copies a damaged file. Nothing here deletes a file: what is replaced is renamed
//! aside. It prints nothing; the command line reports the [`Summary`].

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{FILE_NAME, Store, StoreError};

/// What a state database holds, as counted by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The database file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Datacenter reports.
    pub reports: usize,
    /// Drains in force.
    pub drains: usize,
    /// Whether the instance is drained.
    pub instance_drained: bool,
    /// Audit entries.
    pub audit_entries: u64,
    /// Configuration versions recorded.
    pub config_versions: usize,
    /// Directory buckets (0 when no directory was ever stored).
    pub directory_buckets: u32,
    /// Pinned users.
    pub pins: u64,
}

/// Opens the state database in `dir` (it must exist), verifies it and reads every value.
///
/// # Errors
///
/// [`StoreError::File`] if there is no database file, and whatever [`Store::open`],
/// [`Store::load`] or the directory and audit reads return for a damaged file.
pub fn check(dir: &Path) -> Result<Summary, StoreError> {
    let (_store, summary) = open_checked(dir)?;
    Ok(summary)
}

/// Checks the database in `dir` and copies it to `to` (written beside it, synced, then renamed
/// into place, so `to` is never half a file). Returns the summary of what was copied.
///
/// # Errors
///
/// As [`check`], and [`StoreError::File`] if `to` exists or cannot be written.
pub fn backup(dir: &Path, to: &Path) -> Result<Summary, StoreError> {
    // The store stays open (and locked) while the file is copied, so no server can write to it
    // meanwhile.
    let (store, summary) = open_checked(dir)?;
    if to.exists() {
        return Err(file_error(
            "refusing to overwrite",
            to,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    copy_synced(&summary.path, to)?;
    drop(store);
    Ok(summary)
}

/// Replaces the database in `dir` with the backup `from`, after checking a copy of it; the
/// database it replaces (if any) is kept aside. Returns the restored summary and where the old
/// file went.
///
/// # Errors
///
/// [`StoreError::File`] if `from` cannot be read or copied, whatever [`check`] finds wrong with
/// the backup, and [`StoreError::Open`] when a server holds the directory's database.
pub fn restore(dir: &Path, from: &Path) -> Result<(Summary, Option<PathBuf>), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(FILE_NAME);
    // Hold the current database (if any) open, so that a running server makes this fail
    // instead of having its file replaced underneath it.
    let current = if path.exists() {
        match Store::open(dir) {
            Ok(store) => Some(store),
            Err(error) if error.is_damaged_file() => None,
            Err(error) => return Err(error),
        }
    } else {
        None
    };
    // Check a copy in a directory of its own: opening may repair the file, and the backup
    // itself is left untouched.
    let staging = dir.join(format!("{FILE_NAME}.restoring"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(|source| file_error("creating", &staging, source))?;
    let staged = staging.join(FILE_NAME);
    copy_synced(from, &staged)?;
    let summary = match open_checked(&staging) {
        // The checked copy is closed (dropping its store) before it is renamed into place.
        Ok((_store, summary)) => summary,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    let aside = if path.exists() {
        let aside = kept_aside_name(&path, "before-restore");
        std::fs::rename(&path, &aside).map_err(|source| file_error("renaming", &aside, source))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&staged, &path).map_err(|source| file_error("renaming", &path, source))?;
    sync_dir(dir)?;
    let _ = std::fs::remove_dir_all(&staging);
    drop(current);
    Ok((
        Summary {
            path: path.clone(),
            ..summary
        },
        aside,
    ))
}

/// The first free name `<path>.<label>`, `<path>.<label>.1`, `<path>.<label>.2`, ... to keep a
/// replaced or damaged file under.
pub fn kept_aside_name(path: &Path, label: &str) -> PathBuf {
    let base = format!("{}.{label}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 0u32;
    while candidate.exists() {
        n += 1;
        candidate = PathBuf::from(format!("{base}.{n}"));
    }
    candidate
}

/// Opens `dir`'s existing database and reads everything in it, so that a damaged value shows up
/// here rather than at the next start.
fn open_checked(dir: &Path) -> Result<(Store, Summary), StoreError> {
    let path = dir.join(FILE_NAME);
    let bytes = std::fs::metadata(&path)
        .map_err(|source| file_error("reading", &path, source))?
        .len();
    let store = Store::open(dir)?;
    let persisted = store.load()?;
    let mut pins = 0u64;
    let directory = store.load_directory(&mut |_, _, _| pins += 1)?;
    let audit_entries = store.audit_log(None, usize::MAX)?.len() as u64;
    let config_versions = store.config_versions()?;
    // Reading each version's text too checks that every one decodes.
    for version in &config_versions {
        store.config_version(&version.hash)?;
    }
    let summary = Summary {
        path,
        bytes,
        reports: persisted.reports.len(),
        drains: persisted.drains.len(),
        instance_drained: persisted.instance_drained,
        audit_entries,
        config_versions: config_versions.len(),
        directory_buckets: directory.map_or(0, |(n, _)| n),
        pins,
    };
    Ok((store, summary))
}

/// Copies `from` to `to` through a temporary file beside `to`, synced before it is renamed.
fn copy_synced(from: &Path, to: &Path) -> Result<(), StoreError> {
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    let copy = || -> io::Result<()> {
        let mut source = File::open(from)?;
        let mut target = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)?;
        io::copy(&mut source, &mut target)?;
        target.sync_all()?;
        std::fs::rename(&partial, to)
    };
    copy().map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        file_error("copying the state database to", to, source)
    })?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| file_error("syncing", dir, source))
}

fn file_error(action: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}
