//! The metric store over a real datanode and catalog: writes that race a new label's
//! arrival in the regions' schemas.
#![cfg(not(madsim))]

mod common;

use std::sync::{Arc, Mutex};

use metronome_catalog::{Route, DEFAULT_DATABASE};
use metronome_core::config::IngestSection;
use metronome_core::rt::task;
use metronome_core::write_batch::WriteBatch;
use metronome_frontend::prom_store::PromStore;
use metronome_frontend::remote_write::PromSeries;
use metronome_wire::{BoxFuture, RegionError, RegionReply, RegionRequest, RegionService};
use tokio::sync::oneshot;

/// The datanode, except that one `add_tags` can be held until the test lets it go.
struct HeldAddTag {
    inner: Arc<dyn RegionService>,
    /// (tells the test the call arrived, waits for the test's go-ahead)
    hold: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    /// How many tags each `add_tags` call carried, in call order.
    added: Mutex<Vec<usize>>,
    /// Every write's batch, in call order.
    writes: Mutex<Vec<WriteBatch>>,
}

impl HeldAddTag {
    fn around(datanode: impl RegionService) -> Arc<HeldAddTag> {
        Arc::new(HeldAddTag {
            inner: Arc::new(datanode),
            hold: Mutex::new(None),
            added: Mutex::new(Vec::new()),
            writes: Mutex::new(Vec::new()),
        })
    }
}

/// The metric regions' one route: datanode 0, shard 0.
fn one_route() -> Vec<Route> {
    vec![Route::new(0, 0)]
}

impl RegionService for HeldAddTag {
    fn call(&self, request: RegionRequest) -> BoxFuture<'_, Result<RegionReply, RegionError>> {
        let held = match &request {
            RegionRequest::AddTags { tags, .. } => {
                self.added.lock().unwrap().push(tags.len());
                self.hold.lock().unwrap().take()
            }
            RegionRequest::Write { batch, .. } => {
                self.writes.lock().unwrap().push(WriteBatch::clone(batch));
                None
            }
            _ => None,
        };
        Box::pin(async move {
            if let Some((arrived, go)) = held {
                arrived.send(()).unwrap();
                go.await.unwrap();
            }
            self.inner.call(request).await
        })
    }
}

fn series(labels: &[(&str, &str)], ts: i64) -> PromSeries {
    PromSeries {
        labels: labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        samples: vec![(ts, 1.0)],
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_waits_for_new_labels_to_reach_the_regions() {
    let dir = tempfile::tempdir().unwrap();
    let datanode = common::datanode(dir.path()).await;
    let (meta, server) = common::meta(dir.path()).await;
    let regions = HeldAddTag::around(datanode.handle());
    let routes = one_route();
    let store = Arc::new(
        PromStore::open(
            DEFAULT_DATABASE,
            meta,
            regions.clone(),
            routes,
            1,
            IngestSection::default(),
        )
        .await
        .unwrap(),
    );
    store
        .write(&[series(&[("__name__", "up"), ("job", "a")], 1000)])
        .await
        .unwrap();

    // The first write with a new label stops while adding it to the region: the catalog
    // already has the label, the region does not.
    let (arrived, arrival) = oneshot::channel();
    let (go, gate) = oneshot::channel();
    *regions.hold.lock().unwrap() = Some((arrived, gate));
    let first = {
        let store = store.clone();
        task::spawn(async move {
            store
                .write(&[series(
                    &[("__name__", "up"), ("job", "a"), ("zone", "1")],
                    2000,
                )])
                .await
        })
    };
    arrival.await.unwrap();
    // A second write with the same label must not write rows the region cannot take yet.
    let second = {
        let store = store.clone();
        task::spawn(async move {
            store
                .write(&[series(
                    &[("__name__", "up"), ("job", "b"), ("zone", "2")],
                    2000,
                )])
                .await
        })
    };
    // Let the second write run as far as it can before the first one finishes.
    for _ in 0..100 {
        task::yield_now().await;
    }
    go.send(()).unwrap();
    first.await.unwrap().unwrap();
    second
        .await
        .unwrap()
        .expect("the second write waits for the label to reach the region");

    let stored = store.series(&[], i64::MIN, i64::MAX).await.unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");

    // Many new labels in one request are one schema change per region, not one each:
    // a region's schema change costs its column count, so one each made a request with
    // k new labels cost O(k·n).
    regions.added.lock().unwrap().clear();
    let many: Vec<(String, String)> = (0..20)
        .map(|i| (format!("new{i:02}"), "x".to_string()))
        .collect();
    let mut labels: Vec<(&str, &str)> = vec![("__name__", "wide")];
    labels.extend(many.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    store.write(&[series(&labels, 3000)]).await.unwrap();
    // The call carries the catalog's whole tag list (the 3 tags the region had, then
    // the 20 new ones), so that a copy that missed an earlier change gets it too.
    assert_eq!(
        *regions.added.lock().unwrap(),
        [3 + 20],
        "one call with every new tag"
    );
    server.abort();
    drop(store);
    datanode.into_shards().stop_and_join().unwrap();
}

/// A series' write carries its own labels only, however many label names other metrics
/// have given the shared metric regions: one metric of 4,000 labels makes no other
/// write bigger.
#[tokio::test(flavor = "current_thread")]
async fn a_series_carries_only_its_own_labels_whatever_other_metrics_have() {
    let dir = tempfile::tempdir().unwrap();
    let datanode = common::datanode(dir.path()).await;
    let (meta, server) = common::meta(dir.path()).await;
    let regions = HeldAddTag::around(datanode.handle());
    let routes = one_route();
    let limits = IngestSection {
        labels_per_series_max: 4000,
    };
    let store = PromStore::open(DEFAULT_DATABASE, meta, regions.clone(), routes, 1, limits)
        .await
        .unwrap();
    let wide: Vec<(String, String)> = (0..4000)
        .map(|i| (format!("l{i:04}"), "v".to_string()))
        .collect();
    let mut labels: Vec<(&str, &str)> = vec![("__name__", "wide")];
    labels.extend(wide.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    store.write(&[series(&labels, 1000)]).await.unwrap();

    // `job` comes after the 4,000 labels in the regions' tags.
    regions.writes.lock().unwrap().clear();
    store
        .write(&[series(&[("__name__", "up"), ("job", "a")], 1000)])
        .await
        .unwrap();
    let writes = regions.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 1);
    let sent = &writes[0].series;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].tags,
        vec![(0, "up".to_string()), (4001, "a".to_string())],
        "the name and job, at their positions, and nothing else"
    );
    let bytes = metronome_wire::write_batch::encode(&writes[0]).unwrap();
    assert!(
        bytes.len() < 64,
        "{} bytes on the wire and in the WAL",
        bytes.len()
    );

    let stored = store
        .select(
            &[metronome_frontend::prom_store::label_matcher(
                "__name__",
                metronome_core::data::MatchOp::Equal,
                "up",
            )],
            i64::MIN,
            i64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].labels,
        vec![
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), "a".to_string())
        ]
    );
    assert_eq!(stored[0].samples, vec![(1000, 1.0)]);
    server.abort();
    drop(store);
    datanode.into_shards().stop_and_join().unwrap();
}
