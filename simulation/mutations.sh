#!/usr/bin/env bash
# Plants known bugs, one at a time, and shows that the simulation catches each within a
# number of seeds (100 by default): the check that the simulation's invariants can fail.
#
#   bash simulation/mutations.sh [seeds]
#
# First the same seeds run unmutated and must pass (else a "catch" could be a flake).
# Each mutation is a literal replacement in one source file; the file is restored after
# the run, whatever its outcome, Ctrl-C included. The files must have no uncommitted
# changes.
set -uo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-100}"
target="${METRONOME_CI_CACHE:-/var/tmp/metronome-ci}/target-madsim"

# name | file | test | text to replace | replacement
mutations=(
"ack-before-commit|metasrv/src/service.rs|metasrv_raft|        let committed = time::timeout(QUORUM_WAIT_MAX, self.raft.client_write(command))|        // MUTATION: answer once the command is proposed, before raft commits it.
        if let Ok(receiver) = self.raft.client_write_ff(command.clone()).await {
            drop(receiver);
            return Ok((self.state.catalog().version, true));
        }
        let committed = time::timeout(QUORUM_WAIT_MAX, self.raft.client_write(command))"
"stale-read|metasrv/src/service.rs|metasrv_raft|        let confirmed = time::timeout(QUORUM_WAIT_MAX, self.raft.ensure_linearizable())|        // MUTATION: serve the catalog from whichever replica is asked, as it stands.
        let confirmed = time::timeout(QUORUM_WAIT_MAX, async {
            Ok::<_, RaftError<u64, openraft::error::CheckIsLeaderError<u64, BasicNode>>>(
                None::<openraft::LogId<u64>>,
            )
        })"
"purge-past-snapshot|metasrv/src/raft/log_store.rs|metasrv_raft|        let durable = self.snapshot.get();|        // MUTATION: purge what openraft asks, whether or not a snapshot on disk covers it.
        let durable = Some(log_id);"
"write-after-lease|catalog/src/lease.rs|cluster|        if now >= held.until {|        // MUTATION: a lapsed lease still admits requests.
        if false && now >= held.until {"
"lease-without-drift-margin|datanode/src/lease.rs|clock_skew|        let renewal = held.renew(sent_at, grants, LEASE_HELD);|        // MUTATION: hold a lease for all of LEASE on a clock that may run slow.
        let renewal = held.renew(sent_at, grants, metronome_catalog::lease::LEASE);"
"ack-after-leader-fsync-only|datanode/src/engine/replica.rs|cluster|    for follower in std::mem::take(&mut ticket.acked) {|    // MUTATION: acknowledge once the leader's WAL has the write, not waiting for followers.
    for follower in std::mem::take(&mut ticket.acked).into_iter().take(0) {"
"add-tags-twice|datanode/src/engine/lifecycle.rs|cluster|            schema.tags.extend_from_slice(&tags[present..]);|            // MUTATION: add every tag asked for, even those another frontend added first.
            schema.tags.extend_from_slice(&tags);"
"append-not-durable|metasrv/src/raft/log_store.rs|metasrv_raft|        match self.record(LogEdit::Append(entries)).await {|        // MUTATION: the entries are kept in memory only, and reported durable.
        let kept = {
            self.memory.lock().expect(\"raft log\").apply(LogEdit::Append(entries));
            Ok::<(), io::Error>(())
        };
        match kept {"
"promote-before-caught-up|datanode/src/catch_up.rs|cluster|    learner.is_none_or(Outbox::is_empty) && shared.queued_writes(region) == 0|    // MUTATION: make the learner a follower without waiting for what it lacks.
    true"
"switch-without-gate|datanode/src/catch_up.rs|cluster|    shared.leases.set_gate(region, true);|    // MUTATION: let writes in while the configuration changes (a hand-over, a new follower).
    shared.leases.set_gate(region, false);"
"accept-a-stale-epoch|datanode/src/lease.rs|divergent_tail|            match held {
                Some(held) if held == epoch => return Ok(()),|            // MUTATION: a follower takes a shipment of an older epoch than its own.
            match held {
                Some(held) if held >= epoch => return Ok(()),"
"replay-below-the-install-floor|datanode/src/engine/recovery.rs|divergent_tail|    if commit < region.manifest.wal_commit_floor {|    // MUTATION: a replaced copy's records replay (Kafka's truncation by high watermark).
    if false && commit < region.manifest.wal_commit_floor {"
"keep-a-replaced-disks-copies|catalog/src/placement.rs|cluster|        if known != 0 && incarnation != 0 && known != incarnation {|        // MUTATION: a datanode back with an empty disk keeps the copies it lost.
        if false && known != 0 && incarnation != 0 && known != incarnation {"
)

run() {
    MADSIM_TEST_SEED=1 MADSIM_TEST_NUM="$seeds" RUSTFLAGS="--cfg madsim" \
        cargo test -q -p metronome-simulation --test "$1" --target-dir "$target" 2>&1
}

mutated=""
restore() {
    if [[ -n "$mutated" ]]; then
        git checkout -q -- "$mutated"
        mutated=""
    fi
}
trap restore EXIT
trap 'restore; exit 130' INT TERM

tests=()
for mutation in "${mutations[@]}"; do
    IFS='|' read -r -d '' _ _ test _ <<<"$mutation"
    [[ " ${tests[*]} " == *" $test "* ]] || tests+=("$test")
done
for test in "${tests[@]}"; do
    if ! baseline=$(run "$test"); then
        echo "baseline: $test fails unmutated within $seeds seeds; fix that first" >&2
        grep -m1 -A1 "panicked at" <<<"$baseline" >&2
        exit 2
    fi
    echo "baseline: $test passes $seeds seeds unmutated"
done

status=0
for mutation in "${mutations[@]}"; do
    IFS='|' read -r -d '' name file test old new <<<"$mutation"
    if ! git diff --quiet -- "$file"; then
        echo "mutation $name: $file has uncommitted changes; commit them first" >&2
        exit 2
    fi
    mutated="$file"
    python3 - "$file" "$old" "$new" <<'PY' || { echo "mutation $name: the text to replace is gone from $file" >&2; exit 2; }
import sys
path, old, new = sys.argv[1:4]
new = new.removesuffix("\n")
text = open(path).read()
if old not in text:
    sys.exit(1)
open(path, "w").write(text.replace(old, new, 1))
PY
    output=$(run "$test")
    restore
    seed=$(grep -oE 'MADSIM_TEST_SEED=[0-9]+' <<<"$output" | tail -1 | cut -d= -f2)
    if [[ -n "$seed" ]]; then
        reason=$(grep -m1 -A1 "panicked at" <<<"$output" | tail -1 | cut -c1-160)
        echo "mutation $name: caught at seed $seed: $reason"
    elif grep -q "could not compile" <<<"$output"; then
        echo "mutation $name: does not compile"; grep -m3 -A5 "^error" <<<"$output"
        status=1
    else
        echo "mutation $name: NOT caught in $seeds seeds"
        status=1
    fi
done
exit $status
