//! Benches live in `audio.rs`; this library is empty on purpose.
