//! The region router over two real datanodes and a real catalog: a table whose regions
//! the catalog routes to different datanodes is created, written, read and dropped on
//! each region's own datanode.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use metronome_catalog::{Command, Route, DEFAULT_DATABASE};
use metronome_core::data::{
    FieldColumn, FieldType, RegionId, RegionSchema, Row, ScanRequest, TimeUnit, Value,
};
use metronome_frontend::router::RegionRouter;
use metronome_frontend::table_store::TableStore;
use metronome_wire::{ErrorKind, RegionService, RegionServiceExt};

#[tokio::test(flavor = "current_thread")]
async fn each_region_is_served_by_the_datanode_its_route_names() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let nodes = [
        common::datanode(dirs[0].path()).await,
        common::datanode(dirs[1].path()).await,
    ];
    let (meta, server) = common::meta(dirs[2].path()).await;

    // A table of four regions, two on each datanode (placement is the catalog's).
    let schema = RegionSchema {
        tags: vec!["host".into()],
        time_index: "ts".into(),
        time_unit: TimeUnit::Millisecond,
        fields: vec![FieldColumn {
            name: "v".into(),
            field_type: FieldType::Float64,
        }],
    };
    let routes: Vec<Route> = [0, 1, 0, 1]
        .into_iter()
        .map(|datanode| Route { datanode, shard: 0 })
        .collect();
    meta.lock()
        .await
        .execute(Command::CreateTable {
            database: DEFAULT_DATABASE.into(),
            name: "cpu".into(),
            schema,
            ttl_ms: None,
            routes: routes.clone(),
            if_not_exists: false,
            partition_columns: Vec::new(),
            column_order: Vec::new(),
        })
        .await
        .unwrap();
    let handles: Vec<Arc<dyn RegionService>> = nodes
        .iter()
        .map(|node| Arc::new(node.handle()) as Arc<dyn RegionService>)
        .collect();
    let router = Arc::new(RegionRouter::new(
        meta.clone(),
        BTreeMap::from([(0, handles[0].clone()), (1, handles[1].clone())]),
        None,
    ));
    // Opening the store creates the regions the catalog has: each on its datanode.
    let tables = TableStore::open(meta.clone(), router.clone())
        .await
        .unwrap();
    let table = tables.table(DEFAULT_DATABASE, "cpu").unwrap();
    let regions: Vec<RegionId> = (0..4).map(|n| RegionId::new(table.id, n)).collect();
    for (region, route) in regions.iter().zip(&routes) {
        let on = |datanode: u64| handles[datanode as usize].region_schema(*region);
        assert!(
            on(route.datanode).await.unwrap().is_some(),
            "{region} on its route"
        );
        assert!(
            on(1 - route.datanode).await.unwrap().is_none(),
            "{region} not on the other datanode"
        );
    }

    // Rows go to the datanodes of their regions, and come back through the router.
    let rows: Vec<Row> = (0..40)
        .map(|i| Row {
            tags: vec![format!("host-{i}")],
            ts: 1_000 + i,
            fields: vec![Value::Float64(i as f64)],
        })
        .collect();
    assert_eq!(tables.write(&table, rows).await.unwrap(), 40);
    let mut per_datanode = [0; 2];
    for (region, route) in regions.iter().zip(&routes) {
        let direct = handles[route.datanode as usize]
            .scan(*region, ScanRequest::all())
            .await
            .unwrap();
        let routed = router.scan(*region, ScanRequest::all()).await.unwrap();
        assert_eq!(direct, routed, "{region}");
        per_datanode[route.datanode as usize] += direct.len();
    }
    assert_eq!(per_datanode[0] + per_datanode[1], 40);
    assert!(
        per_datanode.iter().all(|&n| n > 0),
        "both datanodes hold rows: {per_datanode:?}"
    );
    assert_eq!(
        tables
            .scan(&table, &ScanRequest::all())
            .await
            .unwrap()
            .len(),
        40
    );

    // A region the catalog never routed is not found; one on a datanode the router has
    // no client for is unavailable.
    let stranger = RegionId::new(table.id + 100, 0);
    let error = router.scan(stranger, ScanRequest::all()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
    let lonely = RegionRouter::new(
        meta.clone(),
        BTreeMap::from([(0, handles[0].clone())]),
        None,
    );
    let error = lonely
        .scan(regions[1], ScanRequest::all())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error}");
    assert!(error.message.contains("datanode 1"), "{error}");

    // Dropping the table drops each region where it lives, after the catalog forgot it.
    assert!(tables
        .drop_table(DEFAULT_DATABASE, "cpu", false)
        .await
        .unwrap());
    for (region, route) in regions.iter().zip(&routes) {
        let schema = handles[route.datanode as usize]
            .region_schema(*region)
            .await;
        assert_eq!(schema.unwrap(), None, "{region} dropped");
    }
    server.abort();
}
