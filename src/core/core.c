/* core.c -- sequencer, group commit, apply, checkpoints and recovery (see core.h).
 *
 * The core thread's loop:
 *
 *     wait for: new proposals | a finished fsync | the next tick
 *       -> sync finished:  journal_sync_done; apply every entry now durable (in index order),
 *                          publish (broker_round_end), complete their proposals
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
 */
#include "core/core.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/cpu.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/hmap.h"
#include "base/log.h"
#include "broker/entry.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TERM 1 /* single node: one term forever; Raft will own terms */
#define TICK_MS 200

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
    _Atomic bool sync_tok_ready;         /* a token is waiting: lets the sync thread spin, not sleep */
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
    bool checkpoint_due;
    /* background checkpoint (ckpt_* under mu except ckpt_busy/trim_pending: core thread) */
    bool ckpt_busy, ckpt_have_job, ckpt_have_result;
    struct sbuf ckpt_buf;
    uint64_t ckpt_index;
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
    uint64_t recovery_ms, replayed;
};

void core_config_default(struct core_config *c)
{
    memset(c, 0, sizeof *c);
    c->fs = io_posix_fs();
    c->data_dir = "./ayder-data";
    c->journal.segment_bytes = JOURNAL_SEGMENT_BYTES_DEFAULT;
    c->journal.use_spare = true;
    kv_limits_default(&c->kv);
    c->default_partitions = 8;
    c->auto_create_topics = true;
    c->checkpoint_interval_ms = 30000;
    c->checkpoint_journal_bytes = 256ull << 20;
    c->max_inflight = 100000;
    c->max_inflight_bytes = 1ull << 30;
    c->min_free_bytes = 64ull << 20;
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = xmalloc(la + lb + 2);
    if (p) {
        memcpy(p, a, la);
        p[la] = '/';
        memcpy(p + la + 1, b, lb + 1);
    }
    return p;
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

static int apply_entry(struct core *c, uint64_t index, uint8_t type, struct slice payload,
                       struct apply_result *res)
{
    if (type == ENTRY_KV_PUT || type == ENTRY_KV_DEL || type == ENTRY_KV_EXPIRE)
        return apply_kv(c, type, payload, res);
    return broker_apply(c->broker, index, type, payload, res);
}

/* Apply every pending entry that is durable; complete their proposals after publishing. */
static void apply_durable(struct core *c)
{
    uint64_t durable = journal_durable_index(c->j);
    atomic_store(&c->st_durable, durable);
    if (!c->pend_head || c->pend_head->index > durable)
        goto dups;
    struct proposal *done_head = NULL, **done_tail = &done_head;
    uint64_t now = clock_mono_ns();
    while (c->pend_head && c->pend_head->index <= durable) {
        struct proposal *p = c->pend_head;
        c->pend_head = p->next;
        if (!c->pend_head)
            c->pend_tail = NULL;
        ASSERT(atomic_load(&c->fatal) || p->index == c->applied_index + 1);
        /* After a failed apply the state machine cannot be trusted: apply nothing more and
         * answer everything after it with the sticky error (recovery replays them). */
        int rc = atomic_load(&c->fatal)
                     ? ERR_STORE_FAILED
                     : apply_entry(c, p->index, p->type, slice_of(p->payload.data, p->payload.len),
                                   &p->res);
        if (rc) {
            if (!atomic_load(&c->fatal))
                set_fatal(c, rc, "apply");
            p->err = ERR_STORE_FAILED;
        } else {
            p->err = p->res.err;
            c->applied_index = p->index;
        }
        p->durable_ns = now;
        p->next = NULL;
        *done_tail = p;
        done_tail = &p->next;
    }
    int rc = broker_round_end(c->broker);
    if (rc)
        set_fatal(c, rc, "partition log write");
    atomic_store(&c->st_applied, c->applied_index);
    while (done_head) {
        struct proposal *p = done_head;
        done_head = p->next;
        if (rc && !p->err)
            p->err = ERR_STORE_FAILED;
        finish(c, p);
    }
dups:
    /* duplicates whose original is now applied */
    for (struct proposal **pp = &c->dup_head; *pp;) {
        struct proposal *p = *pp;
        if (p->wait_index <= c->applied_index) {
            *pp = p->next;
            finish(c, p);
        } else {
            pp = &p->next;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Sequencing                                                                                  */

static int append(struct core *c, struct proposal *p)
{
    uint64_t index = journal_last_index(c->j) + 1;
    int rc = journal_append(c->j, TERM, index, p->type, slice_of(p->payload.data, p->payload.len));
    if (rc)
        return rc;
    p->index = index;
    p->appended_ns = clock_mono_ns();
    p->next = NULL;
    if (c->pend_tail)
        c->pend_tail->next = p;
    else
        c->pend_head = p;
    c->pend_tail = p;
    atomic_fetch_add_explicit(&c->st_entries, 1, memory_order_relaxed);
    atomic_store(&c->st_last, index);
    return 0;
}

/* Returns 0 if p was appended (or parked/completed); otherwise an error to fail it with. */
static int sequence_produce(struct core *c, struct proposal *p)
{
    struct entry_produce e;
    if (entry_produce_decode(slice_of(p->payload.data, p->payload.len), &e))
        return ERR_INVALID;
    uint8_t flags = e.flags & PRODUCE_HAS_IDEM;
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
        if (broker_idem_get(c->broker, e.topic, e.idem_key, &ir)) {
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
        rc = broker_idem_put(c->broker, e.topic, e.idem_key, &ir);
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

static int sequence(struct core *c, struct proposal *p)
{
    struct slice pl = slice_of(p->payload.data, p->payload.len);
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
    default:
        return ERR_INVALID;
    }
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

#define SNAP_FILE_MAGIC 0x50414E53u /* "SNAP" */

static int write_file_durable(struct core *c, const char *dir, const char *name,
                              const uint8_t *data, size_t len)
{
    struct io_fs *fs = c->cfg.fs;
    char *tmp = join(dir, "snapshot.tmp");
    char *dst = join(dir, name);
    int rc = (!tmp || !dst) ? ERR_NOMEM : 0;
    struct io_file *f = NULL;
    if (!rc) {
        io_unlink(fs, tmp);
        rc = io_open(fs, tmp, IO_CREATE | IO_RDWR, &f);
    }
    if (!rc) {
        rc = io_truncate(f, 0);
        if (!rc)
            rc = io_pwrite(f, data, len, 0);
        if (!rc)
            rc = io_sync(f);
        int rc2 = io_close(f);
        if (!rc)
            rc = rc2;
    }
    if (!rc)
        rc = io_rename(fs, tmp, dst);
    if (!rc)
        rc = io_sync_dir(fs, dir);
    xfree(tmp);
    xfree(dst);
    return rc;
}

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
 *   capture (core thread, between apply rounds): serialize broker + KV state at applied_index A;
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
    sbuf_put_le64(b, TERM);
    size_t blen_pos = b->len;
    sbuf_put_le64(b, 0);
    int rc = broker_snapshot_write(c->broker, c->applied_index, b);
    if (!rc && sbuf_ok(b))
        put_le64(b->data + blen_pos, b->len - blen_pos - 8);
    if (!rc)
        rc = kv_snapshot_write(c->kv, b);
    if (!rc && !sbuf_ok(b))
        rc = ERR_NOMEM;
    if (!rc)
        sbuf_put_le32(b, crc32c(0, b->data, b->len));
    if (rc)
        sbuf_free(b);
    return rc;
}

/* Any thread. */
static int checkpoint_write(struct core *c, const struct sbuf *b, uint64_t index)
{
    uint64_t t0 = clock_mono_ns();
    int rc = broker_sync(c->broker);
    if (rc) {
        set_fatal(c, rc, "checkpoint: partition log fsync");
        return rc;
    }
    char name[32];
    snprintf(name, sizeof name, "%020" PRIu64 ".snap", index);
    rc = write_file_durable(c, c->snap_dir, name, b->data, b->len);
    if (rc) {
        /* Nothing acknowledged depends on a checkpoint: not fatal unless the disk is failing. */
        LOG_E("core", "checkpoint at %" PRIu64 " failed: %s", index, err_message(rc));
        return rc;
    }
    struct snap_list l = {.n = 0};
    io_list(c->cfg.fs, c->snap_dir, snap_list_fn, &l);
    for (int i = 0; i < l.n; i++) {
        if (l.idx[i] < index) {
            char old[32];
            snprintf(old, sizeof old, "%020" PRIu64 ".snap", l.idx[i]);
            char *p = join(c->snap_dir, old);
            if (p)
                io_unlink(c->cfg.fs, p);
            xfree(p);
        }
    }
    LOG_I("core", "checkpoint at index %" PRIu64 " written in %.1f ms", index,
          (double)(clock_mono_ns() - t0) / 1e6);
    return 0;
}

/* Core thread, no journal sync in flight. */
static void checkpoint_finish(struct core *c, uint64_t index)
{
    int rc = journal_trim_prefix(c->j, index);
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
    rc = checkpoint_write(c, &b, index);
    sbuf_free(&b);
    if (!rc && !c->sync_inflight)
        checkpoint_finish(c, index);
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
    c->ckpt_busy = true;
    c->last_checkpoint_ms = clock_mono_ms();
    pthread_mutex_lock(&c->mu);
    c->ckpt_buf = b;
    c->ckpt_index = c->applied_index;
    c->ckpt_have_job = true;
    pthread_cond_signal(&c->cond_prealloc);
    pthread_mutex_unlock(&c->mu);
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
        char *path = join(c->snap_dir, name);
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
            if (size < 32 || get_le32(b.data) != SNAP_FILE_MAGIC ||
                crc32c(0, b.data, b.len - 4) != get_le32(b.data + b.len - 4)) {
                rc = ERR_CORRUPT;
            }
        }
        if (!rc) {
            uint64_t idx = get_le64(b.data + 4);
            uint64_t blen = get_le64(b.data + 20);
            if (blen > b.len - 32 || idx != l.idx[i]) {
                rc = ERR_CORRUPT;
            } else {
                rc = broker_snapshot_read(c->broker, slice_of(b.data + 28, (size_t)blen));
                if (!rc)
                    rc = kv_snapshot_read(c->kv, slice_of(b.data + 28 + blen,
                                                          b.len - 28 - (size_t)blen - 4));
                if (!rc)
                    *index_out = idx;
            }
        }
        sbuf_free(&b);
        if (!rc)
            return 0;
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
        rc = broker_open(c->cfg.fs, c->cfg.data_dir, &c->cfg.broker, &c->broker);
        if (rc || !c->kv)
            return rc ? rc : ERR_NOMEM;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Recovery                                                                                    */

static int replay(struct core *c)
{
    uint64_t first = journal_first_index(c->j), last = journal_last_index(c->j);
    if (last == 0 || last <= c->applied_index) {
        if (last < c->applied_index) {
            /* Journal trimmed past its own end (everything was in the snapshot). */
            return journal_set_base(c->j, c->applied_index, TERM);
        }
        return 0;
    }
    if (first > c->applied_index + 1) {
        LOG_E("core", "journal starts at %" PRIu64 " but the snapshot ends at %" PRIu64
              ": entries are missing", first, c->applied_index);
        return ERR_CORRUPT;
    }
    struct journal_iter *it;
    int rc = journal_iter_open(c->j, c->applied_index + 1, &it);
    if (rc)
        return rc;
    uint64_t term, index;
    uint8_t type;
    struct slice payload;
    struct sbuf copy;
    sbuf_init(&copy, 0);
    while ((rc = journal_iter_next(it, &term, &index, &type, &payload)) == 1) {
        if (index != c->applied_index + 1) {
            rc = ERR_CORRUPT;
            break;
        }
        /* The iterator's buffer is reused by the next call: apply from a copy and end the round
         * before moving on, so staged record slices never outlive their bytes. */
        sbuf_reset(&copy);
        sbuf_append(&copy, payload.ptr, payload.len);
        if (!sbuf_ok(&copy)) {
            rc = ERR_NOMEM;
            break;
        }
        struct apply_result res;
        rc = apply_entry(c, index, type, slice_of(copy.data, copy.len), &res);
        if (!rc)
            rc = broker_round_end(c->broker);
        if (rc)
            break;
        c->applied_index = index;
        c->replayed++;
    }
    journal_iter_close(it);
    sbuf_free(&copy);
    return rc < 0 ? rc : 0;
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
    /* The core thread's timed wait uses CLOCK_MONOTONIC deadlines. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_cond_init(&c->cond_prealloc, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&c->sync_cond, NULL);
    hmap_init(&c->seq);
    struct io_fs *fs = cfg->fs;
    int rc = io_mkdir(fs, cfg->data_dir);
    /* The data dir's own entry must be durable too: fsync its parent. */
    char *parent = xstrndup(cfg->data_dir, strlen(cfg->data_dir));
    if (!rc && parent) {
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
        else
            strcpy(parent, ".");
        rc = io_sync_dir(fs, parent);
    }
    xfree(parent);
    c->journal_dir = join(cfg->data_dir, "journal");
    c->snap_dir = join(cfg->data_dir, "snapshot");
    if (!rc && (!c->journal_dir || !c->snap_dir))
        rc = ERR_NOMEM;
    if (!rc)
        rc = io_mkdir(fs, c->snap_dir);
    if (!rc)
        rc = io_sync_dir(fs, cfg->data_dir);
    if (rc) {
        LOG_E("core", "data dir %s: %s (errno %d)", cfg->data_dir, err_message(rc), io_last_errno());
        goto fail;
    }
    c->kv = kv_new(&cfg->kv);
    if (!c->kv) {
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
    bool warned = false;
    uint64_t last_flush_ms = clock_mono_ms();
    pthread_mutex_lock(&c->mu);
    while (!c->stopping || c->ckpt_have_job) {
        if (c->ckpt_have_job) {
            struct sbuf b = c->ckpt_buf;
            uint64_t index = c->ckpt_index;
            c->ckpt_have_job = false;
            pthread_mutex_unlock(&c->mu);
            int crc = checkpoint_write(c, &b, index);
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
 * hands out the next token only after consuming the previous result. */
static void *sync_main(void *arg)
{
    struct core *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (!c->sync_tok && !c->sync_stop) {
            /* Under load the next token follows within tens of microseconds: spin briefly
             * before sleeping, so back-to-back fsyncs do not pay a futex wake-up each. */
            pthread_mutex_unlock(&c->mu);
            for (int i = 0; i < 2000 && !atomic_load_explicit(&c->sync_tok_ready,
                                                              memory_order_acquire); i++)
                cpu_relax();
            pthread_mutex_lock(&c->mu);
        }
        while (!c->sync_tok && !c->sync_stop)
            pthread_cond_wait(&c->sync_cond, &c->mu);
        if (!c->sync_tok)
            break;
        atomic_store_explicit(&c->sync_tok_ready, false, memory_order_relaxed);
        struct journal_sync *tok = c->sync_tok;
        c->sync_tok = NULL;
        pthread_mutex_unlock(&c->mu);
        int rc = journal_sync_run(tok);
        int e = io_last_errno(); /* thread-local: hand it to the core thread for the message */
        pthread_mutex_lock(&c->mu);
        c->sync_done_tok = tok;
        c->sync_rc = rc;
        c->sync_errno = e;
        c->sync_has_result = true;
        pthread_cond_signal(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void fail_all(struct core *c, int err)
{
    while (c->pend_head) {
        struct proposal *p = c->pend_head;
        c->pend_head = p->next;
        fail(c, p, err);
    }
    c->pend_tail = NULL;
    while (c->dup_head) {
        struct proposal *p = c->dup_head;
        c->dup_head = p->next;
        fail(c, p, err);
    }
}

static void check_space(struct core *c, bool force);

static void tick(struct core *c)
{
    int64_t now = clock_wall_ms();
    check_space(c, true);
    /* Retention and TTL sweeps once a second (every 5th tick): both scan whole structures. */
    if (++c->ticks % 5 == 0) {
        broker_retention_scan(c->broker, now, retention_fn, c);
        kv_collect_expired(c->kv, now, 1000, expired_fn, c);
    }
    struct journal_stats js;
    journal_stats(c->j, &js);
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

static void *core_main(void *arg)
{
    struct core *c = arg;
    c->next_tick_ms = clock_mono_ms() + TICK_MS;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        for (;;) {
            if (c->in_head || c->sync_has_result || c->ckpt_have_result)
                break;
            if (c->stopping && !c->sync_inflight && !c->pend_head && !c->dup_head)
                break;
            uint64_t now = clock_mono_ms();
            if (now >= c->next_tick_ms)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wait_ms = c->next_tick_ms - now;
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
        bool have_sync = c->sync_has_result;
        int sync_rc = c->sync_rc;
        struct journal_sync *tok = c->sync_done_tok;
        if (have_sync) {
            c->sync_has_result = false;
            c->sync_done_tok = NULL;
        }
        bool have_ckpt = c->ckpt_have_result;
        int ckpt_rc = c->ckpt_rc;
        uint64_t ckpt_index = c->ckpt_index;
        c->ckpt_have_result = false;
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (have_ckpt) {
            c->ckpt_busy = false;
            if (ckpt_rc == 0)
                c->trim_pending = ckpt_index;
        }

        if (have_sync) {
            c->sync_inflight = false;
            int rc = journal_sync_done(c->j, tok, sync_rc);
            if (rc) {
                io_set_last_errno(c->sync_errno);
                set_fatal(c, rc, "journal fsync");
            }
        }
        /* Order matters for latency: new entries are written and the next fsync is started
         * before the entries made durable by the previous one are applied and answered, so the
         * disk works while this thread does. */
        int fatal = atomic_load(&c->fatal);
        if (in)
            check_space(c, false);
        while (in) {
            struct proposal *p = in;
            in = p->next;
            int rc = fatal                                          ? fatal
                     : (c->nospace_watermark && !frees_space(p->type)) ? ERR_NOSPACE
                                                                       : sequence(c, p);
            if (rc)
                fail(c, p, rc);
            atomic_fetch_add_explicit(&c->st_proposals, 1, memory_order_relaxed);
        }
        if (!atomic_load(&c->fatal)) {
            int rc = journal_flush(c->j);
            if (rc == ERR_NOSPACE) {
                if (!c->nospace_journal)
                    LOG_E("core", "journal: no space left on device; writes refused until space returns");
                c->nospace_journal = true;
            } else if (rc) {
                set_fatal(c, rc, "journal write");
            } else if (c->nospace_journal &&
                       journal_flushed_index(c->j) == journal_last_index(c->j)) {
                c->nospace_journal = false;
                LOG_I("core", "journal: space is back; buffered entries written");
            }
            atomic_store(&c->nospace, c->nospace_journal || c->nospace_watermark);
        }
        if (c->checkpoint_due && !atomic_load(&c->fatal)) {
            c->checkpoint_due = false;
            checkpoint_start(c); /* between rounds: the state is exactly applied_index */
        }
        if (c->trim_pending && !c->sync_inflight && !atomic_load(&c->fatal)) {
            checkpoint_finish(c, c->trim_pending);
            c->trim_pending = 0;
        }
        if (!atomic_load(&c->fatal) && !c->sync_inflight &&
            journal_flushed_index(c->j) > journal_durable_index(c->j)) {
            struct journal_sync *t = NULL;
            int rc = journal_sync_prepare(c->j, &t);
            if (rc) {
                set_fatal(c, rc, "journal sync");
            } else if (t) {
                c->sync_inflight = true;
                pthread_mutex_lock(&c->mu);
                c->sync_tok = t;
                atomic_store_explicit(&c->sync_tok_ready, true, memory_order_release);
                pthread_cond_signal(&c->sync_cond);
                pthread_mutex_unlock(&c->mu);
            }
        }
        if (!atomic_load(&c->fatal))
            apply_durable(c);
        if (atomic_load(&c->fatal) && !c->sync_inflight)
            fail_all(c, ERR_STORE_FAILED);
        if (clock_mono_ms() >= c->next_tick_ms) {
            c->next_tick_ms = clock_mono_ms() + TICK_MS;
            if (!atomic_load(&c->fatal) && !stopping)
                tick(c);
        }
        if (stopping && !c->sync_inflight && !c->pend_head && !c->dup_head) {
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
}

void core_close(struct core *c)
{
    if (!c)
        return;
    if (c->j)
        journal_close(c->j);
    broker_close(c->broker);
    kv_free(c->kv);
    seq_clear(c);
    xfree(c->journal_dir);
    xfree(c->snap_dir);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->why_mu);
    pthread_cond_destroy(&c->cond);
    pthread_cond_destroy(&c->sync_cond);
    pthread_cond_destroy(&c->cond_prealloc);
    xfree(c);
}

int core_propose(struct core *c, struct proposal *p)
{
    int f = atomic_load(&c->fatal);
    if (f)
        return f;
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
    bool was_empty = c->in_head == NULL;
    if (c->in_tail)
        c->in_tail->next = p;
    else
        c->in_head = p;
    c->in_tail = p;
    if (was_empty)
        pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

struct broker *core_broker(struct core *c) { return c->broker; }
struct kv *core_kv(struct core *c) { return c->kv; }

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
    st->inflight = atomic_load(&c->inflight);
    st->recovery_ms = c->recovery_ms;
    st->replayed_entries = c->replayed;
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
    char *p = join(k->dir, name);
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
    char *jd = join(data_dir, "journal"), *td = join(data_dir, "topics");
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
    xfree(jd);
    xfree(td);
    return rc ? rc : (k.bad ? ERR_CORRUPT : 0);
}
