//! Benches live in `audio.rs` and `models.rs`; this library is empty on purpose.
