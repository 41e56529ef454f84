//! A simulated object store: an S3 stand-in for the simulation and for tests, with
//! injected errors and latency.
//!
//! It lives outside any node (clones share it), like a remote service: a node's power
//! loss leaves it untouched. Every operation first waits a uniformly random latency (on
//! the shard, `rt::time::sleep_local`), then may fail. A failed `put` may have stored the
//! object anyway, as an S3 request that times out after the write landed; a failed
//! `delete` may have deleted it. Faults are seeded and off unless a test turns them on.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::rt::rand::{seeded, Rng, SeededRng};

/// Which faults a [`SimObjectStore`] injects. The default injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimObjectFaults {
    /// Probability that an operation fails.
    pub error_probability: f64,
    /// Each operation waits a uniformly random time up to this.
    pub latency_max: Duration,
    /// Only this operation fails (`"put"`, `"get"`, `"list"` or `"delete"`); `None`:
    /// any of them.
    pub only: Option<&'static str>,
}

/// What a [`SimObjectStore`] did, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimObjectStats {
    pub puts: u64,
    pub gets: u64,
    pub errors: u64,
}

/// The simulated store. Clones share it.
#[derive(Clone)]
pub struct SimObjectStore {
    state: Arc<Mutex<State>>,
}

struct State {
    rng: SeededRng,
    faults: SimObjectFaults,
    objects: BTreeMap<String, Vec<u8>>,
    stats: SimObjectStats,
}

impl fmt::Debug for SimObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SimObjectStore")
            .field("objects", &state.objects.len())
            .field("faults", &state.faults)
            .finish()
    }
}

/// Two handles are equal when they share one store.
impl PartialEq for SimObjectStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

impl Eq for SimObjectStore {}

/// What an injected fault does to the operation it fails.
enum Outcome {
    Succeed,
    /// The operation takes effect, and its caller is told it failed.
    FailAfter,
}

impl SimObjectStore {
    pub fn new(seed: u64, faults: SimObjectFaults) -> SimObjectStore {
        SimObjectStore {
            state: Arc::new(Mutex::new(State {
                rng: seeded(seed),
                faults,
                objects: BTreeMap::new(),
                stats: SimObjectStats::default(),
            })),
        }
    }

    pub fn set_faults(&self, faults: SimObjectFaults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> SimObjectStats {
        self.lock().stats.clone()
    }

    /// Deletes every object, as a bucket emptied (the simulation's replaced disk, when its
    /// datanode keeps its SSTs here).
    pub fn wipe(&self) {
        self.lock().objects.clear();
    }

    /// The keys stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("SimObjectStore state poisoned")
    }

    /// Waits the injected latency, then decides whether the operation fails.
    async fn fault(&self, what: &str, key: &str) -> Result<Outcome, io::Error> {
        let delay = {
            let mut state = self.lock();
            let latency_max = state.faults.latency_max;
            if latency_max.is_zero() {
                Duration::ZERO
            } else {
                state.rng.gen_range(Duration::ZERO..=latency_max)
            }
        };
        if !delay.is_zero() {
            crate::rt::time::sleep_local(delay).await;
        }
        let mut state = self.lock();
        let p = state.faults.error_probability;
        if p > 0.0 && state.faults.only.is_none_or(|only| only == what) && state.rng.gen_bool(p) {
            state.stats.errors += 1;
            if state.rng.gen_bool(0.5) {
                return Ok(Outcome::FailAfter);
            }
            return Err(injected(what, key));
        }
        Ok(Outcome::Succeed)
    }

    pub(super) async fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let outcome = self.fault("put", key).await?;
        let mut state = self.lock();
        state.stats.puts += 1;
        state.objects.insert(key.to_string(), bytes);
        match outcome {
            Outcome::FailAfter => Err(injected("put", key)),
            Outcome::Succeed => Ok(()),
        }
    }

    pub(super) async fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        if let Outcome::FailAfter = self.fault("get", key).await? {
            return Err(injected("get", key));
        }
        let mut state = self.lock();
        state.stats.gets += 1;
        state.objects.get(key).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("object {key} not found"))
        })
    }

    pub(super) async fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        if let Outcome::FailAfter = self.fault("list", prefix).await? {
            return Err(injected("list", prefix));
        }
        let directory = format!("{prefix}/");
        Ok(self
            .lock()
            .objects
            .keys()
            .filter(|key| key.starts_with(&directory))
            .cloned()
            .collect())
    }

    pub(super) async fn delete(&self, key: &str) -> io::Result<()> {
        let outcome = self.fault("delete", key).await?;
        self.lock().objects.remove(key);
        match outcome {
            Outcome::FailAfter => Err(injected("delete", key)),
            Outcome::Succeed => Ok(()),
        }
    }
}

fn injected(what: &str, key: &str) -> io::Error {
    io::Error::other(format!("injected object store error: {what} {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::object::ObjectStore;
    use futures::executor::block_on;

    #[test]
    fn objects_round_trip_and_survive_in_every_clone() {
        let sim = SimObjectStore::new(1, SimObjectFaults::default());
        let store = ObjectStore::sim(sim.clone());
        block_on(async {
            store.put("r/sst/1", b"one".to_vec()).await.unwrap();
            store.put("r/sst/2", b"two".to_vec()).await.unwrap();
            store.put("other/3", b"three".to_vec()).await.unwrap();
            assert_eq!(store.get("r/sst/1").await.unwrap(), b"one");
            assert_eq!(store.list("r/sst").await.unwrap(), ["r/sst/1", "r/sst/2"]);
            store.delete("r/sst/1").await.unwrap();
            store.delete("r/sst/1").await.unwrap();
            let missing = store.get("r/sst/1").await.unwrap_err();
            assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        });
        assert_eq!(sim.keys(), ["other/3", "r/sst/2"]);
        assert_eq!(sim.stats().errors, 0);
    }

    #[test]
    fn injected_errors_fail_requests_before_or_after_they_take_effect() {
        let sim = SimObjectStore::new(
            7,
            SimObjectFaults {
                error_probability: 1.0,
                latency_max: Duration::ZERO,
                only: None,
            },
        );
        let store = ObjectStore::sim(sim.clone());
        let stored = block_on(async {
            let mut stored = 0;
            for i in 0..100 {
                let key = format!("k/{i}");
                let error = store.put(&key, vec![1]).await.unwrap_err();
                assert!(error.to_string().contains("injected"), "{error}");
                stored += usize::from(sim.keys().contains(&key));
                assert!(store.get(&key).await.is_err());
                assert!(store.list("k").await.is_err());
            }
            stored
        });
        // Half the failed puts landed anyway, as S3 requests that time out may.
        assert!(
            (30..70).contains(&stored),
            "{stored} of 100 failed puts stored"
        );
        assert_eq!(sim.stats().errors, 300);
        sim.set_faults(SimObjectFaults::default());
        block_on(async {
            assert!(store.list("k").await.unwrap().len() == stored);
        });
    }
}
