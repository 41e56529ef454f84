//! Spawning tasks.
//!
//! [`spawn`] puts a `Send` future on the shared (tokio) runtime; [`spawn_local`] puts a
//! future on the current shard's executor, where it stays for its whole life. There are no
//! OS threads besides the shards themselves ([`super::shard::start`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use tokio::task::JoinHandle;

/// Spawns a `Send` task on the shared (tokio) runtime; simulated under madsim.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future)
}

/// Yields to the executor once, letting every other ready task run first.
pub async fn yield_now() {
    #[cfg(madsim)]
    {
        madsim::task::yield_now().await
    }
    #[cfg(not(madsim))]
    {
        if super::shard::on_shard() {
            YieldNow { yielded: false }.await
        } else {
            tokio::task::yield_now().await
        }
    }
}

/// A yield on monoio. A task that wakes itself while it is being polled is put at the
/// *front* of monoio's run queue (monoio treats it as a yield to I/O) and runs again
/// before anything else, so the wake-up must come from elsewhere: a helper task, queued
/// behind every task that is ready now.
#[cfg(not(madsim))]
struct YieldNow {
    yielded: bool,
}

#[cfg(not(madsim))]
impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        let waker = cx.waker().clone();
        drop(monoio::spawn(async move { waker.wake() }));
        Poll::Pending
    }
}

/// The task behind a [`LocalJoinHandle`] ended without producing its output (it was
/// aborted, or its node was killed in simulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task ended without completing")]
pub struct TaskAborted;

/// Awaits the output of a task spawned with [`spawn_local`].
pub struct LocalJoinHandle<T> {
    #[cfg(madsim)]
    inner: madsim::task::JoinHandle<T>,
    #[cfg(not(madsim))]
    inner: monoio::task::JoinHandle<T>,
}

impl<T> Future for LocalJoinHandle<T> {
    type Output = Result<T, TaskAborted>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        #[cfg(madsim)]
        {
            Pin::new(&mut self.inner)
                .poll(cx)
                .map(|result| result.map_err(|_| TaskAborted))
        }
        #[cfg(not(madsim))]
        {
            Pin::new(&mut self.inner).poll(cx).map(Ok)
        }
    }
}

/// Spawns a task on the current shard. It never moves to another thread, so it need not
/// be `Send`. Panics if called outside a shard (or outside a madsim node in simulation).
pub fn spawn_local<F>(future: F) -> LocalJoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    #[cfg(madsim)]
    {
        LocalJoinHandle {
            inner: madsim::task::spawn_local(future),
        }
    }
    #[cfg(not(madsim))]
    {
        LocalJoinHandle {
            inner: monoio::spawn(future),
        }
    }
}
