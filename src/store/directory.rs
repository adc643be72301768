//! The user directory's tables: the bucket map, the bucket count and the per-user pins.
//!
//! Users are hashed into buckets by the caller; each bucket, and each pinned user, maps to a
//! [`StoredPlacement`]. There can be ten million pins and a bulk import of millions of them, so
//! these values are not JSON: a placement is stored as its home name, one NUL byte and its replica
//! name (UTF-8), which costs no parsing on load and lets [`Store::load_directory`] hand out
//! borrowed names without allocating per pin. Names never contain NUL; one that does is refused
//! with [`StoreError::Unencodable`] rather than stored as a value that would load back differently.
//!
//! | table | key | value |
//! |---|---|---|
//! | `directory_buckets` | bucket number 0, 1, ..., n-1 | home `\0` replica |
//! | `directory_pins` | user id | home `\0` replica |
//! | `meta` | `directory_n_buckets` | the bucket count, a JSON number |
//!
//! The bucket count doubles as the marker that a directory was ever stored. Changes arrive as
//! [`DirectoryChange`]s through [`Store::apply`], in the caller's write transaction with its audit
//! entry; only [`Store::init_directory`] writes without an audit entry, because storing the
//! configured default layout is not an operator action. This file does not hash users, choose
//! datacenters or check that a named datacenter exists: those are the caller's rules.

use std::fmt::Display;

use redb::{
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use super::{DirectoryChange, StoredPlacement};
use super::{META, META_TABLE, Store, StoreError, decode, encode};

pub(super) const PINS_TABLE: &str = "directory_pins";
pub(super) const BUCKETS_TABLE: &str = "directory_buckets";

pub(super) const PINS: TableDefinition<&str, &[u8]> = TableDefinition::new(PINS_TABLE);
pub(super) const BUCKETS: TableDefinition<u32, &[u8]> = TableDefinition::new(BUCKETS_TABLE);

/// The `meta` key holding the bucket count; absent until a directory is first stored.
pub(super) const N_BUCKETS_KEY: &str = "directory_n_buckets";

impl Store {
    /// The stored directory: bucket count and bucket map (None when nothing was ever stored — the
    /// caller then uses its configured default layout and stores it), visiting every pin in id
    /// order without collecting them.
    ///
    /// Id order is the byte order of the ids' UTF-8, which is `str`'s `Ord`. Pins are visited
    /// even when no bucket map is stored, so none is lost whatever order the caller stored things
    /// in. Everything is read in one read transaction, so the bucket map and the pins are one
    /// consistent snapshot even while writes go on; `visit_pin(user, home, replica)` runs inside
    /// it and gets names borrowed from the database page, so it should copy what it keeps and
    /// not block for long.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails, [`StoreError::Corrupt`] naming the table and key of
    /// a value that does not decode, of a bucket missing below the bucket count, or of one at or
    /// beyond it. Pins visited before a corrupt one have already been handed to `visit_pin`.
    pub fn load_directory(
        &self,
        visit_pin: &mut dyn FnMut(&str, &str, &str),
    ) -> Result<Option<(u32, Vec<StoredPlacement>)>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let n_buckets = read_n_buckets(&txn.open_table(META)?)?;
        let buckets = txn.open_table(BUCKETS)?;
        let res = match n_buckets {
            Some(n_buckets) => Some((n_buckets, read_buckets(&buckets, n_buckets)?)),
            // Buckets without a count can only come from an altered file: say so rather than
            // silently replace them with the default layout.
            None if !buckets.is_empty()? => {
                return Err(StoreError::Corrupt {
                    table: META_TABLE,
                    key: N_BUCKETS_KEY.to_owned(),
                    message: format!(
                        "missing while {BUCKETS_TABLE} holds {} buckets",
                        buckets.len()?
                    ),
                });
            }
            None => None,
        };

        for entry in txn.open_table(PINS)?.iter()? {
            let (key, value) = entry?;
            let user = key.value();
            let (home, replica) = decode_placement(PINS_TABLE, user, value.value())?;
            visit_pin(user, home, replica);
        }
        Ok(res)
    }

    /// Stores an initial bucket map if none is stored yet (idempotent; no audit entry: it is the
    /// configured default, not an operator action). Returns whether it wrote.
    ///
    /// `buckets[i]` is bucket `i`. Pins are left alone: any stored before stay.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if `buckets` does not hold exactly `n_buckets` placements,
    /// [`StoreError::Unencodable`] for a name holding a NUL byte, [`StoreError::Corrupt`] if the
    /// stored bucket count does not decode, and [`StoreError::Database`] if redb fails.
    pub fn init_directory(
        &self,
        n_buckets: u32,
        buckets: &[StoredPlacement],
    ) -> Result<bool, StoreError> {
        check_layout(n_buckets, buckets)?;
        self.write(|db| {
            let txn = db.begin_write()?;
            // Checking inside the write transaction is race-free: redb runs one writer at a time,
            // so two concurrent first starts cannot both see an empty directory.
            if read_n_buckets(&txn.open_table(META)?)?.is_some() {
                // Nothing changed, so skip the commit and its disk sync.
                txn.abort()?;
                return Ok(false);
            }
            write_layout(&txn, n_buckets, buckets)?;
            txn.commit()?;
            Ok(true)
        })
    }

    /// Number of pins.
    ///
    /// redb keeps each table's length in its header, so this does not walk the pins.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] if redb fails.
    pub fn count_pins(&self) -> Result<u64, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(txn.open_table(PINS)?.len()?)
    }
}

/// Creates the directory tables inside `txn`, so reads of a fresh store work.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(PINS)?;
    txn.open_table(BUCKETS)?;
    Ok(())
}

/// Applies `change` inside `txn`, without committing; the caller has already written the audit
/// entry in the same transaction, so an error here (the caller then drops `txn`) discards both.
pub(super) fn write_directory_change(
    txn: &WriteTransaction,
    change: &DirectoryChange,
) -> Result<(), StoreError> {
    match change {
        DirectoryChange::Pins(pins) => {
            let mut table = txn.open_table(PINS)?;
            // One buffer for every value: a bulk import of millions of pins then allocates once.
            let mut value = Vec::new();
            for (user, placement) in in_key_order(pins) {
                match placement {
                    Some(placement) => {
                        encode_placement(PINS_TABLE, user, placement, &mut value)?;
                        table.insert(user.as_str(), value.as_slice())?;
                    }
                    // Removing a pin that is not there is a no-op in redb, as the change allows.
                    None => {
                        table.remove(user.as_str())?;
                    }
                }
            }
        }
        DirectoryChange::Buckets(buckets) => {
            let n_buckets = read_n_buckets(&txn.open_table(META)?)?;
            // Checked before writing any bucket, although the dropped transaction would discard
            // them anyway: the error then names the first bad bucket, whatever its position.
            if let Some((bucket, _)) = buckets
                .iter()
                .find(|(bucket, _)| n_buckets.is_none_or(|n_buckets| *bucket >= n_buckets))
            {
                let message = match n_buckets {
                    Some(n_buckets) => {
                        format!("bucket {bucket} is out of range: there are {n_buckets} buckets")
                    }
                    None => format!("bucket {bucket} is out of range: no bucket map is stored"),
                };
                return Err(StoreError::Invalid {
                    table: BUCKETS_TABLE,
                    key: bucket.to_string(),
                    message,
                });
            }
            let mut table = txn.open_table(BUCKETS)?;
            let mut value = Vec::new();
            for (bucket, placement) in buckets {
                encode_placement(BUCKETS_TABLE, bucket, placement, &mut value)?;
                table.insert(*bucket, value.as_slice())?;
            }
        }
        DirectoryChange::Replace {
            n_buckets,
            buckets,
            pins,
        } => {
            write_layout(txn, *n_buckets, buckets)?;
            // Deleting the table frees its pages wholesale instead of removing millions of keys
            // one by one; the deletion is part of `txn`, so an abort brings every pin back.
            txn.delete_table(PINS)?;
            let mut table = txn.open_table(PINS)?;
            let mut value = Vec::new();
            for (user, placement) in in_key_order(pins) {
                encode_placement(PINS_TABLE, user, placement, &mut value)?;
                table.insert(user.as_str(), value.as_slice())?;
            }
        }
    }
    Ok(())
}

/// Splits a stored placement into its home and replica names, borrowed from `bytes`.
pub(super) fn decode_placement<'a>(
    table: &'static str,
    key: impl Display,
    bytes: &'a [u8],
) -> Result<(&'a str, &'a str), StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        table,
        key: key.to_string(),
        message,
    };
    let text =
        std::str::from_utf8(bytes).map_err(|error| corrupt(format!("not UTF-8: {error}")))?;
    let Some((home, replica)) = text.split_once('\0') else {
        return Err(corrupt(
            "no NUL byte separates the home and replica names".to_owned(),
        ));
    };
    if replica.contains('\0') {
        return Err(corrupt("more than one NUL byte".to_owned()));
    }
    Ok((home, replica))
}

/// The stored bucket count, if a directory was ever stored.
fn read_n_buckets(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<u32>, StoreError> {
    match meta.get(N_BUCKETS_KEY)? {
        Some(value) => Ok(Some(decode(META_TABLE, N_BUCKETS_KEY, value.value())?)),
        None => Ok(None),
    }
}

/// Every bucket's placement, checking that the table holds exactly buckets `0..n_buckets`.
fn read_buckets(
    table: &impl ReadableTable<u32, &'static [u8]>,
    n_buckets: u32,
) -> Result<Vec<StoredPlacement>, StoreError> {
    // The capacity comes from the table, not the stored count, so a corrupt count cannot make
    // this allocate gigabytes before the mismatch is found.
    let capacity = usize::try_from(table.len()?.min(u64::from(n_buckets))).unwrap_or(0);
    let mut res = Vec::with_capacity(capacity);
    for entry in table.iter()? {
        let (key, value) = entry?;
        let bucket = key.value();
        // Keys come in ascending order, so the first key that is not the next bucket number
        // shows either a gap (a missing bucket) or a bucket beyond the count.
        let expected = u32::try_from(res.len()).unwrap_or(u32::MAX);
        if bucket >= n_buckets {
            return Err(StoreError::Corrupt {
                table: BUCKETS_TABLE,
                key: bucket.to_string(),
                message: format!("bucket beyond the bucket count {n_buckets}"),
            });
        }
        if bucket != expected {
            return Err(missing_bucket(expected, n_buckets));
        }
        let (home, replica) = decode_placement(BUCKETS_TABLE, bucket, value.value())?;
        res.push(StoredPlacement {
            home: home.to_owned(),
            replica: replica.to_owned(),
        });
    }
    let found = u32::try_from(res.len()).unwrap_or(u32::MAX);
    if found < n_buckets {
        return Err(missing_bucket(found, n_buckets));
    }
    Ok(res)
}

fn missing_bucket(bucket: u32, n_buckets: u32) -> StoreError {
    StoreError::Corrupt {
        table: BUCKETS_TABLE,
        key: bucket.to_string(),
        message: format!("missing, though the bucket count is {n_buckets}"),
    }
}

/// Replaces the bucket map and the bucket count inside `txn`.
fn write_layout(
    txn: &WriteTransaction,
    n_buckets: u32,
    buckets: &[StoredPlacement],
) -> Result<(), StoreError> {
    check_layout(n_buckets, buckets)?;
    // Any buckets left from an earlier layout go, including those beyond a smaller new count.
    txn.delete_table(BUCKETS)?;
    {
        let mut table = txn.open_table(BUCKETS)?;
        let mut value = Vec::new();
        for (bucket, placement) in (0..n_buckets).zip(buckets) {
            encode_placement(BUCKETS_TABLE, bucket, placement, &mut value)?;
            table.insert(bucket, value.as_slice())?;
        }
    }
    let count = encode(META_TABLE, N_BUCKETS_KEY, &n_buckets)?;
    txn.open_table(META)?
        .insert(N_BUCKETS_KEY, count.as_slice())?;
    Ok(())
}

/// A layout must place every bucket exactly once, or it would load as corrupt.
fn check_layout(n_buckets: u32, buckets: &[StoredPlacement]) -> Result<(), StoreError> {
    if u32::try_from(buckets.len()) == Ok(n_buckets) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            table: META_TABLE,
            key: N_BUCKETS_KEY.to_owned(),
            message: format!(
                "{} bucket placements given for a bucket count of {n_buckets}",
                buckets.len()
            ),
        })
    }
}

/// Writes `placement` as home, NUL, replica into `value`, replacing what it held.
fn encode_placement(
    table: &'static str,
    key: impl Display,
    placement: &StoredPlacement,
    value: &mut Vec<u8>,
) -> Result<(), StoreError> {
    for (field, name) in [("home", &placement.home), ("replica", &placement.replica)] {
        if name.as_bytes().contains(&0) {
            return Err(StoreError::Unencodable {
                table,
                key: key.to_string(),
                message: format!("{field} name {name:?} contains a NUL byte"),
            });
        }
    }
    value.clear();
    value.extend_from_slice(placement.home.as_bytes());
    value.push(0);
    value.extend_from_slice(placement.replica.as_bytes());
    Ok(())
}

/// The rows in user id order, rows for the same user kept in their given order.
///
/// In id order, consecutive inserts go to the same leaf page, which the transaction has already
/// copied and still holds in memory; in import order nearly every insert reaches a different
/// page. Measured on a million-pin import, sorting first cut the apply time by about a third and
/// the file to about half its size. The sort moves `(id, position)` pairs, so each comparison
/// reads the ids directly, and the position keeps the given order for one user: the last row for
/// a user is still applied last. The pairs cost 24 bytes a row, against the change's own
/// three strings a row.
fn in_key_order<T>(rows: &[(String, T)]) -> impl Iterator<Item = &(String, T)> {
    let mut order: Vec<(&str, usize)> = rows
        .iter()
        .enumerate()
        .map(|(position, (user, _))| (user.as_str(), position))
        .collect();
    // The pairs are all distinct, so an unstable sort gives the one order there is.
    order.sort_unstable();
    order.into_iter().map(move |(_, position)| &rows[position])
}
