//! A cluster of real processes on loopback: one metasrv, two datanodes, one frontend,
//! started in an awkward order (a datanode before the metasrv), written to through the
//! frontend and read back, with the regions spread over both datanodes; the same through
//! `metronome cluster` with three metasrv replicas, read through a second frontend; and
//! three metasrv replicas that lose their leader to kill -9 and go on taking DDL. That
//! a cluster answers queries as standalone does is `cluster_queries.rs`.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::roles::{
    datanode, field, frontend, frontend_addrs, metasrv, ready, sql_at, start, start_cluster_with,
    stop, Role,
};
use common::{free_port, get_query, read_log_until, remote_write, write_request};

/// Region directories a datanode holds (each shard's `regions/`).
fn regions_on(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("shard-"))
        .map(|shard| {
            std::fs::read_dir(shard.path().join("regions"))
                .map(|regions| regions.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_cluster_of_processes_takes_writes_through_its_frontend_and_spreads_regions() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let metasrv_addr = format!("127.0.0.1:{}", free_port());

    // A datanode whose metasrv is not up yet says so and keeps trying.
    let first = datanode(1, &metasrv_addr, dirs[1].path());
    read_log_until(&first.lines, "a registration retry", |line| {
        line.contains("cannot register with the metasrv; retrying") && line.contains(&metasrv_addr)
    });

    let metasrv = metasrv(&metasrv_addr, dirs[0].path());
    let line = ready(&metasrv);
    assert!(
        line.contains("role=metasrv") && line.contains("id=1"),
        "{line}"
    );
    let line = ready(&first);
    assert!(
        line.contains("role=datanode") && line.contains("id=1"),
        "{line}"
    );
    let second_dir = tempfile::tempdir().unwrap();
    let second = datanode(2, &metasrv_addr, second_dir.path());
    ready(&second);

    // One copy of each region (the default with two datanodes is two): this test is the
    // single copy's, whose datanode, killed, stops the writes until it is back.
    let frontend = frontend(&metasrv_addr, &["--replicas", "1"]);
    let line = ready(&frontend);
    let http = field(&line, "http=");

    // 40 series, 3 samples each, through the frontend.
    let series: Vec<common::Series> = (0..40)
        .map(|i| {
            (
                vec![
                    ("__name__", "cluster_test".to_string()),
                    ("host", format!("host-{i:02}")),
                ],
                vec![
                    (1_000_000, i as f64),
                    (1_015_000, i as f64 + 1.0),
                    (1_030_000, 2.0),
                ],
            )
        })
        .collect();
    let reply = remote_write(http, &write_request(&series));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let count = get_query(
        &format!("http://{http}/api/v1/query"),
        &[("query", "count(cluster_test)"), ("time", "1015")],
    )
    .json();
    assert_eq!(count["data"]["result"][0]["value"][1], "40", "{count}");
    let sum = get_query(
        &format!("http://{http}/api/v1/query"),
        &[("query", "sum(cluster_test)"), ("time", "1015")],
    )
    .json();
    // (0 + 1) + (1 + 1) + … + (39 + 1) = 820.
    assert_eq!(sum["data"]["result"][0]["value"][1], "820", "{sum}");

    // The cluster as the frontend sees it: both datanodes alive, every region routed.
    let cluster = common::get(&format!("http://{http}/v1/cluster")).json();
    let nodes = cluster["nodes"].as_array().unwrap();
    let roles: Vec<(&str, u64, bool)> = nodes
        .iter()
        .map(|node| {
            (
                node["role"].as_str().unwrap(),
                node["id"].as_u64().unwrap(),
                node["alive"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("metasrv", 1, true),
            ("datanode", 1, true),
            ("datanode", 2, true)
        ],
        "{cluster}"
    );
    let leaders: Vec<u64> = cluster["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|region| region["leader"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders.len(), 4, "{cluster}");
    assert!(leaders.contains(&1) && leaders.contains(&2), "{cluster}");

    // The same through SQL, under GreptimeDB's names.
    let info = sql_at(
        http,
        "SELECT peer_type, peer_id, alive, is_leader FROM information_schema.cluster_info \
         ORDER BY peer_type DESC, peer_id",
    );
    assert_eq!(info.status, 200, "{}", info.body);
    let rows = info.json()["output"][0]["records"]["rows"].clone();
    assert_eq!(
        rows,
        serde_json::json!([
            ["METASRV", 1, true, true],
            ["DATANODE", 1, true, null],
            ["DATANODE", 2, true, null]
        ]),
        "{}",
        info.body
    );
    let peers = sql_at(
        http,
        "SELECT peer_id, count(*), min(status), min(epoch), max(epoch) \
         FROM information_schema.region_peers GROUP BY peer_id ORDER BY peer_id",
    );
    assert_eq!(peers.status, 200, "{}", peers.body);
    let rows = peers.json()["output"][0]["records"]["rows"].clone();
    // Every route is at its first epoch: nothing moved a region.
    assert_eq!(
        rows,
        serde_json::json!([[1, 2, "ALIVE", 1, 1], [2, 2, "ALIVE", 1, 1]]),
        "{}",
        peers.body
    );
    // DataFusion's own tables are still there.
    let tables = sql_at(
        http,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'cluster_test'",
    );
    assert!(tables.body.contains("[[1]]"), "{}", tables.body);

    // The metric regions (two per shard) were placed over both datanodes.
    let (on_first, on_second) = (regions_on(dirs[1].path()), regions_on(second_dir.path()));
    assert!(
        on_first >= 2 && on_second >= 2,
        "{on_first} and {on_second} regions"
    );

    // A datanode killed with SIGKILL: writes (which reach every metric region) fail
    // until it is back; restarted on its data directory it replays its WAL, registers
    // its new address, and the frontend writes to it again.
    let mut second = second;
    second.process.0.kill().unwrap();
    second.process.0.wait().unwrap();
    let killed = std::time::Instant::now();
    let second = datanode(2, &metasrv_addr, second_dir.path());
    let restarted = std::time::Instant::now();
    ready(&second);
    let more: Vec<common::Series> = (0..40)
        .map(|i| {
            (
                vec![
                    ("__name__", "cluster_test".to_string()),
                    ("host", format!("host-{i:02}")),
                ],
                vec![(1_045_000, 3.0)],
            )
        })
        .collect();
    let body = write_request(&more);
    within(60, "a write after the datanode restarted", || {
        (remote_write(http, &body).status == 204).then_some(())
    });
    eprintln!(
        "writes accepted again {} ms after the datanode restarted ({} ms after it was killed)",
        restarted.elapsed().as_millis(),
        killed.elapsed().as_millis()
    );
    // Nothing acknowledged before the kill was lost.
    let sum = get_query(
        &format!("http://{http}/api/v1/query"),
        &[("query", "sum(cluster_test)"), ("time", "1015")],
    )
    .json();
    assert_eq!(sum["data"]["result"][0]["value"][1], "820", "{sum}");

    stop(frontend);
    stop(second);
    stop(first);
    stop(metasrv);
}

#[test]
fn metronome_cluster_starts_every_role_and_stops_them_together() {
    let dir = tempfile::tempdir().unwrap();
    // Its --config file's sections reach the roles that read them.
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[shards]\ncount = 2\n[frontend]\nreplicas = 1\n[metasrv]\nrebalance_ratio = 2.0\n",
    )
    .unwrap();
    let (cluster, lines) = start_cluster_with(
        &dir.path().join("cluster"),
        3,
        2,
        2,
        &["--config", config.to_str().unwrap()],
    );
    let frontends = frontend_addrs(&lines);
    assert_eq!(frontends.len(), 2, "{lines:#?}");
    let datanodes = lines
        .iter()
        .filter(|line| line.starts_with("[datanode-") && line.contains("role=datanode"))
        .inspect(|line| assert!(line.contains("shards=2"), "{line}"))
        .count();
    assert_eq!(datanodes, 2, "{lines:#?}");

    let series: Vec<common::Series> = (0..10)
        .map(|i| {
            (
                vec![
                    ("__name__", "supervised".to_string()),
                    ("host", format!("h{i}")),
                ],
                vec![(2_000_000, 1.0)],
            )
        })
        .collect();
    let reply = remote_write(frontends[0], &write_request(&series));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let count = get_query(
        &format!("http://{}/api/v1/query", frontends[0]),
        &[("query", "count(supervised)"), ("time", "2000")],
    )
    .json();
    assert_eq!(count["data"]["result"][0]["value"][1], "10", "{count}");
    // The other frontend reads what the first one wrote.
    let count = get_query(
        &format!("http://{}/api/v1/query", frontends[1]),
        &[("query", "count(supervised)"), ("time", "2000")],
    )
    .json();
    assert_eq!(count["data"]["result"][0]["value"][1], "10", "{count}");
    // One copy of each region, as the file's [frontend] says (two datanodes would
    // give two).
    let view = common::get(&format!("http://{}/v1/cluster", frontends[0])).json();
    let regions = view["regions"].as_array().unwrap();
    assert!(!regions.is_empty(), "{view}");
    for region in regions {
        assert_eq!(region["followers"], serde_json::json!([]), "{view}");
    }

    // Ctrl-C stops every role, and the supervisor exits cleanly once they are gone.
    stop(cluster);
    // Every data directory's lock is free again: each of its processes is gone. (A
    // metasrv takes any directory's lock; it becomes ready only once it holds it.)
    for node in [
        "metasrv-1",
        "metasrv-2",
        "metasrv-3",
        "datanode-1",
        "datanode-2",
    ] {
        let path = dir.path().join("cluster").join(node);
        assert!(path.join("LOCK").exists(), "{node} ran there");
        let relocked = start(
            "relocked",
            &[
                "metasrv",
                "--rpc-addr",
                "127.0.0.1:0",
                "--data-dir",
                path.to_str().unwrap(),
            ],
        );
        ready(&relocked);
        stop(relocked);
    }
}

/// The metasrv replicas in `/v1/cluster`, as (id, alive, leader, last applied index,
/// term).
fn metasrv_replicas(http: SocketAddr) -> Vec<(u64, bool, bool, u64, u64)> {
    let cluster = common::get(&format!("http://{http}/v1/cluster"));
    if cluster.status != 200 {
        return Vec::new();
    }
    cluster.json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["role"] == "metasrv")
        .map(|node| {
            (
                node["id"].as_u64().unwrap_or(0),
                node["alive"].as_bool().unwrap(),
                node["leader"].as_bool().unwrap(),
                node["last_applied_index"].as_u64().unwrap_or(0),
                node["term"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `seconds`.
fn within<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The documented example `config/<role>.toml` with its addresses, ids and paths
/// replaced (`(from, to)` in order): the files operators copy are the ones this test runs.
fn role_file(dir: &Path, role: &str, replacements: &[(&str, String)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("config/{role}.toml")),
    )
    .unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "config/{role}.toml has {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn three_metasrv_replicas_keep_the_catalog_and_take_ddl_when_the_leader_dies() {
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(index, addr)| format!("{}={addr}", index + 1))
        .collect();
    let dirs = [(); 4].map(|()| tempfile::tempdir().unwrap());
    let files = tempfile::tempdir().unwrap();
    // Replicas 1 and 2 run from the documented file; replica 3 from flags alone.
    let replica = |id: usize| {
        if id == 3 {
            return start(
                "metasrv",
                &[
                    "metasrv",
                    "--node-id",
                    "3",
                    "--rpc-addr",
                    &addrs[2],
                    "--peers",
                    &peers.join(","),
                    "--data-dir",
                    dirs[2].path().to_str().unwrap(),
                ],
            );
        }
        let own = files.path().join(format!("metasrv-{id}"));
        std::fs::create_dir_all(&own).unwrap();
        let file = role_file(
            &own,
            "metasrv",
            &[
                (
                    "/var/lib/metronome/metasrv",
                    dirs[id - 1].path().display().to_string(),
                ),
                ("node_id = 1", format!("node_id = {id}")),
                (
                    "rpc_addr = \"10.0.0.1:4100\"",
                    format!("rpc_addr = \"{}\"", addrs[id - 1]),
                ),
                ("10.0.0.1:4100", addrs[0].clone()),
                ("10.0.0.2:4100", addrs[1].clone()),
                ("10.0.0.3:4100", addrs[2].clone()),
            ],
        );
        start("metasrv", &["metasrv", "--config", file.to_str().unwrap()])
    };
    let mut replicas: Vec<Option<Role>> = (1..=3).map(|id| Some(replica(id))).collect();
    for role in replicas.iter().flatten() {
        let line = ready(role);
        assert!(line.contains("peers=3"), "{line}");
    }
    let metasrv_replacements = [
        ("10.0.0.1:4100", addrs[0].clone()),
        ("10.0.0.2:4100", addrs[1].clone()),
        ("10.0.0.3:4100", addrs[2].clone()),
    ];
    let mut replacements = vec![
        (
            "/var/lib/metronome/datanode",
            dirs[3].path().display().to_string(),
        ),
        (
            "rpc_addr = \"0.0.0.0:4200\"",
            "rpc_addr = \"127.0.0.1:0\"".to_string(),
        ),
        ("advertise_addr = \"10.0.0.11:4200\"", String::new()),
        ("count = 0", "count = 1".to_string()),
        ("pin_to_cores = true", "pin_to_cores = false".to_string()),
    ];
    replacements.extend(metasrv_replacements.iter().cloned());
    let file = role_file(files.path(), "datanode", &replacements);
    let node = start(
        "datanode",
        &["datanode", "--config", file.to_str().unwrap()],
    );
    ready(&node);
    let mut replacements = vec![
        ("0.0.0.0:4000", "127.0.0.1:0".to_string()),
        ("0.0.0.0:4003", "127.0.0.1:0".to_string()),
    ];
    replacements.extend(metasrv_replacements.iter().cloned());
    let file = role_file(files.path(), "frontend", &replacements);
    let frontend = start(
        "frontend",
        &["frontend", "--config", file.to_str().unwrap()],
    );
    let http = field(&ready(&frontend), "http=");
    let create = |name: &str| {
        sql_at(
            http,
            &format!(
                "CREATE TABLE {name} (host STRING, ts TIMESTAMP TIME INDEX, v DOUBLE, \
                 PRIMARY KEY (host))"
            ),
        )
    };
    let reply = create("before_loss");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = sql_at(http, "INSERT INTO before_loss VALUES ('a', 1000, 1.5)");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // One leader among three live replicas, all at the same applied index.
    let (leader, term) = within(30, "one leader, three replicas caught up", || {
        let replicas = metasrv_replicas(http);
        let leaders: Vec<(u64, u64)> = replicas
            .iter()
            .filter(|r| r.2)
            .map(|r| (r.0, r.4))
            .collect();
        let applied: Vec<u64> = replicas.iter().map(|r| r.3).collect();
        (replicas.len() == 3
            && replicas.iter().all(|r| r.1)
            && leaders.len() == 1
            && applied.iter().all(|&index| index == applied[0]))
        .then(|| leaders[0])
    });

    // The leader dies without a word; DDL works again once the others elect one.
    let mut dead = replicas[leader as usize - 1].take().unwrap();
    dead.process.0.kill().unwrap();
    dead.process.0.wait().unwrap();
    let killed = std::time::Instant::now();
    // IF NOT EXISTS: a try whose reply was lost may have created it.
    within(30, "a CREATE TABLE after the leader died", || {
        let reply = sql_at(
            http,
            "CREATE TABLE IF NOT EXISTS after_loss (host STRING, ts TIMESTAMP TIME INDEX, \
             v DOUBLE, PRIMARY KEY (host))",
        );
        (reply.status == 200).then_some(())
    });
    eprintln!(
        "DDL accepted again {} ms after the metasrv leader was killed",
        killed.elapsed().as_millis()
    );
    // The survivors elected one of themselves in a later term: the commit above needed
    // a leader, and the one killed led until it died.
    let (new_leader, new_term) = within(30, "a new leader", || {
        let replicas = metasrv_replicas(http);
        replicas.iter().find(|r| r.2).map(|r| (r.0, r.4))
    });
    assert!(
        new_leader != leader && new_term > term,
        "leader {leader} of term {term}, then {new_leader} of term {new_term}"
    );
    let reply = sql_at(http, "SELECT host, v FROM before_loss");
    assert!(
        reply.status == 200 && reply.body.contains("1.5"),
        "{}",
        reply.body
    );
    let reply = sql_at(http, "INSERT INTO after_loss VALUES ('b', 2000, 2.5)");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The dead replica restarts on its data directory and catches up by itself.
    let restarted = replica(leader as usize);
    ready(&restarted);
    within(60, "the restarted replica caught up", || {
        let replicas = metasrv_replicas(http);
        let applied: Vec<u64> = replicas.iter().map(|r| r.3).collect();
        (replicas.len() == 3
            && replicas.iter().all(|r| r.1)
            && applied.iter().all(|&index| index == applied[0]))
        .then_some(())
    });
    replicas[leader as usize - 1] = Some(restarted);
    drop(dead);

    // A fourth replica joins (an empty directory, --join: it does not start a cluster of
    // its own) and is added; then the first is removed. DDL works throughout.
    let fourth_addr = format!("127.0.0.1:{}", free_port());
    let fourth_dir = tempfile::tempdir().unwrap();
    let fourth = start(
        "metasrv",
        &[
            "metasrv",
            "--node-id",
            "4",
            "--rpc-addr",
            &fourth_addr,
            "--join",
            "--data-dir",
            fourth_dir.path().to_str().unwrap(),
        ],
    );
    ready(&fourth);
    let change = |args: &[&str]| {
        let output = common::metronome()
            .args(["membership", "--metasrv", &addrs.join(",")])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let added = change(&["add", "--node-id", "4", "--addr", &fourth_addr]);
    assert!(added.contains("voters=1,2,3,4"), "{added}");
    let removed = change(&["remove", "--node-id", "1"]);
    assert!(removed.contains("voters=2,3,4"), "{removed}");
    within(30, "DDL after the membership changes", || {
        let reply = sql_at(
            http,
            "CREATE TABLE IF NOT EXISTS after_changes (host STRING, ts TIMESTAMP TIME INDEX, \
             v DOUBLE, PRIMARY KEY (host))",
        );
        (reply.status == 200).then_some(())
    });
    replicas.push(Some(fourth));

    stop(frontend);
    stop(node);
    for role in replicas.into_iter().flatten() {
        stop(role);
    }
}
