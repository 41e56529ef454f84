//! openraft's runtime on this seam: its tasks, timers, clock and randomness go through
//! [`super::task`], [`super::time`] and [`super::rand`], so under madsim the metasrv's raft
//! is as deterministic as everything else.
//!
//! openraft 0.9 reaches its runtime only through the [`AsyncRuntime`] trait; besides it,
//! it uses `tokio::sync` channels and `tokio::select!`, which need no runtime of their own.
//! Its default runtime calls the real tokio's timers directly, which madsim cannot see
//! (the simulation's `tokio` is madsim-tokio, a different crate).

use std::fmt;
use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend};
use rand::SeedableRng;

use super::rand::SeededRng;

/// The clock openraft reads: [`super::time::now`]'s instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RaftInstant(pub std::time::Instant);

impl openraft::Instant for RaftInstant {
    fn now() -> Self {
        RaftInstant(super::time::now())
    }
}

impl Add<Duration> for RaftInstant {
    type Output = RaftInstant;
    fn add(self, duration: Duration) -> RaftInstant {
        RaftInstant(self.0 + duration)
    }
}

impl AddAssign<Duration> for RaftInstant {
    fn add_assign(&mut self, duration: Duration) {
        self.0 += duration;
    }
}

impl Sub<Duration> for RaftInstant {
    type Output = RaftInstant;
    fn sub(self, duration: Duration) -> RaftInstant {
        RaftInstant(self.0 - duration)
    }
}

impl Sub<RaftInstant> for RaftInstant {
    type Output = Duration;
    fn sub(self, earlier: RaftInstant) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }
}

impl SubAssign<Duration> for RaftInstant {
    fn sub_assign(&mut self, duration: Duration) {
        self.0 -= duration;
    }
}

/// A boxed timer of the shared context.
pub type RaftSleep = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

fn sleep_until_instant(deadline: std::time::Instant) -> RaftSleep {
    #[cfg(madsim)]
    {
        Box::pin(madsim::time::sleep_until(super::time::drift::real(
            deadline,
        )))
    }
    #[cfg(not(madsim))]
    {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline,
        )))
    }
}

pin_project_lite::pin_project! {
    /// A future with a deadline, for openraft.
    pub struct RaftTimeout<T> {
        #[pin]
        future: T,
        deadline: RaftSleep,
        duration: Duration,
    }
}

impl<T: Future> Future for RaftTimeout<T> {
    type Output = Result<T::Output, super::time::Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(super::time::Elapsed(*this.duration))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A oneshot sender, as openraft wants it wrapped.
pub struct RaftOneshotSender<T>(tokio::sync::oneshot::Sender<T>);

impl<T> fmt::Debug for RaftOneshotSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RaftOneshotSender")
    }
}

impl<T: OptionalSend> openraft::async_runtime::AsyncOneshotSendExt<T> for RaftOneshotSender<T> {
    fn send(self, value: T) -> Result<(), T> {
        self.0.send(value)
    }
}

/// The task behind a [`RaftJoinHandle`] ended without its output.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RaftJoinError {
    message: String,
    panicked: bool,
}

/// Awaits a task openraft spawned.
pub struct RaftJoinHandle<T>(super::task::JoinHandle<T>);

impl<T> Future for RaftJoinHandle<T> {
    type Output = Result<T, RaftJoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|result| {
            result.map_err(|error| RaftJoinError {
                panicked: error.is_panic(),
                message: error.to_string(),
            })
        })
    }
}

/// openraft's runtime: the shared (tokio) context, simulated under madsim.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RaftRuntime;

impl AsyncRuntime for RaftRuntime {
    type JoinError = RaftJoinError;
    type JoinHandle<T: OptionalSend + 'static> = RaftJoinHandle<T>;
    type Sleep = RaftSleep;
    type Instant = RaftInstant;
    type TimeoutError = super::time::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = RaftTimeout<T>;
    type ThreadLocalRng = SeededRng;
    type OneshotSender<T: OptionalSend> = RaftOneshotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        RaftJoinHandle(super::task::spawn(future))
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        sleep_until_instant(super::time::now() + duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        sleep_until_instant(deadline.0)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        RaftTimeout {
            future,
            deadline: Self::sleep(duration),
            duration,
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        RaftTimeout {
            future,
            duration: deadline - RaftInstant(super::time::now()),
            deadline: Self::sleep_until(deadline),
        }
    }

    fn is_panic(error: &Self::JoinError) -> bool {
        error.panicked
    }

    /// A generator seeded from the process's one generator: openraft draws election
    /// timeouts from it, which a simulation seed must replay.
    fn thread_rng() -> Self::ThreadLocalRng {
        SeededRng::seed_from_u64(super::rand::seed())
    }

    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (RaftOneshotSender(sender), receiver)
    }
}
