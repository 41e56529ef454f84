//! Replicated regions across real processes: a metasrv, two datanodes and a frontend
//! whose regions have two copies each (`--replicas 2`). A datanode killed with SIGKILL
//! while remote writes stream in: the regions it led fail over to their copies on the
//! other datanode once its lease has lapsed, writes are acknowledged again, and every
//! sample acknowledged before, during and after is read back. Restarted, it catches up,
//! follows again and takes its share of the regions back; an operator moves a region
//! with `ADMIN migrate_region` and with HTTP; a third datanode joins and takes copies
//! until they are even; datanode 1 is drained onto it while writes go on; killing datanode 1 then costs nothing, and
//! killing datanode 2 loses nothing either: the moved copies are whole.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use std::time::{Duration, Instant};

use common::roles::{datanode, field, frontend, metasrv, ready, sql_at, stop};
use common::{free_port, remote_write, write_request};

/// Series per write; each write is one round, at a timestamp of its own.
const SERIES: usize = 20;
const TS_BASE_MS: i64 = 1_700_000_000_000;

fn rows(reply: &common::Reply) -> serde_json::Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["output"][0]["records"]["rows"].clone()
}

#[test]
fn a_killed_datanode_fails_over_to_its_followers_and_loses_no_acknowledged_sample() {
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let metasrv_addr = format!("127.0.0.1:{}", free_port());
    let metasrv = metasrv(&metasrv_addr, dirs[0].path());
    ready(&metasrv);
    let first = datanode(1, &metasrv_addr, dirs[1].path());
    ready(&first);
    let second = datanode(2, &metasrv_addr, dirs[2].path());
    ready(&second);
    let frontend = frontend(&metasrv_addr, &["--replicas", "2"]);
    let http = field(&ready(&frontend), "http=");

    // Every metric region has a copy on each datanode: a leader and a follower.
    let peers = sql_at(
        http,
        "SELECT peer_id, is_leader, count(*) FROM information_schema.region_peers \
         GROUP BY peer_id, is_leader ORDER BY peer_id, is_leader",
    );
    assert_eq!(
        rows(&peers),
        serde_json::json!([[1, false, 2], [1, true, 2], [2, false, 2], [2, true, 2]]),
        "{}",
        peers.body
    );

    let round = |n: usize| -> Vec<common::Series> {
        (0..SERIES)
            .map(|i| {
                (
                    vec![
                        ("__name__", "failover_test".to_string()),
                        ("host", format!("host-{i:02}")),
                    ],
                    vec![(TS_BASE_MS + n as i64 * 1000, n as f64)],
                )
            })
            .collect()
    };
    let mut acknowledged = Vec::new();
    let mut n = 0;
    let mut write = |acknowledged: &mut Vec<usize>| {
        let reply = remote_write(http, &write_request(&round(n)));
        if reply.status == 204 {
            acknowledged.push(n);
        }
        n += 1;
        reply.status == 204
    };
    for _ in 0..10 {
        assert!(write(&mut acknowledged), "writes before the kill succeed");
    }

    // Every write was acknowledged, so every follower holds it: each leader reports its
    // follower zero writes behind, in SQL and in /metrics.
    let lags = sql_at(
        http,
        "SELECT peer_id, lag_writes, count(*) FROM information_schema.region_peers \
         WHERE role = 'FOLLOWER' GROUP BY peer_id, lag_writes ORDER BY peer_id",
    );
    assert_eq!(
        rows(&lags),
        serde_json::json!([[1, 0, 2], [2, 0, 2]]),
        "{}",
        lags.body
    );
    let lag_line = |leader: u64, copy: u64| {
        let metrics = common::get(&format!("http://{http}/metrics"));
        let prefix =
            format!("metronome_replication_lag_writes{{leader=\"{leader}\",copy=\"{copy}\"}} ");
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix)?.parse::<f64>().ok())
    };
    assert_eq!(lag_line(1, 2), Some(0.0));
    assert_eq!(lag_line(2, 1), Some(0.0));

    // Datanode 2 leads half of the regions; it dies mid-stream.
    let mut second = second;
    second.process.0.kill().unwrap();
    second.process.0.wait().unwrap();
    let killed = Instant::now();
    // A write now queues at datanode 1 for its follower on datanode 2, which takes
    // nothing: until datanode 1 removes it from the configuration (3 s after its first
    // failed shipment), the copy shows behind. (The write is not counted: it may fail.)
    let probe = std::thread::spawn(move || remote_write(http, &write_request(&round(5_000))));
    let (mut in_sql, mut in_metrics) = (false, false);
    while !(in_sql && in_metrics) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the dead follower never showed behind: in SQL {in_sql}, in /metrics {in_metrics}"
        );
        let behind = sql_at(
            http,
            "SELECT max(lag_writes) FROM information_schema.region_peers \
             WHERE peer_id = 2 AND role = 'FOLLOWER'",
        );
        in_sql |= rows(&behind)[0][0]
            .as_u64()
            .is_some_and(|writes| writes > 0);
        in_metrics |= lag_line(1, 2).is_some_and(|writes| writes > 0.0);
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "dead_follower_shown_behind_ms={}",
        killed.elapsed().as_millis()
    );
    let _ = probe.join();
    let before = acknowledged.len();
    let failover = loop {
        if write(&mut acknowledged) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no write was acknowledged within 60 s of the kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("failover_ms={}", failover.as_millis());
    // The lease (16 s) had to lapse first: no write reached the dead datanode's regions
    // before that, and none could have been acknowledged.
    assert!(
        failover >= Duration::from_secs(10),
        "acknowledged {failover:?} after the kill, before the lease could lapse"
    );
    assert_eq!(acknowledged.len(), before + 1);
    for _ in 0..5 {
        assert!(
            write(&mut acknowledged),
            "writes after the failover succeed"
        );
    }

    // Every region is led by datanode 1 now, at the next epoch, with no follower (until a
    // new copy can catch up): those datanode 2 led failed over, and datanode 1 dropped its
    // dead follower from the others before it acknowledged anything more.
    let peers = sql_at(
        http,
        "SELECT peer_id, is_leader, epoch, count(*) FROM information_schema.region_peers \
         GROUP BY peer_id, is_leader, epoch ORDER BY peer_id, is_leader, epoch",
    );
    assert_eq!(
        rows(&peers),
        serde_json::json!([[1, true, 2, 4]]),
        "{}",
        peers.body
    );

    every_acknowledged_round_reads_back(http, &acknowledged);

    // Datanode 2 comes back on its data directory, with copies that fell behind (and
    // may hold writes never acknowledged): the metasrv makes it a learner of every
    // region, datanode 1 installs its copies there, ships what came meanwhile and makes
    // it a follower — while writes go on.
    let second = datanode(2, &metasrv_addr, dirs[2].path());
    ready(&second);
    let returned = Instant::now();
    let per_peer = "SELECT peer_id, role, count(*) FROM information_schema.region_peers \
                    GROUP BY peer_id, role ORDER BY peer_id, role";
    let repaired = loop {
        assert!(
            write(&mut acknowledged),
            "writes during the catch-up succeed"
        );
        let peers = sql_at(http, per_peer);
        let copies = |rows: &serde_json::Value, peer: u64| -> u64 {
            rows.as_array()
                .unwrap()
                .iter()
                .filter(|row| row[0] == peer && row[1] != "LEARNER")
                .map(|row| row[2].as_u64().unwrap())
                .sum()
        };
        let now = rows(&peers);
        if copies(&now, 1) == 4 && copies(&now, 2) == 4 {
            break returned.elapsed();
        }
        assert!(
            returned.elapsed() < Duration::from_secs(90),
            "the regions did not get their second copy back: {}",
            peers.body
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("repair_ms={}", repaired.as_millis());

    // With every copy back, the metasrv evens leadership out: datanode 2 takes its share
    // of the regions back, by hand-overs (each then copies the region back to the old
    // leader, whose copy leaves the configuration), while writes go on.
    let balanced = serde_json::json!([
        [1, "FOLLOWER", 2],
        [1, "LEADER", 2],
        [2, "FOLLOWER", 2],
        [2, "LEADER", 2]
    ]);
    let rebalanced = loop {
        write(&mut acknowledged);
        let peers = sql_at(http, per_peer);
        if rows(&peers) == balanced {
            break returned.elapsed();
        }
        assert!(
            returned.elapsed() < Duration::from_secs(120),
            "datanode 2 did not take its share of the regions back: {}",
            peers.body
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("rebalanced_ms={}", rebalanced.as_millis());

    // An operator moves a region by hand, with SQL and then with HTTP, and back: each
    // answers once the region's leader is where it was asked to be.
    let led_by_first = sql_at(
        http,
        "SELECT region_id FROM information_schema.region_peers \
         WHERE peer_id = 1 AND role = 'LEADER' ORDER BY region_id LIMIT 1",
    );
    let region = rows(&led_by_first)[0][0].as_str().unwrap().to_string();
    let moved = sql_at(http, &format!("ADMIN migrate_region('{region}', 2)"));
    let moved = rows(&moved);
    assert_eq!(moved[0][0], region.as_str(), "{moved}");
    assert_eq!(
        (&moved[0][1], &moved[0][2]),
        (&serde_json::json!(1), &serde_json::json!(2))
    );
    eprintln!("migration_sql_ms={}", moved[0][5]);
    write(&mut acknowledged);
    let back = common::post(
        &format!("http://{http}/v1/admin/migrate_region?region={region}&to=1"),
        "text/plain",
        None,
        b"",
    );
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.json()["data"]["to"], 1, "{}", back.body);
    eprintln!("migration_http_ms={}", back.json()["data"]["took_ms"]);
    let refused = sql_at(http, &format!("ADMIN migrate_region('{region}', 9)"));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("datanode 9 is not registered"),
        "{}",
        refused.body
    );
    // Each move left the old leader's copy out; the region gets it back by catch-up.
    let moved_back = Instant::now();
    while rows(&sql_at(http, per_peer)) != balanced {
        assert!(
            moved_back.elapsed() < Duration::from_secs(60),
            "the moved region did not get its second copy back"
        );
        write(&mut acknowledged);
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..3 {
        assert!(
            write(&mut acknowledged),
            "writes after the migrations succeed"
        );
    }

    // A third datanode joins, holding nothing: the metasrv moves copies onto it, one
    // migration at a time, until the copies are even (8 over 3 datanodes: 3, 3, 2).
    let refused = sql_at(http, "ADMIN drain_datanode(9)");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("not registered"), "{}", refused.body);
    let dir = tempfile::tempdir().unwrap();
    let third = datanode(3, &metasrv_addr, dir.path());
    ready(&third);
    let joined = Instant::now();
    let copies_held = || {
        rows(&sql_at(
            http,
            "SELECT peer_id, count(*) FROM information_schema.region_peers \
             WHERE role <> 'LEARNER' GROUP BY peer_id ORDER BY peer_id",
        ))
    };
    let even = |held: &serde_json::Value| {
        let counts: Vec<u64> = (1..=3)
            .map(|id| {
                held.as_array()
                    .unwrap()
                    .iter()
                    .find(|row| row[0] == id)
                    .map_or(0, |row| row[1].as_u64().unwrap())
            })
            .collect();
        counts.iter().sum::<u64>() == 8
            && counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
    };
    while !even(&copies_held()) {
        assert!(
            joined.elapsed() < Duration::from_secs(90),
            "the copies did not even out onto the datanode that joined: {}",
            copies_held()
        );
        write(&mut acknowledged);
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("join_rebalanced_ms={}", joined.elapsed().as_millis());
    let held = copies_held();
    assert!(held[2][1].as_u64() >= Some(2), "{held}");
    let held_by_first = held[0][1].as_u64().unwrap();

    // The operator drains datanode 1 while writes go on: every copy it held leaves, for
    // datanodes 2 and 3, which end up with a copy of every region each.
    let draining = std::thread::spawn(move || {
        common::post(
            &format!("http://{http}/v1/admin/drain_datanode?id=1"),
            "text/plain",
            None,
            b"",
        )
    });
    while !draining.is_finished() {
        write(&mut acknowledged);
        std::thread::sleep(Duration::from_millis(100));
    }
    let drained = draining.join().unwrap();
    assert_eq!(drained.status, 200, "{}", drained.body);
    assert_eq!(
        drained.json()["data"]["regions_held"],
        0,
        "{}",
        drained.body
    );
    assert_eq!(
        drained.json()["data"]["regions_moved"],
        held_by_first,
        "{}",
        drained.body
    );
    eprintln!("drain_ms={}", drained.json()["data"]["took_ms"]);
    let after_drain = serde_json::json!([
        [2, "FOLLOWER", 2],
        [2, "LEADER", 2],
        [3, "FOLLOWER", 2],
        [3, "LEADER", 2]
    ]);
    let copies = rows(&sql_at(
        http,
        "SELECT peer_id, role, count(*) FROM information_schema.region_peers \
         GROUP BY peer_id, role ORDER BY peer_id, role",
    ));
    // Leadership is shared out by rebalancing once the copies settled; either way no
    // copy is left on datanode 1 and each region has its two.
    let per_region = rows(&sql_at(
        http,
        "SELECT region_id, count(*) FROM information_schema.region_peers \
         WHERE peer_id <> 1 GROUP BY region_id HAVING count(*) = 2",
    ));
    assert_eq!(per_region.as_array().unwrap().len(), 4, "{copies}");
    assert!(
        !copies.as_array().unwrap().iter().any(|row| row[0] == 1),
        "{copies}"
    );
    let marked = rows(&sql_at(
        http,
        "SELECT peer_id, draining FROM information_schema.cluster_info \
         WHERE peer_type = 'DATANODE' ORDER BY peer_id",
    ));
    assert_eq!(
        marked,
        serde_json::json!([[1, true], [2, false], [3, false]])
    );
    // And in /metrics, with the failovers, migrations and copies added so far.
    let metrics = common::get(&format!("http://{http}/metrics"));
    let figure = |series: &str| -> u64 {
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in:\n{}", metrics.body))
    };
    assert_eq!(figure("metronome_datanode_draining{datanode=\"1\"}"), 1);
    assert!(
        figure("metronome_region_failovers_total") >= 2,
        "{}",
        metrics.body
    );
    assert!(
        figure("metronome_region_hand_overs_total") >= 3,
        "{}",
        metrics.body
    );
    assert!(
        figure("metronome_region_followers_added_total") >= 4,
        "{}",
        metrics.body
    );
    assert!(
        figure("metronome_region_followers_removed_total") >= 1,
        "{}",
        metrics.body
    );
    let rebalanced = Instant::now();
    while rows(&sql_at(
        http,
        "SELECT peer_id, role, count(*) FROM information_schema.region_peers \
         GROUP BY peer_id, role ORDER BY peer_id, role",
    )) != after_drain
    {
        assert!(
            rebalanced.elapsed() < Duration::from_secs(90),
            "leadership did not even out over datanodes 2 and 3"
        );
        write(&mut acknowledged);
        std::thread::sleep(Duration::from_millis(200));
    }

    // A drained datanode killed costs nothing: it leads and follows nothing.
    let mut first = first;
    first.process.0.kill().unwrap();
    first.process.0.wait().unwrap();
    assert!(
        write(&mut acknowledged),
        "a write right after the drained datanode died"
    );

    // The copies the drain moved are whole: with datanode 2 killed, datanode 3 leads
    // every region and reads back every sample acknowledged since the beginning.
    let mut second = second;
    second.process.0.kill().unwrap();
    second.process.0.wait().unwrap();
    let killed = Instant::now();
    while !write(&mut acknowledged) {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no write was acknowledged within 60 s of the second kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    every_acknowledged_round_reads_back(http, &acknowledged);

    stop(frontend);
    stop(third);
    stop(metasrv);
}

/// Every acknowledged sample reads back, with its value, exactly once.
fn every_acknowledged_round_reads_back(http: std::net::SocketAddr, acknowledged: &[usize]) {
    let counts = sql_at(
        http,
        "SELECT value, count(*) FROM failover_test GROUP BY value ORDER BY value",
    );
    let counts: Vec<(usize, u64)> = rows(&counts)
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row[0].as_f64().unwrap() as usize, row[1].as_u64().unwrap()))
        .collect();
    for round in acknowledged {
        assert!(
            counts.contains(&(*round, SERIES as u64)),
            "round {round} was acknowledged, and reads back as {:?}",
            counts.iter().find(|(r, _)| r == round)
        );
    }
}
