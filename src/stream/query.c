/* query.c -- the bounded query engine (query.h): feed and finish, the hot path. Semantics in
 * docs/STREAM.md; the plan and the state it runs on are in query_int.h.
 *
 *   request --compile--> plan: fields[] (each payload path extracted once per record),
 *   (query_compile.c)          filter program (nodes[], AND/ANY tree), measures, windows,
 *                              projection, order keys
 *   record --feed--> time range? --> decode (one scan, all paths) --> filter --> matched
 *                                                                         |--> rows (kept, top-N)
 *                                                                         '--> windows x group
 *                                                                              --> measures
 *   finish --> rows (ordered, limited), aggregates (ordered, limited), stats
 *   follow: the same feed steps (sq_eval, sq_find_group, sq_update_measures) incrementally,
 *   (query_follow.c)  results as events
 *
 * Invariants:
 *  1. Every record fed is counted exactly once in stats: out_of_range, skipped_parse,
 *     skipped_decode, or scanned-and-decoded (then matched or not). Records dropped from a window
 *     count in late (and late_windows); records without a usable time in missing_time. Nothing is
 *     dropped without a counter.
 *  2. Memory is bounded: the plan and group state live in one arena capped at max_memory_bytes;
 *     kept rows are at most 2 * emit_rows at any time (sorted and cut when they reach that) and
 *     their bytes at most max_response_bytes; the group table at most max_groups entries.
 *  3. No value that points into a record survives the feed call: group keys, distinct values and
 *     row sort keys are copied (unescaped) into q's own memory.
 *  4. Output order is deterministic: every sort breaks ties by arrival sequence.
 *
 * The feed loop keeps its helpers in this file (or static inline in query_int.h) so that they
 * inline into squery_feed; bench/query_bench.c (make bench-query) measures it.
 */
#include "stream/query_int.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/assert.h"
#include "base/err.h"
#include "stream/fmt/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Feed: partitions (the watermark is the minimum over them)                                   */
/* ------------------------------------------------------------------------------------------ */

static struct pwm *pw_get(struct squery *q, uint32_t part, bool create)
{
    for (uint32_t i = 0; i < q->npw; i++)
        if (q->pw[i].partition == part)
            return &q->pw[i];
    if (!create)
        return NULL;
    if (q->npw == q->cap_pw) {
        uint32_t cap = q->cap_pw ? q->cap_pw * 2 : 8;
        if (cap > SQUERY_PARTITIONS_MAX * 2)
            return NULL;
        struct pwm *n = xrealloc(q->pw, cap * sizeof *n);
        if (!n)
            return NULL;
        q->pw = n;
        q->cap_pw = cap;
    }
    q->pw[q->npw] = (struct pwm){part, false, INT64_MIN};
    return &q->pw[q->npw++];
}

int squery_expect_partitions(struct squery *q, const uint32_t *parts, size_t n)
{
    if (n > SQUERY_PARTITIONS_MAX)
        return sq_limit_err(q, "partitions", SQUERY_PARTITIONS_MAX);
    for (size_t i = 0; i < n; i++)
        if (!pw_get(q, parts[i], true))
            return ERR_NOMEM;
    q->declared = true;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Feed: filter                                                                                */
/* ------------------------------------------------------------------------------------------ */

static bool is_nullish(const struct sval *v) { return v->type == SV_MISSING || v->type == SV_NULL; }

struct contains_ctx {
    const struct sval *needle;
    bool found;
};

static bool contains_visit(void *ctx, const struct sval *v)
{
    struct contains_ctx *c = ctx;
    if (sval_eq(v, c->needle)) {
        c->found = true;
        return false;
    }
    return true;
}

static bool eval_contains(struct squery *q, const struct sval *v, const struct sval *needle)
{
    if (v->type == SV_STR && needle->type == SV_STR) {
        struct sval u = *v;
        if (u.escaped && sval_unescape(&u, &q->scratch))
            return false;
        if (needle->len == 0)
            return true;
        return u.len >= needle->len && memmem(u.p, u.len, needle->p, needle->len) != NULL;
    }
    if (v->type == SV_JSON && v->len > 0 && v->p[0] == '[') {
        struct contains_ctx c = {needle, false};
        json_scan_array((const uint8_t *)v->p, v->len, contains_visit, &c);
        return c.found;
    }
    return false;
}

bool sq_eval(struct squery *q, uint32_t ni)
{
    const struct qnode *n = &q->nodes[ni];
    if (n->op == OP_ALL) {
        for (uint32_t k = 0; k < n->nkid; k++)
            if (!sq_eval(q, q->kids[n->kid0 + k]))
                return false;
        return true;
    }
    if (n->op == OP_ANY) {
        for (uint32_t k = 0; k < n->nkid; k++)
            if (sq_eval(q, q->kids[n->kid0 + k]))
                return true;
        return false;
    }
    const struct sval *v = &q->vals[n->field];
    if (n->num_exact && v->type == SV_DOUBLE) {
        /* The operand's value is exactly operand_d (an int within +-2^53 or a double), so the
         * IEEE comparison is sval_cmp's exact one; a NaN field is unordered and unequal in both
         * (ne is true, as !sval_eq). */
        double d = v->d, o = n->operand_d;
        switch (n->op) {
        case OP_EQ: return d == o;
        case OP_NE: return d != o;
        case OP_LT: return d < o;
        case OP_LE: return d <= o;
        case OP_GT: return d > o;
        case OP_GE: return d >= o;
        default: break;
        }
    }
    int c;
    switch (n->op) {
    case OP_EQ:
        return sval_eq(v, &n->operand);
    case OP_NE:
        return !is_nullish(v) && !sval_eq(v, &n->operand);
    case OP_LT:
        return sval_cmp(v, &n->operand, &c) && c < 0;
    case OP_LE:
        return sval_cmp(v, &n->operand, &c) && c <= 0;
    case OP_GT:
        return sval_cmp(v, &n->operand, &c) && c > 0;
    case OP_GE:
        return sval_cmp(v, &n->operand, &c) && c >= 0;
    case OP_IN:
    case OP_NIN: {
        if (is_nullish(v))
            return false;
        bool in = false;
        for (uint32_t k = 0; k < n->nlist && !in; k++)
            in = sval_eq(v, &n->list[k]);
        return n->op == OP_IN ? in : !in;
    }
    case OP_CONTAINS:
        return eval_contains(q, v, &n->operand);
    case OP_EXISTS:
        return (v->type != SV_MISSING) != n->negate;
    case OP_IS_NULL:
        return is_nullish(v) != n->negate;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Feed: values, rows                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* Total order for sorting: null < bool < number < string < bytes < json. */
static int sort_class(const struct sval *v)
{
    switch (v->type) {
    case SV_MISSING:
    case SV_NULL: return 0;
    case SV_BOOL: return 1;
    case SV_INT:
    case SV_DOUBLE: return 2;
    case SV_STR: return 3;
    case SV_BYTES: return 4;
    default: return 5;
    }
}

static int sort_cmp(const struct sval *a, const struct sval *b)
{
    int ca = sort_class(a), cb = sort_class(b);
    if (ca != cb)
        return ca < cb ? -1 : 1;
    if (ca == 0)
        return 0;
    int c;
    if (sval_cmp(a, b, &c))
        return c;
    /* json (or NaN): by text */
    size_t n = a->len < b->len ? a->len : b->len;
    c = n ? memcmp(a->p, b->p, n) : 0;
    return c ? c : (a->len < b->len ? -1 : a->len > b->len ? 1 : 0);
}

/* Equality for group keys: null and missing are one group; json by text. */
static bool key_eq(const struct sval *a, const struct sval *b)
{
    if (is_nullish(a) || is_nullish(b))
        return is_nullish(a) && is_nullish(b);
    if (a->type == SV_JSON || b->type == SV_JSON)
        return a->type == b->type && a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
    return sval_eq(a, b);
}

/* Copy v (unescaped) into the arena. */
static int copy_val(struct arena *a, struct sval *v)
{
    if (!sq_has_bytes(v))
        return 0;
    if (v->type == SV_STR && v->escaped)
        return sval_unescape(v, a);
    char *p = arena_alloc(a, v->len ? v->len : 1);
    if (!p)
        return ERR_NOMEM;
    if (v->len)
        memcpy(p, v->p, v->len);
    v->p = p;
    return 0;
}

static int rows_cmp_q(const void *a, const void *b, void *ctx)
{
    const struct squery *q = ctx;
    const struct row *x = a, *y = b;
    for (uint32_t i = 0; i < q->nrow_order; i++) {
        int c = sort_cmp(&x->keys[i], &y->keys[i]);
        if (c)
            return q->row_order[i].desc ? -c : c;
    }
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int keep_row(struct squery *q, const struct srec *r, struct sbuf *tmp)
{
    (void)r;
    if (q->nrow_order == 0 && q->nrows >= q->emit_rows) {
        q->rows_truncated = true;
        return 0;
    }
    if (q->nrows == q->cap_rows) {
        size_t cap = q->cap_rows ? q->cap_rows * 2 : 16;
        struct row *n = xrealloc(q->rows, cap * sizeof *n);
        if (!n)
            return ERR_NOMEM;
        q->rows = n;
        q->cap_rows = cap;
    }
    /* one block: sort keys, their bytes, the row's JSON */
    size_t need = q->nrow_order * sizeof(struct sval) + tmp->len;
    struct sval keys[16];
    for (uint32_t i = 0; i < q->nrow_order; i++) {
        keys[i] = q->vals[q->row_order[i].idx];
        if (keys[i].type == SV_STR && keys[i].escaped && sval_unescape(&keys[i], &q->scratch))
            return sq_limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        if (sq_has_bytes(&keys[i]))
            need += keys[i].len;
    }
    uint8_t *blk = xmalloc(need ? need : 1);
    if (!blk)
        return ERR_NOMEM;
    struct row *row = &q->rows[q->nrows++];
    row->seq = q->seq;
    row->keys = (struct sval *)blk;
    uint8_t *w = blk + q->nrow_order * sizeof(struct sval);
    for (uint32_t i = 0; i < q->nrow_order; i++) {
        row->keys[i] = keys[i];
        if (sq_has_bytes(&keys[i])) {
            if (keys[i].len)
                memcpy(w, keys[i].p, keys[i].len);
            row->keys[i].p = (const char *)w;
            w += keys[i].len;
        }
    }
    row->data = blk;
    memcpy(w, tmp->data, tmp->len);
    row->len = tmp->len;
    /* data pointer: the JSON starts at w; keep the offset through len bookkeeping */
    row->data = w;
    q->rows_bytes += tmp->len;
    if (q->rows_bytes > q->lim.max_response_bytes)
        return sq_limit_err(q, "max_response_bytes", q->lim.max_response_bytes);
    if (q->nrow_order && q->emit_rows && q->nrows >= 2 * q->emit_rows) {
        /* free the blocks, not the json pointers: the block starts at keys */
        qsort_r(q->rows, q->nrows, sizeof *q->rows, rows_cmp_q, q);
        for (size_t i = q->emit_rows; i < q->nrows; i++) {
            q->rows_bytes -= q->rows[i].len;
            xfree(q->rows[i].keys);
        }
        q->nrows = q->emit_rows;
        q->rows_truncated = true;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Feed: aggregates                                                                            */
/* ------------------------------------------------------------------------------------------ */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static int table_grow(struct squery *q)
{
    uint32_t cap = q->table_cap ? q->table_cap * 2 : 64;
    struct group **t = xcalloc(cap, sizeof *t);
    if (!t)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < q->table_cap; i++) {
        struct group *g = q->table[i];
        if (!g)
            continue;
        uint32_t k = (uint32_t)g->hash & (cap - 1);
        while (t[k])
            k = (k + 1) & (cap - 1);
        t[k] = g;
    }
    xfree(q->table);
    q->table = t;
    q->table_cap = cap;
    return 0;
}

int sq_find_group(struct squery *q, int64_t wstart, struct group **out)
{
    uint64_t h = q->windowed ? mix((uint64_t)wstart ^ 0xabcdef) : 0x1234;
    for (uint32_t i = 0; i < q->ngroup_by; i++)
        h = sval_hash(&q->vals[q->group_by[i]], h);
    if (q->table_cap == 0 || (q->ngroups + 1) * 4 > q->table_cap * 3) {
        int rc = table_grow(q);
        if (rc)
            return rc;
    }
    uint32_t k = (uint32_t)h & (q->table_cap - 1);
    for (struct group *g; (g = q->table[k]); k = (k + 1) & (q->table_cap - 1)) {
        if (g->hash != h || g->wstart != wstart)
            continue;
        bool eq = true;
        for (uint32_t i = 0; i < q->ngroup_by && eq; i++)
            eq = key_eq(&g->keys[i], &q->vals[q->group_by[i]]);
        if (eq) {
            *out = g;
            return 0;
        }
    }
    if (q->ngroups >= q->lim.max_groups)
        return sq_limit_err(q, "max_groups", q->lim.max_groups);
    if (q->fo) {
        int rc = sq_follow_new_group(q, h, wstart, out);
        if (rc)
            return rc;
        q->table[k] = *out;
        return 0;
    }
    struct group *g = arena_alloc(&q->arena, sizeof *g + q->nmeasures * sizeof(struct mstate));
    struct sval *keys = arena_alloc(&q->arena, (q->ngroup_by + 1) * sizeof *keys);
    if (!g || !keys)
        return sq_limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
    memset(g, 0, sizeof *g + q->nmeasures * sizeof(struct mstate));
    g->hash = h;
    g->wstart = wstart;
    g->seq = q->ngroups;
    g->keys = keys;
    for (uint32_t i = 0; i < q->ngroup_by; i++) {
        keys[i] = q->vals[q->group_by[i]];
        if (keys[i].type == SV_MISSING)
            keys[i].type = SV_NULL;
        if (copy_val(&q->arena, &keys[i]))
            return sq_limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
    }
    for (uint32_t m = 0; m < q->nmeasures; m++)
        g->m[m].mm.type = SV_MISSING;
    q->table[k] = g;
    if (q->ngroups == q->glist_cap) {
        uint32_t cap = q->glist_cap ? q->glist_cap * 2 : 64;
        struct group **n = xrealloc(q->glist, cap * sizeof *n);
        if (!n)
            return ERR_NOMEM;
        q->glist = n;
        q->glist_cap = cap;
    }
    q->glist[q->ngroups++] = g;
    *out = g;
    return 0;
}

static int dset_add(struct squery *q, struct dset *s, const struct sval *v0)
{
    struct sval v = *v0;
    uint64_t h = sval_hash(&v, 77);
    if (s->cap == 0 || (s->count + 1) * 4 > s->cap * 3) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        struct dent *e = xcalloc(cap, sizeof *e);
        if (!e)
            return ERR_NOMEM;
        for (uint32_t i = 0; i < s->cap; i++) {
            if (s->e[i].v.type == SV_MISSING)
                continue;
            uint32_t k = (uint32_t)s->e[i].h & (cap - 1);
            while (e[k].v.type != SV_MISSING)
                k = (k + 1) & (cap - 1);
            e[k] = s->e[i];
        }
        xfree(s->e);
        s->e = e;
        s->cap = cap;
    }
    uint32_t k = (uint32_t)h & (s->cap - 1);
    for (; s->e[k].v.type != SV_MISSING; k = (k + 1) & (s->cap - 1))
        if (s->e[k].h == h && key_eq(&s->e[k].v, &v))
            return 0;
    if (q->distinct_total >= q->lim.max_distinct_values)
        return sq_limit_err(q, "max_distinct_values", q->lim.max_distinct_values);
    if (q->fo ? sq_follow_copy_val(q, &v) : copy_val(&q->arena, &v))
        return sq_limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
    s->e[k].h = h;
    s->e[k].v = v;
    s->count++;
    q->distinct_total++;
    return 0;
}

int sq_update_measures(struct squery *q, struct group *g)
{
    for (uint32_t i = 0; i < q->nmeasures; i++) {
        const struct qmeasure *m = &q->measures[i];
        struct mstate *st = &g->m[i];
        if (m->field < 0) {
            st->n++;
            continue;
        }
        const struct sval *v = &q->vals[m->field];
        switch (m->op) {
        case M_COUNT:
            if (!is_nullish(v))
                st->n++;
            break;
        case M_SUM:
        case M_AVG:
            if (v->type == SV_INT) {
                st->n++;
                int64_t r;
                if (st->dbl) {
                    st->dsum += (double)v->i;
                } else if (__builtin_add_overflow(st->isum, v->i, &r)) {
                    /* the int64 sum overflowed: it continues as a double (documented) */
                    st->dbl = true;
                    st->dsum = (double)st->isum + (double)v->i;
                } else {
                    st->isum = r;
                }
            } else if (v->type == SV_DOUBLE && isfinite(v->d)) {
                st->n++;
                if (!st->dbl) {
                    st->dbl = true;
                    st->dsum = (double)st->isum;
                }
                st->dsum += v->d;
            }
            break;
        case M_MIN:
        case M_MAX:
            if (v->type == SV_INT || (v->type == SV_DOUBLE && isfinite(v->d))) {
                int c;
                if (st->mm.type == SV_MISSING || (sval_cmp(v, &st->mm, &c) &&
                                                  (m->op == M_MIN ? c < 0 : c > 0)))
                    st->mm = *v;
                st->n++;
            }
            break;
        case M_COUNT_DISTINCT:
            if (!is_nullish(v)) {
                int rc = dset_add(q, &st->set, v);
                if (rc)
                    return rc;
            }
            break;
        }
    }
    return 0;
}

/* Advance the watermark with event time t of partition p; returns the watermark before. */
static void watermark_after(struct squery *q, uint32_t part, int64_t t)
{
    struct pwm *w = pw_get(q, part, !q->declared);
    if (!w)
        return; /* an undeclared partition (or too many) does not move the watermark */
    if (w->seen && t <= w->max_ms)
        return;
    w->seen = true;
    w->max_ms = t;
    int64_t min = INT64_MAX;
    for (uint32_t i = 0; i < q->npw; i++) {
        if (!q->pw[i].seen)
            return; /* a partition not read yet holds the watermark back */
        if (q->pw[i].max_ms < min)
            min = q->pw[i].max_ms;
    }
    int64_t wm = min - q->lateness_ms;
    if (!q->have_wm || wm > q->watermark) {
        q->watermark = wm;
        q->have_wm = true;
    }
}

static int aggregate(struct squery *q, const struct srec *r)
{
    struct group *g;
    if (!q->windowed) {
        int rc = sq_find_group(q, 0, &g);
        return rc ? rc : sq_update_measures(q, g);
    }
    int64_t t;
    if (q->time_field < 0) {
        t = r->timestamp_ms;
    } else {
        const struct sval *v = &q->vals[q->time_field];
        if (v->type == SV_INT) {
            t = v->i;
        } else if (v->type == SV_DOUBLE && isfinite(v->d) && fabs(v->d) < 9.0e15) {
            t = (int64_t)floor(v->d);
        } else {
            q->missing_time++;
            return 0;
        }
    }
    if (t > INT64_MAX / 2 || t < INT64_MIN / 2) {
        q->missing_time++;
        return 0;
    }
    bool late_any = false;
    int64_t last = sq_floor_div(t, q->advance_ms) * q->advance_ms;
    /* windows [s, s + size) containing t, oldest first */
    int64_t first = last;
    while (first - q->advance_ms + q->size_ms > t)
        first -= q->advance_ms;
    for (int64_t s = first; s <= last; s += q->advance_ms) {
        int64_t e = s + q->size_ms;
        if (q->have_wm && e <= q->watermark) {
            q->late_windows++;
            late_any = true;
            if (!q->late_include)
                continue;
        }
        int rc = sq_find_group(q, s, &g);
        if (rc)
            return rc;
        rc = sq_update_measures(q, g);
        if (rc)
            return rc;
    }
    if (late_any)
        q->late++;
    watermark_after(q, r->partition, t);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Feed                                                                                        */
/* ------------------------------------------------------------------------------------------ */


int squery_feed(struct squery *q, const struct srec *r)
{
    if (q->fo)
        return sq_follow_feed(q, r);
    q->seq++;
    if ((q->src.has_from_ms && r->timestamp_ms < q->src.from_ms) ||
        (q->src.has_to_ms && r->timestamp_ms >= q->src.to_ms)) {
        q->out_of_range++;
        return 0;
    }
    q->scanned++;
    if (q->scratch.used_bytes)
        arena_reset(&q->scratch);
    const char *why = NULL;
    int rc = q->fmt->ops->extract(q->fmt, r->value, q->paths, q->npaths, q->pvals, &q->scratch, &why);
    if (rc) {
        if (rc == ERR_CORRUPT) {
            q->skipped_parse++;
            sq_note_skip(q, r, why ? why : "does not parse");
        } else if (rc == ERR_INVALID) {
            q->skipped_decode++;
            sq_note_skip(q, r, why ? why : "does not decode");
        } else {
            return sq_limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        }
        return 0;
    }
    for (uint32_t i = 0; i < q->nfields; i++) {
        const struct qfield *f = &q->fields[i];
        if (f->path >= 0)
            q->vals[i] = q->pvals[f->path];
        else
            srec_meta(r, f->meta, f->header, &q->vals[i]);
    }
    if (q->root >= 0 && !sq_eval(q, (uint32_t)q->root))
        return 0;
    q->matched++;
    if (q->emit_rows && !(q->nrow_order == 0 && q->nrows >= q->emit_rows)) {
        struct sbuf tmp;
        sbuf_init(&tmp, 0);
        if (q->rows_raw) {
            rc = q->fmt->ops->to_json(q->fmt, r->value, &tmp, &q->scratch, &why);
        } else {
            struct jw w;
            jw_init(&w, &tmp);
            jw_obj_open(&w);
            for (uint32_t i = 0; i < q->nsel; i++) {
                jw_keyn(&w, (const uint8_t *)q->sel[i].as, strlen(q->sel[i].as));
                sval_write_json(&w, &q->vals[q->sel[i].field]);
            }
            jw_obj_close(&w);
            rc = sbuf_ok(&tmp) ? 0 : ERR_NOMEM;
        }
        if (rc == 0)
            rc = keep_row(q, r, &tmp);
        sbuf_free(&tmp);
        if (rc)
            return rc;
    } else if (q->emit_rows) {
        q->rows_truncated = true;
    }
    if (q->aggregate)
        return aggregate(q, r);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Finish                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void measure_value(const struct qmeasure *m, const struct mstate *st, struct sval *out)
{
    memset(out, 0, sizeof *out);
    out->type = SV_NULL;
    switch (m->op) {
    case M_COUNT:
        out->type = SV_INT;
        out->i = st->n;
        break;
    case M_SUM:
        if (st->n == 0)
            break;
        if (st->dbl) {
            out->type = SV_DOUBLE;
            out->d = st->dsum;
        } else {
            out->type = SV_INT;
            out->i = st->isum;
        }
        break;
    case M_AVG:
        if (st->n == 0)
            break;
        out->type = SV_DOUBLE;
        out->d = (st->dbl ? st->dsum : (double)st->isum) / (double)st->n;
        break;
    case M_MIN:
    case M_MAX:
        if (st->mm.type != SV_MISSING)
            *out = st->mm;
        break;
    case M_COUNT_DISTINCT:
        out->type = SV_INT;
        out->i = st->set.count;
        break;
    }
}

/* Key text as the original wrote it: "f1=v1|f2=v2" (strings raw, null as null). */
static void key_text(const struct squery *q, const struct group *g, struct sbuf *b)
{
    for (uint32_t i = 0; i < q->ngroup_by; i++) {
        if (i)
            sbuf_putc(b, '|');
        sbuf_puts(b, q->fields[q->group_by[i]].text);
        sbuf_putc(b, '=');
        const struct sval *v = &g->keys[i];
        switch (v->type) {
        case SV_STR:
        case SV_JSON:
            sbuf_append(b, v->p, v->len);
            break;
        case SV_INT:
            sbuf_put_i64(b, v->i);
            break;
        case SV_DOUBLE: {
            char t[SVAL_DOUBLE_CHARS];
            sbuf_append(b, t, sval_fmt_double(t, v->d));
            break;
        }
        case SV_BOOL:
            sbuf_puts(b, v->b ? "true" : "false");
            break;
        case SV_BYTES: {
            struct jw w;
            size_t at = b->len;
            jw_init(&w, b);
            jw_b64(&w, (const uint8_t *)v->p, v->len);
            /* drop the quotes */
            memmove(b->data + at, b->data + at + 1, b->len - at - 2);
            b->len -= 2;
            break;
        }
        default:
            sbuf_puts(b, "null");
        }
    }
}

static int agg_key_cmp(const struct squery *q, const struct group *x, const struct group *y,
                       const struct okey *k)
{
    switch (k->kind) {
    case OK_GROUP:
        return sort_cmp(&x->keys[k->idx], &y->keys[k->idx]);
    case OK_MEASURE: {
        struct sval a, b;
        measure_value(&q->measures[k->idx], &x->m[k->idx], &a);
        measure_value(&q->measures[k->idx], &y->m[k->idx], &b);
        return sort_cmp(&a, &b);
    }
    case OK_WSTART:
    case OK_WEND:
        return x->wstart < y->wstart ? -1 : x->wstart > y->wstart;
    case OK_KEY: {
        struct sbuf a, b;
        sbuf_init(&a, 0);
        sbuf_init(&b, 0);
        key_text(q, x, &a);
        key_text(q, y, &b);
        size_t n = a.len < b.len ? a.len : b.len;
        int c = n ? memcmp(a.data, b.data, n) : 0;
        if (!c)
            c = a.len < b.len ? -1 : a.len > b.len;
        sbuf_free(&a);
        sbuf_free(&b);
        return c;
    }
    default:
        return 0;
    }
}

int sq_groups_cmp(const void *a, const void *b, void *ctx)
{
    const struct squery *q = ctx;
    const struct group *x = *(struct group *const *)a, *y = *(struct group *const *)b;
    for (uint32_t i = 0; i < q->nagg_order; i++) {
        int c = agg_key_cmp(q, x, y, &q->agg_order[i]);
        if (c)
            return q->agg_order[i].desc ? -c : c;
    }
    if (q->nagg_order == 0 && q->windowed && x->wstart != y->wstart)
        return x->wstart < y->wstart ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* One aggregate row: {"key","group",["window_start_ms","window_end_ms",]measures...}. */
void sq_write_agg(const struct squery *q, struct jw *w, const struct group *g, struct sbuf *kb)
{
    jw_obj_open(w);
    kb->len = 0;
    key_text(q, g, kb);
    jw_key(w, "key");
    jw_strn(w, kb->data ? kb->data : (const uint8_t *)"", kb->len);
    jw_key(w, "group");
    jw_obj_open(w);
    for (uint32_t k = 0; k < q->ngroup_by; k++) {
        const char *t = q->fields[q->group_by[k]].text;
        jw_keyn(w, (const uint8_t *)t, strlen(t));
        sval_write_json(w, &g->keys[k]);
    }
    jw_obj_close(w);
    if (q->windowed) {
        jw_ki64(w, "window_start_ms", g->wstart);
        jw_ki64(w, "window_end_ms", g->wstart + q->size_ms);
    }
    for (uint32_t m = 0; m < q->nmeasures; m++) {
        struct sval v;
        measure_value(&q->measures[m], &g->m[m], &v);
        jw_keyn(w, (const uint8_t *)q->measures[m].as, strlen(q->measures[m].as));
        sval_write_json(w, &v);
    }
    jw_obj_close(w);
}

/* The stats members a bounded call and a follow query share (docs/STREAM.md "Stats"). */
void sq_write_common_stats(const struct squery *q, struct jw *w)
{
    jw_ku64(w, "scanned", q->scanned + q->out_of_range);
    jw_ku64(w, "decoded", q->scanned - q->skipped_parse - q->skipped_decode);
    jw_ku64(w, "matched", q->matched);
    jw_ku64(w, "skipped_parse", q->skipped_parse);
    jw_ku64(w, "skipped_decode", q->skipped_decode);
    jw_ku64(w, "out_of_time_range", q->out_of_range);
    jw_ku64(w, "missing_time", q->missing_time);
    jw_ku64(w, "late", q->late);
    jw_ku64(w, "late_windows", q->late_windows);
    jw_kstr(w, "late_policy", q->late_include ? "include" : "drop");
    if (q->windowed) {
        jw_key(w, "watermark_ms");
        if (q->have_wm)
            jw_i64(w, q->watermark);
        else
            jw_null(w);
    }
    jw_ku64(w, "groups", q->ngroups);
}

int squery_finish(struct squery *q, struct jw *w)
{
    size_t start = w->out->len;
    jw_key(w, "rows");
    jw_arr_open(w);
    if (q->nrow_order && q->nrows > 1) {
        qsort_r(q->rows, q->nrows, sizeof *q->rows, rows_cmp_q, q);
        if (q->nrows > q->emit_rows)
            q->rows_truncated = true;
    }
    size_t nrows = q->nrows < q->emit_rows ? q->nrows : q->emit_rows;
    for (size_t i = 0; i < nrows; i++)
        jw_rawn(w, q->rows[i].data, q->rows[i].len);
    jw_arr_close(w);

    jw_key(w, "aggregates");
    jw_arr_open(w);
    uint64_t nagg = 0;
    if (q->aggregate) {
        if (q->ngroups > 1)
            qsort_r(q->glist, q->ngroups, sizeof *q->glist, sq_groups_cmp, q);
        struct sbuf kb;
        sbuf_init(&kb, 0);
        for (uint32_t i = 0; i < q->ngroups && nagg < q->agg_limit; i++, nagg++) {
            sq_write_agg(q, w, q->glist[i], &kb);
            if (w->out->len - start > q->lim.max_response_bytes) {
                sbuf_free(&kb);
                return sq_limit_err(q, "max_response_bytes", q->lim.max_response_bytes);
            }
        }
        sbuf_free(&kb);
    }
    jw_arr_close(w);

    jw_key(w, "stats");
    jw_obj_open(w);
    sq_write_common_stats(q, w);
    jw_ku64(w, "rows_emitted", nrows);
    jw_kbool(w, "rows_truncated", q->emit_rows > 0 && q->matched > nrows);
    jw_kbool(w, "aggregates_truncated", nagg < q->ngroups);
    if (q->have_first_skip) {
        jw_key(w, "first_skipped");
        jw_obj_open(w);
        jw_ku64(w, "partition", q->first_skip_partition);
        jw_ku64(w, "offset", q->first_skip_offset);
        jw_kstr(w, "reason", q->first_skip_reason);
        jw_obj_close(w);
    }
    jw_obj_close(w);
    if (!sbuf_ok(w->out))
        return ERR_NOMEM;
    if (w->out->len - start > q->lim.max_response_bytes)
        return sq_limit_err(q, "max_response_bytes", q->lim.max_response_bytes);
    return 0;
}

void squery_free(struct squery *q)
{
    if (!q)
        return;
    if (q->fo)
        sq_follow_free(q); /* frees its groups (heap blocks) and sets ngroups = 0 */
    for (size_t i = 0; i < q->nrows; i++)
        xfree(q->rows[i].keys);
    xfree(q->rows);
    for (uint32_t i = 0; i < q->ngroups; i++)
        for (uint32_t m = 0; m < q->nmeasures; m++)
            xfree(q->glist[i]->m[m].set.e);
    xfree(q->glist);
    xfree(q->table);
    xfree(q->pw);
    arena_free(&q->arena);
    arena_free(&q->scratch);
    xfree(q);
}
