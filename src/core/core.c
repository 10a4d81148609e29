/* core.c -- sequencer, group commit, apply, checkpoints and recovery (see core.h).
 *
 * The core thread's loop:
 *
 *     wait for: new proposals | a finished fsync | the next tick
 *       -> sync finished:  journal_sync_done; apply every entry now durable (in index order),
 *                          publish (broker_round_publish), complete their proposals, then
 *                          wake the waiters (broker_wake_due)
 *       -> new proposals:  sequence + journal_append each; complete rocket ones (APPENDED)
 *       -> journal_flush (one write for the whole group)
 *       -> no fsync in flight and unsynced entries: hand a sync token to the sync thread
 *       -> tick (every 200 ms): retention, KV expiry, checkpoint when due
 *
 * Invariants:
 *  1. An entry is applied only when its index <= journal_durable_index(): nothing not fsynced is
 *     ever visible to readers or acknowledged as durable.
 *  2. Entries are applied in index order, exactly once per process lifetime; after a restart,
 *     recovery re-applies exactly the entries after the snapshot's index.
 *  3. The sequencer view (seq_topic) = applied state + the effects of appended, unapplied entries.
 *     Apply verifies the offsets the sequencer assigned (they agree unless there is a bug).
 *  4. A failed fsync, a failed write other than ENOSPC, or a failed apply puts the core in a
 *     sticky error state: every pending and future proposal fails with ERR_STORE_FAILED and
 *     nothing further is acknowledged. Restart to recover from the journal.
 *  5. A checkpoint is taken only between apply rounds with no fsync in flight: the snapshot's
 *     partition lengths, offsets, idempotency and KV state all describe exactly applied_index.
 *  6. An apply round answers its proposals before it wakes the long-poll and subscription
 *     waiters of the partitions it published (broker_round_publish, finish, broker_wake_due):
 *     answers are never queued behind a fan-out. Both come after apply and publish, so invariant
 *     1 is unchanged.
 */
#include "core/core.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/hmap.h"
#include "base/log.h"
#include "broker/entry.h"
#include "core/hardstate.h"
#include "core/snapx.h"
#include "core/tailcache.h"
#include "raft/raft.h"
#include "raft/transport.h"
#include "schema/registry.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TICK_MS 200
#define RAFT_TICK_MS_CLUSTER 10   /* Raft's logical clock in a cluster */
#define WRITE_TIMEOUT_MS_DEFAULT 5000
#define CACHE_MAX_ENTRIES (1u << 18)
#define CACHE_MAX_BYTES (64u << 20)

/* A core-level journal entry kind (beside enum entry_type, which the broker and KV apply): a
 * member's address. */
#define CORE_ENTRY_MEMBER 40

struct core;
static int not_leader_err(struct core *c);

/* Frames between nodes carry a kind byte first. */
#define FRAME_RAFT 1 /* an encoded struct raft_msg */
#define FRAME_SNAP 2 /* a snapshot chunk (snapx.h) */

/* Journal entry types are Raft entry types; a host entry of kind e (enum entry_type) is stored
 * as RAFT_ENTRY_USER + e. */
#define HOST_TYPE(e) ((uint8_t)(RAFT_ENTRY_USER + (e)))

struct conf_rec { /* a CONFIG entry in the journal (after the snapshot) */
    uint64_t index;
    struct sbuf data;
};

struct seq_topic {
    uint32_t nparts;
    uint64_t rr;
    uint64_t next[]; /* next offset to assign, per partition */
};

struct core {
    struct core_config cfg;
    char *journal_dir, *snap_dir;
    struct journal *j;
    struct broker *broker;
    struct kv *kv;
    struct schema_registry *schema;
    struct hmap seq; /* name -> struct seq_topic */

    pthread_t thread, sync_thread, prealloc_thread;
    bool prealloc_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;        /* core thread waits here */
    pthread_cond_t sync_cond;   /* sync thread waits here */
    pthread_cond_t cond_prealloc; /* preallocator waits here (CLOCK_MONOTONIC) */
    struct proposal *in_head, *in_tail; /* incoming (under mu) */
    struct journal_sync *sync_tok;       /* handed to the sync thread (under mu) */
    struct journal_sync *sync_done_tok;  /* returned by the sync thread (under mu) */
    /* Wake-up deferral (single node): while the sync thread holds a token, a durable write need
     * not wake the core thread, because it cannot be acknowledged before the next fsync, which
     * starts only after this one's result wakes the core anyway (and it takes the inbox then).
     * Saves a futex wake and two context switches per deferred write (docs/BENCHMARKS.md). */
    bool sync_running; /* single node: an fsync is running, here or on the sync thread (under mu) */
    bool in_signalled; /* the core was woken for the current inbox (under mu) */
    bool sync_has_result;
    int sync_rc;
    bool stopping, stopped, sync_stop;
    bool abort; /* test hook: stop without the final checkpoint (a simulated crash) */
    _Atomic uint32_t inflight;
    _Atomic uint64_t inflight_bytes;

    /* core-thread state */
    struct proposal *pend_head, *pend_tail; /* appended, not yet applied (index order) */
    struct proposal *dup_head;              /* duplicates waiting for their original */
    bool sync_inflight;
    /* Inline group commit (single node): while every recent write is a durable one, the core
     * thread runs the fsync itself at the end of its round instead of handing a token to the
     * sync thread. A hand-off costs two thread wake-ups between fsyncs (measured: the disk sat
     * idle ~150 us between 300 us fsyncs under load on 2 cores); inline, the fsync's completion
     * wakes the thread that goes on at once. Async (rocket) writes must never wait behind an
     * fsync, so one seen within ASYNC_QUIET_MS sends fsyncs back to the sync thread. */
    bool sync_wanted;      /* start_sync deferred to the end of this round (inline mode) */
    bool skip_wait;        /* an inline fsync just finished: go on without waiting */
    uint64_t last_async_ms; /* when the core last took an async (WC_ASYNC) proposal */
    bool checkpoint_due;
    /* background checkpoint (ckpt_* under mu except ckpt_busy/trim_pending: core thread) */
    bool ckpt_busy, ckpt_have_job, ckpt_have_result;
    struct sbuf ckpt_buf;
    uint64_t ckpt_index, ckpt_keep_from;
    struct raft_snapshot_meta ckpt_meta;      /* of the checkpoint being written */
    struct raft_snapshot_meta snap_cur, snap_prev; /* snapshots on disk (prev: cluster only) */
    int ckpt_rc;
    uint64_t trim_pending; /* checkpoint written at this index: trim when no sync is in flight */
    uint64_t applied_index;
    uint64_t last_checkpoint_index;
    uint64_t last_checkpoint_ms;
    uint64_t journal_bytes_at_checkpoint;
    uint64_t next_tick_ms;
    uint64_t ticks;

    _Atomic int fatal;          /* sticky error (ERR_STORE_FAILED) */
    _Atomic int nospace;        /* journal write hit ENOSPC, or free space below the watermark */
    bool nospace_journal, nospace_watermark;
    uint64_t space_checked_ms;
    int sync_errno;
    _Atomic bool ready;
    char why[256];
    pthread_mutex_t why_mu;

    _Atomic uint64_t st_proposals, st_entries, st_checkpoints, st_applied, st_durable, st_last;
    _Atomic uint64_t st_syncs, st_sync_ns; /* journal fsyncs and their total time (metrics) */
    _Atomic uint64_t st_jbytes, st_jsegs;  /* journal size (metrics) */
    struct metrics_hist h_fsync, h_write;  /* core_histograms */
    uint64_t recovery_ms, replayed;

    /* Raft (core thread unless noted) */
    struct ha_config ha;           /* ha.enabled = cluster; else a one-voter group */
    bool cluster;
    uint64_t self_id;
    char *raft_dir;
    struct io_file *mark_f;          /* raft/commit (cluster), opened at the first write */
    uint64_t mark_index;             /* the last index written to it */
    bool mark_failed;                /* a write failed: logged once */
    struct raft *raft;
    struct raft_storage storage;
    struct transport *tp;
    _Atomic bool tp_wake;          /* set by the transport thread (under mu) */
    struct tailcache cache;        /* cluster: the newest entries */
    struct journal_iter *apply_it; /* reading entries the cache does not hold */
    uint64_t apply_it_next;
    struct raft_entry *ents;       /* decode / storage scratch (RAFT_MSG_MAX_ENTRIES) */
    struct sbuf msg_buf, stor_buf;
    uint64_t applied_term;
    struct sbuf applied_conf;      /* the configuration in effect at applied_index */
    uint64_t applied_conf_index;
    struct conf_rec *confs;        /* CONFIG entries after the snapshot, ascending */
    size_t n_confs, cap_confs;
    uint64_t raft_tick_ms, next_raft_tick_ms;
    uint64_t rand_state;           /* Raft's randomness (election timeouts); one per core, so
                                      several cores in a process (the simulations) never share it */
    bool was_leader, leader_ready;
    uint64_t leader_start_index;
    /* Never appended: this node leads but its no-op is unapplied, or (cluster) no leader is known
     * yet. A known leader elsewhere sends them there (307); hold_until_ns ends the wait (503). */
    struct proposal *held_head, *held_tail;
    struct proposal *ack_head;              /* applied, waiting for every voter (concern all) */
    struct hmap seq_idem;          /* idempotency keys sequenced but not yet applied */
    bool persist_pending;
    uint64_t persist_index, persist_term;
    uint64_t next_deadline_check_ms, next_priority_check_ms;
    struct read_barrier *rb_in_head, *rb_in_tail; /* incoming (under mu) */
    struct read_barrier *rb_held;   /* leader not ready yet, or no leader known (as held_head) */
    struct read_barrier *rb_sent;   /* raft_read_index issued, answer pending */
    struct read_barrier *rb_wait;   /* read index known, waiting for apply */
    uint64_t rb_seq;
    _Atomic int st_role;
    _Atomic uint64_t st_term, st_leader, st_commit, st_elections, st_leader_changes;
    _Atomic uint64_t st_match[HA_MAX_NODES];
    uint64_t peer_connects[HA_MAX_NODES];
    /* snapshot transfer */
    struct snapx_rx *snap_rx;              /* follower: staging of a leader's snapshot */
    struct snap_out {                      /* leader: one stream per peer */
        struct snapx_sender *s;
        uint64_t to, term;
        struct sbuf msg;                   /* the RAFT_MSG_SNAPSHOT frame to send after it */
        bool pending, finished;            /* finished/rc: under mu (set by the sender) */
        int rc;
    } snap_out[HA_MAX_NODES];
    bool snap_results;                     /* under mu: a stream finished */
    bool installing;
    _Atomic uint64_t st_snap_sent, st_snap_installed, st_snap_index;
    _Atomic uint64_t st_mark;        /* commit mark written (cluster) */
    /* membership: the address book is c->ha.nodes[0..n_nodes) (grows as members are added);
     * it and pub_conf are written by the core thread under pub_mu and read by HTTP threads */
    pthread_mutex_t pub_mu;
    struct raft_conf pub_conf;
};

void core_config_default(struct core_config *c)
{
    memset(c, 0, sizeof *c);
    c->fs = io_posix_fs();
    c->data_dir = "./ayder-data";
    c->journal.segment_bytes = JOURNAL_SEGMENT_BYTES_DEFAULT;
    c->journal.use_spare = true;
    c->inline_sync = true;
    kv_limits_default(&c->kv);
    schema_limits_default(&c->schema);
    c->default_partitions = 8;
    c->auto_create_topics = true;
    c->checkpoint_interval_ms = 30000;
    c->checkpoint_journal_bytes = 256ull << 20;
    c->max_inflight = 100000;
    c->max_inflight_bytes = 1ull << 30;
    c->min_free_bytes = 64ull << 20;
}

static void set_fatal(struct core *c, int rc, const char *what)
{
    pthread_mutex_lock(&c->why_mu);
    if (!atomic_load(&c->fatal)) {
        snprintf(c->why, sizeof c->why, "%s: %s (errno %d); writes are refused until restart",
                 what, err_message(rc), io_last_errno());
        LOG_E("core", "%s", c->why);
    }
    pthread_mutex_unlock(&c->why_mu);
    atomic_store(&c->fatal, ERR_STORE_FAILED);
}

/* ------------------------------------------------------------------------------------------ */
/* Sequencer view                                                                              */

static struct seq_topic *seq_get(struct core *c, struct slice name) { return hmap_get(&c->seq, name); }

static struct seq_topic *seq_add(struct core *c, struct slice name, uint32_t nparts,
                                 const uint64_t *ends)
{
    struct seq_topic *t = xcalloc(1, sizeof *t + nparts * sizeof t->next[0]);
    if (!t)
        return NULL;
    t->nparts = nparts;
    if (ends)
        memcpy(t->next, ends, nparts * sizeof t->next[0]);
    void *old = NULL;
    if (hmap_put(&c->seq, name, t, &old)) {
        xfree(t);
        return NULL;
    }
    xfree(old);
    return t;
}

static void seq_load_fn(void *ctx, struct slice name, uint32_t nparts, const uint64_t *ends)
{
    struct core *c = ctx;
    if (!seq_add(c, name, nparts, ends))
        set_fatal(c, ERR_NOMEM, "sequencer");
}

static void seq_clear(struct core *c)
{
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&c->seq, &bk, &cur)))
        xfree(n->value);
    hmap_free(&c->seq);
}

/* ------------------------------------------------------------------------------------------ */
/* Completion                                                                                  */

static void finish(struct core *c, struct proposal *p)
{
    if (!p->err && p->enqueue_ns)
        metrics_hist_observe(&c->h_write, clock_mono_ns() - p->enqueue_ns);
    p->phase = PROPOSAL_DONE;
    atomic_fetch_sub(&c->inflight, 1);
    atomic_fetch_sub(&c->inflight_bytes, p->payload.len);
    p->done(p);
}

static void fail(struct core *c, struct proposal *p, int err)
{
    p->err = err;
    finish(c, p);
}

/* ------------------------------------------------------------------------------------------ */
/* Apply                                                                                       */

static int apply_kv(struct core *c, uint8_t type, struct slice payload, struct apply_result *res)
{
    struct entry_kv e;
    memset(res, 0, sizeof *res);
    if (entry_kv_decode(payload, &e)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    struct kv_result kr = {0};
    int rc;
    if (type == ENTRY_KV_PUT)
        rc = kv_apply_put(c->kv, e.ns, e.key, e.value, e.expected, e.ttl_ms, e.ts_ms, &kr);
    else if (type == ENTRY_KV_DEL)
        rc = kv_apply_delete(c->kv, e.ns, e.key, e.expected, e.ts_ms, &kr);
    else
        rc = kv_apply_expire(c->kv, e.ns, e.key, e.expected, e.ts_ms, &kr);
    if (rc == ERR_NOMEM)
        return rc; /* this replica cannot follow the journal: fatal */
    res->err = rc;
    res->cas = kr.cas;
    res->current = kr.current;
    res->deleted = kr.deleted;
    res->timestamp_ms = e.ts_ms;
    return 0;
}

_Static_assert(ENTRY_SCHEMA_SUBJECT_MAX == SCHEMA_SUBJECT_MAX &&
                   ENTRY_SCHEMA_REFS_MAX == SCHEMA_REFS_MAX &&
                   ENTRY_SCHEMA_REF_NAME_MAX == SCHEMA_REF_NAME_MAX &&
                   ENTRY_SCHEMA_TEXT_MAX == SCHEMA_TEXT_HARD_MAX && ENTRY_SCHEMA_TYPE_MIN == SCHEMA_AVRO &&
                   ENTRY_SCHEMA_TYPE_MAX == SCHEMA_JSON && ENTRY_SCHEMA_FLAGS_ALL == SCHEMA_F_FDS,
               "the journal entry and the registry agree on bounds");

/* Decode a SCHEMA_REGISTER payload into the registry's description; refs is caller storage of
 * ENTRY_SCHEMA_REFS_MAX. */
static int schema_entry_desc(struct slice payload, struct entry_schema *e,
                             struct schema_reference *refs, struct schema_desc *d)
{
    if (entry_schema_decode(payload, e))
        return ERR_CORRUPT;
    for (uint32_t i = 0; i < e->nrefs; i++)
        refs[i] = (struct schema_reference){e->refs[i].name, e->refs[i].subject, e->refs[i].version};
    *d = (struct schema_desc){e->type, e->flags, e->text, e->canon, refs, e->nrefs};
    return 0;
}

/* The registry decides ids and versions from the entry's bytes alone (no parser runs here), so
 * every replica and every replay assigns the same ones. */
static int apply_schema(struct core *c, struct slice payload, struct apply_result *res)
{
    static struct entry_schema e; /* core thread only; the refs array is large */
    struct schema_reference refs[ENTRY_SCHEMA_REFS_MAX];
    struct schema_desc d;
    memset(res, 0, sizeof *res);
    if (schema_entry_desc(payload, &e, refs, &d)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    struct schema_result sr = {0};
    int rc = schema_registry_apply_register(c->schema, e.subject, &d, &sr);
    if (rc == ERR_NOMEM)
        return rc; /* this replica cannot follow the journal: fatal */
    res->err = rc;
    res->schema_id = sr.id;
    res->schema_version = sr.version;
    res->created = sr.created;
    res->timestamp_ms = e.ts_ms;
    return 0;
}

static int apply_entry(struct core *c, uint64_t index, uint8_t type, struct slice payload,
                       struct apply_result *res)
{
    if (type == ENTRY_KV_PUT || type == ENTRY_KV_DEL || type == ENTRY_KV_EXPIRE)
        return apply_kv(c, type, payload, res);
    if (type == ENTRY_SCHEMA_REGISTER)
        return apply_schema(c, payload, res);
    return broker_apply(c->broker, index, type, payload, res);
}

/* Entry `index` for apply: from its proposal (single node: the proposer's buffer), the tail
 * cache, or the journal. *from_journal: the payload lives in the iterator's buffer, which the
 * next read reuses, so the caller ends the apply round before reading on. */
static int entry_for_apply(struct core *c, uint64_t index, uint64_t *term, uint8_t *type,
                           struct slice *data, bool *from_journal)
{
    *from_journal = false;
    struct proposal *p = c->pend_head;
    if (!c->cluster && p && p->index == index) {
        *term = p->term;
        *type = HOST_TYPE(p->type);
        *data = slice_of(p->payload.data, p->payload.len);
        return 0;
    }
    if (tailcache_get(&c->cache, index, term, type, data))
        return 0;
    if (!c->apply_it || c->apply_it_next != index) {
        if (c->apply_it)
            journal_iter_close(c->apply_it);
        c->apply_it = NULL;
        int rc = journal_iter_open(c->j, index, &c->apply_it);
        if (rc)
            return rc;
        c->apply_it_next = index;
    }
    uint64_t idx = 0;
    int rc = journal_iter_next(c->apply_it, term, &idx, type, data);
    if (rc != 1 || idx != index) {
        journal_iter_close(c->apply_it);
        c->apply_it = NULL;
        return rc < 0 ? rc : ERR_CORRUPT;
    }
    c->apply_it_next = index + 1;
    *from_journal = true;
    return 0;
}

static void note_conf(struct core *c, uint64_t index, struct slice data)
{
    sbuf_reset(&c->applied_conf);
    sbuf_append(&c->applied_conf, data.ptr, data.len);
    c->applied_conf_index = index;
}

/* ------------------------------------------------------------------------------------------ */
/* Membership: node addresses travel in MEMBER entries (every node learns how to reach a new
 * member); who votes is Raft's configuration (CONFIG entries). The transport connects to exactly
 * the members of the latest configuration whose address is known.                            */

static void member_encode(struct sbuf *b, const struct ha_node *n)
{
    sbuf_putc(b, 1); /* version */
    size_t nl = strlen(n->name), hl = strlen(n->host);
    sbuf_put_uvarint(b, nl);
    sbuf_append(b, n->name, nl);
    sbuf_put_uvarint(b, hl);
    sbuf_append(b, n->host, hl);
    sbuf_put_le32(b, n->raft_port);
    sbuf_put_le32(b, n->http_port);
    sbuf_put_le32(b, n->priority);
}

/* Strict: every field bounded and validated like RF_HA_NODES. */
static int member_decode(struct reader *r, struct ha_node *n)
{
    uint8_t v = 0;
    struct slice name, host;
    uint32_t rp = 0, hp = 0, pr = 0;
    memset(n, 0, sizeof *n);
    if (!rd_u8(r, &v) || v != 1 || !rd_lp(r, HA_NAME_MAX - 1, &name) || name.len == 0 ||
        !rd_lp(r, HA_HOST_MAX - 1, &host) || host.len == 0 || !rd_le32(r, &rp) ||
        !rd_le32(r, &hp) || !rd_le32(r, &pr) || rp == 0 || rp > 65535 || hp == 0 || hp > 65535)
        return ERR_INVALID;
    for (size_t i = 0; i < name.len; i++) {
        uint8_t ch = name.ptr[i];
        if (!(ch == '-' || ch == '_' || ch == '.' || (ch >= '0' && ch <= '9') ||
              (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
            return ERR_INVALID;
    }
    for (size_t i = 0; i < host.len; i++)
        if (host.ptr[i] <= ' ' || host.ptr[i] == '/' || host.ptr[i] >= 0x7f)
            return ERR_INVALID;
    memcpy(n->name, name.ptr, name.len);
    memcpy(n->host, host.ptr, host.len);
    n->raft_port = (uint16_t)rp;
    n->http_port = (uint16_t)hp;
    n->priority = pr;
    n->id = transport_node_id(n->name);
    return 0;
}

void core_member_payload(struct sbuf *out, const struct ha_node *n) { member_encode(out, n); }

/* Add (or update) an address. Core thread. ERR_OVERLOADED when the book is full. */
static int book_put(struct core *c, const struct ha_node *n)
{
    int i = ha_find(&c->ha, n->id);
    pthread_mutex_lock(&c->pub_mu);
    int rc = 0;
    if (i >= 0)
        c->ha.nodes[i] = *n;
    else if (c->ha.n_nodes == HA_MAX_NODES)
        rc = ERR_OVERLOADED;
    else
        c->ha.nodes[c->ha.n_nodes++] = *n;
    pthread_mutex_unlock(&c->pub_mu);
    return rc;
}

/* Connect to exactly the configured members with a known address. */
static void sync_peers(struct core *c)
{
    if (!c->tp || !c->raft)
        return;
    const struct raft_conf *conf = raft_conf(c->raft);
    if (conf->n_voters == 0)
        return; /* a joining node before it learned the configuration: keep RF_HA_NODES */
    for (size_t i = 0; i < c->ha.n_nodes; i++) {
        const struct ha_node *n = &c->ha.nodes[i];
        if (n->id == c->self_id)
            continue;
        bool member = raft_conf_has(conf, n->id), has = transport_has_peer(c->tp, n->id);
        if (member && !has) {
            struct transport_peer_config pc = {n->id, n->name, n->host, n->raft_port};
            int rc = transport_add_peer(c->tp, &pc);
            if (rc)
                LOG_W("core", "raft: cannot connect to new member %s: %s", n->name,
                      err_message(rc));
            else
                LOG_I("core", "raft: member %s (%s:%u) joins the transport", n->name, n->host,
                      n->raft_port);
        } else if (!member && has) {
            transport_remove_peer(c->tp, n->id);
            LOG_I("core", "raft: %s is no longer a member; disconnected", n->name);
        }
    }
    pthread_mutex_lock(&c->pub_mu);
    c->pub_conf = *conf;
    pthread_mutex_unlock(&c->pub_mu);
}

static void member_apply(struct core *c, struct slice data)
{
    struct reader r = reader_of(data);
    struct ha_node n;
    if (member_decode(&r, &n) != 0 || rd_left(&r) != 0) {
        LOG_E("core", "a member entry does not decode; ignored");
        return;
    }
    if (book_put(c, &n) != 0)
        LOG_E("core", "address book full (%d nodes): member %s not added", HA_MAX_NODES, n.name);
    sync_peers(c);
}

/* Apply one committed entry to the state machines. */
static int apply_one(struct core *c, uint64_t index, uint64_t term, uint8_t type,
                     struct slice data, struct apply_result *res)
{
    memset(res, 0, sizeof *res);
    int rc = 0;
    if (type == HOST_TYPE(CORE_ENTRY_MEMBER))
        member_apply(c, data);
    else if (type >= RAFT_ENTRY_USER)
        rc = apply_entry(c, index, (uint8_t)(type - RAFT_ENTRY_USER), data, res);
    else if (type == RAFT_ENTRY_CONFIG)
        note_conf(c, index, data);
    if (!rc) {
        c->applied_index = index;
        c->applied_term = term;
    }
    return rc;
}

static bool all_acked(struct core *c, uint64_t index)
{
    uint32_t acked = 0, voters = 0;
    if (raft_role(c->raft) != RAFT_LEADER)
        return false;
    raft_acked_by(c->raft, index, &acked, &voters);
    return acked >= voters;
}

/* Drop idempotency keys of an entry that has now been applied (the broker's table has it). */
static void seq_idem_applied(struct core *c, uint8_t host_type, struct slice data);

/* Apply the committed entries [from, to] (skipping what is already applied), publish, and answer
 * their proposals. */
static void apply_committed(struct core *c, uint64_t from, uint64_t to)
{
    if (from <= c->applied_index)
        from = c->applied_index + 1;
    struct proposal *done_head = NULL, **done_tail = &done_head;
    uint64_t now = clock_mono_ns();
    int rc = 0;
    for (uint64_t i = from; i <= to && !rc && !atomic_load(&c->fatal); i++) {
        uint64_t term = 0;
        uint8_t type = 0;
        struct slice data;
        bool from_journal;
        rc = entry_for_apply(c, i, &term, &type, &data, &from_journal);
        if (rc) {
            set_fatal(c, rc, "reading a committed entry");
            break;
        }
        struct apply_result res;
        rc = apply_one(c, i, term, type, data, &res);
        if (rc) {
            set_fatal(c, rc, "apply");
            break;
        }
        if (c->cluster && type >= RAFT_ENTRY_USER)
            seq_idem_applied(c, type, data);
        if (from_journal && (rc = broker_round_publish(c->broker)) != 0) {
            set_fatal(c, rc, "partition log write");
            break;
        }
        /* Proposals are in index order; one at i is the entry just applied if its term matches
         * (a discarded one was failed at the truncation that removed it). */
        while (c->pend_head && c->pend_head->index <= i) {
            struct proposal *p = c->pend_head;
            c->pend_head = p->next;
            if (!c->pend_head)
                c->pend_tail = NULL;
            p->next = NULL;
            if (p->index < i || p->term != term) {
                p->err = ERR_NOT_COMMITTED;
            } else {
                p->res = res;
                p->err = res.err;
                p->durable_ns = now;
            }
            if (!p->err && c->cluster && p->concern == WC_ALL && !all_acked(c, p->index)) {
                p->next = c->ack_head;
                c->ack_head = p;
                continue;
            }
            *done_tail = p;
            done_tail = &p->next;
        }
    }
    int rc2 = broker_round_publish(c->broker);
    if (rc2)
        set_fatal(c, rc2, "partition log write");
    atomic_store(&c->st_applied, c->applied_index);
    /* Answers first, wake-ups second (invariant 6): both are posts to the HTTP workers, which
     * run them in order, and a round may wake thousands of subscribers; posted after them, a
     * produce's answer waited behind their deliveries (docs/BENCHMARKS.md, issue 14). The
     * entries are applied, durable and published by now, so the order is free. */
    while (done_head) {
        struct proposal *p = done_head;
        done_head = p->next;
        if (atomic_load(&c->fatal) && !p->err)
            p->err = ERR_STORE_FAILED;
        finish(c, p);
    }
    broker_wake_due(c->broker);
}

/* Duplicates whose original is now applied. In a cluster the original may instead have been
 * discarded by a leader change: then the broker's table does not name it, and the retry is
 * answered not_committed (the client retries it as a new write). */
static void answer_dups(struct core *c)
{
    for (struct proposal **pp = &c->dup_head; *pp;) {
        struct proposal *p = *pp;
        if (p->wait_index <= c->applied_index) {
            *pp = p->next;
            struct entry_produce e;
            struct idem_rec ir;
            if (c->cluster &&
                (entry_produce_decode(slice_of(p->payload.data, p->payload.len), &e) ||
                 !broker_idem_get(c->broker, e.topic, e.idem_key, &ir) ||
                 ir.index != p->wait_index))
                p->err = ERR_NOT_COMMITTED;
            finish(c, p);
        } else {
            pp = &p->next;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Sequencing                                                                                  */

/* p's entry is at index in this term: it waits in the pending list (index order) for apply. */
static void pend_push(struct core *c, struct proposal *p, uint64_t index)
{
    p->index = index;
    p->term = raft_term(c->raft);
    p->appended_ns = clock_mono_ns();
    p->next = NULL;
    if (c->pend_tail)
        c->pend_tail->next = p;
    else
        c->pend_head = p;
    c->pend_tail = p;
}

static int append(struct core *c, struct proposal *p)
{
    uint64_t index = 0, leader = 0;
    int rc = raft_propose(c->raft, HOST_TYPE(p->type), slice_of(p->payload.data, p->payload.len),
                          &index, &leader);
    if (rc)
        return rc == RAFT_ERR_NOT_LEADER ? (leader ? ERR_NOT_LEADER : ERR_NO_LEADER) : rc;
    pend_push(c, p, index);
    atomic_fetch_add_explicit(&c->st_entries, 1, memory_order_relaxed);
    atomic_store(&c->st_last, index);
    return 0;
}

/* Idempotency keys of produces sequenced but not applied yet (the broker's table holds applied
 * ones only, so a leader change never leaves a key pointing at a discarded entry). */
static size_t seq_idem_key(uint8_t *out, struct slice topic, struct slice key)
{
    put_be16(out, (uint16_t)topic.len);
    memcpy(out + 2, topic.ptr, topic.len);
    memcpy(out + 2 + topic.len, key.ptr, key.len);
    return 2 + topic.len + key.len;
}

#define SEQ_IDEM_KEY_MAX (2 + BROKER_TOPIC_NAME_MAX + ENTRY_IDEM_MAX)

static struct idem_rec *seq_idem_get(struct core *c, struct slice topic, struct slice key)
{
    if (!c->seq_idem.count || topic.len > BROKER_TOPIC_NAME_MAX || key.len > ENTRY_IDEM_MAX)
        return NULL;
    uint8_t k[SEQ_IDEM_KEY_MAX];
    return hmap_get(&c->seq_idem, slice_of(k, seq_idem_key(k, topic, key)));
}

static int seq_idem_put(struct core *c, struct slice topic, struct slice key,
                        const struct idem_rec *r)
{
    if (topic.len > BROKER_TOPIC_NAME_MAX || key.len > ENTRY_IDEM_MAX)
        return ERR_INVALID;
    uint8_t k[SEQ_IDEM_KEY_MAX];
    struct idem_rec *v = xmalloc(sizeof *v);
    if (!v)
        return ERR_NOMEM;
    *v = *r;
    void *old = NULL;
    int rc = hmap_put(&c->seq_idem, slice_of(k, seq_idem_key(k, topic, key)), v, &old);
    if (rc)
        xfree(v);
    xfree(old);
    return rc;
}

static void seq_idem_applied(struct core *c, uint8_t host_type, struct slice data)
{
    if (!c->seq_idem.count || host_type != HOST_TYPE(ENTRY_PRODUCE))
        return;
    struct entry_produce e;
    if (entry_produce_decode(data, &e) || !(e.flags & PRODUCE_HAS_IDEM))
        return;
    uint8_t k[SEQ_IDEM_KEY_MAX];
    if (e.topic.len > BROKER_TOPIC_NAME_MAX || e.idem_key.len > ENTRY_IDEM_MAX)
        return;
    struct slice ks = slice_of(k, seq_idem_key(k, e.topic, e.idem_key));
    struct idem_rec *r = hmap_get(&c->seq_idem, ks);
    if (r && r->index <= c->applied_index)
        xfree(hmap_del(&c->seq_idem, ks));
}

static void seq_idem_clear(struct core *c)
{
    size_t b = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&c->seq_idem, &b, &cur)) != NULL)
        xfree(n->value);
    hmap_free(&c->seq_idem);
    hmap_init(&c->seq_idem);
}

/* Returns 0 if p was appended (or parked/completed); otherwise an error to fail it with. */
static int sequence_produce(struct core *c, struct proposal *p)
{
    struct entry_produce e;
    if (entry_produce_decode(slice_of(p->payload.data, p->payload.len), &e))
        return ERR_INVALID;
    uint8_t flags = e.flags & (PRODUCE_HAS_IDEM | PRODUCE_RAW_BATCH);
    uint32_t create_parts = 0;
    struct seq_topic *t = seq_get(c, e.topic);
    if (!t) {
        if (!c->cfg.auto_create_topics)
            return ERR_NO_TOPIC;
        create_parts = c->cfg.default_partitions;
        t = seq_add(c, e.topic, create_parts, NULL);
        if (!t)
            return ERR_NOMEM;
        flags |= PRODUCE_AUTO_CREATE;
    }
    uint32_t part;
    if (p->partition >= 0) {
        if ((uint32_t)p->partition >= t->nparts)
            return ERR_BAD_PARTITION;
        part = (uint32_t)p->partition;
    } else if (p->has_key) {
        part = kafka_partition(p->key.ptr, p->key.len, t->nparts);
    } else {
        part = (uint32_t)(t->rr++ % t->nparts);
    }
    if (flags & PRODUCE_HAS_IDEM) {
        struct idem_rec ir;
        struct idem_rec *pending = seq_idem_get(c, e.topic, e.idem_key);
        if (pending)
            ir = *pending;
        if (pending || broker_idem_get(c->broker, e.topic, e.idem_key, &ir)) {
            p->res.duplicate = true;
            p->res.partition = ir.partition;
            p->res.offset = ir.offset;
            p->res.count = ir.count;
            p->index = ir.index;
            if (ir.index <= c->applied_index) {
                finish(c, p);
            } else {
                p->wait_index = ir.index;
                p->duplicate_pending = true;
                p->next = c->dup_head;
                c->dup_head = p;
            }
            return 0;
        }
    }
    uint64_t base = t->next[part];
    entry_produce_patch(p->payload.data, flags, part, base, create_parts);
    int rc = append(c, p);
    if (rc)
        return rc;
    t->next[part] += e.count;
    if (flags & PRODUCE_HAS_IDEM) {
        struct idem_rec ir = {part, base, e.count, p->index, e.ts_ms};
        rc = seq_idem_put(c, e.topic, e.idem_key, &ir);
        if (rc)
            set_fatal(c, rc, "idempotency table");
    }
    p->res.partition = part;
    p->res.offset = base;
    p->res.count = e.count;
    p->res.timestamp_ms = e.ts_ms;
    /* Every produce hears its sequenced position at once (a rocket produce answers with it; a
     * sealed one keeps it for a timeout_ms answer); PROPOSAL_DONE follows after apply. */
    p->phase = PROPOSAL_APPENDED;
    p->done(p);
    return 0;
}

/* The topic exists in the sequencer view and the partition is in range (any partition passes
 * for RETENTION_ALL_PARTITIONS). */
static int seq_check(struct core *c, struct slice topic, uint32_t partition)
{
    struct seq_topic *t = seq_get(c, topic);
    if (!t)
        return ERR_NO_TOPIC;
    if (partition != RETENTION_ALL_PARTITIONS && partition >= t->nparts)
        return ERR_BAD_PARTITION;
    return 0;
}

static int sequence_member(struct core *c, struct proposal *p);

static int sequence(struct core *c, struct proposal *p)
{
    struct slice pl = slice_of(p->payload.data, p->payload.len);
    if (p->type >= CORE_PROP_MEMBER_ADD && p->type <= CORE_PROP_TRANSFER)
        return sequence_member(c, p);
    switch (p->type) {
    case ENTRY_PRODUCE:
        return sequence_produce(c, p);
    case ENTRY_TOPIC_CREATE: {
        struct entry_topic e;
        if (entry_topic_decode(pl, &e))
            return ERR_INVALID;
        struct seq_topic *t = seq_get(c, e.name);
        if (t) {
            if (t->nparts != e.partitions)
                return ERR_CONFLICT;
            p->res.partitions = t->nparts;
            p->res.created = false;
            finish(c, p);
            return 0;
        }
        if (!seq_add(c, e.name, e.partitions, NULL))
            return ERR_NOMEM;
        return append(c, p);
    }
    case ENTRY_TOPIC_DELETE: {
        struct entry_topic e;
        if (entry_topic_decode(pl, &e))
            return ERR_INVALID;
        struct seq_topic *t = seq_get(c, e.name);
        if (!t)
            return ERR_NO_TOPIC;
        int rc = append(c, p);
        if (!rc)
            xfree(hmap_del(&c->seq, e.name));
        return rc;
    }
    case ENTRY_COMMIT: {
        /* Like Kafka, a commit may name any offset, also one beyond the log end: it is the
         * group's bookmark, not a claim about the log (the seed's example commits 10 after one
         * message). */
        struct entry_commit e;
        if (entry_commit_decode(pl, &e))
            return ERR_INVALID;
        int rc = seq_check(c, e.topic, e.partition);
        return rc ? rc : append(c, p);
    }
    case ENTRY_DELETE_BEFORE: {
        struct entry_delete_before e;
        if (entry_delete_before_decode(pl, &e))
            return ERR_INVALID;
        int rc = seq_check(c, e.topic, e.partition);
        return rc ? rc : append(c, p);
    }
    case ENTRY_RETENTION: {
        struct entry_retention e;
        if (entry_retention_decode(pl, &e))
            return ERR_INVALID;
        int rc = slice_eq_cstr(e.topic, "*") ? 0 : seq_check(c, e.topic, e.partition);
        return rc ? rc : append(c, p);
    }
    case ENTRY_KV_PUT:
    case ENTRY_KV_DEL:
    case ENTRY_KV_EXPIRE: {
        struct entry_kv e;
        if (entry_kv_decode(pl, &e))
            return ERR_INVALID;
        int rc = kv_validate(c->kv, e.ns, e.key, e.value.len);
        if (rc)
            return rc;
        return append(c, p);
    }
    case ENTRY_SCHEMA_REGISTER: {
        /* The worker validated the schema (schema_registry_prepare); apply decides the rest. */
        static struct entry_schema e; /* core thread only */
        if (entry_schema_decode(pl, &e) || schema_validate_subject(e.subject))
            return ERR_INVALID;
        return append(c, p);
    }
    default:
        return ERR_INVALID;
    }
}

/* A membership change: add = the new member's address (a MEMBER entry) and then a CONFIG entry
 * adding it as a learner; promote / remove = a CONFIG entry. The proposal is answered when its
 * CONFIG entry is applied (committed). Raft allows one uncommitted change at a time (ERR_AGAIN:
 * retry). */
static int sequence_member(struct core *c, struct proposal *p)
{
    if (!c->cluster)
        return ERR_UNSUPPORTED;
    struct reader r = reader_of(slice_of(p->payload.data, p->payload.len));
    struct ha_node n;
    int rc = member_decode(&r, &n);
    if (rc || rd_left(&r) != 0)
        return ERR_INVALID;
    const struct raft_conf *conf = raft_conf(c->raft);
    uint64_t index = 0;
    enum raft_conf_op op;
    if (p->type == CORE_PROP_TRANSFER) {
        if (n.id == c->self_id)
            return ERR_CONFLICT;
        if (!raft_conf_is_voter(conf, n.id))
            return ERR_NOT_FOUND;
        rc = raft_transfer_leadership(c->raft, n.id);
        if (rc)
            return rc == RAFT_ERR_NOT_LEADER ? not_leader_err(c) : rc;
        LOG_I("core", "raft: handing leadership to %s (requested)", n.name);
        p->res.err = 0;
        finish(c, p);
        return 0;
    }
    if (p->type == CORE_PROP_MEMBER_ADD) {
        if (raft_conf_has(conf, n.id))
            return ERR_CONFLICT;
        if (ha_find(&c->ha, n.id) < 0 && c->ha.n_nodes == HA_MAX_NODES)
            return ERR_OVERLOADED;
        uint64_t leader;
        rc = raft_propose(c->raft, HOST_TYPE(CORE_ENTRY_MEMBER),
                          slice_of(p->payload.data, p->payload.len), &index, &leader);
        if (rc)
            return rc == RAFT_ERR_NOT_LEADER ? not_leader_err(c) : rc;
        op = RAFT_CONF_ADD_LEARNER;
    } else if (p->type == CORE_PROP_MEMBER_PROMOTE) {
        if (!raft_conf_has(conf, n.id))
            return ERR_NOT_FOUND;
        if (raft_conf_is_voter(conf, n.id))
            return ERR_CONFLICT;
        op = RAFT_CONF_PROMOTE;
    } else {
        if (!raft_conf_has(conf, n.id))
            return ERR_NOT_FOUND;
        op = RAFT_CONF_REMOVE;
    }
    rc = raft_propose_conf(c->raft, op, n.id, &index);
    if (rc)
        return rc == RAFT_ERR_NOT_LEADER ? not_leader_err(c) : rc == ERR_AGAIN ? ERR_UNAVAILABLE : rc;
    pend_push(c, p, index);
    LOG_I("core", "raft: membership change %s %s proposed at index %" PRIu64,
          op == RAFT_CONF_ADD_LEARNER ? "add learner" : op == RAFT_CONF_PROMOTE ? "promote" : "remove",
          n.name, index);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Internal proposals (retention, KV expiry)                                                   */

static void internal_done(struct proposal *p)
{
    if (p->phase != PROPOSAL_DONE)
        return;
    if (p->err && p->err != ERR_NO_TOPIC && p->err != ERR_BAD_PARTITION)
        LOG_W("core", "internal entry type %u failed: %s", p->type, err_message(p->err));
    sbuf_free(&p->payload);
    xfree(p);
}

static struct proposal *internal_new(uint8_t type)
{
    struct proposal *p = xcalloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->type = type;
    sbuf_init(&p->payload, 0);
    p->done = internal_done;
    p->partition = -1;
    return p;
}

/* Internal proposals are sequenced directly (we are on the core thread). */
static void propose_internal(struct core *c, struct proposal *p)
{
    if (!sbuf_ok(&p->payload)) {
        sbuf_free(&p->payload);
        xfree(p);
        return;
    }
    atomic_fetch_add(&c->inflight, 1);
    atomic_fetch_add(&c->inflight_bytes, p->payload.len);
    int rc = sequence(c, p);
    if (rc)
        fail(c, p, rc);
}

static void retention_fn(void *ctx, struct slice topic, uint32_t partition, uint64_t floor)
{
    struct core *c = ctx;
    struct proposal *p = internal_new(ENTRY_DELETE_BEFORE);
    if (!p)
        return;
    struct entry_delete_before e = {clock_wall_ms(), topic, partition, floor};
    entry_delete_before_encode(&p->payload, &e);
    propose_internal(c, p);
}

static void expired_fn(void *ctx, struct slice ns, struct slice key, uint64_t cas)
{
    struct core *c = ctx;
    struct proposal *p = internal_new(ENTRY_KV_EXPIRE);
    if (!p)
        return;
    struct entry_kv e = {clock_wall_ms(), ns, key, {NULL, 0}, cas, 0};
    entry_kv_encode(&p->payload, &e);
    propose_internal(c, p);
}

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints                                                                                 */

#define SNAP_FILE_MAGIC_V3 0x33504E53u /* "SNP3": ... | broker | KV (to the end) | crc */
#define SNAP_FILE_MAGIC 0x34504E53u    /* "SNP4": ... | broker | kv_len u64 | KV | schemas | crc */

struct snap_list {
    uint64_t idx[64];
    int n;
};

static int snap_list_fn(void *ctx, const char *name)
{
    struct snap_list *l = ctx;
    size_t n = strlen(name);
    if (n != 25 || strcmp(name + 20, ".snap") != 0 || l->n == 64)
        return 0;
    char *end;
    uint64_t v = strtoull(name, &end, 10);
    if (end != name + 20)
        return 0;
    l->idx[l->n++] = v;
    return 0;
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Checkpoints run in three steps so the core thread never waits for their fsyncs:
 *   capture (core thread, between apply rounds): serialize broker, KV and schema registry state
 *     at applied_index A;
 *   write (background thread): fsync every partition log (they hold at least everything up to A),
 *     write the snapshot file (tmp, fsync, rename, fsync dir), delete older snapshots;
 *   finish (core thread, when no journal fsync is in flight): trim the journal up to A and
 *     remove deleted topics' files up to A.
 * A failed write leaves the previous snapshot and the whole journal in place. */
static int checkpoint_capture(struct core *c, struct sbuf *b)
{
    sbuf_init(b, 0);
    sbuf_put_le32(b, SNAP_FILE_MAGIC);
    sbuf_put_le64(b, c->applied_index);
    sbuf_put_le64(b, c->applied_term);
    sbuf_put_le64(b, c->applied_conf_index);
    sbuf_put_le32(b, (uint32_t)c->applied_conf.len);
    sbuf_append(b, c->applied_conf.data, c->applied_conf.len);
    /* the address book (members added at run time are known from here after a restart) */
    size_t mlen_pos = b->len;
    sbuf_put_le32(b, 0);
    if (c->cluster) {
        sbuf_put_uvarint(b, c->ha.n_nodes);
        for (size_t i = 0; i < c->ha.n_nodes; i++)
            member_encode(b, &c->ha.nodes[i]);
    }
    if (sbuf_ok(b))
        put_le32(b->data + mlen_pos, (uint32_t)(b->len - mlen_pos - 4));
    size_t blen_pos = b->len;
    sbuf_put_le64(b, 0);
    int rc = broker_snapshot_write(c->broker, c->applied_index, b);
    if (!rc && sbuf_ok(b))
        put_le64(b->data + blen_pos, b->len - blen_pos - 8);
    size_t kvlen_pos = b->len;
    sbuf_put_le64(b, 0);
    if (!rc)
        rc = kv_snapshot_write(c->kv, b);
    if (!rc && sbuf_ok(b))
        put_le64(b->data + kvlen_pos, b->len - kvlen_pos - 8);
    if (!rc)
        rc = schema_registry_snapshot_write(c->schema, b);
    if (!rc && !sbuf_ok(b))
        rc = ERR_NOMEM;
    if (!rc)
        sbuf_put_le32(b, crc32c(0, b->data, b->len));
    if (rc)
        sbuf_free(b);
    return rc;
}

/* Any thread. */
static int checkpoint_write(struct core *c, const struct sbuf *b, uint64_t index,
                            uint64_t keep_from)
{
    uint64_t t0 = clock_mono_ns();
    int rc = broker_sync(c->broker);
    if (rc) {
        set_fatal(c, rc, "checkpoint: partition log fsync");
        return rc;
    }
    char name[32];
    snprintf(name, sizeof name, "%020" PRIu64 ".snap", index);
    rc = io_replace_file(c->cfg.fs, c->snap_dir, name, "snapshot.tmp", b->data, b->len);
    if (rc) {
        /* Nothing acknowledged depends on a checkpoint: not fatal unless the disk is failing. */
        LOG_E("core", "checkpoint at %" PRIu64 " failed: %s", index, err_message(rc));
        return rc;
    }
    struct snap_list l = {.n = 0};
    io_list(c->cfg.fs, c->snap_dir, snap_list_fn, &l);
    for (int i = 0; i < l.n; i++) {
        if (l.idx[i] < keep_from) {
            char old[32];
            snprintf(old, sizeof old, "%020" PRIu64 ".snap", l.idx[i]);
            char *p = io_path_join(c->snap_dir, old);
            if (p)
                io_unlink(c->cfg.fs, p);
            xfree(p);
        }
    }
    /* One directory fsync for every deletion: an undone one only brings back an older snapshot
     * (recovery loads the newest valid one) and the disk space it held; the next checkpoint
     * deletes it again. */
    io_sync_dir(c->cfg.fs, c->snap_dir);
    LOG_I("core", "checkpoint at index %" PRIu64 " written in %.1f ms", index,
          (double)(clock_mono_ns() - t0) / 1e6);
    return 0;
}

/* The meta of a checkpoint at applied_index (core thread). */
static void capture_meta(struct core *c, struct raft_snapshot_meta *m)
{
    memset(m, 0, sizeof *m);
    m->index = c->applied_index;
    m->term = c->applied_term;
    if (raft_conf_at(c->raft, c->applied_index, &m->conf) != 0)
        raft_conf_decode(slice_of(c->applied_conf.data, c->applied_conf.len), &m->conf);
}

/* Which snapshot files the next checkpoint keeps: a cluster keeps the previous one too, so the
 * journal keeps the entries since it and a follower a little behind catches up from the log
 * instead of receiving a whole snapshot. */
static uint64_t keep_from(struct core *c, uint64_t index)
{
    return c->cluster ? c->snap_cur.index : index;
}

/* Core thread, no journal sync in flight: the checkpoint `m` is durable. Compact Raft's log and
 * trim the journal (a cluster to the previous checkpoint, see keep_from). */
static void checkpoint_finish(struct core *c, const struct raft_snapshot_meta *m)
{
    uint64_t index = m->index;
    struct raft_snapshot_meta base = *m;
    if (c->cluster) {
        base = c->snap_cur;
        c->snap_prev = c->snap_cur;
    }
    c->snap_cur = *m;
    atomic_store(&c->st_snap_index, m->index);
    int rc = 0;
    if (base.index) {
        raft_compact(c->raft, &base);
        rc = journal_trim_prefix(c->j, base.index);
    }
    if (rc)
        LOG_W("core", "journal trim: %s", err_message(rc));
    broker_collect_trash(c->broker, index);
    struct journal_stats js;
    journal_stats(c->j, &js);
    c->journal_bytes_at_checkpoint = js.bytes;
    c->last_checkpoint_index = index;
    atomic_fetch_add(&c->st_checkpoints, 1);
}

/* Synchronous checkpoint (at shutdown, with nothing else running). */
static int checkpoint_now(struct core *c)
{
    if (c->applied_index == c->last_checkpoint_index)
        return 0;
    struct sbuf b;
    int rc = checkpoint_capture(c, &b);
    if (rc)
        return rc;
    uint64_t index = c->applied_index;
    struct raft_snapshot_meta m;
    capture_meta(c, &m);
    rc = checkpoint_write(c, &b, index, keep_from(c, index));
    sbuf_free(&b);
    if (!rc && !c->sync_inflight)
        checkpoint_finish(c, &m);
    return rc;
}

/* Hand a captured checkpoint to the background thread (core thread). */
static void checkpoint_start(struct core *c)
{
    if (c->ckpt_busy || c->applied_index == c->last_checkpoint_index)
        return;
    struct sbuf b;
    int rc = checkpoint_capture(c, &b);
    if (rc) {
        LOG_E("core", "checkpoint capture failed: %s", err_message(rc));
        return;
    }
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        /* The background thread leaves once stopping is set and no job waits, and core_main
         * takes the final checkpoint itself: a job handed over now might never be taken, and
         * core_main would wait for its result forever (core_stop hung; found by the core
         * simulation under ThreadSanitizer's slower scheduling). Decided under mu, where the
         * background thread decides to leave. */
        pthread_mutex_unlock(&c->mu);
        sbuf_free(&b);
        return;
    }
    c->ckpt_busy = true;
    c->last_checkpoint_ms = clock_mono_ms();
    c->ckpt_buf = b;
    c->ckpt_index = c->applied_index;
    c->ckpt_keep_from = keep_from(c, c->applied_index);
    capture_meta(c, &c->ckpt_meta);
    c->ckpt_have_job = true;
    pthread_cond_signal(&c->cond_prealloc);
    pthread_mutex_unlock(&c->mu);
}

/* The snapshot's address book: merged into this node's (RF_HA_NODES first). */
static int load_members(struct core *c, struct slice in)
{
    if (in.len == 0)
        return 0;
    struct reader r = reader_of(in);
    uint64_t n = 0;
    if (!rd_uvarint(&r, &n) || n > HA_MAX_NODES)
        return ERR_CORRUPT;
    for (uint64_t k = 0; k < n; k++) {
        struct ha_node nd;
        if (member_decode(&r, &nd) != 0)
            return ERR_CORRUPT;
        if (c->cluster && ha_find(&c->ha, nd.id) < 0 && book_put(c, &nd) != 0)
            LOG_W("core", "address book full: %s from the snapshot ignored", nd.name);
    }
    return rd_left(&r) == 0 ? 0 : ERR_CORRUPT;
}

static int load_snapshot(struct core *c, uint64_t *index_out)
{
    struct snap_list l = {.n = 0};
    int rc = io_list(c->cfg.fs, c->snap_dir, snap_list_fn, &l);
    if (rc)
        return rc;
    qsort(l.idx, (size_t)l.n, sizeof l.idx[0], cmp_u64_desc);
    *index_out = 0;
    for (int i = 0; i < l.n; i++) {
        char name[32];
        snprintf(name, sizeof name, "%020" PRIu64 ".snap", l.idx[i]);
        char *path = io_path_join(c->snap_dir, name);
        struct io_file *f = NULL;
        uint64_t size = 0;
        rc = path ? io_open(c->cfg.fs, path, IO_RDONLY, &f) : ERR_NOMEM;
        xfree(path);
        if (rc)
            continue;
        struct sbuf b;
        sbuf_init(&b, 0);
        rc = io_size(f, &size);
        /* Snapshots hold metadata, offsets, idempotency keys and KV: bounded by their limits
         * (hundreds of MiB at most), so they are read whole; the partition logs are not. */
        uint8_t *w = rc ? NULL : sbuf_reserve(&b, (size_t)size);
        if (!rc && !w)
            rc = ERR_NOMEM;
        if (!rc)
            rc = io_pread_full(f, w, (size_t)size, 0);
        io_close(f);
        if (!rc) {
            b.len = (size_t)size;
            if (size < 44 ||
                (get_le32(b.data) != SNAP_FILE_MAGIC && get_le32(b.data) != SNAP_FILE_MAGIC_V3) ||
                crc32c(0, b.data, b.len - 4) != get_le32(b.data + b.len - 4)) {
                rc = ERR_CORRUPT;
            }
        }
        if (!rc) {
            /* magic | index | term | conf_index | conf_len u32 | conf | mlen | members | blen |
             * broker | [SNP4: kv_len] kv | [SNP4: schemas] | crc */
            uint64_t idx = get_le64(b.data + 4);
            uint64_t term = get_le64(b.data + 12);
            uint64_t conf_index = get_le64(b.data + 20);
            size_t conf_len = get_le32(b.data + 28);
            size_t body = b.len - 4; /* without the crc */
            size_t pos = 32 + conf_len;
            size_t mlen = conf_len <= body && pos + 4 <= body ? get_le32(b.data + pos) : SIZE_MAX;
            size_t mpos = pos + 4;
            pos = mlen <= body - mpos ? mpos + mlen : SIZE_MAX;
            uint64_t blen = pos <= body && pos + 8 <= body ? get_le64(b.data + pos) : UINT64_MAX;
            pos = blen != UINT64_MAX ? pos + 8 : SIZE_MAX;
            if (idx != l.idx[i] || conf_len > body || pos > body || blen > body - pos ||
                conf_index > idx ||
                load_members(c, slice_of(b.data + mpos, mlen)) != 0) {
                rc = ERR_CORRUPT;
            } else {
                rc = broker_snapshot_read(c->broker, slice_of(b.data + pos, (size_t)blen));
                /* SNP4: kv_len u64 | KV | schema registry (to the end); SNP3: KV to the end
                 * (written before the registry existed: it restores empty). */
                size_t kpos = pos + (size_t)blen, kend = body;
                bool v4 = get_le32(b.data) == SNAP_FILE_MAGIC;
                if (!rc && v4) {
                    uint64_t klen = kpos + 8 <= body ? get_le64(b.data + kpos) : UINT64_MAX;
                    if (klen > body - kpos - 8)
                        rc = ERR_CORRUPT;
                    else
                        kpos += 8, kend = kpos + (size_t)klen;
                }
                if (!rc)
                    rc = kv_snapshot_read(c->kv, slice_of(b.data + kpos, kend - kpos));
                if (!rc && v4)
                    rc = schema_registry_snapshot_read(c->schema,
                                                       slice_of(b.data + kend, body - kend));
                if (!rc) {
                    *index_out = idx;
                    c->applied_term = term;
                    note_conf(c, conf_index, slice_of(b.data + 32, conf_len));
                    memset(&c->snap_cur, 0, sizeof c->snap_cur);
                    c->snap_cur.index = idx;
                    c->snap_cur.term = term;
                    if (conf_len && raft_conf_decode(slice_of(b.data + 32, conf_len),
                                                     &c->snap_cur.conf) != 0)
                        rc = ERR_CORRUPT;
                }
            }
        }
        sbuf_free(&b);
        if (!rc)
            return 0;
        if (c->installing)
            return rc ? rc : ERR_CORRUPT; /* a live broker: no fallback to older snapshots */
        if (rc != ERR_CORRUPT) {
            LOG_E("core", "snapshot %s is valid but the data directory disagrees with it: %s; "
                  "refusing to start (run: ayder logcheck %s)", name, err_message(rc),
                  c->cfg.data_dir);
            return rc;
        }
        LOG_W("core", "snapshot %s is damaged; trying an older one", name);
        /* The broker may be half-restored: start from a clean one. */
        broker_close(c->broker);
        c->broker = NULL;
        kv_free(c->kv);
        c->kv = kv_new(&c->cfg.kv);
        schema_registry_reset(c->schema); /* in place: HTTP readers may hold the pointer */
        rc = broker_open(c->cfg.fs, c->cfg.data_dir, &c->cfg.broker, &c->broker);
        if (rc || !c->kv)
            return rc ? rc : ERR_NOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Recovery                                                                                    */

static int conf_push(struct core *c, uint64_t index, struct slice data)
{
    while (c->n_confs && c->confs[c->n_confs - 1].index >= index)
        sbuf_free(&c->confs[--c->n_confs].data);
    if (c->n_confs == c->cap_confs) {
        size_t cap = c->cap_confs ? c->cap_confs * 2 : 8;
        struct conf_rec *n = xrealloc(c->confs, cap * sizeof *n);
        if (!n)
            return ERR_NOMEM;
        c->confs = n;
        c->cap_confs = cap;
    }
    struct conf_rec *r = &c->confs[c->n_confs];
    r->index = index;
    sbuf_init(&r->data, 0);
    sbuf_append(&r->data, data.ptr, data.len);
    if (!sbuf_ok(&r->data)) {
        sbuf_free(&r->data);
        return ERR_NOMEM;
    }
    c->n_confs++;
    return 0;
}

/* Forget configurations at index >= from (a Raft truncation removed them). */
static void conf_truncate(struct core *c, uint64_t from)
{
    while (c->n_confs && c->confs[c->n_confs - 1].index >= from)
        sbuf_free(&c->confs[--c->n_confs].data);
}

/* Cluster: how far this node may re-apply its journal by itself after a restart: its commit
 * mark (hardstate.h), if the journal still holds that index with that term; else 0. */
static uint64_t replay_limit(struct core *c)
{
    char *dir = io_path_join(c->cfg.data_dir, "raft");
    if (!dir)
        return 0;
    uint64_t index = 0, term = 0, t = 0;
    bool damaged = false;
    int rc = commitmark_load(c->cfg.fs, dir, &index, &term, &damaged);
    xfree(dir);
    if (rc || damaged) {
        LOG_W("core", "raft/commit is unreadable or damaged: re-applying from the checkpoint only");
        return 0;
    }
    if (index <= c->applied_index)
        return 0;
    if (index > journal_last_index(c->j) || journal_term_at(c->j, index, &t) != 0 || t != term) {
        LOG_W("core", "raft/commit names index %" PRIu64 " (term %" PRIu64 ") which the journal "
              "does not hold: re-applying from the checkpoint only", index, term);
        return 0;
    }
    return index;
}

/* Read the journal after the snapshot. Single node: every entry in it is committed (the only
 * voter's durable log), so they are applied. Cluster: entries up to the commit mark are known
 * committed and are applied; the rest is only scanned for configurations, and Raft applies it
 * once the leader says it is committed. */
static int replay(struct core *c)
{
    uint64_t first = journal_first_index(c->j), last = journal_last_index(c->j);
    if (last == 0 || last <= c->applied_index) {
        if (last < c->applied_index) {
            /* Journal trimmed past its own end (everything was in the snapshot). */
            return journal_set_base(c->j, c->applied_index, c->applied_term);
        }
        return 0;
    }
    if (first > c->applied_index + 1) {
        LOG_E("core", "journal starts at %" PRIu64 " but the snapshot ends at %" PRIu64
              ": entries are missing", first, c->applied_index);
        return ERR_CORRUPT;
    }
    uint64_t apply_to = c->cluster ? replay_limit(c) : UINT64_MAX;
    struct journal_iter *it;
    int rc = journal_iter_open(c->j, c->applied_index + 1, &it);
    if (rc)
        return rc;
    uint64_t term, index, next = c->applied_index + 1;
    uint8_t type;
    struct slice payload;
    struct sbuf copy;
    sbuf_init(&copy, 0);
    while ((rc = journal_iter_next(it, &term, &index, &type, &payload)) == 1) {
        if (index != next++) {
            rc = ERR_CORRUPT;
            break;
        }
        if (type == RAFT_ENTRY_CONFIG && (rc = conf_push(c, index, payload)) != 0)
            break;
        if (index > apply_to)
            continue;
        /* The iterator's buffer is reused by the next call: apply from a copy and end the round
         * before moving on, so staged record slices never outlive their bytes. */
        sbuf_reset(&copy);
        sbuf_append(&copy, payload.ptr, payload.len);
        if (!sbuf_ok(&copy)) {
            rc = ERR_NOMEM;
            break;
        }
        struct apply_result res;
        rc = apply_one(c, index, term, type, slice_of(copy.data, copy.len), &res);
        if (!rc)
            rc = broker_round_end(c->broker);
        if (rc)
            break;
        c->replayed++;
    }
    journal_iter_close(it);
    sbuf_free(&copy);
    return rc < 0 ? rc : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Raft storage: the journal (with the tail cache in front)                                    */

static uint64_t st_last_index(void *ctx) { return journal_last_index(((struct core *)ctx)->j); }

static int st_term_at(void *ctx, uint64_t index, uint64_t *term)
{
    struct core *c = ctx;
    uint8_t type;
    struct slice d;
    if (tailcache_get(&c->cache, index, term, &type, &d))
        return 0;
    return journal_term_at(c->j, index, term);
}

static int st_entries(void *ctx, uint64_t from, size_t max_bytes, struct raft_entry *out,
                      size_t max_count, size_t *n)
{
    struct core *c = ctx;
    uint64_t last = journal_last_index(c->j);
    size_t k = 0, bytes = 0;
    *n = 0;
    /* From the cache while it has them. */
    while (k < max_count && from + k <= last) {
        uint64_t term;
        uint8_t type;
        struct slice d;
        if (!tailcache_get(&c->cache, from + k, &term, &type, &d))
            break;
        if (k && bytes + d.len > max_bytes)
            break;
        out[k] = (struct raft_entry){term, from + k, type, d};
        bytes += d.len;
        k++;
    }
    if (k || from > last) {
        *n = k;
        return 0;
    }
    /* Older entries from the journal: copy them, the iterator's buffer is reused. */
    struct journal_iter *it;
    int rc = journal_iter_open(c->j, from, &it);
    if (rc)
        return rc;
    sbuf_reset(&c->stor_buf);
    size_t offs[RAFT_MSG_MAX_ENTRIES];
    uint64_t term, index;
    uint8_t type;
    struct slice d;
    while (k < max_count && k < RAFT_MSG_MAX_ENTRIES &&
           (rc = journal_iter_next(it, &term, &index, &type, &d)) == 1) {
        if (k && bytes + d.len > max_bytes)
            break;
        offs[k] = c->stor_buf.len;
        sbuf_append(&c->stor_buf, d.ptr, d.len);
        out[k] = (struct raft_entry){term, index, type, {NULL, d.len}};
        bytes += d.len;
        k++;
    }
    journal_iter_close(it);
    if (rc < 0)
        return rc;
    if (!sbuf_ok(&c->stor_buf))
        return ERR_NOMEM;
    for (size_t i = 0; i < k; i++)
        out[i].data.ptr = c->stor_buf.data + offs[i];
    *n = k;
    return 0;
}

static int st_config_before(void *ctx, uint64_t before, uint64_t *index, struct slice *data)
{
    struct core *c = ctx;
    for (size_t i = c->n_confs; i-- > 0;) {
        if (c->confs[i].index < before) {
            *index = c->confs[i].index;
            *data = slice_of(c->confs[i].data.data, c->confs[i].data.len);
            return 0;
        }
    }
    return ERR_NOT_FOUND;
}

static uint64_t raft_rand(void *ctx)
{
    uint64_t *s = ctx;
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void tp_wake_fn(void *ctx)
{
    struct core *c = ctx;
    pthread_mutex_lock(&c->mu);
    atomic_store(&c->tp_wake, true);
    pthread_mutex_unlock(&c->mu);
    pthread_cond_signal(&c->cond);
}

/* Raft state, bootstrap entry, hard state, transport (core_open, no threads yet). */
static int raft_setup(struct core *c)
{
    const struct core_config *cfg = &c->cfg;
    struct io_fs *fs = cfg->fs;
    c->raft_dir = io_path_join(cfg->data_dir, "raft");
    if (!c->raft_dir)
        return ERR_NOMEM;
    int rc = io_mkdir_durable(fs, c->raft_dir);
    if (rc)
        return rc;
    uint64_t term = 0, vote = 0;
    rc = hardstate_load(fs, c->raft_dir, &term, &vote);
    if (rc) {
        LOG_E("core", "%s/meta (Raft term and vote) is damaged: refusing to start, a node that "
              "forgot its vote could vote twice", c->raft_dir);
        return rc;
    }
    if (journal_last_index(c->j) == 0 && c->applied_index == 0 && !c->ha.join) {
        /* A fresh member: every initial voter writes the same bootstrap entry at index 1. */
        uint64_t voters[HA_MAX_NODES];
        uint32_t nv = 0;
        if (c->cluster)
            for (size_t i = 0; i < c->ha.n_nodes; i++)
                voters[nv++] = c->ha.nodes[i].id;
        else
            voters[nv++] = c->self_id;
        struct sbuf b;
        sbuf_init(&b, 0);
        rc = raft_bootstrap_entry(voters, nv, &b);
        if (!rc)
            rc = journal_append(c->j, 1, 1, RAFT_ENTRY_CONFIG, slice_of(b.data, b.len));
        if (!rc)
            rc = journal_sync_now(c->j);
        if (!rc)
            rc = conf_push(c, 1, slice_of(b.data, b.len));
        sbuf_free(&b);
        if (rc)
            return rc;
    }
    c->storage = (struct raft_storage){c, st_last_index, st_term_at, st_entries, st_config_before};
    uint32_t tick_ms = c->cluster ? RAFT_TICK_MS_CLUSTER : 100;
    c->raft_tick_ms = tick_ms;
    c->rand_state = clock_mono_ns() ^ ((uint64_t)getpid() << 32) ^ c->self_id;
    if (!c->rand_state)
        c->rand_state = 1;
    struct raft_options o = {
        .id = c->self_id,
        .storage = &c->storage,
        .hs = {term, vote},
        .election_ticks = c->cluster ? c->ha.election_timeout_ms / tick_ms : 3,
        .heartbeat_ticks = c->cluster ? c->ha.heartbeat_ms / tick_ms : 1,
        .max_msg_bytes = 1u << 20,
        .max_inflight = 32,
        .pre_vote = true,
        .check_quorum = c->cluster,
        .rand = raft_rand,
        .rand_ctx = &c->rand_state,
        .applied = c->applied_index,
        .snap = c->snap_cur,
    };
    if (o.heartbeat_ticks == 0)
        o.heartbeat_ticks = 1;
    if (o.election_ticks <= o.heartbeat_ticks)
        o.election_ticks = o.heartbeat_ticks + 1;
    rc = raft_new(&o, &c->raft);
    if (rc)
        return rc;
    c->ents = xcalloc(RAFT_MSG_MAX_ENTRIES, sizeof *c->ents);
    if (!c->ents)
        return ERR_NOMEM;
    if (!c->cluster)
        return 0;
    rc = snapx_rx_new(fs, cfg->data_dir, &c->snap_rx);
    if (rc)
        return rc;
    struct transport_peer_config peers[HA_MAX_NODES];
    size_t np = 0;
    for (size_t i = 0; i < c->ha.n_nodes; i++) {
        if (i == c->ha.self)
            continue;
        peers[np++] = (struct transport_peer_config){c->ha.nodes[i].id, c->ha.nodes[i].name,
                                                     c->ha.nodes[i].host,
                                                     c->ha.nodes[i].raft_port};
    }
    const struct ha_node *me = &c->ha.nodes[c->ha.self];
    struct transport_config tc = {
        .self_id = c->self_id,
        .self_name = me->name,
        .cluster_id = c->ha.cluster_id,
        .listen_host = me->host,
        .listen_port = me->raft_port,
        .peers = peers,
        .n_peers = np,
        .tls = c->ha.tls,
        .tls_ca_file = c->ha.tls_ca,
        .tls_cert_file = c->ha.tls_cert,
        .tls_key_file = c->ha.tls_key,
        .wake = tp_wake_fn,
        .wake_ctx = c,
    };
    return transport_new(&tc, &c->tp);
}

int core_open(const struct core_config *cfg, struct core **out)
{
    uint64_t t0 = clock_mono_ns();
    struct core *c = xcalloc(1, sizeof *c);
    if (!c)
        return ERR_NOMEM;
    c->cfg = *cfg;
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->why_mu, NULL);
    pthread_mutex_init(&c->pub_mu, NULL);
    /* The core thread's timed wait uses CLOCK_MONOTONIC deadlines. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_cond_init(&c->cond_prealloc, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&c->sync_cond, NULL);
    hmap_init(&c->seq);
    hmap_init(&c->seq_idem);
    sbuf_init(&c->applied_conf, 0);
    sbuf_init(&c->msg_buf, 0);
    sbuf_init(&c->stor_buf, 0);
    c->cluster = cfg->ha && cfg->ha->enabled;
    if (c->cluster) {
        c->ha = *cfg->ha;
        c->self_id = c->ha.nodes[c->ha.self].id;
    } else {
        ha_config_default(&c->ha);
        c->self_id = 1;
    }
    if (!c->cfg.write_timeout_ms)
        c->cfg.write_timeout_ms = WRITE_TIMEOUT_MS_DEFAULT;
    tailcache_init(&c->cache, c->cluster ? CACHE_MAX_ENTRIES : 1,
                   c->cluster ? CACHE_MAX_BYTES : 0);
    struct io_fs *fs = cfg->fs;
    /* The data dir's own entry must be durable too: fsync its parent. */
    int rc = io_mkdir_durable(fs, cfg->data_dir);
    c->journal_dir = io_path_join(cfg->data_dir, "journal");
    c->snap_dir = io_path_join(cfg->data_dir, "snapshot");
    if (!rc && (!c->journal_dir || !c->snap_dir))
        rc = ERR_NOMEM;
    if (!rc)
        rc = io_mkdir_durable(fs, c->snap_dir);
    if (rc) {
        LOG_E("core", "data dir %s: %s (errno %d)", cfg->data_dir, err_message(rc), io_last_errno());
        goto fail;
    }
    rc = snapx_recover(fs, cfg->data_dir);
    if (rc < 0) {
        LOG_E("core", "finishing an interrupted snapshot install: %s", err_message(rc));
        goto fail;
    }
    if (rc == 1)
        LOG_W("core", "finished a snapshot install that a crash interrupted");
    c->kv = kv_new(&cfg->kv);
    c->schema = schema_registry_new(&cfg->schema);
    if (!c->kv || !c->schema) {
        rc = ERR_NOMEM;
        goto fail;
    }
    rc = broker_open(fs, cfg->data_dir, &cfg->broker, &c->broker);
    if (rc)
        goto fail;
    uint64_t snap_index = 0;
    rc = load_snapshot(c, &snap_index);
    if (rc) {
        LOG_E("core", "loading the snapshot failed: %s", err_message(rc));
        goto fail;
    }
    c->applied_index = snap_index;
    c->last_checkpoint_index = snap_index;
    atomic_store(&c->st_snap_index, snap_index);
    if (c->applied_conf.len && (rc = conf_push(c, c->applied_conf_index,
                                               slice_of(c->applied_conf.data,
                                                        c->applied_conf.len))) != 0)
        goto fail;
    struct journal_recovery jr;
    memset(&jr, 0, sizeof jr);
    rc = journal_open(fs, c->journal_dir, &cfg->journal, &c->j, &jr);
    if (rc) {
        LOG_E("core", "journal: %s: %s", err_message(rc), jr.detail);
        goto fail;
    }
    if (jr.truncated_bytes)
        LOG_W("core", "journal: torn tail repaired: %s", jr.detail);
    rc = replay(c);
    if (rc) {
        LOG_E("core", "journal replay failed at index %" PRIu64 ": %s", c->applied_index + 1,
              err_message(rc));
        goto fail;
    }
    rc = raft_setup(c);
    if (rc) {
        LOG_E("core", "raft: %s", err_message(rc));
        goto fail;
    }
    if ((rc = broker_scan_trash(c->broker)) != 0)
        LOG_W("core", "scanning deleted topics: %s", err_message(rc));
    broker_each_topic(c->broker, seq_load_fn, c);
    if (atomic_load(&c->fatal)) {
        rc = ERR_NOMEM;
        goto fail;
    }
    c->recovery_ms = (clock_mono_ns() - t0) / 1000000;
    atomic_store(&c->st_applied, c->applied_index);
    atomic_store(&c->st_durable, c->applied_index);
    atomic_store(&c->st_last, journal_last_index(c->j));
    struct journal_stats js;
    journal_stats(c->j, &js);
    c->journal_bytes_at_checkpoint = js.bytes;
    atomic_store_explicit(&c->st_jbytes, js.bytes, memory_order_relaxed);
    atomic_store_explicit(&c->st_jsegs, js.segments, memory_order_relaxed);
    c->last_checkpoint_ms = clock_mono_ms();
    LOG_I("core", "recovered to index %" PRIu64 " (snapshot %" PRIu64 ", %" PRIu64
          " entries replayed) in %" PRIu64 " ms", c->applied_index, snap_index, c->replayed,
          c->recovery_ms);
    *out = c;
    return 0;
fail:
    core_close(c);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Threads                                                                                     */

/* The background thread: writes checkpoints handed over by the core thread (their fsyncs never
 * stall writes), and keeps one zero-filled spare journal segment ready (journal_make_spare), so a
 * new segment's fsyncs overwrite written blocks instead of growing the file (about twice as fast
 * on ext4). Polls every 50 ms; a roll that finds no spare simply creates the segment empty. */
static void *prealloc_main(void *arg)
{
    struct core *c = arg;
    pthread_setname_np(pthread_self(), "ayder-bg");
    bool warned = false;
    uint64_t last_flush_ms = clock_mono_ms();
    pthread_mutex_lock(&c->mu);
    while (!c->stopping || c->ckpt_have_job) {
        if (c->ckpt_have_job) {
            struct sbuf b = c->ckpt_buf;
            uint64_t index = c->ckpt_index, keep = c->ckpt_keep_from;
            c->ckpt_have_job = false;
            pthread_mutex_unlock(&c->mu);
            int crc = checkpoint_write(c, &b, index, keep);
            sbuf_free(&b);
            pthread_mutex_lock(&c->mu);
            c->ckpt_rc = crc;
            c->ckpt_have_result = true;
            pthread_cond_signal(&c->cond);
            continue;
        }
        pthread_mutex_unlock(&c->mu);
        /* Write partition-log data back continuously (every 250 ms) so a checkpoint's fsyncs find
         * little dirty data: one large flush would queue the journal's commits behind it. */
        uint64_t now = clock_mono_ms();
        if (now - last_flush_ms >= 250 && !atomic_load(&c->fatal)) {
            last_flush_ms = now;
            int frc = broker_sync(c->broker);
            if (frc)
                set_fatal(c, frc, "partition log fsync");
        }
        uint64_t seg = c->cfg.journal.segment_bytes ? c->cfg.journal.segment_bytes
                                                    : JOURNAL_SEGMENT_BYTES_DEFAULT;
        /* A spare is reclaimable space: never let it push the disk under the write watermark,
         * and give it back when space runs low. */
        uint64_t free_bytes = UINT64_MAX;
        io_free_bytes(c->cfg.fs, c->journal_dir, &free_bytes);
        int rc = 0;
        if (!c->cfg.journal.use_spare) {
            /* preallocation off */
        } else if (free_bytes < c->cfg.min_free_bytes + 2 * seg) {
            char spare[4096];
            snprintf(spare, sizeof spare, "%s/spare", c->journal_dir);
            io_unlink(c->cfg.fs, spare);
        } else {
            rc = journal_make_spare(c->cfg.fs, c->journal_dir, seg);
        }
        if (rc < 0 && !warned) {
            LOG_W("core", "journal preallocation failed: %s (segments are created empty)",
                  err_message(rc));
            warned = true;
        }
        pthread_mutex_lock(&c->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (!c->stopping && !c->ckpt_have_job)
            pthread_cond_timedwait(&c->cond_prealloc, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* The sync thread: takes one token at a time, fsyncs, hands the result back. The core thread
 * hands out the next token only after consuming the previous result. It sleeps between tokens:
 * spinning for the next one (tried until session 3) cost about 2 us of CPU per request on a
 * 2-core box where the load generator competes for the same cores, and saved no context switch
 * once durable writes stopped waking the core during an fsync (sync_running). */
static void *sync_main(void *arg)
{
    struct core *c = arg;
    pthread_setname_np(pthread_self(), "ayder-sync");
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->sync_tok && !c->sync_stop)
            pthread_cond_wait(&c->sync_cond, &c->mu);
        if (!c->sync_tok)
            break;
        struct journal_sync *tok = c->sync_tok;
        c->sync_tok = NULL;
        pthread_mutex_unlock(&c->mu);
        int rc = journal_sync_run(tok);
        int e = io_last_errno(); /* thread-local: hand it to the core thread for the message */
        pthread_mutex_lock(&c->mu);
        c->sync_running = false;
        c->sync_done_tok = tok;
        c->sync_rc = rc;
        c->sync_errno = e;
        c->sync_has_result = true;
        /* Signal after unlocking (here and in start_sync/core_propose): a waiter woken while the
         * signaller still holds mu would block on it at once, which costs two more futex calls
         * and a context switch per hand-off. */
        pthread_mutex_unlock(&c->mu);
        pthread_cond_signal(&c->cond);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void fail_list(struct core *c, struct proposal **head, int err)
{
    while (*head) {
        struct proposal *p = *head;
        *head = p->next;
        fail(c, p, err);
    }
}

static void fail_all(struct core *c, int err)
{
    fail_list(c, &c->pend_head, err);
    c->pend_tail = NULL;
    fail_list(c, &c->dup_head, err);
    fail_list(c, &c->held_head, err);
    c->held_tail = NULL;
    /* applied and committed: only the "all" part is unconfirmed */
    while (c->ack_head) {
        struct proposal *p = c->ack_head;
        c->ack_head = p->next;
        p->concern_met = WC_MAJORITY;
        finish(c, p);
    }
}

static int not_leader_err(struct core *c)
{
    return raft_leader(c->raft) ? ERR_NOT_LEADER : ERR_NO_LEADER;
}

static void check_space(struct core *c, bool force);

/* Internal entries (retention floors, TTL expiry) are proposed by the leader only. */
/* Cluster: record how far a restart may re-apply by itself (hardstate.h, commitmark): the
 * applied index, capped at what the journal has fsynced (so the entries are there after a crash).
 * Not fsynced: losing it only means a lower restart point. */
static void write_commit_mark(struct core *c)
{
    uint64_t m = c->applied_index, d = journal_durable_index(c->j), t = 0;
    if (d < m)
        m = d;
    if (!c->cluster || m <= c->mark_index || journal_term_at(c->j, m, &t) != 0)
        return;
    /* The first mark of a process creates the file durably (once: two fsyncs on this thread);
     * the name of a file made with a bare create would be lost with power even if the
     * following overwrites were not, and an empty file reads as a damaged mark. */
    int rc = c->mark_f ? commitmark_write(c->mark_f, m, t)
                       : commitmark_create(c->cfg.fs, c->raft_dir, m, t, &c->mark_f);
    if (rc) {
        if (!c->mark_failed)
            LOG_W("core", "writing %s/commit: %s (a restart re-applies from the checkpoint)",
                  c->raft_dir, err_message(rc));
        c->mark_failed = true;
        return;
    }
    c->mark_index = m;
    atomic_store(&c->st_mark, m);
}

static void tick(struct core *c)
{
    int64_t now = clock_wall_ms();
    check_space(c, true);
    write_commit_mark(c);
    bool lead = c->leader_ready;
    /* Retention and TTL sweeps once a second (every 5th tick). Retention visits every partition
     * (index lookups, no data reads); TTL expiry reads only the expired head of the KV expiry
     * index (O(1) when nothing has expired). */
    if (++c->ticks % 5 == 0 && lead) {
        broker_retention_scan(c->broker, now, retention_fn, c);
        kv_collect_expired(c->kv, now, 1000, expired_fn, c);
    }
    struct journal_stats js;
    journal_stats(c->j, &js);
    atomic_store_explicit(&c->st_jbytes, js.bytes, memory_order_relaxed); /* after trims too */
    atomic_store_explicit(&c->st_jsegs, js.segments, memory_order_relaxed);
    bool due = (c->cfg.checkpoint_interval_ms &&
                clock_mono_ms() - c->last_checkpoint_ms >= c->cfg.checkpoint_interval_ms) ||
               js.bytes - c->journal_bytes_at_checkpoint >= c->cfg.checkpoint_journal_bytes;
    if (due && !c->ckpt_busy && !c->trim_pending)
        c->checkpoint_due = true;
}

/* Entries that free space (or are tiny) stay allowed while the disk is nearly full, so an operator
 * can make room through the API. */
static bool frees_space(uint8_t type)
{
    return type == ENTRY_DELETE_BEFORE || type == ENTRY_TOPIC_DELETE || type == ENTRY_KV_DEL ||
           type == ENTRY_KV_EXPIRE || type == ENTRY_RETENTION;
}

/* The free-space watermark: below min_free_bytes, new writes are refused with 507 before the
 * disk is actually full, so neither the journal nor a partition log append runs out of space in
 * the middle of an apply (which would have to stop the node). Checked at most every 10 ms. */
static void check_space(struct core *c, bool force)
{
    uint64_t now = clock_mono_ms();
    if (!c->cfg.min_free_bytes || (!force && now - c->space_checked_ms < 10))
        return;
    c->space_checked_ms = now;
    uint64_t free_bytes;
    if (io_free_bytes(c->cfg.fs, c->cfg.data_dir, &free_bytes))
        return;
    bool low = free_bytes < c->cfg.min_free_bytes;
    if (low != c->nospace_watermark) {
        c->nospace_watermark = low;
        if (low)
            LOG_E("core", "free space %" PRIu64 " bytes is below --min-free-bytes %" PRIu64
                  ": writes refused (507) until space returns", free_bytes, c->cfg.min_free_bytes);
        else
            LOG_I("core", "free space is back (%" PRIu64 " bytes): writes accepted", free_bytes);
    }
    atomic_store(&c->nospace, c->nospace_journal || c->nospace_watermark);
}

/* ------------------------------------------------------------------------------------------ */
/* Driving Raft                                                                                */

#define ASYNC_QUIET_MS 200
/* Inline only for small groups: with large ones (NDJSON batches) the round's own work (sequencing
 * and applying thousands of records) is long, and overlapping it with the fsync on the sync
 * thread pays more than the hand-offs cost. */
#define INLINE_GROUP_BYTES_MAX (64u << 10)

static bool sync_inline(struct core *c)
{
    return !c->cluster && c->cfg.inline_sync &&
           clock_mono_ms() - c->last_async_ms >= ASYNC_QUIET_MS &&
           journal_unsynced_bytes(c->j) <= INLINE_GROUP_BYTES_MAX;
}

/* Flushed entries await an fsync and none is in flight. */
static bool sync_needed(struct core *c)
{
    return !atomic_load(&c->fatal) && !c->sync_inflight &&
           journal_flushed_index(c->j) > journal_durable_index(c->j);
}

/* The token for the next group, or NULL (nothing to sync, or the store just failed). */
static struct journal_sync *sync_prepare(struct core *c)
{
    struct journal_sync *t = NULL;
    int rc = journal_sync_prepare(c->j, &t);
    if (rc) {
        set_fatal(c, rc, "journal sync");
        return NULL;
    }
    return t;
}

/* Start the next group's fsync if none is in flight and entries await one: on the sync thread,
 * or (inline mode) mark it for run_sync_inline at the end of the round. */
static void start_sync(struct core *c)
{
    if (!sync_needed(c))
        return;
    if (sync_inline(c)) {
        c->sync_wanted = true;
        return;
    }
    struct journal_sync *t = sync_prepare(c);
    if (t) {
        c->sync_inflight = true;
        pthread_mutex_lock(&c->mu);
        c->sync_tok = t;
        c->sync_running = !c->cluster;
        pthread_mutex_unlock(&c->mu);
        pthread_cond_signal(&c->sync_cond);
    }
}

/* A finished fsync: the journal's durable index advances; Raft hears it via report_persisted
 * (not from inside a ready). */
static void sync_finished(struct core *c, struct journal_sync *tok, int sync_rc, int sync_errno)
{
    c->sync_inflight = false;
    int rc = journal_sync_done(c->j, tok, sync_rc);
    if (rc) {
        io_set_last_errno(sync_errno);
        set_fatal(c, rc, "journal fsync");
        return;
    }
    uint64_t d = journal_durable_index(c->j), t = 0;
    atomic_store(&c->st_durable, d);
    struct journal_stats js;
    journal_stats(c->j, &js);
    /* One sync per call here; the delta also covers a journal_sync_now that ran in between
     * (recovery, truncation), spread evenly over the syncs it counted. */
    uint64_t prev_n = atomic_load_explicit(&c->st_syncs, memory_order_relaxed);
    uint64_t prev_ns = atomic_load_explicit(&c->st_sync_ns, memory_order_relaxed);
    if (js.syncs > prev_n && js.sync_ns_total >= prev_ns) {
        uint64_t n = js.syncs - prev_n, each = (js.sync_ns_total - prev_ns) / n;
        for (uint64_t i = 0; i < n && i < 16; i++)
            metrics_hist_observe(&c->h_fsync, each);
    }
    atomic_store_explicit(&c->st_syncs, js.syncs, memory_order_relaxed);
    atomic_store_explicit(&c->st_sync_ns, js.sync_ns_total, memory_order_relaxed);
    atomic_store_explicit(&c->st_jbytes, js.bytes, memory_order_relaxed);
    atomic_store_explicit(&c->st_jsegs, js.segments, memory_order_relaxed);
    if (d && journal_term_at(c->j, d, &t) == 0) {
        c->persist_pending = true;
        c->persist_index = d;
        c->persist_term = t;
    }
}

static void report_persisted(struct core *c)
{
    if (!c->persist_pending || atomic_load(&c->fatal))
        return;
    c->persist_pending = false;
    raft_persisted(c->raft, c->persist_index, c->persist_term);
}

/* Inline mode: the fsync start_sync asked for, on this thread, after the round's applies and
 * answers went out. Durable writes arriving meanwhile do not wake us (sync_running); they are
 * taken right after, in the next round, which skips the wait. */
static void run_sync_inline(struct core *c)
{
    c->sync_wanted = false;
    struct journal_sync *t = sync_needed(c) ? sync_prepare(c) : NULL;
    if (!t)
        return;
    c->sync_inflight = true;
    pthread_mutex_lock(&c->mu);
    c->sync_running = true;
    pthread_mutex_unlock(&c->mu);
    int rc = journal_sync_run(t);
    int e = io_last_errno();
    pthread_mutex_lock(&c->mu);
    c->sync_running = false;
    pthread_mutex_unlock(&c->mu);
    sync_finished(c, t, rc, e);
    report_persisted(c);
    c->skip_wait = true;
}

/* Block until the in-flight fsync returns (a truncation must not race it). */
static void wait_sync(struct core *c)
{
    if (!c->sync_inflight)
        return;
    pthread_mutex_lock(&c->mu);
    while (!c->sync_has_result)
        pthread_cond_wait(&c->cond, &c->mu);
    struct journal_sync *tok = c->sync_done_tok;
    int rc = c->sync_rc, e = c->sync_errno;
    c->sync_has_result = false;
    c->sync_done_tok = NULL;
    pthread_mutex_unlock(&c->mu);
    sync_finished(c, tok, rc, e);
}

static void flush_journal(struct core *c)
{
    if (atomic_load(&c->fatal))
        return;
    int rc = journal_flush(c->j);
    if (rc == ERR_NOSPACE) {
        if (!c->nospace_journal)
            LOG_E("core", "journal: no space left on device; writes refused until space returns");
        c->nospace_journal = true;
    } else if (rc) {
        set_fatal(c, rc, "journal write");
    } else if (c->nospace_journal && journal_flushed_index(c->j) == journal_last_index(c->j)) {
        c->nospace_journal = false;
        LOG_I("core", "journal: space is back; buffered entries written");
    }
    atomic_store(&c->nospace, c->nospace_journal || c->nospace_watermark);
}

/* A Raft truncation removed entries >= from: their proposals can never commit. */
static void discard_from(struct core *c, uint64_t from)
{
    struct proposal **pp = &c->pend_head, *last = NULL;
    while (*pp) {
        struct proposal *p = *pp;
        if (p->index >= from) {
            *pp = p->next;
            fail(c, p, ERR_NOT_COMMITTED);
        } else {
            last = p;
            pp = &p->next;
        }
    }
    c->pend_tail = last;
    for (pp = &c->dup_head; *pp;) {
        struct proposal *p = *pp;
        if (p->wait_index >= from) {
            *pp = p->next;
            fail(c, p, ERR_NOT_COMMITTED);
        } else {
            pp = &p->next;
        }
    }
}

static void send_msgs(struct core *c, const struct raft_msg *msgs, size_t n)
{
    if (!c->tp)
        return;
    for (size_t i = 0; i < n; i++) {
        sbuf_reset(&c->msg_buf);
        sbuf_putc(&c->msg_buf, FRAME_RAFT);
        if (raft_msg_encode(&msgs[i], &c->msg_buf) != 0 || !sbuf_ok(&c->msg_buf))
            continue; /* dropped: Raft resends */
        transport_send(c->tp, msgs[i].to, slice_of(c->msg_buf.data, c->msg_buf.len));
    }
}

static void rb_confirmed(struct core *c, uint64_t seq, uint64_t index);

/* ------------------------------------------------------------------------------------------ */
/* Snapshot transfer (InstallSnapshot): the leader streams its checkpoint and partition files
 * (snapx.h) on a sender thread, then sends the RAFT_MSG_SNAPSHOT; the follower stages the files
 * and installs them when Raft says so.                                                        */

/* Sender thread. */
static int snap_send_cb(void *ctx, uint64_t to, struct slice chunk)
{
    struct core *c = ctx;
    uint8_t *buf = xmalloc(chunk.len + 1);
    if (!buf)
        return ERR_NOMEM;
    buf[0] = FRAME_SNAP;
    memcpy(buf + 1, chunk.ptr, chunk.len);
    int rc = transport_send(c->tp, to, slice_of(buf, chunk.len + 1));
    xfree(buf);
    return rc;
}

/* Sender thread (or the core thread when a stream could not start). */
static void snap_done_cb(void *ctx, uint64_t to, uint64_t snap_index, uint64_t snap_term, int rc)
{
    (void)snap_index;
    (void)snap_term;
    struct core *c = ctx;
    int i = ha_find(&c->ha, to);
    if (i < 0)
        return;
    pthread_mutex_lock(&c->mu);
    c->snap_out[i].rc = rc;
    c->snap_out[i].finished = true;
    c->snap_results = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* Core thread, inside a ready: start streaming to each follower Raft named. */
static void snap_start(struct core *c, const struct raft_msg *msgs, size_t n)
{
    for (size_t k = 0; k < n && c->tp; k++) {
        const struct raft_msg *m = &msgs[k];
        int i = ha_find(&c->ha, m->to);
        if (i < 0)
            continue;
        struct snap_out *o = &c->snap_out[i];
        snapx_sender_free(o->s); /* a stale stream of an older term */
        o->s = NULL;
        o->to = m->to;
        o->term = m->term;
        o->pending = true;
        pthread_mutex_lock(&c->mu);
        o->finished = false;
        pthread_mutex_unlock(&c->mu);
        sbuf_reset(&o->msg);
        sbuf_putc(&o->msg, FRAME_RAFT);
        int rc = raft_msg_encode(m, &o->msg);
        if (!rc && !sbuf_ok(&o->msg))
            rc = ERR_NOMEM;
        if (!rc)
            rc = snapx_sender_start(c->cfg.fs, c->cfg.data_dir, m->index, m->log_term, m->to,
                                    snap_send_cb, snap_done_cb, c, &o->s);
        if (rc) {
            LOG_W("core", "raft: cannot stream snapshot %" PRIu64 " to %s: %s", m->index,
                  c->ha.nodes[i].name, err_message(rc));
            snap_done_cb(c, m->to, m->index, m->log_term, rc);
        } else {
            LOG_I("core", "raft: streaming snapshot %" PRIu64 " to %s", m->index,
                  c->ha.nodes[i].name);
        }
    }
}

/* Core thread, outside a ready: finished streams -> the snapshot message, raft_snapshot_done. */
static void snap_results(struct core *c)
{
    for (size_t i = 0; i < c->ha.n_nodes; i++) {
        struct snap_out *o = &c->snap_out[i];
        if (!o->pending)
            continue;
        pthread_mutex_lock(&c->mu);
        bool fin = o->finished;
        int rc = o->rc;
        pthread_mutex_unlock(&c->mu);
        if (!fin)
            continue;
        snapx_sender_free(o->s);
        o->s = NULL;
        o->pending = false;
        /* A stream of an older term is dropped unreported (raft.h, snap_send). */
        if (raft_term(c->raft) != o->term || raft_role(c->raft) != RAFT_LEADER)
            continue;
        if (!rc)
            rc = transport_send(c->tp, o->to, slice_of(o->msg.data, o->msg.len));
        if (!rc)
            atomic_fetch_add(&c->st_snap_sent, 1);
        else
            LOG_W("core", "raft: snapshot to %s failed: %s (retried)", c->ha.nodes[i].name,
                  err_message(rc));
        raft_snapshot_done(c->raft, o->to, rc == 0);
    }
}

static void snap_stop_senders(struct core *c)
{
    for (size_t i = 0; i < HA_MAX_NODES; i++) {
        snapx_sender_free(c->snap_out[i].s);
        c->snap_out[i].s = NULL;
        sbuf_free(&c->snap_out[i].msg);
    }
}

static void on_snap_chunk(struct core *c, uint64_t from, struct slice bytes)
{
    (void)from;
    struct snapx_chunk ch;
    if (!c->snap_rx || snapx_chunk_decode(bytes, &ch) != 0)
        return;
    snapx_rx_chunk(c->snap_rx, &ch);
}

static bool snap_staged(struct core *c, const struct raft_msg *m)
{
    if (m->index <= raft_commit(c->raft))
        return true; /* nothing to install: Raft just acknowledges */
    return c->snap_rx && snapx_rx_complete(c->snap_rx, m->index, m->log_term);
}

static int load_snapshot(struct core *c, uint64_t *index_out);

/* Replace this node's state with the leader's snapshot (staged in full), durably, before the
 * ready's acknowledgement leaves. The broker and KV are reset in place (HTTP readers keep their
 * pointers); the journal restarts empty at the snapshot's base. A failure in the middle stops the
 * process: the next start finishes or discards the install (snapx_recover) from a clean state. */
static void install_snapshot(struct core *c, const struct raft_snapshot_meta *m)
{
    uint64_t t0 = clock_mono_ns();
    wait_sync(c);
    if (c->apply_it) {
        journal_iter_close(c->apply_it);
        c->apply_it = NULL;
    }
    broker_reset(c->broker);
    kv_reset(c->kv);
    schema_registry_reset(c->schema);
    journal_close(c->j);
    c->j = NULL;
    snapx_rx_reset(c->snap_rx);
    int rc = snapx_install(c->cfg.fs, c->cfg.data_dir, m->index);
    struct journal_recovery jr;
    memset(&jr, 0, sizeof jr);
    if (!rc)
        rc = journal_open(c->cfg.fs, c->journal_dir, &c->cfg.journal, &c->j, &jr);
    if (!rc)
        rc = journal_set_base(c->j, m->index, m->term);
    uint64_t idx = 0;
    c->installing = true;
    if (!rc)
        rc = load_snapshot(c, &idx);
    c->installing = false;
    if (!rc && idx != m->index)
        rc = ERR_CORRUPT;
    if (rc) {
        LOG_E("core", "installing the leader's snapshot %" PRIu64 " failed: %s; stopping (the "
              "next start completes or discards it)", m->index, err_message(rc));
        _exit(70);
    }
    c->applied_index = m->index;
    c->applied_term = m->term;
    c->last_checkpoint_index = m->index;
    memset(&c->snap_prev, 0, sizeof c->snap_prev);
    conf_truncate(c, 0);
    if (c->applied_conf.len)
        conf_push(c, c->applied_conf_index, slice_of(c->applied_conf.data, c->applied_conf.len));
    tailcache_clear(&c->cache);
    seq_idem_clear(c);
    /* Our own proposals at or below the base: in the snapshot or not, we cannot tell. */
    struct proposal **pp = &c->pend_head, *last = NULL;
    while (*pp) {
        struct proposal *p = *pp;
        if (p->index <= m->index) {
            *pp = p->next;
            fail(c, p, ERR_COMMIT_TIMEOUT);
        } else {
            last = p;
            pp = &p->next;
        }
    }
    c->pend_tail = last;
    struct journal_stats js;
    journal_stats(c->j, &js);
    c->journal_bytes_at_checkpoint = js.bytes;
    atomic_store(&c->st_applied, c->applied_index);
    atomic_store(&c->st_durable, m->index);
    atomic_store(&c->st_last, m->index);
    atomic_fetch_add(&c->st_snap_installed, 1);
    atomic_store(&c->st_snap_index, m->index);
    LOG_I("core", "raft: installed the leader's snapshot at index %" PRIu64 " (term %" PRIu64
          ") in %.1f ms", m->index, m->term, (double)(clock_mono_ns() - t0) / 1e6);
}

/* Carry out every ready Raft has, in the order raft.h prescribes. */
static void handle_ready(struct core *c)
{
    struct raft_ready rd;
    for (int round = 0; round < 64 && !atomic_load(&c->fatal) && raft_ready(c->raft, &rd);
         round++) {
        int rc = 0;
        bool conf_changed = false;
        if (rd.hs_changed) {
            rc = hardstate_save(c->cfg.fs, c->raft_dir, rd.hs.term, rd.hs.vote);
            if (rc)
                set_fatal(c, rc, "raft hard state write");
        }
        if (!rc && rd.install)
            install_snapshot(c, &rd.snap);
        if (!rc && rd.truncate_from) {
            wait_sync(c);
            if (c->apply_it) {
                journal_iter_close(c->apply_it);
                c->apply_it = NULL;
            }
            rc = journal_truncate_suffix(c->j, rd.truncate_from - 1);
            if (rc)
                set_fatal(c, rc, "journal truncation");
            tailcache_truncate(&c->cache, rd.truncate_from);
            conf_truncate(c, rd.truncate_from);
            discard_from(c, rd.truncate_from);
            LOG_W("core", "raft: entries from %" PRIu64 " discarded (they conflict with the "
                  "leader's log)", rd.truncate_from);
        }
        for (size_t i = 0; !rc && i < rd.n_entries; i++) {
            const struct raft_entry *e = &rd.entries[i];
            rc = journal_append(c->j, e->term, e->index, e->type, e->data);
            if (rc) {
                set_fatal(c, rc, "journal append");
                break;
            }
            if (c->cluster)
                tailcache_append(&c->cache, e->index, e->term, e->type, e->data);
            if (e->type == RAFT_ENTRY_CONFIG && (rc = conf_push(c, e->index, e->data)) != 0)
                set_fatal(c, rc, "configuration");
            if (e->type == RAFT_ENTRY_CONFIG)
                conf_changed = true;
        }
        if (!rc && rd.n_entries) {
            atomic_store(&c->st_last, journal_last_index(c->j));
            flush_journal(c);
            start_sync(c);
        }
        /* A failed hard-state write must not let the messages it covers leave. */
        if (!atomic_load(&c->fatal)) {
            send_msgs(c, rd.msgs, rd.n_msgs);
            snap_start(c, rd.snap_send, rd.n_snap_send);
        }
        if (!atomic_load(&c->fatal) && rd.apply_to)
            apply_committed(c, rd.apply_from, rd.apply_to);
        for (size_t i = 0; i < rd.n_reads; i++)
            rb_confirmed(c, rd.reads[i].ctx, rd.reads[i].index);
        raft_advance(c->raft, &rd);
        report_persisted(c);
        if (conf_changed || rd.install || rd.truncate_from)
            sync_peers(c); /* the latest configuration in the log decides who we talk to */
    }
    if (c->snap_rx)
        snapx_rx_hold(c->snap_rx, false); /* installed, or Raft refused it */
    atomic_store(&c->st_commit, raft_commit(c->raft));
}

/* WC_ONE produces are answered once the leader's fsync covers them (cluster only: on a single
 * node commit follows the fsync at once). They leave the pending list; apply takes their entry
 * from the tail cache. */
static void answer_persisted(struct core *c)
{
    uint64_t d = journal_durable_index(c->j);
    struct proposal **pp = &c->pend_head, *last = NULL;
    while (*pp && (*pp)->index <= d) {
        struct proposal *p = *pp;
        if (p->concern == WC_ONE && p->term == raft_term(c->raft)) {
            *pp = p->next;
            p->durable_ns = clock_mono_ns();
            finish(c, p);
        } else {
            last = p;
            pp = &p->next;
        }
    }
    if (!*pp)
        c->pend_tail = last;
}

static void answer_acked(struct core *c)
{
    for (struct proposal **pp = &c->ack_head; *pp;) {
        struct proposal *p = *pp;
        if (all_acked(c, p->index)) {
            *pp = p->next;
            finish(c, p);
        } else {
            pp = &p->next;
        }
    }
}

/* Cluster: answer what outlived its deadline (checked every Raft tick). */
static void check_deadlines(struct core *c)
{
    uint64_t now = clock_mono_ns();
    struct proposal **pp = &c->pend_head, *last = NULL;
    while (*pp) {
        struct proposal *p = *pp;
        if (now >= p->deadline_ns) {
            *pp = p->next;
            fail(c, p, ERR_COMMIT_TIMEOUT); /* appended, maybe committed later: unknown */
        } else {
            last = p;
            pp = &p->next;
        }
    }
    c->pend_tail = last;
    last = NULL;
    for (pp = &c->held_head; *pp;) {
        struct proposal *p = *pp;
        if (now >= p->hold_until_ns) {
            *pp = p->next;
            fail(c, p, ERR_NO_LEADER); /* never appended */
        } else {
            last = p;
            pp = &p->next;
        }
    }
    c->held_tail = last;
    for (pp = &c->ack_head; *pp;) {
        struct proposal *p = *pp;
        if (now >= p->deadline_ns || !c->was_leader) {
            *pp = p->next;
            p->concern_met = WC_MAJORITY; /* committed and applied; not every voter has it */
            finish(c, p);
        } else {
            pp = &p->next;
        }
    }
    for (pp = &c->dup_head; *pp;) {
        struct proposal *p = *pp;
        if (now >= p->deadline_ns) {
            *pp = p->next;
            fail(c, p, ERR_COMMIT_TIMEOUT);
        } else {
            pp = &p->next;
        }
    }
}

static void hold(struct core *c, struct proposal *p)
{
    p->next = NULL;
    if (c->held_tail)
        c->held_tail->next = p;
    else
        c->held_head = p;
    c->held_tail = p;
}

/* How long a write or a linearizable read waits for a leader to become known: about one
 * election, and never past its own deadline. */
static uint64_t leaderless_until(struct core *c, uint64_t deadline_ns)
{
    uint64_t t = clock_mono_ns() + (uint64_t)c->ha.election_timeout_ms * 1000000;
    return t < deadline_ns ? t : deadline_ns;
}

static void take_proposal(struct core *c, struct proposal *p)
{
    int fatal = atomic_load(&c->fatal);
    int rc = fatal ? fatal
             : (c->nospace_watermark && !frees_space(p->type)) ? ERR_NOSPACE
             : 0;
    if (!rc && raft_role(c->raft) != RAFT_LEADER) {
        if (!c->cluster || raft_leader(c->raft)) {
            rc = not_leader_err(c);
        } else {
            /* An election (or a leadership hand-over) is under way: wait for its outcome
             * rather than answer 503 at once. */
            p->hold_until_ns = leaderless_until(c, p->deadline_ns);
            hold(c, p);
            return;
        }
    }
    if (!rc && (!c->leader_ready || raft_transferring(c->raft))) {
        /* Not ready yet, or handing leadership over: the write waits for the outcome (appended
         * here, or redirected to the new leader) instead of failing with 503. */
        p->hold_until_ns = p->deadline_ns;
        hold(c, p);
        return;
    }
    if (!rc)
        rc = sequence(c, p);
    if (rc)
        fail(c, p, rc);
}

static void rb_finish_list(struct read_barrier **head, int err)
{
    while (*head) {
        struct read_barrier *rb = *head;
        *head = rb->next;
        rb->err = err;
        rb->done(rb);
    }
}

static void rb_issue(struct core *c, struct read_barrier *rb)
{
    rb->seq = ++c->rb_seq;
    int rc = raft_read_index(c->raft, rb->seq);
    if (rc == ERR_AGAIN) {
        rb->next = c->rb_held;
        c->rb_held = rb;
    } else if (rc) {
        rb->err = rc == RAFT_ERR_NOT_LEADER ? not_leader_err(c) : rc;
        rb->done(rb);
    } else {
        rb->next = c->rb_sent;
        c->rb_sent = rb;
    }
}

static void rb_take(struct core *c, struct read_barrier *in)
{
    while (in) {
        struct read_barrier *rb = in;
        in = rb->next;
        rb->next = NULL;
        rb->deadline_ns = clock_mono_ns() + c->cfg.write_timeout_ms * 1000000;
        rb->hold_until_ns = rb->deadline_ns;
        if (raft_role(c->raft) != RAFT_LEADER && raft_leader(c->raft)) {
            rb->err = not_leader_err(c);
            rb->done(rb);
        } else if (raft_role(c->raft) != RAFT_LEADER || !c->leader_ready) {
            if (raft_role(c->raft) != RAFT_LEADER)
                rb->hold_until_ns = leaderless_until(c, rb->deadline_ns);
            rb->next = c->rb_held;
            c->rb_held = rb;
        } else {
            rb_issue(c, rb);
        }
    }
}

/* Raft answered read `seq` with the commit index it confirmed. */
static void rb_confirmed(struct core *c, uint64_t seq, uint64_t index)
{
    for (struct read_barrier **pp = &c->rb_sent; *pp; pp = &(*pp)->next) {
        if ((*pp)->seq == seq) {
            struct read_barrier *rb = *pp;
            *pp = rb->next;
            rb->index = index;
            rb->next = c->rb_wait;
            c->rb_wait = rb;
            return;
        }
    }
}

static void rb_applied(struct core *c)
{
    for (struct read_barrier **pp = &c->rb_wait; *pp;) {
        struct read_barrier *rb = *pp;
        if (rb->index <= c->applied_index) {
            *pp = rb->next;
            rb->err = 0;
            rb->done(rb);
        } else {
            pp = &rb->next;
        }
    }
}

static void rb_deadlines(struct core *c)
{
    uint64_t now = clock_mono_ns();
    bool leader = raft_role(c->raft) == RAFT_LEADER;
    struct read_barrier **lists[] = {&c->rb_held, &c->rb_sent, &c->rb_wait};
    for (size_t k = 0; k < 3; k++) {
        for (struct read_barrier **pp = lists[k]; *pp;) {
            struct read_barrier *rb = *pp;
            if (now >= (k == 0 ? rb->hold_until_ns : rb->deadline_ns)) {
                *pp = rb->next;
                rb->err = k == 0 && !leader ? ERR_NO_LEADER : ERR_COMMIT_TIMEOUT;
                rb->done(rb);
            } else {
                pp = &rb->next;
            }
        }
    }
}

/* Leadership changes: a new leader accepts writes once everything before its no-op is applied
 * (then the sequencer view is rebuilt from the applied state, exactly). */
static void leader_transitions(struct core *c)
{
    bool leader = raft_role(c->raft) == RAFT_LEADER;
    atomic_store(&c->st_role, (int)raft_role(c->raft));
    atomic_store(&c->st_term, raft_term(c->raft));
    uint64_t old_leader = atomic_exchange(&c->st_leader, raft_leader(c->raft));
    if (old_leader != raft_leader(c->raft))
        atomic_fetch_add(&c->st_leader_changes, 1);
    if (leader && !c->was_leader) {
        c->was_leader = true;
        c->leader_ready = false;
        c->leader_start_index = raft_last_index(c->raft);
        for (struct proposal *p = c->held_head; p; p = p->next)
            p->hold_until_ns = p->deadline_ns; /* held while leaderless: now ours to append */
        for (struct read_barrier *rb = c->rb_held; rb; rb = rb->next)
            rb->hold_until_ns = rb->deadline_ns;
        atomic_fetch_add(&c->st_elections, 1);
        if (c->cluster)
            LOG_I("core", "raft: leader for term %" PRIu64, raft_term(c->raft));
    } else if (!leader && c->was_leader) {
        c->was_leader = false;
        c->leader_ready = false;
        /* Held writes were never appended: with the next leader unknown (a hand-over or an
         * election in progress) they wait for it, below, instead of failing with 503. */
        for (struct proposal *p = c->held_head; p; p = p->next)
            p->hold_until_ns = leaderless_until(c, p->deadline_ns);
        /* Reads not yet confirmed wait for the next leader like held writes (then 307, or a
         * fresh ReadIndex if this node wins again). A confirmed read (rb_wait) stays: its index
         * was confirmed by a quorum while this node led, so it is answered once applied. */
        while (c->rb_sent) {
            struct read_barrier *rb = c->rb_sent;
            c->rb_sent = rb->next;
            rb->next = c->rb_held;
            c->rb_held = rb;
        }
        for (struct read_barrier *rb = c->rb_held; rb; rb = rb->next)
            rb->hold_until_ns = leaderless_until(c, rb->deadline_ns);
        if (c->cluster)
            LOG_I("core", "raft: no longer leader (term %" PRIu64 ")", raft_term(c->raft));
    }
    if (!leader && c->held_head && raft_leader(c->raft)) {
        fail_list(c, &c->held_head, ERR_NOT_LEADER); /* 307 to the leader now known */
        c->held_tail = NULL;
    }
    if (!leader && c->rb_held && raft_leader(c->raft))
        rb_finish_list(&c->rb_held, ERR_NOT_LEADER);
    if (leader && !c->leader_ready && c->applied_index >= c->leader_start_index &&
        !atomic_load(&c->fatal)) {
        seq_clear(c);
        hmap_init(&c->seq);
        broker_each_topic(c->broker, seq_load_fn, c);
        seq_idem_clear(c);
        c->leader_ready = true;
    }
    if (leader && c->leader_ready && c->held_head && !raft_transferring(c->raft)) {
        struct proposal *p = c->held_head;
        c->held_head = c->held_tail = NULL;
        while (p) {
            struct proposal *next = p->next;
            take_proposal(c, p);
            p = next;
        }
    }
    if (leader && c->leader_ready && c->rb_held) {
        struct read_barrier *rb = c->rb_held;
        c->rb_held = NULL;
        while (rb) {
            struct read_barrier *next = rb->next;
            rb_issue(c, rb);
            rb = next;
        }
    }
    if (leader) {
        for (size_t i = 0; i < c->ha.n_nodes && c->cluster; i++) {
            uint64_t m = 0;
            if (raft_match(c->raft, c->ha.nodes[i].id, &m) == 0)
                atomic_store(&c->st_match[i], m);
        }
    }
}

static void on_snap_chunk(struct core *c, uint64_t from, struct slice bytes);
static bool snap_staged(struct core *c, const struct raft_msg *m);

/* A frame from a peer: [kind u8][body]. Malformed or misaddressed frames are ignored (Raft
 * tolerates loss). */
static void on_frame(void *ctx, uint64_t from, struct slice bytes)
{
    struct core *c = ctx;
    if (bytes.len < 1)
        return;
    uint8_t kind = bytes.ptr[0];
    struct slice body = slice_of(bytes.ptr + 1, bytes.len - 1);
    if (kind == FRAME_SNAP) {
        on_snap_chunk(c, from, body);
        return;
    }
    struct raft_msg m;
    if (kind != FRAME_RAFT || raft_msg_decode(body, &m, c->ents, RAFT_MSG_MAX_ENTRIES) != 0 ||
        m.from != from || m.to != c->self_id)
        return;
    /* A snapshot message is stepped only once its data is staged here in full. */
    if (m.type == RAFT_MSG_SNAPSHOT && !snap_staged(c, &m))
        return;
    /* Its install comes with the next ready: until handle_ready has run, the staging must not
     * be replaced by a newer stream (the leader retries that one). */
    if (m.type == RAFT_MSG_SNAPSHOT && m.index > raft_commit(c->raft))
        snapx_rx_hold(c->snap_rx, true);
    raft_step(c->raft, &m);
}

/* A peer that reconnected may have restarted with less than it acknowledged (a wiped node):
 * the leader forgets its match index and probes it afresh (always safe, see raft.h). */
static void check_reconnects(struct core *c)
{
    for (size_t i = 0; i < c->ha.n_nodes; i++) {
        struct transport_peer_state ps;
        if (i == c->ha.self || transport_peer_state(c->tp, c->ha.nodes[i].id, &ps) != 0)
            continue;
        if (ps.connects != c->peer_connects[i]) {
            c->peer_connects[i] = ps.connects;
            raft_peer_reset(c->raft, c->ha.nodes[i].id);
        }
    }
}

/* Priority: a leader elected by a timeout hands leadership to the highest-priority voter once it
 * is caught up and connected. */
static void check_priority(struct core *c)
{
    /* A leader that got the job by a transfer keeps it: it was chosen (by a request, or by this
     * same rule on the previous leader). */
    if (!c->cluster || !c->leader_ready || raft_leader_by_transfer(c->raft))
        return;
    const struct raft_conf *conf = raft_conf(c->raft);
    uint32_t mine = c->ha.nodes[c->ha.self].priority;
    int best = -1;
    for (size_t i = 0; i < c->ha.n_nodes; i++) {
        if (i == c->ha.self || !raft_conf_is_voter(conf, c->ha.nodes[i].id))
            continue;
        if (c->ha.nodes[i].priority > mine &&
            (best < 0 || c->ha.nodes[i].priority > c->ha.nodes[best].priority))
            best = (int)i;
    }
    if (best < 0)
        return;
    uint64_t m = 0;
    struct transport_peer_state ps;
    if (raft_match(c->raft, c->ha.nodes[best].id, &m) == 0 && m == raft_last_index(c->raft) &&
        transport_peer_state(c->tp, c->ha.nodes[best].id, &ps) == 0 && ps.connected) {
        LOG_I("core", "raft: handing leadership to %s (priority %u > %u)",
              c->ha.nodes[best].name, c->ha.nodes[best].priority, mine);
        raft_transfer_leadership(c->raft, c->ha.nodes[best].id);
    }
}

/* Single node: elect itself at once (one voter, nobody to wait for). Cluster with
 * RF_HA_BOOTSTRAP_LEADER on a fresh log: campaign at once instead of after a timeout. */
static void early_campaign(struct core *c)
{
    bool fresh = journal_last_index(c->j) <= 1 && raft_term(c->raft) == 0;
    if (c->cluster && !(c->ha.bootstrap_leader && fresh))
        return;
    for (int i = 0; i < 1000 && raft_role(c->raft) == RAFT_FOLLOWER; i++)
        raft_tick(c->raft);
    handle_ready(c);
}

static void *core_main(void *arg)
{
    struct core *c = arg;
    pthread_setname_np(pthread_self(), "ayder-core");
    c->next_tick_ms = clock_mono_ms() + TICK_MS;
    c->next_raft_tick_ms = clock_mono_ms() + c->raft_tick_ms;
    sync_peers(c);
    early_campaign(c);
    leader_transitions(c);
    for (;;) {
        pthread_mutex_lock(&c->mu);
        bool skip = c->skip_wait;
        c->skip_wait = false;
        while (!skip) {
            if (c->in_head || c->sync_has_result || c->ckpt_have_result ||
                atomic_load(&c->tp_wake) || c->rb_in_head || c->snap_results)
                break;
            if (c->stopping && !c->sync_inflight && !c->pend_head && !c->dup_head &&
                !c->ack_head && !c->held_head)
                break;
            uint64_t now = clock_mono_ms();
            uint64_t next = c->next_tick_ms;
            if (c->cluster && c->next_raft_tick_ms < next)
                next = c->next_raft_tick_ms;
            if (now >= next)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait_ms = next - now;
            ts.tv_sec += (time_t)(wait_ms / 1000);
            ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        }
        struct proposal *in = c->in_head;
        c->in_head = c->in_tail = NULL;
        c->in_signalled = false;
        bool have_sync = c->sync_has_result;
        int sync_rc = c->sync_rc, sync_errno = c->sync_errno;
        struct journal_sync *tok = c->sync_done_tok;
        if (have_sync) {
            c->sync_has_result = false;
            c->sync_done_tok = NULL;
        }
        bool have_ckpt = c->ckpt_have_result;
        int ckpt_rc = c->ckpt_rc;
        uint64_t ckpt_index = c->ckpt_index;
        c->ckpt_have_result = false;
        bool frames = atomic_exchange(&c->tp_wake, false);
        bool snaps = c->snap_results;
        c->snap_results = false;
        struct read_barrier *rb_in = c->rb_in_head;
        c->rb_in_head = c->rb_in_tail = NULL;
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (have_ckpt) {
            c->ckpt_busy = false;
            if (ckpt_rc == 0)
                c->trim_pending = ckpt_index;
        }
        if (have_sync) {
            sync_finished(c, tok, sync_rc, sync_errno);
            report_persisted(c);
        }
        if (snaps)
            snap_results(c);
        if (frames && c->tp)
            transport_poll(c->tp, on_frame, c);
        uint64_t now_ms = clock_mono_ms();
        if (c->cluster && now_ms >= c->next_raft_tick_ms) {
            c->next_raft_tick_ms = now_ms + c->raft_tick_ms;
            raft_tick(c->raft);
            check_reconnects(c);
        }
        /* Order matters for latency: new entries are written and the next fsync is started
         * (inside handle_ready) before the entries made durable by the previous one are applied
         * and answered, so the disk works while this thread does. In inline mode the fsync
         * runs at the end of the round instead (run_sync_inline), after the answers left. */
        if (in)
            check_space(c, false);
        while (in) {
            struct proposal *p = in;
            in = p->next;
            if (p->concern == WC_DEFAULT)
                p->concern = (uint8_t)c->ha.write_concern;
            if ((p->concern == WC_ONE || p->concern == WC_ASYNC) && p->type != ENTRY_PRODUCE)
                p->concern = WC_MAJORITY; /* its answer needs apply's result */
            p->concern_met = p->concern;
            if (p->concern == WC_ASYNC)
                c->last_async_ms = now_ms;
            p->deadline_ns = clock_mono_ns() +
                             (p->timeout_ms ? p->timeout_ms : c->cfg.write_timeout_ms) * 1000000;
            take_proposal(c, p);
            atomic_fetch_add_explicit(&c->st_proposals, 1, memory_order_relaxed);
        }
        rb_take(c, rb_in);
        handle_ready(c);
        leader_transitions(c);
        if (c->leader_ready && c->held_head == NULL)
            handle_ready(c); /* entries of proposals released by the transition */
        /* A flush stops at a segment boundary until the segments before it are durable (and
         * retries after ENOSPC): write what is still buffered before the next sync. */
        if (c->j && journal_flushed_index(c->j) < journal_last_index(c->j))
            flush_journal(c);
        start_sync(c);
        if (c->cluster && !atomic_load(&c->fatal)) {
            answer_persisted(c);
            answer_acked(c);
        }
        answer_dups(c);
        rb_applied(c);
        if (c->checkpoint_due && !atomic_load(&c->fatal)) {
            c->checkpoint_due = false;
            checkpoint_start(c); /* between rounds: the state is exactly applied_index */
        }
        if (c->trim_pending && !c->sync_inflight && !atomic_load(&c->fatal)) {
            checkpoint_finish(c, &c->ckpt_meta);
            c->trim_pending = 0;
        }
        if (atomic_load(&c->fatal) && !c->sync_inflight)
            fail_all(c, ERR_STORE_FAILED);
        now_ms = clock_mono_ms();
        if (c->cluster && now_ms >= c->next_deadline_check_ms) {
            c->next_deadline_check_ms = now_ms + c->raft_tick_ms;
            check_deadlines(c);
            rb_deadlines(c);
        }
        if (now_ms >= c->next_tick_ms) {
            c->next_tick_ms = now_ms + TICK_MS;
            if (!c->cluster && !atomic_load(&c->fatal))
                raft_tick(c->raft);
            if (!atomic_load(&c->fatal) && !stopping)
                tick(c);
            if (now_ms >= c->next_priority_check_ms) {
                c->next_priority_check_ms = now_ms + 1000;
                check_priority(c);
            }
        }
        if (c->sync_wanted)
            run_sync_inline(c);
        if (stopping && !c->sync_inflight && !c->pend_head && !c->dup_head && !c->ack_head &&
            !c->held_head) {
            pthread_mutex_lock(&c->mu);
            bool empty = c->in_head == NULL;
            pthread_mutex_unlock(&c->mu);
            if (empty && (atomic_load(&c->nospace) == 0 || atomic_load(&c->fatal)))
                break;
            if (empty && atomic_load(&c->nospace)) {
                fail_all(c, ERR_NOSPACE);
                break;
            }
        }
    }
    rb_finish_list(&c->rb_held, ERR_NOT_READY);
    rb_finish_list(&c->rb_sent, ERR_NOT_READY);
    rb_finish_list(&c->rb_wait, ERR_NOT_READY);
    pthread_mutex_lock(&c->mu);
    struct read_barrier *rb_left = c->rb_in_head;
    c->rb_in_head = c->rb_in_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    rb_finish_list(&rb_left, ERR_NOT_READY);
    /* Let a background checkpoint finish, then take the final one here. */
    pthread_mutex_lock(&c->mu);
    while (c->ckpt_busy && !c->ckpt_have_result)
        pthread_cond_wait(&c->cond, &c->mu);
    c->ckpt_have_result = false;
    pthread_mutex_unlock(&c->mu);
    c->ckpt_busy = false;
    if (!atomic_load(&c->fatal) && !c->abort)
        checkpoint_now(c);
    return NULL;
}

int core_start(struct core *c)
{
    if (c->tp) {
        int rc = transport_start(c->tp);
        if (rc) {
            LOG_E("core", "raft transport: cannot listen on %s:%u", c->ha.nodes[c->ha.self].host,
                  c->ha.nodes[c->ha.self].raft_port);
            return rc;
        }
    }
    atomic_store(&c->ready, true);
    if (pthread_create(&c->sync_thread, NULL, sync_main, c))
        return ERR_NOMEM;
    if (pthread_create(&c->prealloc_thread, NULL, prealloc_main, c))
        return ERR_NOMEM;
    c->prealloc_started = true;
    if (pthread_create(&c->thread, NULL, core_main, c))
        return ERR_NOMEM;
    return 0;
}

void core_abort(struct core *c)
{
    c->abort = true;
    core_stop(c);
}

void core_stop(struct core *c)
{
    atomic_store(&c->ready, false);
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_signal(&c->cond);
    pthread_cond_signal(&c->cond_prealloc);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    if (c->prealloc_started)
        pthread_join(c->prealloc_thread, NULL);
    pthread_mutex_lock(&c->mu);
    c->sync_stop = true;
    c->stopped = true;
    pthread_cond_signal(&c->sync_cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->sync_thread, NULL);
    snap_stop_senders(c);
    if (c->tp)
        transport_stop(c->tp);
}

void core_close(struct core *c)
{
    if (!c)
        return;
    snap_stop_senders(c);
    snapx_rx_free(c->snap_rx);
    transport_free(c->tp);
    raft_free(c->raft);
    if (c->apply_it)
        journal_iter_close(c->apply_it);
    tailcache_free(&c->cache);
    xfree(c->ents);
    sbuf_free(&c->msg_buf);
    sbuf_free(&c->stor_buf);
    sbuf_free(&c->applied_conf);
    conf_truncate(c, 0);
    xfree(c->confs);
    seq_idem_clear(c);
    hmap_free(&c->seq_idem);
    xfree(c->raft_dir);
    if (c->mark_f)
        io_close(c->mark_f);
    if (c->j)
        journal_close(c->j);
    broker_close(c->broker);
    kv_free(c->kv);
    schema_registry_free(c->schema);
    seq_clear(c);
    xfree(c->journal_dir);
    xfree(c->snap_dir);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->why_mu);
    pthread_mutex_destroy(&c->pub_mu);
    pthread_cond_destroy(&c->cond);
    pthread_cond_destroy(&c->sync_cond);
    pthread_cond_destroy(&c->cond_prealloc);
    xfree(c);
}

/* Another node is known to lead: a write or linearizable read here gets a 307 at once. Anything
 * less certain goes to the core thread, which decides on Raft's own state. (The published role
 * and leader change one after the other: right after a step-down this node may still be named
 * as leader, which must not become a redirect to itself.) */
static bool leader_elsewhere(struct core *c)
{
    if (atomic_load(&c->st_role) == RAFT_LEADER)
        return false;
    uint64_t l = atomic_load(&c->st_leader);
    return l != 0 && l != c->self_id;
}

int core_read_barrier(struct core *c, struct read_barrier *rb)
{
    rb->err = 0;
    rb->next = NULL;
    if (!c->cluster) {
        rb->done(rb); /* one voter: its applied state is the committed state */
        return 0;
    }
    /* With no leader known the core holds the read for about one election (rb_take). */
    if (leader_elsewhere(c))
        return ERR_NOT_LEADER;
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        return ERR_NOT_READY;
    }
    if (c->rb_in_tail)
        c->rb_in_tail->next = rb;
    else
        c->rb_in_head = rb;
    c->rb_in_tail = rb;
    pthread_mutex_unlock(&c->mu);
    pthread_cond_signal(&c->cond);
    return 0;
}

bool core_cluster(struct core *c) { return c->cluster; }
uint64_t core_self_id(struct core *c) { return c->self_id; }

size_t core_members(struct core *c, struct ha_node *out, size_t max)
{
    if (!c->cluster)
        return 0;
    size_t n = 0;
    pthread_mutex_lock(&c->pub_mu);
    const struct raft_conf *conf = &c->pub_conf;
    for (size_t i = 0; i < c->ha.n_nodes && n < max; i++) {
        const struct ha_node *hn = &c->ha.nodes[i];
        if (conf->n_voters && !raft_conf_has(conf, hn->id))
            continue; /* an address of a node that is not (or no longer) a member */
        out[n++] = *hn;
    }
    pthread_mutex_unlock(&c->pub_mu);
    return n;
}
enum write_concern core_default_concern(struct core *c) { return c->ha.write_concern; }

uint64_t core_leader(struct core *c, char *url, size_t url_len)
{
    if (url_len)
        url[0] = 0;
    if (!c->cluster)
        return c->self_id;
    uint64_t id = atomic_load(&c->st_leader);
    pthread_mutex_lock(&c->pub_mu);
    int i = id ? ha_find(&c->ha, id) : -1;
    if (i >= 0 && url_len)
        ha_config_node_url(&c->ha, &c->ha.nodes[i], url, url_len);
    pthread_mutex_unlock(&c->pub_mu);
    return id;
}

static const char *role_name(int role)
{
    switch (role) {
    case RAFT_LEADER: return "leader";
    case RAFT_CANDIDATE: return "candidate";
    case RAFT_PRE_CANDIDATE: return "pre_candidate";
    default: return "follower";
    }
}

void core_ha_status(struct core *c, struct core_ha_status *o)
{
    memset(o, 0, sizeof *o);
    o->enabled = c->cluster;
    int role = atomic_load(&c->st_role);
    o->role = role_name(role);
    o->term = atomic_load(&c->st_term);
    o->leader_id = core_leader(c, o->leader_url, sizeof o->leader_url);
    pthread_mutex_lock(&c->pub_mu);
    int li = o->leader_id ? ha_find(&c->ha, o->leader_id) : -1;
    if (li >= 0)
        snprintf(o->leader_name, sizeof o->leader_name, "%s", c->ha.nodes[li].name);
    pthread_mutex_unlock(&c->pub_mu);
    o->commit_index = atomic_load(&c->st_commit);
    o->applied_index = atomic_load(&c->st_applied);
    o->last_index = atomic_load(&c->st_last);
    o->durable_index = atomic_load(&c->st_durable);
    o->write_concern = ha_write_concern_name(c->ha.write_concern);
    o->elections_won = atomic_load(&c->st_elections);
    o->leader_changes = atomic_load(&c->st_leader_changes);
    o->snapshots_sent = atomic_load(&c->st_snap_sent);
    o->snapshots_installed = atomic_load(&c->st_snap_installed);
    o->snapshot_index = atomic_load(&c->st_snap_index);
    o->restart_index = atomic_load(&c->st_mark);
    if (!c->cluster) {
        snprintf(o->node_id, sizeof o->node_id, "single");
        return;
    }
    pthread_mutex_lock(&c->pub_mu);
    snprintf(o->node_id, sizeof o->node_id, "%s", c->ha.nodes[c->ha.self].name);
    struct raft_conf conf = c->pub_conf;
    size_t n = c->ha.n_nodes;
    struct ha_node nodes[HA_MAX_NODES];
    memcpy(nodes, c->ha.nodes, n * sizeof nodes[0]);
    pthread_mutex_unlock(&c->pub_mu);
    for (size_t i = 0; i < n; i++) {
        bool voter = raft_conf_is_voter(&conf, nodes[i].id);
        bool learner = !voter && raft_conf_has(&conf, nodes[i].id);
        if (conf.n_voters && !voter && !learner)
            continue; /* an address of a node that is not (or no longer) a member */
        struct core_peer_status *ps = &o->peers[o->n_peers++];
        memcpy(ps->name, nodes[i].name, sizeof ps->name); /* both HA_NAME_MAX, NUL-terminated */
        ps->name[sizeof ps->name - 1] = 0;
        ha_config_node_url(&c->ha, &nodes[i], ps->url, sizeof ps->url);
        ps->self = nodes[i].id == c->self_id;
        ps->voter = voter || !conf.n_voters;
        struct transport_peer_state tps;
        ps->connected = ps->self || (transport_peer_state(c->tp, nodes[i].id, &tps) == 0 &&
                                     tps.connected);
        ps->match_index = role == RAFT_LEADER ? atomic_load(&c->st_match[i]) : 0;
    }
}

int core_propose(struct core *c, struct proposal *p)
{
    int f = atomic_load(&c->fatal);
    if (f)
        return f;
    /* With no leader known the core holds the write for about one election (take_proposal). */
    if (c->cluster && leader_elsewhere(c))
        return ERR_NOT_LEADER;
    if (atomic_load(&c->nospace) && !frees_space(p->type))
        return ERR_NOSPACE;
    if (!atomic_load(&c->ready))
        return ERR_NOT_READY;
    if (atomic_load(&c->inflight) >= c->cfg.max_inflight ||
        atomic_load(&c->inflight_bytes) + p->payload.len > c->cfg.max_inflight_bytes)
        return ERR_OVERLOADED;
    if (!sbuf_ok(&p->payload))
        return p->payload.too_big ? ERR_TOO_LARGE : ERR_NOMEM;
    p->phase = 0;
    p->err = 0;
    p->index = 0;
    p->duplicate_pending = false;
    memset(&p->res, 0, sizeof p->res);
    p->enqueue_ns = clock_mono_ns();
    p->next = NULL;
    atomic_fetch_add(&c->inflight, 1);
    atomic_fetch_add(&c->inflight_bytes, p->payload.len);
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_sub(&c->inflight, 1);
        atomic_fetch_sub(&c->inflight_bytes, p->payload.len);
        return ERR_NOT_READY;
    }
    if (c->in_tail)
        c->in_tail->next = p;
    else
        c->in_head = p;
    c->in_tail = p;
    bool defer = c->sync_running && p->concern != WC_ASYNC;
    bool wake = !c->in_signalled && !defer;
    if (wake)
        c->in_signalled = true;
    pthread_mutex_unlock(&c->mu);
    if (wake)
        pthread_cond_signal(&c->cond);
    return 0;
}

struct broker *core_broker(struct core *c) { return c->broker; }
struct kv *core_kv(struct core *c) { return c->kv; }
struct schema_registry *core_schema(struct core *c) { return c->schema; }

bool core_ready(struct core *c) { return atomic_load(&c->ready) && !atomic_load(&c->fatal); }

int core_health(struct core *c, char *why, size_t why_len)
{
    int f = atomic_load(&c->fatal);
    if (f) {
        pthread_mutex_lock(&c->why_mu);
        snprintf(why, why_len, "%s", c->why);
        pthread_mutex_unlock(&c->why_mu);
        return f;
    }
    if (atomic_load(&c->nospace)) {
        snprintf(why, why_len, "no space left on device: writes are refused, reads are served");
        return ERR_NOSPACE;
    }
    if (why_len)
        why[0] = 0;
    return 0;
}

void core_stats(struct core *c, struct core_stats *st)
{
    memset(st, 0, sizeof *st);
    st->last_index = atomic_load(&c->st_last);
    st->durable_index = atomic_load(&c->st_durable);
    st->applied_index = atomic_load(&c->st_applied);
    st->proposals = atomic_load(&c->st_proposals);
    st->entries = atomic_load(&c->st_entries);
    st->checkpoints = atomic_load(&c->st_checkpoints);
    st->syncs = atomic_load(&c->st_syncs);
    st->sync_ns_total = atomic_load(&c->st_sync_ns);
    st->inflight = atomic_load(&c->inflight);
    st->recovery_ms = c->recovery_ms;
    st->replayed_entries = c->replayed;
    st->journal_bytes = atomic_load_explicit(&c->st_jbytes, memory_order_relaxed);
    st->journal_segments = atomic_load_explicit(&c->st_jsegs, memory_order_relaxed);
    st->failed = atomic_load(&c->fatal) != 0;
    st->no_space = atomic_load(&c->nospace) != 0;
    st->min_free_bytes = c->cfg.min_free_bytes;
    st->disk_known = io_free_bytes(c->cfg.fs, c->cfg.data_dir, &st->disk_free_bytes) == 0;
}

void core_histograms(struct core *c, struct core_histograms *out)
{
    out->fsync = &c->h_fsync;
    out->write = &c->h_write;
}

/* ------------------------------------------------------------------------------------------ */
/* Offline tools                                                                               */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int core_logdump(const char *path)
{
    struct io_fs *fs = io_posix_fs();
    if (ends_with(path, ".seg"))
        return journal_dump_segment(fs, path, stdout);
    if (ends_with(path, ".log"))
        return plog_dump_segment(fs, path, stdout);
    fprintf(stderr, "logdump: %s: expected a journal segment (.seg) or a partition log (.log)\n", path);
    return ERR_INVALID;
}

struct check_ctx {
    const char *dir;
    FILE *devnull;
    int bad;
    int files;
};

static int check_walk(struct check_ctx *k, const char *dir, int depth);

static int check_entry(void *ctx, const char *name)
{
    struct check_ctx *k = ctx;
    char *p = io_path_join(k->dir, name);
    if (!p)
        return ERR_NOMEM;
    struct stat st;
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
        const char *saved = k->dir;
        check_walk(k, p, 1);
        k->dir = saved;
    } else if (ends_with(name, ".log")) {
        k->files++;
        int rc = plog_dump_segment(io_posix_fs(), p, k->devnull);
        if (rc) {
            printf("CORRUPT %s: %s (run: ayder logdump %s)\n", p, err_message(rc), p);
            k->bad++;
        }
    }
    xfree(p);
    return 0;
}

static int check_walk(struct check_ctx *k, const char *dir, int depth)
{
    (void)depth;
    k->dir = dir;
    return io_list(io_posix_fs(), dir, check_entry, k);
}

int core_logcheck(const char *data_dir, bool repair)
{
    struct io_fs *fs = io_posix_fs();
    char *jd = io_path_join(data_dir, "journal"), *td = io_path_join(data_dir, "topics");
    if (!jd || !td)
        return ERR_NOMEM;
    int rc = journal_check_dir(fs, jd, repair, stdout);
    printf("journal %s: %s\n", jd, rc ? err_message(rc) : "ok");
    struct check_ctx k = {td, fopen("/dev/null", "w"), 0, 0};
    if (io_exists(fs, td) == 1)
        check_walk(&k, td, 0);
    if (k.devnull)
        fclose(k.devnull);
    printf("partition logs: %d segment(s) checked, %d damaged\n", k.files, k.bad);
    if (k.bad)
        printf("note: a damaged partition log tail is repaired at start-up from the journal; a damaged "
               "segment before the last checkpoint needs the journal or a replica\n");
    /* Raft's files (cluster nodes): the hard state must be intact, the commit mark may not be. */
    int hrc = 0;
    char *rd = io_path_join(data_dir, "raft");
    if (rd && io_exists(fs, rd) == 1) {
        uint64_t term = 0, vote = 0, mi = 0, mt = 0;
        bool damaged = false;
        hrc = hardstate_load(fs, rd, &term, &vote);
        if (hrc)
            printf("raft/meta: %s (the node refuses to start: it could vote twice)\n",
                   err_message(hrc));
        else
            printf("raft/meta: term %" PRIu64 ", vote %" PRIu64 ": ok\n", term, vote);
        if (commitmark_load(fs, rd, &mi, &mt, &damaged) == 0 && damaged)
            printf("raft/commit: damaged (harmless: a restart re-applies from the checkpoint only)\n");
        else if (mi)
            printf("raft/commit: index %" PRIu64 " (term %" PRIu64 "): ok\n", mi, mt);
    }
    xfree(rd);
    xfree(jd);
    xfree(td);
    return rc ? rc : hrc ? hrc : (k.bad ? ERR_CORRUPT : 0);
}
