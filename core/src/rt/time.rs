//! Clocks and timers.
//!
//! [`now`] and [`system_time`] work in any context (under madsim, once a drift is set,
//! only in a simulated node's task: the clock read is that node's). [`sleep`], [`timeout`] and [`interval`]
//! are for the shared (tokio) context and return `Send` futures; [`sleep_local`] and
//! [`timeout_local`] are for shard (monoio) tasks. Under madsim all of them are simulated
//! time, which only advances when every task is idle, and each simulated node's monotonic
//! clock may run fast or slow ([`drift`]): every instant and duration a node reads or
//! waits on is that node's, as a real machine's would be.

use std::future::Future;
pub use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock. Simulated under madsim (madsim intercepts `clock_gettime`), and
/// then the calling node's own, drifting as [`drift::set`] made it.
pub fn now() -> Instant {
    #[cfg(madsim)]
    {
        drift::local(Instant::now())
    }
    #[cfg(not(madsim))]
    {
        Instant::now()
    }
}

/// How long has passed on this node's clock since `since` (an instant [`now`] gave).
/// Not `Instant::elapsed`, which reads the real clock under madsim rather than the
/// node's drifting one (clippy bans it).
pub fn elapsed(since: Instant) -> Duration {
    now().saturating_duration_since(since)
}

/// How long the runtime waits (real, or the simulation's one clock) for `duration` to
/// pass on this node's clock.
fn waited(duration: Duration) -> Duration {
    #[cfg(madsim)]
    {
        drift::real_duration(duration)
    }
    #[cfg(not(madsim))]
    {
        duration
    }
}

/// Clocks that run fast or slow, per simulated node: the simulation's way to skew
/// clocks. A node's clock runs at `1 + rate_ppm / 10⁶` times the simulation's; setting a
/// rate keeps the node's clock continuous (it never jumps, and never goes back: a
/// monotonic clock drifts, it is not set). The wall clock ([`system_time`]) does not
/// drift. Only the harness sets rates; nodes with none keep the simulation's clock. A
/// wait already begun (a sleep, a timeout, an interval's period) keeps the rate it began
/// with.
#[cfg(madsim)]
pub mod drift {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::{Duration, Instant};

    /// A node's clock: at real instant `real_at` it read `local_at`, and it runs at
    /// `rate_ppm` from there.
    #[derive(Debug, Clone, Copy)]
    struct Clock {
        real_at: Instant,
        local_at: Instant,
        rate_ppm: i64,
    }

    /// The fastest or slowest a clock may be set to run: far past any real quartz
    /// (typically tens of ppm), as far as a negative test needs (a clock at half speed,
    /// like a guest's paused half the time), and short of a clock that stands still.
    pub const RATE_PPM_MAX: i64 = 500_000;

    thread_local! {
        // One madsim runtime per thread at a time; [`clear`] starts each run afresh.
        static CLOCKS: RefCell<BTreeMap<madsim::task::NodeId, Clock>> =
            const { RefCell::new(BTreeMap::new()) };
    }

    /// Makes `node`'s clock run at `rate_ppm` from now on.
    pub fn set(node: madsim::task::NodeId, rate_ppm: i64) {
        assert!(
            rate_ppm.abs() <= RATE_PPM_MAX,
            "a clock rate of {rate_ppm} ppm is past {RATE_PPM_MAX}"
        );
        let real_at = Instant::now();
        let local_at = clock(node).map_or(real_at, |clock| clock.local(real_at));
        CLOCKS.with(|clocks| {
            clocks.borrow_mut().insert(
                node,
                Clock {
                    real_at,
                    local_at,
                    rate_ppm,
                },
            )
        });
    }

    /// Every node's clock back to the simulation's (a run's start; a clock already read
    /// may see a jump, so only between runs).
    pub fn clear() {
        CLOCKS.with(|clocks| clocks.borrow_mut().clear());
    }

    fn clock(node: madsim::task::NodeId) -> Option<Clock> {
        CLOCKS.with(|clocks| clocks.borrow().get(&node).copied())
    }

    /// The calling node's clock, if one was set. The node is asked for only then: code
    /// outside any simulated task (a runtime's setup) has none, and drifts nowhere.
    fn clock_here() -> Option<Clock> {
        CLOCKS.with(|clocks| {
            let clocks = clocks.borrow();
            if clocks.is_empty() {
                return None;
            }
            clocks.get(&madsim::plugin::node()).copied()
        })
    }

    fn scale(duration: Duration, numerator: i64, denominator: i64) -> Duration {
        let nanos = duration.as_nanos() * numerator as u128 / denominator as u128;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    impl Clock {
        fn local(&self, real: Instant) -> Instant {
            let rate = 1_000_000 + self.rate_ppm;
            if real >= self.real_at {
                self.local_at + scale(real - self.real_at, rate, 1_000_000)
            } else {
                self.local_at - scale(self.real_at - real, rate, 1_000_000)
            }
        }
    }

    /// The calling node's clock at real instant `real`.
    pub(crate) fn local(real: Instant) -> Instant {
        match clock_here() {
            Some(clock) => clock.local(real),
            None => real,
        }
    }

    /// The real instant at which the calling node's clock reads `local` (openraft's
    /// timers wait until such deadlines).
    pub fn real(local: Instant) -> Instant {
        let Some(clock) = clock_here() else {
            return local;
        };
        let rate = 1_000_000 + clock.rate_ppm;
        if local >= clock.local_at {
            clock.real_at + scale(local - clock.local_at, 1_000_000, rate)
        } else {
            clock.real_at - scale(clock.local_at - local, 1_000_000, rate)
        }
    }

    /// The real time it takes the calling node's clock to advance by `local`.
    pub(crate) fn real_duration(local: Duration) -> Duration {
        match clock_here() {
            Some(clock) => scale(local, 1_000_000, 1_000_000 + clock.rate_ppm),
            None => local,
        }
    }

    /// The simulation's one clock, whatever the calling node's reads: for a harness
    /// comparing instants taken on different nodes.
    pub fn true_now() -> Instant {
        Instant::now()
    }
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
    tokio::time::sleep(waited(duration)).await
}

/// Runs `future` in the shared (tokio) context, giving up after `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(waited(duration), future)
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
    let mut inner = tokio::time::interval(waited(period));
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
        #[cfg(madsim)]
        let tick = drift::local(tick);
        tick
    }
}

/// Sleeps on a shard (monoio in production).
pub async fn sleep_local(duration: Duration) {
    #[cfg(madsim)]
    {
        madsim::time::sleep(waited(duration)).await
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
        madsim::time::timeout(waited(duration), future)
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
