//! A value that only moves forward, read by some and waited on by others: the catalog's
//! applied version (which frontends' watches wait on) and the last snapshot on disk
//! (which a held log purge waits on).
//!
//! Not tokio's `watch`: its receivers wait on one of several notifiers picked at random
//! from tokio's thread-local generator, which is seeded on first use, so under madsim the
//! first run of a seed draws from it and the determinism re-run does not (the check caught
//! it). A `Notify` draws nothing.

use std::sync::Mutex;

use tokio::sync::Notify;

/// A value and a wake for those waiting for it to reach a point.
#[derive(Debug, Default)]
pub struct Watched<T> {
    value: Mutex<T>,
    moved: Notify,
}

impl<T: Copy + PartialOrd + std::fmt::Debug> Watched<T> {
    pub fn new(value: T) -> Watched<T> {
        Watched {
            value: Mutex::new(value),
            moved: Notify::new(),
        }
    }

    /// The value now.
    pub fn get(&self) -> T {
        *self.value.lock().expect("watched value")
    }

    /// Sets the value, which may not go back, and wakes every waiter.
    pub fn set(&self, value: T) {
        {
            let mut held = self.value.lock().expect("watched value");
            assert!(
                value >= *held,
                "a watched value went back from {:?} to {value:?}",
                *held
            );
            *held = value;
        }
        self.moved.notify_waiters();
    }

    /// Resolves with the value once `reached` says it has reached what the caller waits
    /// for.
    pub async fn reached(&self, reached: impl Fn(T) -> bool) -> T {
        loop {
            let mut moved = std::pin::pin!(self.moved.notified());
            // Registered before the check, so a change between the two still wakes it.
            moved.as_mut().enable();
            let value = self.get();
            if reached(value) {
                return value;
            }
            moved.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_wakes_once_the_value_reaches_its_point() {
        let watched = Arc::new(Watched::new(1u64));
        let waiter = metronome_core::rt::task::spawn({
            let watched = watched.clone();
            async move { watched.reached(|value| value > 2).await }
        });
        tokio::task::yield_now().await;
        watched.set(2);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "2 is not past 2");
        watched.set(5);
        assert_eq!(waiter.await.unwrap(), 5);
        // Already reached: at once.
        assert_eq!(watched.reached(|value| value >= 5).await, 5);
    }

    #[test]
    #[should_panic(expected = "went back")]
    fn a_watched_value_never_goes_back() {
        let watched = Watched::new(Some(3u64));
        watched.set(None);
    }
}
