/* confluent.c -- the Confluent wire format over the Avro, Protobuf and JSON formats (see
 * confluent.h).
 *
 * Per record: read the 5-byte frame, find the schema id's cache entry (or look the schema up
 * through the callback and build one), for Protobuf read the message-index array and pick (or
 * build) the decoder of that message, then hand the payload to the inner format.
 *
 * Cache: at most SFMT_CONFLUENT_CACHE_MAX entries, one per schema id, each holding the schema
 * handle from the lookup and the inner decoder (Avro, JSON), or up to SUBS_MAX decoders keyed by
 * message indexes (Protobuf; a record naming yet another message of a full entry gets a decoder
 * built for that call only). Entries live in a chained hash table under one mutex.
 *
 * Invariants:
 *  1. An entry is freed (inner decoders, then the schema handle released) only when its refcount
 *     drops to 0: the table holds one reference, each call in progress one more. Eviction (least
 *     recently used, when the table is full) only unlinks it and drops the table's reference.
 *  2. An entry's decoders are only added, never removed, while it lives; they are added and read
 *     under the mutex, so a decoder pointer read under it stays valid while the caller holds a
 *     reference to the entry.
 *  3. The lookup callback never runs under the mutex (it may parse a schema).
 */
#include "stream/fmt/confluent.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/err.h"
#include "base/hash.h"
#include "stream/fmt/avro.h"
#include "stream/fmt/json.h"
#include "stream/fmt/json.h"
#include "stream/fmt/proto.h"
#include "stream/fmt/proto.h"

#define BUCKETS 512 /* power of two, >= 2 x SFMT_CONFLUENT_CACHE_MAX */
#define SUBS_MAX 16 /* Protobuf message decoders per schema id */

struct sub {
    size_t nidx;
    int64_t idx[SFMT_CONFLUENT_INDEXES_MAX];
    struct sfmt *inner;
};

struct centry {
    struct centry *next; /* bucket chain */
    uint32_t id;
    uint8_t type;
    struct sfmt_schema schema;
    struct sfmt *inner; /* Avro / JSON */
    struct sub subs[SUBS_MAX];
    size_t nsubs;
    _Atomic uint32_t refs;
    uint64_t last_used;
};

struct cfmt {
    struct sfmt base;
    sfmt_schema_lookup_fn lookup;
    sfmt_schema_release_fn release;
    void *ctx;
    pthread_mutex_t mu;
    struct centry *buckets[BUCKETS];
    size_t count;
    uint64_t tick;
};

_Static_assert(BUCKETS >= 2 * SFMT_CONFLUENT_CACHE_MAX && (BUCKETS & (BUCKETS - 1)) == 0,
               "bucket count");

static size_t bucket_of(uint32_t id) { return (size_t)hash_bytes(&id, sizeof id, 0) & (BUCKETS - 1); }

static void centry_free(struct cfmt *f, struct centry *e)
{
    sfmt_free(e->inner);
    for (size_t i = 0; i < e->nsubs; i++)
        sfmt_free(e->subs[i].inner);
    f->release(f->ctx, e->schema.handle);
    xfree(e);
}

static void centry_put(struct cfmt *f, struct centry *e)
{
    if (atomic_fetch_sub(&e->refs, 1) == 1)
        centry_free(f, e);
}

/* Under the mutex. */
static struct centry *find_locked(struct cfmt *f, uint32_t id)
{
    for (struct centry *e = f->buckets[bucket_of(id)]; e; e = e->next)
        if (e->id == id)
            return e;
    return NULL;
}

static void unlink_locked(struct cfmt *f, struct centry *victim)
{
    struct centry **pp = &f->buckets[bucket_of(victim->id)];
    while (*pp != victim)
        pp = &(*pp)->next;
    *pp = victim->next;
    f->count--;
}

/* Under the mutex: make room by dropping the least recently used entry. */
static struct centry *evict_locked(struct cfmt *f)
{
    struct centry *lru = NULL;
    for (size_t b = 0; b < BUCKETS; b++)
        for (struct centry *e = f->buckets[b]; e; e = e->next)
            if (!lru || e->last_used < lru->last_used)
                lru = e;
    if (lru)
        unlink_locked(f, lru);
    return lru; /* the caller drops the table's reference outside the mutex */
}

static const char *reason(struct arena *scratch, const char *fmt, uint32_t id)
{
    char *s = scratch ? arena_alloc(scratch, 96) : NULL;
    if (!s)
        return "schema id lookup failed";
    snprintf(s, 96, fmt, id);
    return s;
}

int sfmt_confluent_frame(struct slice rec, bool with_indexes, uint32_t *id, int64_t *idx,
                         size_t *nidx, struct slice *payload, const char **err)
{
    *nidx = 0;
    if (rec.len >= 1 && rec.ptr[0] == 1) {
        *err = "Confluent magic byte 0x01 (schema GUID framing) is not supported";
        return ERR_CORRUPT;
    }
    if (rec.len < 5 || rec.ptr[0] != 0) {
        *err = "record is not in the Confluent wire format (magic byte 0x00 + 4-byte schema id)";
        return ERR_CORRUPT;
    }
    *id = get_be32(rec.ptr + 1);
    struct slice rest = slice_of(rec.ptr + 5, rec.len - 5);
    if (with_indexes) {
        size_t used = 0;
        if (proto_read_message_indexes(rest, idx, SFMT_CONFLUENT_INDEXES_MAX, nidx, &used)) {
            *err = "malformed Confluent Protobuf message indexes";
            return ERR_CORRUPT;
        }
        rest = slice_of(rest.ptr + used, rest.len - used);
    }
    *payload = rest;
    return 0;
}

/* The cache entry for id, with a reference the caller drops (centry_put). */
static int entry_get(struct cfmt *f, uint32_t id, struct arena *scratch, struct centry **out,
                     const char **err)
{
    pthread_mutex_lock(&f->mu);
    struct centry *e = find_locked(f, id);
    if (e) {
        atomic_fetch_add(&e->refs, 1);
        e->last_used = ++f->tick;
    }
    pthread_mutex_unlock(&f->mu);
    if (e) {
        *out = e;
        return 0;
    }
    struct sfmt_schema sch = {0};
    struct serr se = {{0}, {0}};
    int rc = f->lookup(f->ctx, id, &sch, &se);
    if (rc == ERR_NOMEM)
        return rc;
    if (rc) {
        *err = reason(scratch, "unknown or unusable schema id %u", id);
        return ERR_CORRUPT;
    }
    e = xcalloc(1, sizeof *e);
    if (!e) {
        f->release(f->ctx, sch.handle);
        return ERR_NOMEM;
    }
    e->id = id;
    e->type = sch.type;
    e->schema = sch;
    atomic_init(&e->refs, 2); /* the table's and the caller's */
    switch (sch.type) {
    case SFMT_SCHEMA_AVRO:
        rc = sch.avro ? sfmt_avro_new(sch.avro, NULL, &e->inner, &se) : ERR_INVALID;
        break;
    case SFMT_SCHEMA_JSON:
        rc = sfmt_json_new(&e->inner);
        break;
    case SFMT_SCHEMA_PROTOBUF:
        rc = sch.proto ? 0 : ERR_INVALID; /* decoders per message, built on demand */
        break;
    default:
        rc = ERR_INVALID;
    }
    if (rc) {
        centry_free(f, e);
        if (rc == ERR_NOMEM)
            return rc;
        *err = reason(scratch, "schema id %u cannot be decoded", id);
        return ERR_CORRUPT;
    }
    struct centry *evicted = NULL;
    pthread_mutex_lock(&f->mu);
    struct centry *other = find_locked(f, id);
    if (other) { /* another thread built it meanwhile: use theirs */
        atomic_fetch_add(&other->refs, 1);
        other->last_used = ++f->tick;
    } else {
        if (f->count >= SFMT_CONFLUENT_CACHE_MAX)
            evicted = evict_locked(f);
        size_t b = bucket_of(id);
        e->next = f->buckets[b];
        f->buckets[b] = e;
        e->last_used = ++f->tick;
        f->count++;
    }
    pthread_mutex_unlock(&f->mu);
    if (evicted)
        centry_put(f, evicted);
    if (other) {
        centry_free(f, e); /* never shared: both references were ours */
        e = other;
    }
    *out = e;
    return 0;
}

/* Protobuf: the decoder of the message at idx. *tmp is set when the decoder was built for this
 * call only (the entry's slots are full); the caller frees it. */
static int proto_inner(struct cfmt *f, struct centry *e, const int64_t *idx, size_t nidx,
                       struct sfmt **inner, struct sfmt **tmp, const char **err)
{
    *tmp = NULL;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < e->nsubs; i++) {
        if (e->subs[i].nidx == nidx && memcmp(e->subs[i].idx, idx, nidx * sizeof *idx) == 0) {
            *inner = e->subs[i].inner;
            pthread_mutex_unlock(&f->mu);
            return 0;
        }
    }
    int rc = 0;
    const struct proto_msg *m = proto_message_by_index(e->schema.proto, idx, nidx);
    struct sfmt *dec = NULL;
    struct serr se;
    if (!m) {
        *err = "the message indexes name no message of the schema";
        rc = ERR_CORRUPT;
    } else {
        rc = sfmt_proto_new(e->schema.proto, m, &dec, &se);
        if (rc && rc != ERR_NOMEM) {
            *err = "the message cannot be decoded";
            rc = ERR_CORRUPT;
        }
    }
    if (rc == 0) {
        if (e->nsubs < SUBS_MAX) {
            struct sub *s = &e->subs[e->nsubs++];
            s->nidx = nidx;
            memcpy(s->idx, idx, nidx * sizeof *idx);
            s->inner = dec;
        } else {
            *tmp = dec;
        }
        *inner = dec;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Resolve rec to its inner decoder and payload. On success the caller calls finish(). */
static int resolve(struct cfmt *f, struct slice rec, struct arena *scratch, struct centry **ent,
                   struct sfmt **inner, struct sfmt **tmp, struct slice *payload, const char **err)
{
    uint32_t id;
    int64_t idx[SFMT_CONFLUENT_INDEXES_MAX];
    size_t nidx;
    *tmp = NULL;
    int rc = sfmt_confluent_frame(rec, false, &id, idx, &nidx, payload, err);
    if (rc)
        return rc;
    struct centry *e;
    rc = entry_get(f, id, scratch, &e, err);
    if (rc)
        return rc;
    if (e->type == SFMT_SCHEMA_PROTOBUF) {
        rc = sfmt_confluent_frame(rec, true, &id, idx, &nidx, payload, err);
        if (rc == 0)
            rc = proto_inner(f, e, idx, nidx, inner, tmp, err);
        if (rc) {
            centry_put(f, e);
            return rc;
        }
    } else {
        *inner = e->inner;
    }
    *ent = e;
    return 0;
}

static void finish(struct cfmt *f, struct centry *e, struct sfmt *tmp)
{
    sfmt_free(tmp);
    centry_put(f, e);
}

static int c_extract(const struct sfmt *base, struct slice rec, const struct spath *paths, size_t n,
                     struct sval *out, struct arena *scratch, const char **err)
{
    struct cfmt *f = (struct cfmt *)base;
    const char *local = NULL;
    if (!err)
        err = &local;
    struct centry *e;
    struct sfmt *inner, *tmp;
    struct slice payload;
    int rc = resolve(f, rec, scratch, &e, &inner, &tmp, &payload, err);
    if (rc)
        return rc;
    rc = inner->ops->extract(inner, payload, paths, n, out, scratch, err);
    finish(f, e, tmp);
    return rc;
}

static int c_to_json(const struct sfmt *base, struct slice rec, struct sbuf *out,
                     struct arena *scratch, const char **err)
{
    struct cfmt *f = (struct cfmt *)base;
    const char *local = NULL;
    if (!err)
        err = &local;
    struct centry *e;
    struct sfmt *inner, *tmp;
    struct slice payload;
    int rc = resolve(f, rec, scratch, &e, &inner, &tmp, &payload, err);
    if (rc)
        return rc;
    rc = inner->ops->to_json(inner, payload, out, scratch, err);
    finish(f, e, tmp);
    return rc;
}

static void c_free(struct sfmt *base)
{
    struct cfmt *f = (struct cfmt *)base;
    for (size_t b = 0; b < BUCKETS; b++) {
        struct centry *e = f->buckets[b];
        while (e) {
            struct centry *next = e->next;
            centry_put(f, e);
            e = next;
        }
    }
    pthread_mutex_destroy(&f->mu);
    xfree(f);
}

static const struct sfmt_ops confluent_ops = {c_extract, c_to_json, c_free, "confluent"};

int sfmt_confluent_new(sfmt_schema_lookup_fn lookup, sfmt_schema_release_fn release, void *ctx,
                       struct sfmt **out)
{
    *out = NULL;
    if (!lookup || !release)
        return ERR_INVALID;
    struct cfmt *f = xcalloc(1, sizeof *f);
    if (!f)
        return ERR_NOMEM;
    f->base.ops = &confluent_ops;
    f->lookup = lookup;
    f->release = release;
    f->ctx = ctx;
    pthread_mutex_init(&f->mu, NULL);
    *out = &f->base;
    return 0;
}
