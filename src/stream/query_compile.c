/* query_compile.c -- the query compiler: a JSON request in, the plan of struct squery out
 * (query_int.h). The engine's drawing is in query.c; this is its first arrow:
 *
 *   request --compile_source--> source spec (topic, group, partitions, offsets, time range, limit)
 *           --compile_cond/group--> fields[] (interned: each payload path once) + filter nodes[]
 *           --compile_aggregate--> group_by, measures (named; "as" or op_field)
 *           --compile_window--> size/advance/lateness, time field
 *           --compile_order--> agg_order (after the window: window_start_ms is a key only then)
 *           --compile_projection--> select / left_fields, or the raw record
 *           --compile_order--> row_order; emit_rows; --compile_follow--> q->fo (query_follow.c)
 *
 * Invariants:
 *  1. Nothing is ignored: an unknown member, a wrong type or a value out of range is an error
 *     naming its place in the request (e->path, "/filter/2/op"), ERR_UNPROCESSABLE; a value past a
 *     configured limit is ERR_QUERY_LIMIT. What a bounded query may do but a follow query cannot
 *     (sorting rows, committing, ordering window-less aggregates) is refused, never dropped.
 *  2. The request is only borrowed: every string the plan keeps is copied into q->arena, so the
 *     plan is bounded by max_memory_bytes; running out of it while compiling is ERR_QUERY_LIMIT.
 *  3. A field is interned once (add_field): filter, group_by, measures, window time, selection
 *     and sort keys that name the same text share one fields[] entry, so a record's payload is
 *     scanned once for all of them; at most 1024 distinct fields.
 *  4. The plan is complete when squery_compile returns 0: vals[]/pvals[] are sized for every field
 *     and path, and nothing later adds to it (squery_set_format only swaps the decoder).
 *  5. On any error q is freed here; *out is set only on success.
 */
#include "stream/query_int.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/err.h"
#include "stream/fmt/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[] = {"eq", "ne", "lt", "le", "gt", "ge", "in", "nin", "contains",
                                       "exists", "is_null"};
static const char *const mop_names[] = {"count", "sum", "avg", "min", "max", "count_distinct"};

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
    return sq_follow_init(q, &o) ? nomem(c) : 0;
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
