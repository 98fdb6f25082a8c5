//! The end-to-end tests across crates, in one binary: each test binary links all of Burn, so one
//! binary instead of nine saves CI minutes of compiling and linking, and its tests run side by
//! side. (The wgpu tests, tests/wgpu.rs, are a binary of their own with their own features.)

// The server crate's harness (a real `silencio serve` on a free port, test audio), shared.
#[path = "../../crates/server/tests/common/mod.rs"]
mod common;

mod cli;
mod dashboard_live;
mod etl;
mod eval;
mod identify;
mod loadgen;
mod serve;
mod serve_crash;
mod stream;
