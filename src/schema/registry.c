/* registry.c -- the schema registry state machine (see registry.h for the contract).
 *
 * Layout: schemas live in an array indexed by id - 1 (ids are dense, nothing is deleted); each is
 * one struct srec holding copies of its text, identity form and references. An identity index
 * (hmap keyed by the 8-byte identity hash, value = the head of a chain of srecs with that hash)
 * finds an existing schema in O(1) when the same schema is registered again; the chain compares
 * every identity field, so different schemas never merge on a hash collision. Subjects live in an
 * hmap keyed by name; each holds its version -> id array.
 *
 * Invariants:
 *  1. nrecs == next_id - 1 and recs[i]->id == i + 1 (dense ids, handed out by next_id++).
 *  2. No two srecs have equal identity (type, flags, identity form, references).
 *  3. Every subject has 1..n versions, each naming an existing id; versions counts them all and
 *     bytes == sum of srec_bytes() over the schemas.
 *  4. Every reference of every schema names an existing (subject, version).
 *  5. Applies are pure functions of (state, entry bytes): no clock, no randomness, no parser, so
 *     replicas fed the same entries produce byte-identical snapshots.
 *  6. Mutations hold the write lock; reads hold the read lock. srec->parsed only goes NULL ->
 *     non-NULL (by compare-and-swap, under the read lock) until the srec is freed under the write
 *     lock; the cache owns one reference of it.
 *
 * Registration, per (subject, schema), as apply sees it:
 *
 *     unknown schema --register--> new id (next_id++), subject gets version n+1   [created]
 *     known schema, subject lacks it --register--> same id, version n+1           [created]
 *     known schema, subject has it at v --register--> (id, v), nothing changes    [idempotent]
 *
 * Snapshot format (little-endian; version 1), schemas by ascending id, subjects by name:
 *
 *     "AYSR" | version u32 | next_id u32 | nschemas uv |
 *     nschemas x { id uv | type u8 | flags u8 | text lp | canon lp | nrefs uv |
 *                  nrefs x { name lp | subject lp | version uv } } |
 *     nsubjects uv | nsubjects x { name lp | nversions uv | nversions x id uv } |
 *     crc32c u32 over every preceding byte
 *
 * where lp = uvarint length, then that many bytes, and canon is empty when it equals the text.
 */
#include "schema/registry.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/assert.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/hmap.h"
#include "base/json.h"
#include "stream/fmt/avro.h"
#include "stream/fmt/proto.h"

_Static_assert((int)SCHEMA_AVRO == (int)SFMT_SCHEMA_AVRO &&
                   (int)SCHEMA_PROTOBUF == (int)SFMT_SCHEMA_PROTOBUF &&
                   (int)SCHEMA_JSON == (int)SFMT_SCHEMA_JSON,
               "registry and confluent.h type numbers agree");

#define SNAP_MAGIC "AYSR"
#define SNAP_VERSION 1u
#define SRECORD_OVERHEAD 128 /* bytes each schema adds to the total besides its texts */
#define IDENT_SEED 0x5eed5c4e3a11ull
#define RESOLVE_BUDGET 4096 /* reference visits per import resolution */

struct srec {
    uint32_t id;
    uint8_t type, flags;
    struct slice text;  /* owned (text_mem) */
    struct slice canon; /* owned, or == text */
    struct schema_reference *refs;
    size_t nrefs;
    uint64_t hash;
    struct srec *hash_next;
    _Atomic(struct schema_ref *) parsed;
    uint8_t *mem; /* text, canon (if distinct), then reference names and subjects */
};

struct subject {
    uint32_t nversions, cap;
    uint32_t *ids; /* version v -> ids[v - 1] */
    struct slice name; /* owned (points into the allocation's tail) */
};

struct schema_registry {
    pthread_rwlock_t lock;
    struct schema_limits limits;
    struct srec **recs;
    size_t nrecs, cap_recs;
    uint32_t next_id;
    struct hmap by_ident; /* 8-byte hash -> struct srec * chain */
    struct hmap subjects; /* name -> struct subject * */
    uint64_t versions, bytes;
    uint64_t registered, idempotent, rejected;
};

void schema_limits_default(struct schema_limits *l)
{
    l->schema_bytes_max = 1u << 20;
    l->subjects_max = 10000;
    l->versions_max = 1000;
    l->schemas_max = 100000;
    l->total_bytes_max = 256ull << 20;
}

/* ---------------------------------------------------------------------------------------------
 * Names, types, descriptions
 * ------------------------------------------------------------------------------------------- */

int schema_type_parse(struct slice name, uint8_t *type)
{
    if (name.len == 0 || slice_eq_cstr(name, "AVRO"))
        *type = SCHEMA_AVRO;
    else if (slice_eq_cstr(name, "PROTOBUF"))
        *type = SCHEMA_PROTOBUF;
    else if (slice_eq_cstr(name, "JSON"))
        *type = SCHEMA_JSON;
    else
        return ERR_SCHEMA_INVALID;
    return 0;
}

const char *schema_type_name(uint8_t type)
{
    switch (type) {
    case SCHEMA_AVRO: return "AVRO";
    case SCHEMA_PROTOBUF: return "PROTOBUF";
    case SCHEMA_JSON: return "JSON";
    default: return "UNKNOWN";
    }
}

int schema_validate_subject(struct slice s)
{
    if (s.len == 0 || s.len > SCHEMA_SUBJECT_MAX)
        return ERR_BAD_NAME;
    for (size_t i = 0; i < s.len; i++)
        if (s.ptr[i] < 0x21 || s.ptr[i] > 0x7e)
            return ERR_BAD_NAME;
    return 0;
}

static struct slice canon_of(const struct schema_desc *d)
{
    return d->canon.len ? d->canon : d->text;
}

/* An identity form equal to the text is the same as none (one representation per identity). */
static struct schema_desc normalized(const struct schema_desc *d)
{
    struct schema_desc n = *d;
    if (slice_eq(n.canon, n.text))
        n.canon = (struct slice){NULL, 0};
    return n;
}

/* The checks that need no state: type and flags, sizes, text encoding, reference syntax. */
static int check_desc(const struct schema_limits *l, const struct schema_desc *d, struct serr *e)
{
    if (d->type < SCHEMA_AVRO || d->type > SCHEMA_JSON) {
        serr_set(e, "/schemaType", "unknown schema type");
        return ERR_SCHEMA_INVALID;
    }
    if ((d->flags & ~SCHEMA_F_FDS) || ((d->flags & SCHEMA_F_FDS) && d->type != SCHEMA_PROTOBUF)) {
        serr_set(e, "/format", "a serialized descriptor set is only valid for PROTOBUF");
        return ERR_SCHEMA_INVALID;
    }
    if (d->text.len == 0) {
        serr_set(e, "/schema", "empty schema");
        return ERR_SCHEMA_INVALID;
    }
    if (d->text.len > l->schema_bytes_max || d->canon.len > SCHEMA_TEXT_HARD_MAX) {
        serr_set(e, "/schema", "schema is %zu bytes, the limit is %zu", d->text.len,
                 l->schema_bytes_max);
        return ERR_TOO_LARGE;
    }
    if (!(d->flags & SCHEMA_F_FDS) && !utf8_valid(d->text.ptr, d->text.len)) {
        serr_set(e, "/schema", "schema text is not valid UTF-8");
        return ERR_SCHEMA_INVALID;
    }
    if (!utf8_valid(d->canon.ptr, d->canon.len)) {
        serr_set(e, "/schema", "canonical form is not valid UTF-8");
        return ERR_SCHEMA_INVALID;
    }
    if (d->nrefs > SCHEMA_REFS_MAX) {
        serr_set(e, "/references", "%zu references, the limit is %d", d->nrefs, SCHEMA_REFS_MAX);
        return ERR_SCHEMA_INVALID;
    }
    for (size_t i = 0; i < d->nrefs; i++) {
        const struct schema_reference *rf = &d->refs[i];
        char path[64];
        snprintf(path, sizeof path, "/references/%zu", i);
        if (rf->name.len == 0 || rf->name.len > SCHEMA_REF_NAME_MAX ||
            !utf8_valid(rf->name.ptr, rf->name.len) || memchr(rf->name.ptr, 0, rf->name.len)) {
            serr_set(e, path, "reference name must be 1..%d bytes of UTF-8", SCHEMA_REF_NAME_MAX);
            return ERR_SCHEMA_INVALID;
        }
        if (schema_validate_subject(rf->subject)) {
            serr_set(e, path, "invalid reference subject");
            return ERR_SCHEMA_INVALID;
        }
        if (rf->version == 0) {
            serr_set(e, path, "reference version must be >= 1");
            return ERR_SCHEMA_INVALID;
        }
        for (size_t j = 0; j < i; j++)
            if (slice_eq(d->refs[j].name, rf->name)) {
                serr_set(e, path, "duplicate reference name");
                return ERR_SCHEMA_INVALID;
            }
    }
    return 0;
}

static uint64_t ident_hash(const struct schema_desc *d)
{
    uint8_t tf[2] = {d->type, d->flags};
    struct slice c = canon_of(d);
    uint64_t h = hash_bytes(tf, 2, IDENT_SEED);
    h = hash_bytes(c.ptr, c.len, h);
    for (size_t i = 0; i < d->nrefs; i++) {
        uint8_t v[4];
        put_le32(v, d->refs[i].version);
        h = hash_bytes(d->refs[i].name.ptr, d->refs[i].name.len, h ^ 0x6e);
        h = hash_bytes(d->refs[i].subject.ptr, d->refs[i].subject.len, h ^ 0x73);
        h = hash_bytes(v, 4, h);
    }
    return h;
}

static struct schema_desc desc_of(const struct srec *s)
{
    return (struct schema_desc){s->type, s->flags, s->text,
                                s->canon.ptr == s->text.ptr ? (struct slice){NULL, 0} : s->canon,
                                s->refs, s->nrefs};
}

static bool ident_eq(const struct srec *s, const struct schema_desc *d)
{
    if (s->type != d->type || s->flags != d->flags || !slice_eq(s->canon, canon_of(d)) ||
        s->nrefs != d->nrefs)
        return false;
    for (size_t i = 0; i < d->nrefs; i++)
        if (!slice_eq(s->refs[i].name, d->refs[i].name) ||
            !slice_eq(s->refs[i].subject, d->refs[i].subject) ||
            s->refs[i].version != d->refs[i].version)
            return false;
    return true;
}

static struct srec *find_ident(const struct schema_registry *r, const struct schema_desc *d,
                               uint64_t h)
{
    struct srec *s = hmap_get(&r->by_ident, slice_of(&h, sizeof h));
    for (; s; s = s->hash_next)
        if (s->hash == h && ident_eq(s, d))
            return s;
    return NULL;
}

static uint64_t desc_bytes(const struct schema_desc *d)
{
    uint64_t n = d->text.len + d->canon.len + SRECORD_OVERHEAD;
    for (size_t i = 0; i < d->nrefs; i++)
        n += d->refs[i].name.len + d->refs[i].subject.len;
    return n;
}

static struct subject *subject_get(const struct schema_registry *r, struct slice name)
{
    return hmap_get(&r->subjects, name);
}

/* The schema at (subject, version), or NULL. */
static const struct srec *rec_at(const struct schema_registry *r, struct slice subject,
                                 uint32_t version)
{
    const struct subject *s = subject_get(r, subject);
    if (!s || version == 0 || version > s->nversions)
        return NULL;
    uint32_t id = s->ids[version - 1];
    return id >= 1 && id <= r->nrecs ? r->recs[id - 1] : NULL;
}

static int check_refs_exist(const struct schema_registry *r, const struct schema_desc *d,
                            struct serr *e)
{
    for (size_t i = 0; i < d->nrefs; i++) {
        if (!rec_at(r, d->refs[i].subject, d->refs[i].version)) {
            char path[64];
            snprintf(path, sizeof path, "/references/%zu", i);
            serr_set(e, path, "reference to subject '%.*s' version %u: not found",
                     (int)(d->refs[i].subject.len > 100 ? 100 : d->refs[i].subject.len),
                     (const char *)d->refs[i].subject.ptr, d->refs[i].version);
            return ERR_SCHEMA_INVALID;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------------------------- */

static struct srec *srec_new(uint32_t id, const struct schema_desc *d, uint64_t h)
{
    size_t n = d->text.len + d->canon.len;
    for (size_t i = 0; i < d->nrefs; i++)
        n += d->refs[i].name.len + d->refs[i].subject.len;
    struct srec *s = xcalloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->mem = xmalloc(n ? n : 1);
    s->refs = d->nrefs ? xcalloc(d->nrefs, sizeof *s->refs) : NULL;
    if (!s->mem || (d->nrefs && !s->refs)) {
        xfree(s->mem);
        xfree(s->refs);
        xfree(s);
        return NULL;
    }
    uint8_t *p = s->mem;
    memcpy(p, d->text.ptr, d->text.len);
    s->text = slice_of(p, d->text.len);
    p += d->text.len;
    if (d->canon.len) {
        memcpy(p, d->canon.ptr, d->canon.len);
        s->canon = slice_of(p, d->canon.len);
        p += d->canon.len;
    } else {
        s->canon = s->text;
    }
    for (size_t i = 0; i < d->nrefs; i++) {
        const struct schema_reference *rf = &d->refs[i];
        memcpy(p, rf->name.ptr, rf->name.len);
        s->refs[i].name = slice_of(p, rf->name.len);
        p += rf->name.len;
        memcpy(p, rf->subject.ptr, rf->subject.len);
        s->refs[i].subject = slice_of(p, rf->subject.len);
        p += rf->subject.len;
        s->refs[i].version = rf->version;
    }
    s->nrefs = d->nrefs;
    s->id = id;
    s->type = d->type;
    s->flags = d->flags;
    s->hash = h;
    atomic_init(&s->parsed, NULL);
    return s;
}

static void srec_free(struct srec *s)
{
    if (!s)
        return;
    struct schema_ref *p = atomic_load(&s->parsed);
    if (p)
        schema_ref_release(p);
    xfree(s->mem);
    xfree(s->refs);
    xfree(s);
}

static uint64_t srec_bytes(const struct srec *s)
{
    struct schema_desc d = desc_of(s);
    return desc_bytes(&d);
}

static struct subject *subject_new(struct slice name)
{
    struct subject *s = xcalloc(1, sizeof *s + name.len);
    if (!s)
        return NULL;
    memcpy(s + 1, name.ptr, name.len);
    s->name = slice_of(s + 1, name.len);
    return s;
}

static void subject_free(struct subject *s)
{
    if (s) {
        xfree(s->ids);
        xfree(s);
    }
}

static int subject_reserve(struct subject *s)
{
    if (s->nversions < s->cap)
        return 0;
    uint32_t cap = s->cap ? s->cap * 2 : 4;
    uint32_t *ids = xrealloc(s->ids, cap * sizeof *ids);
    if (!ids)
        return ERR_NOMEM;
    s->ids = ids;
    s->cap = cap;
    return 0;
}

static int recs_reserve(struct schema_registry *r)
{
    if (r->nrecs < r->cap_recs)
        return 0;
    size_t cap = r->cap_recs ? r->cap_recs * 2 : 64;
    struct srec **recs = xrealloc(r->recs, cap * sizeof *recs);
    if (!recs)
        return ERR_NOMEM;
    r->recs = recs;
    r->cap_recs = cap;
    return 0;
}

/* Link s (id == nrecs + 1) into the array and the identity index; room was reserved. */
static int recs_add(struct schema_registry *r, struct srec *s)
{
    ASSERT(s->id == r->nrecs + 1 && r->nrecs < r->cap_recs);
    struct slice key = slice_of(&s->hash, sizeof s->hash);
    struct srec *head = hmap_get(&r->by_ident, key);
    s->hash_next = head;
    if (hmap_put(&r->by_ident, key, s, NULL)) {
        s->hash_next = NULL;
        return ERR_NOMEM;
    }
    r->recs[r->nrecs++] = s;
    r->next_id = (uint32_t)r->nrecs + 1;
    r->bytes += srec_bytes(s);
    return 0;
}

static void clear_all(struct schema_registry *r)
{
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&r->subjects, &bk, &cur)))
        subject_free(n->value);
    hmap_free(&r->subjects);
    hmap_init(&r->subjects);
    hmap_free(&r->by_ident);
    hmap_init(&r->by_ident);
    for (size_t i = 0; i < r->nrecs; i++)
        srec_free(r->recs[i]);
    xfree(r->recs);
    r->recs = NULL;
    r->nrecs = r->cap_recs = 0;
    r->next_id = 1;
    r->versions = r->bytes = 0;
}

struct schema_registry *schema_registry_new(const struct schema_limits *l)
{
    struct schema_registry *r = xcalloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (l)
        r->limits = *l;
    else
        schema_limits_default(&r->limits);
    if (r->limits.schema_bytes_max > SCHEMA_TEXT_HARD_MAX)
        r->limits.schema_bytes_max = SCHEMA_TEXT_HARD_MAX;
    pthread_rwlock_init(&r->lock, NULL);
    hmap_init(&r->by_ident);
    hmap_init(&r->subjects);
    r->next_id = 1;
    return r;
}

void schema_registry_free(struct schema_registry *r)
{
    if (!r)
        return;
    clear_all(r);
    hmap_free(&r->subjects);
    hmap_free(&r->by_ident);
    pthread_rwlock_destroy(&r->lock);
    xfree(r);
}

/* ---------------------------------------------------------------------------------------------
 * Parsing (worker side and get_by_id; never on apply)
 * ------------------------------------------------------------------------------------------- */

/* Import resolution for .proto text: an import names a reference (by its name) of the schema
 * being parsed or, transitively, of a schema it references. Runs under the read lock. */
struct resolve_ctx {
    const struct schema_registry *r;
    const struct schema_reference *refs;
    size_t nrefs;
    unsigned budget;
};

static const struct srec *resolve_in(struct resolve_ctx *x, const struct schema_reference *refs,
                                     size_t nrefs, struct slice name, unsigned depth)
{
    if (depth > SCHEMA_REF_DEPTH_MAX)
        return NULL;
    for (size_t i = 0; i < nrefs; i++)
        if (slice_eq(refs[i].name, name))
            return rec_at(x->r, refs[i].subject, refs[i].version);
    for (size_t i = 0; i < nrefs; i++) {
        if (x->budget == 0)
            return NULL;
        x->budget--;
        const struct srec *s = rec_at(x->r, refs[i].subject, refs[i].version);
        const struct srec *t = s ? resolve_in(x, s->refs, s->nrefs, name, depth + 1) : NULL;
        if (t)
            return t;
    }
    return NULL;
}

static int proto_import(void *ctx, const char *name, const char **text, size_t *len)
{
    struct resolve_ctx *x = ctx;
    x->budget = RESOLVE_BUDGET;
    const struct srec *s = resolve_in(x, x->refs, x->nrefs, slice_cstr(name), 0);
    if (!s || s->type != SCHEMA_PROTOBUF || (s->flags & SCHEMA_F_FDS))
        return ERR_NOT_FOUND;
    *text = (const char *)s->text.ptr;
    *len = s->text.len;
    return 0;
}

/* Parse d (under the read lock). On success *avro / *proto hold the parsed schema (JSON: both
 * NULL); the caller owns it. canon (may be NULL): the Avro canonical form is appended. */
static int parse_desc(const struct schema_registry *r, const struct schema_desc *d,
                      struct avro_schema **avro, struct proto_schema **proto, struct sbuf *canon,
                      struct serr *e)
{
    *avro = NULL;
    *proto = NULL;
    int rc;
    switch (d->type) {
    case SCHEMA_AVRO:
        if (d->nrefs) {
            serr_set(e, "/references", "references are not supported for AVRO schemas");
            return ERR_SCHEMA_INVALID;
        }
        rc = avro_schema_parse((const char *)d->text.ptr, d->text.len, avro, e);
        if (rc == 0 && canon)
            avro_schema_canonical(*avro, canon);
        break;
    case SCHEMA_PROTOBUF:
        if (d->flags & SCHEMA_F_FDS) {
            rc = proto_schema_from_fds(d->text, proto, e);
        } else {
            struct resolve_ctx x = {r, d->refs, d->nrefs, RESOLVE_BUDGET};
            rc = proto_schema_parse((const char *)d->text.ptr, d->text.len, proto_import, &x,
                                    proto, e);
        }
        break;
    case SCHEMA_JSON: {
        json_error_t je;
        json_t *j = json_loadb((const char *)d->text.ptr, d->text.len, JSON_REJECT_DUPLICATES, &je);
        if (!j) {
            char path[48];
            snprintf(path, sizeof path, "/schema@%d:%d", je.line, je.column);
            serr_set(e, path, "schema is not valid JSON: %s", je.text);
            return ERR_SCHEMA_INVALID;
        }
        bool obj = json_is_object(j);
        json_decref(j);
        if (!obj) {
            serr_set(e, "/schema", "a JSON schema must be a JSON object");
            return ERR_SCHEMA_INVALID;
        }
        return 0;
    }
    default:
        serr_set(e, "/schemaType", "unknown schema type");
        return ERR_SCHEMA_INVALID;
    }
    if (rc == ERR_NOMEM)
        return rc;
    if (rc) {
        if (e && e->path[0] && strncmp(e->path, "/schema", 7) != 0) {
            /* Parsers name places inside the schema; say it is inside the request's schema. */
            char inner[sizeof e->path];
            memcpy(inner, e->path, sizeof inner);
            snprintf(e->path, sizeof e->path, "/schema: %.140s", inner);
        } else if (e && !e->path[0]) {
            snprintf(e->path, sizeof e->path, "/schema");
        }
        return ERR_SCHEMA_INVALID;
    }
    return 0;
}

int schema_registry_prepare(struct schema_registry *r, struct schema_desc *d, struct sbuf *canon,
                            struct serr *e)
{
    d->canon = (struct slice){NULL, 0};
    int rc = check_desc(&r->limits, d, e);
    if (rc)
        return rc;
    size_t start = canon->len;
    struct avro_schema *avro = NULL;
    struct proto_schema *proto = NULL;
    pthread_rwlock_rdlock(&r->lock);
    rc = check_refs_exist(r, d, e);
    if (rc == 0)
        rc = parse_desc(r, d, &avro, &proto, canon, e);
    pthread_rwlock_unlock(&r->lock);
    if (avro)
        avro_schema_free(avro);
    if (proto)
        proto_schema_free(proto);
    if (rc)
        return rc;
    if (!sbuf_ok(canon))
        return ERR_NOMEM;
    struct slice c = slice_of(canon->data + start, canon->len - start);
    /* An identity form equal to the text is journaled as empty. */
    if (c.len && !slice_eq(c, d->text))
        d->canon = c;
    if (d->canon.len > SCHEMA_TEXT_HARD_MAX)
        return ERR_TOO_LARGE;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Apply (core thread, write lock)
 * ------------------------------------------------------------------------------------------- */

static int register_locked(struct schema_registry *r, struct slice subject,
                           const struct schema_desc *d, struct schema_result *res)
{
    int rc = check_refs_exist(r, d, NULL);
    if (rc)
        return rc;
    uint64_t h = ident_hash(d);
    struct srec *s = find_ident(r, d, h);
    struct subject *subj = subject_get(r, subject);
    if (s && subj) {
        for (uint32_t v = 0; v < subj->nversions; v++) {
            if (subj->ids[v] == s->id) {
                res->id = s->id;
                res->version = v + 1;
                res->created = false;
                return 1; /* idempotent */
            }
        }
    }
    const struct schema_limits *l = &r->limits;
    if (!subj && r->subjects.count >= l->subjects_max)
        return ERR_NOSPACE;
    if (subj && subj->nversions >= l->versions_max)
        return ERR_NOSPACE;
    if (!s && (r->nrecs >= l->schemas_max || r->next_id == UINT32_MAX ||
               r->bytes + desc_bytes(d) > l->total_bytes_max))
        return ERR_NOSPACE;

    /* Every allocation before the first change. */
    struct srec *fresh = NULL;
    struct subject *new_subj = NULL;
    if (!s) {
        if (recs_reserve(r))
            return ERR_NOMEM;
        fresh = srec_new(r->next_id, d, h);
        if (!fresh)
            return ERR_NOMEM;
    }
    if (!subj) {
        new_subj = subject_new(subject);
        if (!new_subj || subject_reserve(new_subj) ||
            hmap_put(&r->subjects, new_subj->name, new_subj, NULL)) {
            subject_free(new_subj);
            srec_free(fresh);
            return ERR_NOMEM;
        }
        subj = new_subj;
    } else if (subject_reserve(subj)) {
        srec_free(fresh);
        return ERR_NOMEM;
    }
    if (fresh) {
        if (recs_add(r, fresh)) {
            if (new_subj) {
                hmap_del(&r->subjects, new_subj->name);
                subject_free(new_subj);
            }
            srec_free(fresh);
            return ERR_NOMEM;
        }
        s = fresh;
    }
    subj->ids[subj->nversions++] = s->id;
    r->versions++;
    res->id = s->id;
    res->version = subj->nversions;
    res->created = true;
    return 0;
}

int schema_registry_apply_register(struct schema_registry *r, struct slice subject,
                                   const struct schema_desc *d_in, struct schema_result *res)
{
    struct schema_desc norm = normalized(d_in);
    const struct schema_desc *d = &norm;
    struct schema_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    int rc = schema_validate_subject(subject);
    if (rc == 0)
        rc = check_desc(&r->limits, d, NULL);
    pthread_rwlock_wrlock(&r->lock);
    if (rc == 0)
        rc = register_locked(r, subject, d, res);
    if (rc == 1) {
        r->idempotent++;
        rc = 0;
    } else if (rc == 0) {
        r->registered++;
    } else {
        r->rejected++;
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Reads (any thread, read lock)
 * ------------------------------------------------------------------------------------------- */

int schema_registry_lookup(struct schema_registry *r, struct slice subject,
                           const struct schema_desc *d_in, struct schema_result *res)
{
    struct schema_desc norm = normalized(d_in);
    const struct schema_desc *d = &norm;
    memset(res, 0, sizeof *res);
    if (schema_validate_subject(subject))
        return ERR_BAD_NAME;
    int rc = ERR_SCHEMA_NOT_FOUND;
    pthread_rwlock_rdlock(&r->lock);
    const struct subject *subj = subject_get(r, subject);
    const struct srec *s = find_ident(r, d, ident_hash(d));
    if (!subj)
        rc = ERR_SUBJECT_NOT_FOUND;
    else if (s)
        for (uint32_t v = 0; v < subj->nversions; v++)
            if (subj->ids[v] == s->id) {
                res->id = s->id;
                res->version = v + 1;
                rc = 0; /* the latest version with it wins: keep looking */
            }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

static void fill_view(struct schema_view *v, const struct srec *s)
{
    memset(v, 0, sizeof *v);
    v->id = s->id;
    v->type = s->type;
    v->flags = s->flags;
    v->text = s->text;
    v->refs = s->refs;
    v->nrefs = s->nrefs;
}

int schema_registry_view_id(struct schema_registry *r, uint32_t id, schema_view_fn fn, void *ctx)
{
    int rc = ERR_SCHEMA_NOT_FOUND;
    pthread_rwlock_rdlock(&r->lock);
    if (id >= 1 && id <= r->nrecs) {
        struct schema_view v;
        fill_view(&v, r->recs[id - 1]);
        rc = fn(ctx, &v);
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

int schema_registry_view_version(struct schema_registry *r, struct slice subject, uint32_t version,
                                 schema_view_fn fn, void *ctx)
{
    if (schema_validate_subject(subject))
        return ERR_BAD_NAME;
    int rc;
    pthread_rwlock_rdlock(&r->lock);
    const struct subject *subj = subject_get(r, subject);
    if (!subj) {
        rc = ERR_SUBJECT_NOT_FOUND;
    } else {
        uint32_t ver = version ? version : subj->nversions;
        const struct srec *s = rec_at(r, subject, ver);
        if (!s) {
            rc = ERR_VERSION_NOT_FOUND;
        } else {
            struct schema_view v;
            fill_view(&v, s);
            v.subject = subj->name;
            v.version = ver;
            rc = fn(ctx, &v);
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

static int cmp_slice_ptr(const void *a, const void *b)
{
    const struct slice *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->ptr, y->ptr, n) : 0;
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len ? 1 : 0;
}

/* The subject names, sorted (xfree the array; the slices point into the subjects). */
static struct slice *sorted_subjects(const struct schema_registry *r, size_t *n_out)
{
    size_t n = r->subjects.count, i = 0;
    struct slice *names = xmalloc((n ? n : 1) * sizeof *names);
    if (!names)
        return NULL;
    size_t bk = 0;
    struct hmap_node *cur = NULL, *nd;
    while ((nd = hmap_next(&r->subjects, &bk, &cur)))
        names[i++] = ((struct subject *)nd->value)->name;
    ASSERT(i == n);
    qsort(names, n, sizeof *names, cmp_slice_ptr);
    *n_out = n;
    return names;
}

int schema_registry_subjects(struct schema_registry *r, schema_subject_fn fn, void *ctx)
{
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    size_t n = 0;
    struct slice *names = sorted_subjects(r, &n);
    if (!names)
        rc = ERR_NOMEM;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = fn(ctx, names[i]);
    xfree(names);
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

int schema_registry_versions(struct schema_registry *r, struct slice subject, schema_version_fn fn,
                             void *ctx)
{
    if (schema_validate_subject(subject))
        return ERR_BAD_NAME;
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    const struct subject *subj = subject_get(r, subject);
    if (!subj)
        rc = ERR_SUBJECT_NOT_FOUND;
    for (uint32_t v = 0; subj && v < subj->nversions && rc == 0; v++)
        rc = fn(ctx, v + 1, subj->ids[v]);
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Parsed schemas for the stream engine
 * ------------------------------------------------------------------------------------------- */

void schema_ref_release(struct schema_ref *p)
{
    if (!p || atomic_fetch_sub(&p->refcount, 1) != 1)
        return;
    if (p->avro)
        avro_schema_free((struct avro_schema *)p->avro);
    if (p->proto)
        proto_schema_free((struct proto_schema *)p->proto);
    xfree(p);
}

int schema_registry_get_by_id(struct schema_registry *r, uint32_t id, struct schema_ref **out,
                              struct serr *e)
{
    *out = NULL;
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    if (id == 0 || id > r->nrecs) {
        rc = ERR_SCHEMA_NOT_FOUND;
        goto out_unlock;
    }
    struct srec *s = r->recs[id - 1];
    struct schema_ref *p = atomic_load(&s->parsed);
    if (!p) {
        /* Parse under the read lock (imports read other schemas); two threads may race to
         * parse the same id: the first to publish wins, the other drops its copy. */
        struct avro_schema *avro = NULL;
        struct proto_schema *proto = NULL;
        struct schema_desc d = desc_of(s);
        rc = parse_desc(r, &d, &avro, &proto, NULL, e);
        if (rc)
            goto out_unlock;
        p = xcalloc(1, sizeof *p);
        if (!p) {
            if (avro)
                avro_schema_free(avro);
            if (proto)
                proto_schema_free(proto);
            rc = ERR_NOMEM;
            goto out_unlock;
        }
        p->id = s->id;
        p->type = s->type;
        p->flags = s->flags;
        p->avro = avro;
        p->proto = proto;
        atomic_init(&p->refcount, 1); /* the cache's */
        struct schema_ref *expected = NULL;
        if (!atomic_compare_exchange_strong(&s->parsed, &expected, p)) {
            schema_ref_release(p);
            p = expected;
        }
    }
    atomic_fetch_add(&p->refcount, 1);
    *out = p;
out_unlock:
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

int schema_registry_sfmt_lookup(void *ctx, uint32_t id, struct sfmt_schema *out, struct serr *e)
{
    struct schema_ref *p = NULL;
    int rc = schema_registry_get_by_id(ctx, id, &p, e);
    if (rc)
        return rc;
    out->type = p->type;
    out->avro = p->avro;
    out->proto = p->proto;
    out->handle = p;
    return 0;
}

void schema_registry_sfmt_release(void *ctx, void *handle)
{
    (void)ctx;
    schema_ref_release(handle);
}

/* ---------------------------------------------------------------------------------------------
 * Stats and invariants
 * ------------------------------------------------------------------------------------------- */

void schema_registry_stats(struct schema_registry *r, struct schema_stats *st)
{
    pthread_rwlock_rdlock(&r->lock);
    st->schemas = r->nrecs;
    st->subjects = r->subjects.count;
    st->versions = r->versions;
    st->bytes = r->bytes;
    st->next_id = r->next_id;
    st->registered = r->registered;
    st->idempotent = r->idempotent;
    st->rejected = r->rejected;
    pthread_rwlock_unlock(&r->lock);
}

int schema_registry_check_invariants(struct schema_registry *r)
{
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    uint64_t bytes = 0, versions = 0;
    if (r->next_id != r->nrecs + 1) /* 1 */
        rc = ERR_CORRUPT;
    for (size_t i = 0; i < r->nrecs && rc == 0; i++) {
        const struct srec *s = r->recs[i];
        struct schema_desc d = desc_of(s);
        if (s->id != i + 1 || s->hash != ident_hash(&d) || find_ident(r, &d, s->hash) != s)
            rc = ERR_CORRUPT; /* 1, 2: the first match of its identity is itself */
        if (rc == 0 && check_refs_exist(r, &d, NULL))
            rc = ERR_CORRUPT; /* 4 */
        bytes += srec_bytes(s);
    }
    size_t bk = 0;
    struct hmap_node *cur = NULL, *nd;
    while (rc == 0 && (nd = hmap_next(&r->subjects, &bk, &cur))) {
        const struct subject *s = nd->value;
        if (s->nversions == 0 || schema_validate_subject(s->name))
            rc = ERR_CORRUPT;
        for (uint32_t v = 0; v < s->nversions; v++)
            if (s->ids[v] == 0 || s->ids[v] > r->nrecs)
                rc = ERR_CORRUPT; /* 3 */
        versions += s->nversions;
    }
    if (bytes != r->bytes || versions != r->versions)
        rc = ERR_CORRUPT;
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Snapshots
 * ------------------------------------------------------------------------------------------- */

int schema_registry_snapshot_write(struct schema_registry *r, struct sbuf *out)
{
    int rc = 0;
    pthread_rwlock_rdlock(&r->lock);
    size_t n = 0;
    struct slice *names = sorted_subjects(r, &n);
    if (!names) {
        rc = ERR_NOMEM;
        goto out_unlock;
    }
    size_t start = out->len;
    sbuf_append(out, SNAP_MAGIC, 4);
    sbuf_put_le32(out, SNAP_VERSION);
    sbuf_put_le32(out, r->next_id);
    sbuf_put_uvarint(out, r->nrecs);
    for (size_t i = 0; i < r->nrecs && sbuf_ok(out); i++) {
        const struct srec *s = r->recs[i];
        sbuf_put_uvarint(out, s->id);
        sbuf_putc(out, s->type);
        sbuf_putc(out, s->flags);
        sbuf_put_lp(out, s->text.ptr, s->text.len);
        if (s->canon.ptr == s->text.ptr)
            sbuf_put_uvarint(out, 0);
        else
            sbuf_put_lp(out, s->canon.ptr, s->canon.len);
        sbuf_put_uvarint(out, s->nrefs);
        for (size_t k = 0; k < s->nrefs; k++) {
            sbuf_put_lp(out, s->refs[k].name.ptr, s->refs[k].name.len);
            sbuf_put_lp(out, s->refs[k].subject.ptr, s->refs[k].subject.len);
            sbuf_put_uvarint(out, s->refs[k].version);
        }
    }
    sbuf_put_uvarint(out, n);
    for (size_t i = 0; i < n && sbuf_ok(out); i++) {
        const struct subject *s = subject_get(r, names[i]);
        sbuf_put_lp(out, s->name.ptr, s->name.len);
        sbuf_put_uvarint(out, s->nversions);
        for (uint32_t v = 0; v < s->nversions; v++)
            sbuf_put_uvarint(out, s->ids[v]);
    }
    if (sbuf_ok(out))
        sbuf_put_le32(out, crc32c(0, out->data + start, out->len - start));
    if (!sbuf_ok(out))
        rc = out->too_big ? ERR_TOO_LARGE : ERR_NOMEM;
    xfree(names);
out_unlock:
    pthread_rwlock_unlock(&r->lock);
    return rc;
}

static int restore_locked(struct schema_registry *r, struct slice in)
{
    if (in.len < 4 + 4 + 4 + 1 + 1 + 4)
        return ERR_CORRUPT;
    struct slice body = slice_of(in.ptr, in.len - 4);
    if (crc32c(0, body.ptr, body.len) != get_le32(in.ptr + body.len))
        return ERR_CORRUPT;
    if (memcmp(body.ptr, SNAP_MAGIC, 4) != 0)
        return ERR_CORRUPT;
    struct reader rd = reader_of(slice_of(body.ptr + 4, body.len - 4));
    uint32_t version, next_id;
    uint64_t nschemas;
    rd_le32(&rd, &version);
    rd_le32(&rd, &next_id);
    rd_uvarint(&rd, &nschemas);
    /* each schema takes at least 6 bytes: id, type, flags, text len, canon len, nrefs */
    if (rd.bad || version != SNAP_VERSION || nschemas > rd_left(&rd) / 6 ||
        next_id != nschemas + 1)
        return ERR_CORRUPT;
    static struct schema_reference refs_tmp[SCHEMA_REFS_MAX]; /* write lock held */
    for (uint64_t i = 0; i < nschemas; i++) {
        uint64_t id, nrefs;
        uint8_t type, flags;
        struct schema_desc d = {0};
        rd_uvarint(&rd, &id);
        rd_u8(&rd, &type);
        rd_u8(&rd, &flags);
        rd_lp(&rd, SCHEMA_TEXT_HARD_MAX, &d.text);
        rd_lp(&rd, SCHEMA_TEXT_HARD_MAX, &d.canon);
        rd_uvarint(&rd, &nrefs);
        if (rd.bad || id != i + 1 || nrefs > SCHEMA_REFS_MAX)
            return ERR_CORRUPT;
        for (uint64_t k = 0; k < nrefs; k++) {
            uint64_t v;
            rd_lp(&rd, SCHEMA_REF_NAME_MAX, &refs_tmp[k].name);
            rd_lp(&rd, SCHEMA_SUBJECT_MAX, &refs_tmp[k].subject);
            rd_uvarint(&rd, &v);
            if (rd.bad || v > UINT32_MAX)
                return ERR_CORRUPT;
            refs_tmp[k].version = (uint32_t)v;
        }
        d.type = type;
        d.flags = flags;
        d.refs = refs_tmp;
        d.nrefs = (size_t)nrefs;
        struct schema_limits hard = r->limits;
        hard.schema_bytes_max = SCHEMA_TEXT_HARD_MAX;
        if (check_desc(&hard, &d, NULL) || slice_eq(d.canon, d.text))
            return ERR_CORRUPT;
        uint64_t h = ident_hash(&d);
        if (find_ident(r, &d, h))
            return ERR_CORRUPT;
        if (recs_reserve(r))
            return ERR_NOMEM;
        struct srec *s = srec_new((uint32_t)id, &d, h);
        if (!s)
            return ERR_NOMEM;
        if (recs_add(r, s)) {
            srec_free(s);
            return ERR_NOMEM;
        }
    }
    uint64_t nsubjects;
    rd_uvarint(&rd, &nsubjects);
    if (rd.bad || nsubjects > rd_left(&rd) / 3)
        return ERR_CORRUPT;
    struct slice prev = {NULL, 0};
    for (uint64_t i = 0; i < nsubjects; i++) {
        struct slice name;
        uint64_t nv;
        rd_lp(&rd, SCHEMA_SUBJECT_MAX, &name);
        rd_uvarint(&rd, &nv);
        if (rd.bad || schema_validate_subject(name) || nv == 0 || nv > rd_left(&rd) ||
            nv > UINT32_MAX / 2 || (i > 0 && cmp_slice_ptr(&prev, &name) >= 0))
            return ERR_CORRUPT;
        prev = name;
        struct subject *s = subject_new(name);
        if (!s)
            return ERR_NOMEM;
        s->ids = xmalloc(nv * sizeof *s->ids);
        if (!s->ids || hmap_put(&r->subjects, s->name, s, NULL)) {
            subject_free(s);
            return ERR_NOMEM;
        }
        s->cap = (uint32_t)nv;
        for (uint64_t v = 0; v < nv; v++) {
            uint64_t id;
            rd_uvarint(&rd, &id);
            if (rd.bad || id == 0 || id > r->nrecs)
                return ERR_CORRUPT;
            s->ids[s->nversions++] = (uint32_t)id;
            r->versions++;
        }
    }
    if (rd_left(&rd) != 0)
        return ERR_CORRUPT;
    for (size_t i = 0; i < r->nrecs; i++) {
        struct schema_desc d = desc_of(r->recs[i]);
        if (check_refs_exist(r, &d, NULL))
            return ERR_CORRUPT;
    }
    return 0;
}

void schema_registry_reset(struct schema_registry *r)
{
    pthread_rwlock_wrlock(&r->lock);
    clear_all(r);
    pthread_rwlock_unlock(&r->lock);
}

int schema_registry_snapshot_read(struct schema_registry *r, struct slice in)
{
    pthread_rwlock_wrlock(&r->lock);
    int rc = ERR_INVALID;
    if (r->nrecs == 0 && r->subjects.count == 0) {
        rc = restore_locked(r, in);
        if (rc)
            clear_all(r);
    }
    pthread_rwlock_unlock(&r->lock);
    return rc;
}
