/* query.c -- the bounded query engine (query.h); semantics in docs/STREAM.md.
 *
 *   request --compile--> plan: fields[] (each payload path extracted once per record),
 *                              filter program (nodes[], AND/ANY tree), measures, windows,
 *                              projection, order keys
 *   record --feed--> time range? --> decode (one scan, all paths) --> filter --> matched
 *                                                                         |--> rows (kept, top-N)
 *                                                                         '--> windows x group
 *                                                                              --> measures
 *   finish --> rows (ordered, limited), aggregates (ordered, limited), stats
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
 */
#include "stream/query.h"

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
/* Plan                                                                                        */
/* ------------------------------------------------------------------------------------------ */

enum qop {
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NIN, OP_CONTAINS, OP_EXISTS, OP_IS_NULL,
    OP_ALL, OP_ANY,
};
static const char *const op_names[] = {"eq", "ne", "lt", "le", "gt", "ge", "in", "nin", "contains",
                                       "exists", "is_null"};

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
    bool num_exact;  /* operand is a number held exactly by operand_d: see eval() */
    double operand_d;
    struct sval *list;
    uint32_t nlist;
};

enum mop { M_COUNT, M_SUM, M_AVG, M_MIN, M_MAX, M_COUNT_DISTINCT };
static const char *const mop_names[] = {"count", "sum", "avg", "min", "max", "count_distinct"};

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

    struct follow *fo; /* follow mode ("follow": true): the section "Follow" below; else NULL */
};

/* Follow mode hooks (the section "Follow" at the end of this file). */
static int follow_new_group(struct squery *q, uint64_t h, int64_t wstart, struct group **out);
static int follow_copy_val(struct squery *q, struct sval *v);
static int follow_feed(struct squery *q, const struct srec *r);
static void follow_free(struct squery *q);

void squery_limits_default(struct squery_limits *l)
{
    l->max_records_scanned = 1000000;
    l->max_groups = 100000;
    l->max_distinct_values = 1000000;
    l->max_rows = 10000;
    l->max_response_bytes = 32ull << 20;
    l->max_memory_bytes = 256ull << 20;
    l->max_filter_nodes = 256;
    l->max_windows_per_record = 1000;
}

/* ------------------------------------------------------------------------------------------ */
/* Compile                                                                                     */
/* ------------------------------------------------------------------------------------------ */

struct cctx {
    struct squery *q;
    struct serr *e;
};

static int compile_follow(struct cctx *c, json_t *req);

static int bad(struct cctx *c, const char *path, const char *msg)
{
    serr_set(c->e, path, "%s", msg);
    return ERR_UNPROCESSABLE;
}

static int over(struct cctx *c, const char *path, const char *limit, uint64_t v)
{
    serr_set(c->e, path, "exceeds the limit %s (%llu)", limit, (unsigned long long)v);
    return ERR_QUERY_LIMIT;
}

/* Unknown members are errors: a typo ("gruop_by") must not silently change the answer. */
static int check_members(struct cctx *c, json_t *obj, const char *path, const char *const *ok)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool known = false;
        for (size_t i = 0; ok[i] && !known; i++)
            known = strcmp(k, ok[i]) == 0;
        if (!known) {
            char p[200];
            snprintf(p, sizeof p, "%s/%s", path, k);
            return bad(c, p, "unknown member");
        }
    }
    return 0;
}

static void *q_alloc(struct squery *q, size_t n)
{
    void *p = arena_alloc(&q->arena, n ? n : 1);
    if (p)
        memset(p, 0, n);
    return p;
}

static char *q_strdup(struct squery *q, const char *s, size_t n)
{
    return arena_strndup(&q->arena, s, n);
}

static int nomem(struct cctx *c)
{
    serr_set(c->e, "", "the query plan exceeds max_memory_bytes");
    return ERR_QUERY_LIMIT;
}

/* Intern a field name; returns its index or a negative error. */
static int add_field(struct cctx *c, json_t *j, const char *path)
{
    struct squery *q = c->q;
    if (!json_is_string(j))
        return bad(c, path, "a field must be a string");
    const char *t = json_string_value(j);
    size_t n = json_string_length(j);
    for (uint32_t i = 0; i < q->nfields; i++)
        if (strlen(q->fields[i].text) == n && memcmp(q->fields[i].text, t, n) == 0)
            return (int)i;
    if (q->nfields >= 1024)
        return bad(c, path, "too many distinct fields (at most 1024)");
    if (q->nfields == q->cap_fields) {
        uint32_t cap = q->cap_fields ? q->cap_fields * 2 : 8;
        struct qfield *nf = q_alloc(q, cap * sizeof *nf);
        struct spath *np = q_alloc(q, cap * sizeof *np);
        int32_t *npf = q_alloc(q, cap * sizeof *npf);
        if (!nf || !np || !npf)
            return nomem(c);
        if (q->nfields) {
            memcpy(nf, q->fields, q->nfields * sizeof *nf);
            memcpy(np, q->paths, q->npaths * sizeof *np);
            memcpy(npf, q->path_field, q->npaths * sizeof *npf);
        }
        q->fields = nf;
        q->paths = np;
        q->path_field = npf;
        q->cap_fields = cap;
    }
    char *text = q_strdup(q, t, n);
    if (!text)
        return nomem(c);
    struct qfield *f = &q->fields[q->nfields];
    f->text = text;
    f->path = -1;
    if (smeta_parse(text, n, &f->meta, &f->header) != 0)
        return bad(c, path,
                   "unknown metadata field (use $offset, $partition, $timestamp_ms, $key or "
                   "$headers.<name>; quote a payload member as `$name`)");
    if (f->meta == SMETA_NONE) {
        if (memchr(text, 0, n) || spath_parse(text, n, &q->paths[q->npaths]) != 0)
            return bad(c, path, "not a valid field path (a.b.c, items[0].sku, `a.b`)");
        q->path_field[q->npaths] = (int32_t)q->nfields;
        f->path = (int32_t)q->npaths++;
    }
    return (int)q->nfields++;
}

static int scalar_operand(struct cctx *c, json_t *j, const char *path, struct sval *out)
{
    memset(out, 0, sizeof *out);
    switch (json_typeof(j)) {
    case JSON_INTEGER:
        out->type = SV_INT;
        out->i = (int64_t)json_integer_value(j);
        return 0;
    case JSON_REAL:
        out->type = SV_DOUBLE;
        out->d = json_real_value(j);
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        out->type = SV_BOOL;
        out->b = json_is_true(j);
        return 0;
    case JSON_STRING: {
        size_t n = json_string_length(j);
        char *s = q_strdup(c->q, json_string_value(j), n);
        if (!s)
            return nomem(c);
        out->type = SV_STR;
        out->p = s;
        out->len = (uint32_t)n;
        return 0;
    }
    case JSON_NULL:
        return bad(c, path, "a comparison with null is never true; use the is_null op");
    default:
        return bad(c, path, "the operand must be a string, number or boolean");
    }
}

static int compile_cond(struct cctx *c, json_t *j, const char *path, int depth);

static int compile_group(struct cctx *c, json_t *arr, const char *path, uint8_t op, int depth)
{
    struct squery *q = c->q;
    if (!json_is_array(arr))
        return bad(c, path, "must be an array of conditions");
    if (depth > 8)
        return bad(c, path, "filter groups are nested too deep (at most 8)");
    size_t n = json_array_size(arr);
    uint32_t kids[256];
    if (n > 256)
        return over(c, path, "max_filter_nodes", q->lim.max_filter_nodes);
    for (size_t i = 0; i < n; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/%zu", path, i);
        int k = compile_cond(c, json_array_get(arr, i), p, depth + 1);
        if (k < 0)
            return k;
        kids[i] = (uint32_t)k;
    }
    if (q->nnodes >= q->lim.max_filter_nodes)
        return over(c, path, "max_filter_nodes", q->lim.max_filter_nodes);
    uint32_t *nk = q_alloc(q, (q->nkids + n) * sizeof *nk);
    if (!nk)
        return nomem(c);
    if (q->nkids)
        memcpy(nk, q->kids, q->nkids * sizeof *nk);
    memcpy(nk + q->nkids, kids, n * sizeof *nk);
    q->kids = nk;
    struct qnode *nd = &q->nodes[q->nnodes];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->kid0 = q->nkids;
    nd->nkid = (uint32_t)n;
    q->nkids += (uint32_t)n;
    return (int)q->nnodes++;
}

static int compile_cond(struct cctx *c, json_t *j, const char *path, int depth)
{
    struct squery *q = c->q;
    char p[176];
    if (!json_is_object(j))
        return bad(c, path, "a condition must be an object {\"field\",\"op\",\"value\"} or {\"any\":[...]}");
    json_t *any = json_object_get(j, "any"), *all = json_object_get(j, "all");
    if (any || all) {
        if (json_object_size(j) != 1)
            return bad(c, path, "a group has exactly one member, \"any\" or \"all\"");
        snprintf(p, sizeof p, "%s/%s", path, any ? "any" : "all");
        return compile_group(c, any ? any : all, p, any ? OP_ANY : OP_ALL, depth);
    }
    json_t *jf = json_object_get(j, "field"), *jo = json_object_get(j, "op"),
           *jv = json_object_get(j, "value");
    snprintf(p, sizeof p, "%s/field", path);
    if (!jf)
        return bad(c, p, "missing");
    int f = add_field(c, jf, p);
    if (f < 0)
        return f;
    snprintf(p, sizeof p, "%s/op", path);
    if (!json_is_string(jo))
        return bad(c, p, "missing or not a string (eq ne lt le gt ge in nin contains exists is_null)");
    int op = -1;
    for (int i = 0; i <= OP_IS_NULL; i++)
        if (strcmp(json_string_value(jo), op_names[i]) == 0)
            op = i;
    if (op < 0)
        return bad(c, p, "unknown op (eq ne lt le gt ge in nin contains exists is_null)");
    const char *keys_ok[] = {"field", "op", "value"};
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        bool known = false;
        for (int i = 0; i < 3; i++)
            known |= strcmp(k, keys_ok[i]) == 0;
        if (!known) {
            snprintf(p, sizeof p, "%s/%s", path, k);
            return bad(c, p, "unknown member of a condition");
        }
    }
    if (q->nnodes >= q->lim.max_filter_nodes)
        return over(c, path, "max_filter_nodes", q->lim.max_filter_nodes);
    struct qnode nd;
    memset(&nd, 0, sizeof nd);
    nd.op = (uint8_t)op;
    nd.field = (uint16_t)f;
    snprintf(p, sizeof p, "%s/value", path);
    if (op == OP_EXISTS || op == OP_IS_NULL) {
        if (jv && !json_is_boolean(jv))
            return bad(c, p, "for exists/is_null, value is optional and must be a boolean");
        nd.negate = jv && json_is_false(jv);
    } else if (op == OP_IN || op == OP_NIN) {
        if (!json_is_array(jv))
            return bad(c, p, "in/nin need an array of values");
        size_t n = json_array_size(jv);
        if (n > 10000)
            return bad(c, p, "at most 10000 values");
        nd.list = q_alloc(q, n * sizeof *nd.list);
        if (!nd.list)
            return nomem(c);
        nd.nlist = (uint32_t)n;
        for (size_t i = 0; i < n; i++) {
            char pi[192];
            snprintf(pi, sizeof pi, "%s/%zu", p, i);
            int rc = scalar_operand(c, json_array_get(jv, i), pi, &nd.list[i]);
            if (rc)
                return rc;
        }
    } else {
        if (!jv)
            return bad(c, p, "missing");
        int rc = scalar_operand(c, jv, p, &nd.operand);
        if (rc)
            return rc;
        if (nd.operand.type == SV_DOUBLE ||
            (nd.operand.type == SV_INT && nd.operand.i >= -(INT64_C(1) << 53) &&
             nd.operand.i <= INT64_C(1) << 53)) {
            nd.num_exact = true;
            nd.operand_d = nd.operand.type == SV_DOUBLE ? nd.operand.d : (double)nd.operand.i;
        }
    }
    q->nodes[q->nnodes] = nd;
    return (int)q->nnodes++;
}

static bool get_u64(json_t *j, uint64_t *out)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0)
        return false;
    *out = (uint64_t)json_integer_value(j);
    return true;
}

static int compile_source(struct cctx *c, json_t *req)
{
    struct squery *q = c->q;
    struct squery_source *s = &q->src;
    json_t *src = json_object_get(req, "source");
    if (!json_is_object(src))
        return bad(c, "/source", "missing or not an object");
    static const char *const src_ok[] = {"topic", "group", "partition", "partitions", "offset",
                                         "end_offset", "from_ms", "to_ms", "limit", "commit", "decode",
                                         NULL}; /* decode: built by the host (api/stream.c) */
    int rc = check_members(c, src, "/source", src_ok);
    if (rc)
        return rc;
    json_t *t = json_object_get(src, "topic");
    if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) > SQUERY_NAME_MAX)
        return bad(c, "/source/topic", "missing or not a topic name");
    memcpy(s->topic, json_string_value(t), json_string_length(t) + 1);
    json_t *g = json_object_get(src, "group");
    if (g) {
        if (!json_is_string(g) || json_string_length(g) > SQUERY_NAME_MAX)
            return bad(c, "/source/group", "not a group name");
        memcpy(s->group, json_string_value(g), json_string_length(g) + 1);
    }
    json_t *p1 = json_object_get(src, "partition"), *pl = json_object_get(src, "partitions");
    if (p1 && pl)
        return bad(c, "/source/partitions", "give either partition or partitions");
    uint64_t u;
    if (p1) {
        if (!get_u64(p1, &u) || u > UINT32_MAX)
            return bad(c, "/source/partition", "not a partition number");
        s->partitions = q_alloc(q, sizeof *s->partitions);
        if (!s->partitions)
            return nomem(c);
        s->partitions[0] = (uint32_t)u;
        s->partition_count = 1;
    } else if (pl && !(json_is_string(pl) && strcmp(json_string_value(pl), "all") == 0)) {
        if (!json_is_array(pl) || json_array_size(pl) == 0)
            return bad(c, "/source/partitions", "an array of partition numbers or \"all\"");
        size_t n = json_array_size(pl);
        if (n > SQUERY_PARTITIONS_MAX)
            return bad(c, "/source/partitions", "too many partitions");
        s->partitions = q_alloc(q, n * sizeof *s->partitions);
        if (!s->partitions)
            return nomem(c);
        for (size_t i = 0; i < n; i++) {
            char p[64];
            snprintf(p, sizeof p, "/source/partitions/%zu", i);
            if (!get_u64(json_array_get(pl, i), &u) || u > UINT32_MAX)
                return bad(c, p, "not a partition number");
            for (size_t k = 0; k < i; k++)
                if (s->partitions[k] == (uint32_t)u)
                    return bad(c, p, "listed twice");
            s->partitions[i] = (uint32_t)u;
        }
        s->partition_count = (uint32_t)n;
    } else {
        s->all_partitions = true;
    }
    json_t *o = json_object_get(src, "offset");
    if (o && !json_is_null(o)) {
        /* the original treats offset <= 0 as "from the beginning" */
        if (!json_is_integer(o))
            return bad(c, "/source/offset", "not an offset");
        s->has_offset = true;
        s->offset = json_integer_value(o) < 0 ? 0 : (uint64_t)json_integer_value(o);
    }
    json_t *eo = json_object_get(src, "end_offset");
    if (eo) {
        if (!get_u64(eo, &s->end_offset))
            return bad(c, "/source/end_offset", "not an offset");
        s->has_end_offset = true;
    }
    json_t *fm = json_object_get(src, "from_ms"), *tm = json_object_get(src, "to_ms");
    if (fm) {
        if (!json_is_integer(fm))
            return bad(c, "/source/from_ms", "not a timestamp in ms");
        s->has_from_ms = true;
        s->from_ms = (int64_t)json_integer_value(fm);
    }
    if (tm) {
        if (!json_is_integer(tm))
            return bad(c, "/source/to_ms", "not a timestamp in ms");
        s->has_to_ms = true;
        s->to_ms = (int64_t)json_integer_value(tm);
    }
    s->limit = SQUERY_DEFAULT_LIMIT;
    json_t *l = json_object_get(src, "limit");
    if (l) {
        if (!get_u64(l, &s->limit) || s->limit == 0)
            return bad(c, "/source/limit", "a positive number of records");
        if (s->limit > q->lim.max_records_scanned)
            return over(c, "/source/limit", "max_records_scanned", q->lim.max_records_scanned);
    }
    json_t *cm = json_object_get(src, "commit");
    if (!cm)
        cm = json_object_get(req, "commit");
    if (cm) {
        if (!json_is_boolean(cm))
            return bad(c, "/source/commit", "a boolean");
        s->commit = json_is_true(cm);
        if (s->commit && !s->group[0])
            return bad(c, "/source/group", "commit needs a group");
    }
    return 0;
}

/* order_by: "name", "-name", {"field":"name","order":"asc|desc"} or an array of those. */
static int compile_order(struct cctx *c, json_t *j, const char *path, bool aggregate,
                         struct okey **out, uint32_t *nout)
{
    struct squery *q = c->q;
    size_t n = json_is_array(j) ? json_array_size(j) : 1;
    if (n == 0 || n > 16)
        return bad(c, path, "one to 16 sort keys");
    struct okey *ks = q_alloc(q, n * sizeof *ks);
    if (!ks)
        return nomem(c);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(j) ? json_array_get(j, i) : j;
        char p[176];
        if (json_is_array(j))
            snprintf(p, sizeof p, "%s/%zu", path, i);
        else
            snprintf(p, sizeof p, "%s", path);
        json_t *name = e;
        bool desc = false;
        if (json_is_object(e)) {
            name = json_object_get(e, "field");
            json_t *ord = json_object_get(e, "order");
            json_t *d = json_object_get(e, "desc");
            if (ord) {
                if (!json_is_string(ord) || (strcmp(json_string_value(ord), "asc") &&
                                             strcmp(json_string_value(ord), "desc")))
                    return bad(c, p, "order is \"asc\" or \"desc\"");
                desc = strcmp(json_string_value(ord), "desc") == 0;
            }
            if (d) {
                if (!json_is_boolean(d))
                    return bad(c, p, "desc is a boolean");
                desc = json_is_true(d);
            }
        }
        if (!json_is_string(name) || json_string_length(name) == 0)
            return bad(c, p, "a sort key names a field");
        const char *nm = json_string_value(name);
        size_t nl = json_string_length(name);
        if (!json_is_object(e) && nm[0] == '-' && nl > 1) {
            desc = true;
            nm++;
            nl--;
        }
        ks[i].desc = desc;
        if (!aggregate) {
            json_t *tmp = json_stringn(nm, nl);
            int f = tmp ? add_field(c, tmp, p) : nomem(c);
            json_decref(tmp);
            if (f < 0)
                return f;
            ks[i].kind = OK_FIELD;
            ks[i].idx = f;
            continue;
        }
        bool found = false;
        for (uint32_t m = 0; m < q->nmeasures && !found; m++)
            if (strlen(q->measures[m].as) == nl && memcmp(q->measures[m].as, nm, nl) == 0) {
                ks[i].kind = OK_MEASURE;
                ks[i].idx = (int32_t)m;
                found = true;
            }
        for (uint32_t g = 0; g < q->ngroup_by && !found; g++) {
            const char *t = q->fields[q->group_by[g]].text;
            if (strlen(t) == nl && memcmp(t, nm, nl) == 0) {
                ks[i].kind = OK_GROUP;
                ks[i].idx = (int32_t)g;
                found = true;
            }
        }
        if (!found && nl == 3 && memcmp(nm, "key", 3) == 0) {
            ks[i].kind = OK_KEY;
            found = true;
        }
        if (!found && q->windowed && nl == 15 && memcmp(nm, "window_start_ms", 15) == 0) {
            ks[i].kind = OK_WSTART;
            found = true;
        }
        if (!found && q->windowed && nl == 13 && memcmp(nm, "window_end_ms", 13) == 0) {
            ks[i].kind = OK_WEND;
            found = true;
        }
        if (!found)
            return bad(c, p, "aggregates sort by a measure name, a group_by field, key, "
                             "window_start_ms or window_end_ms");
    }
    *out = ks;
    *nout = (uint32_t)n;
    return 0;
}

static int compile_aggregate(struct cctx *c, json_t *agg)
{
    struct squery *q = c->q;
    if (!json_is_object(agg))
        return bad(c, "/aggregate", "not an object");
    static const char *const agg_ok[] = {"group_by", "measures", "order_by", "limit", NULL};
    int rc = check_members(c, agg, "/aggregate", agg_ok);
    if (rc)
        return rc;
    q->aggregate = true;
    json_t *gb = json_object_get(agg, "group_by");
    if (gb) {
        if (!json_is_array(gb) || json_array_size(gb) > 16)
            return bad(c, "/aggregate/group_by", "an array of at most 16 fields");
        q->ngroup_by = (uint32_t)json_array_size(gb);
        q->group_by = q_alloc(q, q->ngroup_by * sizeof *q->group_by);
        if (!q->group_by)
            return nomem(c);
        for (uint32_t i = 0; i < q->ngroup_by; i++) {
            char p[64];
            snprintf(p, sizeof p, "/aggregate/group_by/%u", i);
            int f = add_field(c, json_array_get(gb, i), p);
            if (f < 0)
                return f;
            q->group_by[i] = f;
        }
    }
    json_t *ms = json_object_get(agg, "measures");
    if (ms && (!json_is_array(ms) || json_array_size(ms) == 0 || json_array_size(ms) > 64))
        return bad(c, "/aggregate/measures", "an array of one to 64 measures");
    q->nmeasures = ms ? (uint32_t)json_array_size(ms) : 1;
    q->measures = q_alloc(q, q->nmeasures * sizeof *q->measures);
    if (!q->measures)
        return nomem(c);
    if (!ms) {
        q->measures[0] = (struct qmeasure){M_COUNT, -1, "count"};
    }
    for (uint32_t i = 0; ms && i < q->nmeasures; i++) {
        json_t *m = json_array_get(ms, i);
        char p[96];
        snprintf(p, sizeof p, "/aggregate/measures/%u", i);
        if (!json_is_object(m))
            return bad(c, p, "a measure is {\"op\",\"field\",\"as\"}");
        static const char *const m_ok[] = {"op", "field", "as", NULL};
        rc = check_members(c, m, p, m_ok);
        if (rc)
            return rc;
        json_t *jo = json_object_get(m, "op"), *jf = json_object_get(m, "field"),
               *ja = json_object_get(m, "as");
        snprintf(p, sizeof p, "/aggregate/measures/%u/op", i);
        int op = -1;
        for (int k = 0; jo && json_is_string(jo) && k <= M_COUNT_DISTINCT; k++)
            if (strcmp(json_string_value(jo), mop_names[k]) == 0)
                op = k;
        if (op < 0)
            return bad(c, p, "count, sum, avg, min, max or count_distinct");
        struct qmeasure *qm = &q->measures[i];
        qm->op = (uint8_t)op;
        qm->field = -1;
        snprintf(p, sizeof p, "/aggregate/measures/%u/field", i);
        if (jf) {
            int f = add_field(c, jf, p);
            if (f < 0)
                return f;
            qm->field = f;
        } else if (op != M_COUNT) {
            return bad(c, p, "this measure needs a field");
        }
        snprintf(p, sizeof p, "/aggregate/measures/%u/as", i);
        if (ja) {
            if (!json_is_string(ja) || json_string_length(ja) == 0 || json_string_length(ja) > 255)
                return bad(c, p, "a non-empty name");
            qm->as = q_strdup(q, json_string_value(ja), json_string_length(ja));
        } else if (qm->field < 0) {
            qm->as = "count";
        } else {
            char nm[600];
            snprintf(nm, sizeof nm, "%s_%s", mop_names[op], q->fields[qm->field].text);
            qm->as = q_strdup(q, nm, strlen(nm));
        }
        if (!qm->as)
            return nomem(c);
        static const char *reserved[] = {"key", "group", "window_start_ms", "window_end_ms"};
        for (int r = 0; r < 4; r++)
            if (strcmp(qm->as, reserved[r]) == 0)
                return bad(c, p, "this name is taken by the aggregate row itself");
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(q->measures[k].as, qm->as) == 0)
                return bad(c, p, "two measures have the same name; set \"as\"");
    }
    q->agg_limit = q->lim.max_groups;
    json_t *lim = json_object_get(agg, "limit");
    if (lim && (!get_u64(lim, &q->agg_limit)))
        return bad(c, "/aggregate/limit", "a number of aggregate rows");
    return 0;
}

static int compile_window(struct cctx *c, json_t *w)
{
    struct squery *q = c->q;
    if (!json_is_object(w))
        return bad(c, "/window", "not an object");
    if (!q->aggregate)
        return bad(c, "/window", "a window applies to aggregates; add \"aggregate\"");
    static const char *const w_ok[] = {"type", "size_ms", "advance_ms", "allowed_lateness_ms",
                                       "late", "time_field", NULL};
    int rc = check_members(c, w, "/window", w_ok);
    if (rc)
        return rc;
    json_t *t = json_object_get(w, "type");
    const char *type = t && json_is_string(t) ? json_string_value(t) : "tumbling";
    if (t && !json_is_string(t))
        return bad(c, "/window/type", "tumbling or hopping");
    bool hopping = strcmp(type, "hopping") == 0;
    if (!hopping && strcmp(type, "tumbling") != 0)
        return bad(c, "/window/type", "tumbling or hopping (session windows are not supported)");
    uint64_t u;
    if (!get_u64(json_object_get(w, "size_ms"), &u) || u == 0 || u > (uint64_t)1 << 52)
        return bad(c, "/window/size_ms", "missing or not a positive number of ms");
    q->size_ms = (int64_t)u;
    q->advance_ms = q->size_ms;
    json_t *adv = json_object_get(w, "advance_ms");
    if (adv) {
        if (!hopping)
            return bad(c, "/window/advance_ms", "only hopping windows advance");
        if (!get_u64(adv, &u) || u == 0 || (int64_t)u > q->size_ms)
            return bad(c, "/window/advance_ms", "a positive number of ms, at most size_ms");
        q->advance_ms = (int64_t)u;
    } else if (hopping) {
        return bad(c, "/window/advance_ms", "a hopping window needs advance_ms");
    }
    if ((uint64_t)((q->size_ms + q->advance_ms - 1) / q->advance_ms) > q->lim.max_windows_per_record)
        return over(c, "/window/advance_ms", "max_windows_per_record", q->lim.max_windows_per_record);
    json_t *al = json_object_get(w, "allowed_lateness_ms");
    if (al) {
        if (!get_u64(al, &u) || u > (uint64_t)1 << 52)
            return bad(c, "/window/allowed_lateness_ms", "a number of ms");
        q->lateness_ms = (int64_t)u;
    }
    json_t *late = json_object_get(w, "late");
    if (late) {
        if (!json_is_string(late) || (strcmp(json_string_value(late), "drop") &&
                                      strcmp(json_string_value(late), "include")))
            return bad(c, "/window/late", "\"drop\" (the default) or \"include\"");
        q->late_include = strcmp(json_string_value(late), "include") == 0;
    }
    q->time_field = -1;
    json_t *tf = json_object_get(w, "time_field");
    if (tf) {
        int f = add_field(c, tf, "/window/time_field");
        if (f < 0)
            return f;
        q->time_field = f;
    }
    q->windowed = true;
    return 0;
}

static int compile_projection(struct cctx *c, json_t *req, json_t *tr)
{
    struct squery *q = c->q;
    json_t *lf = tr ? json_object_get(tr, "left_fields") : NULL;
    json_t *sel = json_object_get(req, "select");
    if (!sel && tr)
        sel = json_object_get(tr, "select");
    if (lf && sel)
        return bad(c, "/select", "give either select or transform.left_fields");
    json_t *list = sel ? sel : lf;
    const char *base = sel ? "/select" : "/transform/left_fields";
    if (!list) {
        q->rows_raw = true;
        return 0;
    }
    if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > 256)
        return bad(c, base, "an array of one to 256 fields");
    q->nsel = (uint32_t)json_array_size(list);
    q->sel = q_alloc(q, q->nsel * sizeof *q->sel);
    if (!q->sel)
        return nomem(c);
    for (uint32_t i = 0; i < q->nsel; i++) {
        json_t *e = json_array_get(list, i);
        char p[96];
        snprintf(p, sizeof p, "%s/%u", base, i);
        json_t *f = e, *as = NULL;
        if (json_is_object(e)) {
            f = json_object_get(e, "field");
            as = json_object_get(e, "as");
            snprintf(p, sizeof p, "%s/%u/field", base, i);
        }
        int fi = add_field(c, f ? f : json_null(), p);
        if (fi < 0)
            return fi;
        q->sel[i].field = fi;
        if (as) {
            snprintf(p, sizeof p, "%s/%u/as", base, i);
            if (!json_is_string(as) || json_string_length(as) == 0)
                return bad(c, p, "a non-empty name");
            q->sel[i].as = q_strdup(q, json_string_value(as), json_string_length(as));
            if (!q->sel[i].as)
                return nomem(c);
        } else {
            q->sel[i].as = q->fields[fi].text;
        }
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(q->sel[k].as, q->sel[i].as) == 0)
                return bad(c, p, "two output fields have the same name; set \"as\"");
    }
    return 0;
}

static int compile(struct cctx *c, json_t *req)
{
    struct squery *q = c->q;
    if (!json_is_object(req))
        return bad(c, "", "the request must be a JSON object");
    static const char *known[] = {"source", "filter", "aggregate", "window", "transform", "select",
                                  "order_by", "limit", "commit", "decode", "follow"};
    const char *k;
    json_t *v;
    json_object_foreach(req, k, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(k, known[i]) == 0;
        if (!ok) {
            char p[128];
            snprintf(p, sizeof p, "/%s", k);
            return bad(c, p, "unknown member of the query");
        }
    }
    int rc = compile_source(c, req);
    if (rc)
        return rc;
    q->nodes = q_alloc(q, q->lim.max_filter_nodes * sizeof *q->nodes);
    if (!q->nodes)
        return nomem(c);
    q->root = -1;
    json_t *f = json_object_get(req, "filter");
    if (f && !json_is_null(f)) {
        int r;
        if (json_is_array(f))
            r = json_array_size(f) ? compile_group(c, f, "/filter", OP_ALL, 0) : -1;
        else
            r = compile_cond(c, f, "/filter", 0);
        if (r < -1)
            return r;
        q->root = r;
    }
    json_t *agg = json_object_get(req, "aggregate");
    if (agg) {
        rc = compile_aggregate(c, agg);
        if (rc)
            return rc;
    }
    json_t *w = json_object_get(req, "window");
    if (w) {
        rc = compile_window(c, w);
        if (rc)
            return rc;
    }
    json_t *aob = agg ? json_object_get(agg, "order_by") : NULL;
    if (aob) {
        /* resolved after the window: window_start_ms is a sort key only when windowed */
        rc = compile_order(c, aob, "/aggregate/order_by", true, &q->agg_order, &q->nagg_order);
        if (rc)
            return rc;
    }
    json_t *tr = json_object_get(req, "transform");
    if (tr && !json_is_object(tr))
        return bad(c, "/transform", "not an object");
    static const char *const tr_ok[] = {"left_fields", "emit_rows", "select", "order_by", NULL};
    if (tr && (rc = check_members(c, tr, "/transform", tr_ok)))
        return rc;
    rc = compile_projection(c, req, tr);
    if (rc)
        return rc;
    /* emit_rows: explicit; else 0 when the request has transform or aggregate (the original
     * emitted no rows by default); else every matching row up to max_rows. */
    json_t *er = tr ? json_object_get(tr, "emit_rows") : NULL;
    if (er) {
        if (!get_u64(er, &q->emit_rows))
            return bad(c, "/transform/emit_rows", "a number of rows");
        if (q->emit_rows > q->lim.max_rows)
            return over(c, "/transform/emit_rows", "max_rows", q->lim.max_rows);
    } else {
        q->emit_rows = (tr || q->aggregate) ? 0 : q->lim.max_rows;
    }
    json_t *ob = tr ? json_object_get(tr, "order_by") : NULL;
    const char *obp = "/transform/order_by";
    json_t *top_ob = json_object_get(req, "order_by"), *top_lim = json_object_get(req, "limit");
    if (top_ob || top_lim) {
        /* shorthand: applies to the aggregates when there are some, else to the rows */
        if (q->aggregate) {
            if (top_ob) {
                rc = compile_order(c, top_ob, "/order_by", true, &q->agg_order, &q->nagg_order);
                if (rc)
                    return rc;
            }
            if (top_lim && !get_u64(top_lim, &q->agg_limit))
                return bad(c, "/limit", "a number of aggregate rows");
        } else {
            if (top_ob && ob)
                return bad(c, "/order_by", "given twice (also in transform)");
            if (top_ob) {
                ob = top_ob;
                obp = "/order_by";
            }
            if (top_lim) {
                if (!get_u64(top_lim, &q->emit_rows))
                    return bad(c, "/limit", "a number of rows");
                if (q->emit_rows > q->lim.max_rows)
                    return over(c, "/limit", "max_rows", q->lim.max_rows);
            }
        }
    }
    if (ob) {
        rc = compile_order(c, ob, obp, false, &q->row_order, &q->nrow_order);
        if (rc)
            return rc;
    }
    json_t *dec = json_object_get(req, "decode");
    if (dec && !(json_is_string(dec) && strcmp(json_string_value(dec), "json") == 0))
        return bad(c, "/decode", "only \"json\" is decoded here; other formats are set by the "
                                 "server from the topic's schema");
    q->vals = q_alloc(q, (q->nfields + 1) * sizeof *q->vals);
    q->pvals = q_alloc(q, (q->npaths + 1) * sizeof *q->pvals);
    if (!q->vals || !q->pvals)
        return nomem(c);
    return compile_follow(c, req);
}

int squery_compile(json_t *req, const struct squery_limits *lim, struct squery **out,
                   struct serr *e)
{
    *out = NULL;
    struct squery *q = xcalloc(1, sizeof *q);
    if (!q)
        return ERR_NOMEM;
    squery_limits_default(&q->lim);
    if (lim) {
#define TAKE(f) if (lim->f) q->lim.f = lim->f
        TAKE(max_records_scanned); TAKE(max_groups); TAKE(max_distinct_values); TAKE(max_rows);
        TAKE(max_response_bytes); TAKE(max_memory_bytes); TAKE(max_filter_nodes);
        TAKE(max_windows_per_record);
#undef TAKE
    }
    arena_init(&q->arena, q->lim.max_memory_bytes);
    arena_init(&q->scratch, 16u << 20);
    struct sfmt *jf;
    sfmt_json_new(&jf);
    q->fmt = jf;
    struct cctx c = {q, e};
    if (e)
        e->path[0] = e->msg[0] = 0;
    int rc = compile(&c, req);
    if (rc) {
        squery_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

const struct squery_source *squery_source(const struct squery *q) { return &q->src; }
void squery_set_format(struct squery *q, const struct sfmt *f) { q->fmt = f; }
const struct serr *squery_error(const struct squery *q) { return &q->err; }

static int limit_err(struct squery *q, const char *limit, uint64_t v)
{
    serr_set(&q->err, limit, "the query exceeds %s (%llu)", limit, (unsigned long long)v);
    return ERR_QUERY_LIMIT;
}

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
        return limit_err(q, "partitions", SQUERY_PARTITIONS_MAX);
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

static bool eval(struct squery *q, uint32_t ni)
{
    const struct qnode *n = &q->nodes[ni];
    if (n->op == OP_ALL) {
        for (uint32_t k = 0; k < n->nkid; k++)
            if (!eval(q, q->kids[n->kid0 + k]))
                return false;
        return true;
    }
    if (n->op == OP_ANY) {
        for (uint32_t k = 0; k < n->nkid; k++)
            if (eval(q, q->kids[n->kid0 + k]))
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

static bool has_bytes(const struct sval *v)
{
    return v->type == SV_STR || v->type == SV_BYTES || v->type == SV_JSON;
}

/* Copy v (unescaped) into the arena. */
static int copy_val(struct arena *a, struct sval *v)
{
    if (!has_bytes(v))
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
            return limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        if (has_bytes(&keys[i]))
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
        if (has_bytes(&keys[i])) {
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
        return limit_err(q, "max_response_bytes", q->lim.max_response_bytes);
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

static int find_group(struct squery *q, int64_t wstart, struct group **out)
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
        return limit_err(q, "max_groups", q->lim.max_groups);
    if (q->fo) {
        int rc = follow_new_group(q, h, wstart, out);
        if (rc)
            return rc;
        q->table[k] = *out;
        return 0;
    }
    struct group *g = arena_alloc(&q->arena, sizeof *g + q->nmeasures * sizeof(struct mstate));
    struct sval *keys = arena_alloc(&q->arena, (q->ngroup_by + 1) * sizeof *keys);
    if (!g || !keys)
        return limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
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
            return limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
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
        return limit_err(q, "max_distinct_values", q->lim.max_distinct_values);
    if (q->fo ? follow_copy_val(q, &v) : copy_val(&q->arena, &v))
        return limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
    s->e[k].h = h;
    s->e[k].v = v;
    s->count++;
    q->distinct_total++;
    return 0;
}

static int update_measures(struct squery *q, struct group *g)
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

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t d = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        d--;
    return d;
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
        int rc = find_group(q, 0, &g);
        return rc ? rc : update_measures(q, g);
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
    int64_t last = floor_div(t, q->advance_ms) * q->advance_ms;
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
        int rc = find_group(q, s, &g);
        if (rc)
            return rc;
        rc = update_measures(q, g);
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

static void note_skip(struct squery *q, const struct srec *r, const char *why)
{
    if (q->have_first_skip)
        return;
    q->have_first_skip = true;
    q->first_skip_partition = r->partition;
    q->first_skip_offset = r->offset;
    snprintf(q->first_skip_reason, sizeof q->first_skip_reason, "%s", why ? why : "");
}

int squery_feed(struct squery *q, const struct srec *r)
{
    if (q->fo)
        return follow_feed(q, r);
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
            note_skip(q, r, why ? why : "does not parse");
        } else if (rc == ERR_INVALID) {
            q->skipped_decode++;
            note_skip(q, r, why ? why : "does not decode");
        } else {
            return limit_err(q, "scratch_bytes", q->scratch.max_bytes);
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
    if (q->root >= 0 && !eval(q, (uint32_t)q->root))
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

static int groups_cmp(const void *a, const void *b, void *ctx)
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
static void write_agg(const struct squery *q, struct jw *w, const struct group *g, struct sbuf *kb)
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
            qsort_r(q->glist, q->ngroups, sizeof *q->glist, groups_cmp, q);
        struct sbuf kb;
        sbuf_init(&kb, 0);
        for (uint32_t i = 0; i < q->ngroups && nagg < q->agg_limit; i++, nagg++) {
            write_agg(q, w, q->glist[i], &kb);
            if (w->out->len - start > q->lim.max_response_bytes) {
                sbuf_free(&kb);
                return limit_err(q, "max_response_bytes", q->lim.max_response_bytes);
            }
        }
        sbuf_free(&kb);
    }
    jw_arr_close(w);

    jw_key(w, "stats");
    jw_obj_open(w);
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
        return limit_err(q, "max_response_bytes", q->lim.max_response_bytes);
    return 0;
}

void squery_free(struct squery *q)
{
    if (!q)
        return;
    if (q->fo)
        follow_free(q); /* frees its groups (heap blocks) and sets ngroups = 0 */
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

/* ------------------------------------------------------------------------------------------ */
/* Follow: continuous queries                                                                  */
/* ------------------------------------------------------------------------------------------ */
/*
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
 */

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

/* "follow": true | false | {"idle_timeout_ms": n, "heartbeat_ms": n}. What a bounded query may do
 * but an unbounded one cannot is refused here with its path, never ignored. */
static int compile_follow(struct cctx *c, json_t *req)
{
    struct squery *q = c->q;
    json_t *f = json_object_get(req, "follow");
    if (!f || json_is_false(f))
        return 0;
    struct squery_follow_opts o = {SQUERY_IDLE_TIMEOUT_MS_DEFAULT, SQUERY_HEARTBEAT_MS_DEFAULT,
                                   false};
    if (json_is_object(f)) {
        static const char *const f_ok[] = {"idle_timeout_ms", "heartbeat_ms", NULL};
        int rc = check_members(c, f, "/follow", f_ok);
        if (rc)
            return rc;
        uint64_t u;
        json_t *it = json_object_get(f, "idle_timeout_ms"), *hb = json_object_get(f, "heartbeat_ms");
        if (it) {
            if (!get_u64(it, &u) || u > 86400000)
                return bad(c, "/follow/idle_timeout_ms", "a number of ms up to 86400000 (0: never idle)");
            o.idle_timeout_ms = (int64_t)u;
        }
        if (hb) {
            if (!get_u64(hb, &u) || u < 100 || u > 300000)
                return bad(c, "/follow/heartbeat_ms", "a number of ms from 100 to 300000");
            o.heartbeat_ms = (int64_t)u;
        }
    } else if (!json_is_true(f)) {
        return bad(c, "/follow", "true, false or {\"idle_timeout_ms\", \"heartbeat_ms\"}");
    }
    json_t *tr = json_object_get(req, "transform");
    if (q->nrow_order)
        return bad(c, tr && json_object_get(tr, "order_by") ? "/transform/order_by" : "/order_by",
                   "a follow query emits rows as records arrive; they cannot be sorted");
    json_t *agg = json_object_get(req, "aggregate");
    if (q->aggregate && !q->windowed) {
        if (json_object_get(agg, "order_by") || json_object_get(req, "order_by"))
            return bad(c, json_object_get(agg, "order_by") ? "/aggregate/order_by" : "/order_by",
                       "without a window a follow query emits each group when it changes; "
                       "there is no order to apply");
        if (json_object_get(agg, "limit") || json_object_get(req, "limit"))
            return bad(c, json_object_get(agg, "limit") ? "/aggregate/limit" : "/limit",
                       "without a window a follow query emits each group when it changes; "
                       "limit applies per window");
    }
    if (q->src.commit)
        return bad(c, "/source/commit", "a follow query does not commit; a client resumes from "
                                        "an event's position (Last-Event-ID)");
    json_t *src = json_object_get(req, "source");
    o.limit_given = json_object_get(src, "limit") != NULL;
    if (!o.limit_given)
        q->src.limit = UINT64_MAX; /* unbounded: the follow runs until the client leaves */
    q->fo = xcalloc(1, sizeof *q->fo);
    if (!q->fo)
        return nomem(c);
    q->fo->opt = o;
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
            if (set->e[i].v.type != SV_MISSING && has_bytes(&set->e[i].v)) {
                q->fo->bytes -= set->e[i].v.len ? set->e[i].v.len : 1;
                xfree((void *)set->e[i].v.p);
            }
        xfree(set->e);
    }
    q->fo->bytes -= sizeof *g + q->nmeasures * sizeof(struct mstate) +
                    q->ngroup_by * sizeof(struct sval);
    for (uint32_t i = 0; i < q->ngroup_by; i++)
        if (has_bytes(&g->keys[i]))
            q->fo->bytes -= g->keys[i].len;
    xfree(g);
}

static void follow_free(struct squery *q)
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
static int follow_new_group(struct squery *q, uint64_t h, int64_t wstart, struct group **out)
{
    size_t head = sizeof(struct group) + q->nmeasures * sizeof(struct mstate);
    size_t need = head + q->ngroup_by * sizeof(struct sval);
    struct sval keys[16];
    for (uint32_t i = 0; i < q->ngroup_by; i++) {
        keys[i] = q->vals[q->group_by[i]];
        if (keys[i].type == SV_MISSING)
            keys[i].type = SV_NULL;
        if (keys[i].type == SV_STR && keys[i].escaped && sval_unescape(&keys[i], &q->scratch))
            return limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        if (has_bytes(&keys[i]))
            need += keys[i].len;
    }
    if (!follow_mem(q, need))
        return limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
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
        if (has_bytes(&keys[i])) {
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

static int follow_copy_val(struct squery *q, struct sval *v)
{
    if (!has_bytes(v))
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
    return groups_cmp(a, b, ctx);
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
            write_agg(q, &w, g, &fo->kb);
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
        rc = find_group(q, 0, &g);
        if (!rc)
            rc = update_measures(q, g);
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
    int64_t last = floor_div(t, q->advance_ms) * q->advance_ms, first = last;
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
        rc = find_group(q, s, &g);
        if (!rc)
            rc = update_measures(q, g);
        if (rc)
            return rc;
        struct fwin *fw = fwin_get(q, s);
        if (!fw)
            return limit_err(q, "max_memory_bytes", q->lim.max_memory_bytes);
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

static int follow_feed(struct squery *q, const struct srec *r)
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
            return limit_err(q, "scratch_bytes", q->scratch.max_bytes);
        if (!replay) {
            if (rc == ERR_CORRUPT)
                q->skipped_parse++;
            else
                q->skipped_decode++;
            note_skip(q, r, why ? why : rc == ERR_CORRUPT ? "does not parse" : "does not decode");
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
    if (q->root >= 0 && !eval(q, (uint32_t)q->root))
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
            write_agg(q, &w, g, &fo->kb);
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
