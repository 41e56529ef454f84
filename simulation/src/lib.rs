//! The deterministic simulation harness: whole Metronome deployments inside madsim, one
//! thread, simulated time, a seed that replays any failure.
//!
//! This crate owns the pieces every simulation test shares: a simulated node paired with
//! its own [`SimDisk`](metronome_core::rt::disk::SimDisk) and power-loss helpers. Tests
//! live in `tests/` and only compile under `--cfg madsim`:
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" cargo test -p metronome-simulation --target-dir target/madsim
//! MADSIM_TEST_SEED=7 MADSIM_TEST_CHECK_DETERMINISM=1 RUSTFLAGS="--cfg madsim" cargo test ...
//! ```
//!
//! It must not be a dependency of any production crate, and must not reach the real
//! world: everything goes through `metronome_core::rt`, which madsim simulates.

#[cfg(madsim)]
pub mod node;
