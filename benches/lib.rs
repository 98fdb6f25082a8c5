//! Benches live in `audio.rs`, `models.rs` and `train_throughput.rs`; this library is empty on
//! purpose.
