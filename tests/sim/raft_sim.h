/* raft_sim.h -- a seeded, deterministic in-memory Raft cluster with a safety checker.
 *
 * The simulator owns every node (a struct raft plus its "disk": a log with a durable prefix and
 * an unsynced tail, and a durable hard state), a virtual clock, and a network of in-flight
 * encoded messages. One run is fully determined by its options (the seed above all), so a
 * failing seed replays exactly; RAFT_SIM_SEED=N in the unit test reruns one seed with a trace.
 *
 * Checked after every step (the first violation ends the run and is described in result.what):
 *  - election safety: at most one leader per term;
 *  - log matching: one (index, term) always names the same entry with the same predecessor term;
 *  - leader completeness: a new leader's log holds every entry committed so far;
 *  - commit durability: an index committed by a leader is durable on a quorum of its voters;
 *  - state machine safety: a node applies only committed entries, each the committed one;
 *  - nothing applied beyond the node's durable log;
 *  - durable before acknowledged: an AppendEntries ack covers only durable entries, a granted
 *    vote is in the durable hard state;
 *  - linearizable reads: a ReadIndex answer is >= every index committed before the read began;
 *  - liveness: after the faults heal, a leader commits a new entry and every member applies it;
 *  - with snapshots: an installed snapshot (and every snapshot taken) equals the committed
 *    prefix, it is the one the leader described, and the raft never asks storage about an
 *    index at or below its snapshot base.
 */
#ifndef AYDER_TESTS_RAFT_SIM_H
#define AYDER_TESTS_RAFT_SIM_H

#include <stdbool.h>
#include <stdint.h>

struct rsim_opts {
    uint64_t seed;
    int n_nodes;        /* initial voters, 1..7 */
    bool membership;    /* grow to 7 voters and shrink back to n_nodes while faults happen */
    int fault_steps;    /* steps with faults before healing; 0 = 1500 */
    int plant;          /* enum raft_plant; 0 = none */
    bool snapshots;     /* compaction, snapshot streams and installs, wiped learners */
    bool trace;         /* print every event to stderr */
};

struct rsim_result {
    bool ok;
    char what[256];     /* first violation */
    uint64_t step;      /* when it happened */
    uint64_t committed; /* highest committed index */
    uint64_t acked;     /* client values acknowledged (committed) */
    uint64_t kills, pauses, partitions, leaders, transfers, reads, conf_changes;
    uint64_t compactions, snapshots_sent, installs, wipes;
};

/* Runs one seed. Returns 0 when every check held (result->ok), -1 on a violation. */
int rsim_run(const struct rsim_opts *o, struct rsim_result *res);

/* Test hook: sets the planted bug (enum raft_plant) of the simulated raft build. */
void rsim_set_plant(int plant);

#endif
