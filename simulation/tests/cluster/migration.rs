//! The whole-cluster simulation's operator migration with the metasrv leader killed after
//! each of its persisted steps (the issue's "a migration running while the metasrv leader
//! dies completes or rolls back, never both").

use super::*;

/// How long the fault watches a migration.
const WATCH_MAX: Duration = Duration::from_secs(90);

/// Migrates a region (the `pick`th the frontend in `slot` knows) to datanode `to` with
/// `ADMIN migrate_region`'s code, and power-cycles the metasrv leader each time the
/// region's route changes — each persisted step: the migration recorded, its learner
/// added, made a follower, the hand-over, a cancellation — until the migration answers.
/// Whether it completed is the admin call's answer: it answers success only once the
/// route names `to` as the leader, and every other fault's checks (nothing acknowledged
/// lost, one writer per epoch) run after. Returns what happened, for the fault list.
pub(super) async fn migrate_killing_metasrv_leaders(
    metasrvs: &[SimNode],
    checker: &SimNode,
    slot: FrontendSlot,
    to: u64,
    pick: usize,
) -> String {
    let outcome: Arc<Mutex<Option<String>>> = Arc::default();
    let region = {
        let slot = slot.clone();
        checker
            .handle()
            .spawn(async move {
                let frontend = frontend(&slot, RECOVERY_MAX).await;
                let regions: Vec<RegionId> =
                    frontend.meta.catalog().routes().map(|(r, _)| r).collect();
                regions[pick % regions.len()]
            })
            .await
            .unwrap()
    };
    {
        let outcome = outcome.clone();
        checker.handle().spawn(async move {
            let frontend = frontend(&slot, RECOVERY_MAX).await;
            let migrated = time::timeout(
                Duration::from_secs(60),
                metronome_frontend::admin::migrate_region(&frontend.meta, region, to),
            )
            .await;
            let text = match migrated {
                Ok(Ok(migrated)) => format!("completed at epoch {}", migrated.epoch),
                Ok(Err(error)) => format!("refused: {error}"),
                Err(_) => "unanswered within 60 s".to_string(),
            };
            *outcome.lock().unwrap() = Some(text);
        });
    }
    let started = time::now();
    let mut seen: Option<metronome_catalog::Route> = None;
    let mut kills = 0;
    while outcome.lock().unwrap().is_none() && time::now().duration_since(started) < WATCH_MAX {
        let route = checker
            .handle()
            .spawn(async move {
                let catalog = cluster::meta_client(METASRVS).catalog().await.ok()?;
                catalog.route(region)
            })
            .await
            .unwrap();
        if let Some(route) = route {
            if seen.is_some_and(|before| before != route) {
                // A step persisted: the replica that committed it goes down at once.
                if let Some(leader) = checker.handle().spawn(metasrv_leader()).await.unwrap() {
                    metasrvs[leader as usize - 1].power_cycle();
                    kills += 1;
                }
            }
            seen = Some(route);
        }
        time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = outcome.lock().unwrap().clone();
    format!(
        "a migration of region {region} to datanode {to} with the metasrv leader killed after \
         each of its {kills} steps seen: {}",
        outcome.unwrap_or_else(|| format!("still running after {WATCH_MAX:?}"))
    )
}
