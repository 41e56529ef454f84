//! The thread that does the metasrv's disk I/O.
//!
//! `rt::disk` files belong to the thread that opened them (io_uring's rings are per
//! thread), while openraft runs in the shared (tokio) context, so the raft log and the
//! snapshots are written by one shard of their own. Jobs run one at a time, in the order
//! they were sent: the raft log's appends, truncations and votes reach the disk in the
//! order openraft issued them, which its storage contract requires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use futures::channel::oneshot;
use metronome_core::rt::disk::Disk;
use metronome_core::rt::shard::{self, IoDriverChoice, Shards, ShardsConfig};

/// Jobs queued before senders wait.
const JOBS_QUEUED_MAX: usize = 64;

type Job = Box<dyn FnOnce(Disk) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A handle on the disk thread; cloned by the log store and the state machine.
#[derive(Clone)]
pub struct DiskWorker {
    jobs: async_channel::Sender<Job>,
}

/// The disk thread itself, which the service stops last.
pub struct DiskThread {
    shards: Mutex<Option<Shards>>,
    jobs: async_channel::Sender<Job>,
}

impl DiskThread {
    pub fn start(disk: Disk) -> Result<(DiskThread, DiskWorker), String> {
        let (jobs, queue) = async_channel::bounded::<Job>(JOBS_QUEUED_MAX);
        let config = ShardsConfig {
            count: 1,
            pin_to_cores: false,
            io_driver: IoDriverChoice::Auto,
            uring_entries: 64,
        };
        let shards = shard::start(&config, move |_context| {
            let (disk, queue) = (disk.clone(), queue.clone());
            async move {
                // Ends when every sender is gone or the queue is closed.
                while let Ok(job) = queue.recv().await {
                    job(disk.clone()).await;
                }
            }
        })
        .map_err(|error| format!("cannot start the metasrv's disk thread: {error}"))?;
        let worker = DiskWorker { jobs: jobs.clone() };
        Ok((
            DiskThread {
                shards: Mutex::new(Some(shards)),
                jobs,
            },
            worker,
        ))
    }

    /// Refuses further jobs and hands back the thread, which ends once the jobs queued
    /// are done; the caller joins it.
    pub fn stop(&self) -> Option<Shards> {
        self.jobs.close();
        self.shards.lock().expect("disk thread").take()
    }
}

impl DiskWorker {
    /// Runs `job` on the disk thread and returns its output; an error if the thread is
    /// gone.
    pub async fn run<T, F, Fut>(&self, job: F) -> std::io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Disk) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<T>> + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let job: Job = Box::new(move |disk| {
            Box::pin(async move {
                let _ = reply.send(job(disk).await);
            })
        });
        let gone = || std::io::Error::other("the metasrv's disk thread has stopped");
        self.jobs.send(job).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}
