//! Records that travel together, with an upper bound of their size on the wire.
//!
//! The bound lets the handler tell, without encoding, that a reply surely fits its UDP payload
//! size; only replies that might not fit are trial-encoded (see `handler.rs`).

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// A record set and its uncompressed wire length.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordSet {
    records: Box<[Record]>,
    /// The records encoded one by one with no name compression: never less than what they
    /// take in a message.
    wire_len: usize,
}

impl RecordSet {
    /// Measures `records` once, when a snapshot is built.
    pub(crate) fn new(records: impl Into<Box<[Record]>>) -> Self {
        let records = records.into();
        let wire_len = records.iter().map(uncompressed_len).sum();
        RecordSet { records, wire_len }
    }

    /// The records.
    pub(crate) fn records(&self) -> &[Record] {
        &self.records
    }

    /// Upper bound of the records' size in a message.
    pub(crate) fn wire_len(&self) -> usize {
        self.wire_len
    }

    /// Whether there are no records.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn uncompressed_len(record: &Record) -> usize {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    match record.emit(&mut encoder) {
        Ok(()) => bytes.len(),
        // A record that cannot be encoded is never sent whole; count it as too big to fit so
        // the handler takes the careful path.
        Err(_) => usize::from(u16::MAX),
    }
}
