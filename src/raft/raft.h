/* raft.h -- the Raft consensus state machine: pure, deterministic, single-threaded.
 *
 * What this module owns: the consensus state of one node (term, vote, role, commit index, the
 * membership configuration, per-follower replication progress, pending linearizable reads) and
 * the entries it has accepted but not yet handed to the host ("unstable" entries). It does NO I/O,
 * reads NO clock and draws NO randomness of its own: time arrives as raft_tick(), randomness from
 * the rand callback in struct raft_options, messages through raft_step(), and the log lives in the
 * host (the journal in production, memory in tests/sim) behind struct raft_storage.
 *
 * Driving it ("ready/advance"): after any input (tick, step, propose, persisted, ...) call
 * raft_ready(). When it returns false there is nothing to do (do not call raft_advance). When
 * it returns true the host does, IN THIS ORDER:
 *   1. rd.hs_changed: write rd.hs (term, vote) durably (fsync) BEFORE sending any message below;
 *   2. rd.truncate_from != 0: drop every log entry with index >= truncate_from;
 *   3. append rd.entries (contiguous, starting at rd.truncate_from or the old last index + 1);
 *      they need not be durable yet: when an fsync covering them completes, the host calls
 *      raft_persisted(last_index, last_term). Followers only ACKNOWLEDGE entries the host has
 *      reported persisted (the acknowledgement is generated inside raft_persisted), and a leader
 *      counts its own log only up to its persisted index, so no message in a ready ever has to
 *      wait for the entries of that ready;
 *   4. send rd.msgs (best effort; Raft tolerates loss, duplication and reordering);
 *   5. apply the committed entries [rd.apply_from, rd.apply_to] from its own log, in order. They
 *      are always <= the commit index and <= the persisted index;
 *   6. answer rd.reads: read i may be served once the applied index >= reads[i].index;
 *   then call raft_advance(). No other raft_* call may happen between raft_ready and
 *   raft_advance. Everything rd points at is owned by the raft and lives until raft_advance.
 *
 * Ownership: raft_init borrows opts->storage and the callbacks for the raft's lifetime. Slices
 * passed in (payloads, message entries) are copied before the call returns. Storage callbacks
 * hand out borrowed slices that must stay valid until the next storage call.
 *
 * Implemented: persistent term+vote, randomized election timeouts, pre-vote, check-quorum with
 * a follower-side leader lease, votes only for up-to-date logs, AppendEntries with prev
 * index/term checks and conflict truncation, fast backtracking hints, commit by counting only
 * current-term entries (leader: persisted entries only), a no-op entry on election, pipelined
 * and batched replication sent on the next raft_ready after new entries (never paced by the
 * heartbeat) with per-follower in-flight limits and probe/replicate flow control, leadership
 * transfer (TimeoutNow), single-server membership changes (add learner, promote, remove) with
 * at most one uncommitted change, ReadIndex reads.
 * ABSENT (not implemented; the integrator must not rely on them): snapshots / InstallSnapshot and
 * log compaction (storage first_index must stay 1; a follower behind is caught up from the log),
 * election priorities.
 */
#ifndef AYDER_RAFT_RAFT_H
#define AYDER_RAFT_RAFT_H

#include "base/buf.h"
#include "base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The HTTP layer maps this to a 307 redirect to the leader. */
#define RAFT_ERR_NOT_LEADER ERR_NOT_LEADER

#define RAFT_MAX_NODES 16          /* voters + learners in one configuration */
#define RAFT_MAX_INFLIGHT 64       /* pipelined AppendEntries per follower, upper bound */
#define RAFT_MAX_PENDING_READS 1024
#define RAFT_MSG_MAX_ENTRIES 4096  /* entries per AppendEntries (codec bound) */
#define RAFT_ENTRY_MAX_BYTES (64u << 20)

enum raft_role { RAFT_FOLLOWER, RAFT_PRE_CANDIDATE, RAFT_CANDIDATE, RAFT_LEADER };

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 1, /* host payload */
    RAFT_ENTRY_NOOP = 2,   /* appended by every new leader */
    RAFT_ENTRY_CONFIG = 3, /* a full configuration (raft_conf_encode); active once appended */
    RAFT_ENTRY_USER = 16,  /* 16..255: host entries, handled exactly like NORMAL (the host keeps
                              its own entry kind in the type byte) */
};

/* A valid entry type: NORMAL, NOOP, CONFIG or a host type (>= RAFT_ENTRY_USER). */
static inline bool raft_entry_type_valid(uint8_t t)
{
    return (t >= RAFT_ENTRY_NORMAL && t <= RAFT_ENTRY_CONFIG) || t >= RAFT_ENTRY_USER;
}

struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type;
    struct slice data;
};

/* Membership. Ids are non-zero and unique across voters and learners. */
struct raft_conf {
    uint32_t n_voters, n_learners;
    uint64_t voters[RAFT_MAX_NODES];
    uint64_t learners[RAFT_MAX_NODES];
};

enum raft_conf_op { RAFT_CONF_ADD_LEARNER = 1, RAFT_CONF_PROMOTE = 2, RAFT_CONF_REMOVE = 3 };

enum raft_msg_type {
    RAFT_MSG_PREVOTE = 1,
    RAFT_MSG_PREVOTE_RESP,
    RAFT_MSG_VOTE,
    RAFT_MSG_VOTE_RESP,
    RAFT_MSG_APPEND,        /* index/log_term = prev entry; entries; commit */
    RAFT_MSG_APPEND_RESP,   /* ok: index = match; reject: index = rejected prev, hint = next try */
    RAFT_MSG_HEARTBEAT,     /* commit (<= follower's match), ctx = read sequence */
    RAFT_MSG_HEARTBEAT_RESP,/* ctx echoed */
    RAFT_MSG_TIMEOUT_NOW,   /* leadership transfer: campaign now */
    RAFT_MSG__MAX
};

/* One message. For votes, index/log_term are the candidate's last entry; force marks a vote
 * asked for by a leadership transfer (it overrides the leader lease). */
struct raft_msg {
    uint8_t type;
    bool reject;
    bool force;
    uint64_t from, to, term;
    uint64_t index, log_term;
    uint64_t commit;
    uint64_t hint;
    uint64_t ctx;
    size_t n_entries;
    const struct raft_entry *entries;
};

struct raft_hardstate {
    uint64_t term;
    uint64_t vote; /* 0 = none */
};

/* The host's log. All callbacks receive ctx. Indexes start at 1; the log is contiguous. */
struct raft_storage {
    void *ctx;
    /* Last index in the host log (0 if empty). Only called by raft_init. */
    uint64_t (*last_index)(void *ctx);
    /* Term of entry index (1 <= index <= last); 0 = success, ERR_NOT_FOUND otherwise. */
    int (*term_at)(void *ctx, uint64_t index, uint64_t *term);
    /* Entries [from, ...] up to max_count and about max_bytes (at least one entry when
     * from <= last). Data slices are borrowed until the next storage call. *n = count. */
    int (*entries)(void *ctx, uint64_t from, size_t max_bytes, struct raft_entry *out,
                   size_t max_count, size_t *n);
    /* The latest CONFIG entry with index < before: *index and its data (borrowed).
     * ERR_NOT_FOUND if there is none. Called by raft_init and after a truncation. */
    int (*config_before)(void *ctx, uint64_t before, uint64_t *index, struct slice *data);
};

struct raft_options {
    uint64_t id;
    const struct raft_storage *storage;
    struct raft_hardstate hs;   /* as recovered from disk */
    uint32_t election_ticks;    /* election timeout is uniform in [election_ticks, 2x) */
    uint32_t heartbeat_ticks;
    size_t max_msg_bytes;       /* batch bound for AppendEntries payload */
    uint32_t max_inflight;      /* <= RAFT_MAX_INFLIGHT */
    bool pre_vote;
    bool check_quorum;
    uint64_t (*rand)(void *ctx);
    void *rand_ctx;
};

struct raft_read {
    uint64_t ctx;   /* the host's token from raft_read_index */
    uint64_t index; /* serve once applied >= index */
};

struct raft_ready {
    bool hs_changed;
    struct raft_hardstate hs;
    uint64_t truncate_from;
    const struct raft_entry *entries;
    size_t n_entries;
    const struct raft_msg *msgs;
    size_t n_msgs;
    uint64_t apply_from, apply_to; /* apply_to == 0: nothing to apply */
    const struct raft_read *reads;
    size_t n_reads;
};

struct raft; /* opaque */

/* Allocates a raft. The log must already contain whatever the node had on disk (all durable);
 * a fresh cluster member's host first writes raft_bootstrap_entry() at index 1 (term 1) into an
 * empty log on every initial voter. *out is freed with raft_free. 0, ERR_INVALID, ERR_NOMEM. */
int raft_new(const struct raft_options *opts, struct raft **out);
void raft_free(struct raft *r);

/* Inputs. */
void raft_tick(struct raft *r);
/* A received message (already decoded). ERR_INVALID for a malformed one (ignored). */
int raft_step(struct raft *r, const struct raft_msg *m);
/* Leader only: appends an entry; *index is where it will be. RAFT_ERR_NOT_LEADER (with
 * *leader = known leader or 0) otherwise; ERR_UNAVAILABLE during a leadership transfer. */
int raft_propose(struct raft *r, uint8_t type, struct slice payload, uint64_t *index,
                 uint64_t *leader);
/* Leader only: one membership change. ERR_AGAIN while an earlier change is uncommitted or
 * before this leader committed an entry of its term; ERR_INVALID for a nonsensical change. */
int raft_propose_conf(struct raft *r, enum raft_conf_op op, uint64_t node, uint64_t *index);
/* The host's fsync covered the log up to last_index whose term is last_term. Stale reports
 * (the entry was since truncated) are ignored. */
void raft_persisted(struct raft *r, uint64_t last_index, uint64_t last_term);
/* Leader only: hand leadership to voter `to`. ERR_INVALID, RAFT_ERR_NOT_LEADER. */
int raft_transfer_leadership(struct raft *r, uint64_t to);
/* Leader only: a linearizable read; its answer comes back in raft_ready().reads.
 * ERR_AGAIN before the leader committed an entry of its term; ERR_OVERLOADED if too many. */
int raft_read_index(struct raft *r, uint64_t ctx);

/* Output. */
bool raft_ready(struct raft *r, struct raft_ready *rd);
void raft_advance(struct raft *r, const struct raft_ready *rd);

/* Queries. */
enum raft_role raft_role(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_leader(const struct raft *r);
uint64_t raft_id(const struct raft *r);
uint64_t raft_commit(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
uint64_t raft_persisted_index(const struct raft *r);
const struct raft_conf *raft_conf(const struct raft *r);
/* Leader only: replication progress of node (self = its persisted index). ERR_NOT_FOUND. */
int raft_match(const struct raft *r, uint64_t node, uint64_t *match);
/* Leader only: voters whose persisted log holds index (write concern "all" = *acked == *voters;
 * "1" = raft_persisted_index >= index; "majority" = raft_commit >= index). */
void raft_acked_by(const struct raft *r, uint64_t index, uint32_t *acked, uint32_t *voters);

/* Configuration encoding (the data of a CONFIG entry). */
int raft_conf_encode(const struct raft_conf *c, struct sbuf *out);
int raft_conf_decode(struct slice in, struct raft_conf *c);
bool raft_conf_is_voter(const struct raft_conf *c, uint64_t id);
bool raft_conf_has(const struct raft_conf *c, uint64_t id);
/* The data of the bootstrap entry (index 1, term 1, CONFIG) for an initial voter set. */
int raft_bootstrap_entry(const uint64_t *voters, uint32_t n, struct sbuf *out);

/* Wire codec (raft_msg.c). encode appends to out (ERR_NOMEM / ERR_TOO_LARGE if the sbuf failed).
 * decode validates lengths and ranges; entries point into `in` and are stored in ents[cap];
 * ERR_INVALID on malformed input, ERR_TOO_LARGE if more than cap entries. */
int raft_msg_encode(const struct raft_msg *m, struct sbuf *out);
int raft_msg_decode(struct slice in, struct raft_msg *m, struct raft_entry *ents, size_t cap);

#ifdef RAFT_TEST_PLANTS
/* TEST BUILDS ONLY (the simulation compiles raft.c with RAFT_TEST_PLANTS): deliberate bugs the
 * simulation must catch. Never defined in production builds. */
enum raft_plant {
    RAFT_PLANT_NONE = 0,
    RAFT_PLANT_ACK_BEFORE_FSYNC, /* follower acknowledges entries before they are persisted */
    RAFT_PLANT_VOTE_NOT_PERSISTED, /* the ready's hard state omits a newly granted vote */
    RAFT_PLANT_APPLY_BEFORE_COMMIT, /* apply everything appended, committed or not */
};
extern enum raft_plant raft_test_plant;
#endif

#endif
