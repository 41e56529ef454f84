//! `[storage]` configures the datanode of a real `metronome standalone`: with
//! `store = "s3"`, SSTs and manifests live in an S3-compatible bucket (moto here), the
//! data directory keeps only the WAL and the catalog, and a restart reads the rows back
//! from the bucket.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::path::Path;

use common::*;
use metronome_core::rt::object::testing::MotoServer;

/// The output of SQL that must succeed.
fn sql_ok(node: &Standalone, text: &str) -> serde_json::Value {
    let reply = sql(node, text);
    assert_eq!(reply.status, 200, "{text}: {}", reply.body);
    reply.json()
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn with_store_s3_the_ssts_live_in_the_bucket_and_survive_a_restart() {
    let server = MotoServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("metronome.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nstore = \"s3\"\n[storage.s3]\nbucket = \"metronome\"\nprefix = \"node-1\"\n\
             region = \"us-east-1\"\nendpoint = \"http://127.0.0.1:{}\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\nforce_path_style = true\n",
            server.port
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let config_arg = config.to_str().unwrap();

    let mut node = start_standalone_with(&data, &["--config", config_arg]);
    sql_ok(
        &node,
        "CREATE TABLE cpu (host STRING PRIMARY KEY, ts TIMESTAMP TIME INDEX, usage DOUBLE); \
         INSERT INTO cpu VALUES ('a', 1000, 0.5), ('b', 2000, 0.7)",
    );
    // A graceful stop flushes the memtables: the rows are in SSTs afterwards.
    node.process.signal(libc::SIGTERM);
    assert!(node.process.0.wait().unwrap().success());

    let listing = get(&format!(
        "http://127.0.0.1:{}/metronome?list-type=2&prefix=node-1/",
        server.port
    ));
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert!(
        listing.body.contains(".parquet"),
        "the bucket holds the SSTs: {}",
        listing.body
    );
    // Locally only the read cache's copies (`object-cache`), which a restart need not
    // have: it is emptied, so the rows below come from the bucket.
    let local: Vec<String> = files_ending(&data, ".parquet");
    assert!(
        local.iter().all(|path| path.contains("/object-cache/")),
        "no SST on the local disk but cached copies: {local:?}"
    );
    for shard in std::fs::read_dir(&data).unwrap().map(Result::unwrap) {
        let cache = shard.path().join("object-cache");
        if cache.is_dir() {
            std::fs::remove_dir_all(cache).unwrap();
        }
    }

    let node = start_standalone_with(&data, &["--config", config_arg]);
    let rows = sql_ok(&node, "SELECT host, usage FROM cpu ORDER BY host");
    assert_eq!(
        rows["output"][0]["records"]["rows"],
        serde_json::json!([["a", 0.5], ["b", 0.7]])
    );
}

#[test]
fn a_storage_section_that_cannot_work_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("metronome.toml");
    for (section, expected) in [
        ("[storage.s3]\nregion = \"x\"\n", "storage.s3.bucket"),
        // Credentials neither in the file nor in the environment.
        (
            "[storage.s3]\nregion = \"x\"\nbucket = \"b\"\n",
            "AWS_ACCESS_KEY_ID",
        ),
    ] {
        std::fs::write(&config, format!("[storage]\nstore = \"s3\"\n{section}")).unwrap();
        let output = metronome()
            .args(["standalone", "--config", config.to_str().unwrap()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{section}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{section}: {stderr}");
    }
}

#[test]
fn s3_credentials_come_from_the_environment_over_the_file_and_the_secret_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("metronome.toml");
    std::fs::write(
        &config,
        "[storage.s3]\naccess_key_id = \"from-file\"\nsecret_access_key = \"file-secret\"\n",
    )
    .unwrap();
    let output = metronome()
        .args(["standalone", "--print-config", "--config"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "from-env")
        .env("AWS_SECRET_ACCESS_KEY", "env-secret")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("access_key_id = \"from-env\""),
        "{printed}"
    );
    assert!(
        !printed.contains("secret\"") && printed.contains("secret_access_key = \"<set>\""),
        "{printed}"
    );
}
