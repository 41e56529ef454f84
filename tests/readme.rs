//! README.md's SQL example, run as written against a real `metronome standalone`: a
//! newcomer who copies it must see the row they inserted.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::*;

/// The statements of README's example, in order: each `psql … -c "…"` (which may span
/// lines) and each `"sql=…"` given to curl.
fn readme_statements() -> Vec<String> {
    let readme = include_str!("../README.md");
    let mut statements = Vec::new();
    let mut rest = readme;
    loop {
        let psql = rest.find("-p 4003 -c \"").map(|at| (at, "-p 4003 -c \""));
        let curl = rest.find("\"sql=").map(|at| (at, "\"sql="));
        let Some((at, marker)) = [psql, curl].into_iter().flatten().min() else {
            break;
        };
        let start = at + marker.len();
        let end = start + rest[start..].find('"').expect("a closing quote");
        let statement: Vec<&str> = rest[start..end].lines().map(str::trim).collect();
        statements.push(statement.join(" "));
        rest = &rest[end + 1..];
    }
    statements
}

#[test]
fn the_readme_sql_example_shows_the_row_it_inserted() {
    let statements = readme_statements();
    assert!(
        statements.len() >= 3
            && statements[0].starts_with("CREATE TABLE")
            && statements[1].starts_with("INSERT")
            && statements.last().unwrap().starts_with("SELECT"),
        "README's example changed shape: {statements:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let node = start_standalone(dir.path());
    let mut last = serde_json::Value::Null;
    for statement in &statements {
        let reply = post(
            &format!("http://{}/v1/sql", node.http),
            "text/plain",
            None,
            statement.as_bytes(),
        );
        assert_eq!(reply.status, 200, "{statement}: {}", reply.body);
        last = reply.json();
    }
    let rows = last["output"][0]["records"]["rows"].as_array().cloned();
    assert_eq!(
        rows.as_ref().map(Vec::len),
        Some(1),
        "the example's SELECT shows the inserted row: {last}"
    );
}

#[test]
fn the_readme_configuration_is_one_metronome_accepts_with_its_defaults() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```toml\n")
        .expect("README shows a configuration")
        + 8;
    let end = start + readme[start..].find("```").expect("a closing fence");
    let config = metronome_core::config::Config::from_toml(&readme[start..end], "README.md")
        .unwrap_or_else(|error| panic!("{error}"));
    // The numbers it shows are the defaults (its paths and S3 bucket are examples).
    let defaults = metronome_core::config::Config::default();
    let mut storage = config.storage.clone();
    storage.s3 = defaults.storage.s3.clone();
    assert_eq!(storage, defaults.storage);
    assert_eq!(config.query, defaults.query);
    assert_eq!(config.ingest, defaults.ingest);
    assert_eq!(config.shards, defaults.shards);
}
