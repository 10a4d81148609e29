/* core.h -- the node's core: the sequencer, the journal's group commit, apply, checkpoints and
 * recovery. One "core" thread owns the journal, the broker and KV state machines for writing;
 * one "sync" thread runs the fsyncs so the next group is written while the previous one syncs.
 *
 * A write is a struct proposal. HTTP workers fill one in and call core_propose() (any thread);
 * the core thread then
 *   1. sequences it: validates against the sequencer view (topics, partition counts, log-end
 *      offsets including entries not yet applied), picks the partition, assigns offsets, decides
 *      idempotent duplicates, and writes those decisions into the entry;
 *   2. appends it to the journal (group commit: all proposals that arrived together share one
 *      write and one fdatasync);
 *   3. once the entry is durable (its index <= the journal's durable index), applies it to the
 *      state machines and publishes the result;
 *   4. calls p->done(p) on the core thread: for produces with phase PROPOSAL_APPENDED right after
 *      step 2 (p->res holds the sequencer's partition/offset/count; the proposer must copy what
 *      it needs before returning, as the core writes p->res again at apply), and always with
 *      PROPOSAL_DONE at the end
 *      (after apply, or with p->err set if it was rejected or the store failed). After
 *      PROPOSAL_DONE the core never touches p again.
 *
 * Replication: the journal is the Raft log (src/raft). Every write goes through raft_propose on
 * the leader; entries are applied on every node once committed (a majority fsynced them). A single
 * node is a one-voter group on the same code path: there, committed = fsynced locally. On a
 * follower core_propose fails with ERR_NOT_LEADER (core_leader names the leader) or ERR_NO_LEADER.
 * Write concerns (p->concern, see ha_config.h): async answers at PROPOSAL_APPENDED; "1" answers a
 * produce once the leader's fsync covers it (other writes need apply's result: as majority);
 * majority answers after apply; all additionally waits until every voter fsynced it (if that does
 * not happen before the deadline, it is answered with concern_met = majority: it is committed).
 * In a cluster the core enforces p->timeout_ms: a write not committed by then fails with
 * ERR_COMMIT_TIMEOUT (outcome unknown); a write whose entry a new leader discarded fails with
 * ERR_NOT_COMMITTED (definitely not applied).
 */
#ifndef AYDER_CORE_CORE_H
#define AYDER_CORE_CORE_H

#include "base/buf.h"
#include "broker/broker.h"
#include "core/ha_config.h"
#include "io/io.h"
#include "journal/journal.h"
#include "kv/kv.h"
#include "metrics/metrics.h"
#include "schema/registry.h"

#include <stdbool.h>
#include <stdint.h>

struct core;

struct core_config {
    struct io_fs *fs;
    const char *data_dir;
    struct journal_opts journal;
    struct broker_opts broker;
    struct kv_limits kv;
    struct schema_limits schema;
    uint32_t default_partitions;    /* auto-created topics */
    bool auto_create_topics;
    uint64_t checkpoint_interval_ms; /* 0 = only by size and at shutdown */
    uint64_t checkpoint_journal_bytes;
    uint32_t max_inflight;           /* proposals not yet done; beyond -> ERR_OVERLOADED */
    uint64_t max_inflight_bytes;
    uint64_t min_free_bytes;         /* refuse writes (507) while the data dir's disk has less */
    const struct ha_config *ha;      /* NULL or !enabled: single node (a one-voter group) */
    uint64_t write_timeout_ms;       /* cluster: default p->timeout_ms (0 = 5000) */
    bool inline_sync;                /* single node: fsync on the core thread while no async
                                      * writes arrive (default on; RF_INLINE_SYNC=0) */
};

void core_config_default(struct core_config *c);

enum proposal_phase { PROPOSAL_APPENDED = 1, PROPOSAL_DONE = 2 };

struct proposal {
    struct proposal *next;            /* core-internal */
    uint8_t type;                     /* enum entry_type */
    struct sbuf payload;              /* the encoded entry (owned by the proposer) */
    int32_t partition;                /* produce: -1 = choose (key hash or round robin) */
    struct slice key;                 /* produce: key for the partitioner (proposer memory) */
    bool has_key;
    uint32_t record_count;
    uint8_t concern;                  /* enum write_concern; WC_DEFAULT = the node's default */
    uint64_t timeout_ms;              /* cluster: 0 = core_config.write_timeout_ms */
    /* results */
    uint8_t concern_met;              /* the concern the answer satisfies (PROPOSAL_DONE, err 0) */
    uint64_t term;                    /* core-internal: the Raft term it was proposed in */
    uint64_t deadline_ns;             /* core-internal */
    uint64_t hold_until_ns;           /* core-internal: held (no usable leader yet) until */
    enum proposal_phase phase;
    int err;                          /* 0 or ERR_* */
    uint64_t index;                   /* journal index (the response's batch_id) */
    uint64_t wait_index;              /* duplicate: answered once this index is applied */
    bool duplicate_pending;
    struct apply_result res;          /* PROPOSAL_DONE; for APPENDED: partition/offset/count */
    uint64_t enqueue_ns, appended_ns, durable_ns;
    void (*done)(struct proposal *p);
    void *ctx;
};

int core_open(const struct core_config *cfg, struct core **out);
/* Start the core and sync threads. */
int core_start(struct core *c);
/* Stop accepting, finish everything in flight, write a checkpoint, join threads. */
void core_stop(struct core *c);
void core_close(struct core *c);
/* Test hook: like core_stop, but without the final checkpoint, so what is on disk is exactly what
 * a crash at this moment would leave (before the simulated file system drops unsynced data). */
void core_abort(struct core *c);

/* Any thread. 0: p->done will be called (at least with PROPOSAL_DONE). Otherwise an error and
 * done is never called: ERR_OVERLOADED, ERR_STORE_FAILED, ERR_NOSPACE, ERR_NOT_READY,
 * ERR_NOT_LEADER (another node leads). In a cluster with no leader known, the write waits up to
 * one election timeout for one: then ERR_NOT_LEADER (a redirect), it is appended here (this node
 * won), or ERR_NO_LEADER. */
int core_propose(struct core *c, struct proposal *p);

/* A linearizable read (ReadIndex): done(rb) is called on the core thread once this node, as the
 * leader, confirmed its leadership with a quorum after the read arrived and applied everything
 * committed before it (rb->err = 0: now read the local state), or with rb->err = ERR_NOT_LEADER /
 * ERR_NO_LEADER / ERR_COMMIT_TIMEOUT. On a single node it completes at once. 0: done will be
 * called; otherwise an error and done is never called. */
struct read_barrier {
    struct read_barrier *next;  /* core-internal */
    uint64_t seq, index, deadline_ns, hold_until_ns; /* core-internal */
    int err;
    void (*done)(struct read_barrier *rb);
    void *ctx;
};
int core_read_barrier(struct core *c, struct read_barrier *rb);

/* Membership changes (cluster only), sent with core_propose: p->type is one of these and
 * p->payload is core_member_payload(). add: the node's address is replicated and it joins as a
 * learner (it catches up without voting); promote: the learner becomes a voter; remove: it leaves
 * the configuration. Answered when the configuration entry commits. Errors: ERR_CONFLICT (already
 * a member / already a voter), ERR_NOT_FOUND (not a member), ERR_UNAVAILABLE (another change is
 * still uncommitted: retry), ERR_OVERLOADED (address book full). */
#define CORE_PROP_MEMBER_ADD 200
#define CORE_PROP_MEMBER_PROMOTE 201
#define CORE_PROP_MEMBER_REMOVE 202
/* Leadership transfer to the named voter (payload = core_member_payload with its name): the leader
 * stops accepting writes, brings the target up to date and tells it to campaign at once. Answered
 * when the transfer has started (watch /ha/status for the new leader); it is abandoned if the
 * target does not take over within an election timeout. ERR_NOT_FOUND (not a voter),
 * ERR_CONFLICT (it is this node), ERR_UNAVAILABLE (a transfer is already running). */
#define CORE_PROP_TRANSFER 203
/* For promote/remove only the name matters (host "-", ports 1 are fine). */
void core_member_payload(struct sbuf *out, const struct ha_node *n);

struct broker *core_broker(struct core *c);
struct kv *core_kv(struct core *c);
struct schema_registry *core_schema(struct core *c);

/* Health: 0 when writable, else the sticky error (ERR_STORE_FAILED) or ERR_NOSPACE; `why` gets a
 * sentence for /health. */
int core_health(struct core *c, char *why, size_t why_len);
bool core_ready(struct core *c);

/* The leader as this node knows it: 0 = none known, else fills url ("http://host:port") when
 * url_len > 0. In single-node mode: this node (url empty). */
uint64_t core_leader(struct core *c, char *url, size_t url_len);
bool core_cluster(struct core *c);
/* This node's id (transport_node_id of its name; single node: its fixed id). */
uint64_t core_self_id(struct core *c);
/* The cluster's members (voters and learners) as this node knows them, in address-book order:
 * copies at most max into out and returns how many it copied. Single node: 0. Any thread. */
size_t core_members(struct core *c, struct ha_node *out, size_t max);
enum write_concern core_default_concern(struct core *c);

struct core_peer_status {
    char name[HA_NAME_MAX];
    char url[HA_HOST_MAX + 16];
    bool self, voter, connected;
    uint64_t match_index; /* leader only */
};

struct core_ha_status {
    bool enabled;
    char node_id[HA_NAME_MAX];
    const char *role;            /* "leader", "follower", "candidate", "pre_candidate" */
    uint64_t term, leader_id;
    char leader_name[HA_NAME_MAX];
    char leader_url[HA_HOST_MAX + 16];
    uint64_t commit_index, applied_index, last_index, durable_index;
    const char *write_concern;
    size_t n_peers;
    struct core_peer_status peers[HA_MAX_NODES];
    uint64_t elections_won, leader_changes;
    uint64_t snapshots_sent, snapshots_installed;
    uint64_t snapshot_index; /* the newest checkpoint (the log's base, or one before it) */
    uint64_t restart_index;  /* cluster: what a restart re-applies by itself (raft/commit) */
};
void core_ha_status(struct core *c, struct core_ha_status *out);

struct core_stats {
    uint64_t last_index, durable_index, applied_index;
    uint64_t proposals, entries, syncs, sync_ns_total, checkpoints, last_checkpoint_index;
    uint64_t inflight, journal_bytes, journal_segments, recovery_ms, replayed_entries;
    bool failed;             /* the sticky error state (ERR_STORE_FAILED) */
    bool no_space;           /* writes refused for space (ENOSPC or below min_free_bytes) */
    bool disk_known;         /* free_bytes could be read (statvfs of the data directory) */
    uint64_t disk_free_bytes, min_free_bytes;
};
/* Any thread; reads atomics, plus one statvfs of the data directory for disk_free_bytes. */
void core_stats(struct core *c, struct core_stats *st);

/* Latency histograms the core keeps (live for the core's lifetime; any thread may render them):
 * fsync = one group-commit fsync of the journal (sync thread or inline), as journal_sync_run
 * timed it; write = a successful write from core_propose to its PROPOSAL_DONE (sequenced,
 * appended, fsynced / committed by a majority, applied), i.e. the part of a produce's or a
 * commit's answer time spent in the core. */
struct core_histograms {
    const struct metrics_hist *fsync, *write;
};
void core_histograms(struct core *c, struct core_histograms *out);

/* Offline tools (no threads): print a journal or partition segment; verify a data dir. */
int core_logdump(const char *path);
int core_logcheck(const char *data_dir, bool repair);

#endif
