/* join.c -- the windowed join engine (join.h; semantics in docs/STREAM.md "Joins").
 *
 * One call, drawn:
 *
 *   join_feed(L/R, NEW)* ──► entries[s][0..nnew)      key canonicalised, t, clock, class, value copy
 *   join_feed(L/R, LOOKBACK)* ──► entries[s][nnew..n) key, t, clock only
 *   join_finish:
 *     1. group   : hash every matchable entry's canonical key -> group id
 *     2. pairs   : per group, both sides sorted by t, sweep |t_l - t_r| <= size
 *                  (new x lookback = the new record is late_after_close; lookback x lookback: skip)
 *     3. closed  : other side at log end, or its last read clock > t + size + lateness
 *     4. consume : nS = first new entry of S not closed; then shrink nL/nR until no pair has one
 *                  end consumed and the other not (fixpoint)
 *     5. cut     : if the rows exceed max_rows / max_response_bytes, the largest clock cut X that
 *                  fits (entries with clock >= X are not consumed), then the fixpoint again
 *     6. emit    : pairs among consumed (dedupe_once: greedy by |dt|, l offset, r offset), then
 *                  outer rows of consumed unmatched records
 *
 * Invariants:
 *  1. Within a side, NEW entries are in strictly increasing offset order and precede every
 *     LOOKBACK entry (join_feed enforces it); index order is offset order.
 *  2. After step 4, for every pair (l, r): l < nL iff r < nR. So a consumed record's whole
 *     partner set among the records read is consumed with it, and (by closure, 3) no partner of it
 *     exists outside what was read: pairs never straddle calls (docs/STREAM.md proves it).
 *  3. Only consumed records yield rows or count in the per-record stats, so every row and every
 *     count is produced by exactly one call of a resumed sequence.
 *  4. Every excluded record (late, undecodable) is counted in stats, never dropped silently.
 */
#include "stream/join.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/assert.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/json.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * State
 * ------------------------------------------------------------------------------------------- */

enum jcls {
    JC_OK = 0,   /* timed, key not null, not late: can pair */
    JC_NULLKEY,  /* a key component is null/missing/unmatchable: outer row only */
    JC_UNTIMED,  /* the time field is missing or not an integer: outer row only */
    JC_LATE,     /* t < clock - lateness: no rows */
    JC_BAD,      /* the format rejected the value: no rows */
};

#define JF_MATCHED 1u    /* has at least one valid pair */
#define JF_LATE_CLOSE 2u /* matched a lookback record: late after an earlier close */
#define JF_KEPT 4u       /* dedupe_once: is in a kept pair */

struct jent {
    uint64_t offset;
    int64_t clock, t;
    uint64_t khash;
    uint32_t kofs, klen; /* canonical key in the side's byte store */
    uint32_t vofs, vlen; /* value copy */
    uint32_t rkofs, rklen; /* record key copy (for $key) */
    uint32_t partition;
    uint32_t group;
    uint32_t pofs, plen; /* rendered projection in the side's cache (plen 0 = not yet) */
    uint8_t cls, flags;
    bool has_rkey;
};

struct jside {
    struct jent *e;
    size_t n, cap, nnew;
    struct sbuf bytes;
    struct sbuf proj; /* rendered projections (write_record), each record rendered once */
    int64_t max_clock;
    bool any_new;
    bool lookback_started;
    uint64_t regressions;
    struct spath paths[JOIN_KEYS_MAX + 1]; /* payload key paths, then the time path */
    uint32_t npaths;
    int key_path_ix[JOIN_KEYS_MAX]; /* index into paths, or -1 for metadata */
    int time_path_ix;
    struct spath emit_paths[JOIN_FIELDS_MAX];
    int emit_path_ix[JOIN_FIELDS_MAX];
    uint32_t nemit_paths;
};

struct jpair {
    uint32_t l, r;
};

struct join {
    struct join_spec spec;
    struct jside side[2];
    struct arena scratch;
    uint64_t state_bytes, state_records, bytes_peak, records_peak;
    const char *full_limit; /* set when a feed was refused */
    bool finished;
    /* finish-time */
    struct jpair *pairs; /* every valid pair among the records read (the partner graph) */
    size_t npairs, cap_pairs;
    struct jpair *emit;  /* the pairs to emit, by (l, r): all, or dedupe_once's kept ones */
    size_t nemit;
};

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

const char *join_type_name(enum join_type t)
{
    switch (t) {
    case JOIN_LEFT: return "left";
    case JOIN_RIGHT: return "right";
    case JOIN_FULL: return "full";
    default: return "inner";
    }
}

int join_field_parse(struct join_field *f, const char *name, size_t len)
{
    memset(f, 0, sizeof *f);
    f->name = name;
    f->name_len = (uint32_t)len;
    if (len == 0 || len > 1024)
        return ERR_INVALID;
    int rc = smeta_parse(name, len, &f->meta, &f->header);
    if (rc)
        return rc;
    if (f->meta == SMETA_NONE)
        return spath_parse(name, len, &f->path);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Construction
 * ------------------------------------------------------------------------------------------- */

int join_new(const struct join_spec *spec, struct join **out)
{
    *out = NULL;
    if (spec->type > JOIN_FULL || spec->size_ms < 0 || spec->allowed_lateness_ms < 0 ||
        spec->missing_as > JOIN_MISSING_EMPTY)
        return ERR_INVALID;
    for (int s = 0; s < 2; s++) {
        const struct join_side_spec *ss = &spec->side[s];
        if (!ss->fmt || ss->nkeys == 0 || ss->nkeys > JOIN_KEYS_MAX ||
            ss->nfields > JOIN_FIELDS_MAX)
            return ERR_INVALID;
        for (uint32_t i = 0; i < ss->nfields; i++)
            if (ss->fields[i].meta == SMETA_HEADER)
                return ERR_INVALID; /* headers are not kept in the state */
    }
    if (spec->side[0].nkeys != spec->side[1].nkeys)
        return ERR_INVALID;
    struct join *j = xcalloc(1, sizeof *j);
    if (!j)
        return ERR_NOMEM;
    j->spec = *spec;
    struct join_spec *sp = &j->spec;
    if (!sp->max_state_records) sp->max_state_records = JOIN_STATE_RECORDS_DEFAULT;
    if (!sp->max_state_bytes) sp->max_state_bytes = JOIN_STATE_BYTES_DEFAULT;
    if (!sp->max_pairs) sp->max_pairs = JOIN_PAIRS_DEFAULT;
    if (!sp->max_rows) sp->max_rows = JOIN_MAX_ROWS_DEFAULT;
    if (!sp->max_response_bytes) sp->max_response_bytes = JOIN_RESPONSE_BYTES_DEFAULT;
    if (!sp->lookback_max) sp->lookback_max = JOIN_LOOKBACK_DEFAULT;
    if (sp->max_state_bytes > UINT32_MAX)
        sp->max_state_bytes = UINT32_MAX; /* byte-store offsets are 32-bit */
    arena_init(&j->scratch, 64u << 20);
    for (int s = 0; s < 2; s++) {
        struct jside *d = &j->side[s];
        const struct join_side_spec *ss = &sp->side[s];
        sbuf_init(&d->bytes, 0);
        sbuf_init(&d->proj, 0);
        d->max_clock = INT64_MIN;
        for (uint32_t i = 0; i < ss->nkeys; i++) {
            if (ss->keys[i].meta == SMETA_NONE) {
                d->key_path_ix[i] = (int)d->npaths;
                d->paths[d->npaths++] = ss->keys[i].path;
            } else
                d->key_path_ix[i] = -1;
        }
        d->time_path_ix = -1;
        if (ss->has_time_field && ss->time_field.meta == SMETA_NONE) {
            d->time_path_ix = (int)d->npaths;
            d->paths[d->npaths++] = ss->time_field.path;
        }
        for (uint32_t i = 0; i < ss->nfields; i++) {
            if (ss->fields[i].meta == SMETA_NONE) {
                d->emit_path_ix[i] = (int)d->nemit_paths;
                d->emit_paths[d->nemit_paths++] = ss->fields[i].path;
            } else
                d->emit_path_ix[i] = -1;
        }
    }
    *out = j;
    return 0;
}

void join_free(struct join *j)
{
    if (!j)
        return;
    for (int s = 0; s < 2; s++) {
        xfree(j->side[s].e);
        sbuf_free(&j->side[s].bytes);
        sbuf_free(&j->side[s].proj);
    }
    xfree(j->pairs);
    xfree(j->emit);
    arena_free(&j->scratch);
    xfree(j);
}

/* ---------------------------------------------------------------------------------------------
 * Feeding: key canonicalisation
 *
 * A key component is encoded so that two components are equal under sval_eq exactly when their
 * encodings are byte-equal: an integral double in int64 range is encoded as that int (7.0 == 7),
 * -0.0 as 0, strings after unescaping. Null, missing, nested JSON and NaN never compare equal to
 * anything (value.h), so a key holding one never matches.
 * ------------------------------------------------------------------------------------------- */

enum { KT_BOOL = 1, KT_INT, KT_DOUBLE, KT_STR, KT_BYTES };

static bool double_as_int(double d, int64_t *out)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    int64_t i = (int64_t)d;
    if ((double)i != d)
        return false;
    *out = i;
    return true;
}

/* Append one component; false when it can never match. */
static bool key_put(struct sbuf *k, struct sval *v, struct arena *a)
{
    uint8_t b[9];
    switch (v->type) {
    case SV_BOOL:
        b[0] = KT_BOOL;
        b[1] = v->b ? 1 : 0;
        sbuf_append(k, b, 2);
        return true;
    case SV_INT:
        b[0] = KT_INT;
        put_be64(b + 1, (uint64_t)v->i);
        sbuf_append(k, b, 9);
        return true;
    case SV_DOUBLE: {
        if (isnan(v->d))
            return false;
        int64_t i;
        if (double_as_int(v->d, &i)) {
            b[0] = KT_INT;
            put_be64(b + 1, (uint64_t)i);
        } else {
            b[0] = KT_DOUBLE;
            uint64_t bits;
            memcpy(&bits, &v->d, 8);
            put_be64(b + 1, bits);
        }
        sbuf_append(k, b, 9);
        return true;
    }
    case SV_STR:
    case SV_BYTES:
        if (v->type == SV_STR && v->escaped && sval_unescape(v, a) != 0)
            return false;
        b[0] = v->type == SV_STR ? KT_STR : KT_BYTES;
        put_be32(b + 1, v->len);
        sbuf_append(k, b, 5);
        sbuf_append(k, v->p, v->len);
        return true;
    default:
        return false;
    }
}

static bool sval_time(const struct sval *v, int64_t *t)
{
    if (v->type == SV_INT) {
        *t = v->i;
        return true;
    }
    if (v->type == SV_DOUBLE)
        return double_as_int(v->d, t);
    return false;
}

static int push_entry(struct jside *d, struct jent **out)
{
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 1024;
        struct jent *ne = xrealloc(d->e, nc * sizeof *ne);
        if (!ne)
            return ERR_NOMEM;
        d->e = ne;
        d->cap = nc;
    }
    *out = &d->e[d->n++];
    memset(*out, 0, sizeof **out);
    return 0;
}

int join_feed(struct join *j, int s, const struct srec *rec, enum join_feed_kind kind)
{
    ASSERT(s == JOIN_L || s == JOIN_R);
    ASSERT(!j->finished);
    struct jside *d = &j->side[s];
    const struct join_side_spec *ss = &j->spec.side[s];
    if (kind == JOIN_NEW) {
        if (d->lookback_started)
            return ERR_INVALID;
        if (d->nnew > 0 && rec->offset <= d->e[d->nnew - 1].offset)
            return ERR_INVALID;
    } else {
        if (d->n - d->nnew >= j->spec.lookback_max) {
            j->full_limit = "lookback_max";
            return ERR_QUERY_LIMIT;
        }
        d->lookback_started = true;
    }
    if (j->state_records + 1 > j->spec.max_state_records) {
        j->full_limit = "max_state_records";
        return ERR_QUERY_LIMIT;
    }

    arena_reset(&j->scratch);
    struct sval vals[JOIN_KEYS_MAX + 1];
    enum jcls cls = JC_OK;
    if (d->npaths > 0) {
        const char *why = NULL;
        int rc = ss->fmt->ops->extract(ss->fmt, rec->value, d->paths, d->npaths, vals,
                                       &j->scratch, &why);
        if (rc == ERR_NOMEM && j->scratch.max_bytes == 0)
            return ERR_NOMEM;
        if (rc)
            cls = JC_BAD;
    }
    int64_t t = rec->timestamp_ms;
    if (cls == JC_OK && ss->has_time_field) {
        struct sval tv;
        if (d->time_path_ix >= 0)
            tv = vals[d->time_path_ix];
        else
            srec_meta(rec, ss->time_field.meta, ss->time_field.header, &tv);
        if (!sval_time(&tv, &t))
            cls = JC_UNTIMED;
    }
    if (cls == JC_OK && t < sat_add(rec->timestamp_ms, -j->spec.allowed_lateness_ms))
        cls = JC_LATE;

    /* The canonical key goes straight into the byte store; rolled back if not needed. */
    size_t mark = d->bytes.len;
    bool key_ok = false;
    if (cls == JC_OK || cls == JC_UNTIMED) {
        key_ok = true;
        for (uint32_t i = 0; i < ss->nkeys && key_ok; i++) {
            struct sval v;
            if (d->key_path_ix[i] >= 0)
                v = vals[d->key_path_ix[i]];
            else
                srec_meta(rec, ss->keys[i].meta, ss->keys[i].header, &v);
            key_ok = key_put(&d->bytes, &v, &j->scratch);
        }
        if (!key_ok) {
            d->bytes.len = mark;
            if (cls == JC_OK)
                cls = JC_NULLKEY;
        }
    }
    size_t klen = key_ok ? d->bytes.len - mark : 0;
    bool keep_value = kind == JOIN_NEW && (cls == JC_OK || cls == JC_NULLKEY || cls == JC_UNTIMED);
    size_t add = klen + (keep_value ? rec->value.len + (rec->has_key ? rec->key.len : 0) : 0);
    if (j->state_bytes + add > j->spec.max_state_bytes) {
        d->bytes.len = mark;
        j->full_limit = "max_state_bytes";
        return ERR_QUERY_LIMIT;
    }
    struct jent *e;
    if (push_entry(d, &e) != 0) {
        d->bytes.len = mark;
        return ERR_NOMEM;
    }
    e->offset = rec->offset;
    e->clock = rec->timestamp_ms;
    e->t = t;
    e->cls = (uint8_t)cls;
    e->partition = rec->partition;
    e->kofs = (uint32_t)mark;
    e->klen = (uint32_t)klen;
    e->khash = klen ? hash_bytes(d->bytes.data + mark, klen, 0x9e3779b97f4a7c15ull) : 0;
    if (keep_value) {
        e->vofs = (uint32_t)d->bytes.len;
        e->vlen = (uint32_t)rec->value.len;
        sbuf_append(&d->bytes, rec->value.ptr, rec->value.len);
        e->has_rkey = rec->has_key;
        e->rkofs = (uint32_t)d->bytes.len;
        e->rklen = rec->has_key ? (uint32_t)rec->key.len : 0;
        if (rec->has_key)
            sbuf_append(&d->bytes, rec->key.ptr, rec->key.len);
    }
    if (!sbuf_ok(&d->bytes)) {
        d->n--;
        d->bytes.len = mark;
        d->bytes.oom = false;
        return ERR_NOMEM;
    }
    if (kind == JOIN_NEW) {
        d->nnew = d->n;
        if (d->any_new && rec->timestamp_ms < d->max_clock)
            d->regressions++;
        if (!d->any_new || rec->timestamp_ms > d->max_clock)
            d->max_clock = rec->timestamp_ms;
        d->any_new = true;
    }
    j->state_records++;
    j->state_bytes += add + sizeof(struct jent);
    if (j->state_records > j->records_peak)
        j->records_peak = j->state_records;
    if (j->state_bytes > j->bytes_peak)
        j->bytes_peak = j->state_bytes;
    return 0;
}

bool join_lookback_from_ms(const struct join *j, int s, int64_t *from_ms)
{
    /* A late-after-close partner l of a new non-late record r of the other side has
     * t(l) >= t(r) - size >= clock(r) - lateness - size, and (not being late itself nor more than
     * `lateness` ahead of its own clock: see docs) clock(l) >= t(l) - lateness. The first new
     * record of the other side has the lowest clock (clocks are non-decreasing). */
    const struct jside *o = &j->side[1 - s];
    if (o->nnew == 0)
        return false;
    int64_t lat = j->spec.allowed_lateness_ms;
    *from_ms = sat_add(sat_add(o->e[0].clock, -j->spec.size_ms), -2 * lat);
    return true;
}

/* ---------------------------------------------------------------------------------------------
 * Finishing: groups and pairs
 * ------------------------------------------------------------------------------------------- */

static bool matchable(const struct jent *e) { return e->cls == JC_OK; }

static const uint8_t *kbytes(const struct join *j, int s, const struct jent *e)
{
    return j->side[s].bytes.data + e->kofs;
}

/* Assign group ids (equal canonical keys across both sides share one). Returns the count. */
static int build_groups(struct join *j, uint32_t *ngroups)
{
    size_t n = j->side[0].n + j->side[1].n;
    size_t cap = 16;
    while (cap < n * 2)
        cap <<= 1;
    struct slot {
        uint32_t side_ix; /* (side << 31) | index, UINT32_MAX = empty */
        uint32_t group;
    } *tab = xmalloc(cap * sizeof *tab);
    if (!tab)
        return ERR_NOMEM;
    memset(tab, 0xff, cap * sizeof *tab);
    uint32_t g = 0;
    for (int s = 0; s < 2; s++) {
        struct jside *d = &j->side[s];
        for (size_t i = 0; i < d->n; i++) {
            struct jent *e = &d->e[i];
            if (!matchable(e)) {
                e->group = UINT32_MAX;
                continue;
            }
            size_t h = (size_t)e->khash & (cap - 1);
            for (;;) {
                struct slot *sl = &tab[h];
                if (sl->side_ix == UINT32_MAX) {
                    sl->side_ix = ((uint32_t)s << 31) | (uint32_t)i;
                    sl->group = g;
                    e->group = g++;
                    break;
                }
                int os = (int)(sl->side_ix >> 31);
                const struct jent *oe = &j->side[os].e[sl->side_ix & 0x7fffffffu];
                if (oe->khash == e->khash && oe->klen == e->klen &&
                    memcmp(kbytes(j, os, oe), kbytes(j, s, e), e->klen) == 0) {
                    e->group = sl->group;
                    break;
                }
                h = (h + 1) & (cap - 1);
            }
        }
    }
    xfree(tab);
    *ngroups = g;
    return 0;
}

static int cmp_t(const void *a, const void *b, void *ctx)
{
    const struct jent *e = ctx;
    const struct jent *x = &e[*(const uint32_t *)a], *y = &e[*(const uint32_t *)b];
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sort idx[0..n) by (t, offset): insertion sort when nearly sorted, else qsort_r. */
static void sort_by_t(uint32_t *idx, size_t n, const struct jent *e)
{
    size_t inv = 0;
    for (size_t i = 1; i < n; i++)
        if (cmp_t(&idx[i - 1], &idx[i], (void *)e) > 0)
            inv++;
    if (inv == 0)
        return;
    if (inv <= 8) {
        for (size_t i = 1; i < n; i++) {
            uint32_t v = idx[i];
            size_t k = i;
            while (k > 0 && cmp_t(&idx[k - 1], &v, (void *)e) > 0) {
                idx[k] = idx[k - 1];
                k--;
            }
            idx[k] = v;
        }
        return;
    }
    qsort_r(idx, n, sizeof *idx, cmp_t, (void *)e);
}

static int add_pair(struct join *j, uint32_t l, uint32_t r)
{
    if (j->npairs >= j->spec.max_pairs)
        return ERR_QUERY_LIMIT;
    if (j->npairs == j->cap_pairs) {
        size_t nc = j->cap_pairs ? j->cap_pairs * 2 : 4096;
        struct jpair *np = xrealloc(j->pairs, nc * sizeof *np);
        if (!np)
            return ERR_NOMEM;
        j->pairs = np;
        j->cap_pairs = nc;
    }
    j->pairs[j->npairs++] = (struct jpair){l, r};
    return 0;
}

static int find_pairs(struct join *j)
{
    uint32_t ng;
    int rc = build_groups(j, &ng);
    if (rc)
        return rc;
    struct jside *L = &j->side[0], *R = &j->side[1];
    /* Counting sort of entry indices by group, per side (offset order within a group). */
    uint32_t *start[2] = {NULL, NULL}, *idx[2] = {NULL, NULL};
    rc = ERR_NOMEM;
    for (int s = 0; s < 2; s++) {
        struct jside *d = &j->side[s];
        start[s] = xcalloc((size_t)ng + 1, sizeof(uint32_t));
        idx[s] = xmalloc((d->n ? d->n : 1) * sizeof(uint32_t));
        if (!start[s] || !idx[s])
            goto out;
        for (size_t i = 0; i < d->n; i++)
            if (d->e[i].group != UINT32_MAX)
                start[s][d->e[i].group + 1]++;
        for (uint32_t g = 0; g < ng; g++)
            start[s][g + 1] += start[s][g];
        uint32_t *fill = xmalloc(((size_t)ng + 1) * sizeof(uint32_t));
        if (!fill)
            goto out;
        memcpy(fill, start[s], ((size_t)ng + 1) * sizeof(uint32_t));
        for (size_t i = 0; i < d->n; i++)
            if (d->e[i].group != UINT32_MAX)
                idx[s][fill[d->e[i].group]++] = (uint32_t)i;
        xfree(fill);
    }
    int64_t size = j->spec.size_ms;
    for (uint32_t g = 0; g < ng; g++) {
        uint32_t *li = idx[0] + start[0][g], *ri = idx[1] + start[1][g];
        size_t nl = start[0][g + 1] - start[0][g], nr = start[1][g + 1] - start[1][g];
        if (nl == 0 || nr == 0)
            continue;
        sort_by_t(li, nl, L->e);
        sort_by_t(ri, nr, R->e);
        size_t lo = 0;
        for (size_t a = 0; a < nl; a++) {
            struct jent *le = &L->e[li[a]];
            int64_t from = sat_add(le->t, -size), to = sat_add(le->t, size);
            while (lo < nr && R->e[ri[lo]].t < from)
                lo++;
            bool l_new = li[a] < L->nnew;
            for (size_t b = lo; b < nr && R->e[ri[b]].t <= to; b++) {
                struct jent *re = &R->e[ri[b]];
                bool r_new = ri[b] < R->nnew;
                if (l_new && r_new) {
                    if ((rc = add_pair(j, li[a], ri[b])) != 0)
                        goto out;
                } else if (l_new) {
                    le->flags |= JF_LATE_CLOSE;
                } else if (r_new) {
                    re->flags |= JF_LATE_CLOSE;
                }
            }
        }
    }
    /* A record that matched a closed (lookback) record is late: drop its pairs. */
    size_t w = 0;
    for (size_t i = 0; i < j->npairs; i++) {
        struct jpair p = j->pairs[i];
        if ((L->e[p.l].flags | R->e[p.r].flags) & JF_LATE_CLOSE)
            continue;
        L->e[p.l].flags |= JF_MATCHED;
        R->e[p.r].flags |= JF_MATCHED;
        j->pairs[w++] = p;
    }
    j->npairs = w;
    rc = 0;
out:
    for (int s = 0; s < 2; s++) {
        xfree(start[s]);
        xfree(idx[s]);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Finishing: closure, the consumed prefixes, dedupe, rows
 * ------------------------------------------------------------------------------------------- */

static bool entry_closed(const struct join *j, int s, const struct jent *e,
                         const struct join_end ends[2])
{
    if (e->cls != JC_OK || (e->flags & JF_LATE_CLOSE))
        return true; /* no partner can appear: nothing to wait for */
    const struct jside *o = &j->side[1 - s];
    if (ends[1 - s].at_log_end)
        return true;
    if (!o->any_new)
        return false;
    int64_t end = sat_add(sat_add(e->t, j->spec.size_ms), j->spec.allowed_lateness_ms);
    return o->max_clock > end;
}

/* The fixpoint of invariant 2, starting from the given prefixes. */
static void settle(const struct join *j, size_t *nl, size_t *nr)
{
    bool changed = true;
    while (changed) {
        changed = false;
        for (size_t i = 0; i < j->npairs; i++) {
            struct jpair p = j->pairs[i];
            if (p.l < *nl && p.r >= *nr) {
                *nl = p.l;
                changed = true;
            } else if (p.r < *nr && p.l >= *nl) {
                *nr = p.r;
                changed = true;
            }
        }
    }
}

static int64_t iabs64(int64_t x) { return x < 0 ? -x : x; }

static int cmp_dedupe(const void *a, const void *b, void *ctx)
{
    const struct join *j = ctx;
    const struct jpair *x = a, *y = b;
    const struct jent *xl = &j->side[0].e[x->l], *xr = &j->side[1].e[x->r];
    const struct jent *yl = &j->side[0].e[y->l], *yr = &j->side[1].e[y->r];
    /* |dt| of in-range times fits: both within size of each other. */
    int64_t dx = iabs64(xl->t - xr->t), dy = iabs64(yl->t - yr->t);
    if (dx != dy)
        return dx < dy ? -1 : 1;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

/* dedupe_once: keep a pair when neither record is in an earlier kept pair, in the order
 * (|t_l - t_r|, left offset, right offset). Decided per connected component of the pair graph,
 * and a call consumes whole components (invariant 2), so this is the same in every split. */
static void dedupe(struct join *j)
{
    qsort_r(j->emit, j->nemit, sizeof *j->emit, cmp_dedupe, j);
    size_t w = 0;
    for (size_t i = 0; i < j->nemit; i++) {
        struct jpair p = j->emit[i];
        struct jent *l = &j->side[0].e[p.l], *r = &j->side[1].e[p.r];
        if ((l->flags | r->flags) & JF_KEPT)
            continue;
        l->flags |= JF_KEPT;
        r->flags |= JF_KEPT;
        j->emit[w++] = p;
    }
    j->nemit = w;
}

static int cmp_pair_lr(const void *a, const void *b)
{
    const struct jpair *x = a, *y = b;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

static bool yields_outer(const struct join *j, int s, const struct jent *e)
{
    enum join_type t = j->spec.type;
    if (t == JOIN_INNER || (s == 0 && t == JOIN_RIGHT) || (s == 1 && t == JOIN_LEFT))
        return false;
    if (e->cls == JC_LATE || e->cls == JC_BAD || (e->flags & (JF_LATE_CLOSE | JF_MATCHED)))
        return false;
    return true;
}

/* emit[] is sorted by (l, r); count those with l < nl (then r < nr by invariant 2). */
static size_t pairs_below(const struct join *j, size_t nl)
{
    size_t lo = 0, hi = j->nemit;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (j->emit[mid].l < nl)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* --- rendering ----------------------------------------------------------------------------- */

static void write_key_text(struct sbuf *b, const uint8_t *k, size_t n)
{
    size_t i = 0;
    bool first = true;
    while (i < n) {
        if (!first)
            sbuf_putc(b, '|');
        first = false;
        uint8_t tag = k[i++];
        switch (tag) {
        case KT_BOOL:
            sbuf_puts(b, k[i++] ? "true" : "false");
            break;
        case KT_INT:
            sbuf_put_i64(b, (int64_t)get_be64(k + i));
            i += 8;
            break;
        case KT_DOUBLE: {
            uint64_t bits = get_be64(k + i);
            double d;
            memcpy(&d, &bits, 8);
            char t[SVAL_DOUBLE_CHARS];
            size_t tn = sval_fmt_double(t, d);
            sbuf_append(b, t, tn);
            i += 8;
            break;
        }
        case KT_STR:
        case KT_BYTES: {
            uint32_t len = get_be32(k + i);
            i += 4;
            if (tag == KT_STR) {
                sbuf_append(b, k + i, len);
            } else {
                static const char hex[] = "0123456789abcdef";
                for (uint32_t x = 0; x < len; x++) {
                    sbuf_putc(b, (uint8_t)hex[k[i + x] >> 4]);
                    sbuf_putc(b, (uint8_t)hex[k[i + x] & 15]);
                }
            }
            i += len;
            break;
        }
        default:
            ASSERT(0);
        }
    }
}

static void write_key(struct join *j, struct jw *w, int s, const struct jent *e,
                      struct sbuf *tmp)
{
    jw_key(w, "key");
    if (e->klen == 0) {
        jw_null(w);
        return;
    }
    sbuf_reset(tmp);
    write_key_text(tmp, kbytes(j, s, e), e->klen);
    if (!sbuf_ok(tmp)) {
        w->out->oom = true;
        return;
    }
    jw_strn(w, tmp->data, tmp->len);
}

static void render_record(struct join *j, struct jw *w, int s, const struct jent *e)
{
    const struct join_side_spec *ss = &j->spec.side[s];
    struct jside *d = &j->side[s];
    struct slice value = slice_of(d->bytes.data + e->vofs, e->vlen);
    arena_reset(&j->scratch);
    if (ss->nfields == 0) {
        /* The whole record, as the format maps it to JSON. It decoded at feed time. */
        const char *why = NULL;
        /* jw has no "raw slice from a callback": pre-render, then splice in as raw JSON. */
        struct sbuf tmp;
        sbuf_init(&tmp, 0);
        if (ss->fmt->ops->to_json(ss->fmt, value, &tmp, &j->scratch, &why) != 0 ||
            !sbuf_ok(&tmp))
            jw_null(w);
        else
            jw_rawn(w, tmp.data, tmp.len);
        sbuf_free(&tmp);
        return;
    }
    struct sval vals[JOIN_FIELDS_MAX];
    bool ok = true;
    if (d->nemit_paths > 0) {
        const char *why = NULL;
        ok = ss->fmt->ops->extract(ss->fmt, value, d->emit_paths, d->nemit_paths, vals,
                                   &j->scratch, &why) == 0;
    }
    struct srec meta = {
        .partition = e->partition,
        .offset = e->offset,
        .timestamp_ms = e->clock,
        .key = slice_of(d->bytes.data + e->rkofs, e->rklen),
        .has_key = e->has_rkey,
    };
    jw_obj_open(w);
    for (uint32_t i = 0; i < ss->nfields; i++) {
        jw_keyn(w, (const uint8_t *)ss->fields[i].name, ss->fields[i].name_len);
        struct sval v;
        if (d->emit_path_ix[i] >= 0)
            v = ok ? vals[d->emit_path_ix[i]] : (struct sval){.type = SV_MISSING};
        else
            srec_meta(&meta, ss->fields[i].meta, ss->fields[i].header, &v);
        sval_write_json(w, &v);
    }
    jw_obj_close(w);
}

/* A record's projection is the same in every row it appears in: render it once. */
static void write_record(struct join *j, struct jw *w, int s, const struct jent *ce)
{
    struct jside *d = &j->side[s];
    struct jent *e = (struct jent *)ce;
    if (e->plen == 0) {
        size_t at = d->proj.len;
        struct jw pw;
        jw_init(&pw, &d->proj);
        render_record(j, &pw, s, e);
        if (!sbuf_ok(&d->proj) || d->proj.len - at > UINT32_MAX || at > UINT32_MAX) {
            w->out->oom = true;
            return;
        }
        e->pofs = (uint32_t)at;
        e->plen = (uint32_t)(d->proj.len - at);
    }
    jw_rawn(w, d->proj.data + e->pofs, e->plen);
}

static void write_missing(struct join *j, struct jw *w)
{
    if (j->spec.missing_as == JOIN_MISSING_EMPTY) {
        jw_obj_open(w);
        jw_obj_close(w);
    } else
        jw_null(w);
}

static void write_row(struct join *j, struct sbuf *out, bool first, const struct jent *l,
                      const struct jent *r, struct sbuf *tmp)
{
    if (!first)
        sbuf_putc(out, ',');
    struct jw w;
    jw_init(&w, out);
    jw_obj_open(&w);
    write_key(j, &w, l ? 0 : 1, l ? l : r, tmp);
    jw_key(&w, "left_ts_ms");
    if (l && r) jw_i64(&w, l->t); else jw_null(&w);
    jw_key(&w, "right_ts_ms");
    if (l && r) jw_i64(&w, r->t); else jw_null(&w);
    jw_key(&w, "left");
    if (l) write_record(j, &w, 0, l); else write_missing(j, &w);
    jw_key(&w, "right");
    if (r) write_record(j, &w, 1, r); else write_missing(j, &w);
    jw_obj_close(&w);
}

/* Render the rows of prefixes (nl, nr), appended to out after its current content, rows
 * separated by commas (none before the first). Returns the row count. */
static uint64_t render(struct join *j, size_t nl, size_t nr, struct sbuf *out, uint64_t outer[2])
{
    struct sbuf tmp;
    sbuf_init(&tmp, 0);
    uint64_t rows = 0;
    size_t np = pairs_below(j, nl);
    for (size_t i = 0; i < np; i++, rows++)
        write_row(j, out, rows == 0, &j->side[0].e[j->emit[i].l], &j->side[1].e[j->emit[i].r],
                  &tmp);
    outer[0] = outer[1] = 0;
    for (int s = 0; s < 2; s++) {
        size_t n = s ? nr : nl;
        for (size_t i = 0; i < n; i++) {
            const struct jent *e = &j->side[s].e[i];
            if (!yields_outer(j, s, e))
                continue;
            write_row(j, out, rows == 0, s ? NULL : e, s ? e : NULL, &tmp);
            outer[s]++;
            rows++;
        }
    }
    sbuf_free(&tmp);
    return rows;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t first_at_or_above_clock(const struct jside *d, size_t n, int64_t x)
{
    for (size_t i = 0; i < n; i++)
        if (d->e[i].clock >= x)
            return i;
    return n;
}

static void side_stats(const struct join *j, int s, size_t n, struct join_side_stats *st)
{
    const struct jside *d = &j->side[s];
    st->read = d->nnew;
    st->consumed = n;
    st->reread = d->nnew - n;
    st->lookback = d->n - d->nnew;
    st->clock_regressions = d->regressions;
    for (size_t i = 0; i < n; i++) {
        const struct jent *e = &d->e[i];
        if (e->cls == JC_LATE)
            st->late++;
        else if (e->flags & JF_LATE_CLOSE) {
            st->late++;
            st->late_after_close++;
        } else if (e->cls == JC_NULLKEY)
            st->null_key++;
        else if (e->cls == JC_UNTIMED)
            st->untimed++;
        else if (e->cls == JC_BAD)
            st->undecodable++;
    }
}

int join_finish(struct join *j, const struct join_end ends[2], struct sbuf *out,
                struct join_result *res)
{
    ASSERT(!j->finished);
    j->finished = true;
    memset(res, 0, sizeof *res);
    size_t out_len0 = out->len;
    for (int s = 0; s < 2; s++) {
        const struct jside *d = &j->side[s];
        if (d->nnew > 0 && (ends[s].next_offset <= d->e[d->nnew - 1].offset ||
                            d->e[0].offset < ends[s].from_offset))
            return ERR_INVALID;
        if (ends[s].next_offset < ends[s].from_offset)
            return ERR_INVALID;
    }
    int rc = find_pairs(j);
    if (rc) {
        if (rc == ERR_QUERY_LIMIT)
            res->limit = "max_pairs";
        return rc;
    }
    j->emit = xmalloc((j->npairs ? j->npairs : 1) * sizeof *j->emit);
    if (!j->emit)
        return ERR_NOMEM;
    if (j->npairs)
        memcpy(j->emit, j->pairs, j->npairs * sizeof *j->emit);
    j->nemit = j->npairs;
    if (j->spec.dedupe_once)
        dedupe(j);
    qsort(j->emit, j->nemit, sizeof *j->emit, cmp_pair_lr);

    size_t n0[2];
    for (int s = 0; s < 2; s++) {
        const struct jside *d = &j->side[s];
        size_t n = 0;
        while (n < d->nnew && entry_closed(j, s, &d->e[n], ends))
            n++;
        n0[s] = n;
    }
    size_t nl = n0[0], nr = n0[1];
    settle(j, &nl, &nr);

    /* Fit max_rows / max_response_bytes: the largest clock cut that fits. */
    uint64_t outer[2];
    uint64_t rows = render(j, nl, nr, out, outer);
    bool fits = rows <= j->spec.max_rows && out->len - out_len0 <= j->spec.max_response_bytes &&
                sbuf_ok(out);
    if (!fits && sbuf_ok(out)) {
        /* Candidate cuts: the clocks of the consumed entries, ascending. */
        size_t nc = nl + nr, k = 0;
        int64_t *cl = xmalloc((nc ? nc : 1) * sizeof *cl);
        if (!cl) {
            out->len = out_len0;
            return ERR_NOMEM;
        }
        for (size_t i = 0; i < nl; i++) cl[k++] = j->side[0].e[i].clock;
        for (size_t i = 0; i < nr; i++) cl[k++] = j->side[1].e[i].clock;
        qsort(cl, nc, sizeof *cl, cmp64);
        /* Find the largest index c such that the cut at cl[c] (entries with clock >= cl[c] are
         * not consumed) fits; cut at cl[0] consumes nothing. */
        size_t lo = 0, hi = nc; /* invariant: cut at cl[lo] fits (consumes nothing) */
        while (lo + 1 < hi) {
            size_t mid = (lo + hi) / 2;
            size_t a = first_at_or_above_clock(&j->side[0], nl, cl[mid]);
            size_t b = first_at_or_above_clock(&j->side[1], nr, cl[mid]);
            settle(j, &a, &b);
            out->len = out_len0;
            uint64_t o2[2];
            uint64_t rr = render(j, a, b, out, o2);
            if (sbuf_ok(out) && rr <= j->spec.max_rows &&
                out->len - out_len0 <= j->spec.max_response_bytes)
                lo = mid;
            else
                hi = mid;
            sbuf_reset(out);
            out->len = out_len0; /* note: sbuf_reset cleared len; restore the caller's prefix */
        }
        size_t a = nc ? first_at_or_above_clock(&j->side[0], nl, cl[lo]) : 0;
        size_t b = nc ? first_at_or_above_clock(&j->side[1], nr, cl[lo]) : 0;
        xfree(cl);
        settle(j, &a, &b);
        if (a == 0 && b == 0) {
            out->len = out_len0;
            res->limit = rows > j->spec.max_rows ? "max_rows" : "max_response_bytes";
            return ERR_QUERY_LIMIT;
        }
        nl = a;
        nr = b;
        out->len = out_len0;
        rows = render(j, nl, nr, out, outer);
        res->cut_by_rows = true;
    }
    if (!sbuf_ok(out)) {
        out->len = out_len0;
        if (out->too_big) {
            res->limit = "max_response_bytes";
            return ERR_QUERY_LIMIT;
        }
        return ERR_NOMEM;
    }
    if (j->full_limit && nl == 0 && nr == 0 && (j->side[0].nnew || j->side[1].nnew)) {
        out->len = out_len0;
        res->limit = j->full_limit;
        return ERR_QUERY_LIMIT;
    }

    size_t nn[2] = {nl, nr};
    for (int s = 0; s < 2; s++) {
        const struct jside *d = &j->side[s];
        res->next_offset[s] = nn[s] < d->nnew ? d->e[nn[s]].offset : ends[s].next_offset;
        side_stats(j, s, nn[s], &res->side[s]);
        res->side[s].outer = outer[s];
    }
    res->rows = rows;
    res->pairs = rows - outer[0] - outer[1];
    res->state_records_peak = j->records_peak;
    res->state_bytes_peak = j->bytes_peak;
    for (int s = 0; s < 2; s++) {
        if (ends[s].at_log_end || !j->side[s].any_new)
            continue;
        int64_t wm = sat_add(j->side[s].max_clock, -j->spec.allowed_lateness_ms);
        if (!res->has_watermark || wm < res->watermark_ms)
            res->watermark_ms = wm;
        res->has_watermark = true;
    }
    return 0;
}

