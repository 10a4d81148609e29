/* broker.c -- the broker state machine (see broker.h).
 *
 * Invariants:
 *  1. A partition's high watermark only moves forward, and only in broker_round_publish (or
 *     broker_round_end), after the round's records are written to its log: readers never see a
 *     record whose entry is not applied.
 *  2. Records staged in a round are written in entry order, so offsets follow journal order.
 *  3. Committed offsets never move backwards (a backward commit is ignored and reported).
 *  4. Retention only raises floors and deletes whole segments: it never touches topics, committed
 *     offsets, KV or idempotency records.
 *  5. Everything apply decides is a function of (state, entry): no clocks, no randomness.
 *  6. A waiter is woken only after the high watermark it waited for is published. Waking is two
 *     steps: publishing takes the due waiters off their partitions onto one due list (so
 *     broker_unwait no longer finds them), broker_wake_due calls their wake functions outside
 *     the lock. Between the two the core answers the round's proposals, so a produce's answer
 *     is posted to its HTTP worker before the round's (possibly thousands of) wake-ups.
 *  7. No lost wake-up: a waiter parked by broker_wait is woken by the first round that raises its
 *     partition's high watermark past its offset. The publisher skips wait_mu when nwaiters is 0,
 *     so the two sides are a Dekker handshake, each storing before it loads, with a seq_cst
 *     fence between: broker_wait counts itself in nwaiters, then reads the high watermark;
 *     broker_round_end stores the high watermark (plog_publish), then reads nwaiters. At least
 *     one of them sees the other's store, on any CPU (a weakly ordered one included).
 */
#include "broker/broker.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hmap.h"
#include "base/log.h"
#include "broker/entry.h"
#include "broker/recbatch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct staged {
    struct plog_record *recs;
    size_t n, cap;
    /* headers are copied into a per-round array because entry decoding reuses a scratch array */
    struct plog_header *hdrs;
    size_t nh, caph;
};

struct partition {
    struct plog *log;
    int64_t ttl_ms, max_bytes;    /* per-partition policy, RETENTION_UNSET if none */
    struct staged st;
    bool touched;
    struct broker_waiter *waiters;
};

struct topic {
    char *name;
    size_t name_len;
    uint64_t id;
    uint32_t nparts;
    struct partition *parts;
    int64_t ttl_ms, max_bytes;    /* topic policy */
    struct topic *next_touched;
};

struct idem_node {
    struct idem_rec rec;
    struct idem_node *older, *newer; /* FIFO by insertion */
    size_t key_len;
    uint8_t key[];                  /* topic \0 idem_key */
};

struct trash {
    char *path;
    uint64_t index; /* journal index of the delete */
    struct trash *next;
};

struct broker {
    struct io_fs *fs;
    struct trash *trash; /* deleted topics' directories, removed after the next checkpoint */
    char *dir;           /* DATA */
    char *topics_dir;    /* DATA/topics */
    struct broker_opts opts;
    pthread_rwlock_t meta;
    struct hmap topics;  /* name -> struct topic */
    pthread_mutex_t off_mu;
    struct hmap offsets; /* topic\0group\0partition(le32) -> (offset + 1) */
    struct hmap idem;    /* topic\0key -> struct idem_node */
    struct idem_node *idem_oldest, *idem_newest;
    int64_t all_ttl_ms, all_max_bytes; /* "*" policy */
    struct topic *touched;
    pthread_mutex_t wait_mu;
    _Atomic uint64_t nwaiters;
    /* Waiters taken off their partitions whose wake functions have not been called yet
     * (broker_wake_due), in the order they were taken; under wait_mu. */
    struct broker_waiter *due_head, *due_tail;
};

bool broker_valid_name(struct slice s, size_t max)
{
    if (s.len == 0 || s.len > max)
        return false;
    if (slice_eq_cstr(s, ".") || slice_eq_cstr(s, ".."))
        return false;
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int broker_open(struct io_fs *fs, const char *data_dir, const struct broker_opts *o,
                struct broker **out)
{
    struct broker *b = xcalloc(1, sizeof *b);
    if (!b)
        return ERR_NOMEM;
    b->fs = fs;
    if (o)
        b->opts = *o;
    if (!b->opts.idem_keys_max)
        b->opts.idem_keys_max = BROKER_IDEM_KEYS_MAX;
    if (!b->opts.idem_window_ms)
        b->opts.idem_window_ms = BROKER_IDEM_WINDOW_MS;
    b->dir = xstrndup(data_dir, strlen(data_dir));
    b->topics_dir = io_path_join(data_dir, "topics");
    if (!b->dir || !b->topics_dir) {
        broker_close(b);
        return ERR_NOMEM;
    }
    /* Durable before any topic directory in it is (those are fsynced in topics/). */
    int rc = io_mkdir_durable(fs, b->topics_dir);
    if (rc) {
        broker_close(b);
        return rc;
    }
    pthread_rwlock_init(&b->meta, NULL);
    pthread_mutex_init(&b->off_mu, NULL);
    pthread_mutex_init(&b->wait_mu, NULL);
    hmap_init(&b->topics);
    hmap_init(&b->offsets);
    hmap_init(&b->idem);
    b->all_ttl_ms = RETENTION_UNSET;
    b->all_max_bytes = RETENTION_UNSET;
    *out = b;
    return 0;
}

static void topic_free(struct topic *t, bool destroy)
{
    for (uint32_t i = 0; i < t->nparts; i++) {
        struct partition *p = &t->parts[i];
        if (p->log) {
            if (destroy)
                plog_destroy(p->log);
            else
                plog_close(p->log);
        }
        xfree(p->st.recs);
        xfree(p->st.hdrs);
    }
    xfree(t->parts);
    xfree(t->name);
    xfree(t);
}

void broker_close(struct broker *b)
{
    if (!b)
        return;
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->topics, &bk, &cur)))
        topic_free(n->value, false);
    hmap_free(&b->topics);
    bk = 0;
    cur = NULL;
    while ((n = hmap_next(&b->idem, &bk, &cur)))
        xfree(n->value);
    hmap_free(&b->idem);
    hmap_free(&b->offsets);
    while (b->trash) {
        struct trash *x = b->trash;
        b->trash = x->next;
        xfree(x->path);
        xfree(x);
    }
    if (b->topics_dir) {
        pthread_rwlock_destroy(&b->meta);
        pthread_mutex_destroy(&b->off_mu);
        pthread_mutex_destroy(&b->wait_mu);
    }
    xfree(b->dir);
    xfree(b->topics_dir);
    xfree(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Topics                                                                                      */

static struct topic *topic_get(struct broker *b, struct slice name)
{
    return hmap_get(&b->topics, name);
}

static char *topic_dir(struct broker *b, struct slice name, uint64_t id)
{
    char leaf[BROKER_TOPIC_NAME_MAX + 32];
    snprintf(leaf, sizeof leaf, "%.*s-%llu", (int)name.len, (const char *)name.ptr,
             (unsigned long long)id);
    return io_path_join(b->topics_dir, leaf);
}

/* Create the in-memory topic and open (or create) its partition logs. With `fresh`, every log
 * is truncated to empty: a topic created by a journal entry has no records yet, whatever files
 * a crash may have left behind. */
static int topic_create(struct broker *b, struct slice name, uint32_t nparts, uint64_t id,
                        bool fresh, struct topic **out)
{
    struct topic *t = xcalloc(1, sizeof *t);
    if (!t)
        return ERR_NOMEM;
    t->name = xstrndup((const char *)name.ptr, name.len);
    t->name_len = name.len;
    t->id = id;
    t->nparts = nparts;
    t->parts = xcalloc(nparts, sizeof *t->parts);
    t->ttl_ms = t->max_bytes = RETENTION_UNSET;
    char *dir = topic_dir(b, name, id);
    int rc = (!t->name || !t->parts || !dir) ? ERR_NOMEM : 0;
    if (!rc)
        rc = io_mkdir_durable(b->fs, dir);
    for (uint32_t i = 0; !rc && i < nparts; i++) {
        char leaf[16];
        snprintf(leaf, sizeof leaf, "%u", i);
        char *pd = io_path_join(dir, leaf);
        if (!pd) {
            rc = ERR_NOMEM;
            break;
        }
        struct partition *p = &t->parts[i];
        p->ttl_ms = p->max_bytes = RETENTION_UNSET;
        rc = plog_open(b->fs, pd, &b->opts.plog, &p->log);
        xfree(pd);
        if (!rc && fresh && plog_end_offset(p->log) > 0)
            rc = plog_truncate(p->log, 0);
    }
    if (!rc)
        rc = io_sync_dir(b->fs, dir);
    xfree(dir);
    if (rc) {
        LOG_E("broker", "create topic %.*s: %s", (int)name.len, (const char *)name.ptr,
              err_message(rc));
        topic_free(t, false);
        return rc;
    }
    *out = t;
    return 0;
}

static int topic_insert(struct broker *b, struct topic *t)
{
    pthread_rwlock_wrlock(&b->meta);
    int rc = hmap_put(&b->topics, slice_of(t->name, t->name_len), t, NULL);
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Offsets and idempotency keys                                                                */

static size_t offset_key(uint8_t *buf, struct slice topic, struct slice group, uint32_t part)
{
    memcpy(buf, topic.ptr, topic.len);
    buf[topic.len] = 0;
    memcpy(buf + topic.len + 1, group.ptr, group.len);
    buf[topic.len + 1 + group.len] = 0;
    put_le32(buf + topic.len + 2 + group.len, part);
    return topic.len + group.len + 6;
}

#define OFFSET_KEY_MAX (BROKER_TOPIC_NAME_MAX + BROKER_GROUP_NAME_MAX + 8)

int broker_committed(struct broker *b, struct slice topic, struct slice group, uint32_t partition,
                     uint64_t *off)
{
    if (topic.len > BROKER_TOPIC_NAME_MAX || group.len > BROKER_GROUP_NAME_MAX)
        return ERR_NOT_FOUND;
    uint8_t k[OFFSET_KEY_MAX];
    size_t kl = offset_key(k, topic, group, partition);
    pthread_mutex_lock(&b->off_mu);
    void *v = hmap_get(&b->offsets, slice_of(k, kl));
    pthread_mutex_unlock(&b->off_mu);
    if (!v)
        return ERR_NOT_FOUND;
    *off = (uint64_t)(uintptr_t)v - 1;
    return 0;
}

static int offset_set(struct broker *b, const uint8_t *k, size_t kl, uint64_t off)
{
    pthread_mutex_lock(&b->off_mu);
    int rc = hmap_put(&b->offsets, slice_of(k, kl), (void *)(uintptr_t)(off + 1), NULL);
    pthread_mutex_unlock(&b->off_mu);
    return rc;
}

static size_t idem_key(uint8_t *buf, struct slice topic, struct slice key)
{
    memcpy(buf, topic.ptr, topic.len);
    buf[topic.len] = 0;
    memcpy(buf + topic.len + 1, key.ptr, key.len);
    return topic.len + 1 + key.len;
}

#define IDEM_KEY_MAX (BROKER_TOPIC_NAME_MAX + ENTRY_IDEM_MAX + 2)

static void idem_unlink(struct broker *b, struct idem_node *n)
{
    if (n->older)
        n->older->newer = n->newer;
    else
        b->idem_oldest = n->newer;
    if (n->newer)
        n->newer->older = n->older;
    else
        b->idem_newest = n->older;
}

/* Evict by count and by age (age measured against the newest entry's timestamp: deterministic). */
static void idem_evict(struct broker *b, int64_t now_ms)
{
    while (b->idem_oldest && (b->idem.count > b->opts.idem_keys_max ||
                              b->idem_oldest->rec.ts_ms + b->opts.idem_window_ms < now_ms)) {
        struct idem_node *n = b->idem_oldest;
        idem_unlink(b, n);
        hmap_del(&b->idem, slice_of(n->key, n->key_len));
        xfree(n);
    }
}

bool broker_idem_get(struct broker *b, struct slice topic, struct slice key, struct idem_rec *out)
{
    if (topic.len > BROKER_TOPIC_NAME_MAX || key.len > ENTRY_IDEM_MAX)
        return false;
    uint8_t k[IDEM_KEY_MAX];
    size_t kl = idem_key(k, topic, key);
    struct idem_node *n = hmap_get(&b->idem, slice_of(k, kl));
    if (!n || n->rec.ts_ms + b->opts.idem_window_ms < (b->idem_newest ? b->idem_newest->rec.ts_ms : 0))
        return false;
    *out = n->rec;
    return true;
}

int broker_idem_put(struct broker *b, struct slice topic, struct slice key, const struct idem_rec *r)
{
    if (topic.len > BROKER_TOPIC_NAME_MAX || key.len > ENTRY_IDEM_MAX)
        return ERR_INVALID;
    uint8_t k[IDEM_KEY_MAX];
    size_t kl = idem_key(k, topic, key);
    struct idem_node *old = hmap_get(&b->idem, slice_of(k, kl));
    if (old) {
        old->rec = *r; /* same key re-sequenced after its window: newest wins */
        idem_unlink(b, old);
        old->older = b->idem_newest;
        old->newer = NULL;
        if (b->idem_newest)
            b->idem_newest->newer = old;
        else
            b->idem_oldest = old;
        b->idem_newest = old;
        return 0;
    }
    struct idem_node *n = xmalloc(sizeof *n + kl);
    if (!n)
        return ERR_NOMEM;
    n->rec = *r;
    n->key_len = kl;
    memcpy(n->key, k, kl);
    if (hmap_put(&b->idem, slice_of(n->key, kl), n, NULL)) {
        xfree(n);
        return ERR_NOMEM;
    }
    n->newer = NULL;
    n->older = b->idem_newest;
    if (b->idem_newest)
        b->idem_newest->newer = n;
    else
        b->idem_oldest = n;
    b->idem_newest = n;
    idem_evict(b, r->ts_ms);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Apply                                                                                       */

static int stage(struct partition *p, const struct plog_record *rec)
{
    struct staged *s = &p->st;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct plog_record *r = xrealloc(s->recs, cap * sizeof *r);
        if (!r)
            return ERR_NOMEM;
        s->recs = r;
        s->cap = cap;
    }
    s->recs[s->n] = *rec;
    s->recs[s->n].headers = NULL;
    if (rec->header_count) {
        if (s->nh + rec->header_count > s->caph) {
            size_t cap = s->caph ? s->caph * 2 : 64;
            while (cap < s->nh + rec->header_count)
                cap *= 2;
            struct plog_header *h = xrealloc(s->hdrs, cap * sizeof *h);
            if (!h)
                return ERR_NOMEM;
            s->hdrs = h;
            s->caph = cap;
        }
        memcpy(s->hdrs + s->nh, rec->headers, rec->header_count * sizeof *rec->headers);
        /* store the index; pointers are fixed up in round_end after the array stops moving */
        s->recs[s->n].headers = (const struct plog_header *)(uintptr_t)(s->nh + 1);
        s->nh += rec->header_count;
    }
    s->n++;
    return 0;
}

static void touch(struct broker *b, struct topic *t, struct partition *p)
{
    if (p->touched)
        return;
    p->touched = true;
    /* topics on the touched list are linked once; partitions flagged individually */
    struct topic *x = b->touched;
    while (x && x != t)
        x = x->next_touched;
    if (!x) {
        t->next_touched = b->touched;
        b->touched = t;
    }
}

static uint64_t staged_end(struct partition *p) { return plog_end_offset(p->log) + p->st.n; }

/* Write the partition's staged records now (one batch), so a raw batch that follows them in the
 * round lands after them: offsets keep journal order (invariant 2). Visibility still waits for
 * broker_round_end. */
static int flush_staged(struct partition *p)
{
    struct staged *s = &p->st;
    for (size_t k = 0; k < s->n; k++) {
        if (s->recs[k].headers)
            s->recs[k].headers = s->hdrs + ((uintptr_t)s->recs[k].headers - 1);
    }
    int rc = s->n ? plog_append(p->log, s->recs, s->n) : 0;
    s->n = 0;
    s->nh = 0;
    return rc;
}

/* A Kafka client's batch, stored as sent (PRODUCE_RAW_BATCH). Re-validated here: apply decides
 * only from the entry, and a malformed one is rejected the same way on every node. */
static int apply_raw_batch(struct partition *p, const struct entry_produce *e,
                           struct apply_result *res)
{
    struct recbatch_info h;
    if (recbatch_decode(e->records, &h) || h.batch_bytes != e->records.len ||
        h.record_count < 1 || (uint32_t)h.record_count != e->count ||
        h.last_offset_delta != h.record_count - 1) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    int rc = flush_staged(p);
    if (rc)
        return rc;
    return plog_append_batch(p->log, e->records);
}

static int apply_produce(struct broker *b, uint64_t index, struct slice payload,
                         struct apply_result *res)
{
    struct entry_produce e;
    if (entry_produce_decode(payload, &e)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    res->timestamp_ms = e.ts_ms;
    res->partition = e.partition;
    struct topic *t = topic_get(b, e.topic);
    if (!t && (e.flags & PRODUCE_AUTO_CREATE)) {
        if (!broker_valid_name(e.topic, BROKER_TOPIC_NAME_MAX) || e.create_partitions == 0 ||
            e.create_partitions > BROKER_PARTITIONS_MAX) {
            res->err = ERR_BAD_NAME;
            return 0;
        }
        int rc = topic_create(b, e.topic, e.create_partitions, index, true, &t);
        if (rc)
            return rc;
        if ((rc = topic_insert(b, t))) {
            topic_free(t, true);
            return rc;
        }
    }
    if (!t) {
        res->err = ERR_NO_TOPIC;
        return 0;
    }
    if (e.partition >= t->nparts) {
        res->err = ERR_BAD_PARTITION;
        return 0;
    }
    struct partition *p = &t->parts[e.partition];
    if (e.flags & PRODUCE_HAS_IDEM) {
        struct idem_rec ir;
        if (broker_idem_get(b, e.topic, e.idem_key, &ir) && ir.index != index) {
            res->duplicate = true;
            res->partition = ir.partition;
            res->offset = ir.offset;
            res->count = ir.count;
            return 0;
        }
    }
    if (e.flags & PRODUCE_DUPLICATE) {
        /* The sequencer decided this is a duplicate of an entry that is no longer in the table
         * (cannot happen within one window; treated as a duplicate with unknown position). */
        res->duplicate = true;
        return 0;
    }
    uint64_t base = staged_end(p);
    if (e.flags & PRODUCE_RAW_BATCH) {
        int rc = apply_raw_batch(p, &e, res);
        if (rc || res->err)
            return rc;
        touch(b, t, p);
        res->offset = base;
        res->count = e.count;
        return 0;
    }
    if (base != e.base_offset)
        LOG_W("broker", "entry %llu: sequenced offset %llu, applied at %llu",
              (unsigned long long)index, (unsigned long long)e.base_offset,
              (unsigned long long)base);
    size_t pos = 0;
    uint32_t n = 0;
    struct plog_header hdrs[ENTRY_HEADERS_MAX];
    struct plog_record rec;
    int r;
    while ((r = entry_records_next(&e, &pos, &rec, hdrs)) == 1) {
        int rc = stage(p, &rec);
        if (rc)
            return rc;
        n++;
    }
    if (r < 0 || n != e.count) {
        /* Undo the partial staging of a malformed entry. */
        p->st.n -= n;
        res->err = ERR_CORRUPT;
        return 0;
    }
    touch(b, t, p);
    res->offset = base;
    res->count = n;
    if (e.flags & PRODUCE_HAS_IDEM) {
        struct idem_rec ir = {e.partition, base, n, index, e.ts_ms};
        int rc = broker_idem_put(b, e.topic, e.idem_key, &ir);
        if (rc)
            return rc;
    }
    return 0;
}

/* Take the partition's waiters that are due (all of them with everyone) off it and queue them
 * for broker_wake_due. Taken off, a waiter is no longer parked (broker_unwait answers false), so
 * its owner keeps it alive until its wake function runs. */
static void wake_all(struct broker *b, struct partition *p, bool everyone)
{
    /* The publisher's half of invariant 6: the high watermark is stored; now look for waiters. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&b->nwaiters, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&b->wait_mu);
    uint64_t hw = p->log ? plog_high_watermark(p->log) : UINT64_MAX;
    struct broker_waiter *w = p->waiters;
    while (w) {
        struct broker_waiter *next = w->next;
        if (everyone || w->offset < hw) {
            if (w->prev)
                w->prev->next = w->next;
            else
                p->waiters = w->next;
            if (w->next)
                w->next->prev = w->prev;
            w->owner = NULL;
            atomic_fetch_sub(&b->nwaiters, 1);
            w->prev = NULL;
            w->next = NULL;
            if (b->due_tail)
                b->due_tail->next = w;
            else
                b->due_head = w;
            b->due_tail = w;
        }
        w = next;
    }
    pthread_mutex_unlock(&b->wait_mu);
}

void broker_wake_due(struct broker *b)
{
    pthread_mutex_lock(&b->wait_mu);
    struct broker_waiter *w = b->due_head;
    b->due_head = b->due_tail = NULL;
    pthread_mutex_unlock(&b->wait_mu);
    /* Outside the lock: a wake function may run on and re-park its waiter at once elsewhere,
     * so the link is read first. */
    while (w) {
        struct broker_waiter *next = w->next;
        w->next = NULL;
        w->wake(w);
        w = next;
    }
}

int broker_round_publish(struct broker *b)
{
    int rc = 0;
    struct topic *t = b->touched;
    b->touched = NULL;
    while (t) {
        struct topic *next = t->next_touched;
        t->next_touched = NULL;
        for (uint32_t i = 0; i < t->nparts; i++) {
            struct partition *p = &t->parts[i];
            if (!p->touched)
                continue;
            p->touched = false;
            struct staged *s = &p->st;
            for (size_t k = 0; k < s->n; k++) {
                if (s->recs[k].headers)
                    s->recs[k].headers = s->hdrs + ((uintptr_t)s->recs[k].headers - 1);
            }
            if (s->n && !rc)
                rc = plog_append(p->log, s->recs, s->n);
            s->n = 0;
            s->nh = 0;
            if (!rc) {
                plog_publish(p->log, plog_end_offset(p->log));
                wake_all(b, p, false);
            }
        }
        t = next;
    }
    if (rc)
        LOG_E("broker", "partition log append failed: %s", err_message(rc));
    return rc;
}

int broker_round_end(struct broker *b)
{
    int rc = broker_round_publish(b);
    broker_wake_due(b);
    return rc;
}

static int apply_topic_create(struct broker *b, uint64_t index, struct slice payload,
                              struct apply_result *res)
{
    struct entry_topic e;
    if (entry_topic_decode(payload, &e)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    res->partitions = e.partitions;
    if (!broker_valid_name(e.name, BROKER_TOPIC_NAME_MAX) || e.partitions == 0 ||
        e.partitions > BROKER_PARTITIONS_MAX) {
        res->err = ERR_INVALID;
        return 0;
    }
    struct topic *t = topic_get(b, e.name);
    if (t) {
        res->partitions = t->nparts;
        res->err = t->nparts == e.partitions ? 0 : ERR_CONFLICT;
        res->created = false;
        return 0;
    }
    int rc = topic_create(b, e.name, e.partitions, index, true, &t);
    if (rc)
        return rc;
    if ((rc = topic_insert(b, t))) {
        topic_free(t, true);
        return rc;
    }
    res->created = true;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Deleted topics: renamed aside, removed after the next checkpoint                            */

#define TRASH_SUFFIX ".deleted"

static char *trash_name(const char *dir)
{
    size_t n = strlen(dir);
    char *t = xmalloc(n + sizeof TRASH_SUFFIX);
    if (t) {
        memcpy(t, dir, n);
        memcpy(t + n, TRASH_SUFFIX, sizeof TRASH_SUFFIX);
    }
    return t;
}

static int trash_add(struct broker *b, const char *dir, uint64_t index)
{
    char *t = trash_name(dir);
    if (!t)
        return ERR_NOMEM;
    int rc = io_rename_durable(b->fs, dir, t);
    if (rc) {
        xfree(t);
        return rc;
    }
    struct trash *x = xmalloc(sizeof *x);
    if (!x) {
        xfree(t);
        return ERR_NOMEM;
    }
    x->path = t;
    x->index = index;
    x->next = b->trash;
    b->trash = x;
    return 0;
}

struct rm_ctx {
    struct io_fs *fs;
    const char *dir;
    int depth;
};

static int rm_entry(void *ctx, const char *name);

/* Remove a directory tree of at most two levels (topic dir -> partition dirs -> files). */
static void rm_tree(struct io_fs *fs, const char *dir, int depth)
{
    struct rm_ctx k = {fs, dir, depth};
    io_list(fs, dir, rm_entry, &k);
    io_rmdir(fs, dir);
}

static int rm_entry(void *ctx, const char *name)
{
    struct rm_ctx *k = ctx;
    char *p = io_path_join(k->dir, name);
    if (!p)
        return 0;
    if (io_unlink(k->fs, p) != 0 && k->depth < 2)
        rm_tree(k->fs, p, k->depth + 1); /* a directory */
    xfree(p);
    return 0;
}

void broker_collect_trash(struct broker *b, uint64_t upto_index)
{
    struct trash **pp = &b->trash;
    bool any = false;
    while (*pp) {
        struct trash *x = *pp;
        if (x->index <= upto_index) {
            rm_tree(b->fs, x->path, 0);
            *pp = x->next;
            xfree(x->path);
            xfree(x);
            any = true;
        } else {
            pp = &x->next;
        }
    }
    if (any)
        io_sync_dir(b->fs, b->topics_dir);
}

struct trash_scan {
    struct broker *b;
    int rc;
};

static int trash_scan_fn(void *ctx, const char *name)
{
    struct trash_scan *k = ctx;
    size_t n = strlen(name), m = sizeof TRASH_SUFFIX - 1;
    if (n <= m || strcmp(name + n - m, TRASH_SUFFIX) != 0)
        return 0;
    for (struct trash *x = k->b->trash; x; x = x->next) {
        const char *base = strrchr(x->path, '/');
        if (base && strcmp(base + 1, name) == 0)
            return 0; /* deleted by the replay: already listed */
    }
    struct trash *x = xmalloc(sizeof *x);
    char *p = io_path_join(k->b->topics_dir, name);
    if (!x || !p) {
        xfree(x);
        xfree(p);
        k->rc = ERR_NOMEM;
        return 1;
    }
    x->path = p;
    x->index = 0; /* left over from before this start: removed after the next checkpoint */
    x->next = k->b->trash;
    k->b->trash = x;
    return 0;
}

int broker_scan_trash(struct broker *b)
{
    struct trash_scan k = {b, 0};
    int rc = io_list(b->fs, b->topics_dir, trash_scan_fn, &k);
    return rc ? rc : k.rc;
}

static int apply_topic_delete(struct broker *b, uint64_t index, struct slice payload,
                              struct apply_result *res)
{
    struct entry_topic e;
    if (entry_topic_decode(payload, &e)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    pthread_rwlock_wrlock(&b->meta);
    struct topic *t = hmap_del(&b->topics, e.name);
    pthread_rwlock_unlock(&b->meta);
    if (!t) {
        res->err = ERR_NO_TOPIC;
        return 0;
    }
    /* Records staged for it in this round are dropped: the entries that produced them were
     * applied before the delete, and the delete removes them anyway. */
    struct topic **pp = &b->touched;
    while (*pp) {
        if (*pp == t) {
            *pp = t->next_touched;
            break;
        }
        pp = &(*pp)->next_touched;
    }
    for (uint32_t i = 0; i < t->nparts; i++)
        wake_all(b, &t->parts[i], true);
    /* committed offsets of the topic */
    pthread_mutex_lock(&b->off_mu);
    for (;;) {
        size_t bk = 0;
        struct hmap_node *cur = NULL, *n, *victim = NULL;
        while ((n = hmap_next(&b->offsets, &bk, &cur))) {
            if (n->key_len > t->name_len && memcmp(n->key, t->name, t->name_len) == 0 &&
                n->key[t->name_len] == 0) {
                victim = n;
                break;
            }
        }
        if (!victim)
            break;
        hmap_del(&b->offsets, slice_of(victim->key, victim->key_len));
    }
    pthread_mutex_unlock(&b->off_mu);
    /* The files are not removed yet: the newest snapshot may still list this topic, and a crash
     * before the next checkpoint must find them to replay this delete over. The directory is
     * renamed aside and removed once a checkpoint after this entry is durable
     * (broker_collect_trash). */
    char *dir = topic_dir(b, slice_of(t->name, t->name_len), t->id);
    topic_free(t, false);
    int rc = dir ? trash_add(b, dir, index) : ERR_NOMEM;
    xfree(dir);
    if (rc)
        return rc;
    res->deleted = true;
    return 0;
}

/* The partition an entry names, or NULL with res->err set (deterministic rejection). */
static struct partition *entry_partition(struct broker *b, struct slice topic, uint32_t partition,
                                         struct apply_result *res)
{
    struct topic *t = topic_get(b, topic);
    if (!t) {
        res->err = ERR_NO_TOPIC;
        return NULL;
    }
    if (partition >= t->nparts) {
        res->err = ERR_BAD_PARTITION;
        return NULL;
    }
    return &t->parts[partition];
}

static int apply_commit(struct broker *b, struct slice payload, struct apply_result *res)
{
    struct entry_commit e;
    if (entry_commit_decode(payload, &e) || e.topic.len > BROKER_TOPIC_NAME_MAX ||
        e.group.len > BROKER_GROUP_NAME_MAX) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    if (!entry_partition(b, e.topic, e.partition, res))
        return 0;
    uint8_t k[OFFSET_KEY_MAX];
    size_t kl = offset_key(k, e.topic, e.group, e.partition);
    pthread_mutex_lock(&b->off_mu);
    void *v = hmap_get(&b->offsets, slice_of(k, kl));
    pthread_mutex_unlock(&b->off_mu);
    uint64_t cur = v ? (uint64_t)(uintptr_t)v - 1 : 0;
    if (v && e.offset < cur) {
        res->ignored = true;
        res->committed = cur;
        return 0;
    }
    res->committed = e.offset;
    return offset_set(b, k, kl, e.offset);
}

static int apply_delete_before(struct broker *b, struct slice payload, struct apply_result *res)
{
    struct entry_delete_before e;
    if (entry_delete_before_decode(payload, &e)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    struct partition *p = entry_partition(b, e.topic, e.partition, res);
    if (!p)
        return 0;
    /* Staged records of this round must reach the log first so the floor applies in order. */
    if (p->touched) {
        int rc = broker_round_publish(b); /* its wakes stay due for the caller's round end */
        if (rc)
            return rc;
    }
    uint64_t before = e.before;
    uint64_t end = plog_end_offset(p->log);
    if (before > end)
        before = end;
    return plog_delete_before(p->log, before, &res->deleted_count, &res->freed_bytes);
}

static int apply_retention(struct broker *b, struct slice payload, struct apply_result *res)
{
    struct entry_retention e;
    if (entry_retention_decode(payload, &e)) {
        res->err = ERR_CORRUPT;
        return 0;
    }
    if (slice_eq_cstr(e.topic, "*")) {
        if (e.ttl_ms != RETENTION_UNSET)
            __atomic_store_n(&b->all_ttl_ms, e.ttl_ms ? e.ttl_ms : RETENTION_UNSET,
                             __ATOMIC_RELAXED);
        if (e.max_bytes != RETENTION_UNSET)
            __atomic_store_n(&b->all_max_bytes, e.max_bytes ? e.max_bytes : RETENTION_UNSET,
                             __ATOMIC_RELAXED);
        return 0;
    }
    struct topic *t = topic_get(b, e.topic);
    if (!t) {
        res->err = ERR_NO_TOPIC;
        return 0;
    }
    int64_t *ttl = &t->ttl_ms, *mb = &t->max_bytes;
    if (e.partition != RETENTION_ALL_PARTITIONS) {
        if (e.partition >= t->nparts) {
            res->err = ERR_BAD_PARTITION;
            return 0;
        }
        ttl = &t->parts[e.partition].ttl_ms;
        mb = &t->parts[e.partition].max_bytes;
    }
    /* Relaxed atomic stores: broker_retention_get reads them on HTTP workers. */
    if (e.ttl_ms != RETENTION_UNSET)
        __atomic_store_n(ttl, e.ttl_ms ? e.ttl_ms : RETENTION_UNSET, __ATOMIC_RELAXED);
    if (e.max_bytes != RETENTION_UNSET)
        __atomic_store_n(mb, e.max_bytes ? e.max_bytes : RETENTION_UNSET, __ATOMIC_RELAXED);
    return 0;
}

int broker_apply(struct broker *b, uint64_t index, uint8_t type, struct slice payload,
                 struct apply_result *res)
{
    memset(res, 0, sizeof *res);
    switch (type) {
    case ENTRY_PRODUCE: return apply_produce(b, index, payload, res);
    case ENTRY_TOPIC_CREATE: return apply_topic_create(b, index, payload, res);
    case ENTRY_TOPIC_DELETE: return apply_topic_delete(b, index, payload, res);
    case ENTRY_COMMIT: return apply_commit(b, payload, res);
    case ENTRY_DELETE_BEFORE: return apply_delete_before(b, payload, res);
    case ENTRY_RETENTION: return apply_retention(b, payload, res);
    case ENTRY_NOOP: return 0;
    default: res->err = ERR_CORRUPT; return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Sequencer and retention support                                                             */

void broker_each_topic(struct broker *b, broker_topic_fn fn, void *ctx)
{
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    uint64_t ends[BROKER_PARTITIONS_MAX];
    while ((n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        for (uint32_t i = 0; i < t->nparts; i++)
            ends[i] = staged_end(&t->parts[i]);
        fn(ctx, slice_of(t->name, t->name_len), t->nparts, ends);
    }
}

void broker_retention_scan(struct broker *b, int64_t now_ms, broker_floor_fn fn, void *ctx)
{
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        for (uint32_t i = 0; i < t->nparts; i++) {
            struct partition *p = &t->parts[i];
            int64_t ttl = p->ttl_ms != RETENTION_UNSET ? p->ttl_ms
                          : t->ttl_ms != RETENTION_UNSET ? t->ttl_ms : b->all_ttl_ms;
            int64_t mb = p->max_bytes != RETENTION_UNSET ? p->max_bytes
                         : t->max_bytes != RETENTION_UNSET ? t->max_bytes : b->all_max_bytes;
            uint64_t floor = 0;
            if (ttl > 0)
                floor = plog_offset_for_time(p->log, now_ms - ttl);
            if (mb > 0) {
                uint64_t f2 = plog_offset_for_size(p->log, (uint64_t)mb);
                if (f2 > floor)
                    floor = f2;
            }
            if (floor > plog_start_offset(p->log))
                fn(ctx, slice_of(t->name, t->name_len), i, floor);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints                                                                                 */

int broker_sync(struct broker *b)
{
    /* May run on the checkpoint thread while the core thread appends: the shared lock keeps
     * topics (and their logs) from being deleted under us; plog_sync itself is safe against a
     * concurrent writer (plog.h). */
    pthread_rwlock_rdlock(&b->meta);
    int rc = 0;
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while (!rc && (n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        for (uint32_t i = 0; !rc && i < t->nparts; i++)
            rc = plog_sync(t->parts[i].log);
    }
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

#define SNAP_MAGIC 0x314B5242u /* "BRK1" */

int broker_snapshot_write(struct broker *b, uint64_t applied_index, struct sbuf *out)
{
    size_t start = out->len;
    sbuf_put_le32(out, SNAP_MAGIC);
    sbuf_put_varint(out, b->all_ttl_ms);
    sbuf_put_varint(out, b->all_max_bytes);
    sbuf_put_uvarint(out, b->topics.count);
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        sbuf_put_lp(out, t->name, t->name_len);
        sbuf_put_uvarint(out, t->id);
        sbuf_put_uvarint(out, t->nparts);
        sbuf_put_varint(out, t->ttl_ms);
        sbuf_put_varint(out, t->max_bytes);
        for (uint32_t i = 0; i < t->nparts; i++) {
            struct partition *p = &t->parts[i];
            ASSERT(p->st.n == 0); /* snapshots are taken between rounds */
            sbuf_put_uvarint(out, plog_end_offset(p->log));
            sbuf_put_uvarint(out, plog_start_offset(p->log));
            sbuf_put_varint(out, p->ttl_ms);
            sbuf_put_varint(out, p->max_bytes);
        }
    }
    pthread_mutex_lock(&b->off_mu);
    sbuf_put_uvarint(out, b->offsets.count);
    bk = 0;
    cur = NULL;
    while ((n = hmap_next(&b->offsets, &bk, &cur))) {
        sbuf_put_lp(out, n->key, n->key_len);
        sbuf_put_uvarint(out, (uint64_t)(uintptr_t)n->value - 1);
    }
    pthread_mutex_unlock(&b->off_mu);
    uint64_t nidem = 0;
    for (struct idem_node *x = b->idem_oldest; x; x = x->newer)
        nidem += x->rec.index <= applied_index;
    sbuf_put_uvarint(out, nidem);
    for (struct idem_node *x = b->idem_oldest; x; x = x->newer) {
        if (x->rec.index > applied_index)
            continue;
        sbuf_put_lp(out, x->key, x->key_len);
        sbuf_put_uvarint(out, x->rec.partition);
        sbuf_put_uvarint(out, x->rec.offset);
        sbuf_put_uvarint(out, x->rec.count);
        sbuf_put_uvarint(out, x->rec.index);
        sbuf_put_varint(out, x->rec.ts_ms);
    }
    if (!sbuf_ok(out))
        return ERR_NOMEM;
    sbuf_put_le32(out, crc32c(0, out->data + start, out->len - start));
    return sbuf_ok(out) ? 0 : ERR_NOMEM;
}

void broker_reset(struct broker *b)
{
    /* Topics leave the map under the write lock (readers look them up under the read lock, so
     * none still uses one afterwards); long-poll waiters are woken to see them gone. */
    pthread_rwlock_wrlock(&b->meta);
    struct hmap old = b->topics;
    hmap_init(&b->topics);
    b->all_ttl_ms = RETENTION_UNSET;
    b->all_max_bytes = RETENTION_UNSET;
    pthread_rwlock_unlock(&b->meta);
    b->touched = NULL;
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&old, &bk, &cur))) {
        struct topic *t = n->value;
        for (uint32_t i = 0; i < t->nparts; i++)
            wake_all(b, &t->parts[i], true);
        topic_free(t, false);
    }
    hmap_free(&old);
    broker_wake_due(b);
    pthread_mutex_lock(&b->off_mu);
    hmap_free(&b->offsets);
    hmap_init(&b->offsets);
    pthread_mutex_unlock(&b->off_mu);
    bk = 0;
    cur = NULL;
    while ((n = hmap_next(&b->idem, &bk, &cur)))
        xfree(n->value);
    hmap_free(&b->idem);
    hmap_init(&b->idem);
    b->idem_oldest = b->idem_newest = NULL;
    while (b->trash) {
        struct trash *x = b->trash;
        b->trash = x->next;
        xfree(x->path);
        xfree(x);
    }
}

int broker_snapshot_read(struct broker *b, struct slice in)
{
    if (in.len < 8 || crc32c(0, in.ptr, in.len - 4) != get_le32(in.ptr + in.len - 4))
        return ERR_CORRUPT;
    struct reader r = reader_of(slice_of(in.ptr, in.len - 4));
    uint32_t magic;
    uint64_t ntopics;
    rd_le32(&r, &magic);
    rd_varint(&r, &b->all_ttl_ms);
    rd_varint(&r, &b->all_max_bytes);
    rd_uvarint(&r, &ntopics);
    if (r.bad || magic != SNAP_MAGIC)
        return ERR_CORRUPT;
    for (uint64_t k = 0; k < ntopics; k++) {
        struct slice name;
        uint64_t id, nparts;
        int64_t ttl, mb;
        rd_lp(&r, BROKER_TOPIC_NAME_MAX, &name);
        rd_uvarint(&r, &id);
        rd_uvarint(&r, &nparts);
        rd_varint(&r, &ttl);
        rd_varint(&r, &mb);
        if (r.bad || !broker_valid_name(name, BROKER_TOPIC_NAME_MAX) || nparts == 0 ||
            nparts > BROKER_PARTITIONS_MAX)
            return ERR_CORRUPT;
        /* Deleted after this snapshot: its files were set aside, the delete will replay. */
        char *dir = topic_dir(b, name, id);
        char *trash = dir ? trash_name(dir) : NULL;
        if (!dir || !trash) {
            xfree(dir);
            xfree(trash);
            return ERR_NOMEM;
        }
        if (io_exists(b->fs, dir) == 0 && io_exists(b->fs, trash) == 1) {
            int rrc = io_rename_durable(b->fs, trash, dir);
            if (rrc) {
                xfree(dir);
                xfree(trash);
                return rrc;
            }
        }
        xfree(dir);
        xfree(trash);
        struct topic *t;
        int rc = topic_create(b, name, (uint32_t)nparts, id, false, &t);
        if (rc)
            return rc;
        t->ttl_ms = ttl;
        t->max_bytes = mb;
        for (uint32_t i = 0; i < t->nparts; i++) {
            uint64_t end, start;
            struct partition *p = &t->parts[i];
            rd_uvarint(&r, &end);
            rd_uvarint(&r, &start);
            rd_varint(&r, &p->ttl_ms);
            rd_varint(&r, &p->max_bytes);
            if (r.bad) {
                topic_free(t, false);
                return ERR_CORRUPT;
            }
            rc = plog_truncate(p->log, end);
            if (!rc && start > plog_start_offset(p->log))
                rc = plog_delete_before(p->log, start, NULL, NULL);
            if (rc) {
                LOG_E("broker", "topic %.*s partition %u: log does not match the snapshot "
                      "(end %llu): %s", (int)name.len, (const char *)name.ptr, i,
                      (unsigned long long)end, err_message(rc));
                topic_free(t, false);
                /* Not a damaged snapshot (its CRC verified): the data disagrees with it. */
                return rc == ERR_CORRUPT ? ERR_IO : rc;
            }
        }
        if ((rc = topic_insert(b, t))) {
            topic_free(t, false);
            return rc;
        }
    }
    uint64_t noff;
    rd_uvarint(&r, &noff);
    for (uint64_t k = 0; k < noff && !r.bad; k++) {
        struct slice key;
        uint64_t off;
        rd_lp(&r, OFFSET_KEY_MAX, &key);
        rd_uvarint(&r, &off);
        if (r.bad)
            break;
        int rc = offset_set(b, key.ptr, key.len, off);
        if (rc)
            return rc;
    }
    uint64_t nidem;
    rd_uvarint(&r, &nidem);
    for (uint64_t k = 0; k < nidem && !r.bad; k++) {
        struct slice key;
        uint64_t part, off, cnt, idx;
        int64_t ts;
        rd_lp(&r, IDEM_KEY_MAX, &key);
        rd_uvarint(&r, &part);
        rd_uvarint(&r, &off);
        rd_uvarint(&r, &cnt);
        rd_uvarint(&r, &idx);
        rd_varint(&r, &ts);
        if (r.bad)
            break;
        const uint8_t *z = memchr(key.ptr, 0, key.len);
        if (!z)
            return ERR_CORRUPT;
        struct slice topic = slice_of(key.ptr, (size_t)(z - key.ptr));
        struct slice ik = slice_of(z + 1, key.len - topic.len - 1);
        struct idem_rec ir = {(uint32_t)part, off, (uint32_t)cnt, idx, ts};
        int rc = broker_idem_put(b, topic, ik, &ir);
        if (rc)
            return rc;
    }
    return r.bad || rd_left(&r) ? ERR_CORRUPT : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Readers                                                                                     */

int broker_read(struct broker *b, struct slice topic, uint32_t partition, uint64_t from,
                size_t max_records, size_t max_bytes, plog_visit_fn fn, void *ctx,
                struct plog_read_result *res, uint64_t *hw, uint64_t *start)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    int rc;
    if (!t) {
        rc = ERR_NO_TOPIC;
    } else if (partition >= t->nparts) {
        rc = ERR_BAD_PARTITION;
    } else {
        struct plog *l = t->parts[partition].log;
        rc = plog_read(l, from, max_records, max_bytes, fn, ctx, res);
        if (hw)
            *hw = plog_high_watermark(l);
        if (start)
            *start = plog_start_offset(l);
    }
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

int broker_read_batches(struct broker *b, struct slice topic, uint32_t partition, uint64_t from,
                        size_t max_bytes, struct sbuf *out, struct plog_read_result *res,
                        uint64_t *hw, uint64_t *start)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    int rc;
    if (!t) {
        rc = ERR_NO_TOPIC;
    } else if (partition >= t->nparts) {
        rc = ERR_BAD_PARTITION;
    } else {
        struct plog *l = t->parts[partition].log;
        rc = plog_read_batches(l, from, max_bytes, out, res);
        if (hw)
            *hw = plog_high_watermark(l);
        if (start)
            *start = plog_start_offset(l);
    }
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

int broker_offset_for_time(struct broker *b, struct slice topic, uint32_t partition, int64_t ts_ms,
                           uint64_t *offset)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    int rc = 0;
    if (!t)
        rc = ERR_NO_TOPIC;
    else if (partition >= t->nparts)
        rc = ERR_BAD_PARTITION;
    else
        *offset = plog_offset_for_time(t->parts[partition].log, ts_ms);
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

int broker_partitions(struct broker *b, struct slice topic, uint32_t *partitions)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    if (t)
        *partitions = t->nparts;
    pthread_rwlock_unlock(&b->meta);
    return t ? 0 : ERR_NO_TOPIC;
}

int broker_topic_info(struct broker *b, struct slice topic, uint64_t *id, uint32_t *partitions)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    if (t) {
        *id = t->id;
        *partitions = t->nparts;
    }
    pthread_rwlock_unlock(&b->meta);
    return t ? 0 : ERR_NO_TOPIC;
}

void broker_list(struct broker *b, broker_list_fn fn, void *ctx)
{
    pthread_rwlock_rdlock(&b->meta);
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        fn(ctx, slice_of(t->name, t->name_len), t->nparts);
    }
    pthread_rwlock_unlock(&b->meta);
}

int broker_describe(struct broker *b, struct slice topic, broker_part_fn fn, void *ctx)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    if (t) {
        for (uint32_t i = 0; i < t->nparts; i++) {
            struct plog_stats st;
            plog_stats(t->parts[i].log, &st);
            fn(ctx, i, &st);
        }
    }
    pthread_rwlock_unlock(&b->meta);
    return t ? 0 : ERR_NO_TOPIC;
}

static int64_t policy_of(const int64_t *part, const int64_t *topic, const int64_t *all)
{
    int64_t v = __atomic_load_n(part, __ATOMIC_RELAXED);
    if (v == RETENTION_UNSET)
        v = __atomic_load_n(topic, __ATOMIC_RELAXED);
    if (v == RETENTION_UNSET)
        v = __atomic_load_n(all, __ATOMIC_RELAXED);
    return v == RETENTION_UNSET ? 0 : v;
}

int broker_retention_get(struct broker *b, struct slice topic, uint32_t partition, int64_t *ttl_ms,
                         int64_t *max_bytes)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    int rc = !t ? ERR_NO_TOPIC : partition >= t->nparts ? ERR_BAD_PARTITION : 0;
    if (!rc) {
        struct partition *p = &t->parts[partition];
        *ttl_ms = policy_of(&p->ttl_ms, &t->ttl_ms, &b->all_ttl_ms);
        *max_bytes = policy_of(&p->max_bytes, &t->max_bytes, &b->all_max_bytes);
    }
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

void broker_group(struct broker *b, struct slice group, struct slice topic, broker_group_fn fn,
                  void *ctx)
{
    pthread_rwlock_rdlock(&b->meta);
    pthread_mutex_lock(&b->off_mu);
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->offsets, &bk, &cur))) {
        const uint8_t *z = memchr(n->key, 0, n->key_len);
        if (!z)
            continue;
        struct slice tn = slice_of(n->key, (size_t)(z - n->key));
        size_t rest = n->key_len - tn.len - 1;
        if (rest != group.len + 5 || memcmp(z + 1, group.ptr, group.len) != 0)
            continue;
        if (topic.len && !slice_eq(tn, topic))
            continue;
        uint32_t part = get_le32(z + 1 + group.len + 1);
        struct topic *t = topic_get(b, tn);
        uint64_t latest = (t && part < t->nparts) ? plog_high_watermark(t->parts[part].log) : 0;
        fn(ctx, tn, part, (uint64_t)(uintptr_t)n->value - 1, latest);
    }
    pthread_mutex_unlock(&b->off_mu);
    pthread_rwlock_unlock(&b->meta);
}

void broker_each_partition(struct broker *b, broker_partition_fn fn, void *ctx)
{
    pthread_rwlock_rdlock(&b->meta);
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        for (uint32_t i = 0; i < t->nparts; i++) {
            struct plog_stats st;
            plog_stats(t->parts[i].log, &st);
            fn(ctx, slice_of(t->name, t->name_len), i, &st);
        }
    }
    pthread_rwlock_unlock(&b->meta);
}

/* The copy: per entry u64 committed, u64 start, u64 high watermark, u32 key length, key bytes
 * (topic \0 group \0 partition). */
int broker_each_committed(struct broker *b, broker_offset_fn fn, void *ctx)
{
    struct sbuf copy;
    sbuf_init(&copy, 0);
    pthread_rwlock_rdlock(&b->meta);
    pthread_mutex_lock(&b->off_mu);
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->offsets, &bk, &cur))) {
        const uint8_t *z = memchr(n->key, 0, n->key_len);
        if (!z || n->key_len < (size_t)(z - n->key) + 6)
            continue;
        struct slice tn = slice_of(n->key, (size_t)(z - n->key));
        uint32_t part = get_le32(n->key + n->key_len - 4);
        struct topic *t = topic_get(b, tn);
        if (!t || part >= t->nparts)
            continue;
        struct plog *l = t->parts[part].log;
        sbuf_put_le64(&copy, (uint64_t)(uintptr_t)n->value - 1);
        sbuf_put_le64(&copy, plog_start_offset(l));
        sbuf_put_le64(&copy, plog_high_watermark(l));
        sbuf_put_le32(&copy, (uint32_t)n->key_len);
        sbuf_append(&copy, n->key, n->key_len);
    }
    pthread_mutex_unlock(&b->off_mu);
    pthread_rwlock_unlock(&b->meta);
    if (!sbuf_ok(&copy)) {
        sbuf_free(&copy);
        return ERR_NOMEM;
    }
    for (size_t at = 0; at < copy.len;) {
        const uint8_t *e = copy.data + at;
        uint64_t committed = get_le64(e), start = get_le64(e + 8), hw = get_le64(e + 16);
        uint32_t kl = get_le32(e + 24);
        const uint8_t *k = e + 28;
        at += 28 + kl;
        const uint8_t *z = memchr(k, 0, kl);
        struct slice tn = slice_of(k, (size_t)(z - k));
        struct slice gn = slice_of(z + 1, kl - tn.len - 6);
        fn(ctx, tn, gn, get_le32(k + kl - 4), committed, start, hw);
    }
    sbuf_free(&copy);
    return 0;
}

static int first_ts_fn(void *ctx, const struct plog_record *rec)
{
    *(int64_t *)ctx = rec->timestamp_ms;
    return 1;
}

int broker_record_time(struct broker *b, struct slice topic, uint32_t partition, uint64_t offset,
                       int64_t *ts_ms)
{
    struct plog_read_result res;
    int64_t ts = 0;
    int rc = broker_read(b, topic, partition, offset, 1, 1, first_ts_fn, &ts, &res, NULL, NULL);
    if (rc)
        return rc;
    if (res.count == 0)
        return ERR_NOT_FOUND;
    *ts_ms = ts;
    return 0;
}

int broker_wait(struct broker *b, struct slice topic, uint32_t partition, uint64_t offset,
                struct broker_waiter *w)
{
    pthread_rwlock_rdlock(&b->meta);
    struct topic *t = topic_get(b, topic);
    int rc = 0;
    if (!t) {
        rc = ERR_NO_TOPIC;
    } else if (partition >= t->nparts) {
        rc = ERR_BAD_PARTITION;
    } else {
        struct partition *p = &t->parts[partition];
        pthread_mutex_lock(&b->wait_mu);
        /* The waiter's half of invariant 6: count ourselves in first, then look at the high
         * watermark. (Looking first let a round publish and find no waiter in between, and the
         * wait then lasted until its timeout.) */
        uint64_t before = atomic_fetch_add(&b->nwaiters, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (plog_high_watermark(p->log) > offset) {
            rc = ERR_AGAIN;
        } else if (before >= BROKER_WAITERS_MAX) {
            rc = ERR_OVERLOADED; /* bounded: the caller answers at once instead of parking */
        } else {
            w->offset = offset;
            w->owner = p;
            w->prev = NULL;
            w->next = p->waiters;
            if (p->waiters)
                p->waiters->prev = w;
            p->waiters = w;
        }
        if (rc)
            atomic_fetch_sub(&b->nwaiters, 1);
        pthread_mutex_unlock(&b->wait_mu);
    }
    pthread_rwlock_unlock(&b->meta);
    return rc;
}

bool broker_unwait(struct broker *b, struct broker_waiter *w)
{
    pthread_mutex_lock(&b->wait_mu);
    struct partition *p = w->owner;
    bool parked = p != NULL;
    if (parked) {
        if (w->prev)
            w->prev->next = w->next;
        else
            p->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        w->owner = NULL;
        atomic_fetch_sub(&b->nwaiters, 1);
    }
    pthread_mutex_unlock(&b->wait_mu);
    return parked;
}

void broker_stats(struct broker *b, struct broker_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_rwlock_rdlock(&b->meta);
    st->topics = b->topics.count;
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&b->topics, &bk, &cur))) {
        struct topic *t = n->value;
        st->partitions += t->nparts;
        for (uint32_t i = 0; i < t->nparts; i++) {
            struct plog_stats ps;
            plog_stats(t->parts[i].log, &ps);
            st->bytes += ps.bytes;
            st->records += ps.records;
        }
    }
    pthread_rwlock_unlock(&b->meta);
    pthread_mutex_lock(&b->off_mu);
    st->offsets = b->offsets.count;
    pthread_mutex_unlock(&b->off_mu);
    st->idem_keys = b->idem.count; /* core-thread data; a racy read is fine for a gauge */
    st->waiters = atomic_load(&b->nwaiters);
}
