//! Two frontends' views of one metasrv: each copy of the catalog stays the metasrv's,
//! whatever order their changes arrive in.
#![cfg(not(madsim))]

mod common;

use metronome_catalog::{Command, Route, DEFAULT_DATABASE};

fn ensure(name: &str, labels: &[&str]) -> Command {
    Command::EnsureMetric {
        database: DEFAULT_DATABASE.to_string(),
        name: name.to_string(),
        labels: labels.iter().map(|label| label.to_string()).collect(),
    }
}

/// Frontend B adds labels x and y; frontend A, whose copy predates that, then asks for
/// y alone. At the metasrv A's command changes nothing, so replaying it on A's older
/// copy would give a catalog the metasrv never had (y where x is): A must fetch instead.
#[tokio::test(flavor = "current_thread")]
async fn a_command_that_changed_nothing_at_the_metasrv_is_not_replayed_on_an_older_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (metas, server) = common::metas(dir.path(), 2).await;
    let (a, b) = (&metas[0], &metas[1]);
    let regions = Command::CreateMetricRegions {
        database: DEFAULT_DATABASE.to_string(),
        routes: vec![Route::new(0, 0)],
        replicas: 1,
    };
    a.lock().await.execute(regions).await.unwrap();
    b.refresh().await.unwrap();
    b.lock()
        .await
        .execute(ensure("m", &["x", "y"]))
        .await
        .unwrap();
    a.lock().await.execute(ensure("m", &["y"])).await.unwrap();
    assert_eq!(*a.catalog(), *b.catalog(), "A's copy is the metasrv's");
    // A change that does apply on A's (now current) copy is replayed, not fetched, and
    // lands on the same state as B's after B catches up.
    a.lock().await.execute(ensure("m", &["z"])).await.unwrap();
    let latest = b.refresh().await.unwrap();
    assert_eq!(*a.catalog(), *latest);
    server.abort();
}
