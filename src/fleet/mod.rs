//! A fleet's shared state in etcd: every control-plane write as one etcd transaction, and a
//! watch that hands every change (from any instance) back to the state manager.
//!
//! Keys under the configured prefix `P`:
//!
//! | key | value |
//! |---|---|
//! | `P/reports/{datacenter}` | [`StoredReport`] as JSON |
//! | `P/drains/{drain key as JSON}` | empty: presence means drained |
//! | `P/directory/buckets` | the whole bucket map, JSON list of [`StoredPlacement`] |
//! | `P/directory/generation` | the name of the pin set in force, JSON string (absent: `""`) |
//! | `P/directory/generations/{name}/{user}` | a pin of generation `name`, [`StoredPlacement`] |
//! | `P/directory/pins/{user}` | a pin of the first generation (`""`), [`StoredPlacement`] |
//! | `P/toggles/{name}` | whether the feature toggle is on, JSON |
//! | `P/banned/{id}` | a banned-query rule, [`StoredBan`] as JSON |
//! | `P/instances/{instance}` | [`InstanceRecord`], under the instance's lease |
//! | `P/writes/{instance}` | the number of the instance's last write, under its lease |
//! | `P/changes` | the last write's [`Record`]: the change, its audit entry, the instance |
//! | `P/config/current` | the configuration version the fleet serves, [`ConfigPointer`] |
//! | `P/config/chunks/{version}/{i}` | that version ([`ConfigVersion`] as JSON) in pieces of at most [`CHUNK_BYTES`] |
//!
//! A configuration version is published in two steps, since etcd takes at most about 1.5 MiB in
//! one request: its pieces are put first (each its own request, under the version's content
//! hash, so rewriting them is harmless), then one transaction, which succeeds only if every piece
//! is there, switches `P/config/current` to it, writes its `P/changes` record (with its audit
//! entry) and deletes the pieces of every other version. Followers read the pieces at the
//! record's revision, when they are all there whatever was published since.
//!
//! A write puts its state keys and `P/changes` in one transaction, so they share one revision.
//! Followers apply the [`Record`] of each revision in order with the same code the embedded store
//! uses (`LiveState::with`), and mirror it with its audit entry into their local store; the state
//! keys are read whole ([`Fleet::read_all`]) only at start, after a reconnect that finds the
//! watch's revision compacted, and whenever the watch cannot resume. So no instance ever sees half
//! a write, and every instance applies the same writes in the same (etcd's) order.
//!
//! Every write of an instance puts its number into `P/writes/{instance}`, comparing that key's
//! version with the one the instance's last write left: an attempt sent again after a reply was
//! lost finds the earlier attempt stored and stores nothing more, so no write is applied (or
//! audited) twice, and no retried write puts an older value back over a newer one.
//!
//! A directory change too large for one transaction (an import of more than [`MAX_TXN_OPS`] pins,
//! every restore) writes the whole new pin set as a new generation in as many transactions as it
//! takes, then switches `P/directory/generation` to it in one transaction that also holds the
//! bucket map, the change record and the deletion of every other generation. Followers read the
//! generation at the switch's revision and apply it as one replacement, so readers see the old
//! pin set or the new one, never a mix; an import that dies half-way leaves only unreferenced
//! keys, which the next switch deletes. Every directory write touches the pointer and compares
//! its revision, so no small write can land in a generation that is being replaced.
//!
//! This module does not decide anything: it encodes changes, runs transactions and decodes what
//! the watch delivers. Rules (safety rails, freshness) stay in `state`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::EtcdConfig;
use crate::store::{
    AuditEntry, Change, ConfigVersion, DirectoryChange, DrainKey, StoredBan, StoredPlacement,
    StoredReport,
};

/// The most operations one write puts in a transaction: etcd refuses more than 128 by default
/// (`--max-txn-ops`), and one is the change record.
pub const MAX_TXN_OPS: usize = 120;

/// How long a write or a read may take before etcd counts as unreachable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a write is tried before etcd counts as unreachable.
const WRITE_BUDGET: Duration = Duration::from_secs(4);

/// How long the follower's failures must last before etcd counts as lost (an election after a
/// member's death takes about a second).
const DOWN_AFTER: Duration = Duration::from_secs(2);

/// How long one attempt of a write may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How long the follower (and a write) waits before trying etcd again after a failure.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// How long an instance stays listed after it stops renewing its lease.
pub const INSTANCE_TTL_SECONDS: i64 = 10;

/// How often an instance renews its lease (and rewrites its record when it changed).
const RENEW_INTERVAL: Duration = Duration::from_secs(1);

/// Keys per page when the whole state is read.
const PAGE: i64 = 5_000;

/// The largest piece of a configuration version in one etcd request (etcd's default request
/// limit is 1.5 MiB).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// The most pieces a configuration version may have (so its configuration and zone files may
/// take at most 64 MiB, encoded): the transaction that publishes it checks each one.
pub const MAX_CHUNKS: usize = 64;

/// How many times a directory write is tried again when another one moved the generation
/// pointer between its read and its transaction.
const CONFLICT_ATTEMPTS: usize = 5;

/// The directory's generation pointer (under the prefix).
const GENERATION_KEY: &str = "directory/generation";

/// Where named generations of the pin set live (under the prefix).
const GENERATIONS: &str = "directory/generations/";

/// Where the first generation (`""`) of the pin set lives (under the prefix).
const FIRST_GENERATION: &str = "directory/pins/";

/// The key prefix (under the fleet's prefix) of generation `name`'s pins.
fn pins_of(name: &str) -> String {
    if name.is_empty() {
        FIRST_GENERATION.to_owned()
    } else {
        format!("{GENERATIONS}{name}/")
    }
}

/// One accepted write as the fleet sees it: the change, its audit entry, and which instance
/// accepted it (an instance drain applies to that instance only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The instance that accepted the write ([`Fleet::instance`]).
    pub origin: String,
    /// The change.
    pub change: Change,
    /// Its audit entry.
    pub audit: AuditEntry,
    /// The configuration version this write published, if it published one (a reload; the
    /// change is then [`Change::AuditOnly`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigPointer>,
    /// Set when the write switched the directory to a new generation of the pin set: `change`
    /// is then [`Change::AuditOnly`], and the follower reads the generation (and the bucket
    /// map) at the record's revision and delivers it as a [`DirectoryChange::Replace`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

/// Which configuration version the fleet serves, and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPointer {
    /// The version (hex SHA-256 of its text and zone files).
    pub version: String,
    /// How many pieces it is stored in.
    pub chunks: usize,
    /// Its encoded size, in bytes.
    pub bytes: usize,
}

/// An instance of the fleet as it registers itself (under a lease, so that it disappears when
/// it stops).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Its name ([`Fleet::instance`]).
    pub instance: String,
    /// Its configured identity (NSID, `id.server`).
    pub identity: String,
    /// The state revision it serves.
    pub revision: i64,
    /// When it last wrote this record, Unix milliseconds on its own clock.
    pub updated_unix_ms: u64,
}

/// The fleet's whole state at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetState {
    /// The etcd revision it was read at (the watch goes on from the next one).
    pub revision: i64,
    /// The revision of the last change record (0: none), which is the state revision an
    /// instance serves: etcd's own revision also counts writes that are not changes (instance
    /// records), so instances that read the state at different moments would show different
    /// revisions for the same state.
    pub changed: i64,
    /// Each datacenter's latest report.
    pub reports: BTreeMap<String, StoredReport>,
    /// Drains in force.
    pub drains: BTreeSet<DrainKey>,
    /// The bucket map, once an instance has laid it out.
    pub buckets: Option<Vec<StoredPlacement>>,
    /// Every pin of the generation in force.
    pub pins: Vec<(String, StoredPlacement)>,
    /// The name of the generation in force (`""`: the first).
    pub generation: String,
    /// Feature toggles an operator set, by name.
    pub toggles: BTreeMap<String, bool>,
    /// Banned-query rules, by id.
    pub banned: BTreeMap<String, StoredBan>,
    /// The configuration version the fleet serves, once one was published.
    pub config: Option<ConfigPointer>,
}

/// What the follower tells the state manager, in etcd's order.
#[derive(Debug)]
pub enum FleetEvent {
    /// The whole state, read at start or after the watch could not resume: replaces everything.
    Synced(FleetState),
    /// The writes of one or more revisions, in order; `revision` is the last one's.
    Changed {
        /// The revision of the last record.
        revision: i64,
        /// The records, oldest first.
        records: Vec<Record>,
    },
    /// etcd cannot be reached (or has no leader): why.
    Down(String),
    /// etcd is reachable again and the watch resumed where it left off (no write was missed).
    Up,
    /// The whole state is read again while running (a [`FleetEvent::Synced`] follows): the
    /// watch's revision was compacted away, or (`restored`) etcd's cluster id changed or its
    /// revision went below the one this instance serves, as after a restore from a backup.
    Resync {
        /// Whether etcd was restored (else its history was compacted).
        restored: bool,
    },
}

/// etcd refused or could not take a write.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// etcd cannot be reached, has no leader, or did not answer in time.
    #[error("etcd is unreachable: {0}")]
    Unavailable(String),
    /// The change needs more operations than one etcd transaction takes.
    #[error(
        "the change needs {ops} operations, more than one etcd transaction takes ({MAX_TXN_OPS}); split it"
    )]
    TooLarge {
        /// Operations the change needs.
        ops: usize,
    },
    /// Other directory writes kept moving the generation pointer; nothing was stored.
    #[error(
        "other directory writes kept changing the directory while this one was written; nothing was stored, try again"
    )]
    Conflict,
    /// The drains changed since the state a safety rail judged the drain by (another instance
    /// drained meanwhile); nothing was stored.
    #[error(
        "another drain was stored while this one was checked; nothing was stored, try again (the check runs on the new state)"
    )]
    Raced,
    /// A value cannot be encoded, or a stored value does not decode.
    #[error("etcd value at {key}: {message}")]
    Value {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The client could not be built from the configuration (a bad URL, an unreadable TLS file).
    #[error("etcd client: {0}")]
    Client(String),
}

impl From<etcd_client::Error> for FleetError {
    fn from(error: etcd_client::Error) -> Self {
        FleetError::Unavailable(error.to_string())
    }
}

/// A connection to the fleet's etcd cluster. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    client: Client,
    prefix: String,
    instance: String,
    /// This instance's own writes, one at a time (a tokio `Mutex`: held across the write's
    /// attempts, so that a retried write is compared against its own earlier attempt).
    writes: Arc<tokio::sync::Mutex<WriteLog>>,
    /// The lease the instance is registered under (0: none yet), which its write key rides.
    lease: Arc<AtomicI64>,
}

/// What this instance knows of its write key `P/writes/{instance}`: each write puts its number
/// there in the same transaction, comparing the key's version with the one its last write left.
/// An attempt that timed out but was applied makes the next attempt's comparison fail, and the
/// key then holds this write's number: the write is done, once (no second change record, no
/// second audit entry, no older value put back over a newer one).
#[derive(Debug, Default)]
struct WriteLog {
    /// Writes so far.
    count: u64,
    /// The key's version after the last write (0: absent, as etcd counts it).
    version: i64,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A client of the cluster `config` names. Connections are made lazily (and again after
    /// failures), so this succeeds while etcd is down unless a user must log in.
    ///
    /// # Errors
    ///
    /// [`FleetError::Client`] for a bad endpoint or TLS file, [`FleetError::Unavailable`] when a
    /// configured user cannot log in.
    pub async fn connect(config: &EtcdConfig) -> Result<Fleet, FleetError> {
        let mut options = ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT * 2)
            .with_require_leader(true);
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        if let Some(tls) = &config.tls {
            let read = |path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|error| FleetError::Client(format!("{}: {error}", path.display())))
            };
            let mut settings = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca {
                settings = settings.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &tls.identity {
                settings =
                    settings.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(settings);
        }
        let client = match &config.user {
            Some(_) => tokio::time::timeout(
                REQUEST_TIMEOUT * 2,
                Client::connect(&config.endpoints, Some(options)),
            )
            .await
            .map_err(|_| FleetError::Unavailable("logging in timed out".to_owned()))??,
            None => Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(|error| FleetError::Client(error.to_string()))?,
        };
        Ok(Fleet {
            client,
            prefix: config.prefix.clone(),
            instance: instance_name(),
            writes: Arc::default(),
            lease: Arc::default(),
        })
    }

    /// This instance's name in the fleet: host, process and a counter, unique among running
    /// instances.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// Stores `change` and its audit entry in one transaction; returns its revision.
    ///
    /// `buckets` is the whole bucket map after the change, for a change of the directory (the
    /// map is one key). `drains_at`, for a drain a safety rail judged on the state of that
    /// revision, makes the transaction compare every drain key's revision with it: a drain
    /// stored meanwhile (by any instance) fails it with [`FleetError::Raced`].
    ///
    /// # Errors
    ///
    /// [`FleetError::Unavailable`] when etcd cannot take it (nothing was stored, or, on a timeout,
    /// it may have been: the watch then delivers it), [`FleetError::TooLarge`] and
    /// [`FleetError::Value`] when it cannot be one transaction, [`FleetError::Raced`] and
    /// [`FleetError::Conflict`] when other writes came first.
    pub async fn commit(
        &self,
        change: &Change,
        audit: &AuditEntry,
        buckets: Option<&[StoredPlacement]>,
        drains_at: Option<i64>,
    ) -> Result<i64, FleetError> {
        if let Change::Directory(directory) = change {
            return self.commit_directory(directory, audit, buckets).await;
        }
        let mut ops = self.state_ops(change, buckets, "")?;
        ops.push(self.record(change, audit, None)?);
        if ops.len() > MAX_TXN_OPS + 1 {
            return Err(FleetError::TooLarge { ops: ops.len() });
        }
        let compares = drains_at
            .map(|revision| {
                Compare::mod_revision(self.key("drains/"), CompareOp::Less, revision + 1)
                    .with_prefix()
            })
            .into_iter()
            .collect();
        self.write(compares, ops).await?.ok_or(FleetError::Raced)
    }

    /// Runs one write of this instance: `ops` when `compares` hold, with the write key (see
    /// [`WriteLog`]), tried again on another connection while attempts fail, for up to
    /// [`WRITE_BUDGET`]. Returns the revision it was stored at, or `None` when one of `compares`
    /// failed (nothing was stored).
    async fn write(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<i64>, FleetError> {
        let mut log = self.writes.lock().await;
        log.count += 1;
        let number = log.count.to_string();
        let key = self.key(&format!("writes/{}", self.instance));
        let mut kv = self.client.kv_client();
        // A request sent down the connection of a member that just died waits for that
        // connection to fail: another attempt goes to a live member. A member's death may also
        // cost an election: attempts go on, a little apart, for up to WRITE_BUDGET.
        let deadline = tokio::time::Instant::now() + WRITE_BUDGET;
        loop {
            let lease = self.lease.load(Ordering::Relaxed);
            let put = (lease != 0).then(|| PutOptions::new().with_lease(lease));
            let mut when = vec![Compare::version(key.clone(), CompareOp::Equal, log.version)];
            when.extend(compares.iter().cloned());
            let mut then = vec![TxnOp::put(key.clone(), number.clone(), put)];
            then.extend(ops.iter().cloned());
            let txn = Txn::new()
                .when(when)
                .and_then(then)
                .or_else([TxnOp::get(key.clone(), None)]);
            let failure = match tokio::time::timeout(ATTEMPT_TIMEOUT, kv.txn(txn)).await {
                Ok(Ok(response)) if response.succeeded() => {
                    log.version += 1;
                    return Ok(Some(revision_of(&response)));
                }
                Ok(Ok(response)) => {
                    let stored = response.op_responses().into_iter().find_map(|op| match op {
                        TxnOpResponse::Get(get) => Some(
                            get.kvs()
                                .first()
                                .map(|kv| (kv.value().to_vec(), kv.version(), kv.mod_revision())),
                        ),
                        _ => None,
                    });
                    match stored.flatten() {
                        // An earlier attempt of this write was stored.
                        Some((value, version, revision)) if value == number.as_bytes() => {
                            log.version = version;
                            return Ok(Some(revision));
                        }
                        // The key moved otherwise (its lease expired during an outage, say):
                        // compare with what it is now.
                        Some((_, version, _)) if version != log.version => {
                            log.version = version;
                            continue;
                        }
                        None if log.version != 0 => {
                            log.version = 0;
                            continue;
                        }
                        _ => return Ok(None),
                    }
                }
                Ok(Err(error)) => {
                    let error = error.to_string();
                    if error.contains("lease not found") {
                        // Registration grants a new lease; until then the key goes without.
                        self.lease.store(0, Ordering::Relaxed);
                    }
                    error
                }
                Err(_) => "the write timed out".to_owned(),
            };
            if tokio::time::Instant::now() + RETRY_INTERVAL >= deadline {
                return Err(FleetError::Unavailable(failure));
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// The `P/changes` operation of a write.
    fn record(
        &self,
        change: &Change,
        audit: &AuditEntry,
        generation: Option<String>,
    ) -> Result<TxnOp, FleetError> {
        let record = Record {
            origin: self.instance.clone(),
            change: change.clone(),
            audit: audit.clone(),
            generation,
            config: None,
        };
        Ok(TxnOp::put(
            self.key("changes"),
            encode("changes", &record)?,
            None,
        ))
    }

    /// Runs `txn`, again while attempts fail, for up to [`WRITE_BUDGET`]: for transactions
    /// that may be applied twice (the puts of a generation not yet in force).
    async fn run_txn(&self, txn: Txn) -> Result<TxnResponse, FleetError> {
        let mut kv = self.client.kv_client();
        let deadline = tokio::time::Instant::now() + WRITE_BUDGET;
        loop {
            let failure = match tokio::time::timeout(ATTEMPT_TIMEOUT, kv.txn(txn.clone())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the write timed out".to_owned(),
            };
            if tokio::time::Instant::now() + RETRY_INTERVAL >= deadline {
                return Err(FleetError::Unavailable(failure));
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Stores a directory change: in one transaction when it fits, else as a new generation of
    /// the pin set and a switch to it. Either way the transaction compares the generation
    /// pointer's revision with the one read, and tries again when another write moved it.
    async fn commit_directory(
        &self,
        directory: &DirectoryChange,
        audit: &AuditEntry,
        buckets: Option<&[StoredPlacement]>,
    ) -> Result<i64, FleetError> {
        let change = Change::Directory(directory.clone());
        for _ in 0..CONFLICT_ATTEMPTS {
            let pointer = self.pointer().await?;
            let committed = match self.small_directory_ops(directory, buckets, &pointer)? {
                Some(mut ops) => {
                    ops.push(self.record(&change, audit, None)?);
                    let compare = Compare::mod_revision(
                        self.key(GENERATION_KEY),
                        CompareOp::Equal,
                        pointer.mod_revision,
                    );
                    self.write(vec![compare], ops).await?
                }
                None => self.switch(directory, audit, buckets, &pointer).await?,
            };
            if let Some(revision) = committed {
                return Ok(revision);
            }
            debug!("another directory write moved the generation pointer; trying again");
        }
        Err(FleetError::Conflict)
    }

    /// The operations of a directory change that fits one transaction (the pointer touched, so
    /// that a generation switch racing with it fails), or `None`.
    fn small_directory_ops(
        &self,
        directory: &DirectoryChange,
        buckets: Option<&[StoredPlacement]>,
        pointer: &Pointer,
    ) -> Result<Option<Vec<TxnOp>>, FleetError> {
        if matches!(directory, DirectoryChange::Replace { .. }) {
            return Ok(None);
        }
        let change = Change::Directory(directory.clone());
        let mut ops = self.state_ops(&change, buckets, &pointer.generation)?;
        // The pointer and the change record.
        if ops.len() + 2 > MAX_TXN_OPS + 1 {
            return Ok(None);
        }
        let key = self.key(GENERATION_KEY);
        ops.push(TxnOp::put(
            key.clone(),
            encode(&key, &pointer.generation)?,
            None,
        ));
        Ok(Some(ops))
    }

    /// Writes the pin set after `directory` as a new generation, then switches to it when the
    /// pointer is still where `pointer` read it; `None` when it moved (the new generation is then
    /// deleted again).
    async fn switch(
        &self,
        directory: &DirectoryChange,
        audit: &AuditEntry,
        buckets: Option<&[StoredPlacement]>,
        pointer: &Pointer,
    ) -> Result<Option<i64>, FleetError> {
        let (pins, buckets) = match directory {
            DirectoryChange::Replace { buckets, pins, .. } => {
                let pins: BTreeMap<&str, &StoredPlacement> =
                    pins.iter().map(|(u, p)| (u.as_str(), p)).collect();
                (encode_pins(&pins)?, Some(buckets.as_slice()))
            }
            DirectoryChange::Pins(changes) => {
                let mut pins: BTreeMap<String, StoredPlacement> = self
                    .read_pins(&pointer.generation, pointer.revision)
                    .await?
                    .into_iter()
                    .collect();
                for (user, placement) in changes {
                    match placement {
                        Some(placement) => pins.insert(user.clone(), placement.clone()),
                        None => pins.remove(user),
                    };
                }
                let pins: BTreeMap<&str, &StoredPlacement> =
                    pins.iter().map(|(u, p)| (u.as_str(), p)).collect();
                (encode_pins(&pins)?, buckets)
            }
            DirectoryChange::Buckets(_) => {
                return Err(FleetError::Value {
                    key: self.key(GENERATION_KEY),
                    message: "a bucket move fits one transaction".to_owned(),
                });
            }
        };
        let Some(buckets) = buckets else {
            return Err(FleetError::Value {
                key: self.key("directory/buckets"),
                message: "no bucket map to switch with: the directory is not laid out".into(),
            });
        };
        let name = format!("{:020}-{}", pointer.revision, self.instance);
        let prefix = self.key(&pins_of(&name));
        for chunk in pins.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(user, value)| TxnOp::put(format!("{prefix}{user}"), value.clone(), None))
                .collect();
            if let Err(error) = self.run_txn(Txn::new().and_then(ops)).await {
                // What was written is unreferenced: the next switch deletes it.
                self.discard(&name).await;
                return Err(error);
            }
        }
        let pointer_key = self.key(GENERATION_KEY);
        let buckets_key = self.key("directory/buckets");
        let generations = self.key(GENERATIONS);
        let all_generations = prefix_end(generations.as_bytes());
        let mut ops = vec![
            TxnOp::put(pointer_key.clone(), encode(&pointer_key, &name)?, None),
            TxnOp::put(buckets_key.clone(), encode(&buckets_key, buckets)?, None),
            self.record(&Change::AuditOnly, audit, Some(name.clone()))?,
            // Every other generation goes: the one replaced, and any a failed import left.
            TxnOp::delete(
                generations.clone(),
                Some(DeleteOptions::new().with_range(prefix.clone())),
            ),
            TxnOp::delete(
                prefix_end(prefix.as_bytes()),
                Some(DeleteOptions::new().with_range(all_generations)),
            ),
        ];
        ops.push(TxnOp::delete(
            self.key(FIRST_GENERATION),
            Some(DeleteOptions::new().with_prefix()),
        ));
        let compare = Compare::mod_revision(pointer_key, CompareOp::Equal, pointer.mod_revision);
        // When etcd goes away it may have switched after all: the watch then delivers it. If
        // not, the next switch deletes the generation.
        let Some(revision) = self.write(vec![compare], ops).await? else {
            self.discard(&name).await;
            return Ok(None);
        };
        info!(
            generation = name,
            pins = pins.len(),
            "switched the fleet's directory to a new generation"
        );
        Ok(Some(revision))
    }

    /// Deletes generation `name` (not in force), as far as etcd lets it now.
    async fn discard(&self, name: &str) {
        let mut kv = self.client.kv_client();
        let prefix = self.key(&pins_of(name));
        let deleted = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.delete(prefix, Some(DeleteOptions::new().with_prefix())),
        )
        .await;
        if !matches!(deleted, Ok(Ok(_))) {
            debug!(
                generation = name,
                "could not delete an unused generation; the next switch does"
            );
        }
    }

    /// The directory's generation pointer now.
    async fn pointer(&self) -> Result<Pointer, FleetError> {
        let key = self.key(GENERATION_KEY);
        let mut kv = self.client.kv_client();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key.clone(), None))
            .await
            .map_err(|_| FleetError::Unavailable("reading the directory timed out".into()))??;
        let revision = response.header().map_or(0, |h| h.revision());
        Ok(match response.kvs().first() {
            Some(kv) => Pointer {
                generation: decode(&key, kv.value())?,
                mod_revision: kv.mod_revision(),
                revision,
            },
            None => Pointer {
                generation: String::new(),
                mod_revision: 0,
                revision,
            },
        })
    }

    /// The pins of generation `name` at `revision`.
    async fn read_pins(
        &self,
        name: &str,
        revision: i64,
    ) -> Result<Vec<(String, StoredPlacement)>, FleetError> {
        let prefix = self.key(&pins_of(name));
        let mut pins = Vec::new();
        self.read_range(&prefix, revision, |kv| {
            let key = String::from_utf8_lossy(kv.key());
            if let Some(user) = key.strip_prefix(&prefix) {
                pins.push((user.to_owned(), decode(&key, kv.value())?));
            }
            Ok(())
        })
        .await?;
        Ok(pins)
    }

    /// The cluster's id and revision now.
    async fn cluster(&self) -> Result<(u64, i64), FleetError> {
        let mut kv = self.client.kv_client();
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(
                self.key("changes"),
                Some(GetOptions::new().with_count_only()),
            ),
        )
        .await
        .map_err(|_| FleetError::Unavailable("reading etcd's revision timed out".into()))??;
        Ok(response
            .header()
            .map_or((0, 0), |h| (h.cluster_id(), h.revision())))
    }

    /// The bucket map and the pins of generation `name`, as they were at `revision`.
    async fn read_generation(
        &self,
        name: &str,
        revision: i64,
    ) -> Result<DirectoryChange, FleetError> {
        let key = self.key("directory/buckets");
        let mut kv = self.client.kv_client();
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(key.clone(), Some(GetOptions::new().with_revision(revision))),
        )
        .await
        .map_err(|_| FleetError::Unavailable("reading the directory timed out".into()))??;
        let buckets: Vec<StoredPlacement> = match response.kvs().first() {
            Some(kv) => decode(&key, kv.value())?,
            None => {
                return Err(FleetError::Value {
                    key,
                    message: format!("no bucket map at revision {revision}"),
                });
            }
        };
        let pins = self.read_pins(name, revision).await?;
        Ok(DirectoryChange::Replace {
            n_buckets: buckets.len() as u32,
            buckets,
            pins,
        })
    }

    /// Lays out the bucket map when no instance has yet (all instances compute the same default
    /// layout, so which one wins does not matter). Returns whether this one wrote it.
    ///
    /// # Errors
    ///
    /// As [`Fleet::commit`].
    pub async fn init_buckets(
        &self,
        buckets: &[StoredPlacement],
        audit: &AuditEntry,
    ) -> Result<bool, FleetError> {
        let key = self.key("directory/buckets");
        let record = Record {
            origin: self.instance.clone(),
            change: Change::Directory(DirectoryChange::Replace {
                n_buckets: buckets.len() as u32,
                buckets: buckets.to_vec(),
                pins: Vec::new(),
            }),
            audit: audit.clone(),
            generation: None,
            config: None,
        };
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.clone(), encode(&key, &buckets)?, None),
                TxnOp::put(self.key("changes"), encode("changes", &record)?, None),
            ]);
        let mut kv = self.client.kv_client();
        let response = tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn))
            .await
            .map_err(|_| FleetError::Unavailable("the write timed out".to_owned()))??;
        Ok(response.succeeded())
    }

    /// Publishes `version` as the configuration the fleet serves, with `audit`: its pieces
    /// first, then one transaction that switches `P/config/current` to it, writes its record and
    /// deletes every other version's pieces (see the module's doc). Returns the revision of that
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`FleetError::Unavailable`] when etcd cannot take it (the fleet's version did not
    /// change, unless the switch timed out: the watch then delivers it),
    /// [`FleetError::TooLarge`] beyond [`MAX_CHUNKS`] pieces, [`FleetError::Value`] when it
    /// cannot be encoded.
    pub async fn publish_config(
        &self,
        version: &ConfigVersion,
        audit: &AuditEntry,
    ) -> Result<i64, FleetError> {
        let bytes = encode("config", version)?;
        let pieces: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        if pieces.len() > MAX_CHUNKS {
            return Err(FleetError::TooLarge {
                ops: pieces.len() + 2,
            });
        }
        let pointer = ConfigPointer {
            version: version.hash.clone(),
            chunks: pieces.len(),
            bytes: bytes.len(),
        };
        let record = Record {
            origin: self.instance.clone(),
            change: Change::AuditOnly,
            audit: audit.clone(),
            config: Some(pointer.clone()),
            generation: None,
        };
        let mut kv = self.client.kv_client();
        let timed_out = || FleetError::Unavailable("publishing the configuration timed out".into());
        // Another instance publishing at the same time deletes these pieces: the switch then
        // fails its check, and the pieces are written again.
        for _attempt in 0..3 {
            for (i, piece) in pieces.iter().enumerate() {
                let key = self.chunk_key(&pointer.version, i);
                tokio::time::timeout(REQUEST_TIMEOUT, kv.put(key, piece.to_vec(), None))
                    .await
                    .map_err(|_| timed_out())??;
            }
            let chunks = self.key("config/chunks/");
            let listed = tokio::time::timeout(
                REQUEST_TIMEOUT,
                kv.get(
                    chunks.clone(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                ),
            )
            .await
            .map_err(|_| timed_out())??;
            let others: BTreeSet<String> = listed
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = String::from_utf8_lossy(kv.key());
                    let rest = key.strip_prefix(&chunks)?;
                    let hash = rest.split('/').next()?;
                    (hash != pointer.version).then(|| hash.to_owned())
                })
                .collect();
            let checks: Vec<Compare> = (0..pieces.len())
                .map(|i| {
                    Compare::version(self.chunk_key(&pointer.version, i), CompareOp::Greater, 0)
                })
                .collect();
            let mut ops = vec![
                TxnOp::put(
                    self.key("config/current"),
                    encode("config/current", &pointer)?,
                    None,
                ),
                TxnOp::put(self.key("changes"), encode("changes", &record)?, None),
            ];
            for hash in others {
                ops.push(TxnOp::delete(
                    format!("{chunks}{hash}/"),
                    Some(DeleteOptions::new().with_prefix()),
                ));
            }
            let txn = Txn::new().when(checks).and_then(ops);
            let response = tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn))
                .await
                .map_err(|_| timed_out())??;
            if response.succeeded() {
                return Ok(response.header().map_or(0, |h| h.revision()));
            }
            debug!(
                version = pointer.version,
                "the configuration's pieces went missing before the switch; writing them again"
            );
        }
        Err(FleetError::Unavailable(
            "other instances kept publishing configurations; try again".to_owned(),
        ))
    }

    /// Reads the configuration version `pointer` names, as of `revision` (the revision of its
    /// record or later: its pieces are there then).
    ///
    /// # Errors
    ///
    /// [`FleetError::Unavailable`] when etcd cannot answer, [`FleetError::Value`] when a piece
    /// is missing or the whole does not decode to the version it names.
    pub async fn read_config(
        &self,
        pointer: &ConfigPointer,
        revision: i64,
    ) -> Result<ConfigVersion, FleetError> {
        let mut kv = self.client.kv_client();
        let mut bytes = Vec::with_capacity(pointer.bytes);
        for i in 0..pointer.chunks {
            let key = self.chunk_key(&pointer.version, i);
            let mut options = GetOptions::new();
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response =
                tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key.clone(), Some(options)))
                    .await
                    .map_err(|_| {
                        FleetError::Unavailable("reading the configuration timed out".into())
                    })??;
            let Some(piece) = response.take_kvs().into_iter().next() else {
                return Err(FleetError::Value {
                    key,
                    message: "missing piece of the configuration version".to_owned(),
                });
            };
            bytes.extend_from_slice(piece.value());
        }
        let key = self.key(&format!("config/chunks/{}", pointer.version));
        let version: ConfigVersion = decode(&key, &bytes)?;
        if version.hash != pointer.version {
            return Err(FleetError::Value {
                key,
                message: format!("holds version {}", version.hash),
            });
        }
        Ok(version)
    }

    fn chunk_key(&self, version: &str, i: usize) -> String {
        self.key(&format!("config/chunks/{version}/{i:05}"))
    }

    /// The operations that put `change` into the state keys (pins into generation `generation`).
    fn state_ops(
        &self,
        change: &Change,
        buckets: Option<&[StoredPlacement]>,
        generation: &str,
    ) -> Result<Vec<TxnOp>, FleetError> {
        let mut ops = Vec::new();
        match change {
            Change::Report { datacenter, report } => {
                let key = self.key(&format!("reports/{datacenter}"));
                ops.push(TxnOp::put(key.clone(), encode(&key, report)?, None));
            }
            Change::Drain { key, drained } => {
                let name = serde_json::to_string(key).map_err(|error| FleetError::Value {
                    key: format!("{key:?}"),
                    message: error.to_string(),
                })?;
                let key = self.key(&format!("drains/{name}"));
                ops.push(if *drained {
                    TxnOp::put(key, Vec::new(), None)
                } else {
                    TxnOp::delete(key, None)
                });
            }
            Change::Toggle { name, on } => {
                let key = self.key(&format!("toggles/{name}"));
                ops.push(TxnOp::put(key.clone(), encode(&key, on)?, None));
            }
            Change::Ban { id, rule } => {
                let key = self.key(&format!("banned/{id}"));
                ops.push(TxnOp::put(key.clone(), encode(&key, rule)?, None));
            }
            Change::Unban { id } => {
                ops.push(TxnOp::delete(self.key(&format!("banned/{id}")), None))
            }
            // An instance drain is this instance's own: only its record goes to the fleet.
            Change::InstanceDrain { .. } | Change::AuditOnly => {}
            Change::Directory(DirectoryChange::Pins(pins)) => {
                // A user listed twice: the last row wins (etcd refuses a key twice in one
                // transaction).
                let pins: BTreeMap<&String, &Option<StoredPlacement>> = pins
                    .iter()
                    .map(|(user, placement)| (user, placement))
                    .collect();
                let prefix = self.key(&pins_of(generation));
                for (user, placement) in pins {
                    let key = format!("{prefix}{user}");
                    ops.push(match placement {
                        Some(placement) => TxnOp::put(key.clone(), encode(&key, placement)?, None),
                        None => TxnOp::delete(key, None),
                    });
                }
            }
            Change::Directory(DirectoryChange::Buckets(_)) => {
                let key = self.key("directory/buckets");
                let Some(buckets) = buckets else {
                    return Err(FleetError::Value {
                        key,
                        message: "no bucket map to change: the directory is not laid out".into(),
                    });
                };
                ops.push(TxnOp::put(key.clone(), encode(&key, &buckets)?, None));
            }
            Change::Directory(DirectoryChange::Replace { .. }) => {
                return Err(FleetError::Value {
                    key: self.key(GENERATION_KEY),
                    message: "a replacement is written as a new generation".to_owned(),
                });
            }
        }
        Ok(ops)
    }

    /// Keeps this instance listed under `P/instances/` until `shutdown`: a lease of
    /// [`INSTANCE_TTL_SECONDS`] renewed every second, and its record (identity, and the
    /// revision and time `now` gives) rewritten when the revision changes and every few seconds.
    /// Failures are retried; the record vanishes with the lease when the instance stops.
    pub async fn register(
        self,
        identity: String,
        now: impl Fn() -> (i64, u64) + Send + 'static,
        shutdown: CancellationToken,
    ) {
        loop {
            let outcome = tokio::select! {
                outcome = self.register_once(&identity, &now) => outcome,
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = outcome {
                debug!(%error, "could not register this instance in the fleet; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(RENEW_INTERVAL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn register_once(
        &self,
        identity: &str,
        now: &impl Fn() -> (i64, u64),
    ) -> Result<(), FleetError> {
        let mut client = self.client.clone();
        let timed_out = || FleetError::Unavailable("registering timed out".to_owned());
        let lease = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.lease_grant(INSTANCE_TTL_SECONDS, None),
        )
        .await
        .map_err(|_| timed_out())??
        .id();
        self.lease.store(lease, Ordering::Relaxed);
        let (mut keeper, mut renewals) =
            tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(lease))
                .await
                .map_err(|_| timed_out())??;
        let key = self.key(&format!("instances/{}", self.instance));
        let mut written: Option<(i64, u64)> = None;
        loop {
            let (revision, unix_ms) = now();
            let due =
                written.is_none_or(|(r, at)| r != revision || unix_ms.saturating_sub(at) >= 5_000);
            if due {
                let record = InstanceRecord {
                    instance: self.instance.clone(),
                    identity: identity.to_owned(),
                    revision,
                    updated_unix_ms: unix_ms,
                };
                let value = encode(&key, &record)?;
                let options = PutOptions::new().with_lease(lease);
                tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    client.put(key.clone(), value, Some(options)),
                )
                .await
                .map_err(|_| timed_out())??;
                written = Some((revision, unix_ms));
            }
            tokio::time::timeout(REQUEST_TIMEOUT, keeper.keep_alive())
                .await
                .map_err(|_| timed_out())??;
            let renewed = tokio::time::timeout(REQUEST_TIMEOUT, renewals.message())
                .await
                .map_err(|_| timed_out())??;
            if renewed.is_none_or(|r| r.ttl() <= 0) {
                return Err(FleetError::Unavailable(
                    "the instance's lease expired".to_owned(),
                ));
            }
            tokio::time::sleep(RENEW_INTERVAL).await;
        }
    }

    /// Every instance registered now, by name.
    ///
    /// # Errors
    ///
    /// [`FleetError::Unavailable`] when etcd cannot answer, [`FleetError::Value`] for a record
    /// that does not decode.
    pub async fn instances(&self) -> Result<Vec<InstanceRecord>, FleetError> {
        let mut kv = self.client.kv_client();
        let prefix = self.key("instances/");
        let response = tokio::time::timeout(
            REQUEST_TIMEOUT,
            kv.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| FleetError::Unavailable("listing the instances timed out".to_owned()))??;
        response
            .kvs()
            .iter()
            .map(|kv| decode(&prefix, kv.value()))
            .collect()
    }

    /// Reads the whole state at one revision, a page at a time.
    ///
    /// # Errors
    ///
    /// [`FleetError::Unavailable`] when etcd cannot answer, [`FleetError::Value`] for a value
    /// that does not decode.
    pub async fn read_all(&self) -> Result<FleetState, FleetError> {
        let mut state = FleetState::default();
        // Pins of every generation read, by name: only the one in force is kept.
        let mut generations: BTreeMap<String, Vec<(String, StoredPlacement)>> = BTreeMap::new();
        let root = format!("{}/", self.prefix);
        // The pieces of the configuration version are read apart (`read_config`): they are
        // large, and not state. Both spans are read at one revision.
        let chunks = self.key("config/chunks/");
        state.revision = self
            .read_span(root.as_bytes(), chunks.as_bytes(), 0, |kv| {
                if kv.key() == self.key("changes").as_bytes() {
                    state.changed = kv.mod_revision();
                }
                self.decode_into(&mut state, &mut generations, kv.key(), kv.value())
            })
            .await?;
        let revision = state.revision;
        self.read_span(
            &prefix_end(chunks.as_bytes()),
            &prefix_end(root.as_bytes()),
            revision,
            |kv| self.decode_into(&mut state, &mut generations, kv.key(), kv.value()),
        )
        .await?;
        state.pins = generations.remove(&state.generation).unwrap_or_default();
        Ok(state)
    }

    /// Hands every key under `prefix` with its value to `each`, a page at a time, all at one
    /// revision: `revision`, or (0) the newest; returns that revision.
    async fn read_range(
        &self,
        prefix: &str,
        revision: i64,
        each: impl FnMut(&KeyValue) -> Result<(), FleetError>,
    ) -> Result<i64, FleetError> {
        self.read_span(
            prefix.as_bytes(),
            &prefix_end(prefix.as_bytes()),
            revision,
            each,
        )
        .await
    }

    /// Hands every key from `from` up to (not including) `end` with its value to `each`, a page
    /// at a time, all at one revision: `revision`, or (0) the newest; returns that revision.
    async fn read_span(
        &self,
        from: &[u8],
        end: &[u8],
        revision: i64,
        mut each: impl FnMut(&KeyValue) -> Result<(), FleetError>,
    ) -> Result<i64, FleetError> {
        let mut kv = self.client.kv_client();
        let end = end.to_vec();
        let mut revision = revision;
        let mut from = from.to_vec();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response =
                tokio::time::timeout(REQUEST_TIMEOUT, kv.get(from.clone(), Some(options)))
                    .await
                    .map_err(|_| FleetError::Unavailable("reading the state timed out".into()))??;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            for kv in &kvs {
                each(kv)?;
            }
            match kvs.last() {
                Some(last) if more => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(revision),
            }
        }
    }

    fn decode_into(
        &self,
        state: &mut FleetState,
        generations: &mut BTreeMap<String, Vec<(String, StoredPlacement)>>,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), FleetError> {
        let key = String::from_utf8_lossy(key);
        let Some(rest) = key.strip_prefix(&format!("{}/", self.prefix)) else {
            return Ok(());
        };
        if let Some(datacenter) = rest.strip_prefix("reports/") {
            state
                .reports
                .insert(datacenter.to_owned(), decode(&key, value)?);
        } else if let Some(drain) = rest.strip_prefix("drains/") {
            let drain = serde_json::from_str(drain).map_err(|error| FleetError::Value {
                key: key.to_string(),
                message: error.to_string(),
            })?;
            state.drains.insert(drain);
        } else if let Some(name) = rest.strip_prefix("toggles/") {
            state.toggles.insert(name.to_owned(), decode(&key, value)?);
        } else if let Some(id) = rest.strip_prefix("banned/") {
            state.banned.insert(id.to_owned(), decode(&key, value)?);
        } else if rest == "directory/buckets" {
            state.buckets = Some(decode(&key, value)?);
        } else if rest == GENERATION_KEY {
            state.generation = decode(&key, value)?;
        } else if let Some(user) = rest.strip_prefix(FIRST_GENERATION) {
            generations
                .entry(String::new())
                .or_default()
                .push((user.to_owned(), decode(&key, value)?));
        } else if let Some((name, user)) = rest
            .strip_prefix(GENERATIONS)
            .and_then(|rest| rest.split_once('/'))
        {
            generations
                .entry(name.to_owned())
                .or_default()
                .push((user.to_owned(), decode(&key, value)?));
        } else if rest == "config/current" {
            state.config = Some(decode(&key, value)?);
        }
        Ok(())
    }

    /// Follows the fleet's state until `shutdown`: reads it whole, then watches from the next
    /// revision, sending every change to `events` in etcd's order. A broken watch resumes from
    /// the revision after the last one delivered; one that cannot (compacted) reads everything
    /// again. Failures are sent as [`FleetEvent::Down`] and retried every [`RETRY_INTERVAL`].
    pub async fn follow(self, events: mpsc::Sender<FleetEvent>, shutdown: CancellationToken) {
        let mut next: Option<i64> = None;
        let mut cluster: Option<u64> = None;
        let mut down = false;
        let mut failures = 0;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if failures == 0 {
                failing_since = None;
            }
            let outcome = tokio::select! {
                outcome = self.follow_once(&mut next, &mut cluster, &events, &mut down, &mut failures) => outcome,
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = outcome {
                failures += 1;
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                // A watch on a member that died resumes on another one, perhaps after an
                // election: only failures lasting DOWN_AFTER mean etcd is gone.
                if failures < 2 || since.elapsed() < DOWN_AFTER {
                    debug!(%error, "the fleet's watch broke; resuming");
                    if failures >= 2 {
                        tokio::select! {
                            () = tokio::time::sleep(RETRY_INTERVAL) => {}
                            () = shutdown.cancelled() => return,
                        }
                    }
                    continue;
                }
                if !down {
                    warn!(%error, "lost the fleet's etcd; retrying");
                }
                down = true;
                if events.send(FleetEvent::Down(error)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(RETRY_INTERVAL) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// One watch: (re)reads the state when `next` is unknown, watches from `next`, and returns
    /// when the watch ends (an error to report, or `Ok` to resume at once).
    async fn follow_once(
        &self,
        next: &mut Option<i64>,
        cluster: &mut Option<u64>,
        events: &mpsc::Sender<FleetEvent>,
        down: &mut bool,
        failures: &mut u32,
    ) -> Result<(), String> {
        let stopped = |_| "the state manager stopped".to_owned();
        // A restore from a backup gives etcd a new cluster id (a new cluster token) or takes
        // its revision below the one served here: a watch resumed there would wait for
        // revisions that mean other writes, so everything is read again.
        let (id, revision) = self.cluster().await.map_err(|e| e.to_string())?;
        if let Some(start) = *next
            && (cluster.is_some_and(|seen| seen != id) || revision < start - 1)
        {
            warn!(
                cluster = id,
                revision,
                serving = start - 1,
                "etcd's cluster id changed or its revision went backwards (a restore from a backup); reading the whole state again"
            );
            events
                .send(FleetEvent::Resync { restored: true })
                .await
                .map_err(stopped)?;
            *next = None;
        }
        *cluster = Some(id);
        let start = match *next {
            Some(revision) => revision,
            None => {
                let state = self.read_all().await.map_err(|e| e.to_string())?;
                let revision = state.revision;
                info!(revision, "read the fleet's state from etcd");
                events
                    .send(FleetEvent::Synced(state))
                    .await
                    .map_err(|_| "the state manager stopped".to_owned())?;
                *next = Some(revision + 1);
                *down = false;
                revision + 1
            }
        };
        let mut watch_client = self.client.watch_client();
        let options = WatchOptions::new()
            .with_start_revision(start)
            .with_progress_notify();
        let changes = self.key("changes");
        let mut stream = tokio::time::timeout(
            REQUEST_TIMEOUT,
            watch_client.watch(changes.clone(), Some(options)),
        )
        .await
        .map_err(|_| "starting the watch timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        loop {
            let message = stream.message().await.map_err(|e| e.to_string())?;
            let Some(response) = message else {
                return Err("the watch ended".to_owned());
            };
            if response
                .header()
                .is_some_and(|header| cluster.is_some_and(|seen| header.cluster_id() != seen))
            {
                // Another cluster answers: checked (and read whole) on the next round.
                return Ok(());
            }
            if response.compact_revision() > 0 || response.canceled() {
                if response.compact_revision() > 0 {
                    events
                        .send(FleetEvent::Resync { restored: false })
                        .await
                        .map_err(stopped)?;
                }
                info!(
                    compacted = response.compact_revision(),
                    reason = response.cancel_reason(),
                    "the watch cannot resume; reading the whole state again"
                );
                *next = None;
                return Ok(());
            }
            if response.created() {
                *failures = 0;
            }
            if response.created() && *down {
                // The watch resumed where it left off: writes are possible again.
                *down = false;
                events
                    .send(FleetEvent::Up)
                    .await
                    .map_err(|_| "the state manager stopped".to_owned())?;
            }
            let mut records = Vec::new();
            let mut revision = 0;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() != EventType::Put {
                    continue;
                }
                let mut record: Record = decode(&changes, kv.value()).map_err(|e| e.to_string())?;
                revision = kv.mod_revision();
                if let Some(name) = &record.generation {
                    // A switch to a new generation of the pin set: delivered as one replacement,
                    // read as it was at the switch (a later switch deletes it).
                    let directory = self
                        .read_generation(name, revision)
                        .await
                        .map_err(|e| e.to_string())?;
                    record.change = Change::Directory(directory);
                }
                records.push(record);
            }
            if records.is_empty() {
                continue;
            }
            debug!(revision, records = records.len(), "fleet changes");
            *next = Some(revision + 1);
            events
                .send(FleetEvent::Changed { revision, records })
                .await
                .map_err(|_| "the state manager stopped".to_owned())?;
        }
    }
}

/// Where the directory's generation pointer was read.
struct Pointer {
    /// The generation in force.
    generation: String,
    /// The pointer's revision (0: never written).
    mod_revision: i64,
    /// The store's revision when it was read.
    revision: i64,
}

/// The revision a transaction was applied at.
fn revision_of(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

/// Each pin's key suffix (the user) and encoded value, in user order.
fn encode_pins(
    pins: &BTreeMap<&str, &StoredPlacement>,
) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
    pins.iter()
        .map(|(user, placement)| Ok(((*user).to_owned(), encode(user, placement)?)))
        .collect()
}

/// The end of the key range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, FleetError> {
    serde_json::to_vec(value).map_err(|error| FleetError::Value {
        key: key.to_owned(),
        message: error.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, FleetError> {
    serde_json::from_slice(value).map_err(|error| FleetError::Value {
        key: key.to_owned(),
        message: error.to_string(),
    })
}

/// `host-pid-n`: unique among the instances running at once, even several in one process.
fn instance_name() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "meridian".to_owned());
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_after_every_key_under_it() {
        assert_eq!(prefix_end(b"/meridian/"), b"/meridian0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn instance_names_differ_within_a_process() {
        assert_ne!(instance_name(), instance_name());
    }
}
