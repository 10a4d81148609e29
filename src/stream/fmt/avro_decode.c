/* avro_decode.c -- Avro schema resolution compiled into a decode program, and the binary decoder
 * behind sfmt_avro_new / sfmt_avro_json_new (extract, to_json).
 *
 *   writer anode graph ─┐
 *                       ├─ compile() ──> struct prog { ops[], fields[], br[], emap[] }
 *   reader anode graph ─┘                      │  (flat arrays, children by index)
 *                                              v
 *   record bytes ──> walk()   (paths active)  ─┬─> scalar() ──> sval
 *                    skip()   (no path here)   └─> render() ──> JSON (whole containers)
 *
 * compile() resolves the writer against the reader once, per the Avro spec: promotions
 * (int->long->float->double, string<->bytes), records matched by name or reader alias, fields
 * matched by name or reader field alias, writer-only fields skipped, reader-only fields read from
 * their default (pre-encoded as binary by avro_schema.c, decoded by the same program), enum
 * symbols mapped (unknown -> reader default), unions resolved in both directions. Decoding then
 * follows ops only; no schema lookups happen per record.
 *
 * Invariants:
 *  1. A prog is immutable after sfmt construction; all per-record state is on the stack or in the
 *     caller's scratch arena, so one sfmt serves several threads.
 *  2. Every read is bounds-checked against the record's end; a varint longer than 10 bytes (5
 *     for int), an int outside 32 bits, a negative length, a length past the end, a bad union
 *     index, a bad enum index, a boolean byte other than 0/1, invalid UTF-8 in a string, a block
 *     whose byte size disagrees with its items, and trailing bytes after the record are all
 *     ERR_CORRUPT.
 *  3. Work is bounded by the record: data nesting <= AVRO_DEPTH_MAX, and the array/map items of
 *     one record <= its byte length + AVRO_ZERO_ITEMS_MAX (only zero-byte items can exceed the
 *     byte length), so a hostile count cannot spin or allocate.
 *  4. Memory: svals point into the record, into the schemas (enum symbols) or into the sfmt
 *     (defaults); only SV_JSON text and the Avro-JSON intermediate are put in the scratch arena.
 */
#include "stream/fmt/avro_int.h"

#include "base/alloc.h"
#include "base/b64.h"
#include "base/err.h"
#include "base/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* The program                                                                                */

enum opk {
    OP_NULL,
    OP_BOOL,
    OP_INT,
    OP_LONG,
    OP_FLOAT,
    OP_DOUBLE,
    OP_BYTES,
    OP_STRING,
    OP_FIXED,
    OP_ENUM,
    OP_ARRAY,
    OP_MAP,
    OP_RECORD,
    OP_UNION,
};

#define OP_NONE UINT32_MAX

struct op {
    uint8_t kind;   /* enum opk: how the writer's bytes are read */
    uint8_t out;    /* enum atype: what the reader sees (sval kind, JSON form) */
    uint32_t a;     /* FIXED size; ENUM first emap; ARRAY/MAP item op; RECORD first field;
                       UNION first br */
    uint32_t b;     /* ENUM writer symbols; RECORD writer fields; UNION branches */
    uint32_t c;     /* RECORD fields read from defaults */
    const struct anode *rn; /* reader node (ENUM symbols) */
};

struct rfield {
    uint32_t op;
    bool keep; /* false: a writer field the reader does not have (skipped) */
    const char *name;
    uint32_t name_len;
    struct slice def; /* default fields: the encoded default */
};

struct prog {
    struct op *ops;
    uint32_t nops, ops_cap;
    struct rfield *fields;
    uint32_t nfields, fields_cap;
    uint32_t *br;
    uint32_t nbr, br_cap;
    int32_t *emap;
    uint32_t nemap, emap_cap;
    uint32_t root;
};

struct memo {
    const struct anode *w, *r;
    uint32_t op;
};

struct cctx {
    struct prog *pg;
    struct serr *e;
    struct memo *memo;
    uint32_t nmemo, memo_cap;
    bool nomem;
};

static void prog_free(struct prog *pg)
{
    xfree(pg->ops);
    xfree(pg->fields);
    xfree(pg->br);
    xfree(pg->emap);
    memset(pg, 0, sizeof *pg);
}

/* Grow *arr (element size sz) to hold n more; returns the first new index or OP_NONE. */
static uint32_t grow(void **arr, uint32_t *len, uint32_t *cap, size_t sz, uint32_t n)
{
    if (*len + (uint64_t)n > 0x7fffffff)
        return OP_NONE;
    if (*len + n > *cap) {
        uint32_t nc = *cap ? *cap : 16;
        while (nc < *len + n)
            nc *= 2;
        void *p = xrealloc(*arr, (size_t)nc * sz);
        if (!p)
            return OP_NONE;
        *arr = p;
        *cap = nc;
    }
    uint32_t i = *len;
    *len += n;
    return i;
}

static int c_nomem(struct cctx *c)
{
    c->nomem = true;
    serr_set(c->e, "", "out of memory");
    return ERR_NOMEM;
}

static uint32_t new_op(struct cctx *c, int kind, int out)
{
    uint32_t i = grow((void **)&c->pg->ops, &c->pg->nops, &c->pg->ops_cap, sizeof(struct op), 1);
    if (i == OP_NONE) {
        c_nomem(c);
        return OP_NONE;
    }
    c->pg->ops[i] = (struct op){.kind = (uint8_t)kind, .out = (uint8_t)out};
    return i;
}

static bool named_match(const struct anode *w, const struct anode *r)
{
    if (strcmp(w->name, r->name) == 0)
        return true;
    for (uint32_t i = 0; i < r->naliases; i++) {
        const char *a = r->aliases[i], *dot = strrchr(a, '.');
        if (strcmp(a, w->fullname) == 0 || strcmp(dot ? dot + 1 : a, w->name) == 0)
            return true;
    }
    return false;
}

static bool promotes(int w, int r)
{
    switch (w) {
    case AT_INT: return r == AT_LONG || r == AT_FLOAT || r == AT_DOUBLE;
    case AT_LONG: return r == AT_FLOAT || r == AT_DOUBLE;
    case AT_FLOAT: return r == AT_DOUBLE;
    case AT_STRING: return r == AT_BYTES;
    case AT_BYTES: return r == AT_STRING;
    default: return false;
    }
}

static const uint8_t prim_op[] = {
    [AT_NULL] = OP_NULL, [AT_BOOLEAN] = OP_BOOL, [AT_INT] = OP_INT,       [AT_LONG] = OP_LONG,
    [AT_FLOAT] = OP_FLOAT, [AT_DOUBLE] = OP_DOUBLE, [AT_BYTES] = OP_BYTES, [AT_STRING] = OP_STRING,
};

static int mismatch(struct cctx *c, const char *path, const struct anode *w, const struct anode *r)
{
    serr_set(c->e, path, "writer type %s cannot be read as %s", avro_type_name(w),
             avro_type_name(r));
    return ERR_INVALID;
}

static int compile(struct cctx *c, const struct anode *w, const struct anode *r, const char *path,
                   uint32_t *out, int depth);

static int compile_record(struct cctx *c, const struct anode *w, const struct anode *r,
                          const char *path, uint32_t *out, int depth)
{
    for (uint32_t i = 0; i < c->nmemo; i++)
        if (c->memo[i].w == w && c->memo[i].r == r) {
            *out = c->memo[i].op;
            return 0;
        }
    uint32_t op = new_op(c, OP_RECORD, AT_RECORD);
    if (op == OP_NONE)
        return ERR_NOMEM;
    uint32_t mi = grow((void **)&c->memo, &c->nmemo, &c->memo_cap, sizeof *c->memo, 1);
    if (mi == OP_NONE)
        return c_nomem(c);
    c->memo[mi] = (struct memo){w, r, op};
    *out = op;

    uint32_t total = w->n + r->n;
    struct rfield *tmp = xcalloc(total ? total : 1, sizeof *tmp);
    bool *used = xcalloc(r->n ? r->n : 1, sizeof *used);
    int rc = 0;
    uint32_t nt = 0, ndef = 0;
    char p2[160];
    if (!tmp || !used) {
        rc = c_nomem(c);
        goto out;
    }
    for (uint32_t i = 0; i < w->n && rc == 0; i++) {
        const struct afield *wf = &w->fields[i];
        int32_t k = -1;
        for (uint32_t j = 0; j < r->n && k < 0; j++) {
            const struct afield *rf = &r->fields[j];
            if (used[j])
                continue;
            if (strcmp(rf->name, wf->name) == 0)
                k = (int32_t)j;
            for (uint32_t a = 0; k < 0 && a < rf->naliases; a++)
                if (strcmp(rf->aliases[a], wf->name) == 0)
                    k = (int32_t)j;
        }
        struct rfield *t = &tmp[nt++];
        if (k >= 0) {
            used[k] = true;
            snprintf(p2, sizeof p2, "%s%sfields[%d].type", path, path[0] ? "." : "", k);
            rc = compile(c, wf->type, r->fields[k].type, p2, &t->op, depth + 1);
            t->keep = true;
            t->name = r->fields[k].name;
            t->name_len = r->fields[k].name_len;
        } else {
            snprintf(p2, sizeof p2, "writer.fields[%u].type", i);
            rc = compile(c, wf->type, wf->type, p2, &t->op, depth + 1);
        }
    }
    for (uint32_t j = 0; j < r->n && rc == 0; j++) {
        const struct afield *rf = &r->fields[j];
        if (used[j])
            continue;
        snprintf(p2, sizeof p2, "%s%sfields[%u]", path, path[0] ? "." : "", j);
        if (!rf->def) {
            serr_set(c->e, p2, "reader field '%s' is not in the writer schema and has no default",
                     rf->name);
            rc = ERR_INVALID;
            break;
        }
        struct rfield *t = &tmp[nt++];
        rc = compile(c, rf->type, rf->type, p2, &t->op, depth + 1);
        t->keep = true;
        t->name = rf->name;
        t->name_len = rf->name_len;
        t->def = rf->def_bin;
        ndef++;
    }
    if (rc == 0) {
        uint32_t first = grow((void **)&c->pg->fields, &c->pg->nfields, &c->pg->fields_cap,
                              sizeof(struct rfield), nt);
        if (first == OP_NONE) {
            rc = c_nomem(c);
        } else {
            if (nt)
                memcpy(&c->pg->fields[first], tmp, nt * sizeof *tmp);
            struct op *o = &c->pg->ops[op];
            o->a = first;
            o->b = nt - ndef;
            o->c = ndef;
            o->rn = r;
        }
    }
out:
    xfree(tmp);
    xfree(used);
    if (rc)
        c->memo[mi].r = NULL; /* a failed pair is never reused */
    return rc;
}

static int compile(struct cctx *c, const struct anode *w, const struct anode *r, const char *path,
                   uint32_t *out, int depth)
{
    char p2[160];
    if (c->nomem)
        return ERR_NOMEM;
    if (depth > 4 * AVRO_DEPTH_MAX) {
        serr_set(c->e, path, "schemas nested too deep to resolve");
        return ERR_INVALID;
    }
    if (w->type == AT_UNION) {
        uint32_t base = grow((void **)&c->pg->br, &c->pg->nbr, &c->pg->br_cap, sizeof(uint32_t), w->n);
        if (base == OP_NONE)
            return c_nomem(c);
        bool any = false;
        struct serr first = {{0}, {0}};
        for (uint32_t i = 0; i < w->n; i++) {
            uint32_t o = OP_NONE;
            int rc = compile(c, w->branches[i], r, path, &o, depth + 1);
            if (rc == ERR_NOMEM)
                return rc;
            if (rc == 0)
                any = true;
            else if (!first.msg[0] && c->e)
                first = *c->e;
            c->pg->br[base + i] = rc == 0 ? o : OP_NONE;
        }
        if (!any) {
            if (c->e)
                *c->e = first;
            return ERR_INVALID;
        }
        uint32_t op = new_op(c, OP_UNION, AT_UNION);
        if (op == OP_NONE)
            return ERR_NOMEM;
        c->pg->ops[op].a = base;
        c->pg->ops[op].b = w->n;
        *out = op;
        return 0;
    }
    if (r->type == AT_UNION) {
        /* The first reader branch of the same type (and name), else the first that resolves. */
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t i = 0; i < r->n; i++) {
                const struct anode *b = r->branches[i];
                bool same = b->type == w->type &&
                            (!(w->type == AT_RECORD || w->type == AT_ENUM || w->type == AT_FIXED) ||
                             named_match(w, b));
                if (pass == 0 && !same)
                    continue;
                snprintf(p2, sizeof p2, "%s[%u]", path, i);
                int rc = compile(c, w, b, p2, out, depth + 1);
                if (rc == 0 || rc == ERR_NOMEM)
                    return rc;
            }
        serr_set(c->e, path, "writer type %s matches no branch of the reader union",
                 avro_type_name(w));
        return ERR_INVALID;
    }
    if (w->type <= AT_STRING) {
        if (w->type != r->type && !promotes(w->type, r->type))
            return mismatch(c, path, w, r);
        uint32_t op = new_op(c, prim_op[w->type], r->type);
        if (op == OP_NONE)
            return ERR_NOMEM;
        *out = op;
        return 0;
    }
    if (w->type != r->type)
        return mismatch(c, path, w, r);
    switch (w->type) {
    case AT_RECORD:
        if (!named_match(w, r))
            return mismatch(c, path, w, r);
        return compile_record(c, w, r, path, out, depth);
    case AT_ENUM: {
        if (!named_match(w, r))
            return mismatch(c, path, w, r);
        uint32_t base = grow((void **)&c->pg->emap, &c->pg->nemap, &c->pg->emap_cap,
                             sizeof(int32_t), w->n);
        if (base == OP_NONE)
            return c_nomem(c);
        for (uint32_t i = 0; i < w->n; i++) {
            int32_t k = r->enum_default;
            for (uint32_t j = 0; j < r->n; j++)
                if (strcmp(w->symbols[i], r->symbols[j]) == 0) {
                    k = (int32_t)j;
                    break;
                }
            c->pg->emap[base + i] = k;
        }
        uint32_t op = new_op(c, OP_ENUM, AT_ENUM);
        if (op == OP_NONE)
            return ERR_NOMEM;
        c->pg->ops[op].a = base;
        c->pg->ops[op].b = w->n;
        c->pg->ops[op].rn = r;
        *out = op;
        return 0;
    }
    case AT_FIXED: {
        if (!named_match(w, r) || w->size != r->size)
            return mismatch(c, path, w, r);
        uint32_t op = new_op(c, OP_FIXED, AT_FIXED);
        if (op == OP_NONE)
            return ERR_NOMEM;
        c->pg->ops[op].a = w->size;
        *out = op;
        return 0;
    }
    case AT_ARRAY:
    case AT_MAP: {
        uint32_t item;
        snprintf(p2, sizeof p2, "%s%s%s", path, path[0] ? "." : "",
                 w->type == AT_ARRAY ? "items" : "values");
        int rc = compile(c, w->items, r->items, p2, &item, depth + 1);
        if (rc)
            return rc;
        uint32_t op = new_op(c, w->type == AT_ARRAY ? OP_ARRAY : OP_MAP, w->type);
        if (op == OP_NONE)
            return ERR_NOMEM;
        c->pg->ops[op].a = item;
        *out = op;
        return 0;
    }
    default: return mismatch(c, path, w, r);
    }
}

static int prog_build(struct prog *pg, const struct anode *w, const struct anode *r,
                      struct serr *e)
{
    struct cctx c = {.pg = pg, .e = e};
    memset(pg, 0, sizeof *pg);
    int rc = compile(&c, w, r, "", &pg->root, 0);
    xfree(c.memo);
    /* Records index fields[] even when they have none: keep the base pointer valid. */
    if (rc == 0 && !pg->fields && !(pg->fields = xcalloc(1, sizeof *pg->fields))) {
        serr_set(e, "", "out of memory");
        rc = ERR_NOMEM;
    }
    if (rc)
        prog_free(pg);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                    */

struct rd {
    const uint8_t *p, *end;
};

struct dctx {
    const struct prog *pg;
    struct arena *scratch;
    const char *why;
    int64_t items_left;
    const struct spath *paths;
    struct sval *out;
    uint16_t *work; /* per-level path subsets: 2 * npaths entries per level */
    uint32_t npaths;
};

static int corrupt(struct dctx *c, const char *why)
{
    if (!c->why)
        c->why = why;
    return ERR_CORRUPT;
}

static inline bool rd_long(struct rd *r, int64_t *v)
{
    if (r->p < r->end && *r->p < 0x80) {
        uint64_t x = *r->p++;
        *v = (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
        return true;
    }
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return false;
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1)
            return false;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = (int64_t)(x >> 1) ^ -(int64_t)(x & 1);
            return true;
        }
    }
    return false;
}

static inline int rd_int(struct dctx *c, struct rd *r, int64_t *v, bool is_int)
{
    if (!rd_long(r, v))
        return corrupt(c, "truncated or overlong varint");
    if (is_int && (*v < INT32_MIN || *v > INT32_MAX))
        return corrupt(c, "int out of 32-bit range");
    return 0;
}

/* A length-prefixed byte string. */
static inline int rd_len(struct dctx *c, struct rd *r, struct slice *s)
{
    int64_t n;
    if (!rd_long(r, &n))
        return corrupt(c, "truncated or overlong length");
    if (n < 0 || (uint64_t)n > (uint64_t)(r->end - r->p))
        return corrupt(c, n < 0 ? "negative length" : "length past the end of the record");
    if ((uint64_t)n > UINT32_MAX)
        return corrupt(c, "string longer than 4 GiB");
    s->ptr = r->p;
    s->len = (size_t)n;
    r->p += n;
    return 0;
}

static inline int rd_str(struct dctx *c, struct rd *r, struct slice *s)
{
    int rc = rd_len(c, r, s);
    if (rc == 0 && !utf8_valid(s->ptr, s->len))
        return corrupt(c, "string is not valid UTF-8");
    return rc;
}

/* Read one block header of an array or map: *count items (0 = end), *blk_end where the block's
 * bytes end when the writer gave a byte size (else NULL). */
static int rd_block(struct dctx *c, struct rd *r, int64_t *count, const uint8_t **blk_end)
{
    *blk_end = NULL;
    if (!rd_long(r, count))
        return corrupt(c, "truncated block count");
    if (*count < 0) {
        if (*count == INT64_MIN)
            return corrupt(c, "bad block count");
        *count = -*count;
        int64_t size;
        if (!rd_long(r, &size) || size < 0 || size > r->end - r->p)
            return corrupt(c, "bad block byte size");
        *blk_end = r->p + size;
    }
    if (*count > c->items_left)
        return corrupt(c, "more items than the record can hold");
    c->items_left -= *count;
    return 0;
}

static int read_union_branch(struct dctx *c, const struct op *o, struct rd *r, uint32_t *bop)
{
    int64_t i;
    if (!rd_long(r, &i))
        return corrupt(c, "truncated union index");
    if (i < 0 || i >= o->b)
        return corrupt(c, "union index out of range");
    *bop = c->pg->br[o->a + (uint32_t)i];
    if (*bop == OP_NONE) {
        c->why = "the writer's union branch does not resolve to the reader schema";
        return ERR_INVALID;
    }
    return 0;
}

static int read_enum(struct dctx *c, const struct op *o, struct rd *r, const char **sym)
{
    int64_t i;
    if (!rd_long(r, &i))
        return corrupt(c, "truncated enum index");
    if (i < 0 || i >= o->b)
        return corrupt(c, "enum index out of range");
    int32_t k = c->pg->emap[o->a + (uint32_t)i];
    if (k < 0) {
        c->why = "enum symbol unknown to the reader and the reader enum has no default";
        return ERR_INVALID;
    }
    *sym = o->rn->symbols[k];
    return 0;
}

static int skip(struct dctx *c, uint32_t opi, struct rd *r, int depth)
{
    const struct op *o = &c->pg->ops[opi];
    struct slice s;
    int64_t v;
    int rc;
    switch (o->kind) {
    case OP_NULL: return 0;
    case OP_BOOL:
        if (r->p >= r->end || *r->p > 1)
            return corrupt(c, r->p >= r->end ? "truncated boolean" : "boolean byte not 0 or 1");
        r->p++;
        return 0;
    case OP_INT: return rd_int(c, r, &v, true);
    case OP_LONG: return rd_int(c, r, &v, false);
    case OP_FLOAT:
    case OP_DOUBLE: {
        size_t n = o->kind == OP_FLOAT ? 4 : 8;
        if ((size_t)(r->end - r->p) < n)
            return corrupt(c, "truncated float");
        r->p += n;
        return 0;
    }
    case OP_BYTES:
        rc = rd_len(c, r, &s);
        if (rc == 0 && o->out == AT_STRING && !utf8_valid(s.ptr, s.len))
            return corrupt(c, "bytes read as a string are not valid UTF-8");
        return rc;
    case OP_STRING: return rd_str(c, r, &s);
    case OP_FIXED:
        if ((size_t)(r->end - r->p) < o->a)
            return corrupt(c, "truncated fixed");
        r->p += o->a;
        return 0;
    case OP_ENUM: {
        const char *sym;
        return read_enum(c, o, r, &sym);
    }
    case OP_UNION: {
        uint32_t b;
        if ((rc = read_union_branch(c, o, r, &b)))
            return rc;
        return skip(c, b, r, depth);
    }
    case OP_ARRAY:
    case OP_MAP:
        if (depth >= AVRO_DEPTH_MAX)
            return corrupt(c, "data nested too deep");
        for (;;) {
            int64_t n;
            const uint8_t *be;
            if ((rc = rd_block(c, r, &n, &be)))
                return rc;
            if (n == 0)
                return 0;
            for (int64_t i = 0; i < n; i++) {
                if (o->kind == OP_MAP && (rc = rd_str(c, r, &s)))
                    return rc;
                if ((rc = skip(c, o->a, r, depth + 1)))
                    return rc;
            }
            if (be && r->p != be)
                return corrupt(c, "block byte size disagrees with its items");
        }
    case OP_RECORD: {
        if (depth >= AVRO_DEPTH_MAX)
            return corrupt(c, "data nested too deep");
        const struct rfield *f = &c->pg->fields[o->a];
        for (uint32_t i = 0; i < o->b; i++)
            if ((rc = skip(c, f[i].op, r, depth + 1)))
                return rc;
        return 0;
    }
    }
    return corrupt(c, "bad op");
}

/* ------------------------------------------------------------------------------------------ */
/* JSON rendering                                                                             */

static void put_jstr(struct sbuf *o, const uint8_t *p, size_t n)
{
    struct jw w;
    jw_init(&w, o);
    jw_strn(&w, p, n);
}

/* The shortest text that reads back as the same value; NaN and infinities (no JSON form) as
 * null; integral values keep a ".0" so they stay doubles. */
static void put_double(struct sbuf *o, double d, bool single)
{
    if (!isfinite(d)) {
        sbuf_append(o, "null", 4);
        return;
    }
    char buf[40];
    int prec = single ? 6 : 15, maxp = single ? 9 : 17;
    for (; prec <= maxp; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (single ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d)
            break;
    }
    sbuf_puts(o, buf);
    if (!strpbrk(buf, ".eEn"))
        sbuf_append(o, ".0", 2);
}

static int render(struct dctx *c, uint32_t opi, struct rd *r, struct sbuf *o, int depth);

static int render_scalar_num(struct dctx *c, const struct op *op, struct rd *r, struct sbuf *o)
{
    int64_t v;
    int rc;
    switch (op->kind) {
    case OP_INT:
    case OP_LONG:
        if ((rc = rd_int(c, r, &v, op->kind == OP_INT)))
            return rc;
        if (op->out == AT_FLOAT)
            put_double(o, (double)(float)v, true);
        else if (op->out == AT_DOUBLE)
            put_double(o, (double)v, false);
        else
            sbuf_put_i64(o, v);
        return 0;
    case OP_FLOAT: {
        if (r->end - r->p < 4)
            return corrupt(c, "truncated float");
        uint32_t u = get_le32(r->p);
        float f;
        memcpy(&f, &u, 4);
        r->p += 4;
        put_double(o, f, op->out == AT_FLOAT);
        return 0;
    }
    case OP_DOUBLE: {
        if (r->end - r->p < 8)
            return corrupt(c, "truncated double");
        uint64_t u = get_le64(r->p);
        double d;
        memcpy(&d, &u, 8);
        r->p += 8;
        put_double(o, d, false);
        return 0;
    }
    }
    return corrupt(c, "bad op");
}

static int render(struct dctx *c, uint32_t opi, struct rd *r, struct sbuf *o, int depth)
{
    const struct op *op = &c->pg->ops[opi];
    struct slice s;
    int rc;
    switch (op->kind) {
    case OP_NULL: sbuf_append(o, "null", 4); return 0;
    case OP_BOOL:
        if (r->p >= r->end || *r->p > 1)
            return corrupt(c, r->p >= r->end ? "truncated boolean" : "boolean byte not 0 or 1");
        if (*r->p++)
            sbuf_append(o, "true", 4);
        else
            sbuf_append(o, "false", 5);
        return 0;
    case OP_INT:
    case OP_LONG:
    case OP_FLOAT:
    case OP_DOUBLE: return render_scalar_num(c, op, r, o);
    case OP_STRING:
    case OP_BYTES:
        if ((rc = rd_len(c, r, &s)))
            return rc;
        /* A writer string is UTF-8 even when the reader takes it as bytes. */
        if ((op->kind == OP_STRING || op->out == AT_STRING) && !utf8_valid(s.ptr, s.len))
            return corrupt(c, "string is not valid UTF-8");
        if (op->out == AT_STRING) {
            put_jstr(o, s.ptr, s.len);
        } else {
            sbuf_putc(o, '"');
            b64_encode(o, s.ptr, s.len);
            sbuf_putc(o, '"');
        }
        return 0;
    case OP_FIXED:
        if ((size_t)(r->end - r->p) < op->a)
            return corrupt(c, "truncated fixed");
        sbuf_putc(o, '"');
        b64_encode(o, r->p, op->a);
        sbuf_putc(o, '"');
        r->p += op->a;
        return 0;
    case OP_ENUM: {
        const char *sym;
        if ((rc = read_enum(c, op, r, &sym)))
            return rc;
        put_jstr(o, (const uint8_t *)sym, strlen(sym));
        return 0;
    }
    case OP_UNION: {
        uint32_t b;
        if ((rc = read_union_branch(c, op, r, &b)))
            return rc;
        return render(c, b, r, o, depth);
    }
    case OP_ARRAY:
    case OP_MAP: {
        if (depth >= AVRO_DEPTH_MAX)
            return corrupt(c, "data nested too deep");
        bool map = op->kind == OP_MAP, first = true;
        sbuf_putc(o, map ? '{' : '[');
        for (;;) {
            int64_t n;
            const uint8_t *be;
            if ((rc = rd_block(c, r, &n, &be)))
                return rc;
            if (n == 0)
                break;
            for (int64_t i = 0; i < n; i++) {
                if (!first)
                    sbuf_putc(o, ',');
                first = false;
                if (map) {
                    if ((rc = rd_str(c, r, &s)))
                        return rc;
                    put_jstr(o, s.ptr, s.len);
                    sbuf_putc(o, ':');
                }
                if ((rc = render(c, op->a, r, o, depth + 1)))
                    return rc;
            }
            if (be && r->p != be)
                return corrupt(c, "block byte size disagrees with its items");
        }
        sbuf_putc(o, map ? '}' : ']');
        return 0;
    }
    case OP_RECORD: {
        if (depth >= AVRO_DEPTH_MAX)
            return corrupt(c, "data nested too deep");
        const struct rfield *f = &c->pg->fields[op->a];
        bool first = true;
        sbuf_putc(o, '{');
        for (uint32_t i = 0; i < op->b + op->c; i++) {
            struct rd dr, *fr = r;
            if (i >= op->b) {
                dr = (struct rd){f[i].def.ptr, f[i].def.ptr + f[i].def.len};
                fr = &dr;
            }
            if (!f[i].keep) {
                if ((rc = skip(c, f[i].op, fr, depth + 1)))
                    return rc;
                continue;
            }
            if (!first)
                sbuf_putc(o, ',');
            first = false;
            put_jstr(o, (const uint8_t *)f[i].name, f[i].name_len);
            sbuf_putc(o, ':');
            if ((rc = render(c, f[i].op, fr, o, depth + 1)))
                return rc;
        }
        sbuf_putc(o, '}');
        return 0;
    }
    }
    return corrupt(c, "bad op");
}

/* ------------------------------------------------------------------------------------------ */
/* Extraction                                                                                 */

/* Read the value at op into one sval (containers as JSON text in the scratch arena). */
static int scalar(struct dctx *c, uint32_t opi, struct rd *r, struct sval *v, int depth)
{
    const struct op *op = &c->pg->ops[opi];
    struct slice s;
    int64_t x;
    int rc;
    switch (op->kind) {
    case OP_NULL: v->type = SV_NULL; return 0;
    case OP_BOOL:
        if (r->p >= r->end || *r->p > 1)
            return corrupt(c, r->p >= r->end ? "truncated boolean" : "boolean byte not 0 or 1");
        v->type = SV_BOOL;
        v->b = *r->p++ != 0;
        return 0;
    case OP_INT:
    case OP_LONG:
        if ((rc = rd_int(c, r, &x, op->kind == OP_INT)))
            return rc;
        if (op->out == AT_FLOAT) {
            v->type = SV_DOUBLE;
            v->d = (double)(float)x;
        } else if (op->out == AT_DOUBLE) {
            v->type = SV_DOUBLE;
            v->d = (double)x;
        } else {
            v->type = SV_INT;
            v->i = x;
        }
        return 0;
    case OP_FLOAT: {
        if (r->end - r->p < 4)
            return corrupt(c, "truncated float");
        uint32_t u = get_le32(r->p);
        float f;
        memcpy(&f, &u, 4);
        r->p += 4;
        v->type = SV_DOUBLE;
        v->d = f;
        return 0;
    }
    case OP_DOUBLE: {
        if (r->end - r->p < 8)
            return corrupt(c, "truncated double");
        uint64_t u = get_le64(r->p);
        memcpy(&v->d, &u, 8);
        r->p += 8;
        v->type = SV_DOUBLE;
        return 0;
    }
    case OP_STRING:
    case OP_BYTES:
        if ((rc = rd_len(c, r, &s)))
            return rc;
        if ((op->kind == OP_STRING || op->out == AT_STRING) && !utf8_valid(s.ptr, s.len))
            return corrupt(c, "string is not valid UTF-8");
        v->type = op->out == AT_STRING ? SV_STR : SV_BYTES;
        v->escaped = false;
        v->p = (const char *)s.ptr;
        v->len = (uint32_t)s.len;
        return 0;
    case OP_FIXED:
        if ((size_t)(r->end - r->p) < op->a)
            return corrupt(c, "truncated fixed");
        v->type = SV_BYTES;
        v->p = (const char *)r->p;
        v->len = op->a;
        r->p += op->a;
        return 0;
    case OP_ENUM: {
        const char *sym;
        if ((rc = read_enum(c, op, r, &sym)))
            return rc;
        v->type = SV_STR;
        v->escaped = false;
        v->p = sym;
        v->len = (uint32_t)strlen(sym);
        return 0;
    }
    case OP_UNION: {
        uint32_t b;
        if ((rc = read_union_branch(c, op, r, &b)))
            return rc;
        return scalar(c, b, r, v, depth);
    }
    default: {
        struct sbuf b;
        size_t cap = 0;
        if (c->scratch->max_bytes)
            cap = c->scratch->max_bytes > c->scratch->used_bytes
                      ? c->scratch->max_bytes - c->scratch->used_bytes
                      : 1;
        sbuf_init(&b, cap);
        rc = render(c, opi, r, &b, depth);
        if (rc == 0 && !sbuf_ok(&b))
            rc = ERR_NOMEM;
        if (rc == 0 && b.len > UINT32_MAX)
            rc = ERR_NOMEM;
        char *p = NULL;
        if (rc == 0 && !(p = arena_alloc(c->scratch, b.len ? b.len : 1)))
            rc = ERR_NOMEM;
        if (rc == 0) {
            if (b.len)
                memcpy(p, b.data, b.len);
            v->type = SV_JSON;
            v->escaped = false;
            v->p = p;
            v->len = (uint32_t)b.len;
        }
        if (rc == ERR_NOMEM && !c->why)
            c->why = "scratch arena full";
        sbuf_free(&b);
        return rc;
    }
    }
}

static int walk(struct dctx *c, uint32_t opi, struct rd *r, const uint16_t *act, uint32_t nact,
                int level, int depth);

/* A child value at path level `level` (paths whose nseg == level end here) selected by the
 * paths in sub[0..nsub). */
static int child(struct dctx *c, uint32_t opi, struct rd *r, const uint16_t *sub, uint32_t nsub,
                 int level, int depth)
{
    if (nsub == 0)
        return skip(c, opi, r, depth);
    uint16_t *cont = c->work + (size_t)(2 * level + 1) * c->npaths;
    uint32_t ncont = 0;
    int first_end = -1;
    const uint8_t *start = r->p;
    int rc;
    for (uint32_t i = 0; i < nsub; i++) {
        uint16_t k = sub[i];
        if (c->paths[k].nseg == level) {
            if (first_end < 0) {
                first_end = k;
                if ((rc = scalar(c, opi, r, &c->out[k], depth)))
                    return rc;
            } else {
                c->out[k] = c->out[first_end];
            }
        } else {
            cont[ncont++] = k;
        }
    }
    if (ncont == 0)
        return 0;
    if (first_end >= 0)
        r->p = start;
    return walk(c, opi, r, cont, ncont, level, depth);
}

static inline bool seg_is(const struct spath_seg *s, const char *name, size_t len)
{
    return s->name && s->len == len && memcmp(s->name, name, len) == 0;
}

/* The value at op with paths act[] (all with nseg > level) choosing among its children by
 * seg[level]. Non-containers have no children: the paths stay SV_MISSING. */
static int walk(struct dctx *c, uint32_t opi, struct rd *r, const uint16_t *act, uint32_t nact,
                int level, int depth)
{
    const struct op *op = &c->pg->ops[opi];
    uint16_t *sub = c->work + (size_t)(2 * (level + 1)) * c->npaths;
    int rc;
    switch (op->kind) {
    case OP_UNION: {
        uint32_t b;
        if ((rc = read_union_branch(c, op, r, &b)))
            return rc;
        return walk(c, b, r, act, nact, level, depth);
    }
    case OP_RECORD: {
        if (depth >= AVRO_DEPTH_MAX)
            return corrupt(c, "data nested too deep");
        const struct rfield *f = &c->pg->fields[op->a];
        for (uint32_t i = 0; i < op->b + op->c; i++) {
            uint32_t nsub = 0;
            if (f[i].keep)
                for (uint32_t k = 0; k < nact; k++)
                    if (seg_is(&c->paths[act[k]].seg[level], f[i].name, f[i].name_len))
                        sub[nsub++] = act[k];
            if (i >= op->b) {
                if (nsub) {
                    struct rd dr = {f[i].def.ptr, f[i].def.ptr + f[i].def.len};
                    if ((rc = child(c, f[i].op, &dr, sub, nsub, level + 1, depth + 1)))
                        return rc;
                }
            } else if ((rc = child(c, f[i].op, r, sub, nsub, level + 1, depth + 1))) {
                return rc;
            }
        }
        return 0;
    }
    case OP_ARRAY:
    case OP_MAP: {
        if (depth >= AVRO_DEPTH_MAX)
            return corrupt(c, "data nested too deep");
        bool map = op->kind == OP_MAP;
        int64_t idx = 0;
        for (;;) {
            int64_t n;
            const uint8_t *be;
            if ((rc = rd_block(c, r, &n, &be)))
                return rc;
            if (n == 0)
                return 0;
            for (int64_t i = 0; i < n; i++, idx++) {
                uint32_t nsub = 0;
                struct slice key;
                if (map) {
                    if ((rc = rd_str(c, r, &key)))
                        return rc;
                    for (uint32_t k = 0; k < nact; k++)
                        if (seg_is(&c->paths[act[k]].seg[level], (const char *)key.ptr, key.len))
                            sub[nsub++] = act[k];
                } else {
                    for (uint32_t k = 0; k < nact; k++) {
                        const struct spath_seg *s = &c->paths[act[k]].seg[level];
                        if (!s->name && s->index == idx)
                            sub[nsub++] = act[k];
                    }
                }
                if ((rc = child(c, op->a, r, sub, nsub, level + 1, depth + 1)))
                    return rc;
            }
            if (be && r->p != be)
                return corrupt(c, "block byte size disagrees with its items");
        }
    }
    default: return skip(c, opi, r, depth);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The sfmt                                                                                   */

struct afmt {
    struct sfmt base;
    struct prog pg;
    /* avro-json only */
    const struct anode *reader;
    bool apply_defaults;
    json_t *field_aliases;
};

static void dctx_init(struct dctx *c, const struct afmt *f, struct slice rec, struct arena *scratch)
{
    memset(c, 0, sizeof *c);
    c->pg = &f->pg;
    c->scratch = scratch;
    c->items_left = (int64_t)rec.len + AVRO_ZERO_ITEMS_MAX;
}

/* Unwrap top-level unions; the record itself must be a record. */
static int top(struct dctx *c, struct rd *r, uint32_t *opi)
{
    int rc;
    uint32_t o = c->pg->root;
    while (c->pg->ops[o].kind == OP_UNION)
        if ((rc = read_union_branch(c, &c->pg->ops[o], r, &o)))
            return rc;
    if (c->pg->ops[o].kind != OP_RECORD) {
        if ((rc = skip(c, o, r, 0)))
            return rc;
        if (r->p != r->end)
            return corrupt(c, "trailing bytes after the record");
        c->why = "the record is not an Avro record";
        return ERR_INVALID;
    }
    *opi = o;
    return 0;
}

static int bin_extract(const struct afmt *f, struct slice rec, const struct spath *paths, size_t n,
                       struct sval *out, struct arena *scratch, const char **err)
{
    struct dctx c;
    dctx_init(&c, f, rec, scratch);
    struct rd r = {rec.ptr, rec.ptr + rec.len};
    uint16_t stack_work[2 * (SPATH_SEGS_MAX + 2) * 4];
    int rc;
    uint32_t root;
    for (size_t i = 0; i < n; i++)
        out[i] = (struct sval){.type = SV_MISSING};
    if (n > 0xffff) {
        c.why = "too many paths";
        rc = ERR_INVALID;
        goto done;
    }
    c.paths = paths;
    c.out = out;
    c.npaths = (uint32_t)n;
    size_t wn = 2 * (SPATH_SEGS_MAX + 2) * n;
    if (n <= 4) {
        c.work = stack_work;
    } else if (!(c.work = arena_alloc(scratch, wn * sizeof *c.work))) {
        c.why = "scratch arena full";
        rc = ERR_NOMEM;
        goto done;
    }
    if ((rc = top(&c, &r, &root)))
        goto done;
    uint16_t *act = c.work; /* level 0's first half */
    uint32_t nact = 0;
    for (size_t i = 0; i < n; i++)
        if (paths[i].nseg > 0 && paths[i].nseg <= SPATH_SEGS_MAX)
            act[nact++] = (uint16_t)i;
    if ((rc = walk(&c, root, &r, act, nact, 0, 0)))
        goto done;
    if (r.p != r.end)
        rc = corrupt(&c, "trailing bytes after the record");
done:
    if (err)
        *err = c.why;
    return rc;
}

static int bin_to_json(const struct afmt *f, struct slice rec, struct sbuf *out,
                       struct arena *scratch, const char **err)
{
    struct dctx c;
    dctx_init(&c, f, rec, scratch);
    struct rd r = {rec.ptr, rec.ptr + rec.len};
    size_t mark = out->len;
    uint32_t root;
    int rc = top(&c, &r, &root);
    if (rc == 0)
        rc = render(&c, root, &r, out, 0);
    if (rc == 0 && r.p != r.end)
        rc = corrupt(&c, "trailing bytes after the record");
    if (rc == 0 && !sbuf_ok(out)) {
        rc = ERR_NOMEM;
        c.why = "output buffer full";
    }
    if (rc)
        out->len = mark < out->len ? mark : out->len;
    if (err)
        *err = c.why;
    return rc;
}

static int avro_extract(const struct sfmt *sf, struct slice rec, const struct spath *paths,
                        size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    return bin_extract((const struct afmt *)sf, rec, paths, n, out, scratch, err);
}

static int avro_to_json(const struct sfmt *sf, struct slice rec, struct sbuf *out,
                        struct arena *scratch, const char **err)
{
    return bin_to_json((const struct afmt *)sf, rec, out, scratch, err);
}

static void avro_free(struct sfmt *sf)
{
    struct afmt *f = (struct afmt *)sf;
    prog_free(&f->pg);
    if (f->field_aliases)
        json_decref(f->field_aliases);
    xfree(f);
}

static const struct sfmt_ops avro_ops = {avro_extract, avro_to_json, avro_free, "avro"};

int sfmt_avro_new(const struct avro_schema *writer, const struct avro_schema *reader,
                  struct sfmt **out, struct serr *e)
{
    *out = NULL;
    if (!writer) {
        serr_set(e, "", "no writer schema");
        return ERR_INVALID;
    }
    struct afmt *f = xcalloc(1, sizeof *f);
    if (!f) {
        serr_set(e, "", "out of memory");
        return ERR_NOMEM;
    }
    f->base.ops = &avro_ops;
    int rc = prog_build(&f->pg, writer->root, reader ? reader->root : writer->root, e);
    if (rc) {
        xfree(f);
        return rc;
    }
    *out = &f->base;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Avro JSON encoding: jansson parse -> Avro binary of the reader (defaults, aliases, union
 * wrappers resolved by avro_encode_json) -> the reader's identity program. Not the fast path. */

static int json_to_bin(const struct afmt *f, struct slice rec, struct arena *scratch,
                       struct slice *bin, const char **err)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)rec.ptr, rec.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) {
        *err = "record is not valid JSON";
        return ERR_CORRUPT;
    }
    int rc = 0;
    if (f->reader->type == AT_RECORD && !json_is_object(j)) {
        *err = "record is not a JSON object";
        json_decref(j);
        return ERR_INVALID;
    }
    struct aenc ec = {AENC_JSON, f->apply_defaults, f->field_aliases, NULL, false, {0}};
    struct sbuf b;
    sbuf_init(&b, scratch->max_bytes ? scratch->max_bytes : 0);
    int erc = avro_encode_json(&ec, f->reader, j, &b, 0);
    if (erc && ec.nomem) {
        *err = "out of memory";
        rc = ERR_NOMEM;
    } else if (erc) {
        char *msg = NULL;
        const char *why = ec.why ? ec.why : "record does not fit the schema";
        size_t ml = strlen(why) + strlen(ec.where) + 16;
        if ((msg = arena_alloc(scratch, ml)))
            snprintf(msg, ml, "%s%s%s", ec.where, ec.where[0] ? ": " : "", why);
        *err = msg ? msg : why;
        rc = ERR_CORRUPT;
    } else if (!sbuf_ok(&b)) {
        *err = "scratch arena full";
        rc = ERR_NOMEM;
    } else {
        uint8_t *p = arena_alloc(scratch, b.len ? b.len : 1);
        if (!p) {
            *err = "scratch arena full";
            rc = ERR_NOMEM;
        } else {
            if (b.len)
                memcpy(p, b.data, b.len);
            *bin = slice_of(p, b.len);
        }
    }
    sbuf_free(&b);
    json_decref(j);
    return rc;
}

static int ajson_extract(const struct sfmt *sf, struct slice rec, const struct spath *paths,
                         size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    const struct afmt *f = (const struct afmt *)sf;
    struct slice bin;
    const char *why = NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = (struct sval){.type = SV_MISSING};
    int rc = json_to_bin(f, rec, scratch, &bin, &why);
    if (rc == 0)
        rc = bin_extract(f, bin, paths, n, out, scratch, &why);
    if (err)
        *err = why;
    return rc;
}

static int ajson_to_json(const struct sfmt *sf, struct slice rec, struct sbuf *out,
                         struct arena *scratch, const char **err)
{
    const struct afmt *f = (const struct afmt *)sf;
    struct slice bin;
    const char *why = NULL;
    int rc = json_to_bin(f, rec, scratch, &bin, &why);
    if (rc == 0)
        rc = bin_to_json(f, bin, out, scratch, &why);
    if (err)
        *err = why;
    return rc;
}

static const struct sfmt_ops avro_json_ops = {ajson_extract, ajson_to_json, avro_free, "avro-json"};

int sfmt_avro_json_new(const struct avro_schema *reader, bool apply_defaults, json_t *field_aliases,
                       struct sfmt **out, struct serr *e)
{
    *out = NULL;
    if (!reader) {
        serr_set(e, "", "no reader schema");
        return ERR_INVALID;
    }
    if (field_aliases) {
        if (!json_is_object(field_aliases)) {
            serr_set(e, "field_aliases", "must be an object {\"field\":[\"alias\",...]}");
            return ERR_INVALID;
        }
        const char *k;
        json_t *v;
        json_object_foreach(field_aliases, k, v)
        {
            bool ok = json_is_string(v) || json_is_array(v);
            for (size_t i = 0; ok && json_is_array(v) && i < json_array_size(v); i++)
                ok = json_is_string(json_array_get(v, i));
            if (!ok) {
                char p[160];
                snprintf(p, sizeof p, "field_aliases.%.120s", k);
                serr_set(e, p, "must be a name or an array of names");
                return ERR_INVALID;
            }
        }
    }
    struct afmt *f = xcalloc(1, sizeof *f);
    if (!f) {
        serr_set(e, "", "out of memory");
        return ERR_NOMEM;
    }
    f->base.ops = &avro_json_ops;
    f->reader = reader->root;
    f->apply_defaults = apply_defaults;
    if (field_aliases && !(f->field_aliases = json_deep_copy(field_aliases))) {
        xfree(f);
        serr_set(e, "", "out of memory");
        return ERR_NOMEM;
    }
    int rc = prog_build(&f->pg, reader->root, reader->root, e);
    if (rc) {
        if (f->field_aliases)
            json_decref(f->field_aliases);
        xfree(f);
        return rc;
    }
    *out = &f->base;
    return 0;
}
