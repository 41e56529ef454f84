//! The router follows a datanode that restarted at a new address: a request that cannot
//! reach the old one makes the frontend read the catalog at once and go again, once, to
//! the new address; where nothing moved the error stands.
#![cfg(not(madsim))]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use metronome_catalog::{Command, DatanodeInfo, Route, DEFAULT_DATABASE};
use metronome_core::data::RegionId;
use metronome_core::error::ErrorKind;
use metronome_core::write_batch::WriteBatch;
use metronome_frontend::meta::Meta;
use metronome_frontend::router::{Connect, RegionRouter};
use metronome_wire::{BoxFuture, RegionError, RegionReply, RegionRequest, RegionService};

/// A datanode at one address: down (every call is `Unavailable`) or up (it answers),
/// counting the calls it gets.
struct FakeDatanode {
    up: bool,
    calls: AtomicUsize,
}

impl RegionService for FakeDatanode {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let up = self.up;
        Box::pin(async move {
            if !up {
                return Err(RegionError::new(
                    ErrorKind::Unavailable,
                    "cannot connect: connection refused".to_string(),
                ));
            }
            Ok(match request {
                RegionRequest::Schema { .. } => RegionReply::Schema(None),
                _ => RegionReply::Done,
            })
        })
    }
}

/// Registers datanode 1 at `addr` through `meta`, as the datanode itself would.
async fn register(meta: &Meta, addr: &str) {
    meta.lock()
        .await
        .execute(Command::RegisterDatanode {
            id: 1,
            addr: addr.to_string(),
            shards: 1,
            incarnation: 0,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_to_a_datanode_that_moved_reads_the_catalog_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (metas, _server) = common::metas(dir.path(), 2).await;
    let (frontend, other) = (metas[0].clone(), &metas[1]);
    register(&frontend, "10.0.0.1:4200").await;
    let region = RegionId::new(1, 0);
    frontend
        .lock()
        .await
        .execute(Command::CreateMetricRegions {
            database: DEFAULT_DATABASE.to_string(),
            routes: vec![Route::new(1, 0)],
            replicas: 1,
        })
        .await
        .unwrap();
    let old = Arc::new(FakeDatanode {
        up: false,
        calls: AtomicUsize::new(0),
    });
    let new = Arc::new(FakeDatanode {
        up: true,
        calls: AtomicUsize::new(0),
    });
    let (old_side, new_side) = (old.clone(), new.clone());
    let connect: Connect = Arc::new(move |_id: u64, info: &DatanodeInfo| {
        if info.addr == "10.0.0.1:4200" {
            old_side.clone() as Arc<dyn RegionService>
        } else {
            new_side.clone() as Arc<dyn RegionService>
        }
    });
    let router = RegionRouter::new(frontend.clone(), Default::default(), Some(connect));
    // A read (its schema): cheap to keep for a second try.
    let scan = || RegionRequest::Schema { region };

    // Nothing moved: the error stands, after one read of the catalog.
    let error = router.call(scan()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable);
    assert_eq!(
        old.calls.load(Ordering::Relaxed),
        1,
        "no second try where nothing moved"
    );

    // The datanode restarts elsewhere; another frontend's view registers it (as the
    // datanode itself would): this frontend's copy is stale.
    register(other, "10.0.0.1:4300").await;
    assert_eq!(frontend.catalog().datanodes[&1].addr, "10.0.0.1:4200");

    // A read fails at the old address, reads the catalog, and goes again to the new one.
    router.call(scan()).await.unwrap();
    assert_eq!(
        (
            old.calls.load(Ordering::Relaxed),
            new.calls.load(Ordering::Relaxed)
        ),
        (2, 1)
    );
    assert_eq!(frontend.catalog().datanodes[&1].addr, "10.0.0.1:4300");

    // A write follows a move too. The datanode goes back to its first address (down),
    // and this frontend learns it: a write there fails and, with nothing moved, the
    // error stands.
    register(other, "10.0.0.1:4200").await;
    frontend.refresh().await.unwrap();
    let write = RegionRequest::Write {
        region,
        batch: Arc::new(WriteBatch::default()),
        encoded: None,
        epoch: 0,
    };
    let error = router.call(write.clone()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    // It moves to the second address again, which this frontend has not heard: the
    // write fails at the first, the catalog is read, and the write goes again there.
    register(other, "10.0.0.1:4300").await;
    router.call(write).await.unwrap();
    assert_eq!(
        (
            old.calls.load(Ordering::Relaxed),
            new.calls.load(Ordering::Relaxed)
        ),
        (4, 2),
        "the write went to the old address twice (no move the first time, then a move) \
         and once to the new one"
    );
}
