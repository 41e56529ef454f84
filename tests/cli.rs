//! The `metronome` binary as a user meets it: configuration precedence, clear errors, and
//! a standalone process that starts, guards its data directory, and stops cleanly.
// These tests drive a real process, so they use real files and signals.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::{metronome, start_standalone};

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metronome.toml");
    std::fs::write(
        &file,
        "data_dir = \"/from/file\"\n[shards]\ncount = 3\nio_driver = \"epoll\"\n",
    )
    .unwrap();
    let output = metronome()
        .args(["standalone", "--print-config", "--config"])
        .arg(&file)
        .args(["--shards", "5"])
        .env("METRONOME_SHARDS", "4")
        .env("METRONOME_DATA_DIR", "/from/env")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("data_dir = \"/from/env\""), "{printed}");
    assert!(printed.contains("count = 5"), "{printed}");
    assert!(printed.contains("io_driver = \"epoll\""), "{printed}");
}

#[test]
fn a_bad_config_is_rejected_with_the_file_and_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[shards]\ncuont = 2\n").unwrap();
    let output = metronome()
        .args(["standalone", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("cuont"),
        "{stderr}"
    );

    let output = metronome()
        .args(["standalone", "--io-driver", "kqueue"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("kqueue"));
}

#[test]
fn a_cluster_role_without_its_addresses_names_what_is_missing() {
    for (role, missing) in [
        ("frontend", "--metasrv"),
        ("datanode", "--node-id"),
        ("metasrv", "--rpc-addr"),
    ] {
        let output = metronome().arg(role).output().unwrap();
        assert!(!output.status.success(), "{role}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(missing), "{role}: {stderr}");
    }
}

#[test]
fn a_cluster_s_config_file_may_not_name_a_data_dir_nor_s3() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    for (text, named) in [
        ("data_dir = \"/somewhere\"\n", "data_dir"),
        (
            "[storage]\nstore = \"s3\"\n[storage.s3]\nbucket = \"b\"\nregion = \"r\"\n",
            "prefix",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let output = metronome()
            .args(["cluster", "--data-dir"])
            .arg(dir.path().join("cluster"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(named) && stderr.contains("cluster.toml"),
            "{text}: {stderr}"
        );
    }
}

#[test]
fn a_rebalance_ratio_below_one_is_refused_naming_the_flag() {
    for ratio in ["0.5", "NaN", "1000"] {
        let output = metronome()
            .args([
                "metasrv",
                "--rpc-addr",
                "127.0.0.1:0",
                "--rebalance-ratio",
                ratio,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{ratio}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--rebalance-ratio") && stderr.contains(ratio),
            "{ratio}: {stderr}"
        );
    }
}

#[test]
fn a_role_s_file_that_sets_another_role_s_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (role, text, key) in [
        ("datanode", "[query]\ntimeout_ms = 5\n", "`query`"),
        ("frontend", "data_dir = \"/tmp/x\"\n", "`data_dir`"),
        (
            "metasrv",
            "[frontend]\nmetasrv = [\"127.0.0.1:1\"]\n",
            "`frontend`",
        ),
        ("standalone", "[metasrv]\nnode_id = 2\n", "`metasrv`"),
    ] {
        let file = dir.path().join(format!("{role}.toml"));
        std::fs::write(&file, text).unwrap();
        let output = metronome()
            .args([role, "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{role}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(key) && stderr.contains(&format!("{role}.toml")),
            "{role}: {stderr}"
        );
    }
}

#[test]
fn standalone_starts_locks_its_data_directory_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_standalone(dir.path());
    assert!(node.ready_line.contains("shards=2"), "{}", node.ready_line);

    let second = metronome()
        .args(["standalone", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second process must not share the data directory"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"));

    node.process.signal(libc::SIGTERM);
    let status = node.process.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    // The reader thread ends at the pipe's end, which the child's exit brings: reading
    // until the channel closes sees every line the process wrote.
    let rest: Vec<String> = node.lines.iter().collect();
    assert!(rest.iter().any(|line| line.contains("stopped")), "{rest:?}");
}
