//! When a replica stands for election. openraft 0.9 draws a replica's election timeout
//! once, when the replica starts, and checks it only on its ticks (every 1.5 heartbeat
//! intervals). Two replicas whose timeouts fall in the same tick and whose ticks are less
//! than a vote's round trip apart then stand in every election at the same instant and
//! split the vote forever (standard raft's one vote per term: the simulation found such a
//! pair, seed 115). Raft's remedy is a new random timeout for every election, so this
//! task, not openraft's tick, decides when to stand: openraft's own elections are off
//! (`enable_elect: false`), and [`drive`] triggers one when the replica has heard no
//! leader for a timeout drawn afresh whenever the vote changes or it stands.
//!
//! The rule is otherwise openraft's: a voter that does not lead stands once its vote is
//! older than the timeout, plus the leader's lease when that vote was for a known leader
//! (voters refuse other candidates during that lease anyway), plus twice the longest
//! timeout when a vote reply showed a replica with a longer log since it last stood
//! ([`GreaterLog`]: a replica that cannot win stands back, or its ever higher terms would
//! keep beating the candidates that can). A single voter stands at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metronome_core::rt::{rand, time};
use openraft::{ServerState, Vote};

use super::{MetaRaft, RaftTuning};

/// Set by the raft network when a vote is refused by a replica whose log is longer than
/// the candidate's; read and cleared when the replica next stands.
#[derive(Debug, Clone, Default)]
pub struct GreaterLog(Arc<AtomicBool>);

impl GreaterLog {
    pub fn seen(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_seen(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// What the driver needs of the replica's raft state, read in one visit.
struct Observed {
    leads: bool,
    stands: bool,
    votes: bool,
    voters: usize,
    vote: Vote<u64>,
    /// How long ago the vote last changed or a leader last renewed it.
    vote_age: Option<Duration>,
}

/// A fresh election timeout from `tuning`'s range.
fn draw(tuning: &RaftTuning) -> Duration {
    let min_ms = tuning.election_timeout_min.as_millis() as u64;
    let max_ms = tuning.election_timeout_max.as_millis() as u64;
    assert!(min_ms < max_ms, "an election timeout range is not empty");
    Duration::from_millis(rand::gen_range(min_ms..max_ms))
}

/// Stands replica `id` for election whenever it should, until its raft stops.
pub async fn drive(raft: MetaRaft, id: u64, tuning: RaftTuning, greater_log: GreaterLog) {
    // Often against the timeouts, so that when a replica stands depends on its draw, not
    // on when it polls.
    let poll = tuning.heartbeat_interval / 5;
    let leader_lease = tuning.election_timeout_max;
    let mut timeout = draw(&tuning);
    let mut vote_seen: Option<Vote<u64>> = None;
    loop {
        time::sleep(poll).await;
        let observed = raft
            .with_raft_state(move |state| {
                let voters = state.membership_state.effective().voter_ids().count();
                Observed {
                    leads: state.server_state == ServerState::Leader,
                    stands: state.server_state == ServerState::Candidate,
                    votes: state
                        .membership_state
                        .effective()
                        .voter_ids()
                        .any(|voter| voter == id),
                    voters,
                    vote: *state.vote_ref(),
                    vote_age: state
                        .vote_last_modified()
                        .map(|at| time::now().saturating_duration_since(at.0)),
                }
            })
            .await;
        // The raft stopped (shut down, or a storage error): so does this.
        let Ok(observed) = observed else { return };
        if vote_seen != Some(observed.vote) {
            vote_seen = Some(observed.vote);
            timeout = draw(&tuning);
        }
        // A single voter's own election completes at once; openraft does not start
        // another while one is under way, nor does this.
        if observed.leads || !observed.votes || (observed.voters == 1 && observed.stands) {
            continue;
        }
        let mut due = if observed.voters == 1 {
            poll
        } else if observed.vote.is_committed() {
            leader_lease + timeout
        } else {
            timeout
        };
        if observed.voters > 1 && greater_log.is_seen() {
            due += 2 * tuning.election_timeout_max;
        }
        if observed.vote_age.is_some_and(|age| age < due) {
            continue;
        }
        tracing::info!(
            replica = id,
            term = observed.vote.leader_id().term,
            timeout_ms = due.as_millis() as u64,
            "no leader heard within the election timeout: standing for election"
        );
        greater_log.clear();
        if raft.trigger().elect().await.is_err() {
            return;
        }
        timeout = draw(&tuning);
    }
}
