//! Metrics (prometheus).
