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

/// Yields to the executor once, letting other ready tasks run.
pub async fn yield_now() {
    #[cfg(madsim)]
    {
        madsim::task::yield_now().await
    }
    #[cfg(not(madsim))]
    {
        // Works on both monoio and tokio: it returns Pending once after waking itself.
        YieldNow { yielded: false }.await
    }
}

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
        cx.waker().wake_by_ref();
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
