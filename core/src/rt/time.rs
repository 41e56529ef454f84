//! Clocks and timers.
//!
//! [`now`] and [`system_time`] work in any context. [`sleep`], [`timeout`] and [`interval`]
//! are for the shared (tokio) context and return `Send` futures; [`sleep_local`] and
//! [`timeout_local`] are for shard (monoio) tasks. Under madsim all of them are simulated
//! time, which only advances when every task is idle.

use std::future::Future;
pub use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock. Simulated under madsim (madsim intercepts `clock_gettime`).
pub fn now() -> Instant {
    Instant::now()
}

/// The wall clock. Simulated under madsim.
pub fn system_time() -> SystemTime {
    #[cfg(madsim)]
    {
        madsim::time::TimeHandle::current().now_time()
    }
    #[cfg(not(madsim))]
    {
        SystemTime::now()
    }
}

/// Milliseconds since the Unix epoch by the wall clock; negative before 1970.
pub fn unix_time_ms() -> i64 {
    match system_time().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Nanoseconds since the Unix epoch by the wall clock, saturating past 2262 and before
/// 1677 (an `i64` of nanoseconds holds no more).
pub fn unix_time_ns() -> i64 {
    match system_time().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The deadline of a [`timeout`] or [`timeout_local`] passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} elapsed")]
pub struct Elapsed(pub Duration);

/// Sleeps in the shared (tokio) context.
pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await
}

/// Runs `future` in the shared (tokio) context, giving up after `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(duration, future)
        .await
        .map_err(|_| Elapsed(duration))
}

/// A periodic timer in the shared (tokio) context. A tick that is late is delayed rather
/// than burst: a stalled heartbeat loop must not fire a volley of heartbeats on recovery.
pub struct Interval {
    inner: tokio::time::Interval,
}

/// Creates an [`Interval`] whose first tick completes immediately.
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "an interval period must be positive");
    let mut inner = tokio::time::interval(period);
    inner.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Interval { inner }
}

impl Interval {
    /// Waits for the next tick and returns its scheduled time.
    pub async fn tick(&mut self) -> Instant {
        let tick = self.inner.tick().await;
        // tokio has its own Instant type; madsim's simulated tokio uses std's.
        #[cfg(not(madsim))]
        let tick = tick.into_std();
        tick
    }
}

/// Sleeps on a shard (monoio in production).
pub async fn sleep_local(duration: Duration) {
    #[cfg(madsim)]
    {
        madsim::time::sleep(duration).await
    }
    #[cfg(not(madsim))]
    {
        monoio::time::sleep(duration).await
    }
}

/// Runs `future` on a shard, giving up after `duration`.
pub async fn timeout_local<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    #[cfg(madsim)]
    {
        madsim::time::timeout(duration, future)
            .await
            .map_err(|_| Elapsed(duration))
    }
    #[cfg(not(madsim))]
    {
        monoio::time::timeout(duration, future)
            .await
            .map_err(|_| Elapsed(duration))
    }
}
