//! End-to-end tests live in `cli.rs`; this library is empty on purpose.
