/* test_stream_join.c -- the join engine (stream/join.h): every join type, composite and null keys,
 * window edges, lateness, dedupe_once, limits, and the randomized resume-equivalence test: random
 * logs, one call over the whole range vs. the same range cut into calls at random limits (the
 * handler protocol of docs/STREAM.md simulated, lookback included), both against a brute-force
 * nested-loop oracle. */
#include "harness.h"

#include "base/buf.h"
#include "base/err.h"
#include "stream/fmt/json.h"
#include "stream/join.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a tiny log ----------------------------------------------------------------------------- */

struct trec {
    int64_t clock;   /* record timestamp */
    int64_t t;       /* payload "t" */
    int k1;          /* -1 = missing */
    int k2;          /* composite part: -1 = null */
    char json[128];
};

struct tlog {
    struct trec r[256];
    size_t n;
};

static void tlog_add(struct tlog *g, int64_t clock, int64_t t, int k1, int k2)
{
    struct trec *x = &g->r[g->n++];
    x->clock = clock;
    x->t = t;
    x->k1 = k1;
    x->k2 = k2;
    char a[32], b[32];
    if (k1 < 0) snprintf(a, sizeof a, "%s", "");
    else snprintf(a, sizeof a, "\"k\":%d,", k1);
    if (k2 < 0) snprintf(b, sizeof b, "%s", "\"k2\":null,");
    else snprintf(b, sizeof b, "\"k2\":\"c%d\",", k2);
    snprintf(x->json, sizeof x->json, "{%s%s\"t\":%lld,\"v\":%zu}", a, b, (long long)t, g->n - 1);
}

static struct srec tlog_srec(const struct tlog *g, size_t i)
{
    return (struct srec){.partition = 0, .offset = i, .timestamp_ms = g->r[i].clock,
                         .value = slice_cstr(g->r[i].json)};
}

/* ---- rows as (left offset, right offset), -1 for a missing side ---------------------------- */

struct row {
    long l, r;
};
struct rows {
    struct row v[70000];
    size_t n;
};

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

static long side_off(json_t *o)
{
    if (!json_is_object(o))
        return -1;
    json_t *v = json_object_get(o, "$offset");
    return json_is_integer(v) ? (long)json_integer_value(v) : -2;
}

/* Parse "[" + rows + "]" and append. */
static bool parse_rows(const struct sbuf *b, struct rows *out)
{
    struct sbuf t;
    sbuf_init(&t, 0);
    sbuf_putc(&t, '[');
    sbuf_append(&t, b->data, b->len);
    sbuf_putc(&t, ']');
    json_error_t err;
    json_t *a = json_loadb((const char *)t.data, t.len, 0, &err);
    sbuf_free(&t);
    if (!json_is_array(a)) {
        json_decref(a);
        return false;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *row = json_array_get(a, i);
        out->v[out->n].l = side_off(json_object_get(row, "left"));
        out->v[out->n].r = side_off(json_object_get(row, "right"));
        out->n++;
    }
    json_decref(a);
    return true;
}

/* ---- the spec ----------------------------------------------------------------------------- */

struct cfg {
    enum join_type type;
    int64_t size, lat;
    bool dedupe, time_field, composite;
    uint64_t max_rows;
};

static struct sfmt *jf;

static void make_spec(const struct cfg *c, struct join_spec *sp)
{
    memset(sp, 0, sizeof *sp);
    if (!jf)
        sfmt_json_new(&jf);
    sp->type = c->type;
    sp->size_ms = c->size;
    sp->allowed_lateness_ms = c->lat;
    sp->dedupe_once = c->dedupe;
    sp->max_rows = c->max_rows ? c->max_rows : 1000000;
    for (int s = 0; s < 2; s++) {
        struct join_side_spec *ss = &sp->side[s];
        ss->fmt = jf;
        join_field_parse(&ss->keys[0], "k", 1);
        ss->nkeys = 1;
        if (c->composite) {
            join_field_parse(&ss->keys[1], "k2", 2);
            ss->nkeys = 2;
        }
        if (c->time_field) {
            ss->has_time_field = true;
            join_field_parse(&ss->time_field, "t", 1);
        }
        join_field_parse(&ss->fields[0], "$offset", 7);
        ss->nfields = 1;
    }
}

/* ---- the oracle: nested loops over the whole logs ------------------------------------------ */

static int64_t ev(const struct cfg *c, const struct trec *x) { return c->time_field ? x->t : x->clock; }
static bool late(const struct cfg *c, const struct trec *x) { return ev(c, x) < x->clock - c->lat; }
static bool nullkey(const struct cfg *c, const struct trec *x)
{
    return x->k1 < 0 || (c->composite && x->k2 < 0);
}

struct opair {
    long l, r;
    int64_t d;
};
static int opair_cmp(const void *a, const void *b)
{
    const struct opair *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

static void oracle(const struct cfg *c, const struct tlog *L, const struct tlog *R,
                   struct rows *out)
{
    static struct opair ps[65536];
    size_t np = 0;
    bool lm[256] = {0}, rm[256] = {0}, lk[256] = {0}, rk[256] = {0};
    for (size_t i = 0; i < L->n; i++)
        for (size_t k = 0; k < R->n; k++) {
            const struct trec *l = &L->r[i], *r = &R->r[k];
            if (late(c, l) || late(c, r) || nullkey(c, l) || nullkey(c, r))
                continue;
            if (l->k1 != r->k1 || (c->composite && l->k2 != r->k2))
                continue;
            int64_t d = ev(c, l) - ev(c, r);
            if (d < 0) d = -d;
            if (d > c->size)
                continue;
            ps[np++] = (struct opair){(long)i, (long)k, d};
            lm[i] = rm[k] = true;
        }
    if (c->dedupe) {
        qsort(ps, np, sizeof *ps, opair_cmp);
        size_t w = 0;
        for (size_t i = 0; i < np; i++) {
            if (lk[ps[i].l] || rk[ps[i].r])
                continue;
            lk[ps[i].l] = rk[ps[i].r] = true;
            ps[w++] = ps[i];
        }
        np = w;
    }
    for (size_t i = 0; i < np; i++)
        out->v[out->n++] = (struct row){ps[i].l, ps[i].r};
    if (c->type == JOIN_LEFT || c->type == JOIN_FULL)
        for (size_t i = 0; i < L->n; i++)
            if (!lm[i] && !late(c, &L->r[i]))
                out->v[out->n++] = (struct row){(long)i, -1};
    if (c->type == JOIN_RIGHT || c->type == JOIN_FULL)
        for (size_t k = 0; k < R->n; k++)
            if (!rm[k] && !late(c, &R->r[k]))
                out->v[out->n++] = (struct row){-1, (long)k};
}

/* ---- the handler protocol (docs/STREAM.md "Joins: the handler protocol") ------------------- */

struct call_out {
    uint64_t next[2];
    struct join_result res;
    int rc;
};

/* One call from committed offsets c[] reading at most lim[] new records per side. */
static void one_call(const struct cfg *cf, const struct tlog *g[2], const uint64_t c[2],
                     const size_t lim[2], struct rows *rows, struct call_out *co)
{
    struct join_spec sp;
    make_spec(cf, &sp);
    struct join *j;
    REQUIRE(join_new(&sp, &j) == 0);
    struct join_end ends[2];
    for (int s = 0; s < 2; s++) {
        size_t i = c[s], n = 0;
        for (; i < g[s]->n && n < lim[s]; i++, n++) {
            struct srec r = tlog_srec(g[s], i);
            REQUIRE(join_feed(j, s, &r, JOIN_NEW) == 0);
        }
        ends[s] = (struct join_end){c[s], i, i == g[s]->n};
    }
    for (int s = 0; s < 2; s++) {
        int64_t from;
        if (!join_lookback_from_ms(j, s, &from))
            continue;
        size_t b = c[s];
        while (b > 0 && g[s]->r[b - 1].clock >= from)
            b--;
        for (size_t i = b; i < c[s]; i++) {
            struct srec r = tlog_srec(g[s], i);
            REQUIRE(join_feed(j, s, &r, JOIN_LOOKBACK) == 0);
        }
    }
    struct sbuf out;
    sbuf_init(&out, 0);
    co->rc = join_finish(j, ends, &out, &co->res);
    if (co->rc == 0) {
        CHECK(parse_rows(&out, rows));
        co->next[0] = co->res.next_offset[0];
        co->next[1] = co->res.next_offset[1];
        CHECK_EQ_INT(co->res.side[0].late_after_close + co->res.side[1].late_after_close, 0);
    }
    sbuf_free(&out);
    join_free(j);
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static int64_t rr(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1)); }

static void gen(struct tlog *g, size_t n, int keys, int64_t lat)
{
    g->n = 0;
    int64_t clock = 1000 + rr(0, 30);
    for (size_t i = 0; i < n; i++) {
        clock += rr(0, 12);
        int64_t t = clock - rr(0, lat + 3) + rr(0, 4); /* a few late, a few ahead */
        int k1 = rr(0, 9) == 0 ? -1 : (int)rr(0, keys - 1);
        int k2 = rr(0, 12) == 0 ? -1 : (int)rr(0, 1);
        tlog_add(g, clock, t, k1, k2);
    }
}

static bool same(struct rows *a, struct rows *b)
{
    qsort(a->v, a->n, sizeof a->v[0], row_cmp);
    qsort(b->v, b->n, sizeof b->v[0], row_cmp);
    return a->n == b->n && memcmp(a->v, b->v, a->n * sizeof a->v[0]) == 0;
}

static struct rows ra, rb, rc_;

/* Whole range in one call, and the same range in random calls; both must equal the oracle. */
static bool check_case(const struct cfg *cf, const struct tlog *g[2], bool verbose)
{
    ra.n = rb.n = rc_.n = 0;
    oracle(cf, g[0], g[1], &ra);
    uint64_t c[2] = {0, 0};
    size_t big[2] = {100000, 100000};
    struct call_out co;
    one_call(cf, g, c, big, &rb, &co);
    if (co.rc != 0 || co.next[0] != g[0]->n || co.next[1] != g[1]->n)
        return false;
    if (!same(&ra, &rb)) {
        if (verbose)
            fprintf(stderr, "whole-range call != oracle (%zu vs %zu rows)\n", rb.n, ra.n);
        return false;
    }
    int calls = 0;
    size_t lim[2] = {(size_t)rr(1, 12), (size_t)rr(1, 12)};
    while (c[0] < g[0]->n || c[1] < g[1]->n) {
        one_call(cf, g, c, lim, &rc_, &co);
        if (co.rc != 0)
            return false;
        if (co.next[0] == c[0] && co.next[1] == c[1]) {
            lim[0] *= 2; /* no progress: the handler reads further (docs: progress rule) */
            lim[1] *= 2;
            continue;
        }
        c[0] = co.next[0];
        c[1] = co.next[1];
        lim[0] = (size_t)rr(1, 12);
        lim[1] = (size_t)rr(1, 12);
        if (++calls > 10000)
            return false;
    }
    if (!same(&ra, &rc_)) {
        if (verbose)
            fprintf(stderr, "resumed calls != oracle (%zu vs %zu rows)\n", rc_.n, ra.n);
        return false;
    }
    return true;
}

TEST(stream_join_resume_equivalence_random)
{
    static struct tlog L, R;
    const struct tlog *g[2] = {&L, &R};
    rng_state = 0x243f6a8885a308d3ull;
    int fails = 0;
    for (int it = 0; it < 1500; it++) {
        struct cfg cf = {
            .type = (enum join_type)rr(0, 3),
            .size = rr(0, 30),
            .lat = rr(0, 15),
            .dedupe = rr(0, 3) == 0,
            .time_field = rr(0, 1) == 1,
            .composite = rr(0, 2) == 0,
        };
        gen(&L, (size_t)rr(0, 60), (int)rr(1, 6), cf.lat);
        gen(&R, (size_t)rr(0, 60), (int)rr(1, 6), cf.lat);
        if (!check_case(&cf, g, fails == 0)) {
            if (fails++ == 0)
                fprintf(stderr, "case %d: type %d size %lld lat %lld dedupe %d time %d comp %d\n", it,
                        cf.type, (long long)cf.size, (long long)cf.lat, cf.dedupe, cf.time_field,
                        cf.composite);
        }
    }
    CHECK_EQ_INT(fails, 0);
}

/* ---- targeted cases --------------------------------------------------------------------------- */

static void run_whole(const struct cfg *cf, const struct tlog *L, const struct tlog *R,
                      struct rows *out, struct join_result *res)
{
    const struct tlog *g[2] = {L, R};
    uint64_t c[2] = {0, 0};
    size_t big[2] = {100000, 100000};
    struct call_out co;
    out->n = 0;
    one_call(cf, g, c, big, out, &co);
    CHECK_EQ_INT(co.rc, 0);
    *res = co.res;
    qsort(out->v, out->n, sizeof out->v[0], row_cmp);
}

TEST(stream_join_window_edges_and_types)
{
    static struct tlog L, R;
    L.n = R.n = 0;
    /* key 1: l0 at 100; r0 at 110 (= size), r1 at 111 (size + 1) */
    tlog_add(&L, 100, 100, 1, 0);
    tlog_add(&R, 110, 110, 1, 0);
    tlog_add(&R, 111, 111, 1, 0);
    struct cfg cf = {.type = JOIN_INNER, .size = 10};
    struct join_result res;
    run_whole(&cf, &L, &R, &rb, &res);
    REQUIRE(rb.n == 1);
    CHECK(rb.v[0].l == 0 && rb.v[0].r == 0);
    cf.type = JOIN_RIGHT;
    run_whole(&cf, &L, &R, &rb, &res);
    REQUIRE(rb.n == 2);
    CHECK(rb.v[0].l == -1 && rb.v[0].r == 1);
    CHECK_EQ_INT(res.side[1].outer, 1);
    cf.type = JOIN_LEFT;
    run_whole(&cf, &L, &R, &rb, &res);
    CHECK_EQ_INT(rb.n, 1);
    cf.type = JOIN_FULL;
    cf.size = 9;
    run_whole(&cf, &L, &R, &rb, &res);
    CHECK_EQ_INT(rb.n, 3); /* no pair: l0, r0, r1 all outer */
}

TEST(stream_join_null_keys_never_match_but_yield_outer_rows)
{
    static struct tlog L, R;
    L.n = R.n = 0;
    tlog_add(&L, 100, 100, -1, 0); /* k missing */
    tlog_add(&R, 100, 100, -1, 0);
    tlog_add(&L, 101, 101, 2, -1); /* composite part null */
    tlog_add(&R, 101, 101, 2, -1);
    struct cfg cf = {.type = JOIN_FULL, .size = 10, .composite = true};
    struct join_result res;
    run_whole(&cf, &L, &R, &rb, &res);
    CHECK_EQ_INT(rb.n, 4);
    CHECK_EQ_INT(res.pairs, 0);
    CHECK_EQ_INT(res.side[0].null_key, 2);
    cf.composite = false; /* only k: the second pair matches */
    run_whole(&cf, &L, &R, &rb, &res);
    CHECK_EQ_INT(res.pairs, 1);
    CHECK_EQ_INT(rb.n, 3);
}

TEST(stream_join_lateness_counts_and_excludes)
{
    static struct tlog L, R;
    L.n = R.n = 0;
    tlog_add(&L, 1000, 990, 1, 0); /* 10 behind its clock */
    tlog_add(&R, 1000, 995, 1, 0);
    struct cfg cf = {.type = JOIN_FULL, .size = 10, .lat = 9, .time_field = true};
    struct join_result res;
    run_whole(&cf, &L, &R, &rb, &res);
    CHECK_EQ_INT(res.side[0].late, 1);
    CHECK_EQ_INT(res.pairs, 0);
    CHECK_EQ_INT(rb.n, 1); /* only r0's outer row; the late l0 yields nothing */
    cf.lat = 10;
    run_whole(&cf, &L, &R, &rb, &res);
    CHECK_EQ_INT(res.side[0].late, 0);
    CHECK_EQ_INT(res.pairs, 1);
}

TEST(stream_join_outer_row_waits_for_the_window)
{
    /* l0 at t=100, size 10, lateness 5: R read only to clock 115 (not at its end): still open. */
    static struct tlog L, R;
    L.n = R.n = 0;
    tlog_add(&L, 100, 100, 1, 0);
    tlog_add(&R, 115, 115, 2, 0);
    tlog_add(&R, 116, 116, 2, 0);
    struct cfg cf = {.type = JOIN_LEFT, .size = 10, .lat = 5};
    const struct tlog *g[2] = {&L, &R};
    uint64_t c[2] = {0, 0};
    size_t lim[2] = {10, 1};
    struct call_out co;
    rb.n = 0;
    one_call(&cf, g, c, lim, &rb, &co);
    CHECK_EQ_INT(co.rc, 0);
    CHECK_EQ_INT(rb.n, 0);
    CHECK_EQ_INT(co.next[0], 0); /* l0 is re-read next time */
    lim[1] = 2;                  /* clock 116 > 100 + 10 + 5: closed */
    one_call(&cf, g, c, lim, &rb, &co);
    CHECK_EQ_INT(rb.n, 1);
    CHECK_EQ_INT(co.next[0], 1);
}

TEST(stream_join_dedupe_once_takes_the_closest)
{
    static struct tlog L, R;
    L.n = R.n = 0;
    tlog_add(&L, 100, 100, 1, 0);
    tlog_add(&L, 104, 104, 1, 0);
    tlog_add(&R, 103, 103, 1, 0);
    struct cfg cf = {.type = JOIN_FULL, .size = 10, .dedupe = true};
    struct join_result res;
    run_whole(&cf, &L, &R, &rb, &res);
    REQUIRE(rb.n == 1); /* l1-r0 (|dt| 1); l0 matched (lost to a closer pair): no outer row */
    CHECK(rb.v[0].l == 1 && rb.v[0].r == 0);
}

TEST(stream_join_max_rows_cuts_without_losing_rows)
{
    static struct tlog L, R;
    L.n = R.n = 0;
    for (int i = 0; i < 40; i++) {
        tlog_add(&L, 100 + i * 20, 100 + i * 20, i % 3, 0);
        tlog_add(&R, 100 + i * 20, 100 + i * 20, i % 3, 0);
    }
    struct cfg cf = {.type = JOIN_FULL, .size = 5, .max_rows = 7};
    const struct tlog *g[2] = {&L, &R};
    uint64_t c[2] = {0, 0};
    size_t lim[2] = {1000, 1000};
    rc_.n = 0;
    int calls = 0;
    while (c[0] < L.n || c[1] < R.n) {
        size_t before = rc_.n;
        struct call_out co;
        one_call(&cf, g, c, lim, &rc_, &co);
        REQUIRE(co.rc == 0);
        CHECK(rc_.n - before <= 7);
        c[0] = co.next[0];
        c[1] = co.next[1];
        REQUIRE(++calls < 100);
    }
    CHECK_EQ_INT(rc_.n, 40);
    CHECK(calls >= 6);
    /* A limit that cannot hold even one record's rows is an error naming it. */
    cf.max_rows = 1;
    cf.size = 1000;
    struct call_out co;
    rb.n = 0;
    uint64_t z[2] = {0, 0};
    one_call(&cf, g, z, lim, &rb, &co);
    CHECK_EQ_INT(co.rc, ERR_QUERY_LIMIT);
    CHECK(co.res.limit && strcmp(co.res.limit, "max_rows") == 0);
}

TEST(stream_join_state_limit_and_bad_records)
{
    struct cfg cf = {.type = JOIN_LEFT, .size = 5};
    struct join_spec sp;
    make_spec(&cf, &sp);
    sp.max_state_records = 2;
    struct join *j;
    REQUIRE(join_new(&sp, &j) == 0);
    struct srec r = {.offset = 0, .timestamp_ms = 1, .value = slice_cstr("{\"k\":1")};
    CHECK_EQ_INT(join_feed(j, 0, &r, JOIN_NEW), 0); /* undecodable: kept and counted */
    r.offset = 1;
    r.value = slice_cstr("{\"k\":1}");
    CHECK_EQ_INT(join_feed(j, 0, &r, JOIN_NEW), 0);
    r.offset = 2;
    CHECK_EQ_INT(join_feed(j, 0, &r, JOIN_NEW), ERR_QUERY_LIMIT);
    r.offset = 1;
    struct join_end ends[2] = {{0, 2, false}, {0, 0, true}};
    struct sbuf out;
    sbuf_init(&out, 0);
    struct join_result res;
    CHECK_EQ_INT(join_finish(j, ends, &out, &res), 0);
    CHECK_EQ_INT(res.side[0].undecodable, 1);
    CHECK_EQ_INT(res.side[0].outer, 1);
    CHECK_EQ_INT(res.next_offset[0], 2);
    sbuf_free(&out);
    join_free(j);
    /* Offsets out of order are refused. */
    REQUIRE(join_new(&sp, &j) == 0);
    r.offset = 5;
    CHECK_EQ_INT(join_feed(j, 0, &r, JOIN_NEW), 0);
    r.offset = 5;
    CHECK_EQ_INT(join_feed(j, 0, &r, JOIN_NEW), ERR_INVALID);
    join_free(j);
}

TEST(stream_join_keys_compare_by_value_and_row_shape)
{
    /* 7 and 7.0 and "x" with an escape compare by value; the row carries the original's shape. */
    struct cfg cf = {.type = JOIN_INNER, .size = 0};
    struct join_spec sp;
    make_spec(&cf, &sp);
    sp.side[0].nfields = 0; /* whole record */
    join_field_parse(&sp.side[1].fields[0], "v", 1);
    struct join *j;
    REQUIRE(join_new(&sp, &j) == 0);
    struct srec a = {.offset = 0, .timestamp_ms = 5, .value = slice_cstr("{\"k\":7,\"v\":1}")};
    struct srec b = {.offset = 0, .timestamp_ms = 5, .value = slice_cstr("{\"k\":7.0,\"v\":2}")};
    CHECK_EQ_INT(join_feed(j, 0, &a, JOIN_NEW), 0);
    CHECK_EQ_INT(join_feed(j, 1, &b, JOIN_NEW), 0);
    struct join_end ends[2] = {{0, 1, true}, {0, 1, true}};
    struct sbuf out;
    sbuf_init(&out, 0);
    struct join_result res;
    CHECK_EQ_INT(join_finish(j, ends, &out, &res), 0);
    sbuf_putc(&out, 0);
    CHECK(strcmp((char *)out.data, "{\"key\":\"7\",\"left_ts_ms\":5,\"right_ts_ms\":5,"
                                   "\"left\":{\"k\":7,\"v\":1},\"right\":{\"v\":2}}") == 0);
    sbuf_free(&out);
    join_free(j);

    join_field_parse(&sp.side[0].keys[0], "s", 1);
    join_field_parse(&sp.side[1].keys[0], "s", 1);
    REQUIRE(join_new(&sp, &j) == 0);
    a.value = slice_cstr("{\"s\":\"a\\u0062\"}");
    b.value = slice_cstr("{\"s\":\"ab\"}");
    CHECK_EQ_INT(join_feed(j, 0, &a, JOIN_NEW), 0);
    CHECK_EQ_INT(join_feed(j, 1, &b, JOIN_NEW), 0);
    sbuf_init(&out, 0);
    CHECK_EQ_INT(join_finish(j, ends, &out, &res), 0);
    CHECK_EQ_INT(res.pairs, 1);
    sbuf_free(&out);
    join_free(j);
}
