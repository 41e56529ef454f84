//! The deterministic simulation harness: whole Metronome deployments inside madsim, one
//! thread, simulated time, a seed that replays any failure.
//!
//! This crate owns the pieces every simulation test shares: a simulated node paired with
//! its own [`SimDisk`](metronome_core::rt::disk::SimDisk) and power-loss helpers
//! ([`node`]), and a cluster's roles as simulated nodes ([`cluster`]). Tests
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
pub mod cluster;
#[cfg(madsim)]
pub mod node;

/// Initializes process-wide random state before any simulation runs.
///
/// Some libraries seed a hasher once per process on first use (ahash, which arrow and
/// parquet use to build dictionaries). Inside madsim that first use draws from the
/// simulation's random generator. madsim's determinism check runs a seed twice in one
/// process, so the first run would draw and the second not, and the check would fail
/// although replaying a seed in a fresh process is exact. Running the same code once at
/// load time, outside any simulation, takes the draw from the OS instead.
#[cfg(madsim)]
#[ctor::ctor]
fn initialize_process_random_state() {
    use metronome_core::data::{FieldColumn, FieldType, RegionSchema, Row, TimeUnit, Value};
    let schema = RegionSchema {
        tags: vec!["t".to_string()],
        time_index: "ts".to_string(),
        time_unit: TimeUnit::Millisecond,
        fields: vec![FieldColumn {
            name: "v".to_string(),
            field_type: FieldType::String,
        }],
    };
    let row = Row {
        tags: vec!["x".to_string()],
        ts: 0,
        fields: vec![Value::String("y".to_string())],
    };
    let (bytes, _) =
        metronome_datanode::sst::encode(&schema, 0, &[(1, row)]).expect("warm-up SST encodes");
    let _ = metronome_datanode::sst::read(bytes.into(), &schema, i64::MIN, i64::MAX, |_| true);
}
