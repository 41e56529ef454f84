//! InfluxDB line protocol into a real `metronome standalone`, read back with SQL.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;

fn sql_rows(http: std::net::SocketAddr, sql: &str) -> serde_json::Value {
    let reply = post(
        &format!("http://{http}/v1/sql"),
        "text/plain",
        None,
        sql.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{sql}: {}", reply.body);
    reply.json()["output"][0]["records"]["rows"].clone()
}

#[test]
fn lines_create_and_widen_tables_and_bad_lines_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let http = node.http;
    let write = |path: &str, body: &str| {
        post(
            &format!("http://{http}{path}"),
            "text/plain",
            None,
            body.as_bytes(),
        )
    };

    let reply = write(
        "/api/v2/write?bucket=public&precision=ms",
        "weather,city=oslo temp=3.5,humid=80i 1700000000000\n\
         weather,city=rome temp=15.0 1700000000000\n",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    // A new tag and a new field widen the table; v1 with second precision. The table
    // keeps nanoseconds, as InfluxDB does, whatever precision each write uses.
    let reply = write(
        "/write?db=public&precision=s",
        "weather,city=oslo,station=s1 temp=4.0,note=\"windy\" 1700000060",
    );
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(
        sql_rows(
            http,
            "SELECT city, station, ts, temp, humid, note FROM weather ORDER BY ts, city"
        ),
        serde_json::json!([
            ["oslo", "", 1_700_000_000_000_000_000i64, 3.5, 80, null],
            ["rome", "", 1_700_000_000_000_000_000i64, 15.0, null, null],
            [
                "oslo",
                "s1",
                1_700_000_060_000_000_000i64,
                4.0,
                null,
                "windy"
            ],
        ])
    );

    // A body with one bad line writes nothing, and says which line.
    for (body, status, expected) in [
        (
            "weather,city=x temp=1 1700000120000\nweather,city=y temp=",
            400,
            "line 2",
        ),
        ("weather,city=x temp=1i 1700000120000", 400, "temp"),
        ("bad-name v=1", 400, "bad-name"),
    ] {
        let reply = write("/api/v2/write?precision=ms", body);
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.body.contains(expected), "{body}: {}", reply.body);
    }
    let reply = write("/api/v2/write?precision=fortnight", "m v=1");
    assert_eq!(reply.status, 400);
    assert_eq!(
        sql_rows(http, "SELECT count(*) FROM weather"),
        serde_json::json!([[3]]),
        "refused bodies wrote nothing"
    );
}
