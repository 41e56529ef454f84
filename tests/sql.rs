//! SQL against a real `metronome standalone`: psql (Debian's client) over the simple
//! query protocol, tokio-postgres over the extended protocol with parameters, and
//! `POST /v1/sql`; tables and rows survive a restart.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;

#[test]
fn psql_tokio_postgres_and_http_run_sql_and_tables_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let pg = node.postgres.port();

    if let Some((ok, out, err)) = psql(
        pg,
        &[
            "CREATE TABLE cpu (host STRING, dc STRING, ts TIMESTAMP TIME INDEX, \
                 usage DOUBLE, PRIMARY KEY (host, dc)) WITH (partitions = 2)",
            "INSERT INTO cpu (host, dc, ts, usage) VALUES \
                 ('a', 'eu', '2024-01-01 00:00:00', 0.5), ('a', 'eu', '2024-01-01 00:00:30', 0.7), \
                 ('b', 'us', '2024-01-01 00:00:00', 0.1), ('b', 'us', '2024-01-01 00:01:10', 0.3)",
            "SELECT host, round(avg(usage), 2) FROM cpu WHERE ts >= '2024-01-01' \
                 GROUP BY host ORDER BY host",
            "SELECT date_bin(INTERVAL '1 minute', ts) AS minute, count(*) FROM cpu \
                 GROUP BY minute ORDER BY minute",
            "SHOW TABLES",
        ],
    ) {
        assert!(ok, "{err}");
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                "CREATE TABLE",
                "INSERT 0 4",
                "a|0.6",
                "b|0.2",
                "2024-01-01 00:00:00|3",
                "2024-01-01 00:01:00|1",
                "cpu"
            ],
            "{out}"
        );
        let (ok, _, err) = psql(pg, &["SELECT * FROM nope"]).expect("psql is there");
        assert!(!ok);
        assert!(err.contains("nope"), "{err}");
    } else {
        let reply = post(
            &format!("http://{}/v1/sql", node.http),
            "application/x-www-form-urlencoded",
            None,
            b"sql=CREATE TABLE cpu (host STRING, dc STRING, ts TIMESTAMP TIME INDEX, usage DOUBLE, \
              PRIMARY KEY (host, dc)) WITH (partitions = 2); INSERT INTO cpu VALUES \
              ('a', 'eu', '2024-01-01 00:00:00', 0.5), ('a', 'eu', '2024-01-01 00:00:30', 0.7), \
              ('b', 'us', '2024-01-01 00:00:00', 0.1), ('b', 'us', '2024-01-01 00:01:10', 0.3)",
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    // The extended protocol with parameters, from a Rust driver.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={pg} user=metronome dbname=public"),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let ts = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .unwrap()
            .and_hms_opt(0, 2, 0)
            .unwrap();
        let inserted = client
            .execute(
                "INSERT INTO cpu (host, dc, ts, usage) VALUES ($1, $2, $3, $4)",
                &[&"c", &"eu", &ts, &0.9f64],
            )
            .await
            .unwrap();
        assert_eq!(inserted, 1);
        let rows = client
            .query(
                "SELECT host, ts, usage FROM cpu WHERE dc = $1 AND usage > $2 ORDER BY ts, host",
                &[&"eu", &0.6f64],
            )
            .await
            .unwrap();
        let got: Vec<(String, chrono::NaiveDateTime, f64)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "a");
        assert_eq!(got[0].2, 0.7);
        assert_eq!(got[1], ("c".to_string(), ts, 0.9));
        // A table with a partition rule keeps its declared column order, for INSERT
        // without a column list and for SELECT *.
        client
            .batch_execute(
                "CREATE TABLE hosts (ts TIMESTAMP TIME INDEX, owner STRING, host STRING, \
                 PRIMARY KEY (host)) PARTITION BY HASH (host) PARTITIONS 3; \
                 INSERT INTO hosts VALUES (0, 'ann', 'a'), (0, 'bob', 'b')",
            )
            .await
            .unwrap();
        let rows = client
            .query("SELECT * FROM hosts ORDER BY host", &[])
            .await
            .unwrap();
        let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["ts", "owner", "host"]);
        let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(1), r.get(2))).collect();
        assert_eq!(
            got,
            [
                ("ann".to_string(), "a".to_string()),
                ("bob".to_string(), "b".to_string())
            ]
        );
        // A join of two tables.
        let rows = client
            .query(
                "SELECT h.owner, count(*) FROM cpu c JOIN hosts h ON c.host = h.host \
                 GROUP BY h.owner ORDER BY h.owner",
                &[],
            )
            .await
            .unwrap();
        let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, [("ann".to_string(), 2), ("bob".to_string(), 2)]);
        // A query of some fields: the datanodes return only those, and each lands in
        // its column.
        client
            .batch_execute(
                "CREATE TABLE mem (host STRING, ts TIMESTAMP TIME INDEX, used BIGINT, \
                 free BIGINT, note STRING, PRIMARY KEY (host)); \
                 INSERT INTO mem VALUES ('a', 0, 1, 10, 'x'), ('b', 0, 2, 20, 'y')",
            )
            .await
            .unwrap();
        let rows = client
            .query("SELECT note, free, host FROM mem ORDER BY host", &[])
            .await
            .unwrap();
        let got: Vec<(String, i64, String)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            got,
            [
                ("x".to_string(), 10, "a".to_string()),
                ("y".to_string(), 20, "b".to_string())
            ]
        );
        let error = client.query("SELEC 1", &[]).await.unwrap_err();
        assert!(error.to_string().contains("syntax") || format!("{error:?}").contains("syntax"));
    });

    // Prometheus metrics are tables too.
    let body = write_request(&[(
        vec![("__name__", "up".into()), ("job", "node".into())],
        vec![(1_700_000_000_000, 1.0)],
    )]);
    assert_eq!(remote_write(node.http, &body).status, 204);
    let reply = post(
        &format!("http://{}/v1/sql", node.http),
        "application/x-www-form-urlencoded",
        None,
        b"sql=SELECT job, ts, value FROM up",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json = reply.json();
    assert_eq!(
        json["output"][0]["records"]["rows"],
        serde_json::json!([["node", 1_700_000_000_000i64, 1.0]]),
        "{json}"
    );
    let reply = post(
        &format!("http://{}/v1/sql", node.http),
        "text/plain",
        None,
        b"DESCRIBE cpu",
    );
    let described = reply.json()["output"][0]["records"]["rows"].clone();
    assert_eq!(
        described[0],
        serde_json::json!(["host", "Utf8", "TAG"]),
        "{described}"
    );
    assert_eq!(described[2][2], "TIME INDEX");

    // Everything is still there after a restart.
    drop(node);
    let node = start_standalone(dir.path());
    let reply = post(
        &format!("http://{}/v1/sql", node.http),
        "application/x-www-form-urlencoded",
        None,
        b"sql=SELECT count(*) FROM cpu",
    );
    assert_eq!(
        reply.json()["output"][0]["records"]["rows"],
        serde_json::json!([[5]]),
        "{}",
        reply.body
    );
    let reply = post(
        &format!("http://{}/v1/sql", node.http),
        "application/x-www-form-urlencoded",
        None,
        b"sql=SELECT * FROM nope",
    );
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("nope"), "{}", reply.body);
}
