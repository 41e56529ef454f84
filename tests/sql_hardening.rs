//! SQL as a careless or unlucky client uses it, against a real `metronome standalone`:
//! statements deep enough to overflow a stack, mistakes in values, a ROLLBACK that
//! cannot undo, the statements drivers send on their own, bytes that are no PostgreSQL
//! message, rows already past their table's TTL, and constant expressions in INSERT.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// The server still answers HTTP and SQL.
fn assert_serving(node: &Standalone) {
    assert_eq!(get(&format!("http://{}/health", node.http)).status, 200);
    let reply = sql(node, "SELECT 41 + 1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["output"][0]["records"]["rows"],
        serde_json::json!([[42]])
    );
}

fn or_chain(terms: usize) -> String {
    let terms: Vec<String> = (0..terms).map(|i| format!("v = {i}")).collect();
    format!("SELECT count(*) FROM t WHERE {}", terms.join(" OR "))
}

#[test]
fn a_where_of_ten_thousand_ors_is_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let reply = sql(
        &node,
        "CREATE TABLE t (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, v DOUBLE); \
         INSERT INTO t VALUES ('a', 0, 3)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    let deep = or_chain(10_000);
    let reply = sql(&node, &deep);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("1000 operators"), "{}", reply.body);
    assert!(reply.body.contains("IN ("), "{}", reply.body);
    // A chain within the limit is answered.
    let reply = sql(&node, &or_chain(490));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["output"][0]["records"]["rows"],
        serde_json::json!([[1]])
    );

    with_client(&node, |client, _| async move {
        let error = client.simple_query(&deep).await.unwrap_err();
        assert_eq!(sqlstate(&error), "42000", "{error:?}");
        let error = client.query(&deep, &[]).await.unwrap_err();
        assert!(
            error_message(&error).contains("1000 operators"),
            "{error:?}"
        );
        // The connection is still good.
        let rows = client.query(&or_chain(490), &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 1);
    });
    assert_serving(&node);
}

#[test]
fn mistakes_in_values_answer_400_and_their_sqlstate() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let cases = [
        ("SELECT 1/0", "22012", "division by zero"),
        ("SELECT -9223372036854775808 / -1", "22003", "Overflow"),
        (
            "SELECT 1 LIMIT 18446744073709551615",
            "22003",
            "18446744073709551615",
        ),
        (
            "SELECT TIMESTAMP '2263-01-01 00:00:00'",
            "22008",
            "2263-01-01",
        ),
        (
            "SELECT to_timestamp(99999999999999)",
            "22008",
            "99999999999999",
        ),
    ];
    for (statement, _, words) in cases {
        let reply = sql(&node, statement);
        assert_eq!(reply.status, 400, "{statement}: {}", reply.body);
        assert!(reply.body.contains(words), "{statement}: {}", reply.body);
    }
    // A LIMIT past every integer type is no integer at all: a wrong statement.
    let reply = sql(&node, "SELECT 1 LIMIT 99999999999999999999");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("LIMIT"), "{}", reply.body);
    with_client(&node, |client, _| async move {
        for (statement, code, _) in cases {
            let error = client.simple_query(statement).await.unwrap_err();
            assert_eq!(sqlstate(&error), code, "{statement}: {error:?}");
            let error = client.query(statement, &[]).await.unwrap_err();
            assert_eq!(sqlstate(&error), code, "{statement}: {error:?}");
        }
    });
    assert_serving(&node);
}

#[test]
fn rollback_after_writes_says_they_stay_and_driver_statements_work() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let reply = sql(
        &node,
        "CREATE TABLE t (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, v DOUBLE)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Over HTTP, within one request.
    let reply = sql(
        &node,
        "BEGIN; INSERT INTO t VALUES ('http', 0, 1); ROLLBACK",
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("ROLLBACK cannot undo the 1 row written"),
        "{}",
        reply.body
    );
    let reply = sql(&node, "BEGIN; SELECT 1; ROLLBACK");
    assert_eq!(reply.status, 200, "{}", reply.body);

    with_client(&node, |mut client, _| async move {
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("INSERT INTO t VALUES ('a', 0, 1), ('b', 0, 2)", &[])
            .await
            .unwrap();
        let error = client.batch_execute("ROLLBACK").await.unwrap_err();
        assert_eq!(sqlstate(&error), "25000", "{error:?}");
        assert!(
            error_message(&error).contains("2 rows written since BEGIN"),
            "{error:?}"
        );
        // The block is over and the rows are there, as the error said.
        let rows = client.query("SELECT count(*) FROM t", &[]).await.unwrap();
        assert_eq!(rows[0].get::<_, i64>(0), 3);
        // tokio-postgres' own transactions: a rollback without writes succeeds…
        let transaction = client.transaction().await.unwrap();
        transaction.query("SELECT 1", &[]).await.unwrap();
        transaction.rollback().await.unwrap();
        // …and one after writes fails.
        let transaction = client.transaction().await.unwrap();
        transaction
            .execute("INSERT INTO t VALUES ('c', 0, 3)", &[])
            .await
            .unwrap();
        let error = transaction.rollback().await.unwrap_err();
        assert_eq!(sqlstate(&error), "25000", "{error:?}");

        // What drivers send on their own.
        let error = client.batch_execute("DEALLOCATE nope").await.unwrap_err();
        assert_eq!(sqlstate(&error), "26000", "{error:?}");
        client
            .batch_execute(
                "DEALLOCATE ALL; DEALLOCATE PREPARE ALL; DISCARD ALL; DISCARD PLANS; \
                 DISCARD TEMP; DISCARD SEQUENCES; RESET ALL; RESET search_path; \
                 SET application_name = 'x'",
            )
            .await
            .unwrap();
        let rows = client
            .simple_query("SHOW transaction_isolation")
            .await
            .unwrap();
        let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!(row.get(0), Some("read committed"));
        let error = client.simple_query("SHOW nope").await.unwrap_err();
        assert_eq!(sqlstate(&error), "42704", "{error:?}");
    });

    // DEALLOCATE drops the prepared statement it names.
    let mut stream = started(node.postgres);
    let mut parse = b"mine\0SELECT 1\0".to_vec();
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut bind = b"\0mine\0".to_vec();
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut messages = message(b'P', &parse);
    messages.extend(message(b'B', &bind));
    messages.extend(message(b'E', b"\0\0\0\0\0"));
    messages.extend(message(b'S', b""));
    stream.write_all(&messages).unwrap();
    assert_eq!(kinds_until_ready(&mut stream), b"12DC".to_vec());
    stream
        .write_all(&message(b'Q', b"DEALLOCATE mine\0"))
        .unwrap();
    assert_eq!(kinds_until_ready(&mut stream), b"C".to_vec());
    let mut messages = message(b'B', &bind);
    messages.extend(message(b'S', b""));
    stream.write_all(&messages).unwrap();
    assert_eq!(kinds_until_ready(&mut stream), b"E".to_vec());

    if let Some((ok, out, err)) = psql(
        node.postgres.port(),
        &["BEGIN", "INSERT INTO t VALUES ('psql', 0, 1)", "ROLLBACK"],
    ) {
        assert!(!ok, "{out}");
        assert!(
            err.contains("ROLLBACK cannot undo the 1 row written"),
            "{err}"
        );
        let (ok, out, err) = psql(
            node.postgres.port(),
            &[
                "BEGIN",
                "SELECT 1",
                "ROLLBACK",
                "DEALLOCATE ALL",
                "DISCARD ALL",
                "RESET ALL",
                "SHOW transaction_isolation",
            ],
        )
        .unwrap();
        assert!(ok, "{err}");
        assert!(out.contains("read committed"), "{out}");
    }
    assert_serving(&node);
}

/// Reads one backend message: its type and body.
fn read_message(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; length.checked_sub(4)?];
    stream.read_exact(&mut body).ok()?;
    Some((header[0], body))
}

/// A frontend message of `kind` with `body`.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    message.extend_from_slice(body);
    message
}

/// The kinds of the backend messages up to the next ReadyForQuery.
fn kinds_until_ready(stream: &mut TcpStream) -> Vec<u8> {
    std::iter::from_fn(|| read_message(stream))
        .map(|(kind, _)| kind)
        .take_while(|&kind| kind != b'Z')
        .collect()
}

/// The SQLSTATE of an ErrorResponse body.
fn error_code(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).to_string())
        .unwrap_or_default()
}

fn startup_packet(major: u16, minor: u16) -> Vec<u8> {
    let body = b"user\0metronome\0database\0public\0\0";
    let mut packet = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&major.to_be_bytes());
    packet.extend_from_slice(&minor.to_be_bytes());
    packet.extend_from_slice(body);
    packet
}

/// A connection past its startup, at its first ReadyForQuery.
fn started(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&startup_packet(3, 0)).unwrap();
    loop {
        let (kind, _) = read_message(&mut stream).expect("the startup completes");
        if kind == b'Z' {
            return stream;
        }
    }
}

/// Sends `bytes` and expects an ErrorResponse with `code`, then the end of the
/// connection.
fn expect_error_then_close(mut stream: TcpStream, bytes: &[u8], code: &str) {
    stream.write_all(bytes).unwrap();
    let (kind, body) = read_message(&mut stream).expect("an ErrorResponse before the close");
    assert_eq!(kind, b'E', "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        error_code(&body),
        code,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(read_message(&mut stream), None);
}

#[test]
fn protocol_violations_get_an_error_response_before_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let address = node.postgres;

    // A protocol version from nowhere.
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    expect_error_then_close(stream, &startup_packet(9, 9), "0A000");

    // An unknown message type.
    expect_error_then_close(started(address), &message(b'!', b""), "08P01");

    // A Parse that declares 65,535 parameter types and sends none.
    let mut body = b"\0SELECT 1\0".to_vec();
    body.extend_from_slice(&u16::MAX.to_be_bytes());
    let mut parse = message(b'P', &body);
    parse.extend(message(b'S', b""));
    expect_error_then_close(started(address), &parse, "08P01");

    // A well-formed session still works.
    let mut stream = started(address);
    stream.write_all(&message(b'Q', b"SELECT 7\0")).unwrap();
    assert_eq!(kinds_until_ready(&mut stream), b"TDC".to_vec());
    assert_serving(&node);
}

#[test]
fn rows_past_the_ttl_are_reported_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let reply = sql(
        &node,
        "CREATE TABLE t (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, v DOUBLE) \
         WITH (ttl = '30d')",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = sql(
        &node,
        "INSERT INTO t VALUES ('old', '2024-01-01 00:00:00', 1), ('new', now(), 2)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let output = &reply.json()["output"][0];
    assert_eq!(output["affectedrows"], 2, "{output}");
    assert_eq!(output["expired_rows"], 1, "{output}");
    let warning = output["warning"].as_str().unwrap();
    assert!(warning.contains("TTL of table t (30d)"), "{warning}");
    let reply = sql(&node, "INSERT INTO t VALUES ('fresh', now(), 3)");
    assert!(!reply.body.contains("expired_rows"), "{}", reply.body);

    with_client(&node, |client, notices| async move {
        let count = client
            .execute("INSERT INTO t VALUES ('older', '2023-06-01', 1)", &[])
            .await
            .unwrap();
        assert_eq!(count, 1);
        let notice = notices.try_recv().expect("a NOTICE about the expired row");
        assert!(
            notice.contains("1 of the 1 rows written are older than the TTL"),
            "{notice}"
        );
        client
            .batch_execute("INSERT INTO t VALUES ('now', now(), 1)")
            .await
            .unwrap();
        assert!(notices.try_recv().is_err());
        let rows = client
            .query("SELECT host FROM t ORDER BY host", &[])
            .await
            .unwrap();
        let hosts: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        assert_eq!(hosts, ["fresh", "new", "now"]);
    });
}

#[test]
fn insert_takes_constant_expressions_and_errors_quote_whole_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let reply = sql(
        &node,
        "CREATE TABLE t (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, v DOUBLE, \
         n BIGINT)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = sql(
        &node,
        "INSERT INTO t VALUES \
         ('now', now(), 1 + 1, -5), \
         ('hour', now() - interval '1 hour', 0.5 * 3, CAST(7.9 AS BIGINT)), \
         ('cast', CAST('2024-01-01 00:00:00' AS TIMESTAMP), -2.5, 2 * 3), \
         ('epoch', to_timestamp(1700000000), abs(-4), NULL)",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = sql(&node, "SELECT host, ts, v, n FROM t ORDER BY ts");
    let rows = reply.json()["output"][0]["records"]["rows"].clone();
    assert_eq!(
        rows[0],
        serde_json::json!(["epoch", 1_700_000_000_000i64, 4.0, null])
    );
    assert_eq!(
        rows[1],
        serde_json::json!(["cast", 1_704_067_200_000i64, -2.5, 6])
    );
    assert_eq!(rows[2][0], "hour");
    assert_eq!(rows[3][0], "now");
    assert_eq!(
        rows[3][1].as_i64().unwrap() - rows[2][1].as_i64().unwrap(),
        3_600_000,
        "{rows}"
    );
    assert_eq!(rows[3][2], 2.0);
    assert_eq!(rows[3][3], -5);
    assert_eq!(rows[2][3], 7);

    // A value error in an INSERT is the client's, with its SQLSTATE's status.
    let reply = sql(&node, "INSERT INTO t VALUES ('x', 0, 1 / 0, 0)");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("division by zero"), "{}", reply.body);

    // The statement an error quotes is cut between tokens, never inside a literal.
    let statement = format!(
        "CREATE VIEW v AS SELECT 'a long literal with spaces in it', {}host FROM t",
        "host, ".repeat(20)
    );
    let reply = sql(&node, &statement);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("'a long literal with spaces in it'"),
        "{error}"
    );
    assert!(error.ends_with(" …"), "{error}");
}

#[test]
fn a_runaway_query_is_stopped_by_its_limits_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("metronome.toml");
    std::fs::write(
        &config,
        "[query]\ntimeout_ms = 3000\nsql_result_bytes_max = 1000000\n",
    )
    .unwrap();
    let node = start_standalone_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let reply = sql(
        &node,
        "CREATE TABLE t (k STRING, ts TIMESTAMP TIME INDEX, v DOUBLE, PRIMARY KEY (k))",
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let values: Vec<String> = (0..200).map(|i| format!("('k{i}', now(), {i})")).collect();
    let reply = sql(
        &node,
        &format!("INSERT INTO t VALUES {}", values.join(", ")),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A three-way cartesian product (8 M rows) stops at the result's byte limit.
    let reply = sql(&node, "SELECT * FROM t a, t b, t c");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("sql_result_bytes_max"),
        "{}",
        reply.body
    );
    assert_serving(&node);

    // A recursive CTE without an end stops at the deadline.
    let reply = sql(
        &node,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
         SELECT count(*) FROM r",
    );
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("timeout_ms"), "{}", reply.body);
    assert_serving(&node);
}
