//! Region leases: which regions a datanode may serve, at which epoch, and until when,
//! without hearing from the metasrv again. Plain code over plain data, instants passed in.
//!
//! The rule (GreptimeDB's): a datanode heartbeats every [`HEARTBEAT_INTERVAL`]; the
//! metasrv's leader answers, once it confirmed with a quorum that it still leads, with
//! every region the catalog routes to that datanode and the route's epoch. The datanode
//! then holds each listed region for [`LEASE`] (three heartbeats and a second), counted on
//! its own clock from when it *sent* the heartbeat and shortened by the drift that clock
//! may have ([`LEASE_HELD`]): the lease ends before the metasrv, which counts from later
//! (when the heartbeat arrived), could believe it ended. A region
//! not listed is not held; a lease that was not renewed in time lapses, and the datanode
//! refuses the region's writes and reads from then on ([`RegionLeases::check`]), so a
//! datanode cut off from the metasrv stops serving before the metasrv could give its
//! regions to another. A request names the epoch of the route it followed; one that
//! followed an older route is refused, so its sender reads the catalog again.
//!
//! Epochs grow when a region's route changes: a route is created at [`FIRST_EPOCH`], and
//! moving a region (failover, migration) gives it the next.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use metronome_core::data::RegionId;

/// How often a datanode heartbeats to the metasrv.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// How long a datanode holds its regions after the heartbeat that renewed them was sent:
/// three heartbeats and a second, so one or two lost heartbeats cost nothing.
pub const LEASE: Duration = Duration::from_secs(3 * 5 + 1);

const _: () = assert!(LEASE.as_millis() == 3 * HEARTBEAT_INTERVAL.as_millis() + 1000);

/// How much slower than real time a datanode's monotonic clock may run, in parts per
/// million, without a lease outliving what the metasrv counts: 1 %, a hundred times a
/// quartz's worst and past what NTP slews (500 ppm). The simulation drifts clocks this far.
pub const CLOCK_DRIFT_PPM_MAX: u64 = 10_000;

/// How long a datanode holds a lease on its own clock: [`LEASE`] less the drift its clock
/// may have, so that the lease has ended in real time by the time [`LEASE`] has passed
/// (a clock 1 % slow counts 15.84 s in 16 s). Whoever waits for a lease to end (a move of
/// the region) counts [`LEASE`] on a clock that may itself run fast: that wait adds
/// the same margin the other way.
pub const LEASE_HELD: Duration = Duration::from_millis(
    (LEASE.as_millis() as u64) * (1_000_000 - CLOCK_DRIFT_PPM_MAX) / 1_000_000,
);

const _: () = assert!(LEASE_HELD.as_millis() == 15_840);

/// A datanode is alive, for the metasrv and for whoever asks it, while its last heartbeat
/// is at most a lease old: past that, it holds no region.
pub const ALIVE_SINCE_HEARTBEAT_MAX: Duration = LEASE;

/// The epoch a route is created at.
pub const FIRST_EPOCH: u64 = 1;

/// Regions one heartbeat reply may grant: far more than a datanode serves.
pub const LEASES_PER_REPLY_MAX: usize = 1 << 20;

/// A region granted at an epoch.
pub type Grant = (RegionId, u64);

/// Why a datanode will not serve a region now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The metasrv does not route the region here (or has not said so yet).
    #[error("datanode holds no lease on region {region}: the metasrv routes it elsewhere")]
    NotHeld { region: RegionId },
    /// The datanode has not heard from the metasrv since it started.
    #[error("datanode has not heard from the metasrv yet, so holds no lease on region {region}")]
    Unheard { region: RegionId },
    /// The lease was not renewed in time: the metasrv may be unreachable.
    #[error(
        "the lease on region {region} lapsed {lapsed_ms} ms ago: this datanode has not \
         heard from the metasrv"
    )]
    Lapsed { region: RegionId, lapsed_ms: u64 },
    /// The request followed a route of another epoch than the one held.
    #[error("region {region} is at epoch {held} here, the request expected epoch {asked}")]
    OtherEpoch {
        region: RegionId,
        asked: u64,
        held: u64,
    },
}

impl Refusal {
    /// Whether the sender should read the catalog again (its route is not this datanode's
    /// lease), rather than try again later (the datanode cannot reach the metasrv).
    pub fn is_wrong_route(&self) -> bool {
        !matches!(self, Refusal::Lapsed { .. } | Refusal::Unheard { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    epoch: u64,
    until: Instant,
}

/// What [`RegionLeases::renew`] did with a reply's grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Taken,
    /// The reply answered a heartbeat older than the latest renewal's.
    Outdated,
}

/// The leases one datanode holds.
#[derive(Debug, Clone, Default)]
pub struct RegionLeases {
    held: BTreeMap<RegionId, Held>,
    /// When the heartbeat behind the latest renewal was sent.
    renewed_sent_at: Option<Instant>,
}

impl RegionLeases {
    /// Takes the grants of the reply to a heartbeat sent at `sent_at`: exactly the regions
    /// listed are held, each until `sent_at + lease`. A reply to a heartbeat older than the
    /// latest renewal's is ignored (replies may arrive out of order), and so is one that
    /// contradicts what is held (the grants come from the network: a metasrv that sent
    /// them is wrong, and the leases held run out rather than the datanode trusting it).
    pub fn renew(
        &mut self,
        sent_at: Instant,
        grants: &[Grant],
        lease: Duration,
    ) -> Result<Renewal, String> {
        if self.renewed_sent_at.is_some_and(|latest| sent_at < latest) {
            return Ok(Renewal::Outdated);
        }
        if grants.len() > LEASES_PER_REPLY_MAX {
            return Err(format!(
                "{} region leases in one reply, more than {LEASES_PER_REPLY_MAX}",
                grants.len()
            ));
        }
        let until = sent_at + lease;
        let mut held = BTreeMap::new();
        for &(region, epoch) in grants {
            if epoch < FIRST_EPOCH {
                return Err(format!("region {region} granted at epoch {epoch}"));
            }
            // A metasrv leader grants from a catalog at least as new as the one an
            // earlier leader granted from (it confirmed its leadership first), and epochs
            // only grow.
            if let Some(before) = self.held.get(&region).filter(|b| epoch < b.epoch) {
                return Err(format!(
                    "region {region} granted at epoch {epoch}, below the epoch {} held",
                    before.epoch
                ));
            }
            if held.insert(region, Held { epoch, until }).is_some() {
                return Err(format!("region {region} granted twice in one reply"));
            }
        }
        self.held = held;
        self.renewed_sent_at = Some(sent_at);
        Ok(Renewal::Taken)
    }

    /// Whether the datanode may serve a request for `region` that followed a route at
    /// `epoch`, at `now`.
    pub fn check(&self, region: RegionId, epoch: u64, now: Instant) -> Result<(), Refusal> {
        if self.renewed_sent_at.is_none() {
            return Err(Refusal::Unheard { region });
        }
        let held = self.held.get(&region).ok_or(Refusal::NotHeld { region })?;
        if held.epoch != epoch {
            return Err(Refusal::OtherEpoch {
                region,
                asked: epoch,
                held: held.epoch,
            });
        }
        if now >= held.until {
            return Err(Refusal::Lapsed {
                region,
                lapsed_ms: now.duration_since(held.until).as_millis() as u64,
            });
        }
        Ok(())
    }

    /// The epoch the latest renewal granted `region` at, whether or not its lease has
    /// lapsed since.
    pub fn granted_epoch(&self, region: RegionId) -> Option<u64> {
        self.held.get(&region).map(|held| held.epoch)
    }

    /// The regions held, with their epochs, for introspection.
    pub fn held(&self) -> impl Iterator<Item = Grant> + '_ {
        self.held.iter().map(|(region, held)| (*region, held.epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(number: u32) -> RegionId {
        RegionId::new(7, number)
    }

    #[test]
    fn a_lease_runs_from_when_the_heartbeat_was_sent() {
        let start = metronome_core::rt::time::now();
        let mut leases = RegionLeases::default();
        // Before any reply, nothing is held, and the datanode says why: not a wrong route.
        let unheard = leases.check(region(0), FIRST_EPOCH, start).unwrap_err();
        assert_eq!(unheard, Refusal::Unheard { region: region(0) });
        assert!(!unheard.is_wrong_route());
        // The reply arrives a second after the heartbeat left.
        assert_eq!(
            leases.renew(start, &[(region(0), FIRST_EPOCH)], LEASE),
            Ok(Renewal::Taken)
        );
        let replied = start + Duration::from_secs(1);
        assert_eq!(leases.check(region(0), FIRST_EPOCH, replied), Ok(()));
        let last = start + LEASE - Duration::from_millis(1);
        assert_eq!(leases.check(region(0), FIRST_EPOCH, last), Ok(()));
        assert!(matches!(
            leases.check(region(0), FIRST_EPOCH, start + LEASE),
            Err(Refusal::Lapsed { lapsed_ms: 0, .. })
        ));
        assert!(!leases
            .check(region(0), FIRST_EPOCH, start + LEASE)
            .unwrap_err()
            .is_wrong_route());
    }

    #[test]
    fn a_renewal_replaces_the_regions_held_and_older_replies_are_ignored() {
        let start = metronome_core::rt::time::now();
        let later = start + Duration::from_secs(5);
        let mut leases = RegionLeases::default();
        assert_eq!(
            leases.renew(later, &[(region(1), 2)], LEASE),
            Ok(Renewal::Taken)
        );
        // The reply to the earlier heartbeat arrives late: it changes nothing.
        assert_eq!(
            leases.renew(start, &[(region(0), 1), (region(1), 2)], LEASE),
            Ok(Renewal::Outdated)
        );
        assert_eq!(
            leases.check(region(0), 1, later),
            Err(Refusal::NotHeld { region: region(0) })
        );
        // A request that followed an older route is refused, naming both epochs.
        let refusal = leases.check(region(1), 1, later).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::OtherEpoch {
                region: region(1),
                asked: 1,
                held: 2
            }
        );
        assert!(refusal.is_wrong_route());
        // A region no longer listed is no longer held.
        assert_eq!(
            leases.renew(later + Duration::from_secs(5), &[], LEASE),
            Ok(Renewal::Taken)
        );
        assert_eq!(leases.held().count(), 0);
    }

    #[test]
    fn grants_that_contradict_the_leases_held_are_refused_whole() {
        let start = metronome_core::rt::time::now();
        let next = start + Duration::from_secs(5);
        let mut leases = RegionLeases::default();
        leases
            .renew(start, &[(region(0), 3), (region(1), 1)], LEASE)
            .unwrap();
        let back = leases.renew(next, &[(region(0), 2)], LEASE).unwrap_err();
        assert!(back.contains("below the epoch 3"), "{back}");
        let twice = leases
            .renew(next, &[(region(1), 1), (region(1), 1)], LEASE)
            .unwrap_err();
        assert!(twice.contains("twice"), "{twice}");
        let zero = leases.renew(next, &[(region(2), 0)], LEASE).unwrap_err();
        assert!(zero.contains("epoch 0"), "{zero}");
        // What was held stays held, until its own lease runs out.
        assert_eq!(leases.check(region(0), 3, next), Ok(()));
        assert_eq!(leases.check(region(1), 1, next), Ok(()));
    }
}
