/* query_int.h -- PRIVATE to the query engine: only src/stream/query*.c include it. Everyone
 * else uses query.h, the module's one public header.
 *
 * The engine is one module in three files, cut along the drawing in query.c:
 *
 *   query_compile.c   request --compile--> plan, the limits, the plan accessors; the follow
 *                     options ("follow") are parsed there too
 *   query.c           the bounded path: feed (filter, rows, groups x windows, measures), finish
 *                     (ordering, output, stats), free
 *   query_follow.c    follow mode: the same plan fed incrementally, events, positions, time
 *
 * What is shared lives here: the plan and run state (struct squery and what it points to), the
 * small helpers every part needs (static inline, so the feed loop keeps them inlined), and the
 * seams between the files. Functions that cross a file boundary carry the prefix sq_ rather than
 * squery_, so that a reader never mistakes a private seam for the public API of query.h.
 *
 * Plan and state share struct squery: the members compile fills (source, fields, paths, nodes,
 * kids, root, projection, order keys, emit_rows, group_by, measures, agg_limit, window sizes,
 * time_field, late_include) are read-only once squery_compile returned 0; squery_set_format only
 * swaps the decoder. The rest is run state, written by the feed, finish and follow parts.
 *
 * Ownership: the plan (fields, nodes, measures, order keys, selections) and, in bounded mode, the
 * group state live in q->arena (capped at max_memory_bytes); q->scratch holds one record's
 * unescaped values and is reset per feed; kept rows, the group table and list, distinct sets and
 * the partition watermarks are heap blocks freed by squery_free; follow state (q->fo) is owned
 * by query_follow.c and freed by sq_follow_free.
 */
#ifndef AYDER_STREAM_QUERY_INT_H
#define AYDER_STREAM_QUERY_INT_H

#include "base/arena.h"
#include "base/err.h"
#include "stream/query.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* ---- the plan and the run state ------------------------------------------------------------ */

/* Filter ops; query_compile.c's op_names[] spells the leaf ops (OP_EQ .. OP_IS_NULL) in this
 * order. */
enum qop {
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NIN, OP_CONTAINS, OP_EXISTS, OP_IS_NULL,
    OP_ALL, OP_ANY,
};

struct qfield {
    const char *text; /* as written in the request (arena) */
    enum smeta meta;
    struct slice header;
    int32_t path; /* index into paths[] for payload fields */
};

struct qnode {
    uint8_t op;
    bool negate;    /* exists/is_null with "value": false */
    uint16_t field; /* leaf */
    uint32_t kid0, nkid; /* OP_ALL/OP_ANY: kids[kid0 .. kid0+nkid) */
    struct sval operand;
    bool num_exact;  /* operand is a number held exactly by operand_d: see sq_eval() */
    double operand_d;
    struct sval *list;
    uint32_t nlist;
};

/* Measure ops; query_compile.c's mop_names[] spells them in this order. */
enum mop { M_COUNT, M_SUM, M_AVG, M_MIN, M_MAX, M_COUNT_DISTINCT };

struct qmeasure {
    uint8_t op;
    int32_t field; /* -1: count rows */
    const char *as;
};

enum okind { OK_FIELD, OK_KEY, OK_GROUP, OK_MEASURE, OK_WSTART, OK_WEND };
struct okey {
    uint8_t kind;
    bool desc;
    int32_t idx;
};

struct qsel {
    int32_t field;
    const char *as;
};

/* count_distinct set: open addressing over copied values. */
struct dent {
    uint64_t h;
    struct sval v;
};
struct dset {
    uint32_t cap, count;
    struct dent *e;
};

struct mstate {
    int64_t n;
    int64_t isum;
    double dsum;
    bool dbl; /* the sum is a double (a double was added, or the int64 sum overflowed) */
    struct sval mm; /* min/max: SV_MISSING until the first number */
    struct dset set;
};

struct group {
    uint64_t hash;
    int64_t wstart;
    uint32_t seq;
    uint32_t fflags; /* follow mode: FG_DIRTY */
    struct sval *keys;
    struct mstate m[];
};

struct row {
    uint64_t seq;
    size_t len;
    struct sval *keys;
    uint8_t *data;
};

struct pwm {
    uint32_t partition;
    bool seen;
    int64_t max_ms;
};

struct squery {
    struct squery_limits lim;
    struct arena arena;   /* plan + group keys + distinct values (capped) */
    struct arena scratch; /* per record */
    struct squery_source src;
    const struct sfmt *fmt;
    struct serr err;

    struct qfield *fields;
    uint32_t nfields, cap_fields;
    struct spath *paths;
    int32_t *path_field; /* paths[i] belongs to fields[path_field[i]] */
    uint32_t npaths;
    struct sval *vals; /* per record: one per field */
    struct sval *pvals; /* per record: one per path */

    struct qnode *nodes;
    uint32_t nnodes;
    uint32_t *kids;
    uint32_t nkids;
    int32_t root; /* -1: no filter */

    /* rows */
    bool rows_raw; /* no projection: the record itself */
    struct qsel *sel;
    uint32_t nsel;
    struct okey *row_order;
    uint32_t nrow_order;
    uint64_t emit_rows;
    struct row *rows;
    size_t nrows, cap_rows;
    uint64_t rows_bytes;
    bool rows_truncated;

    /* aggregates */
    bool aggregate;
    int32_t *group_by;
    uint32_t ngroup_by;
    struct qmeasure *measures;
    uint32_t nmeasures;
    struct okey *agg_order;
    uint32_t nagg_order;
    uint64_t agg_limit;
    struct group **table;
    uint32_t table_cap, ngroups;
    struct group **glist;
    uint32_t glist_cap;
    uint64_t distinct_total;

    /* windows */
    bool windowed;
    int64_t size_ms, advance_ms, lateness_ms;
    int32_t time_field; /* -1: the record timestamp */
    bool late_include;
    struct pwm *pw;
    uint32_t npw, cap_pw;
    bool declared;
    bool have_wm;
    int64_t watermark; /* max event time - lateness, min over partitions; only moves forward */

    /* stats */
    uint64_t scanned, matched, skipped_parse, skipped_decode, missing_time, late, late_windows,
        out_of_range;
    bool have_first_skip;
    uint32_t first_skip_partition;
    uint64_t first_skip_offset;
    char first_skip_reason[96];
    uint64_t seq;

    struct follow *fo; /* follow mode ("follow": true): query_follow.c; else NULL */
};

/* ---- small shared helpers (inlined on the feed path) --------------------------------------- */

/* A value whose bytes live outside the struct (and must be copied to outlive the record). */
static inline bool sq_has_bytes(const struct sval *v)
{
    return v->type == SV_STR || v->type == SV_BYTES || v->type == SV_JSON;
}

static inline int64_t sq_floor_div(int64_t a, int64_t b)
{
    int64_t d = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        d--;
    return d;
}

/* Name the limit in q->err and return ERR_QUERY_LIMIT (the call must end with it). */
static inline int sq_limit_err(struct squery *q, const char *limit, uint64_t v)
{
    serr_set(&q->err, limit, "the query exceeds %s (%llu)", limit, (unsigned long long)v);
    return ERR_QUERY_LIMIT;
}

/* Remember the first skipped record (stats.first_skipped). */
static inline void sq_note_skip(struct squery *q, const struct srec *r, const char *why)
{
    if (q->have_first_skip)
        return;
    q->have_first_skip = true;
    q->first_skip_partition = r->partition;
    q->first_skip_offset = r->offset;
    snprintf(q->first_skip_reason, sizeof q->first_skip_reason, "%s", why ? why : "");
}

/* ---- query.c: the per-record steps follow mode runs too ------------------------------------ */

/* Filter node ni over q->vals (the current record's fields). */
bool sq_eval(struct squery *q, uint32_t ni);
/* The group of the current record's group_by values in window wstart (0 without windows),
 * created when new (a heap block in follow mode, in q->arena otherwise). 0 or a limit error. */
int sq_find_group(struct squery *q, int64_t wstart, struct group **out);
/* Add the current record to g's measures. 0 or a limit error. */
int sq_update_measures(struct squery *q, struct group *g);
/* qsort_r comparator over struct group * by the aggregate order_by (ctx: q); ties by arrival. */
int sq_groups_cmp(const void *a, const void *b, void *ctx);
/* One aggregate row: {"key","group",["window_start_ms","window_end_ms",]measures...}; kb is
 * scratch for the key text. */
void sq_write_agg(const struct squery *q, struct jw *w, const struct group *g, struct sbuf *kb);

/* ---- query_follow.c: follow mode, called from the other parts ------------------------------ */

/* Create q->fo with the parsed options (compile). 0 or ERR_NOMEM. */
int sq_follow_init(struct squery *q, const struct squery_follow_opts *o);
/* squery_feed in follow mode. */
int sq_follow_feed(struct squery *q, const struct srec *r);
/* Free every follow group and q->fo; sets q->ngroups = 0 and q->fo = NULL. */
void sq_follow_free(struct squery *q);
/* sq_find_group's allocation in follow mode: the group as one heap block, counted in fo->bytes. */
int sq_follow_new_group(struct squery *q, uint64_t h, int64_t wstart, struct group **out);
/* Copy v (unescaped) to the heap, counted in fo->bytes (count_distinct values in follow mode). */
int sq_follow_copy_val(struct squery *q, struct sval *v);

/* query.c: the stats members shared by squery_finish and squery_follow_stats. */
void sq_write_common_stats(const struct squery *q, struct jw *w);

#endif
