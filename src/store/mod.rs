//! The durable state store: reports, drains, the audit log, configuration versions and the user
//! directory, in one embedded redb database that survives restarts and crashes.
//!
//! Every accepted control-plane write goes through [`Store::apply`], which appends its
//! [`AuditEntry`] and applies its [`Change`] in one redb write transaction: after a crash, even a
//! `kill -9`, either both are on disk or neither is. Commits use redb's default durability
//! (`Immediate`), so when [`Store::apply`] returns, the write has been synced to disk and the
//! caller may acknowledge it.
//!
//! Values are stored as JSON (`serde_json`), not a compact binary encoding, so an operator can
//! inspect a state file with any redb tool and read it as text; the volume is a few reports and
//! drains plus one audit entry per write, so the size does not matter. The user directory is the
//! exception: with up to ten million pins, its placements are stored as two NUL-separated names,
//! still readable as text (see the `directory` submodule). Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `reports` | datacenter name | [`StoredReport`] |
//! | `drains` | [`DrainKey`] as JSON | none: presence means drained |
//! | `meta` | `schema_version`, `instance_drained`, `directory_n_buckets`, `write_probe` | a JSON number, a JSON bool, a JSON number, a JSON number |
//! | `audit` | sequence number 1, 2, 3, ... | [`AuditEntry`] |
//! | `config_versions` | content hash | [`ConfigVersion`] |
//! | `toggles` | toggle name | a JSON bool: on or off |
//! | `directory_buckets` | bucket number | [`StoredPlacement`] as home `\0` replica |
//! | `directory_pins` | user id | [`StoredPlacement`] as home `\0` replica |
//!
//! A directory change of any size, a bulk import of millions of pins included, is one
//! [`Change::Directory`] and so one write transaction with one audit entry: all of it is stored
//! or none. The directory is read back with [`Store::load_directory`], apart from [`Store::load`],
//! so the caller can stream the pins into its own index instead of collecting them here.
//!
//! The store holds no business rules: it does not validate reports, decide drains or compute
//! hashes. It persists what it is told and hands it back with [`Store::load`]. It has no clock
//! either: every timestamp comes from the caller. It refuses only what would not load again: a
//! report holding a NaN or infinite number (JSON cannot represent it), a directory name holding a
//! NUL byte (the placement encoding's separator), and a directory bucket beyond the stored bucket
//! count or a bucket map whose length is not its count (the map would no longer be whole).

mod directory;
mod maintenance;
mod types;

pub use maintenance::{Summary, backup, check, kept_aside_name, restore};

pub use types::{
    AuditEntry, Change, ConfigVersion, ConfigVersionMeta, DirectoryChange, DrainKey, Persisted,
    StoredPlacement, StoredReport, VersionFile,
};

use std::fmt::Display;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::PoisonError;

/// The database file's name inside the state directory.
pub const FILE_NAME: &str = "meridian.redb";

/// The layout of tables and values this build reads and writes, recorded in the `meta` table.
///
/// Adding tables does not change it: the directory tables arrived in version 1 without a bump,
/// because a file written before them opens and simply gains them empty.
pub const SCHEMA_VERSION: u64 = 1;

/// The most memory redb may use to cache pages; the state is small, and redb's default is 1 GiB.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const REPORTS_TABLE: &str = "reports";
const DRAINS_TABLE: &str = "drains";
const UNDRAINS_TABLE: &str = "undrains";
const META_TABLE: &str = "meta";
const AUDIT_TABLE: &str = "audit";
const CONFIG_VERSIONS_TABLE: &str = "config_versions";
const TOGGLES_TABLE: &str = "toggles";

const REPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new(REPORTS_TABLE);
const DRAINS: TableDefinition<&str, ()> = TableDefinition::new(DRAINS_TABLE);
/// When each drain was last lifted (Unix milliseconds, from its audit entry): slow start ramps
/// from it, also across a restart.
const UNDRAINS: TableDefinition<&str, u64> = TableDefinition::new(UNDRAINS_TABLE);
const META: TableDefinition<&str, &[u8]> = TableDefinition::new(META_TABLE);
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new(AUDIT_TABLE);
const CONFIG_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new(CONFIG_VERSIONS_TABLE);
const TOGGLES: TableDefinition<&str, &[u8]> = TableDefinition::new(TOGGLES_TABLE);

/// The `meta` key holding [`SCHEMA_VERSION`].
const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The `meta` key holding whether this instance is drained.
const INSTANCE_DRAINED_KEY: &str = "instance_drained";
/// The `meta` key [`Store::probe`] writes to find out whether the disk takes writes again.
const WRITE_PROBE_KEY: &str = "write_probe";

/// The durable state store, one redb database.
///
/// Share it behind an `Arc` and call it from blocking threads (`spawn_blocking`): a write waits
/// for the disk sync.
///
/// After an I/O error (a full disk, a failed sync) redb refuses every later write with "Previous
/// I/O error occurred. Please close and re-open the database". The store does that by itself:
/// the failed write marks it, and the next call (at most once per [`REOPEN_INTERVAL`]) closes
/// the database and opens it again, which redb recovers like a file left by a crash. Nothing
/// committed is lost; the failed write was never acknowledged.
#[derive(Debug)]
pub struct Store {
    /// redb runs one write transaction at a time and lets reads proceed alongside it, so calls
    /// share the database under the read side of this lock; only a reopen takes the write side,
    /// to close the old database (releasing its file lock) before opening the file again. `None`
    /// after a reopen that failed, until one succeeds.
    db: RwLock<Option<Database>>,
    /// The database file, for reopening; `None` for the memory store, which has nothing to reopen.
    path: Option<PathBuf>,
    /// Set by a write that failed with an I/O error, cleared by a successful reopen: the next call
    /// reopens first. Atomic so that checking it costs no lock on the healthy path.
    failed: AtomicBool,
    /// When the last reopen was tried, so that a stream of writes during an outage does not
    /// re-read (and re-verify) the whole file for each of them.
    last_reopen: Mutex<Option<Instant>>,
}

/// The least time between two attempts to reopen a failed database.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// A shared borrow of the open database, for the length of one call.
struct DbGuard<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Deref for DbGuard<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("a DbGuard is only made while the database is open")
    }
}

/// The store cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory does not exist and cannot be created.
    #[error("cannot create state directory {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The database file cannot be opened or initialised (not a redb file, locked by another
    /// process, unreadable).
    #[error("cannot open state database {}: {source}", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why it failed.
        source: redb::Error,
    },
    /// The database was written by a build with a different table layout.
    #[error(
        "state database {} has schema version {found}, this build reads only version {SCHEMA_VERSION}",
        .path.display()
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
    },
    /// A read or write failed after the database was opened.
    #[error("state database: {0}")]
    Database(#[from] redb::Error),
    /// The database file exists but is empty: redb would start it afresh, silently dropping
    /// drains, pins and the audit log, so it is refused.
    #[error(
        "state database {} is empty (0 bytes); refusing to start with empty state: restore a backup, or pass --state-reset to keep the file aside and start afresh",
        .path.display()
    )]
    Empty {
        /// The database file.
        path: PathBuf,
    },
    /// The database could not be reopened after an I/O error; every call fails until it can.
    #[error("state database {} is closed after an I/O error and cannot be reopened yet: {message}", .path.display())]
    Closed {
        /// The database file.
        path: PathBuf,
        /// Why the last reopen failed.
        message: String,
    },
    /// An offline maintenance step (`meridian state ...`) failed on a file.
    #[error("{action} {}: {source}", .path.display())]
    File {
        /// What was being done, e.g. "copying the state database to".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A stored value does not decode.
    #[error("corrupt value in state table {table} at key {key}: {message}")]
    Corrupt {
        /// The table holding the value.
        table: &'static str,
        /// The value's key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value cannot be stored because its encoding cannot represent it (a NaN or infinite
    /// number in JSON, a NUL byte in a directory placement's name).
    #[error("cannot store value in state table {table} at key {key}: {message}")]
    Unencodable {
        /// The table the value was meant for.
        table: &'static str,
        /// The value's key.
        key: String,
        /// What cannot be represented.
        message: String,
    },
    /// A change does not fit the stored state or itself (a bucket beyond the bucket count, a
    /// bucket map of the wrong length); nothing of it was stored, audit entry included.
    #[error("invalid change to state table {table} at key {key}: {message}")]
    Invalid {
        /// The table the change was meant for.
        table: &'static str,
        /// The key that does not fit.
        key: String,
        /// Why it does not fit.
        message: String,
    },
}

/// Each redb operation has its own error type; all of them become [`StoreError::Database`].
macro_rules! database_error_from {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                Self::Database(error.into())
            }
        }
    )*};
}

database_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl Store {
    /// Opens or creates `dir/meridian.redb` (creating `dir` if missing).
    ///
    /// redb recovers a file left by a crash on open. The whole file's checksums are verified on
    /// every open, not only after a crash, because redb trusts a cleanly closed file and may
    /// panic on one altered since; the check turns that into an error at the cost of reading the
    /// file once at startup.
    ///
    /// # Errors
    ///
    /// [`StoreError::CreateDir`] if `dir` cannot be created, [`StoreError::Open`] naming the file
    /// if it is not a redb database, is locked by another process or cannot be initialised,
    /// [`StoreError::Schema`] if it was written with another table layout,
    /// [`StoreError::Corrupt`] if its schema version does not decode, and [`StoreError::Empty`]
    /// if the file exists but holds nothing.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        // redb initialises a zero-length file as a new database; a state file that was
        // truncated (a full disk, a bad copy) must not become empty state without a word.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Empty { path });
        }
        let db = open_database(&path)?;
        Store::init(db, &path, Some(path.clone()))
    }

    /// Opens the store as [`Store::open`] does; when the file is damaged (empty, not a redb
    /// database, corrupt, another schema) and `reset` is set, renames it aside (see
    /// [`kept_aside_name`]) and starts afresh. Returns the store and where the old file went.
    ///
    /// A file locked by a running server or one that cannot be read for lack of permission is
    /// never moved, reset or not.
    ///
    /// # Errors
    ///
    /// As [`Store::open`]; with `reset`, only the errors a fresh start cannot cure, and
    /// [`StoreError::File`] when the damaged file cannot be renamed.
    pub fn open_or_reset(dir: &Path, reset: bool) -> Result<(Store, Option<PathBuf>), StoreError> {
        match Store::open(dir) {
            Ok(store) => Ok((store, None)),
            Err(error) if reset && error.is_damaged_file() => {
                let path = dir.join(FILE_NAME);
                let aside = kept_aside_name(&path, "bad");
                std::fs::rename(&path, &aside).map_err(|source| StoreError::File {
                    action: "keeping the damaged state database aside as",
                    path: aside.clone(),
                    source,
                })?;
                Ok((Store::open(dir)?, Some(aside)))
            }
            Err(error) => Err(error),
        }
    }

    /// A store kept in memory only (used when no --state-dir is given).
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] if redb cannot initialise the memory backend, which only happens when
    /// memory runs out.
    pub fn in_memory() -> Result<Store, StoreError> {
        let path = Path::new(":memory:");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(InMemoryBackend::new())
            .map_err(|error| StoreError::Open {
                path: path.to_path_buf(),
                source: error.into(),
            })?;
        Store::init(db, path, None)
    }

    /// Whether the last write failed with an I/O error and the database has not been reopened
    /// since.
    pub fn is_failing(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Writes a small value (a counter in the `meta` table) to find out whether writes succeed,
    /// reopening the database first if a write failed; the state manager calls it while the
    /// store is failing, so that it recovers without waiting for an operator's write.
    ///
    /// # Errors
    ///
    /// As any write: [`StoreError::Database`] or [`StoreError::Closed`] while the disk still
    /// refuses.
    pub fn probe(&self) -> Result<(), StoreError> {
        self.write(|db| {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                let count: u64 = match meta.get(WRITE_PROBE_KEY)? {
                    Some(value) => decode(META_TABLE, WRITE_PROBE_KEY, value.value())?,
                    None => 0,
                };
                let value = encode(META_TABLE, WRITE_PROBE_KEY, &count.wrapping_add(1))?;
                meta.insert(WRITE_PROBE_KEY, value.as_slice())?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The open database for one call, reopening it first when a write failed.
    fn db(&self) -> Result<DbGuard<'_>, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            return Err(self.closed("the database is closed"));
        }
        Ok(DbGuard(guard))
    }

    /// Runs a write on the open database and remembers whether it failed with an I/O error.
    fn write<T>(
        &self,
        write: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        let res = write(&db);
        if let Err(error) = &res
            && error.is_io()
            && self.path.is_some()
        {
            self.failed.store(true, Ordering::Release);
        }
        res
    }

    /// Closes the database and opens its file again, at most once per [`REOPEN_INTERVAL`].
    fn reopen(&self) -> Result<(), StoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        {
            let mut last = self
                .last_reopen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < REOPEN_INTERVAL) {
                return Err(self.closed("waiting to retry after an I/O error"));
            }
            *last = Some(Instant::now());
        }
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.failed.load(Ordering::Acquire) {
            // Another call reopened it while this one waited for the lock.
            return Ok(());
        }
        // The old database must be gone (and its file lock released) before the file is opened
        // again; closing it can itself fail on the same I/O error, which changes nothing here.
        if let Some(db) = guard.take() {
            let _ = db.close();
        }
        let db = open_database(path).map_err(|error| self.closed(&error.to_string()))?;
        *guard = Some(db);
        self.failed.store(false, Ordering::Release);
        Ok(())
    }

    fn closed(&self, message: &str) -> StoreError {
        StoreError::Closed {
            path: self
                .path
                .clone()
                .unwrap_or_else(|| PathBuf::from(":memory:")),
            message: message.to_owned(),
        }
    }

    /// Applies `change` and appends `audit` in one transaction; returns the audit sequence number.
    ///
    /// Sequence numbers are 1, 2, 3, ..., gap-free and never reused: a write that fails stores
    /// nothing, including its audit entry.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unencodable`] for a report holding a NaN or infinite number or a directory
    /// placement whose name holds a NUL byte, [`StoreError::Invalid`] for a directory bucket at or
    /// beyond the stored bucket count (or any bucket when no bucket map is stored) and for a
    /// replacing bucket map whose length is not its bucket count, [`StoreError::Database`] if redb
    /// fails (the disk is full, the sync fails), and [`StoreError::Corrupt`] if the last audit key
    /// is already `u64::MAX` or the stored bucket count does not decode.
    pub fn apply(&self, change: &Change, audit: &AuditEntry) -> Result<u64, StoreError> {
        self.write(|db| {
            let txn = db.begin_write()?;
            let seq = write_change(&txn, change, audit)?;
            // An error above drops `txn`, which aborts it: nothing of this write is kept.
            txn.commit()?;
            Ok(seq)
        })
    }

    /// Replaces the reports, the drains and, when `directory` is given, the user directory with
    /// a shared state's (etcd's), in one transaction and without an audit entry: this store is
    /// then the instance's local copy of the fleet's state, read at the next start.
    ///
    /// # Errors
    ///
    /// As [`Store::apply`].
    pub fn mirror(
        &self,
        reports: &std::collections::BTreeMap<String, StoredReport>,
        drains: &std::collections::BTreeSet<DrainKey>,
        directory: Option<&DirectoryChange>,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            let txn = db.begin_write()?;
            txn.delete_table(REPORTS)?;
            txn.delete_table(DRAINS)?;
            {
                let mut table = txn.open_table(REPORTS)?;
                for (datacenter, report) in reports {
                    check_finite(datacenter, report)?;
                    let value = encode(REPORTS_TABLE, datacenter, report)?;
                    table.insert(datacenter.as_str(), value.as_slice())?;
                }
                let mut table = txn.open_table(DRAINS)?;
                for key in drains {
                    let encoded =
                        serde_json::to_string(key).map_err(|error| StoreError::Unencodable {
                            table: DRAINS_TABLE,
                            key: format!("{key:?}"),
                            message: error.to_string(),
                        })?;
                    table.insert(encoded.as_str(), ())?;
                }
            }
            if let Some(change) = directory {
                directory::write_directory_change(&txn, change)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Everything needed to rebuild live state at startup.
    ///
    /// All tables are read in one read transaction, so the result is a consistent snapshot even
    /// while writes go on. The user directory is not part of it: it can hold millions of pins,
    /// which [`Store::load_directory`] streams to the caller instead.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails, [`StoreError::Corrupt`] naming the table and key
    /// of a value that does not decode.
    pub fn load(&self) -> Result<Persisted, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let mut res = Persisted::default();

        for entry in txn.open_table(REPORTS)?.iter()? {
            let (key, value) = entry?;
            let datacenter = key.value().to_owned();
            let report = decode(REPORTS_TABLE, &datacenter, value.value())?;
            res.reports.insert(datacenter, report);
        }

        for entry in txn.open_table(DRAINS)?.iter()? {
            let (key, _) = entry?;
            let encoded = key.value();
            let drain = serde_json::from_str(encoded).map_err(|error| StoreError::Corrupt {
                table: DRAINS_TABLE,
                key: encoded.to_owned(),
                message: error.to_string(),
            })?;
            res.drains.insert(drain);
        }

        for entry in txn.open_table(UNDRAINS)?.iter()? {
            let (key, value) = entry?;
            let encoded = key.value();
            let drain = serde_json::from_str(encoded).map_err(|error| StoreError::Corrupt {
                table: UNDRAINS_TABLE,
                key: encoded.to_owned(),
                message: error.to_string(),
            })?;
            res.undrained.insert(drain, value.value());
        }

        let meta = txn.open_table(META)?;
        if let Some(value) = meta.get(INSTANCE_DRAINED_KEY)? {
            res.instance_drained = decode(META_TABLE, INSTANCE_DRAINED_KEY, value.value())?;
        }

        for entry in txn.open_table(TOGGLES)?.iter()? {
            let (key, value) = entry?;
            let name = key.value().to_owned();
            let on = decode(TOGGLES_TABLE, &name, value.value())?;
            res.toggles.insert(name, on);
        }
        Ok(res)
    }

    /// Audit entries with sequence > `after` (all when None), oldest first, at most `limit`.
    ///
    /// To page through the log, pass the last sequence number of one page as `after` for the
    /// next.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails, [`StoreError::Corrupt`] for an entry that does not
    /// decode.
    pub fn audit_log(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        // Sequence numbers start at 1, so 0 as the lower bound means "from the beginning".
        let start = match after {
            None => 0,
            Some(after) => match after.checked_add(1) {
                Some(start) => start,
                None => return Ok(Vec::new()),
            },
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(AUDIT)?;
        let mut res = Vec::new();
        for entry in table.range(start..)?.take(limit) {
            let (key, value) = entry?;
            let seq = key.value();
            res.push((seq, decode(AUDIT_TABLE, seq, value.value())?));
        }
        Ok(res)
    }

    /// Records a configuration version; idempotent: the same hash twice keeps the first record.
    ///
    /// A hash already stored keeps its whole first record, `first_seen_unix_ms` and text
    /// included: the hash names the content, so a second record under it adds nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails.
    pub fn put_config_version(&self, version: &ConfigVersion) -> Result<(), StoreError> {
        self.write(|db| {
            let txn = db.begin_write()?;
            let inserted = {
                let mut table = txn.open_table(CONFIG_VERSIONS)?;
                if table.get(version.hash.as_str())?.is_some() {
                    false
                } else {
                    let value = encode(CONFIG_VERSIONS_TABLE, &version.hash, version)?;
                    table.insert(version.hash.as_str(), value.as_slice())?;
                    true
                }
            };
            // A known hash changes nothing, so skip the commit and its disk sync.
            if inserted {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(())
        })
    }

    /// All configuration versions' metadata, oldest first (by first_seen, then hash).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails, [`StoreError::Corrupt`] for a value that does not
    /// decode or whose hash differs from its key.
    pub fn config_versions(&self) -> Result<Vec<ConfigVersionMeta>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let mut res = Vec::new();
        for entry in txn.open_table(CONFIG_VERSIONS)?.iter()? {
            let (key, value) = entry?;
            let hash = key.value();
            // serde skips the unknown `text` field, so listing does not copy every config text.
            let meta: ConfigVersionMeta = decode(CONFIG_VERSIONS_TABLE, hash, value.value())?;
            check_hash(hash, &meta.hash)?;
            res.push(meta);
        }
        res.sort_by(|a, b| (a.first_seen_unix_ms, &a.hash).cmp(&(b.first_seen_unix_ms, &b.hash)));
        Ok(res)
    }

    /// One configuration version by hash.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails, [`StoreError::Corrupt`] for a value that does not
    /// decode or whose hash differs from its key.
    pub fn config_version(&self, hash: &str) -> Result<Option<ConfigVersion>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(CONFIG_VERSIONS)?;
        let Some(value) = table.get(hash)? else {
            return Ok(None);
        };
        let version: ConfigVersion = decode(CONFIG_VERSIONS_TABLE, hash, value.value())?;
        check_hash(hash, &version.hash)?;
        Ok(Some(version))
    }

    /// Creates every table, so reads of a fresh store work, and records or checks the schema
    /// version. `path` names the database in errors.
    fn init(db: Database, path: &Path, reopen: Option<PathBuf>) -> Result<Store, StoreError> {
        let open_error = |source: redb::Error| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        Store::create_tables(&db, path).map_err(|error| match error {
            StoreError::Database(source) => open_error(source),
            other => other,
        })?;
        Ok(Store {
            db: RwLock::new(Some(db)),
            path: reopen,
            failed: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
        })
    }

    fn create_tables(db: &Database, path: &Path) -> Result<(), StoreError> {
        let txn = db.begin_write()?;
        {
            txn.open_table(REPORTS)?;
            txn.open_table(DRAINS)?;
            txn.open_table(UNDRAINS)?;
            txn.open_table(AUDIT)?;
            txn.open_table(CONFIG_VERSIONS)?;
            txn.open_table(TOGGLES)?;
            directory::create_tables(&txn)?;
            let mut meta = txn.open_table(META)?;
            let found = match meta.get(SCHEMA_VERSION_KEY)? {
                Some(value) => Some(decode::<u64>(
                    META_TABLE,
                    SCHEMA_VERSION_KEY,
                    value.value(),
                )?),
                None => None,
            };
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: path.to_path_buf(),
                        found,
                    });
                }
                None => {
                    let value = encode(META_TABLE, SCHEMA_VERSION_KEY, &SCHEMA_VERSION)?;
                    meta.insert(SCHEMA_VERSION_KEY, value.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl StoreError {
    /// Whether the error comes from the disk (a full disk, a failed sync) rather than from the
    /// data: the store cannot write until the disk recovers, so the control plane is read-only.
    pub fn is_io(&self) -> bool {
        match self {
            StoreError::Database(error) => {
                matches!(error, redb::Error::Io(_) | redb::Error::PreviousIo)
            }
            StoreError::Closed { .. } => true,
            StoreError::Open { source, .. } => matches!(source, redb::Error::Io(_)),
            _ => false,
        }
    }

    /// Whether the error says the file itself is damaged (empty, not a redb database, corrupt,
    /// written by another schema), as opposed to locked, unreadable for lack of permission or
    /// on a failing disk: only a damaged file may be set aside by `--state-reset`.
    pub fn is_damaged_file(&self) -> bool {
        match self {
            StoreError::Empty { .. } | StoreError::Schema { .. } | StoreError::Corrupt { .. } => {
                true
            }
            StoreError::Open { source, .. } => match source {
                redb::Error::DatabaseAlreadyOpen => false,
                redb::Error::Io(error) => matches!(
                    error.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                _ => true,
            },
            _ => false,
        }
    }
}

/// Opens (creating if missing) the database file at `path`, verifying the whole file.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|error| StoreError::Open {
            path: path.to_path_buf(),
            source: error.into(),
        })
}

/// Appends `audit` and applies `change` inside `txn`, without committing; returns the audit
/// sequence number. Kept apart from [`Store::apply`] so tests can drop the transaction midway.
fn write_change(
    txn: &WriteTransaction,
    change: &Change,
    audit: &AuditEntry,
) -> Result<u64, StoreError> {
    let seq = {
        let mut table = txn.open_table(AUDIT)?;
        // Reading the last key inside this write transaction is race-free: redb runs one write
        // transaction at a time, so no other writer can take the same number.
        let last = table.last()?.map(|(key, _)| key.value());
        let seq = match last {
            None => 1,
            Some(last) => last.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                table: AUDIT_TABLE,
                key: last.to_string(),
                message: "no audit sequence number is left after this one".to_owned(),
            })?,
        };
        let value = encode(AUDIT_TABLE, seq, audit)?;
        table.insert(seq, value.as_slice())?;
        seq
    };

    match change {
        Change::Report { datacenter, report } => {
            check_finite(datacenter, report)?;
            let value = encode(REPORTS_TABLE, datacenter, report)?;
            let mut table = txn.open_table(REPORTS)?;
            table.insert(datacenter.as_str(), value.as_slice())?;
        }
        Change::Drain { key, drained } => {
            let encoded = serde_json::to_string(key).map_err(|error| StoreError::Unencodable {
                table: DRAINS_TABLE,
                key: format!("{key:?}"),
                message: error.to_string(),
            })?;
            let mut table = txn.open_table(DRAINS)?;
            let mut undrains = txn.open_table(UNDRAINS)?;
            if *drained {
                table.insert(encoded.as_str(), ())?;
                undrains.remove(encoded.as_str())?;
            } else {
                // Only a drain in force starts a slow start when lifted.
                if table.remove(encoded.as_str())?.is_some() {
                    undrains.insert(encoded.as_str(), audit.unix_ms)?;
                }
            }
        }
        Change::InstanceDrain { drained } => {
            let value = encode(META_TABLE, INSTANCE_DRAINED_KEY, drained)?;
            let mut table = txn.open_table(META)?;
            table.insert(INSTANCE_DRAINED_KEY, value.as_slice())?;
        }
        Change::Toggle { name, on } => {
            let value = encode(TOGGLES_TABLE, name, on)?;
            let mut table = txn.open_table(TOGGLES)?;
            table.insert(name.as_str(), value.as_slice())?;
        }
        Change::AuditOnly => {}
        Change::Directory(change) => directory::write_directory_change(txn, change)?,
    }
    Ok(seq)
}

/// Refuses NaN and infinities: serde_json writes them as `null`, which would then fail to load
/// as a number and make the whole state unreadable at the next startup.
fn check_finite(datacenter: &str, report: &StoredReport) -> Result<(), StoreError> {
    let mut numbers = vec![
        ("capacity".to_owned(), report.capacity),
        ("load".to_owned(), report.load),
    ];
    if let Some(cost) = report.cost {
        numbers.push(("cost".to_owned(), cost));
    }
    if let Some(ms) = report.service_latency_ms {
        numbers.push(("service_latency_ms".to_owned(), ms));
    }
    for (target, latency) in &report.latency_ms {
        numbers.push((format!("latency_ms.{target}"), *latency));
    }
    match numbers.into_iter().find(|(_, number)| !number.is_finite()) {
        Some((field, number)) => Err(StoreError::Unencodable {
            table: REPORTS_TABLE,
            key: datacenter.to_owned(),
            message: format!("{field} {number} is not a finite number"),
        }),
        None => Ok(()),
    }
}

/// A stored value's hash must be its key; anything else means the file was altered.
fn check_hash(key: &str, stored: &str) -> Result<(), StoreError> {
    if key == stored {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            table: CONFIG_VERSIONS_TABLE,
            key: key.to_owned(),
            message: format!("stored hash {stored} differs from its key"),
        })
    }
}

fn encode<T: Serialize>(
    table: &'static str,
    key: impl Display,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::Unencodable {
        table,
        key: key.to_string(),
        message: error.to_string(),
    })
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: impl Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        table,
        key: key.to_string(),
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests;
