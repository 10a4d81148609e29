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
 * Snapshots and log compaction: the host snapshots its state machine at its applied index and
 * calls raft_compact(); from then on the raft treats every entry <= the snapshot index (the log's
 * BASE) as gone: it never asks storage for them, term_at(base) is answered from the snapshot's
 * term, and an index below the base has no known term. A leader whose follower needs entries at
 * or below its base hands the host a RAFT_MSG_SNAPSHOT in rd.snap_send; the host streams its
 * snapshot out of band, then delivers that (small) message, and reports raft_snapshot_done().
 * The receiving host stages the streamed data, steps the message, and installs when the ready
 * says rd.install (details at struct raft_ready). A host that wants to serve slow followers from
 * a tail of its log simply compacts later (raft_compact with an older snapshot).
 * Not in this core: election priorities (the node implements them with leadership transfer, see
 * check_priority in src/core/core.c). A node
 * that lost its whole disk is safe to restart with an empty log only as a learner (or after it
 * was removed from the configuration): Raft's quorums assume voters keep what they
 * acknowledged, and a leader never lowers a follower's acknowledged match index.
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
    RAFT_MSG_SNAPSHOT,      /* leader -> follower: install the snapshot described by index/log_term
                               and the configuration carried as entries[0] (type CONFIG; its index
                               is msg.index, its term msg.log_term); commit = leader's commit.
                               The state-machine data travels out of band (see raft_ready) */
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

/* A snapshot: the state machine after applying every entry <= index. */
struct raft_snapshot_meta {
    uint64_t index, term;   /* last entry the snapshot covers; 0,0 = no snapshot */
    struct raft_conf conf;  /* the configuration in effect at index */
};

/* The host's log. All callbacks receive ctx. Indexes start at 1; the log is contiguous.
 * With a snapshot base b (raft_options.snap, raft_compact, an install) the log holds
 * [b + 1, last]; the raft never asks for an index <= b (entries the host still keeps there are
 * ignored). last_index returns b when nothing follows the base (0 is accepted too). */
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
     * ERR_NOT_FOUND if there is none (an entry at or below the base may be returned or not:
     * the raft then uses the snapshot's configuration). Called by raft_init, after a
     * truncation, and by raft_conf_at. */
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
    uint64_t applied;               /* host's applied index at start (>= snap.index, <= last);
                                       the commit index starts here, apply_from at applied+1 */
    struct raft_snapshot_meta snap; /* the log's base: entries <= snap.index may be absent
                                       from storage (storage holds [snap.index+1, last]);
                                       term_at(snap.index) is answered from snap.term */
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
    /* Leader: outgoing snapshots. For each, the host streams the snapshot whose index/term are
     * snap_send[i].index/log_term (its current one, the last passed to raft_compact or
     * installed) to snap_send[i].to OUT OF BAND, and then delivers snap_send[i] (the metadata
     * message) to the peer like any message and calls raft_snapshot_done(to, true); if it
     * cannot (peer unreachable, that snapshot already replaced) it calls
     * raft_snapshot_done(to, false). The raft sends at most one per peer until that call.
     * Report a stream only while raft_term() still equals snap_send[i].term: a term change
     * resets the leader's progress, and a stream of an older term is dropped unreported. */
    const struct raft_msg *snap_send;
    size_t n_snap_send;
    /* Follower: install the snapshot `snap` BEFORE step 2 (the data already arrived out of band
     * and was staged by the host before it stepped the RAFT_MSG_SNAPSHOT). Durably and
     * atomically: the host's log becomes empty with base snap.index/snap.term (rd.entries, if
     * any, then follow at snap.index + 1), its state machine becomes the snapshot, its applied
     * index snap.index, and snap becomes its current snapshot. This ready's msgs carry the
     * acknowledgement of the install, so the install must be durable before step 4. */
    bool install;
    struct raft_snapshot_meta snap;
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

/* The host made a snapshot covering everything <= m->index (m->index <= the applied index) and
 * may drop entries <= m->index from its log. It becomes the log's base and the snapshot that
 * leaders send. Ignored if m->index is beyond the applied index or not beyond the current base.
 * m->term must be the term of entry m->index and m->conf the configuration in effect there
 * (raft_conf_at). Never fails. */
void raft_compact(struct raft *r, const struct raft_snapshot_meta *m);
/* Leader: the host finished (ok=true) or gave up (false) sending a snapshot to `to` (in the
 * term the snapshot was asked for, see raft_ready.snap_send). ok: the follower is probed from
 * the snapshot index + 1 (its acknowledgement resumes replication); !ok: probed again after a
 * heartbeat interval (which may send a new snapshot). Ignored unless `to` has a snapshot
 * outstanding. */
void raft_snapshot_done(struct raft *r, uint64_t to, bool ok);
/* Leader: peer `id` restarted (its transport incarnation changed), so what it acknowledged may
 * be gone (a wiped learner): forget its match index and probe it afresh. Always safe (a lower
 * match only delays; commit never goes back); without it a leader keeps probing a wiped
 * follower just above its old match index. No-op for a non-leader or an unknown id. */
void raft_peer_reset(struct raft *r, uint64_t id);

/* Output. */
bool raft_ready(struct raft *r, struct raft_ready *rd);
void raft_advance(struct raft *r, const struct raft_ready *rd);

/* Queries. */
enum raft_role raft_role(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_leader(const struct raft *r);
/* This node leads because a leadership transfer (TimeoutNow) made it campaign. */
bool raft_leader_by_transfer(const struct raft *r);
/* Leader: a leadership transfer is under way (proposals get ERR_UNAVAILABLE until it ends). */
bool raft_transferring(const struct raft *r);
uint64_t raft_id(const struct raft *r);
uint64_t raft_commit(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
uint64_t raft_persisted_index(const struct raft *r);
const struct raft_conf *raft_conf(const struct raft *r);
/* Leader only: replication progress of node (self = its persisted index). ERR_NOT_FOUND. */
int raft_match(const struct raft *r, uint64_t node, uint64_t *match);
/* The current snapshot (the log's base; index 0 = none). Borrowed for the raft's lifetime;
 * changes at raft_compact and on an install. */
const struct raft_snapshot_meta *raft_snapshot(const struct raft *r);
/* The configuration in effect at index (base <= index <= last index), for raft_compact's
 * meta. ERR_NOT_FOUND outside that range. */
int raft_conf_at(const struct raft *r, uint64_t index, struct raft_conf *out);
/* Leader only: how many followers have a snapshot outstanding (for metrics); 0 otherwise. */
uint32_t raft_snapshots_sending(const struct raft *r);
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
    RAFT_PLANT_SNAPSHOT_SKIP_TERM_CHECK, /* a follower fast-forwards to a snapshot's index
                                            without checking that its entry there has the
                                            snapshot's term */
};
extern enum raft_plant raft_test_plant;
#endif

#endif
