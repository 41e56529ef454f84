//! The whole-cluster simulation's checks once every fault healed: liveness, every
//! acknowledged sample read back, writes only under leases and one writer per region
//! and epoch, every follower reported by its leader with no write left queued for it,
//! each follower's copy equal to its leader's, one metasrv leader per term.

use super::*;
use metronome_frontend::cluster_view::ClusterView;
use metronome_wire::CopyLag;

/// How long after the writers stopped every follower may still be reported behind.
const LAG_WAIT_MAX: Duration = Duration::from_secs(30);

/// A copy's rows: (series tags, timestamp) to the values, as text.
type Rows = BTreeMap<(Vec<String>, i64), String>;

/// The checks once every fault healed.
pub(super) async fn check_after_healing(
    history: Shared,
    slots: Vec<FrontendSlot>,
    handles: cluster::DatanodeHandles,
    faults: Vec<String>,
) {
    // What the writers attempted from here on is not checked: they stop (a write in
    // flight was recorded as attempted before it left, and is indeterminate).
    history.lock().unwrap().stopped = true;
    // Liveness: a write through each frontend succeeds within the bound.
    let healed = time::now();
    for (index, slot) in slots.iter().enumerate() {
        let frontend = frontend(slot, RECOVERY_MAX).await;
        let batch = series("sim_after_heal", &format!("check{index}"), 0);
        loop {
            match time::timeout(WRITE_TIMEOUT, frontend.store.write(&batch)).await {
                Ok(Ok(_)) => break,
                outcome => assert!(
                    time::now().duration_since(healed) < RECOVERY_MAX,
                    "no write through frontend {} succeeded {RECOVERY_MAX:?} after the \
                     faults healed: {outcome:?}; faults {faults:?}",
                    index + 1
                ),
            }
            time::sleep(Duration::from_millis(200)).await;
        }
    }
    let elapsed = time::now().duration_since(healed);
    eprintln!("cluster_recovery_ms={}", elapsed.as_millis());

    let history = {
        let mut shared = history.lock().unwrap();
        let taken = std::mem::take(&mut *shared);
        // The writers that were in a write when they were told to stop must still see it.
        shared.stopped = true;
        taken
    };
    let writes = history.observed.iter().filter(|s| s.write).count();
    let refused = history
        .observed
        .iter()
        .filter(|s| s.write && !s.succeeded)
        .count();
    eprintln!(
        "cluster_samples_acknowledged={} attempted={} metrics={} datanode_writes={writes} \
         refused={refused} cut_offs={}",
        history.acknowledged.len(),
        history.attempted.len(),
        history.metrics.len(),
        history.cut_off.len()
    );
    let follower_reads = history
        .observed
        .iter()
        .filter(|seen| seen.follower && seen.succeeded)
        .count();
    eprintln!("cluster_follower_reads={follower_reads}");
    assert!(
        history.stale_reads.is_empty(),
        "{} reads missed a write their frontend had just had acknowledged, first {:?}; \
         faults {faults:?}",
        history.stale_reads.len(),
        history.stale_reads.first()
    );
    assert!(
        history.refused_as_invalid.is_empty(),
        "valid writes were refused as invalid (a 400: Prometheus would drop them): {:?}; \
         faults {faults:?}",
        &history.refused_as_invalid[..history.refused_as_invalid.len().min(3)]
    );
    assert!(
        history.acknowledged.len() >= PROGRESS_MIN,
        "the writers made progress: {} samples acknowledged; faults {faults:?}",
        history.acknowledged.len()
    );
    // Every acknowledged sample reads back through either frontend; nothing else does.
    for slot in &slots {
        let frontend = frontend(slot, RECOVERY_MAX).await;
        let mut read: BTreeMap<SampleKey, f64> = BTreeMap::new();
        for metric in &history.metrics {
            let samples = loop {
                match read_back(&frontend, metric).await {
                    Ok(samples) => break samples,
                    Err(error) => assert!(
                        time::now().duration_since(healed) < 2 * RECOVERY_MAX,
                        "reading {metric} back fails: {error}; faults {faults:?}"
                    ),
                }
                time::sleep(Duration::from_millis(200)).await;
            };
            read.extend(samples);
        }
        let lost: Vec<&SampleKey> = history
            .acknowledged
            .iter()
            .filter(|key| read.get(*key) != history.attempted.get(*key))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged samples do not read back as written, first {:?}; faults {faults:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let phantoms: Vec<(&SampleKey, &f64)> = read
            .iter()
            .filter(|(key, value)| history.attempted.get(*key) != Some(*value))
            .collect();
        assert!(
            phantoms.is_empty(),
            "samples no one wrote read back: {:?} (attempted as {:?}); faults {faults:?}",
            &phantoms[..phantoms.len().min(5)],
            phantoms
                .iter()
                .take(5)
                .map(|(key, _)| history.attempted.get(*key))
                .collect::<Vec<_>>()
        );
    }

    // A datanode cut off from every metasrv replica cannot renew its leases: from a lease
    // after the cut began until it heals, it completes no write. (A write in progress
    // when the cut heals may complete under a lease renewed since: the simulated network
    // holds what was sent into a cut link, as TCP would, and delivers it once it heals.)
    for (datanode, from, to) in &history.cut_off {
        let late: Vec<&Observed> = history
            .observed
            .iter()
            .filter(|seen| {
                seen.write
                    && seen.succeeded
                    && seen.datanode == *datanode
                    && seen.finished > *from + LEASE
                    && seen.finished < *to
            })
            .collect();
        assert!(
            late.is_empty(),
            "datanode {datanode}, cut off from the metasrv from {from:?} to {to:?}, completed \
             {} writes after its lease could have run out, first {:?}",
            late.len(),
            late.first()
        );
    }
    // Every write completed under a lease the metasrv granted: a heartbeat from its
    // datanode, answered with its region at its epoch, received less than a lease before
    // the write completed (the lease, counted from the heartbeat's sending on a clock
    // that may run slow, ran out in real time before the heartbeat's arrival plus a
    // lease). This is what a clock without the leases' drift margin breaks.
    let mut grants: BTreeMap<u64, Vec<&Granted>> = BTreeMap::new();
    for granted in &history.granted {
        grants.entry(granted.datanode).or_default().push(granted);
    }
    for seen in history.observed.iter().filter(|s| s.write && s.succeeded) {
        let under_lease = grants.get(&seen.datanode).is_some_and(|grants| {
            grants.iter().any(|granted| {
                granted.received < seen.finished
                    && seen.finished < granted.received + LEASE
                    && granted.leases.contains(&(seen.region, seen.epoch))
            })
        });
        assert!(
            under_lease,
            "a write to region {} completed on datanode {} at {:?} under no lease granted in \
             the {LEASE:?} before; faults {faults:?}",
            seen.region, seen.datanode, seen.finished
        );
    }
    // No two datanodes complete writes to one region at overlapping times.
    let mut by_region: BTreeMap<RegionId, Vec<&Observed>> = BTreeMap::new();
    for seen in history.observed.iter().filter(|s| s.write && s.succeeded) {
        by_region.entry(seen.region).or_default().push(seen);
    }
    for (region, writes) in &by_region {
        for (i, a) in writes.iter().enumerate() {
            for b in &writes[i + 1..] {
                let overlap = a.started < b.finished && b.started < a.finished;
                assert!(
                    a.datanode == b.datanode || !overlap,
                    "datanodes {} and {} both wrote region {region} at once",
                    a.datanode,
                    b.datanode
                );
            }
        }
    }
    // An epoch has one leader: the writes completed at one (region, epoch) were all
    // one datanode's, and none at an epoch the region has not reached.
    let frontend = frontend(&slots[0], RECOVERY_MAX).await;
    let catalog = frontend
        .meta
        .refresh()
        .await
        .expect("the catalog after healing");
    let epochs: BTreeMap<RegionId, u64> = catalog
        .routes()
        .map(|(region, route)| (region, route.epoch))
        .collect();
    let mut leaders: BTreeMap<(RegionId, u64), u64> = BTreeMap::new();
    for seen in history.observed.iter().filter(|s| s.write && s.succeeded) {
        let leader = *leaders
            .entry((seen.region, seen.epoch))
            .or_insert(seen.datanode);
        assert_eq!(
            leader, seen.datanode,
            "datanodes {leader} and {} both completed writes to region {} at epoch {}",
            seen.datanode, seen.region, seen.epoch
        );
        assert!(
            epochs
                .get(&seen.region)
                .is_some_and(|epoch| *epoch >= seen.epoch),
            "a write completed on datanode {} at epoch {} for region {}, which is at {:?}",
            seen.datanode,
            seen.epoch,
            seen.region,
            epochs.get(&seen.region)
        );
    }
    // Once the writes in flight settled, every follower of a region holds every
    // acknowledged sample its leader holds (a leader acknowledges only what every member
    // of its configuration made durable) and nothing its leader lacks (a leader ships
    // only what its own WAL made durable). A write the leader made durable but never
    // shipped (a power cut before its sync, whose write survived it) may be on the
    // leader alone until catch-up exists: it was never acknowledged.
    time::sleep(WRITE_TIMEOUT + FOLLOWER_REMOVAL_AFTER).await;
    // Every region gets back the copies it wants: the metasrv gives it a learner, which
    // its leader catches up and makes a follower (checked below like any follower).
    let repairing = time::now();
    let catalog = loop {
        let catalog = frontend
            .meta
            .refresh()
            .await
            .expect("the catalog after the writes settled");
        // A copy its datanode found damaged stays there, quarantined, until the disk is
        // replaced (a known limit: an install cannot replace it), so a region wanting a
        // copy on every datanode stays short of that one meanwhile.
        let quarantined: BTreeSet<(u64, RegionId)> = frontend
            .meta
            .liveness()
            .await
            .map(|liveness| liveness.quarantined.into_iter().collect())
            .unwrap_or_default();
        let short: Vec<(RegionId, metronome_catalog::Route)> = catalog
            .routes()
            .filter(|(region, route)| {
                let placeable = catalog
                    .datanodes
                    .keys()
                    .filter(|id| !route.holds(**id) && !quarantined.contains(&(**id, *region)))
                    .count();
                route.replicas().count()
                    < route
                        .replicas_wanted()
                        .min(route.replicas().count() + placeable)
            })
            .collect();
        if short.is_empty() {
            break catalog;
        }
        assert!(
            time::now().duration_since(repairing) < REPAIR_MAX,
            "regions still lack copies {REPAIR_MAX:?} after the faults healed: {short:?}; \
             faults {faults:?}"
        );
        time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "cluster_repair_ms={}",
        time::now().duration_since(repairing).as_millis()
    );
    // Every follower's lag, as its leader reports it through a frontend (the path of
    // `information_schema.region_peers` and `/metrics`): each follower the catalog
    // names is reported by its leader at the route's epoch, and with the writers
    // stopped, none keeps a write queued.
    let reporting = time::now();
    loop {
        let catalog = frontend.meta.refresh().await.expect("the catalog");
        let figures = frontend.datanodes.replication().await;
        let fenced = figures.iter().fold((0, 0), |(writes, shipments), (_, f)| {
            (writes + f.fenced_writes, shipments + f.fenced_shipments)
        });
        let view = ClusterView::of(&catalog, Vec::new(), &[]).with_replication(figures);
        let behind: Vec<(RegionId, u64, Option<CopyLag>)> = view
            .regions
            .iter()
            .flat_map(|r| r.followers.iter().map(move |f| (r, f.datanode)))
            .map(|(r, follower)| (r.region, follower, view.lag(r, follower)))
            .filter(|(.., lag)| lag.as_ref().is_none_or(|lag| lag.writes > 0))
            .collect();
        if behind.is_empty() {
            // Since each datanode last started: a measure of how often fencing acted.
            println!("cluster_fenced_writes={} shipments={}", fenced.0, fenced.1);
            break;
        }
        assert!(
            time::now().duration_since(reporting) < LAG_WAIT_MAX,
            "{LAG_WAIT_MAX:?} after the writers stopped, followers are unreported or behind \
             (region, follower, lag): {:?}; faults {faults:?}",
            &behind[..behind.len().min(5)]
        );
        time::sleep(Duration::from_millis(200)).await;
    }
    let mut compared = 0;
    for (region, route) in catalog.routes() {
        let mut copies: Vec<(u64, Rows)> = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        for replica in route.replicas() {
            let handle = handles.lock().unwrap().get(&replica.datanode).cloned();
            let handle = handle.expect("every datanode started");
            let unreadable = |error: metronome_datanode::engine::EngineError| -> ! {
                panic!(
                    "region {region} on datanode {}: {error}; faults {faults:?}",
                    replica.datanode
                )
            };
            if columns.is_empty() {
                columns = handle
                    .schema(region)
                    .await
                    .unwrap_or_else(|e| unreadable(e))
                    .tags;
            }
            let series = handle
                .scan_series(region, metronome_core::data::ScanRequest::all())
                .await
                .unwrap_or_else(|e| unreadable(e));
            let mut rows = BTreeMap::new();
            for mut one in series {
                while one.tags.last().is_some_and(String::is_empty) {
                    one.tags.pop();
                }
                for (ts, values) in one.rows {
                    rows.insert((one.tags.clone(), ts), format!("{values:?}"));
                }
            }
            copies.push((replica.datanode, rows));
        }
        let column = |label: &str| {
            columns
                .iter()
                .position(|c| c == metronome_catalog::metric_column(label).as_ref())
        };
        let (name, k, writer) = (column("__name__"), column("k"), column("writer"));
        let acknowledged = |tags: &[String], ts: i64| {
            let at = |i: Option<usize>| i.and_then(|i| tags.get(i)).cloned().unwrap_or_default();
            history
                .acknowledged
                .contains(&(at(name), at(writer), at(k), ts))
        };
        let (leader, leader_rows) = &copies[0];
        for (follower, rows) in &copies[1..] {
            compared += 1;
            let extra = rows
                .iter()
                .find(|(key, value)| leader_rows.get(*key) != Some(value));
            assert!(
                extra.is_none(),
                "region {region}: the follower on datanode {follower} holds {extra:?}, which \
                 its leader on datanode {leader} does not; faults {faults:?}"
            );
            let missing = leader_rows.iter().find(|((tags, ts), _)| {
                acknowledged(tags, *ts) && !rows.contains_key(&(tags.clone(), *ts))
            });
            assert!(
                missing.is_none(),
                "region {region}: the follower on datanode {follower} lacks the acknowledged \
                 {missing:?} its leader on datanode {leader} holds; faults {faults:?}"
            );
        }
    }
    // Failover time: from a leader's kill to the first write completed on the region's
    // next leader.
    let mut failover_ms = Vec::new();
    for (dead, at) in &history.killed {
        // The regions it led when it died: their last write before was its.
        let mut last: BTreeMap<RegionId, (Instant, u64)> = BTreeMap::new();
        for s in &history.observed {
            if s.write && s.succeeded && s.finished < *at {
                let entry = last.entry(s.region).or_insert((s.finished, s.datanode));
                if s.finished > entry.0 {
                    *entry = (s.finished, s.datanode);
                }
            }
        }
        let led: BTreeSet<RegionId> = last
            .into_iter()
            .filter(|(_, (_, datanode))| datanode == dead)
            .map(|(region, _)| region)
            .collect();
        for region in led {
            if let Some(next) = history
                .observed
                .iter()
                .filter(|s| {
                    s.write
                        && s.succeeded
                        && s.region == region
                        && s.datanode != *dead
                        && s.finished > *at
                })
                .map(|s| s.finished)
                .min()
            {
                failover_ms.push(next.duration_since(*at).as_millis());
            }
        }
    }
    failover_ms.sort_unstable();
    println!("cluster_failover_ms={failover_ms:?}");
    let reconfigured = epochs.values().filter(|epoch| **epoch > 1).count();
    println!("cluster_regions_reconfigured={reconfigured} copies_compared={compared}");
    // At most one metasrv leader per term.
    for (term, leaders) in &history.leaders {
        assert!(
            leaders.len() == 1,
            "term {term} saw metasrv leaders {leaders:?}"
        );
    }
}
