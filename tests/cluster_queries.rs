//! The same data written to a standalone and to a cluster answers PromQL and SQL alike,
//! read at the regions' leaders or at their followers.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod common;

use common::roles::{field, frontend, frontend_addrs, ready, sql_at, start_cluster, stop};
use common::{get_query, remote_write, write_request};

/// The same data written to a standalone and to a cluster (three datanodes, so regions
/// live apart and queries fan out and merge; two copies of each region) answers every
/// PromQL and SQL query alike, through a frontend that reads at the leaders and through
/// one that reads at the followers only (`--read-preference follower`, which fails a
/// read rather than take it to a leader), right after the writes were acknowledged.
#[test]
fn promql_and_sql_answer_in_a_cluster_as_in_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let standalone = common::start_standalone(&dir.path().join("standalone"));
    let (cluster, lines) = start_cluster(&dir.path().join("cluster"), 1, 3, 1);
    let frontend_at_leaders = *frontend_addrs(&lines)
        .first()
        .unwrap_or_else(|| panic!("a frontend's ready line: {lines:#?}"));
    let metasrv = lines
        .iter()
        .find(|line| line.starts_with("[metasrv-1]") && line.contains(" ready"))
        .map(|line| field(line, "rpc=").to_string())
        .unwrap_or_else(|| panic!("the metasrv's ready line: {lines:#?}"));
    let at_followers = frontend(&metasrv, &["--read-preference", "follower"]);
    let frontend_at_followers = field(&ready(&at_followers), "http=");
    let nodes = [standalone.http, frontend_at_leaders];

    // Ten minutes of samples every 15 s: counters, a gauge and a classic histogram, over
    // enough series that the metric regions of every datanode hold some.
    let mut series: Vec<common::Series> = Vec::new();
    for job in ["api", "db", "web"] {
        for instance in 0..6 {
            let step = (instance + 1) as f64;
            series.push((
                vec![
                    ("__name__", "requests_total".to_string()),
                    ("instance", format!("i{instance}")),
                    ("job", job.to_string()),
                ],
                (0..40).map(|t| (t * 15_000, step * t as f64)).collect(),
            ));
            series.push((
                vec![
                    ("__name__", "temperature".to_string()),
                    ("instance", format!("i{instance}")),
                    ("job", job.to_string()),
                ],
                (0..40)
                    .map(|t| (t * 15_000, 20.0 + ((t * 7 + instance) % 11) as f64))
                    .collect(),
            ));
        }
        for (le, share) in [("0.1", 1.0), ("0.5", 3.0), ("1", 6.0), ("+Inf", 7.0)] {
            series.push((
                vec![
                    ("__name__", "latency_seconds_bucket".to_string()),
                    ("job", job.to_string()),
                    ("le", le.to_string()),
                ],
                (0..40).map(|t| (t * 15_000, share * t as f64)).collect(),
            ));
        }
    }
    for node in nodes {
        let reply = remote_write(node, &write_request(&series));
        assert_eq!(reply.status, 204, "{node}: {}", reply.body);
        let reply = sql_at(
            node,
            "CREATE TABLE cpu (host STRING, dc STRING, ts TIMESTAMP TIME INDEX, usage DOUBLE, \
             PRIMARY KEY (host, dc)) WITH (partitions = 3); \
             INSERT INTO cpu (host, dc, ts, usage) VALUES \
             ('a', 'eu', '2024-01-01 00:00:00', 0.5), ('a', 'eu', '2024-01-01 00:00:30', 0.7), \
             ('b', 'us', '2024-01-01 00:00:00', 0.1), ('b', 'us', '2024-01-01 00:01:10', 0.3), \
             ('c', 'us', '2024-01-01 00:00:20', 0.9), ('d', 'ap', '2024-01-01 00:02:00', 0.4)",
        );
        assert_eq!(reply.status, 200, "{node}: {}", reply.body);
    }
    // The cluster's metric regions are spread: some on each datanode, with a follower.
    let cluster_view = common::get(&format!("http://{frontend_at_leaders}/v1/cluster")).json();
    let leaders: std::collections::BTreeSet<u64> = cluster_view["regions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|region| region["leader"].as_u64())
        .collect();
    assert_eq!(
        leaders.len(),
        3,
        "regions on every datanode: {cluster_view}"
    );

    let range = |query: &str| {
        (
            "/api/v1/query_range",
            vec![
                ("query", query.to_string()),
                ("start", "60".to_string()),
                ("end", "585".to_string()),
                ("step", "45".to_string()),
            ],
        )
    };
    let instant = |query: &str| {
        (
            "/api/v1/query",
            vec![("query", query.to_string()), ("time", "400".to_string())],
        )
    };
    let queries = [
        range("sum by (job) (rate(requests_total[1m]))"),
        range("topk(3, requests_total)"),
        range("avg_over_time(temperature{job=~\"a.*|w.*\"}[2m])"),
        range("histogram_quantile(0.9, sum by (le) (rate(latency_seconds_bucket[2m])))"),
        range("count(temperature > 25) by (instance)"),
        instant("requests_total{instance=\"i3\"}"),
        instant("max_over_time(temperature[5m]) - min_over_time(temperature[5m])"),
        instant("sort_desc(sum without (instance) (increase(requests_total[3m])))"),
        instant("requests_total[1m]"),
        (
            "/api/v1/series",
            vec![("match[]", "temperature{job=\"db\"}".to_string())],
        ),
        ("/api/v1/labels", vec![]),
        ("/api/v1/label/instance/values", vec![]),
    ];
    for (path, params) in &queries {
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let [alone, clustered] = nodes.map(|node| {
            let reply = get_query(&format!("http://{node}{path}"), &params);
            assert_eq!(
                reply.status, 200,
                "{path} {params:?} on {node}: {}",
                reply.body
            );
            reply.json()
        });
        assert_eq!(alone["status"], "success", "{path} {params:?}: {alone}");
        let at_followers = get_query(&format!("http://{frontend_at_followers}{path}"), &params);
        assert_eq!(
            at_followers.status, 200,
            "{path} {params:?} read at the followers: {}",
            at_followers.body
        );
        assert_eq!(
            alone,
            at_followers.json(),
            "{path} {params:?} at the followers"
        );
        let empty = alone["data"]
            .as_array()
            .map(|data| data.is_empty())
            .or_else(|| {
                alone["data"]["result"]
                    .as_array()
                    .map(|result| result.is_empty())
            });
        assert_eq!(
            empty,
            Some(false),
            "{path} {params:?} finds something: {alone}"
        );
        assert_eq!(alone, clustered, "{path} {params:?}");
    }

    let statements = [
        "SELECT host, round(avg(usage), 2) AS usage FROM cpu GROUP BY host ORDER BY host",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS minute, count(*) AS n, max(usage) AS top \
         FROM cpu GROUP BY minute ORDER BY minute",
        "SELECT * FROM cpu WHERE dc = 'us' ORDER BY ts",
        "SELECT dc, count(DISTINCT host) AS hosts FROM cpu GROUP BY dc ORDER BY dc",
        "SELECT job, max(value) AS top FROM requests_total GROUP BY job ORDER BY job",
    ];
    for statement in statements {
        let [alone, clustered] = nodes.map(|node| {
            let reply = sql_at(node, statement);
            assert_eq!(reply.status, 200, "{statement} on {node}: {}", reply.body);
            reply.json()["output"].clone()
        });
        let rows = &alone[0]["records"]["rows"];
        assert!(
            rows.as_array().is_some_and(|rows| !rows.is_empty()),
            "{statement} finds rows: {alone}"
        );
        assert_eq!(alone, clustered, "{statement}");
        let at_followers = sql_at(frontend_at_followers, statement);
        assert_eq!(
            at_followers.status, 200,
            "{statement}: {}",
            at_followers.body
        );
        assert_eq!(
            alone,
            at_followers.json()["output"],
            "{statement} at the followers"
        );
    }
    stop(at_followers);
    stop(cluster);
}
