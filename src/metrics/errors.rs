//! Internal errors kept for operators: a bounded ring of the most recent panics and internal
//! failures, with the count by kind beside it (`meridian_internal_errors_total{kind}`).
//!
//! Whoever catches an error records it here through [`Metrics::keep_error`](super::Metrics::keep_error)
//! (and logs it, once, with its context); `GET /v1/errors` reads the ring. It lives in memory
//! only and starts empty at each start.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// How many errors the ring keeps; older ones are dropped first.
pub const ERROR_RING_SIZE: usize = 256;

/// The kind of an internal error: a label of `meridian_internal_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A panic caught in a request handler (HTTP or DNS) or a background task.
    Panic,
    /// The state store failed to read or write.
    Store,
    /// A control-plane request failed inside the server (HTTP 500) for another reason.
    Internal,
}

impl ErrorKind {
    /// The label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Panic => "panic",
            ErrorKind::Store => "store",
            ErrorKind::Internal => "internal",
        }
    }
}

/// One caught error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalError {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// What kind.
    pub kind: ErrorKind,
    /// Where: `http PUT /v1/log`, `dns udp`, `task state-manager`, `store apply report eu-west`.
    pub context: String,
    /// The panic's or the failure's message.
    pub message: String,
}

/// The most recent internal errors, at most [`ERROR_RING_SIZE`].
#[derive(Debug, Default)]
pub(super) struct ErrorRing {
    /// A `Mutex` because errors are rare and each critical section is a push or a copy; the
    /// query path takes it only after a panic.
    ring: Mutex<VecDeque<InternalError>>,
}

impl ErrorRing {
    pub(super) fn push(&self, error: InternalError) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() == ERROR_RING_SIZE {
            ring.pop_front();
        }
        ring.push_back(error);
    }

    pub(super) fn list(&self) -> Vec<InternalError> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.iter().cloned().collect()
    }
}

/// The message a panic was raised with.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_most_recent() {
        let errors = ErrorRing::default();
        for n in 0..ERROR_RING_SIZE + 3 {
            errors.push(InternalError {
                unix_ms: n as u64,
                kind: ErrorKind::Panic,
                context: "http".to_owned(),
                message: n.to_string(),
            });
        }
        let kept = errors.list();
        assert_eq!(kept.len(), ERROR_RING_SIZE);
        assert_eq!(kept[0].unix_ms, 3);
    }

    #[test]
    fn panic_messages_are_read_either_way_they_are_raised() {
        let message = |f: fn()| {
            let payload = std::panic::catch_unwind(f).expect_err("it panics");
            panic_message(payload.as_ref())
        };
        assert_eq!(message(|| panic!("plain")), "plain");
        assert_eq!(message(|| panic!("formatted {}", 1)), "formatted 1");
        assert_eq!(
            message(|| std::panic::panic_any(7)),
            "a panic without a message"
        );
    }
}
