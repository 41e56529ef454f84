//! Tables keep the time precision they declare, through real clients against a real
//! `metronome standalone`: line protocol over HTTP into nanosecond tables, `TIMESTAMP(6)`
//! and `TIMESTAMP(9)` over psql, tokio-postgres and HTTP, a TTL compared in a table's
//! unit, and writes refused where a coarser table would make two rows one.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;

/// The rows of a query that must succeed, and its columns' data types.
fn query(node: &Standalone, text: &str) -> (serde_json::Value, Vec<String>) {
    let reply = sql(node, text);
    assert_eq!(reply.status, 200, "{text}: {}", reply.body);
    let records = reply.json()["output"][0]["records"].clone();
    let types = records["schema"]["column_schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|column| column["data_type"].as_str().unwrap().to_string())
        .collect();
    (records["rows"].clone(), types)
}

fn write_lines(node: &Standalone, path: &str, body: &str) -> Reply {
    post(
        &format!("http://{}{path}", node.http),
        "text/plain",
        None,
        body.as_bytes(),
    )
}

#[test]
fn line_protocol_keeps_nanoseconds_and_a_coarser_table_refuses_what_it_would_merge() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());

    // Two points half a millisecond apart, in the default precision (nanoseconds).
    let reply = write_lines(
        &node,
        "/api/v2/write?bucket=public",
        "cpu,host=a usage=1 1700000000000000000\ncpu,host=a usage=2 1700000000000500000\n",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    // Microseconds and seconds land exactly in the nanosecond table.
    let reply = write_lines(
        &node,
        "/write?db=public&precision=u",
        "cpu,host=b usage=3 1700000000000001",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let (rows, types) = query(&node, "SELECT host, ts, usage FROM cpu ORDER BY host, ts");
    assert_eq!(
        rows,
        serde_json::json!([
            ["a", 1_700_000_000_000_000_000i64, 1.0],
            ["a", 1_700_000_000_000_500_000i64, 2.0],
            ["b", 1_700_000_000_000_001_000i64, 3.0],
        ])
    );
    assert_eq!(
        types[1], "Timestamp(ns)",
        "the column's type names its unit"
    );
    // A range condition in nanoseconds selects within the millisecond.
    let (rows, _) = query(
        &node,
        "SELECT usage FROM cpu WHERE ts > '2023-11-14 22:13:20.0004' AND host = 'a'",
    );
    assert_eq!(rows, serde_json::json!([[2.0]]));

    // Points of one series at one time are one point, field by field, as in InfluxDB.
    let reply = write_lines(
        &node,
        "/api/v2/write?bucket=public",
        "merged,host=a x=1 100\nmerged,host=a y=2 100\nmerged,host=a x=3 100",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let (rows, _) = query(&node, "SELECT ts, x, y FROM merged");
    assert_eq!(rows, serde_json::json!([[100, 3.0, 2.0]]));
    // The end of every time range is no timestamp: refused, not stored unreadable.
    let reply = write_lines(
        &node,
        "/api/v2/write?bucket=public",
        "merged,host=a x=1 9223372036854775807",
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("2262-04-11"), "{}", reply.body);

    // A table SQL created in milliseconds: two points 0.5 ms apart would be one row.
    let reply = sql(
        &node,
        "CREATE TABLE coarse (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, usage DOUBLE)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = write_lines(
        &node,
        "/api/v2/write?bucket=public",
        "coarse,host=a usage=1 1700000000000000000\ncoarse,host=a usage=2 1700000000000500000",
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("lines 1 and 2"), "{}", reply.body);
    assert!(reply.body.contains("milliseconds"), "{}", reply.body);
    let (rows, _) = query(&node, "SELECT count(*) FROM coarse");
    assert_eq!(
        rows,
        serde_json::json!([[0]]),
        "the refused body wrote nothing"
    );
    // Points a millisecond or more apart are rounded down to it, as SQL rounds.
    let reply = write_lines(
        &node,
        "/api/v2/write?bucket=public",
        "coarse,host=a usage=1 1700000000001000000\ncoarse,host=a usage=2 1700000000002300000",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    let (rows, _) = query(&node, "SELECT ts, usage FROM coarse ORDER BY ts");
    assert_eq!(
        rows,
        serde_json::json!([[1_700_000_000_001i64, 1.0], [1_700_000_000_002i64, 2.0]])
    );
}

#[test]
fn sql_tables_keep_microseconds_and_nanoseconds_over_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let pg = node.postgres.port();
    let create = "CREATE TABLE fine (host STRING PRIMARY KEY, ts TIMESTAMP(6) TIME INDEX, \
                  v DOUBLE)";
    let insert = "INSERT INTO fine VALUES ('a', '2024-01-01 00:00:00', 1), \
                  ('a', '2024-01-01 00:00:00.0005', 2)";
    if let Some((ok, out, err)) = psql(
        pg,
        &[
            create,
            insert,
            "SELECT ts, v FROM fine ORDER BY ts",
            "CREATE TABLE finest (ts TIMESTAMP(9) TIME INDEX, v DOUBLE)",
            "INSERT INTO finest VALUES ('2024-01-01 00:00:00.000000001', 1), \
             ('2024-01-01 00:00:00.000000002', 2)",
            "SELECT ts FROM finest ORDER BY ts",
        ],
    ) {
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                "CREATE TABLE",
                "INSERT 0 2",
                "2024-01-01 00:00:00|1.0",
                "2024-01-01 00:00:00.0005|2.0",
                "CREATE TABLE",
                "INSERT 0 2",
                "2024-01-01 00:00:00.000000001",
                "2024-01-01 00:00:00.000000002",
            ],
            "{out}"
        );
    } else {
        let reply = sql(&node, &format!("{create}; {insert}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let (rows, types) = query(&node, "SELECT ts FROM fine ORDER BY ts");
    assert_eq!(
        rows,
        serde_json::json!([[1_704_067_200_000_000i64], [1_704_067_200_000_500i64]])
    );
    assert_eq!(
        types[0], "Timestamp(µs)",
        "the column's type names its unit"
    );

    with_client(&node, |client, _| async move {
        // Parameters keep their microseconds, and binary results carry them back.
        let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_micro_opt(0, 0, 1, 250)
            .unwrap();
        let later = start + chrono::Duration::microseconds(250);
        let written = client
            .execute(
                "INSERT INTO fine (host, ts, v) VALUES ('b', $1, 3), ('b', $2, 4)",
                &[&start, &later],
            )
            .await
            .unwrap();
        assert_eq!(written, 2);
        let rows = client
            .query("SELECT ts FROM fine WHERE host = 'b' ORDER BY ts", &[])
            .await
            .unwrap();
        let read: Vec<chrono::NaiveDateTime> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(read, [start, later]);

        // A millisecond table refuses an INSERT whose rows it would make one, and
        // counts a (series, ts) given twice once.
        client
            .batch_execute(
                "CREATE TABLE coarse (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, v DOUBLE)",
            )
            .await
            .unwrap();
        let error = client
            .execute(
                "INSERT INTO coarse VALUES ('a', '2024-01-01 00:00:00', 1), \
                 ('a', '2024-01-01 00:00:00.0005', 2)",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error), "22000", "{error:?}");
        let message = error_message(&error);
        assert!(
            message.contains("rows 1 and 2") && message.contains("TIMESTAMP(3)"),
            "{message}"
        );
        let written = client
            .execute(
                "INSERT INTO coarse VALUES ('a', '2024-01-01 00:00:00', 1), \
                 ('a', '2024-01-01 00:00:00', 2), ('a', '2024-01-01 00:00:01.0007', 3)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(written, 2, "the row given twice is one row");
        let rows = client
            .query("SELECT v FROM coarse ORDER BY ts", &[])
            .await
            .unwrap();
        let values: Vec<f64> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(values, [2.0, 3.0], "the later of the two is kept");
    });
}

#[test]
fn a_ttl_is_compared_in_the_tables_unit() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let reply = sql(
        &node,
        "CREATE TABLE t (host STRING PRIMARY KEY, ts TIMESTAMP(6) TIME INDEX, v DOUBLE) \
         WITH (ttl = '1h')",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = sql(
        &node,
        "INSERT INTO t VALUES ('old', now() - interval '2 hours', 1), ('new', now(), 2)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["output"][0]["expired_rows"],
        1,
        "{}",
        reply.body
    );
    let (rows, _) = query(&node, "SELECT host FROM t ORDER BY host");
    assert_eq!(rows, serde_json::json!([["new"]]));
}
