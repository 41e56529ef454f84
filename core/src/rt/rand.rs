//! Randomness: one generator per process, seeded by the OS in production and by the
//! simulation seed under madsim, so a seed replays every random choice.
//!
//! Components that need a reproducible stream of their own (a simulated disk, a workload)
//! take a seed from [`seed`] and build a [`SeededRng`] from it.

pub use rand::{Rng, RngCore, SeedableRng};

use rand::distributions::uniform::{SampleRange, SampleUniform};
use rand::distributions::{Distribution, Standard};

/// A small, fast generator for components that carry their own seeded stream. Its output
/// for a given seed is fixed by the `rand` version in `Cargo.lock`.
pub type SeededRng = rand::rngs::SmallRng;

fn with_rng<R>(f: impl FnOnce(&mut dyn RngCore) -> R) -> R {
    #[cfg(madsim)]
    {
        f(&mut madsim::rand::thread_rng())
    }
    #[cfg(not(madsim))]
    {
        f(&mut rand::thread_rng())
    }
}

/// A random value of type `T`.
pub fn random<T>() -> T
where
    Standard: Distribution<T>,
{
    with_rng(|rng| Standard.sample(rng))
}

/// A random value in `range`.
pub fn gen_range<T, R>(range: R) -> T
where
    T: SampleUniform,
    R: SampleRange<T>,
{
    with_rng(|rng| range.sample_single(rng))
}

/// True with probability `p` (clamped to `0.0..=1.0`).
pub fn gen_bool(p: f64) -> bool {
    with_rng(|rng| rng.gen_bool(p.clamp(0.0, 1.0)))
}

/// Fills `dest` with random bytes.
pub fn fill_bytes(dest: &mut [u8]) {
    with_rng(|rng| rng.fill_bytes(dest))
}

/// A fresh seed drawn from the process generator.
pub fn seed() -> u64 {
    random()
}

/// A generator seeded with `seed`: the same seed gives the same stream on every run.
pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

#[cfg(madsim)]
thread_local! {
    // One madsim runtime per thread at a time; a test enables it at its start.
    static BUGGIFY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Turns [`buggify`] on (or off) for the simulation running on this thread. Not madsim's
/// own switch (`madsim::buggify::enable`), which also delays a tenth of every network
/// connect and message by 1–5 s: a different fault, which the harnesses inject
/// themselves where they mean to.
#[cfg(madsim)]
pub fn enable_buggify(on: bool) {
    BUGGIFY.with(|enabled| enabled.set(on));
}

/// FoundationDB's BUGGIFY: true with probability `probability` in a simulation that has
/// buggify enabled ([`enable_buggify`]), and always false in production, where it
/// compiles to a constant.
#[inline(always)]
pub fn buggify(probability: f64) -> bool {
    #[cfg(madsim)]
    {
        BUGGIFY.with(std::cell::Cell::get) && gen_bool(probability)
    }
    #[cfg(not(madsim))]
    {
        let _ = probability;
        false
    }
}

/// `buggify!(p)`: take a rare path with probability `p`, only in simulation. Put it where a
/// rare-but-legal event (a short read, a slow fsync, an early timeout) should be exercised
/// far more often than production would.
#[macro_export]
macro_rules! buggify {
    ($probability:expr) => {
        $crate::rt::rand::buggify($probability)
    };
}

#[cfg(all(test, not(madsim)))]
mod tests {
    #[test]
    fn buggify_never_fires_in_production() {
        assert!((0..10_000).all(|_| !crate::buggify!(1.0)));
    }
}
