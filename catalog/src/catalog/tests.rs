//! Tests of the parent module.

use super::*;
use metronome_core::data::FieldType;

const HERE: Route = Route::new(0, 0);

fn metrics_catalog() -> Catalog {
    let mut catalog = Catalog::default();
    catalog
        .apply(&Command::CreateMetricRegions {
            database: DEFAULT_DATABASE.into(),
            routes: vec![HERE; 4],
            replicas: 1,
        })
        .unwrap();
    catalog
}

fn ensure(name: &str, labels: &[&str]) -> Command {
    Command::EnsureMetric {
        database: DEFAULT_DATABASE.into(),
        name: name.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

#[test]
fn metrics_extend_the_physical_tags_in_arrival_order() {
    let mut catalog = metrics_catalog();
    catalog.apply(&ensure("up", &["instance", "job"])).unwrap();
    catalog.apply(&ensure("http", &["code", "job"])).unwrap();
    catalog.apply(&ensure("job:rate:5m", &[])).unwrap();
    let metrics = catalog.databases[DEFAULT_DATABASE].metrics.clone().unwrap();
    assert_eq!(metrics.tags, ["__name__", "instance", "job", "code"]);
    assert_eq!(metrics.regions.len(), 4);
    let up = catalog.table(DEFAULT_DATABASE, "up").unwrap();
    assert_eq!(up.schema.tags, ["instance", "job"]);
    assert!(catalog.is_noop(&ensure("up", &["job"])));
    assert!(!catalog.is_noop(&ensure("up", &["zone"])));
    catalog.apply(&ensure("up", &["zone"])).unwrap();
    assert_eq!(
        catalog.table(DEFAULT_DATABASE, "up").unwrap().schema.tags,
        ["instance", "job", "zone"]
    );
}

#[test]
fn every_valid_label_name_gets_a_column_of_its_own() {
    let mut catalog = metrics_catalog();
    let awkward = [
        "value",
        "ts",
        "__ts",
        "__value",
        "__label_value",
        "__label___label_x",
        "__meta_x",
        "_",
        "job",
    ];
    catalog.apply(&ensure("up", &awkward)).unwrap();
    let metrics = catalog.databases[DEFAULT_DATABASE].metrics.clone().unwrap();
    let up = catalog.table(DEFAULT_DATABASE, "up").unwrap();
    // Every column differs from every other and from the time and value columns, in
    // the regions and in SQL.
    let physical = Catalog::metric_region_schema(&metrics.tags);
    physical.validate().unwrap();
    up.schema.validate().unwrap();
    assert_eq!(up.schema.tags.len(), awkward.len());
    for (label, column) in awkward.iter().zip(&up.schema.tags) {
        assert_eq!(metric_label(column), *label, "{column} reads back");
        assert_eq!(metric_column(label), column.as_str());
    }
    // Plain names are their own columns, so older data directories need nothing.
    assert_eq!(metric_column("job"), "job");
    assert_eq!(metric_column("__meta_x"), "__meta_x");
    assert_eq!(metric_column("value"), "__label_value");
    assert_eq!(metric_column("__label_value"), "__label___label_value");
}

#[test]
fn the_metric_label_names_of_a_database_are_bounded() {
    let mut catalog = metrics_catalog();
    let names: Vec<String> = (0..METRIC_LABEL_NAMES_MAX)
        .map(|i| format!("l{i}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    catalog.apply(&ensure("wide", &refs)).unwrap();
    let before = catalog.clone();
    let error = catalog.apply(&ensure("other", &["one_more"])).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&METRIC_LABEL_NAMES_MAX.to_string()),
        "{error}"
    );
    assert_eq!(catalog, before);
    // Known names still work for new metrics.
    catalog.apply(&ensure("other", &["l7"])).unwrap();
}

#[test]
fn metric_metadata_is_checked_kept_and_a_repeat_is_a_noop() {
    let mut catalog = metrics_catalog();
    catalog.apply(&ensure("up", &["job"])).unwrap();
    let set = |name: &str, metric_type: &str| Command::SetMetricMetadata {
        database: DEFAULT_DATABASE.into(),
        name: name.into(),
        metadata: MetricMetadata {
            metric_type: metric_type.into(),
            help: "Up.".into(),
            unit: String::new(),
        },
    };
    assert!(!catalog.is_noop(&set("up", "gauge")));
    catalog.apply(&set("up", "gauge")).unwrap();
    assert!(catalog.is_noop(&set("up", "gauge")));
    assert!(!catalog.is_noop(&set("up", "counter")));
    let TableKind::Metric { metadata, .. } = &catalog.table(DEFAULT_DATABASE, "up").unwrap().kind
    else {
        panic!("a metric table")
    };
    assert_eq!(metadata.as_ref().unwrap().metric_type, "gauge");
    let before = catalog.clone();
    for (command, culprit) in [
        (set("up", "colour"), "colour"),
        (set("missing", "gauge"), "missing"),
    ] {
        let error = catalog.apply(&command).unwrap_err().to_string();
        assert!(error.contains(culprit), "{error}");
        assert_eq!(catalog, before);
    }
}

#[test]
fn a_batch_applies_as_one_command_or_not_at_all() {
    let mut catalog = metrics_catalog();
    let version = catalog.version;
    let batch = Command::Batch(vec![
        ensure("up", &["job"]),
        ensure("scrape_duration_seconds", &["job"]),
        Command::SetMetricMetadata {
            database: DEFAULT_DATABASE.into(),
            name: "up".into(),
            metadata: MetricMetadata {
                metric_type: "gauge".into(),
                ..MetricMetadata::default()
            },
        },
    ]);
    assert!(!catalog.is_noop(&batch));
    catalog.apply(&batch).unwrap();
    assert_eq!(catalog.version, version + 1, "one version for the batch");
    assert!(catalog
        .table(DEFAULT_DATABASE, "scrape_duration_seconds")
        .is_ok());
    assert!(catalog.is_noop(&batch));

    let before = catalog.clone();
    for (batch, culprit) in [
        (
            Command::Batch(vec![ensure("new_one", &["job"]), ensure("9bad", &[])]),
            "9bad",
        ),
        (
            Command::Batch(vec![Command::Batch(vec![ensure("x", &[])])]),
            "nest",
        ),
    ] {
        let error = catalog.apply(&batch).unwrap_err().to_string();
        assert!(error.contains(culprit), "{error}");
        assert_eq!(catalog, before, "a refused batch leaves no trace");
    }
}

#[test]
fn refused_commands_change_nothing_and_name_the_culprit() {
    let mut catalog = metrics_catalog();
    catalog.apply(&ensure("up", &["job"])).unwrap();
    let before = catalog.clone();
    for (command, culprit) in [
        (ensure("up", &["ok", "__name__"]), "__name__"),
        (ensure("bad-name", &[]), "bad-name"),
        (ensure("9lives", &[]), "9lives"),
        (ensure("up", &["1st"]), "1st"),
    ] {
        let error = catalog.apply(&command).unwrap_err().to_string();
        assert!(error.contains(culprit), "{error}");
        assert_eq!(catalog, before, "{command:?} left a trace");
    }
    let table = Command::CreateTable {
        database: DEFAULT_DATABASE.into(),
        name: "up".into(),
        schema: Catalog::metric_region_schema(&["host".into()]),
        ttl_ms: None,
        routes: vec![HERE],
        if_not_exists: false,
        partition_columns: Vec::new(),
        column_order: Vec::new(),
        replicas: 1,
    };
    assert!(matches!(
        catalog.apply(&table),
        Err(CatalogError::TableExists { .. })
    ));
}

#[test]
fn regular_tables_get_fresh_ids_and_regions_and_gain_columns() {
    let mut catalog = Catalog::default();
    let create = |name: &str| Command::CreateTable {
        database: DEFAULT_DATABASE.into(),
        name: name.into(),
        schema: RegionSchema {
            tags: vec!["host".into()],
            time_index: "ts".into(),
            time_unit: TimeUnit::Millisecond,
            fields: vec![FieldColumn {
                name: "cpu".into(),
                field_type: FieldType::Float64,
            }],
        },
        ttl_ms: Some(1000),
        routes: vec![HERE, HERE],
        if_not_exists: false,
        partition_columns: vec!["host".into()],
        column_order: vec!["ts".into(), "cpu".into(), "host".into()],
        replicas: 1,
    };
    catalog.apply(&create("a")).unwrap();
    catalog
        .apply(&Command::DropTable {
            database: DEFAULT_DATABASE.into(),
            name: "a".into(),
            if_exists: false,
        })
        .unwrap();
    catalog.apply(&create("a")).unwrap();
    let table = catalog.table(DEFAULT_DATABASE, "a").unwrap();
    assert_eq!(table.id, 2, "a re-created table never reuses the old id");
    let TableKind::Regular { regions, .. } = &table.kind else {
        panic!("regular table expected")
    };
    assert_eq!(
        regions.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [RegionId::new(2, 0), RegionId::new(2, 1)]
    );
    catalog
        .apply(&Command::AddColumns {
            database: DEFAULT_DATABASE.into(),
            name: "a".into(),
            tags: vec!["dc".into()],
            fields: vec![],
        })
        .unwrap();
    let table = catalog.table(DEFAULT_DATABASE, "a").unwrap();
    assert_eq!(table.schema.tags, ["host", "dc"]);
    let TableKind::Regular {
        partition_columns,
        column_order,
        ..
    } = &table.kind
    else {
        panic!("regular table expected")
    };
    assert_eq!(partition_columns, &["host"]);
    assert_eq!(
        column_order,
        &["ts", "cpu", "host", "dc"],
        "new columns go last"
    );
    assert_eq!(catalog.version, 4);

    let before = catalog.clone();
    for (partition_columns, column_order, culprit) in [
        (vec!["cpu"], vec![], "\"cpu\" is not a PRIMARY KEY"),
        (vec!["host", "host"], vec![], "twice"),
        (vec![], vec!["ts", "host"], "every column"),
        (vec![], vec!["ts", "cpu", "host", "host"], "every column"),
    ] {
        let mut command = create("b");
        if let Command::CreateTable {
            partition_columns: p,
            column_order: o,
            ..
        } = &mut command
        {
            *p = partition_columns.iter().map(|c| c.to_string()).collect();
            *o = column_order.iter().map(|c| c.to_string()).collect();
        }
        let error = catalog.apply(&command).unwrap_err().to_string();
        assert!(error.contains(culprit), "{error}");
        assert_eq!(catalog, before);
    }
}
