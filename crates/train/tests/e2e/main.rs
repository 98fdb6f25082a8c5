//! The trainer's end-to-end tests in one binary: each test binary links all of Burn, so one
//! binary instead of seven saves CI minutes of linking, and its tests run side by side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The mlops crate's harness for a real `mlflow server` (free port, /health wait, process-group
// kill on drop), shared rather than copied.
#[path = "../../../mlops/tests/common/mod.rs"]
mod common;
mod harness;

mod distill;
mod folds;
mod location;
mod multi_device;
mod probe;
mod recipes;
mod release;
mod teach;
mod trainer;
