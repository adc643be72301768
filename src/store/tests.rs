//! Store tests on real redb files in temporary directories: state and audit round trips,
//! durability across reopen and simulated crashes, atomicity, paging, config versions, and clear
//! errors for bad files and corrupt values.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

fn audit(action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        unix_ms: 1_700_000_000_000,
        actor: "example-operator".to_owned(),
        role: "operator".to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: serde_json::json!({ "force": false, "note": target }),
    }
}

fn report(capacity: f64) -> StoredReport {
    StoredReport {
        healthy: true,
        capacity,
        load: capacity / 2.0,
        ttl_seconds: 30,
        latency_ms: BTreeMap::from([("us-east".to_owned(), 71.5)]),
        cost: Some(1.25),
        received_unix_ms: 1_700_000_000_123,
        service_latency_ms: Some(180.5),
        serving_since_unix_ms: Some(1_700_000_000_000),
    }
}

fn drain_key(datacenter: &str, service: Option<&str>) -> DrainKey {
    DrainKey {
        datacenter: datacenter.to_owned(),
        service: service.map(str::to_owned),
    }
}

fn version(hash: &str, first_seen_unix_ms: u64, text: &str) -> ConfigVersion {
    ConfigVersion {
        hash: hash.to_owned(),
        first_seen_unix_ms,
        text: text.to_owned(),
        files: vec![VersionFile {
            name: "example.com.zone".to_owned(),
            text: format!("; zone of {hash}\n"),
        }],
    }
}

/// A sequence of writes touching every kind of change, with their audit entries.
fn writes() -> Vec<(Change, AuditEntry)> {
    vec![
        (
            Change::Report {
                datacenter: "eu-west".to_owned(),
                report: report(100.0),
            },
            audit("report", "eu-west"),
        ),
        (
            Change::Report {
                datacenter: "us-east".to_owned(),
                report: report(50.0),
            },
            audit("report", "us-east"),
        ),
        (
            Change::Drain {
                key: drain_key("eu-west", None),
                drained: true,
            },
            audit("drain", "eu-west"),
        ),
        (
            Change::Drain {
                key: drain_key("us-east", Some("www")),
                drained: true,
            },
            audit("drain", "us-east/www"),
        ),
        (
            Change::Drain {
                key: drain_key("us-east", Some("api")),
                drained: true,
            },
            audit("drain", "us-east/api"),
        ),
        (
            Change::Drain {
                key: drain_key("us-east", Some("api")),
                drained: false,
            },
            audit("undrain", "us-east/api"),
        ),
        // A report replaces the datacenter's previous one.
        (
            Change::Report {
                datacenter: "eu-west".to_owned(),
                report: report(200.0),
            },
            audit("report", "eu-west"),
        ),
        (
            Change::InstanceDrain { drained: true },
            audit("drain", "instance"),
        ),
        (Change::AuditOnly, audit("reload", "config")),
    ]
}

/// The state [`writes`] leaves behind.
fn expected_state() -> Persisted {
    Persisted {
        reports: BTreeMap::from([
            ("eu-west".to_owned(), report(200.0)),
            ("us-east".to_owned(), report(50.0)),
        ]),
        drains: BTreeSet::from([
            drain_key("eu-west", None),
            drain_key("us-east", Some("www")),
        ]),
        instance_drained: true,
        // Lifted drains are kept with their time: slow start ramps from it.
        undrained: BTreeMap::from([(drain_key("us-east", Some("api")), 1_700_000_000_000)]),
        ..Persisted::default()
    }
}

/// Applies [`writes`] and checks their sequence numbers.
fn apply_writes(store: &Store) {
    for (i, (change, entry)) in writes().iter().enumerate() {
        let seq = store.apply(change, entry).expect("apply");
        assert_eq!(seq, i as u64 + 1, "{change:?}");
    }
}

/// The audit log [`writes`] leaves behind.
fn expected_audit() -> Vec<(u64, AuditEntry)> {
    writes()
        .into_iter()
        .enumerate()
        .map(|(i, (_, entry))| (i as u64 + 1, entry))
        .collect()
}

/// Checks that `store` holds exactly what [`writes`] and two config versions leave behind.
fn assert_full(store: &Store) {
    assert_eq!(store.load().expect("load"), expected_state());
    assert_eq!(store.audit_log(None, 100).expect("audit"), expected_audit());
    assert_eq!(
        store.config_versions().expect("versions"),
        vec![
            ConfigVersionMeta {
                hash: "aaa".to_owned(),
                first_seen_unix_ms: 1
            },
            ConfigVersionMeta {
                hash: "bbb".to_owned(),
                first_seen_unix_ms: 2
            },
        ]
    );
    assert_eq!(
        store.config_version("bbb").expect("version"),
        Some(version("bbb", 2, "b: 2\n"))
    );
}

/// Fills `store` with what [`assert_full`] expects.
fn fill(store: &Store) {
    apply_writes(store);
    store
        .put_config_version(&version("bbb", 2, "b: 2\n"))
        .expect("put");
    store
        .put_config_version(&version("aaa", 1, "a: 1\n"))
        .expect("put");
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Whether redb must repair the database file at `path` on open, as after a crash; checked on a
/// throwaway copy, since the check repairs it.
fn needs_repair(path: &Path) -> bool {
    let scratch = tempfile::tempdir().expect("tempdir");
    let copy = db_path(scratch.path());
    std::fs::copy(path, &copy).expect("copy");
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&repaired);
    Database::builder()
        .set_repair_callback(move |_| flag.store(true, Ordering::SeqCst))
        .create(&copy)
        .expect("open copy");
    repaired.load(Ordering::SeqCst)
}

#[test]
fn store_and_error_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Store>();
    assert_send_sync::<StoreError>();
}

#[test]
fn fresh_store_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    for store in [
        Store::open(dir.path()).expect("open"),
        Store::in_memory().expect("memory"),
    ] {
        assert_eq!(store.load().expect("load"), Persisted::default());
        assert!(store.audit_log(None, 10).expect("audit").is_empty());
        assert!(store.config_versions().expect("versions").is_empty());
        assert_eq!(store.config_version("missing").expect("version"), None);
    }
}

#[test]
fn apply_then_load_returns_resulting_state_and_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    apply_writes(&store);
    assert_eq!(store.load().expect("load"), expected_state());
    assert_eq!(store.audit_log(None, 100).expect("audit"), expected_audit());

    // Undraining the instance and the datacenter is stored too.
    let seq = store
        .apply(
            &Change::InstanceDrain { drained: false },
            &audit("undrain", "instance"),
        )
        .expect("apply");
    assert_eq!(seq, writes().len() as u64 + 1);
    store
        .apply(
            &Change::Drain {
                key: drain_key("eu-west", None),
                drained: false,
            },
            &audit("undrain", "eu-west"),
        )
        .expect("apply");
    let state = store.load().expect("load");
    assert!(!state.instance_drained);
    assert_eq!(
        state.drains,
        BTreeSet::from([drain_key("us-east", Some("www"))])
    );
}

#[test]
fn undrain_of_a_drain_not_in_force_is_audited_and_harmless() {
    let store = Store::in_memory().expect("memory");
    let seq = store
        .apply(
            &Change::Drain {
                key: drain_key("eu-west", Some("www")),
                drained: false,
            },
            &audit("undrain", "eu-west/www"),
        )
        .expect("apply");
    assert_eq!(seq, 1);
    assert_eq!(store.load().expect("load"), Persisted::default());
    assert_eq!(store.audit_log(None, 10).expect("audit").len(), 1);
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        fill(&store);
    }
    let store = Store::open(dir.path()).expect("reopen");
    assert_full(&store);
    // The sequence continues after the reopen.
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, writes().len() as u64 + 1);
}

#[test]
fn open_creates_missing_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("var").join("lib").join("meridian");
    let store = Store::open(&nested).expect("open");
    store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert!(db_path(&nested).is_file());
}

#[test]
fn open_on_a_path_that_cannot_be_a_directory_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").expect("write");
    let error = Store::open(&file).expect_err("a file is not a directory");
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

#[test]
fn committed_write_survives_a_crash() {
    // A copy of the file taken while the store is still open is what a `kill -9` at that moment
    // would leave on disk: no clean shutdown, so redb must recover it on open.
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);
    std::fs::copy(db_path(dir.path()), db_path(crashed.path())).expect("copy");
    assert!(
        needs_repair(&db_path(crashed.path())),
        "the copy is not a crash image"
    );

    let recovered = Store::open(crashed.path()).expect("recover");
    assert_full(&recovered);
    drop(store);
}

#[test]
fn dropped_store_without_close_keeps_committed_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);
    drop(store);
    assert_full(&Store::open(dir.path()).expect("reopen"));
}

#[test]
fn uncommitted_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);

    {
        let txn = store.db().expect("database").begin_write().expect("begin");
        let seq = write_change(
            &txn,
            &Change::Report {
                datacenter: "ap-south".to_owned(),
                report: report(7.0),
            },
            &audit("report", "ap-south"),
        )
        .expect("write");
        assert_eq!(seq, writes().len() as u64 + 1);
        write_change(
            &txn,
            &Change::InstanceDrain { drained: false },
            &audit("undrain", "instance"),
        )
        .expect("write");
        // A crash in the middle of the transaction: the file as it is now must recover to the
        // last commit.
        std::fs::copy(db_path(dir.path()), db_path(crashed.path())).expect("copy");
        assert!(
            needs_repair(&db_path(crashed.path())),
            "the copy is not a crash image"
        );
        // Dropped without commit: aborted.
    }

    assert_full(&store);
    assert_full(&Store::open(crashed.path()).expect("recover"));
    // The aborted sequence numbers are not consumed.
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, writes().len() as u64 + 1);
    drop(store);
    assert_eq!(
        Store::open(dir.path())
            .expect("reopen")
            .audit_log(None, 100)
            .expect("audit")
            .len(),
        writes().len() + 1
    );
}

#[test]
fn failed_apply_stores_neither_change_nor_audit() {
    let store = Store::in_memory().expect("memory");
    for bad in [f64::NAN, f64::INFINITY] {
        let mut bad_report = report(10.0);
        bad_report.latency_ms.insert("eu-west".to_owned(), bad);
        let error = store
            .apply(
                &Change::Report {
                    datacenter: "us-east".to_owned(),
                    report: bad_report,
                },
                &audit("report", "us-east"),
            )
            .expect_err("not representable in JSON");
        assert!(
            matches!(&error, StoreError::Unencodable { table: "reports", key, .. } if key == "us-east"),
            "{error:?}"
        );
        assert!(error.to_string().contains("latency_ms.eu-west"), "{error}");
    }
    let error = store
        .apply(
            &Change::Report {
                datacenter: "us-east".to_owned(),
                report: report(f64::NEG_INFINITY),
            },
            &audit("report", "us-east"),
        )
        .expect_err("not representable in JSON");
    assert_eq!(
        error.to_string(),
        "cannot store value in state table reports at key us-east: capacity -inf is not a finite number"
    );

    // The audit entry was written first in each failed transaction, and rolled back with it.
    assert!(store.audit_log(None, 10).expect("audit").is_empty());
    assert_eq!(store.load().expect("load"), Persisted::default());
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, 1);
}

#[test]
fn audit_log_pages() {
    let store = Store::in_memory().expect("memory");
    apply_writes(&store);
    let all = expected_audit();
    let n = all.len();
    assert_eq!(n, 9);

    let seqs = |after, limit| -> Vec<u64> {
        store
            .audit_log(after, limit)
            .expect("audit")
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    };
    assert_eq!(seqs(None, 2), [1, 2]);
    assert_eq!(seqs(Some(2), 2), [3, 4]);
    assert_eq!(seqs(Some(8), 2), [9]);
    assert_eq!(seqs(Some(9), 2), Vec::<u64>::new());
    assert_eq!(seqs(Some(0), 1), [1]);
    assert_eq!(seqs(Some(100), 10), Vec::<u64>::new());
    assert_eq!(seqs(Some(u64::MAX), 10), Vec::<u64>::new());
    assert_eq!(seqs(None, 0), Vec::<u64>::new());
    assert_eq!(seqs(None, usize::MAX).len(), n);

    // Walking page by page visits every entry once, in order, with identical content.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = store.audit_log(after, 4).expect("audit");
        let Some(&(last, _)) = page.last() else {
            break;
        };
        after = Some(last);
        walked.extend(page);
    }
    assert_eq!(walked, all);
}

#[test]
fn concurrent_applies_get_distinct_gap_free_sequence_numbers() {
    let store = Arc::new(Store::in_memory().expect("memory"));
    let handles: Vec<_> = (0..4)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let target = format!("t{thread}-{i}");
                        store
                            .apply(&Change::AuditOnly, &audit("reload", &target))
                            .expect("apply")
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    // Each sequence number holds the entry of the apply that returned it.
    assert_eq!(store.audit_log(None, 100).expect("audit").len(), 40);
}

#[test]
fn config_versions_are_idempotent_and_ordered() {
    let store = Store::in_memory().expect("memory");
    store
        .put_config_version(&version("bbb", 20, "b\n"))
        .expect("put");
    store
        .put_config_version(&version("aaa", 20, "a\n"))
        .expect("put");
    store
        .put_config_version(&version("ccc", 10, "c\n"))
        .expect("put");
    // The same hash again keeps the first record.
    store
        .put_config_version(&version("bbb", 99, "changed\n"))
        .expect("put");

    let listed: Vec<(String, u64)> = store
        .config_versions()
        .expect("versions")
        .into_iter()
        .map(|meta| (meta.hash, meta.first_seen_unix_ms))
        .collect();
    assert_eq!(
        listed,
        [
            ("ccc".to_owned(), 10),
            ("aaa".to_owned(), 20),
            ("bbb".to_owned(), 20)
        ]
    );
    assert_eq!(
        store.config_version("bbb").expect("version"),
        Some(version("bbb", 20, "b\n"))
    );
    assert_eq!(store.config_version("ddd").expect("version"), None);
    assert_eq!(store.config_version("").expect("version"), None);
}

#[test]
fn open_on_a_garbage_file_names_the_path() {
    for garbage in [
        b"hello".to_vec(),
        b"retries: 3\nzones: []\n".repeat(500),
        vec![0xff; 16 * 1024],
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = db_path(dir.path());
        std::fs::write(&path, &garbage).expect("write");
        let error = Store::open(dir.path()).expect_err("not a redb file");
        assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("cannot open state database {}: ", path.display())),
            "{message}"
        );
        // The file is left alone for the operator to inspect.
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
    }
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let error = Store::open(dir.path()).expect_err("already open");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(&db_path(dir.path()).display().to_string()),
        "{error}"
    );
    drop(store);
    Store::open(dir.path()).expect("open after the first is dropped");
}

#[test]
fn corrupt_values_are_reported_with_table_and_key() {
    let store = Store::in_memory().expect("memory");
    fill(&store);
    let txn = store.db().expect("database").begin_write().expect("begin");
    txn.open_table(REPORTS)
        .expect("table")
        .insert("eu-west", b"{not json".as_slice())
        .expect("insert");
    txn.open_table(AUDIT)
        .expect("table")
        .insert(3, b"[]".as_slice())
        .expect("insert");
    txn.open_table(CONFIG_VERSIONS)
        .expect("table")
        .insert(
            "aaa",
            serde_json::to_vec(&version("zzz", 1, ""))
                .expect("json")
                .as_slice(),
        )
        .expect("insert");
    txn.commit().expect("commit");

    let error = store.load().expect_err("corrupt report");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "reports", key, .. } if key == "eu-west"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("corrupt value in state table reports at key eu-west: "),
        "{error}"
    );

    // Entries before the corrupt one still page normally.
    assert_eq!(store.audit_log(None, 2).expect("audit").len(), 2);
    let error = store
        .audit_log(Some(2), 2)
        .expect_err("corrupt audit entry");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "audit", key, .. } if key == "3"),
        "{error:?}"
    );

    let error = store.config_versions().expect_err("hash differs from key");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "config_versions", key, .. } if key == "aaa"),
        "{error:?}"
    );
    assert!(store.config_version("aaa").is_err());
    assert!(store.config_version("bbb").expect("intact").is_some());
}

#[test]
fn corrupt_drain_key_and_meta_are_reported() {
    let store = Store::in_memory().expect("memory");
    let txn = store.db().expect("database").begin_write().expect("begin");
    txn.open_table(DRAINS)
        .expect("table")
        .insert("eu-west/www", ())
        .expect("insert");
    txn.commit().expect("commit");
    let error = store.load().expect_err("corrupt drain key");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "drains", key, .. } if key == "eu-west/www"),
        "{error:?}"
    );

    let txn = store.db().expect("database").begin_write().expect("begin");
    txn.open_table(DRAINS)
        .expect("table")
        .remove("eu-west/www")
        .expect("remove");
    txn.open_table(META)
        .expect("table")
        .insert(INSTANCE_DRAINED_KEY, b"\"yes\"".as_slice())
        .expect("insert");
    txn.commit().expect("commit");
    let error = store.load().expect_err("corrupt meta");
    assert!(
        matches!(&error, StoreError::Corrupt { table: "meta", key, .. } if key == INSTANCE_DRAINED_KEY),
        "{error:?}"
    );
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let txn = store.db().expect("database").begin_write().expect("begin");
        txn.open_table(META)
            .expect("table")
            .insert(SCHEMA_VERSION_KEY, b"2".as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let error = Store::open(dir.path()).expect_err("newer schema");
    assert!(
        matches!(error, StoreError::Schema { found: 2, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "state database {} has schema version 2, this build reads only version 1",
            db_path(dir.path()).display()
        )
    );
}

#[test]
fn in_memory_store_works_like_a_file_store() {
    let memory = Store::in_memory().expect("memory");
    fill(&memory);
    assert_full(&memory);

    // Separate in-memory stores share nothing, and nothing reaches the disk.
    let other = Store::in_memory().expect("memory");
    assert_eq!(other.load().expect("load"), Persisted::default());
    assert!(other.audit_log(None, 10).expect("audit").is_empty());
}

#[test]
fn values_are_readable_json() {
    let store = Store::in_memory().expect("memory");
    fill(&store);
    let txn = store.db().expect("database").begin_read().expect("begin");
    let reports = txn.open_table(REPORTS).expect("table");
    let value = reports.get("us-east").expect("get").expect("present");
    let json: serde_json::Value = serde_json::from_slice(value.value()).expect("json");
    assert_eq!(json["capacity"], 50.0);
    assert_eq!(json["latency_ms"]["us-east"], 71.5);

    let drains = txn.open_table(DRAINS).expect("table");
    let keys: Vec<String> = drains
        .iter()
        .expect("iter")
        .map(|entry| entry.expect("entry").0.value().to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            r#"{"datacenter":"eu-west","service":null}"#,
            r#"{"datacenter":"us-east","service":"www"}"#,
        ]
    );

    let meta = txn.open_table(META).expect("table");
    let drained = meta.get(INSTANCE_DRAINED_KEY).expect("get").expect("set");
    assert_eq!(drained.value(), b"true");
}

#[test]
fn stored_report_defaults_optional_fields() {
    // Reports written before `latency_ms` and `cost` existed still load.
    let json =
        br#"{"healthy":false,"capacity":1.0,"load":0.0,"ttl_seconds":5,"received_unix_ms":7}"#;
    let report: StoredReport = decode(REPORTS_TABLE, "eu-west", json).expect("decode");
    assert_eq!(report.latency_ms, BTreeMap::new());
    assert_eq!(report.cost, None);
}

fn placement(home: &str, replica: &str) -> StoredPlacement {
    StoredPlacement {
        home: home.to_owned(),
        replica: replica.to_owned(),
    }
}

/// A bucket map of `n_buckets` buckets spread over three datacenters.
fn layout(n_buckets: u32) -> Vec<StoredPlacement> {
    const DCS: [&str; 3] = ["eu-west", "us-east", "ap-south"];
    (0..n_buckets as usize)
        .map(|bucket| placement(DCS[bucket % 3], DCS[(bucket + 1) % 3]))
        .collect()
}

/// The bucket map and every pin, as [`Store::load_directory`] hands them out.
type Directory = (
    Option<(u32, Vec<StoredPlacement>)>,
    Vec<(String, StoredPlacement)>,
);

fn directory(store: &Store) -> Directory {
    let mut pins = Vec::new();
    let layout = store
        .load_directory(&mut |user, home, replica| {
            pins.push((user.to_owned(), placement(home, replica)));
        })
        .expect("load directory");
    (layout, pins)
}

fn pin(user: &str, home: &str, replica: &str) -> (String, Option<StoredPlacement>) {
    (user.to_owned(), Some(placement(home, replica)))
}

fn unpin(user: &str) -> (String, Option<StoredPlacement>) {
    (user.to_owned(), None)
}

fn pins_change(pins: Vec<(String, Option<StoredPlacement>)>) -> Change {
    Change::Directory(DirectoryChange::Pins(pins))
}

/// User `i` of a bulk import. The ids are scrambled so that they arrive in no particular key
/// order, as a real import would, yet are the same in every run.
fn bulk_user(i: u64) -> String {
    // splitmix64's finaliser: a bijection on u64, so distinct `i` give distinct ids.
    let mut x = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("user-{x:016x}")
}

/// The placement of user `i` in a bulk import, varied so that a mixed-up row would show.
fn bulk_placement(i: u64, generation: u64) -> StoredPlacement {
    placement(
        &format!("dc-{}", (i + generation) % 7),
        &format!("dc-{}", (i + generation + 3) % 11),
    )
}

/// `n` pins of a bulk import, in import (not key) order.
fn bulk_pins(n: u64, generation: u64) -> Vec<(String, Option<StoredPlacement>)> {
    (0..n)
        .map(|i| (bulk_user(i), Some(bulk_placement(i, generation))))
        .collect()
}

/// The pins `bulk_pins(n, generation)` leaves behind, in id order.
fn bulk_expected(n: u64, generation: u64) -> Vec<(String, StoredPlacement)> {
    let mut res: Vec<(String, StoredPlacement)> = (0..n)
        .map(|i| (bulk_user(i), bulk_placement(i, generation)))
        .collect();
    res.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    res
}

/// Checks that `store` holds exactly the pins `expected`, visited in id order, without
/// collecting them into a second list.
fn assert_pins(store: &Store, expected: &[(String, StoredPlacement)]) {
    assert_eq!(store.count_pins().expect("count"), expected.len() as u64);
    let mut visited = 0;
    store
        .load_directory(&mut |user, home, replica| {
            let (expected_user, expected_placement) = &expected[visited];
            assert_eq!(user, expected_user, "pin {visited} out of order or missing");
            assert_eq!(home, expected_placement.home, "{user}");
            assert_eq!(replica, expected_placement.replica, "{user}");
            visited += 1;
        })
        .expect("load directory");
    assert_eq!(visited, expected.len());
}

#[test]
fn directory_is_absent_until_initialised_and_init_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    for store in [
        Store::open(dir.path()).expect("open"),
        Store::in_memory().expect("memory"),
    ] {
        assert_eq!(directory(&store), (None, Vec::new()));
        assert_eq!(store.count_pins().expect("count"), 0);

        // A bucket map of the wrong length is refused before anything is written.
        let error = store
            .init_directory(4, &layout(3))
            .expect_err("three placements for four buckets");
        assert!(
            matches!(&error, StoreError::Invalid { table: "meta", key, .. } if key == "directory_n_buckets"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "invalid change to state table meta at key directory_n_buckets: \
             3 bucket placements given for a bucket count of 4"
        );
        assert_eq!(directory(&store), (None, Vec::new()));

        assert!(store.init_directory(4, &layout(4)).expect("init"));
        assert_eq!(directory(&store), (Some((4, layout(4))), Vec::new()));

        // A second init, even with another layout, keeps the stored one.
        assert!(!store.init_directory(8, &layout(8)).expect("init again"));
        assert_eq!(directory(&store), (Some((4, layout(4))), Vec::new()));

        // Storing the configured default is not an operator action: no audit entry.
        assert!(store.audit_log(None, 10).expect("audit").is_empty());
        // The directory stays apart from the rest of the state.
        assert_eq!(store.load().expect("load"), Persisted::default());
    }
}

#[test]
fn directory_of_zero_buckets_is_still_a_stored_directory() {
    let store = Store::in_memory().expect("memory");
    assert!(store.init_directory(0, &[]).expect("init"));
    assert_eq!(directory(&store), (Some((0, Vec::new())), Vec::new()));
    assert!(!store.init_directory(4, &layout(4)).expect("init again"));
}

#[test]
fn pins_and_unpins_across_applies_load_in_id_order() {
    let store = Store::in_memory().expect("memory");
    store.init_directory(4, &layout(4)).expect("init");

    let seq = store
        .apply(
            &pins_change(vec![
                pin("carol", "eu-west", "us-east"),
                pin("alice", "us-east", "eu-west"),
                pin("bob", "ap-south", "eu-west"),
                // Names are UTF-8 and may be empty: the store keeps what it is given.
                pin("zoë", "", "ap-south"),
            ]),
            &audit("pin", "users"),
        )
        .expect("apply");
    assert_eq!(seq, 1);
    assert_eq!(store.count_pins().expect("count"), 4);

    let seq = store
        .apply(
            &pins_change(vec![
                unpin("alice"),
                // Unpinning a user who is not pinned is fine.
                unpin("mallory"),
                pin("bob", "us-east", "ap-south"),
                pin("dave", "eu-west", "ap-south"),
                // Within one change, the last row for a user wins.
                pin("erin", "eu-west", "us-east"),
                unpin("erin"),
                pin("frank", "eu-west", "us-east"),
                pin("frank", "ap-south", "us-east"),
            ]),
            &audit("pin", "users"),
        )
        .expect("apply");
    assert_eq!(seq, 2);

    assert_eq!(
        directory(&store),
        (
            Some((4, layout(4))),
            vec![
                ("bob".to_owned(), placement("us-east", "ap-south")),
                ("carol".to_owned(), placement("eu-west", "us-east")),
                ("dave".to_owned(), placement("eu-west", "ap-south")),
                ("frank".to_owned(), placement("ap-south", "us-east")),
                ("zoë".to_owned(), placement("", "ap-south")),
            ]
        )
    );
    assert_eq!(store.count_pins().expect("count"), 5);

    // Each apply is one audit entry, whatever number of rows it holds.
    let log = store.audit_log(None, 10).expect("audit");
    assert_eq!(log.len(), 2);
    assert_eq!(log[1], (2, audit("pin", "users")));
}

#[test]
fn pins_stored_before_any_bucket_map_are_still_visited() {
    let store = Store::in_memory().expect("memory");
    store
        .apply(
            &pins_change(vec![pin("alice", "eu-west", "us-east")]),
            &audit("pin", "alice"),
        )
        .expect("apply");
    assert_eq!(
        directory(&store),
        (
            None,
            vec![("alice".to_owned(), placement("eu-west", "us-east"))]
        )
    );
    // Initialising the bucket map leaves the pin alone.
    assert!(store.init_directory(2, &layout(2)).expect("init"));
    assert_eq!(directory(&store).1.len(), 1);
}

#[test]
fn buckets_change_and_out_of_range_bucket_leaves_no_trace() {
    let store = Store::in_memory().expect("memory");

    // With no bucket map stored, every bucket is out of range.
    let error = store
        .apply(
            &Change::Directory(DirectoryChange::Buckets(vec![(0, placement("a", "b"))])),
            &audit("place", "bucket 0"),
        )
        .expect_err("no bucket map");
    assert!(
        matches!(&error, StoreError::Invalid { table: "directory_buckets", key, .. } if key == "0"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no bucket map is stored"),
        "{error}"
    );

    store.init_directory(4, &layout(4)).expect("init");
    let seq = store
        .apply(
            &Change::Directory(DirectoryChange::Buckets(vec![
                (1, placement("eu-central", "us-west")),
                (3, placement("us-west", "eu-central")),
            ])),
            &audit("place", "buckets 1, 3"),
        )
        .expect("apply");
    assert_eq!(seq, 1);
    let mut expected = layout(4);
    expected[1] = placement("eu-central", "us-west");
    expected[3] = placement("us-west", "eu-central");
    assert_eq!(directory(&store), (Some((4, expected.clone())), Vec::new()));

    // A bad bucket after a good one: the good one is not written either, nor the audit entry.
    let error = store
        .apply(
            &Change::Directory(DirectoryChange::Buckets(vec![
                (0, placement("moon", "mars")),
                (4, placement("moon", "mars")),
            ])),
            &audit("place", "buckets 0, 4"),
        )
        .expect_err("bucket 4 of 4");
    assert!(
        matches!(&error, StoreError::Invalid { table: "directory_buckets", key, .. } if key == "4"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "invalid change to state table directory_buckets at key 4: \
         bucket 4 is out of range: there are 4 buckets"
    );
    let error = store
        .apply(
            &Change::Directory(DirectoryChange::Buckets(vec![(
                u32::MAX,
                placement("moon", "mars"),
            )])),
            &audit("place", "bucket max"),
        )
        .expect_err("bucket u32::MAX");
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");

    assert_eq!(directory(&store), (Some((4, expected)), Vec::new()));
    assert_eq!(store.audit_log(None, 10).expect("audit").len(), 1);
    // The failed applies consumed no sequence number.
    let seq = store
        .apply(&Change::AuditOnly, &audit("reload", "config"))
        .expect("apply");
    assert_eq!(seq, 2);
}

#[test]
fn replace_clears_old_pins_and_buckets_and_sets_the_count() {
    let store = Store::in_memory().expect("memory");
    store.init_directory(8, &layout(8)).expect("init");
    store
        .apply(
            &pins_change(vec![
                pin("alice", "eu-west", "us-east"),
                pin("bob", "eu-west", "us-east"),
                pin("carol", "eu-west", "us-east"),
            ]),
            &audit("pin", "users"),
        )
        .expect("apply");

    // A replacing bucket map of the wrong length is refused and changes nothing.
    let before = directory(&store);
    let error = store
        .apply(
            &Change::Directory(DirectoryChange::Replace {
                n_buckets: 2,
                buckets: layout(3),
                pins: Vec::new(),
            }),
            &audit("restore", "directory"),
        )
        .expect_err("wrong length");
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
    assert_eq!(directory(&store), before);
    assert_eq!(store.audit_log(None, 10).expect("audit").len(), 1);

    let buckets = vec![placement("x", "y"), placement("y", "x")];
    let seq = store
        .apply(
            &Change::Directory(DirectoryChange::Replace {
                n_buckets: 2,
                buckets: buckets.clone(),
                pins: vec![
                    ("dave".to_owned(), placement("y", "x")),
                    ("bob".to_owned(), placement("x", "y")),
                ],
            }),
            &audit("restore", "directory"),
        )
        .expect("apply");
    assert_eq!(seq, 2);
    assert_eq!(
        directory(&store),
        (
            Some((2, buckets.clone())),
            vec![
                ("bob".to_owned(), placement("x", "y")),
                ("dave".to_owned(), placement("y", "x")),
            ]
        )
    );
    assert_eq!(store.count_pins().expect("count"), 2);

    // The new count is the one enforced: bucket 2 of 8 was fine, of 2 it is out of range.
    let error = store
        .apply(
            &Change::Directory(DirectoryChange::Buckets(vec![(2, placement("x", "y"))])),
            &audit("place", "bucket 2"),
        )
        .expect_err("bucket 2 of 2");
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");

    // Growing the directory works the same way, and an empty replacement empties it.
    store
        .apply(
            &Change::Directory(DirectoryChange::Replace {
                n_buckets: 16,
                buckets: layout(16),
                pins: Vec::new(),
            }),
            &audit("restore", "directory"),
        )
        .expect("apply");
    assert_eq!(directory(&store), (Some((16, layout(16))), Vec::new()));
    assert_eq!(store.count_pins().expect("count"), 0);
}

#[test]
fn directory_survives_reopen_and_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    let expected = {
        let store = Store::open(dir.path()).expect("open");
        store.init_directory(4, &layout(4)).expect("init");
        store
            .apply(
                &pins_change(vec![
                    pin("alice", "eu-west", "us-east"),
                    pin("bob", "us-east", "eu-west"),
                ]),
                &audit("pin", "users"),
            )
            .expect("apply");
        store
            .apply(
                &Change::Directory(DirectoryChange::Buckets(vec![(2, placement("x", "y"))])),
                &audit("place", "bucket 2"),
            )
            .expect("apply");
        directory(&store)
    };
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(directory(&store), expected);
    assert!(!store.init_directory(8, &layout(8)).expect("init again"));

    // A copy taken while the store is open is what a `kill -9` would leave on disk.
    store
        .apply(
            &pins_change(vec![unpin("alice"), pin("carol", "x", "y")]),
            &audit("pin", "users"),
        )
        .expect("apply");
    let expected = directory(&store);
    std::fs::copy(db_path(dir.path()), db_path(crashed.path())).expect("copy");
    assert!(
        needs_repair(&db_path(crashed.path())),
        "the copy is not a crash image"
    );
    let recovered = Store::open(crashed.path()).expect("recover");
    assert_eq!(directory(&recovered), expected);
    assert_eq!(recovered.count_pins().expect("count"), 2);
    assert_eq!(recovered.audit_log(None, 10).expect("audit").len(), 3);
    drop(store);
}

#[test]
fn bulk_import_is_atomic() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store.init_directory(4096, &layout(4096)).expect("init");
        let seq = store
            .apply(&pins_change(bulk_pins(N, 0)), &audit("import", "pins"))
            .expect("import");
        assert_eq!(seq, 1);
    }
    let store = Store::open(dir.path()).expect("reopen");
    let expected = bulk_expected(N, 0);
    assert_pins(&store, &expected);

    // A second import of N rows that fails part-way, through the real path: it unpins a quarter
    // of the users, re-pins another quarter elsewhere and adds N / 2 new ones. The store applies
    // rows in id order, and the row of the 150,000th id holds a name that cannot be stored, so
    // the transaction has inserted or removed 150,000 pins when it fails.
    let mut rows: Vec<(String, Option<StoredPlacement>)> = (0..N)
        .map(|i| match i % 4 {
            0 => (bulk_user(i), None),
            1 => (bulk_user(i), Some(bulk_placement(i, 1))),
            _ => (bulk_user(N + i), Some(bulk_placement(N + i, 1))),
        })
        .collect();
    let mut ids: Vec<&str> = rows.iter().map(|(user, _)| user.as_str()).collect();
    ids.sort_unstable();
    let bad_user = ids[150_000].to_owned();
    let bad_row = rows
        .iter()
        .position(|(user, _)| *user == bad_user)
        .expect("the id is a row's");
    rows[bad_row].1 = Some(placement("eu\0west", "us-east"));
    let error = store
        .apply(&pins_change(rows.clone()), &audit("import", "pins"))
        .expect_err("a NUL in a name");
    assert!(
        matches!(&error, StoreError::Unencodable { table: "directory_pins", key, .. } if *key == bad_user),
        "{error:?}"
    );
    assert!(error.to_string().contains("NUL"), "{error}");
    assert_pins(&store, &expected);
    assert_eq!(store.audit_log(None, 10).expect("audit").len(), 1);

    // The same import interrupted by a crash before its commit: the file as it is mid-write
    // recovers to the first import, and dropping the transaction keeps nothing of it.
    rows[bad_row].1 = None;
    {
        let txn = store.db().expect("database").begin_write().expect("begin");
        let seq = write_change(&txn, &pins_change(rows), &audit("import", "pins")).expect("write");
        assert_eq!(seq, 2);
        std::fs::copy(db_path(dir.path()), db_path(crashed.path())).expect("copy");
        assert!(
            needs_repair(&db_path(crashed.path())),
            "the copy is not a crash image"
        );
        // Dropped without commit: aborted.
    }
    assert_pins(&store, &expected);
    let recovered = Store::open(crashed.path()).expect("recover");
    assert_pins(&recovered, &expected);
    assert_eq!(recovered.audit_log(None, 10).expect("audit").len(), 1);
    drop(store);
    assert_pins(&Store::open(dir.path()).expect("reopen"), &expected);
}

#[test]
fn directory_values_are_compact_text() {
    let store = Store::in_memory().expect("memory");
    store.init_directory(2, &layout(2)).expect("init");
    store
        .apply(
            &pins_change(vec![pin("alice", "eu-west", "us-east")]),
            &audit("pin", "alice"),
        )
        .expect("apply");
    let txn = store.db().expect("database").begin_read().expect("begin");
    let pins = txn.open_table(directory::PINS).expect("table");
    let value = pins.get("alice").expect("get").expect("present");
    assert_eq!(value.value(), b"eu-west\0us-east");
    let buckets = txn.open_table(directory::BUCKETS).expect("table");
    let value = buckets.get(1).expect("get").expect("present");
    assert_eq!(value.value(), b"us-east\0ap-south");
    let meta = txn.open_table(META).expect("table");
    let count = meta
        .get(directory::N_BUCKETS_KEY)
        .expect("get")
        .expect("set");
    assert_eq!(count.value(), b"2");
}

#[test]
fn names_holding_a_nul_byte_are_refused() {
    let store = Store::in_memory().expect("memory");
    let error = store
        .init_directory(1, &[placement("eu-west", "us\0east")])
        .expect_err("NUL in replica");
    assert_eq!(
        error.to_string(),
        "cannot store value in state table directory_buckets at key 0: \
         replica name \"us\\0east\" contains a NUL byte"
    );
    assert_eq!(directory(&store), (None, Vec::new()));

    store.init_directory(1, &layout(1)).expect("init");
    for change in [
        DirectoryChange::Buckets(vec![(0, placement("\0", "x"))]),
        DirectoryChange::Replace {
            n_buckets: 1,
            buckets: layout(1),
            pins: vec![("alice".to_owned(), placement("x", "y\0"))],
        },
    ] {
        let error = store
            .apply(&Change::Directory(change), &audit("place", "x"))
            .expect_err("NUL in a name");
        assert!(matches!(error, StoreError::Unencodable { .. }), "{error:?}");
    }
    assert_eq!(directory(&store), (Some((1, layout(1))), Vec::new()));
    assert!(store.audit_log(None, 10).expect("audit").is_empty());
}

#[test]
fn corrupt_directory_values_are_reported_with_table_and_key() {
    let store = Store::in_memory().expect("memory");
    store.init_directory(4, &layout(4)).expect("init");
    // Raw writes stand in for an altered file; each case is undone by the next.
    let write_raw = |edit: &dyn Fn(&WriteTransaction)| {
        let txn = store.db().expect("database").begin_write().expect("begin");
        edit(&txn);
        txn.commit().expect("commit");
    };
    let load_error = || {
        store
            .load_directory(&mut |_, _, _| {})
            .expect_err("corrupt directory")
    };

    for bad in [b"eu-west".as_slice(), b"eu\0west\0us", b"\xff\0us-east"] {
        write_raw(&|txn| {
            txn.open_table(directory::PINS)
                .expect("table")
                .insert("mallory", bad)
                .expect("insert");
        });
        let error = load_error();
        assert!(
            matches!(&error, StoreError::Corrupt { table: "directory_pins", key, .. } if key == "mallory"),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("corrupt value in state table directory_pins at key mallory: "),
            "{error}"
        );
    }
    write_raw(&|txn| {
        txn.open_table(directory::PINS)
            .expect("table")
            .remove("mallory")
            .expect("remove");
    });

    let bucket_error = |key: &str| {
        let error = load_error();
        assert!(
            matches!(&error, StoreError::Corrupt { table: "directory_buckets", key: found, .. } if found == key),
            "{error:?}"
        );
    };
    write_raw(&|txn| {
        txn.open_table(directory::BUCKETS)
            .expect("table")
            .insert(2, b"x".as_slice())
            .expect("insert");
    });
    bucket_error("2");
    // A bucket missing in the middle and at the end of the map.
    write_raw(&|txn| {
        txn.open_table(directory::BUCKETS)
            .expect("table")
            .remove(2)
            .expect("remove");
    });
    bucket_error("2");
    write_raw(&|txn| {
        let mut table = txn.open_table(directory::BUCKETS).expect("table");
        table.insert(2, b"a\0b".as_slice()).expect("insert");
        table.remove(3).expect("remove");
    });
    bucket_error("3");
    // A bucket beyond the count.
    write_raw(&|txn| {
        let mut table = txn.open_table(directory::BUCKETS).expect("table");
        table.insert(3, b"a\0b".as_slice()).expect("insert");
        table.insert(9, b"a\0b".as_slice()).expect("insert");
    });
    bucket_error("9");
    write_raw(&|txn| {
        txn.open_table(directory::BUCKETS)
            .expect("table")
            .remove(9)
            .expect("remove");
    });
    assert!(directory(&store).0.is_some());

    // A bucket count that does not decode, or is missing while buckets are stored.
    write_raw(&|txn| {
        txn.open_table(META)
            .expect("table")
            .insert(directory::N_BUCKETS_KEY, b"\"four\"".as_slice())
            .expect("insert");
    });
    let error = load_error();
    assert!(
        matches!(&error, StoreError::Corrupt { table: "meta", key, .. } if key == "directory_n_buckets"),
        "{error:?}"
    );
    write_raw(&|txn| {
        txn.open_table(META)
            .expect("table")
            .remove(directory::N_BUCKETS_KEY)
            .expect("remove");
    });
    let error = load_error();
    assert!(
        matches!(&error, StoreError::Corrupt { table: "meta", key, .. } if key == "directory_n_buckets"),
        "{error:?}"
    );
    assert!(error.to_string().contains("holds 4 buckets"), "{error}");
}

/// The number of pins [`bulk_import_and_load_timing`] writes: `STORE_BENCH_PINS`, or 200,000.
fn bench_pins() -> u64 {
    match std::env::var("STORE_BENCH_PINS") {
        Ok(value) => value.parse().expect("STORE_BENCH_PINS is a number"),
        Err(_) => 200_000,
    }
}

/// Measures (without asserting) a bulk import and a full load on a file store.
///
/// `cargo test` runs it for 200,000 pins; for the figure at ten times that, run
/// `STORE_BENCH_PINS=1000000 cargo test --release --lib bulk_import_and_load_timing -- --nocapture`.
#[test]
fn bulk_import_and_load_timing() {
    let n = bench_pins();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let change = pins_change(bulk_pins(n, 0));

    let started = Instant::now();
    store
        .apply(&change, &audit("import", "pins"))
        .expect("import");
    let applied = started.elapsed();
    drop(change);

    let started = Instant::now();
    let mut visited = 0_u64;
    let mut name_bytes = 0;
    store
        .load_directory(&mut |user, home, replica| {
            visited += 1;
            name_bytes += user.len() + home.len() + replica.len();
        })
        .expect("load directory");
    let loaded = started.elapsed();
    assert_eq!(visited, n);
    assert!(name_bytes > 0);
    drop(store);

    // Opening verifies every checksum in the file, so it grows with the directory too.
    let started = Instant::now();
    let store = Store::open(dir.path()).expect("reopen");
    let reopened = started.elapsed();
    assert_eq!(store.count_pins().expect("count"), n);
    let file_bytes = std::fs::metadata(db_path(dir.path()))
        .expect("metadata")
        .len();
    eprintln!(
        "directory timing, {n} pins: apply {applied:?}, load_directory {loaded:?}, \
         reopen {reopened:?}, file {} MiB",
        file_bytes / (1024 * 1024)
    );
}

#[test]
fn an_empty_file_is_refused_and_reset_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    std::fs::write(&path, b"").expect("write");
    let error = Store::open(dir.path()).expect_err("an empty file");
    assert!(matches!(error, StoreError::Empty { .. }), "{error:?}");
    assert!(error.to_string().contains("--state-reset"), "{error}");
    let error = Store::open_or_reset(dir.path(), false).expect_err("no reset");
    assert!(matches!(error, StoreError::Empty { .. }), "{error:?}");
    assert_eq!(std::fs::metadata(&path).expect("kept").len(), 0);

    let (store, aside) = Store::open_or_reset(dir.path(), true).expect("reset");
    let aside = aside.expect("kept aside");
    assert_eq!(aside, dir.path().join("meridian.redb.bad"));
    assert_eq!(std::fs::metadata(&aside).expect("aside").len(), 0);
    fill(&store);
    assert_full(&store);

    // A file in use by another store is never moved, reset or not.
    let error = Store::open_or_reset(dir.path(), true).expect_err("locked");
    assert!(!error.is_damaged_file(), "{error:?}");
    drop(store);
    // A garbage file is set aside under the next free name.
    std::fs::write(&path, b"garbage").expect("write");
    let (_store, aside) = Store::open_or_reset(dir.path(), true).expect("reset");
    assert_eq!(aside, Some(dir.path().join("meridian.redb.bad.1")));
}

#[test]
fn a_probe_writes_and_changes_no_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    fill(&store);
    store.probe().expect("probe");
    store.probe().expect("probe again");
    assert!(!store.is_failing());
    assert_full(&store);
}
