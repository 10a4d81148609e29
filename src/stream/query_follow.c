/* query_follow.c -- follow mode (continuous queries) of the query engine (query.h, protocol
 * F1..F5 there): the plan compiled by query_compile.c, fed incrementally by the per-record steps
 * query.c shares (sq_eval, sq_find_group, sq_update_measures); results are queued as events.
 *
 * The same plan over an unbounded input (docs/STREAM.md "Continuous queries"):
 *
 *   feed --> (resume replay? no output) --> filter --> ROW event (at once)
 *                                                 '--> windows: late? --> LATE event / counted
 *                                                                  '--> group state, fwin offsets
 *            max event time of the partition --> watermark --> close windows --> AGGREGATE events
 *   tick(now) --> idle partitions leave the min; all idle: now stands in --> close windows
 *             --> no window: each group changed since the last tick --> AGGREGATE event
 *   drain --> events in queue order to the host
 *
 * Invariants (enforced by tests/unit/test_stream_follow.c):
 *  F1. A window's aggregate rows are queued once: a window closes when end <= watermark, the
 *      watermark never moves back, and a record assigned to a window with end <= watermark is late:
 *      it never creates or changes state of that window (counted in late/late_windows, and queued as
 *      a LATE event when the policy is "include").
 *  F2. Memory is bounded: a follow group is one heap block (plus its distinct values), freed when
 *      its window's rows are queued; fo->bytes counts them and the open-window offsets against
 *      max_memory_bytes, and at most max_groups are open. The event queue only grows by what one
 *      feed/tick yields; the host feeds while squery_pending_bytes is below its buffer.
 *  F3. Every event has a position: per partition the next offset, the offset a resume must
 *      re-read from (the smallest offset held by a window not yet queued; the start of the follow
 *      for window-less aggregates; else the next offset) and the max event time; plus wm_closed,
 *      the watermark up to which every window's rows were queued before this event. A resume
 *      re-reads from the "from" offsets with the watermark frozen at wm_closed, rebuilds the open
 *      windows without output (replay), and continues at the next offsets: rows are exact; a window
 *      cut in the middle of its rows is queued again whole.
 *  F4. Idle: a partition the host reports at its log end for idle_timeout_ms with no record since
 *      leaves the minimum; it rejoins with its next record (which may then be late: counted). When
 *      every partition is idle, the host's clock stands in for the event time of records not yet
 *      written: watermark = now - allowed_lateness (exact when event time is the append time),
 *      but never past the end of the latest open window: the clock only closes windows that are
 *      due, it does not make later records with older (e.g. replayed) event times late.
 *
 * Follow groups live in the same table and list as the bounded path's (q->table, q->glist) and are
 * found by the same sq_find_group, but each is its own heap block (sq_follow_new_group) so that a
 * closed window's groups can be freed one by one (F2); the bounded path's arena never shrinks.
 */
#include "stream/query_int.h"

#include "base/alloc.h"
#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- state ---- */

struct fpart {
    uint32_t partition;
    bool seen; /* max_ms is valid */
    bool idle;
    uint64_t next;      /* after the last record fed, or the start */
    uint64_t start;     /* where the follow started (window-less aggregates resume from here) */
    uint64_t replay_to; /* records below this offset are a resume's replay */
    int64_t max_ms;
    int64_t caught_up_ms; /* INT64_MIN: not known to be at its log end */
};

struct fwin {
    int64_t wstart;
    uint64_t *min_off; /* per fpart index: smallest offset in this window; UINT64_MAX: none */
};

enum { FG_DIRTY = 1 };
#define FOLLOW_EV_HDR 9 /* type (1), data length (4), position length (4) */

struct follow {
    struct squery_follow_opts opt;
    bool begun;
    struct fpart *parts; /* sorted by partition */
    uint32_t nparts;
    struct fwin *wins; /* open windows, sorted by start */
    uint32_t nwins, cap_wins;
    bool have_wmc;
    int64_t wm_closed;
    int64_t now_ms;
    uint32_t gseq;
    uint64_t bytes; /* groups, distinct values, window offsets */
    struct group **dirty;
    uint32_t ndirty, cap_dirty;
    struct sbuf evq; /* queued events from evq_head */
    size_t evq_head, nev;
    struct sbuf tmp, pos, kb;
    struct late_win { int64_t s; } *lw;
    uint32_t cap_lw;
    /* a resume position, parsed before begin */
    bool resume;
    bool r_have_wm;
    int64_t r_wm;
    struct fpart *rparts;
    uint32_t nrparts;
    /* stats */
    uint64_t rows, aggs, late_events, replayed, limit_records;
};

const struct squery_follow_opts *squery_follow(const struct squery *q)
{
    return q->fo ? &q->fo->opt : NULL;
}

int sq_follow_init(struct squery *q, const struct squery_follow_opts *o)
{
    q->fo = xcalloc(1, sizeof *q->fo);
    if (!q->fo)
        return ERR_NOMEM;
    q->fo->opt = *o;
    sbuf_init(&q->fo->evq, 0);
    sbuf_init(&q->fo->tmp, 0);
    sbuf_init(&q->fo->pos, 0);
    sbuf_init(&q->fo->kb, 0);
    return 0;
}

static void follow_free_group(struct squery *q, struct group *g)
{
    for (uint32_t m = 0; m < q->nmeasures; m++) {
        struct dset *set = &g->m[m].set;
        for (uint32_t i = 0; i < set->cap; i++)
            if (set->e[i].v.type != SV_MISSING && sq_has_bytes(&set->e[i].v)) {
                q->fo->bytes -= set->e[i].v.len ? set->e[i].v.len : 1;
                xfree((void *)set->e[i].v.p);
            }
        xfree(set->e);
    }
    q->fo->bytes -= sizeof *g + q->nmeasures * sizeof(struct mstate) +
                    q->ngroup_by * sizeof(struct sval);
    for (uint32_t i = 0; i < q->ngroup_by; i++)
        if (sq_has_bytes(&g->keys[i]))
            q->fo->bytes -= g->keys[i].len;
    xfree(g);
}

void sq_follow_free(struct squery *q)
{
    struct follow *fo = q->fo;
    for (uint32_t i = 0; i < q->ngroups; i++)
        follow_free_group(q, q->glist[i]);
    q->ngroups = 0;
    for (uint32_t i = 0; i < fo->nwins; i++)
        xfree(fo->wins[i].min_off);
    xfree(fo->wins);
    xfree(fo->parts);
    xfree(fo->rparts);
    xfree(fo->dirty);
    xfree(fo->lw);
    sbuf_free(&fo->evq);
    sbuf_free(&fo->tmp);
    sbuf_free(&fo->pos);
    sbuf_free(&fo->kb);
    xfree(fo);
    q->fo = NULL;
}

static bool follow_mem(struct squery *q, uint64_t add)
{
    if (q->fo->bytes + add > q->lim.max_memory_bytes)
        return false;
    q->fo->bytes += add;
    return true;
}

/* A group as one heap block: the group, its measures, its keys and their bytes (F2). */
int sq_follow_new_group(struct squery *q, uint64_t h, int64_t wstart, struct group **out)
{
    size_t head = sizeof(struct group) + q->nmeasures * sizeof(struct mstate);
    size_t need = head + q->ngroup_by * sizeof(struct sval);
    struct sval keys[16];
    for (uint32_t i = 0; i < q->ngroup_by; i++) {
        keys[i] = q->vals[q->group_by[i]];
        if (keys[i].type == SV_MISSING)
            keys[i].type = SV_NULL;
        if (keys[i].type == SV_STR && keys[i].escaped && sval_unescape(&keys[i], &q->scratch))
            return sq_limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        if (sq_has_bytes(&keys[i]))
            need += keys[i].len;
    }
    if (!follow_mem(q, need))
        return sq_limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
    struct group *g = xcalloc(1, need);
    if (!g) {
        q->fo->bytes -= need;
        return ERR_NOMEM;
    }
    if (q->ngroups == q->glist_cap) {
        uint32_t cap = q->glist_cap ? q->glist_cap * 2 : 64;
        struct group **n = xrealloc(q->glist, cap * sizeof *n);
        if (!n) {
            q->fo->bytes -= need;
            xfree(g);
            return ERR_NOMEM;
        }
        q->glist = n;
        q->glist_cap = cap;
    }
    g->hash = h;
    g->wstart = wstart;
    g->seq = q->fo->gseq++;
    g->keys = (struct sval *)((uint8_t *)g + head);
    char *w = (char *)(g->keys + q->ngroup_by);
    for (uint32_t i = 0; i < q->ngroup_by; i++) {
        g->keys[i] = keys[i];
        g->keys[i].escaped = false;
        if (sq_has_bytes(&keys[i])) {
            if (keys[i].len)
                memcpy(w, keys[i].p, keys[i].len);
            g->keys[i].p = w;
            w += keys[i].len;
        }
    }
    for (uint32_t m = 0; m < q->nmeasures; m++)
        g->m[m].mm.type = SV_MISSING;
    q->glist[q->ngroups++] = g;
    *out = g;
    return 0;
}

int sq_follow_copy_val(struct squery *q, struct sval *v)
{
    if (!sq_has_bytes(v))
        return 0;
    if (v->type == SV_STR && v->escaped && sval_unescape(v, &q->scratch))
        return ERR_NOMEM;
    size_t n = v->len ? v->len : 1;
    if (!follow_mem(q, n))
        return ERR_QUERY_LIMIT;
    char *p = xmalloc(n);
    if (!p) {
        q->fo->bytes -= n;
        return ERR_NOMEM;
    }
    if (v->len)
        memcpy(p, v->p, v->len);
    v->p = p;
    v->escaped = false;
    return 0;
}

/* Remove g from the open-addressing table (backward-shift deletion keeps probe chains intact). */
static void table_remove(struct squery *q, const struct group *g)
{
    uint32_t mask = q->table_cap - 1, i = (uint32_t)g->hash & mask;
    while (q->table[i] != g)
        i = (i + 1) & mask;
    for (uint32_t j = (i + 1) & mask; q->table[j]; j = (j + 1) & mask) {
        uint32_t home = (uint32_t)q->table[j]->hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            q->table[i] = q->table[j];
            i = j;
        }
    }
    q->table[i] = NULL;
}

static int fpart_cmp(const void *a, const void *b)
{
    uint32_t x = ((const struct fpart *)a)->partition, y = ((const struct fpart *)b)->partition;
    return x < y ? -1 : x > y;
}

static struct fpart *fpart_find(struct fpart *ps, uint32_t n, uint32_t part)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ps[mid].partition == part)
            return &ps[mid];
        if (ps[mid].partition < part)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool squery_follow_next(const struct squery *q, uint32_t part, uint64_t *next)
{
    if (!q->fo || !q->fo->begun)
        return false;
    const struct fpart *p = fpart_find(q->fo->parts, q->fo->nparts, part);
    if (!p)
        return false;
    *next = p->next;
    return true;
}

/* ---- positions ---- */

/* "1;<wm_closed|_>;<p>:<next>:<from>:<max_ms|_>,..." (F3) */
static void follow_position(struct squery *q, struct sbuf *b)
{
    struct follow *fo = q->fo;
    b->len = 0;
    sbuf_puts(b, "1;");
    if (fo->have_wmc)
        sbuf_put_i64(b, fo->wm_closed);
    else
        sbuf_putc(b, '_');
    sbuf_putc(b, ';');
    for (uint32_t i = 0; i < fo->nparts; i++) {
        const struct fpart *p = &fo->parts[i];
        uint64_t from = p->next;
        if (q->aggregate && !q->windowed) {
            from = p->start;
        } else {
            for (uint32_t w = 0; w < fo->nwins; w++)
                if (fo->wins[w].min_off[i] < from)
                    from = fo->wins[w].min_off[i];
        }
        if (i)
            sbuf_putc(b, ',');
        sbuf_put_u64(b, p->partition);
        sbuf_putc(b, ':');
        sbuf_put_u64(b, p->next);
        sbuf_putc(b, ':');
        sbuf_put_u64(b, from);
        sbuf_putc(b, ':');
        if (p->seen)
            sbuf_put_i64(b, p->max_ms);
        else
            sbuf_putc(b, '_');
    }
}

int squery_follow_position(struct squery *q, struct sbuf *out)
{
    if (!q->fo || !q->fo->begun)
        return ERR_INVALID;
    follow_position(q, out);
    return sbuf_ok(out) ? 0 : ERR_NOMEM;
}

static bool parse_i64(const char **s, const char *end, int64_t *out)
{
    const char *p = *s;
    bool neg = p < end && *p == '-';
    if (neg)
        p++;
    if (p >= end || *p < '0' || *p > '9')
        return false;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    *s = p;
    return true;
}

static bool parse_u64(const char **s, const char *end, uint64_t *out)
{
    const char *p = *s;
    if (p >= end || *p < '0' || *p > '9')
        return false;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    *out = v;
    *s = p;
    return true;
}

static bool eat(const char **s, const char *end, char c)
{
    if (*s < end && **s == c) {
        (*s)++;
        return true;
    }
    return false;
}

int squery_follow_resume(struct squery *q, const char *tok, size_t len)
{
    struct follow *fo = q->fo;
    if (!fo || fo->begun)
        return ERR_INVALID;
    const char *s = tok, *end = tok + len;
    if (!eat(&s, end, '1') || !eat(&s, end, ';'))
        return ERR_INVALID;
    fo->r_have_wm = !eat(&s, end, '_');
    if (fo->r_have_wm && !parse_i64(&s, end, &fo->r_wm))
        return ERR_INVALID;
    if (!eat(&s, end, ';'))
        return ERR_INVALID;
    uint32_t n = 0;
    for (const char *p = s; p < end; p++)
        n += *p == ',';
    n++;
    if (n > SQUERY_PARTITIONS_MAX)
        return ERR_INVALID;
    xfree(fo->rparts);
    fo->rparts = xcalloc(n, sizeof *fo->rparts);
    if (!fo->rparts)
        return ERR_NOMEM;
    fo->nrparts = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct fpart *p = &fo->rparts[i];
        uint64_t part;
        if (i && !eat(&s, end, ','))
            return ERR_INVALID;
        if (!parse_u64(&s, end, &part) || part > UINT32_MAX || !eat(&s, end, ':') ||
            !parse_u64(&s, end, &p->next) || !eat(&s, end, ':') ||
            !parse_u64(&s, end, &p->start) || !eat(&s, end, ':'))
            return ERR_INVALID;
        p->partition = (uint32_t)part;
        p->seen = !eat(&s, end, '_');
        if (p->seen && !parse_i64(&s, end, &p->max_ms))
            return ERR_INVALID;
        if (p->start > p->next)
            return ERR_INVALID;
        fo->nrparts++;
    }
    if (s != end)
        return ERR_INVALID;
    qsort(fo->rparts, fo->nrparts, sizeof *fo->rparts, fpart_cmp);
    for (uint32_t i = 1; i < fo->nrparts; i++)
        if (fo->rparts[i].partition == fo->rparts[i - 1].partition)
            return ERR_INVALID;
    fo->resume = true;
    return 0;
}

int squery_follow_begin(struct squery *q, const uint32_t *parts, uint64_t *offsets, size_t n,
                        int64_t now_ms)
{
    struct follow *fo = q->fo;
    if (!fo || fo->begun || n == 0 || n > SQUERY_PARTITIONS_MAX)
        return ERR_INVALID;
    fo->parts = xcalloc(n, sizeof *fo->parts);
    if (!fo->parts)
        return ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        fo->parts[i] = (struct fpart){.partition = parts[i], .next = offsets[i],
                                      .start = offsets[i], .max_ms = INT64_MIN,
                                      .caught_up_ms = INT64_MIN};
    fo->nparts = (uint32_t)n;
    qsort(fo->parts, n, sizeof *fo->parts, fpart_cmp);
    for (uint32_t i = 1; i < fo->nparts; i++)
        if (fo->parts[i].partition == fo->parts[i - 1].partition)
            return ERR_INVALID;
    if (fo->resume) {
        for (uint32_t i = 0; i < fo->nrparts; i++) {
            const struct fpart *r = &fo->rparts[i];
            struct fpart *p = fpart_find(fo->parts, fo->nparts, r->partition);
            if (!p)
                return ERR_INVALID; /* a position of another query */
            p->start = r->start;
            p->next = r->start;
            p->replay_to = r->next;
            p->seen = r->seen;
            p->max_ms = r->max_ms;
        }
        if (fo->r_have_wm && q->windowed) {
            q->have_wm = fo->have_wmc = true;
            q->watermark = fo->wm_closed = fo->r_wm;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct fpart *p = fpart_find(fo->parts, fo->nparts, parts[i]);
        offsets[i] = p->next;
    }
    fo->now_ms = now_ms;
    fo->begun = true;
    return 0;
}

/* ---- the event queue ---- */

static int follow_push(struct squery *q, enum squery_event_type type, const struct sbuf *data)
{
    struct follow *fo = q->fo;
    follow_position(q, &fo->pos);
    uint8_t hdr[FOLLOW_EV_HDR];
    hdr[0] = (uint8_t)type;
    put_le32(hdr + 1, (uint32_t)data->len);
    put_le32(hdr + 5, (uint32_t)fo->pos.len);
    sbuf_append(&fo->evq, hdr, sizeof hdr);
    sbuf_append(&fo->evq, data->data, data->len);
    sbuf_append(&fo->evq, fo->pos.data, fo->pos.len);
    if (!sbuf_ok(&fo->evq) || !sbuf_ok(&fo->pos) || !sbuf_ok(data))
        return ERR_NOMEM;
    fo->nev++;
    if (type == SQUERY_EV_ROW)
        fo->rows++;
    else if (type == SQUERY_EV_AGGREGATE)
        fo->aggs++;
    else
        fo->late_events++;
    return 0;
}

size_t squery_drain(struct squery *q, squery_emit_fn fn, void *ctx)
{
    struct follow *fo = q->fo;
    size_t taken = 0;
    if (!fo)
        return 0;
    while (fo->nev) {
        const uint8_t *e = fo->evq.data + fo->evq_head;
        uint32_t dl = get_le32(e + 1), pl = get_le32(e + 5);
        struct squery_event ev = {(enum squery_event_type)e[0],
                                  slice_of(e + FOLLOW_EV_HDR, dl),
                                  slice_of(e + FOLLOW_EV_HDR + dl, pl)};
        if (fn(ctx, &ev))
            break;
        fo->evq_head += FOLLOW_EV_HDR + dl + pl;
        fo->nev--;
        taken++;
    }
    if (fo->nev == 0) {
        sbuf_reset(&fo->evq);
        fo->evq_head = 0;
    } else if (fo->evq_head > (64u << 10) && fo->evq_head > fo->evq.len / 2) {
        sbuf_consume(&fo->evq, fo->evq_head);
        fo->evq_head = 0;
    }
    return taken;
}

size_t squery_pending_bytes(const struct squery *q)
{
    return q->fo ? q->fo->evq.len - q->fo->evq_head : 0;
}

size_t squery_pending_events(const struct squery *q) { return q->fo ? q->fo->nev : 0; }

/* ---- windows ---- */

static struct fwin *fwin_get(struct squery *q, int64_t wstart)
{
    struct follow *fo = q->fo;
    uint32_t lo = 0, hi = fo->nwins;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (fo->wins[mid].wstart == wstart)
            return &fo->wins[mid];
        if (fo->wins[mid].wstart < wstart)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (fo->nwins == fo->cap_wins) {
        uint32_t cap = fo->cap_wins ? fo->cap_wins * 2 : 8;
        struct fwin *n = xrealloc(fo->wins, cap * sizeof *n);
        if (!n)
            return NULL;
        fo->wins = n;
        fo->cap_wins = cap;
    }
    size_t need = fo->nparts * sizeof(uint64_t);
    if (!follow_mem(q, need))
        return NULL;
    uint64_t *mo = xmalloc(need);
    if (!mo) {
        fo->bytes -= need;
        return NULL;
    }
    memset(mo, 0xff, need);
    memmove(&fo->wins[lo + 1], &fo->wins[lo], (fo->nwins - lo) * sizeof *fo->wins);
    fo->wins[lo] = (struct fwin){wstart, mo};
    fo->nwins++;
    return &fo->wins[lo];
}

/* Drop open-window records for windows with end <= upto (their rows are queued). */
static void fwin_drop(struct squery *q, int64_t upto)
{
    struct follow *fo = q->fo;
    uint32_t k = 0;
    while (k < fo->nwins && fo->wins[k].wstart + q->size_ms <= upto) {
        xfree(fo->wins[k].min_off);
        fo->bytes -= fo->nparts * sizeof(uint64_t);
        k++;
    }
    if (k) {
        memmove(fo->wins, fo->wins + k, (fo->nwins - k) * sizeof *fo->wins);
        fo->nwins -= k;
    }
}

static int follow_close_cmp(const void *a, const void *b, void *ctx)
{
    const struct group *x = *(struct group *const *)a, *y = *(struct group *const *)b;
    if (x->wstart != y->wstart)
        return x->wstart < y->wstart ? -1 : 1;
    return sq_groups_cmp(a, b, ctx);
}

/* Queue the rows of every window with end <= watermark, oldest window first, then free them (F1,
 * F2). Within a window: aggregate order_by (default: first appearance), cut at aggregate limit. */
static int follow_close(struct squery *q)
{
    struct follow *fo = q->fo;
    if (!q->have_wm)
        return 0;
    if (fo->nwins == 0 || fo->wins[0].wstart + q->size_ms > q->watermark) {
        fwin_drop(q, q->watermark);
        fo->have_wmc = true;
        fo->wm_closed = q->watermark;
        return 0;
    }
    /* closed groups to the front of glist, kept in order: [0, nc) */
    uint32_t nc = 0, no = 0;
    struct group **closed = xmalloc((q->ngroups + 1) * sizeof *closed);
    if (!closed)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < q->ngroups; i++) {
        struct group *g = q->glist[i];
        if (g->wstart + q->size_ms <= q->watermark) {
            closed[nc++] = g;
            table_remove(q, g);
        } else {
            q->glist[no++] = g;
        }
    }
    q->ngroups = no;
    if (nc > 1)
        qsort_r(closed, nc, sizeof *closed, follow_close_cmp, q);
    int rc = 0;
    uint64_t in_window = 0;
    for (uint32_t i = 0; i < nc; i++) {
        struct group *g = closed[i];
        if (i == 0 || closed[i - 1]->wstart != g->wstart)
            in_window = 0;
        bool last = i + 1 == nc || closed[i + 1]->wstart != g->wstart;
        if (last) {
            /* this event completes the window: its position no longer needs the window */
            fwin_drop(q, g->wstart + q->size_ms);
            fo->have_wmc = true;
            fo->wm_closed = g->wstart + q->size_ms;
        }
        if (rc == 0 && in_window++ < q->agg_limit) {
            struct jw w;
            fo->tmp.len = 0;
            jw_init(&w, &fo->tmp);
            sq_write_agg(q, &w, g, &fo->kb);
            rc = follow_push(q, SQUERY_EV_AGGREGATE, &fo->tmp);
        }
    }
    for (uint32_t i = 0; i < nc; i++)
        follow_free_group(q, closed[i]);
    xfree(closed);
    fwin_drop(q, q->watermark);
    fo->have_wmc = true;
    fo->wm_closed = q->watermark;
    return rc;
}

static bool follow_replaying(const struct follow *fo)
{
    for (uint32_t i = 0; i < fo->nparts; i++)
        if (fo->parts[i].next < fo->parts[i].replay_to)
            return true;
    return false;
}

/* Watermark = min over partitions not idle of max event time - lateness; every partition idle:
 * now - lateness (F4). Frozen while a resume replays. Then close windows. */
static int follow_advance(struct squery *q)
{
    struct follow *fo = q->fo;
    if (!q->windowed || follow_replaying(fo))
        return 0;
    int64_t min = INT64_MAX;
    bool active = false;
    for (uint32_t i = 0; i < fo->nparts; i++) {
        const struct fpart *p = &fo->parts[i];
        if (p->idle)
            continue;
        active = true;
        if (!p->seen)
            return 0; /* a partition not read yet holds the watermark back */
        if (p->max_ms < min)
            min = p->max_ms;
    }
    int64_t cand;
    if (active) {
        cand = min - q->lateness_ms;
    } else {
        if (fo->nwins == 0)
            return 0; /* nothing is open: the clock has nothing to close */
        int64_t last_end = fo->wins[fo->nwins - 1].wstart + q->size_ms;
        cand = fo->now_ms - q->lateness_ms;
        if (cand > last_end)
            cand = last_end;
    }
    if (!q->have_wm || cand > q->watermark) {
        q->watermark = cand;
        q->have_wm = true;
        return follow_close(q);
    }
    return 0;
}

/* ---- feed ---- */

static int follow_row_json(struct squery *q, const struct srec *r, struct sbuf *out)
{
    const char *why = NULL;
    out->len = 0;
    if (q->rows_raw)
        return q->fmt->ops->to_json(q->fmt, r->value, out, &q->scratch, &why);
    struct jw w;
    jw_init(&w, out);
    jw_obj_open(&w);
    for (uint32_t i = 0; i < q->nsel; i++) {
        jw_keyn(&w, (const uint8_t *)q->sel[i].as, strlen(q->sel[i].as));
        sval_write_json(&w, &q->vals[q->sel[i].field]);
    }
    jw_obj_close(&w);
    return sbuf_ok(out) ? 0 : ERR_NOMEM;
}

static bool event_time(struct squery *q, const struct srec *r, int64_t *t)
{
    if (q->time_field < 0) {
        *t = r->timestamp_ms;
    } else {
        const struct sval *v = &q->vals[q->time_field];
        if (v->type == SV_INT)
            *t = v->i;
        else if (v->type == SV_DOUBLE && isfinite(v->d) && fabs(v->d) < 9.0e15)
            *t = (int64_t)floor(v->d);
        else
            return false;
    }
    return *t <= INT64_MAX / 2 && *t >= INT64_MIN / 2;
}

/* Update the state with the current record. Windows the record is late for are left in
 * fo->lw[0 .. *nlate); *advance says the partition's max event time moved. Nothing is queued
 * here: the caller queues the row and the late event first, then moves the watermark, so that
 * an event's position always covers the state of the records before it (F3). */
static int follow_aggregate(struct squery *q, const struct srec *r, struct fpart *fp, bool replay,
                            uint32_t *nlate_out, bool *advance)
{
    struct follow *fo = q->fo;
    struct group *g;
    int rc;
    if (!q->windowed) {
        rc = sq_find_group(q, 0, &g);
        if (!rc)
            rc = sq_update_measures(q, g);
        if (rc || replay || (g->fflags & FG_DIRTY))
            return rc;
        if (fo->ndirty == fo->cap_dirty) {
            uint32_t cap = fo->cap_dirty ? fo->cap_dirty * 2 : 64;
            struct group **n = xrealloc(fo->dirty, cap * sizeof *n);
            if (!n)
                return ERR_NOMEM;
            fo->dirty = n;
            fo->cap_dirty = cap;
        }
        g->fflags |= FG_DIRTY;
        fo->dirty[fo->ndirty++] = g;
        return 0;
    }
    int64_t t;
    if (!event_time(q, r, &t)) {
        if (!replay)
            q->missing_time++;
        return 0;
    }
    int64_t last = sq_floor_div(t, q->advance_ms) * q->advance_ms, first = last;
    while (first - q->advance_ms + q->size_ms > t)
        first -= q->advance_ms;
    uint32_t nlate = 0, pi = (uint32_t)(fp - fo->parts);
    *nlate_out = 0;
    *advance = false;
    for (int64_t s = first; s <= last; s += q->advance_ms) {
        if (q->have_wm && s + q->size_ms <= q->watermark) {
            /* the window is closed (its rows were queued, or it never had any): F1 */
            if (replay)
                continue;
            q->late_windows++;
            if (nlate == fo->cap_lw) {
                uint32_t cap = fo->cap_lw ? fo->cap_lw * 2 : 8;
                struct late_win *n = xrealloc(fo->lw, cap * sizeof *n);
                if (!n)
                    return ERR_NOMEM;
                fo->lw = n;
                fo->cap_lw = cap;
            }
            fo->lw[nlate++].s = s;
            continue;
        }
        rc = sq_find_group(q, s, &g);
        if (!rc)
            rc = sq_update_measures(q, g);
        if (rc)
            return rc;
        struct fwin *fw = fwin_get(q, s);
        if (!fw)
            return sq_limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
        if (r->offset < fw->min_off[pi])
            fw->min_off[pi] = r->offset;
    }
    if (nlate)
        q->late++;
    *nlate_out = nlate;
    if (!fp->seen || t > fp->max_ms) {
        fp->seen = true;
        fp->max_ms = t;
        *advance = true;
    }
    return 0;
}

/* A closed window is never reopened: a late record goes out on its own with the windows it
 * missed (policy "include"). */
static int follow_late_event(struct squery *q, const struct srec *r, uint32_t nlate)
{
    struct follow *fo = q->fo;
    struct sbuf row;
    sbuf_init(&row, 0);
    int rc = follow_row_json(q, r, &row);
    if (rc == 0) {
        struct jw w;
        fo->tmp.len = 0;
        jw_init(&w, &fo->tmp);
        jw_obj_open(&w);
        jw_key(&w, "windows");
        jw_arr_open(&w);
        for (uint32_t i = 0; i < nlate; i++) {
            jw_obj_open(&w);
            jw_ki64(&w, "window_start_ms", fo->lw[i].s);
            jw_ki64(&w, "window_end_ms", fo->lw[i].s + q->size_ms);
            jw_obj_close(&w);
        }
        jw_arr_close(&w);
        jw_key(&w, "row");
        jw_rawn(&w, row.data, row.len);
        jw_obj_close(&w);
        rc = follow_push(q, SQUERY_EV_LATE, &fo->tmp);
    } else if (rc == ERR_CORRUPT || rc == ERR_INVALID) {
        rc = 0; /* no JSON form: the record stays counted in late */
    }
    sbuf_free(&row);
    return rc;
}

int sq_follow_feed(struct squery *q, const struct srec *r)
{
    struct follow *fo = q->fo;
    if (!fo->begun)
        return ERR_INVALID;
    struct fpart *fp = fpart_find(fo->parts, fo->nparts, r->partition);
    if (!fp)
        return ERR_INVALID; /* the host feeds only the partitions it declared */
    bool replay = r->offset < fp->replay_to;
    if (r->offset >= fp->next)
        fp->next = r->offset + 1;
    fp->caught_up_ms = INT64_MIN;
    fp->idle = false;
    q->seq++;
    if (replay)
        fo->replayed++;
    else
        fo->limit_records++;
    if ((q->src.has_from_ms && r->timestamp_ms < q->src.from_ms) ||
        (q->src.has_to_ms && r->timestamp_ms >= q->src.to_ms)) {
        if (!replay)
            q->out_of_range++;
        return 0;
    }
    if (!replay)
        q->scanned++;
    if (q->scratch.used_bytes)
        arena_reset(&q->scratch);
    const char *why = NULL;
    int rc = q->fmt->ops->extract(q->fmt, r->value, q->paths, q->npaths, q->pvals, &q->scratch, &why);
    if (rc) {
        if (rc != ERR_CORRUPT && rc != ERR_INVALID)
            return sq_limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        if (!replay) {
            if (rc == ERR_CORRUPT)
                q->skipped_parse++;
            else
                q->skipped_decode++;
            sq_note_skip(q, r,
                         why ? why : rc == ERR_CORRUPT ? "does not parse" : "does not decode");
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
    if (!replay)
        q->matched++;
    uint32_t nlate = 0;
    bool advance = false;
    if (q->aggregate && (rc = follow_aggregate(q, r, fp, replay, &nlate, &advance)))
        return rc;
    if (!replay && q->emit_rows) {
        rc = follow_row_json(q, r, &fo->tmp);
        if (rc == 0)
            rc = follow_push(q, SQUERY_EV_ROW, &fo->tmp);
        if (rc) /* as in a bounded call, a value without a JSON form is an error */
            return rc;
    }
    if (nlate && q->late_include && (rc = follow_late_event(q, r, nlate)))
        return rc;
    /* the last replayed record ends the resume: the watermark catches up at once */
    if (advance || (replay && fp->next >= fp->replay_to))
        return follow_advance(q);
    return 0;
}

/* ---- time ---- */

void squery_caught_up(struct squery *q, uint32_t part, int64_t now_ms)
{
    struct follow *fo = q->fo;
    if (!fo || !fo->begun)
        return;
    struct fpart *p = fpart_find(fo->parts, fo->nparts, part);
    if (!p)
        return;
    if (p->replay_to > p->next)
        p->replay_to = p->next; /* the log ends before the resume point: nothing more to replay */
    if (p->caught_up_ms == INT64_MIN)
        p->caught_up_ms = now_ms;
}

int squery_tick(struct squery *q, int64_t now_ms)
{
    struct follow *fo = q->fo;
    if (!fo || !fo->begun)
        return ERR_INVALID;
    if (now_ms > fo->now_ms)
        fo->now_ms = now_ms;
    if (fo->opt.idle_timeout_ms > 0)
        for (uint32_t i = 0; i < fo->nparts; i++) {
            struct fpart *p = &fo->parts[i];
            if (p->caught_up_ms != INT64_MIN && fo->now_ms - p->caught_up_ms >= fo->opt.idle_timeout_ms)
                p->idle = true;
        }
    int rc = follow_advance(q);
    if (rc)
        return rc;
    if (fo->ndirty) {
        /* emit-changes: each group changed since the last tick, in order of its first change */
        for (uint32_t i = 0; i < fo->ndirty && rc == 0; i++) {
            struct group *g = fo->dirty[i];
            g->fflags &= ~(uint32_t)FG_DIRTY;
            struct jw w;
            fo->tmp.len = 0;
            jw_init(&w, &fo->tmp);
            sq_write_agg(q, &w, g, &fo->kb);
            rc = follow_push(q, SQUERY_EV_AGGREGATE, &fo->tmp);
        }
        for (uint32_t i = 0; i < fo->ndirty; i++)
            fo->dirty[i]->fflags &= ~(uint32_t)FG_DIRTY;
        fo->ndirty = 0;
    }
    return rc;
}

void squery_follow_stats(const struct squery *q, struct jw *w)
{
    const struct follow *fo = q->fo;
    jw_obj_open(w);
    sq_write_common_stats(q, w);
    if (fo) {
        uint32_t idle = 0;
        for (uint32_t i = 0; i < fo->nparts; i++)
            idle += fo->parts[i].idle;
        jw_ku64(w, "rows_emitted", fo->rows);
        jw_ku64(w, "aggregates_emitted", fo->aggs);
        jw_ku64(w, "late_emitted", fo->late_events);
        jw_ku64(w, "replayed", fo->replayed);
        jw_ku64(w, "idle_partitions", idle);
        jw_ku64(w, "state_bytes", fo->bytes);
    }
    if (q->have_first_skip) {
        jw_key(w, "first_skipped");
        jw_obj_open(w);
        jw_ku64(w, "partition", q->first_skip_partition);
        jw_ku64(w, "offset", q->first_skip_offset);
        jw_kstr(w, "reason", q->first_skip_reason);
        jw_obj_close(w);
    }
    jw_obj_close(w);
}
