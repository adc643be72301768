//! The durable state store (redb).
