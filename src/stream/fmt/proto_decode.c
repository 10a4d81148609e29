/* proto_decode.c -- the descriptor-driven Protobuf wire-format decoder (sfmt_proto_new): extract()
 * walks a record once and captures the requested paths; to_json() renders the proto3 JSON mapping.
 * Semantics and strictness are listed in proto.h.
 *
 *   extract:  plan(paths, schema) ──▶ walk(record) ──▶ finish(defaults, JSON of whole fields)
 *               per path: the hops     one pass over     SV_MISSING / default / value
 *               (field, [i] or key)    the wire bytes,
 *                                      recursing into every embedded message (validation)
 *   to_json:  render_message ──▶ collect occurrences per field ──▶ emit in field-number order
 *
 * Invariants:
 *  1. Every byte read is preceded by a bounds check against the end of the enclosing message;
 *     lengths are checked against what is left before any pointer arithmetic.
 *  2. Recursion depth is bounded by PROTO_DECODE_DEPTH_MAX (messages, map values, groups).
 *  3. Memory: extract allocates from the scratch arena only for JSON-valued results, merged
 *     (repeated) occurrences of an embedded message, and when more than TGT_CHUNK paths are asked
 *     (they are processed TGT_CHUNK at a time); to_json allocates O(record size + fields of the
 *     messages present) from the arena. The arena's cap turns any excess into ERR_NOMEM.
 *  4. Every error path leaves no heap allocation behind (the one temporary sbuf is freed).
 */
#include "stream/fmt/proto_int.h"

#include "base/alloc.h"
#include "base/err.h"
#include "base/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_NEST_MAX 31

/* ---- wire primitives ------------------------------------------------------------------------- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

static const uint8_t wire_of[19] = {
    [PT_DOUBLE] = WT_I64,   [PT_FLOAT] = WT_I32,    [PT_INT64] = WT_VARINT,  [PT_UINT64] = WT_VARINT,
    [PT_INT32] = WT_VARINT, [PT_FIXED64] = WT_I64,  [PT_FIXED32] = WT_I32,   [PT_BOOL] = WT_VARINT,
    [PT_STRING] = WT_LEN,   [PT_GROUP] = WT_SGROUP, [PT_MESSAGE] = WT_LEN,   [PT_BYTES] = WT_LEN,
    [PT_UINT32] = WT_VARINT, [PT_ENUM] = WT_VARINT, [PT_SFIXED32] = WT_I32,  [PT_SFIXED64] = WT_I64,
    [PT_SINT32] = WT_VARINT, [PT_SINT64] = WT_VARINT,
};

static inline bool get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *out = *p;
        *pp = p + 1;
        return true;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p >= end)
            return false;
        uint8_t b = *p++;
        if (shift == 63 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *out = v;
            *pp = p;
            return true;
        }
    }
    return false;
}

/* One value of wire type wt: varint/fixed into u, LEN into p/len. */
struct raw {
    uint64_t u;
    const uint8_t *p;
    uint32_t len;
};

static inline bool get_value(const uint8_t **pp, const uint8_t *end, uint32_t wt, struct raw *r)
{
    const uint8_t *p = *pp;
    switch (wt) {
    case WT_VARINT:
        return get_varint(pp, end, &r->u);
    case WT_I64:
        if (end - p < 8)
            return false;
        r->u = get_le64(p);
        *pp = p + 8;
        return true;
    case WT_I32:
        if (end - p < 4)
            return false;
        r->u = get_le32(p);
        *pp = p + 4;
        return true;
    case WT_LEN: {
        uint64_t n;
        if (!get_varint(&p, end, &n) || n > (uint64_t)(end - p) || n > UINT32_MAX)
            return false;
        r->p = p;
        r->len = (uint32_t)n;
        *pp = p + n;
        return true;
    }
    default:
        return false;
    }
}

struct dctx {
    const struct proto_schema *s;
    struct arena *a;
    const char *why;
    int jdepth;
};

static int corrupt(struct dctx *c, const char *why)
{
    c->why = why;
    return ERR_CORRUPT;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

/* Skip one field of wire type wt (groups: up to the matching end tag). */
static int skip_field(struct dctx *c, const uint8_t **pp, const uint8_t *end, uint32_t wt,
                      uint64_t num, int depth)
{
    struct raw r = {0};
    if (wt == WT_SGROUP) {
        if (depth > PROTO_DECODE_DEPTH_MAX)
            return corrupt(c, "groups nested too deep");
        for (;;) {
            uint64_t tag = 0;
            if (!get_varint(pp, end, &tag))
                return corrupt(c, "unterminated group");
            uint32_t w2 = (uint32_t)(tag & 7);
            if (tag >> 3 == 0 || tag >> 3 > PROTO_FIELD_NUMBER_MAX)
                return corrupt(c, "bad field number");
            if (w2 == WT_EGROUP) {
                if (tag >> 3 != num)
                    return corrupt(c, "mismatched end-group tag");
                return 0;
            }
            TRY(skip_field(c, pp, end, w2, tag >> 3, depth + 1));
        }
    }
    if (wt == WT_EGROUP)
        return corrupt(c, "end-group tag without a start");
    if (!get_value(pp, end, wt, &r))
        return corrupt(c, wt > WT_I32 ? "bad wire type" : "truncated field");
    return 0;
}

static inline bool packable(uint8_t type) { return wire_of[type] != WT_LEN && type != PT_GROUP; }

static inline int32_t zz32(uint64_t u) { return (int32_t)((uint32_t)u >> 1 ^ -(uint32_t)(u & 1)); }
static inline int64_t zz64(uint64_t u) { return (int64_t)(u >> 1 ^ -(u & 1)); }

static inline bool check_str(const struct proto_field *f, const struct raw *r)
{
    return f->type != PT_STRING || utf8_valid(r->p, r->len);
}

/* Read the next element of a packed run. */
static inline bool packed_next(const uint8_t **pp, const uint8_t *end, uint32_t wt, struct raw *r)
{
    return get_value(pp, end, wt, r);
}

static int check_packed(struct dctx *c, uint32_t wt, const struct raw *run)
{
    if (wt == WT_I64 && run->len % 8)
        return corrupt(c, "packed run not a multiple of 8 bytes");
    if (wt == WT_I32 && run->len % 4)
        return corrupt(c, "packed run not a multiple of 4 bytes");
    if (wt == WT_VARINT) {
        const uint8_t *p = run->p, *end = run->p + run->len;
        uint64_t u;
        while (p < end)
            if (!get_varint(&p, end, &u))
                return corrupt(c, "bad varint in packed run");
    }
    return 0;
}

/* ---- scalar values --------------------------------------------------------------------------- */

static void scalar_sval(const struct proto_field *f, const struct raw *r, struct sval *o)
{
    o->escaped = false;
    o->len = 0;
    switch (f->type) {
    case PT_INT32: o->type = SV_INT; o->i = (int32_t)(uint32_t)r->u; break;
    case PT_SFIXED32: o->type = SV_INT; o->i = (int32_t)(uint32_t)r->u; break;
    case PT_SINT32: o->type = SV_INT; o->i = zz32(r->u); break;
    case PT_UINT32: case PT_FIXED32: o->type = SV_INT; o->i = (uint32_t)r->u; break;
    case PT_INT64: case PT_SFIXED64: o->type = SV_INT; o->i = (int64_t)r->u; break;
    case PT_SINT64: o->type = SV_INT; o->i = zz64(r->u); break;
    case PT_UINT64: case PT_FIXED64:
        if (r->u <= INT64_MAX) {
            o->type = SV_INT;
            o->i = (int64_t)r->u;
        } else {
            o->type = SV_DOUBLE;
            o->d = (double)r->u;
        }
        break;
    case PT_BOOL: o->type = SV_BOOL; o->b = r->u != 0; break;
    case PT_FLOAT: {
        uint32_t b = (uint32_t)r->u;
        float fl;
        memcpy(&fl, &b, 4);
        o->type = SV_DOUBLE;
        o->d = fl;
        break;
    }
    case PT_DOUBLE: o->type = SV_DOUBLE; memcpy(&o->d, &r->u, 8); break;
    case PT_STRING: o->type = SV_STR; o->p = (const char *)r->p; o->len = r->len; break;
    case PT_BYTES: o->type = SV_BYTES; o->p = (const char *)r->p; o->len = r->len; break;
    case PT_ENUM: {
        const char *n = proto_enum_name(f->en, (int32_t)(uint32_t)r->u);
        if (n) {
            o->type = SV_STR;
            o->p = n;
            o->len = (uint32_t)strlen(n);
        } else {
            o->type = SV_INT;
            o->i = (int32_t)(uint32_t)r->u;
        }
        break;
    }
    default: o->type = SV_MISSING; break;
    }
}

static void default_sval(const struct proto_field *f, struct sval *o)
{
    struct raw r = {.u = 0, .p = (const uint8_t *)"", .len = 0};
    if (f->type == PT_ENUM)
        r.u = (uint32_t)f->en->values[0].number;
    scalar_sval(f, &r, o);
}

/* ---- JSON rendering (proto3 JSON mapping) ---------------------------------------------------- */

static int render_message(struct dctx *c, struct jw *w, const struct proto_msg *m,
                          const uint8_t *p, size_t len, int depth);
static int render_fields(struct dctx *c, struct jw *w, const struct proto_msg *m,
                         const uint8_t *p, size_t len, int depth);
static int validate_msg(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                        int depth);

static int jopen(struct dctx *c, struct jw *w, bool obj)
{
    if (++c->jdepth > JSON_NEST_MAX) {
        c->why = "record nests too deep for JSON output";
        return ERR_INVALID;
    }
    if (obj)
        jw_obj_open(w);
    else
        jw_arr_open(w);
    return 0;
}

static void jclose(struct dctx *c, struct jw *w, bool obj)
{
    c->jdepth--;
    if (obj)
        jw_obj_close(w);
    else
        jw_arr_close(w);
}

void proto_put_double(struct jw *w, double d, bool is_float)
{
    if (isnan(d)) {
        jw_str(w, "NaN");
        return;
    }
    if (isinf(d)) {
        jw_str(w, d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char buf[40];
    if (is_float) {
        float f = (float)d;
        for (int prec = 6; prec <= 9; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
            if ((float)strtod(buf, NULL) == f)
                break;
        }
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
    }
    jw_raw(w, buf);
}

static void put_i64_str(struct jw *w, int64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRId64, v);
    jw_str(w, b);
}

static void put_u64_str(struct jw *w, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, v);
    jw_str(w, b);
}

/* One scalar (not a message) as JSON. The string was validated by the caller. */
static void put_scalar(struct jw *w, const struct proto_field *f, const struct raw *r)
{
    switch (f->type) {
    case PT_INT32: case PT_SFIXED32: jw_i64(w, (int32_t)(uint32_t)r->u); break;
    case PT_SINT32: jw_i64(w, zz32(r->u)); break;
    case PT_UINT32: case PT_FIXED32: jw_u64(w, (uint32_t)r->u); break;
    case PT_INT64: case PT_SFIXED64: put_i64_str(w, (int64_t)r->u); break;
    case PT_SINT64: put_i64_str(w, zz64(r->u)); break;
    case PT_UINT64: case PT_FIXED64: put_u64_str(w, r->u); break;
    case PT_BOOL: jw_bool(w, r->u != 0); break;
    case PT_FLOAT: {
        uint32_t b = (uint32_t)r->u;
        float fl;
        memcpy(&fl, &b, 4);
        proto_put_double(w, fl, true);
        break;
    }
    case PT_DOUBLE: {
        double d;
        memcpy(&d, &r->u, 8);
        proto_put_double(w, d, false);
        break;
    }
    case PT_STRING: jw_strn(w, r->p, r->len); break;
    case PT_BYTES: jw_b64(w, r->p, r->len); break;
    case PT_ENUM: {
        if (f->en->null_value) {
            jw_null(w);
            break;
        }
        const char *n = proto_enum_name(f->en, (int32_t)(uint32_t)r->u);
        if (n)
            jw_str(w, n);
        else
            jw_i64(w, (int32_t)(uint32_t)r->u);
        break;
    }
    default: jw_null(w); break;
    }
}

static bool is_default(const struct proto_field *f, const struct raw *r)
{
    switch (wire_of[f->type]) {
    case WT_LEN: return r->len == 0;
    case WT_I32: return (uint32_t)r->u == 0;
    case WT_VARINT:
        if (f->type == PT_INT32 || f->type == PT_UINT32 || f->type == PT_SINT32 || f->type == PT_ENUM)
            return (uint32_t)r->u == 0;
        return r->u == 0;
    default: return r->u == 0;
    }
}

/* Append b to a growing arena buffer (merging repeated occurrences of a message). */
static int cat(struct dctx *c, const uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p,
               size_t n)
{
    if (!*buf) {
        *buf = p ? p : (const uint8_t *)"";
        *len = n;
        *cap = 0; /* borrowed */
        return 0;
    }
    if (n == 0)
        return 0;
    if (*cap < *len + n) {
        size_t ncap = (*len + n) * 2;
        uint8_t *nb = arena_alloc(c->a, ncap);
        if (!nb)
            return ERR_NOMEM;
        if (*len)
            memcpy(nb, *buf, *len);
        *buf = nb;
        *cap = ncap;
    }
    memcpy((uint8_t *)*buf + *len, p, n);
    *len += n;
    return 0;
}

/* Map entry: key (1) and value (2), last wins, validated; unknown fields skipped. */
struct entry {
    struct raw key, val;
    bool has_key, has_val;
};

static int parse_entry(struct dctx *c, const struct proto_msg *em, const uint8_t *p,
                       const uint8_t *end, struct entry *e, int depth)
{
    const struct proto_field *kf = &em->fields[0], *vf = &em->fields[1];
    memset(e, 0, sizeof *e);
    e->key.p = e->val.p = (const uint8_t *)"";
    while (p < end) {
        uint64_t tag = 0;
        if (!get_varint(&p, end, &tag))
            return corrupt(c, "truncated tag");
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 0 || num > PROTO_FIELD_NUMBER_MAX)
            return corrupt(c, "bad field number");
        const struct proto_field *f = num == 1 ? kf : num == 2 ? vf : NULL;
        if (!f || wire_of[f->type] != wt) {
            TRY(skip_field(c, &p, end, wt, num, depth + 1));
            continue;
        }
        struct raw r = {0};
        if (!get_value(&p, end, wt, &r))
            return corrupt(c, "truncated field");
        if (!check_str(f, &r))
            return corrupt(c, "string is not UTF-8");
        if (num == 1) {
            e->key = r;
            e->has_key = true;
        } else {
            e->val = r;
            e->has_val = true;
        }
    }
    return 0;
}

/* The key of a map entry as text (JSON object key / path segment). */
static void key_text(const struct proto_field *kf, const struct raw *r, char *buf,
                     const char **out, size_t *n)
{
    switch (kf->type) {
    case PT_STRING:
        *out = (const char *)r->p;
        *n = r->len;
        return;
    case PT_BOOL:
        *out = r->u ? "true" : "false";
        *n = strlen(*out);
        return;
    case PT_INT32: case PT_SFIXED32: *n = (size_t)sprintf(buf, "%d", (int32_t)(uint32_t)r->u); break;
    case PT_SINT32: *n = (size_t)sprintf(buf, "%d", zz32(r->u)); break;
    case PT_UINT32: case PT_FIXED32: *n = (size_t)sprintf(buf, "%u", (uint32_t)r->u); break;
    case PT_SINT64: *n = (size_t)sprintf(buf, "%" PRId64, zz64(r->u)); break;
    case PT_INT64: case PT_SFIXED64: *n = (size_t)sprintf(buf, "%" PRId64, (int64_t)r->u); break;
    default: *n = (size_t)sprintf(buf, "%" PRIu64, r->u); break;
    }
    *out = buf;
}

/* Emit one map value (absent = default; message values rendered). */
static int put_map_value(struct dctx *c, struct jw *w, const struct proto_field *vf,
                         const struct entry *e, int depth)
{
    if (vf->type == PT_MESSAGE)
        return render_message(c, w, vf->msg, e->val.p, e->has_val ? e->val.len : 0, depth + 1);
    struct raw r = e->val;
    if (!e->has_val && vf->type == PT_ENUM)
        r.u = (uint32_t)vf->en->values[0].number;
    put_scalar(w, vf, &r);
    return 0;
}

struct kentry {
    const char *k;
    size_t klen;
    uint32_t pos;
    struct entry e;
};

static int cmp_kentry(const void *a, const void *b)
{
    const struct kentry *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int d = memcmp(x->k, y->k, n);
    if (d)
        return d;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* The body of a map as a JSON object: entries from the LEN values in occ (count of them). */
struct occ {
    const uint8_t *p;
    uint64_t u;
    uint32_t len;
    uint8_t wt;
    int32_t next;
};

static int put_map(struct dctx *c, struct jw *w, const struct proto_field *f, const struct occ *occ,
                   int32_t head, uint32_t count, int depth)
{
    const struct proto_msg *em = f->msg;
    struct kentry *ke = arena_alloc(c->a, (count ? count : 1) * sizeof *ke);
    char *kbuf = arena_alloc(c->a, (count ? count : 1) * 24);
    if (!ke || !kbuf)
        return ERR_NOMEM;
    uint32_t n = 0;
    for (int32_t i = head; i >= 0; i = occ[i].next) {
        if (occ[i].wt != WT_LEN)
            continue;
        struct kentry *k = &ke[n];
        TRY(parse_entry(c, em, occ[i].p, occ[i].p + occ[i].len, &k->e, depth + 1));
        if (!k->e.has_key && em->fields[0].type == PT_STRING)
            k->e.key.p = (const uint8_t *)"";
        key_text(&em->fields[0], &k->e.key, kbuf + 24 * n, &k->k, &k->klen);
        k->pos = n++;
    }
    qsort(ke, n, sizeof *ke, cmp_kentry);
    TRY(jopen(c, w, true));
    for (uint32_t i = 0; i < n; i++) {
        if (i + 1 < n && ke[i + 1].klen == ke[i].klen &&
            memcmp(ke[i + 1].k, ke[i].k, ke[i].klen) == 0) {
            /* A later entry has the same key: last wins, but this one must still be valid. */
            if (em->fields[1].type == PT_MESSAGE && ke[i].e.has_val)
                TRY(validate_msg(c, em->fields[1].msg, ke[i].e.val.p, ke[i].e.val.len, depth + 2));
            continue;
        }
        jw_keyn(w, (const uint8_t *)ke[i].k, ke[i].klen);
        TRY(put_map_value(c, w, &em->fields[1], &ke[i].e, depth + 1));
    }
    jclose(c, w, true);
    return 0;
}

/* ---- well-known types -------------------------------------------------------------------------- */

/* Last value of fields 1..6 with their declared wire types (validated; strings UTF-8). */
struct small {
    struct raw v[7];
    bool has[7];
    int last; /* number of the last known field seen (Value's oneof) */
};

static int scan_small(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                      struct small *o, int depth)
{
    const uint8_t *end = p + len;
    memset(o, 0, sizeof *o);
    while (p < end) {
        uint64_t tag = 0;
        if (!get_varint(&p, end, &tag))
            return corrupt(c, "truncated tag");
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 0 || num > PROTO_FIELD_NUMBER_MAX)
            return corrupt(c, "bad field number");
        const struct proto_field *f = proto_field_by_num(m, num);
        if (!f || num > 6 || wire_of[f->type] != wt) {
            TRY(skip_field(c, &p, end, wt, num, depth + 1));
            continue;
        }
        struct raw r = {0};
        if (!get_value(&p, end, wt, &r))
            return corrupt(c, "truncated field");
        if (!check_str(f, &r))
            return corrupt(c, "string is not UTF-8");
        if (f->type == PT_MESSAGE)
            TRY(validate_msg(c, f->msg, r.p, r.len, depth + 1));
        o->v[num] = r;
        o->has[num] = true;
        o->last = (int)num;
    }
    return 0;
}

static void civil(int64_t days, int64_t *y, unsigned *mo, unsigned *d)
{
    /* Days since 1970-01-01 to the proleptic Gregorian calendar (era-based arithmetic). */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *mo = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*mo <= 2);
}

static size_t frac(char *b, int32_t nanos)
{
    if (nanos == 0)
        return 0;
    if (nanos % 1000000 == 0)
        return (size_t)sprintf(b, ".%03d", nanos / 1000000);
    if (nanos % 1000 == 0)
        return (size_t)sprintf(b, ".%06d", nanos / 1000);
    return (size_t)sprintf(b, ".%09d", nanos);
}

/* Timestamp/Duration as their JSON strings into buf (>= 48 bytes). ERR_INVALID out of range. */
static int time_text(struct dctx *c, uint8_t wkt, const struct small *sm, char *buf)
{
    int64_t secs = (int64_t)sm->v[1].u;
    int32_t nanos = (int32_t)(uint32_t)sm->v[2].u;
    if (wkt == WKT_TIMESTAMP) {
        if (secs < -62135596800LL || secs > 253402300799LL || nanos < 0 || nanos > 999999999) {
            c->why = "Timestamp out of range";
            return ERR_INVALID;
        }
        int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
        int64_t sod = secs - days * 86400;
        int64_t y;
        unsigned mo, d;
        civil(days, &y, &mo, &d);
        size_t n = (size_t)sprintf(buf, "%04d-%02u-%02uT%02d:%02d:%02d", (int)y, mo, d,
                                   (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60));
        n += frac(buf + n, nanos);
        strcpy(buf + n, "Z");
        return 0;
    }
    if (secs < -315576000000LL || secs > 315576000000LL || nanos < -999999999 || nanos > 999999999 ||
        (secs > 0 && nanos < 0) || (secs < 0 && nanos > 0)) {
        c->why = "Duration out of range";
        return ERR_INVALID;
    }
    bool neg = secs < 0 || nanos < 0;
    size_t n = (size_t)sprintf(buf, "%s%" PRId64, neg ? "-" : "", secs < 0 ? -secs : secs);
    n += frac(buf + n, nanos < 0 ? -nanos : nanos);
    strcpy(buf + n, "s");
    return 0;
}

static int render_wkt(struct dctx *c, struct jw *w, const struct proto_msg *m, const uint8_t *p,
                      size_t len, int depth)
{
    const uint8_t *end = p + len;
    struct small sm;
    switch (m->wkt) {
    case WKT_TIMESTAMP:
    case WKT_DURATION: {
        char buf[64];
        TRY(scan_small(c, m, p, len, &sm, depth));
        TRY(time_text(c, m->wkt, &sm, buf));
        jw_str(w, buf);
        return 0;
    }
    case WKT_WRAPPER: {
        TRY(scan_small(c, m, p, len, &sm, depth));
        const struct proto_field *f = &m->fields[0];
        struct raw r = sm.v[1];
        if (!sm.has[1])
            r.p = (const uint8_t *)"";
        put_scalar(w, f, &r);
        return 0;
    }
    case WKT_VALUE: {
        TRY(scan_small(c, m, p, len, &sm, depth));
        const struct proto_field *f = sm.last ? proto_field_by_num(m, (uint64_t)sm.last) : NULL;
        if (!f || sm.last == 1) {
            jw_null(w);
            return 0;
        }
        if (f->type == PT_MESSAGE) {
            /* Struct/ListValue: all occurrences of that field merge; render them together. */
            const uint8_t *buf = NULL;
            size_t bl = 0, bc = 0;
            const uint8_t *q = p;
            while (q < end) {
                uint64_t tag = 0;
                struct raw r = {0};
                get_varint(&q, end, &tag);
                if ((tag & 7) == WT_LEN && (tag >> 3) == (uint64_t)sm.last) {
                    get_value(&q, end, WT_LEN, &r);
                    TRY(validate_msg(c, f->msg, r.p, r.len, depth + 1));
                    TRY(cat(c, &buf, &bl, &bc, r.p, r.len));
                } else {
                    TRY(skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, depth + 1));
                }
            }
            return render_message(c, w, f->msg, buf ? buf : p, buf ? bl : 0, depth + 1);
        }
        put_scalar(w, f, &sm.v[sm.last]);
        return 0;
    }
    case WKT_LISTVALUE:
    case WKT_FIELDMASK: {
        const struct proto_field *f = proto_field_by_num(m, 1);
        bool mask = m->wkt == WKT_FIELDMASK;
        /* FieldMask: collect "a_b,c" into the arena, then one jw_strn. */
        char *acc = NULL;
        size_t an = 0, acap = 0;
        if (!mask)
            TRY(jopen(c, w, false));
        const uint8_t *q = p;
        while (q < end) {
            uint64_t tag = 0;
            if (!get_varint(&q, end, &tag))
                return corrupt(c, "truncated tag");
            uint32_t wt = (uint32_t)(tag & 7);
            if (tag >> 3 == 0 || tag >> 3 > PROTO_FIELD_NUMBER_MAX)
                return corrupt(c, "bad field number");
            if (tag >> 3 != 1 || wt != WT_LEN) {
                TRY(skip_field(c, &q, end, wt, tag >> 3, depth + 1));
                continue;
            }
            struct raw r = {0};
            if (!get_value(&q, end, WT_LEN, &r))
                return corrupt(c, "truncated field");
            if (!mask) {
                TRY(render_message(c, w, f->msg, r.p, r.len, depth + 1));
                continue;
            }
            if (!utf8_valid(r.p, r.len))
                return corrupt(c, "string is not UTF-8");
            if (an + r.len + 1 > acap) {
                size_t ncap = (an + r.len + 1) * 2;
                char *nb = arena_alloc(c->a, ncap);
                if (!nb)
                    return ERR_NOMEM;
                if (an)
                    memcpy(nb, acc, an);
                acc = nb;
                acap = ncap;
            }
            if (an)
                acc[an++] = ',';
            bool up = false;
            for (uint32_t i = 0; i < r.len; i++) {
                char ch = (char)r.p[i];
                if (ch == '_') {
                    up = true;
                    continue;
                }
                if (up && ch >= 'a' && ch <= 'z')
                    ch = (char)(ch - 'a' + 'A');
                up = false;
                acc[an++] = ch;
            }
        }
        if (mask)
            jw_strn(w, (const uint8_t *)(acc ? acc : ""), an);
        else
            jclose(c, w, false);
        return 0;
    }
    case WKT_STRUCT: {
        const struct proto_field *f = proto_field_by_num(m, 1);
        /* Collect the entries of field 1 and render them as the object itself. */
        uint32_t count = 0;
        const uint8_t *q = p;
        while (q < end) {
            uint64_t tag = 0;
            if (!get_varint(&q, end, &tag))
                return corrupt(c, "truncated tag");
            if (tag >> 3 == 0 || tag >> 3 > PROTO_FIELD_NUMBER_MAX)
                return corrupt(c, "bad field number");
            if (tag >> 3 == 1 && (tag & 7) == WT_LEN)
                count++;
            TRY(skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, depth + 1));
        }
        struct occ *oc = arena_alloc(c->a, (count ? count : 1) * sizeof *oc);
        if (!oc)
            return ERR_NOMEM;
        uint32_t k = 0;
        q = p;
        while (q < end) {
            uint64_t tag = 0;
            get_varint(&q, end, &tag);
            if (tag >> 3 == 1 && (tag & 7) == WT_LEN) {
                struct raw r = {0};
                get_value(&q, end, WT_LEN, &r);
                oc[k] = (struct occ){.p = r.p, .len = r.len, .wt = WT_LEN, .next = -1};
                if (k)
                    oc[k - 1].next = (int32_t)k;
                k++;
            } else {
                TRY(skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, depth + 1));
            }
        }
        return put_map(c, w, f, oc, count ? 0 : -1, count, depth);
    }
    case WKT_ANY: {
        TRY(scan_small(c, m, p, len, &sm, depth));
        struct raw url = sm.v[1], val = sm.v[2];
        if (!sm.has[1]) {
            TRY(jopen(c, w, true));
            jclose(c, w, true);
            return 0;
        }
        if (!sm.has[2])
            val.p = (const uint8_t *)"", val.len = 0;
        const uint8_t *slash = url.len ? memrchr(url.p, '/', url.len) : NULL;
        const uint8_t *tn = slash ? slash + 1 : url.p;
        size_t tl = url.len - (size_t)(tn - url.p);
        const struct psym *y = tl ? proto_sym_get(c->s, (const char *)tn, tl) : NULL;
        TRY(jopen(c, w, true));
        jw_key(w, "@type");
        jw_strn(w, url.p, url.len);
        if (y && y->kind == PSYM_MESSAGE) {
            const struct proto_msg *im = y->p;
            if (im->wkt) {
                jw_key(w, "value");
                TRY(render_message(c, w, im, val.p, val.len, depth + 1));
            } else {
                TRY(render_fields(c, w, im, val.p, val.len, depth + 1));
            }
        } else {
            jw_key(w, "value");
            jw_b64(w, val.p, val.len);
        }
        jclose(c, w, true);
        return 0;
    }
    default:
        break;
    }
    TRY(jopen(c, w, true));
    TRY(render_fields(c, w, m, p, len, depth));
    jclose(c, w, true);
    return 0;
}

/* ---- messages ------------------------------------------------------------------------------- */

static int render_message(struct dctx *c, struct jw *w, const struct proto_msg *m,
                          const uint8_t *p, size_t len, int depth)
{
    if (depth > PROTO_DECODE_DEPTH_MAX)
        return corrupt(c, "messages nested too deep");
    if (m->wkt)
        return render_wkt(c, w, m, p, len, depth);
    TRY(jopen(c, w, true));
    TRY(render_fields(c, w, m, p, len, depth));
    jclose(c, w, true);
    return 0;
}

/* The fields of message m (bytes p..p+len) as members of the object being written. */
static int render_fields(struct dctx *c, struct jw *w, const struct proto_msg *m,
                         const uint8_t *p, size_t len, int depth)
{
    const uint8_t *end = p + len, *q = p;
    /* Pass 1: validate the framing of this level and count known-field occurrences. */
    uint32_t count = 0;
    while (q < end) {
        uint64_t tag = 0;
        if (!get_varint(&q, end, &tag))
            return corrupt(c, "truncated tag");
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 0 || num > PROTO_FIELD_NUMBER_MAX)
            return corrupt(c, "bad field number");
        TRY(skip_field(c, &q, end, wt, num, depth + 1));
        count += proto_field_by_num(m, num) != NULL;
    }
    if (count == 0)
        return 0;
    struct occ *occ = arena_alloc(c->a, count * sizeof *occ);
    int32_t *head = arena_alloc(c->a, (m->nfields * 2 + m->noneofs + 1) * sizeof(int32_t));
    if (!occ || !head)
        return ERR_NOMEM;
    int32_t *tail = head + m->nfields, *oneof_last = tail + m->nfields;
    uint32_t *nocc = arena_alloc(c->a, (m->nfields + 1) * sizeof(uint32_t));
    if (!nocc)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < m->nfields; i++) {
        head[i] = tail[i] = -1;
        nocc[i] = 0;
    }
    for (uint32_t i = 0; i < m->noneofs; i++)
        oneof_last[i] = -1;
    /* Pass 2: link occurrences per field (framing already validated). */
    uint32_t k = 0;
    q = p;
    while (q < end) {
        uint64_t tag = 0;
        get_varint(&q, end, &tag);
        uint32_t wt = (uint32_t)(tag & 7);
        const struct proto_field *f = proto_field_by_num(m, tag >> 3);
        if (!f || wt == WT_SGROUP || wt == WT_EGROUP) {
            TRY(skip_field(c, &q, end, wt, tag >> 3, depth + 1));
            continue;
        }
        struct occ *o = &occ[k];
        struct raw r = {0};
        get_value(&q, end, wt, &r);
        bool ok = wt == wire_of[f->type] || (wt == WT_LEN && f->label == PL_REPEATED && packable(f->type));
        if (!ok)
            continue; /* wire type mismatch: an unknown field */
        uint32_t fi = (uint32_t)(f - m->fields);
        *o = (struct occ){.p = r.p, .u = r.u, .len = r.len, .wt = (uint8_t)wt, .next = -1};
        if (tail[fi] >= 0)
            occ[tail[fi]].next = (int32_t)k;
        else
            head[fi] = (int32_t)k;
        tail[fi] = (int32_t)k;
        nocc[fi]++;
        if (f->oneof >= 0)
            oneof_last[f->oneof] = (int32_t)fi;
        k++;
    }
    /* Emit in field-number order. */
    for (uint32_t n = 0; n < m->nfields; n++) {
        uint32_t fi = m->by_number[n];
        const struct proto_field *f = &m->fields[fi];
        if (head[fi] < 0)
            continue;
        if (f->oneof >= 0 && oneof_last[f->oneof] != (int32_t)fi) {
            /* Replaced by a later member: not shown, but still validated. */
            for (int32_t i = head[fi]; i >= 0; i = occ[i].next) {
                struct raw r = {.u = occ[i].u, .p = occ[i].p, .len = occ[i].len};
                if (f->type == PT_MESSAGE)
                    TRY(validate_msg(c, f->msg, r.p, r.len, depth + 1));
                else if (!check_str(f, &r))
                    return corrupt(c, "string is not UTF-8");
            }
            continue;
        }
        if (f->is_map) {
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(put_map(c, w, f, occ, head[fi], nocc[fi], depth));
            continue;
        }
        if (f->label == PL_REPEATED) {
            bool any = false;
            for (int32_t i = head[fi]; i >= 0 && !any; i = occ[i].next)
                any = !(occ[i].wt == WT_LEN && packable(f->type) && occ[i].len == 0);
            if (!any)
                continue;
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(jopen(c, w, false));
            for (int32_t i = head[fi]; i >= 0; i = occ[i].next) {
                const struct occ *o = &occ[i];
                struct raw r = {.u = o->u, .p = o->p, .len = o->len};
                if (f->type == PT_MESSAGE) {
                    TRY(render_message(c, w, f->msg, o->p, o->len, depth + 1));
                } else if (o->wt == WT_LEN && packable(f->type)) {
                    uint32_t ewt = wire_of[f->type];
                    TRY(check_packed(c, ewt, &r));
                    const uint8_t *pp = o->p, *pe = o->p + o->len;
                    struct raw e;
                    while (pp < pe && packed_next(&pp, pe, ewt, &e))
                        put_scalar(w, f, &e);
                } else {
                    if (!check_str(f, &r))
                        return corrupt(c, "string is not UTF-8");
                    put_scalar(w, f, &r);
                }
            }
            jclose(c, w, false);
            continue;
        }
        if (f->type == PT_MESSAGE) {
            const uint8_t *buf = NULL;
            size_t bl = 0, bc = 0;
            /* Merging = parsing the concatenation, but only of occurrences that are valid on
             * their own (a cut field must not be healed by the next occurrence's bytes). */
            for (int32_t i = head[fi]; i >= 0; i = occ[i].next) {
                if (nocc[fi] > 1)
                    TRY(validate_msg(c, f->msg, occ[i].p, occ[i].len, depth + 1));
                TRY(cat(c, &buf, &bl, &bc, occ[i].p, occ[i].len));
            }
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(render_message(c, w, f->msg, buf, bl, depth + 1));
            continue;
        }
        /* Singular scalar: every occurrence validated, the last one counts. */
        const struct occ *o = NULL;
        for (int32_t i = head[fi]; i >= 0; i = occ[i].next) {
            struct raw r = {.u = occ[i].u, .p = occ[i].p, .len = occ[i].len};
            if (!check_str(f, &r))
                return corrupt(c, "string is not UTF-8");
            o = &occ[i];
        }
        struct raw r = {.u = o->u, .p = o->p, .len = o->len};
        if (!f->presence && is_default(f, &r))
            continue;
        jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
        put_scalar(w, f, &r);
    }
    return 0;
}

/* ---- extract: plan ------------------------------------------------------------------------------ */

enum { SEL_NONE = 0, SEL_INDEX, SEL_KEY };
enum { LEAF_SCALAR = 0, LEAF_LIST, LEAF_MAP, LEAF_MSG };

struct hop {
    const struct proto_field *f;
    uint8_t sel;
    int32_t index;
    int32_t seen; /* elements counted so far (SEL_INDEX) */
    const char *key;
    uint32_t keylen;
};

#define TGT_CHUNK 16

struct tgt {
    struct sval *out;
    struct hop hops[SPATH_SEGS_MAX];
    uint8_t nhops;
    uint8_t leaf;
    bool dead, set;
    uint8_t entered;                 /* hops whose containing message was entered */
    const struct proto_msg *leaf_msg; /* message of a LEAF_MSG value */
    const uint8_t *buf;               /* LEAF_MSG bytes, or the container of a LIST/MAP leaf */
    size_t blen, bcap;
    bool have_buf;
};

static void plan(const struct proto_msg *m, const struct spath *p, struct tgt *t)
{
    uint32_t si = 0;
    t->nhops = 0;
    t->dead = p->nseg == 0;
    while (si < p->nseg && !t->dead) {
        const struct spath_seg *seg = &p->seg[si++];
        const struct proto_field *f = seg->name ? proto_field_by_name(m, seg->name, seg->len) : NULL;
        if (!f) {
            t->dead = true;
            break;
        }
        struct hop *h = &t->hops[t->nhops++];
        memset(h, 0, sizeof *h);
        h->f = f;
        const struct proto_msg *next = NULL;
        t->leaf = LEAF_SCALAR;
        t->leaf_msg = NULL;
        if (f->is_map) {
            t->leaf = LEAF_MAP;
            if (si < p->nseg) {
                const struct spath_seg *ks = &p->seg[si++];
                if (!ks->name) {
                    t->dead = true;
                    break;
                }
                h->sel = SEL_KEY;
                h->key = ks->name;
                h->keylen = ks->len;
                const struct proto_field *vf = &f->msg->fields[1];
                t->leaf = vf->type == PT_MESSAGE ? LEAF_MSG : LEAF_SCALAR;
                next = vf->type == PT_MESSAGE ? vf->msg : NULL;
            }
        } else if (f->label == PL_REPEATED) {
            t->leaf = LEAF_LIST;
            if (si < p->nseg) {
                const struct spath_seg *is = &p->seg[si];
                if (is->name) {
                    t->dead = true;
                    break;
                }
                si++;
                h->sel = SEL_INDEX;
                h->index = is->index;
                t->leaf = f->type == PT_MESSAGE ? LEAF_MSG : LEAF_SCALAR;
                next = f->type == PT_MESSAGE ? f->msg : NULL;
            }
        } else if (f->type == PT_MESSAGE) {
            t->leaf = LEAF_MSG;
            next = f->msg;
        }
        if (t->leaf == LEAF_MSG)
            t->leaf_msg = next;
        if (si < p->nseg) {
            if (!next)
                t->dead = true;
            m = next;
        }
    }
}

/* ---- extract: walk ----------------------------------------------------------------------------- */

struct act {
    uint8_t t, h;
};

struct xctx {
    struct dctx c;
    struct tgt *tg;
};

static int walk(struct xctx *x, const struct proto_msg *m, const uint8_t *p, const uint8_t *end,
                int depth, const struct act *acts, uint32_t nact);

static void reset_tgt(struct tgt *t, uint8_t h)
{
    t->set = false;
    t->have_buf = false;
    t->buf = NULL;
    if (t->entered > h + 1)
        t->entered = (uint8_t)(h + 1);
}

/* The LEAF_MSG/LIST/MAP bytes: merged across occurrences. */
static int keep_buf(struct xctx *x, struct tgt *t, const uint8_t *p, size_t n)
{
    if (!t->have_buf) {
        t->have_buf = true;
        t->buf = NULL;
        t->blen = t->bcap = 0;
    }
    return cat(&x->c, &t->buf, &t->blen, &t->bcap, p, n);
}

static inline void set_scalar(struct tgt *t, const struct proto_field *f, const struct raw *r)
{
    scalar_sval(f, r, t->out);
    t->set = true;
}

/* A map entry occurrence for the acts whose hop is this map field. */
static int walk_entry(struct xctx *x, const struct proto_field *f, const struct raw *sub, int depth,
                      const struct act *acts, uint32_t nact)
{
    struct entry e;
    const struct proto_msg *em = f->msg;
    TRY(parse_entry(&x->c, em, sub->p, sub->p + sub->len, &e, depth + 1));
    const struct proto_field *kf = &em->fields[0], *vf = &em->fields[1];
    struct act child[TGT_CHUNK];
    uint32_t nchild = 0;
    char kb[24];
    const char *kt = NULL;
    size_t kl = 0;
    for (uint32_t i = 0; i < nact; i++) {
        struct tgt *t = &x->tg[acts[i].t];
        struct hop *h = &t->hops[acts[i].h];
        if (h->f != f || h->sel != SEL_KEY)
            continue;
        if (!kt) {
            struct raw k = e.key;
            if (!e.has_key)
                k.p = (const uint8_t *)"", k.len = 0, k.u = 0;
            key_text(kf, &k, kb, &kt, &kl);
        }
        if (kl != h->keylen || memcmp(kt, h->key, kl) != 0)
            continue;
        bool last = acts[i].h + 1 == t->nhops;
        if (vf->type == PT_MESSAGE) {
            if (last) {
                t->have_buf = false; /* last entry with this key wins */
                TRY(keep_buf(x, t, e.has_val ? e.val.p : (const uint8_t *)"", e.has_val ? e.val.len : 0));
                t->set = true;
            } else {
                reset_tgt(t, acts[i].h);
                child[nchild++] = (struct act){acts[i].t, (uint8_t)(acts[i].h + 1)};
            }
        } else if (e.has_val) {
            set_scalar(t, vf, &e.val);
        } else {
            default_sval(vf, t->out);
            t->set = true;
        }
    }
    if (vf->type == PT_MESSAGE && e.has_val)
        return walk(x, vf->msg, e.val.p, e.val.p + e.val.len, depth + 1, child, nchild);
    if (vf->type == PT_MESSAGE && nchild)
        return walk(x, vf->msg, e.val.p, e.val.p, depth + 1, child, nchild);
    return 0;
}

static int walk(struct xctx *x, const struct proto_msg *m, const uint8_t *p, const uint8_t *end,
                int depth, const struct act *acts, uint32_t nact)
{
    if (depth > PROTO_DECODE_DEPTH_MAX)
        return corrupt(&x->c, "messages nested too deep");
    for (uint32_t i = 0; i < nact; i++) {
        struct tgt *t = &x->tg[acts[i].t];
        if (t->entered < acts[i].h + 1)
            t->entered = (uint8_t)(acts[i].h + 1);
        if (acts[i].h + 1 == t->nhops && (t->leaf == LEAF_LIST || t->leaf == LEAF_MAP) &&
            t->hops[acts[i].h].sel == SEL_NONE)
            TRY(keep_buf(x, t, p, (size_t)(end - p))); /* the container, rendered at the end */
    }
    while (p < end) {
        uint64_t tag = 0;
        if (!get_varint(&p, end, &tag))
            return corrupt(&x->c, "truncated tag");
        uint32_t wt = (uint32_t)(tag & 7);
        uint64_t num = tag >> 3;
        if (num == 0 || num > PROTO_FIELD_NUMBER_MAX)
            return corrupt(&x->c, "bad field number");
        const struct proto_field *f = proto_field_by_num(m, num);
        if (!f) {
            TRY(skip_field(&x->c, &p, end, wt, num, depth + 1));
            continue;
        }
        uint32_t ewt = wire_of[f->type];
        struct raw r = {0};
        if (wt != ewt) {
            if (wt == WT_LEN && f->label == PL_REPEATED && packable(f->type)) {
                if (!get_value(&p, end, WT_LEN, &r))
                    return corrupt(&x->c, "truncated field");
                TRY(check_packed(&x->c, ewt, &r));
                for (uint32_t i = 0; i < nact; i++) {
                    struct tgt *t = &x->tg[acts[i].t];
                    struct hop *h = &t->hops[acts[i].h];
                    if (h->f != f || h->sel != SEL_INDEX)
                        continue;
                    const uint8_t *pp = r.p, *pe = r.p + r.len;
                    struct raw e;
                    while (pp < pe && packed_next(&pp, pe, ewt, &e))
                        if (h->seen++ == h->index)
                            set_scalar(t, f, &e);
                }
                continue;
            }
            TRY(skip_field(&x->c, &p, end, wt, num, depth + 1));
            continue;
        }
        if (!get_value(&p, end, wt, &r))
            return corrupt(&x->c, "truncated field");
        if (f->oneof >= 0) {
            for (uint32_t i = 0; i < nact; i++) {
                struct tgt *t = &x->tg[acts[i].t];
                const struct proto_field *hf = t->hops[acts[i].h].f;
                if (hf != f && hf->oneof == f->oneof)
                    reset_tgt(t, acts[i].h);
            }
        }
        if (f->type != PT_MESSAGE) {
            if (!check_str(f, &r))
                return corrupt(&x->c, "string is not UTF-8");
            for (uint32_t i = 0; i < nact; i++) {
                struct tgt *t = &x->tg[acts[i].t];
                struct hop *h = &t->hops[acts[i].h];
                if (h->f != f)
                    continue;
                if (h->sel == SEL_NONE && f->label != PL_REPEATED)
                    set_scalar(t, f, &r);
                else if (h->sel == SEL_INDEX && h->seen++ == h->index)
                    set_scalar(t, f, &r);
            }
            continue;
        }
        if (f->is_map) {
            TRY(walk_entry(x, f, &r, depth, acts, nact));
            continue;
        }
        struct act child[TGT_CHUNK];
        uint32_t nchild = 0;
        for (uint32_t i = 0; i < nact; i++) {
            struct tgt *t = &x->tg[acts[i].t];
            struct hop *h = &t->hops[acts[i].h];
            if (h->f != f)
                continue;
            bool last = acts[i].h + 1 == t->nhops;
            if (h->sel == SEL_INDEX) {
                if (h->seen++ != h->index)
                    continue;
                if (last) {
                    t->have_buf = false;
                    TRY(keep_buf(x, t, r.p, r.len));
                    t->set = true;
                    continue;
                }
            } else if (f->label == PL_REPEATED) {
                continue; /* whole list: rendered from its container */
            } else if (last) {
                TRY(keep_buf(x, t, r.p, r.len)); /* merged with earlier occurrences */
                t->set = true;
                continue;
            }
            child[nchild++] = (struct act){acts[i].t, (uint8_t)(acts[i].h + 1)};
        }
        TRY(walk(x, f->msg, r.p, r.p + r.len, depth + 1, child, nchild));
    }
    return 0;
}

static int validate_msg(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                        int depth)
{
    struct xctx x = {.c = *c, .tg = NULL};
    int rc = walk(&x, m, p, p + len, depth, NULL, 0);
    c->why = x.c.why;
    return rc;
}

/* ---- extract: finish ---------------------------------------------------------------------------- */

static int json_sval(struct xctx *x, struct sbuf *tmp, struct sval *o)
{
    if (!sbuf_ok(tmp))
        return ERR_NOMEM;
    char *d = arena_alloc(x->c.a, tmp->len ? tmp->len : 1);
    if (!d)
        return ERR_NOMEM;
    memcpy(d, tmp->data, tmp->len);
    o->type = SV_JSON;
    o->escaped = false;
    o->p = d;
    o->len = (uint32_t)tmp->len;
    return 0;
}

static int finish(struct xctx *x, struct tgt *t, struct sbuf *tmp)
{
    struct sval *o = t->out;
    if (t->dead) {
        o->type = SV_MISSING;
        return 0;
    }
    const struct hop *h = &t->hops[t->nhops - 1];
    const struct proto_field *f = h->f;
    switch (t->leaf) {
    case LEAF_SCALAR:
        if (t->set)
            return 0;
        if (h->sel == SEL_NONE && !f->presence && t->entered == t->nhops)
            default_sval(f, o);
        else
            o->type = SV_MISSING;
        return 0;
    case LEAF_LIST:
    case LEAF_MAP: {
        if (t->entered != t->nhops || !t->have_buf) {
            o->type = SV_MISSING;
            return 0;
        }
        /* Render field f from the container message (all its occurrences). */
        sbuf_reset(tmp);
        struct jw w;
        jw_init(&w, tmp);
        x->c.jdepth = 0;
        /* Collect occurrences of f in the container. */
        const uint8_t *q = t->buf, *end = t->buf + t->blen;
        uint32_t count = 0;
        while (q < end) {
            uint64_t tag = 0;
            if (!get_varint(&q, end, &tag))
                return corrupt(&x->c, "truncated tag");
            struct raw r = {0};
            if ((tag >> 3) == (uint64_t)f->number && (tag & 7) == WT_LEN)
                count++;
            if ((tag & 7) == WT_SGROUP || (tag & 7) == WT_EGROUP)
                TRY(skip_field(&x->c, &q, end, (uint32_t)(tag & 7), tag >> 3, 1));
            else if (!get_value(&q, end, (uint32_t)(tag & 7), &r))
                return corrupt(&x->c, "truncated field");
            else if ((tag >> 3) == (uint64_t)f->number && (tag & 7) != WT_LEN)
                count++;
        }
        struct occ *oc = arena_alloc(x->c.a, (count ? count : 1) * sizeof *oc);
        if (!oc)
            return ERR_NOMEM;
        uint32_t k = 0;
        q = t->buf;
        while (q < end) {
            uint64_t tag = 0;
            struct raw r = {0};
            get_varint(&q, end, &tag);
            uint32_t wt = (uint32_t)(tag & 7);
            if (wt == WT_SGROUP || wt == WT_EGROUP) {
                TRY(skip_field(&x->c, &q, end, wt, tag >> 3, 1));
                continue;
            }
            get_value(&q, end, wt, &r);
            if ((tag >> 3) != (uint64_t)f->number)
                continue;
            bool ok = wt == wire_of[f->type] || (wt == WT_LEN && packable(f->type));
            if (!ok)
                continue;
            oc[k] = (struct occ){.p = r.p, .u = r.u, .len = r.len, .wt = (uint8_t)wt, .next = -1};
            if (k)
                oc[k - 1].next = (int32_t)k;
            k++;
        }
        if (t->leaf == LEAF_MAP) {
            TRY(put_map(&x->c, &w, f, oc, k ? 0 : -1, k, 1));
        } else {
            TRY(jopen(&x->c, &w, false));
            for (uint32_t i = 0; i < k; i++) {
                struct raw r = {.u = oc[i].u, .p = oc[i].p, .len = oc[i].len};
                if (f->type == PT_MESSAGE) {
                    TRY(render_message(&x->c, &w, f->msg, r.p, r.len, 1));
                } else if (oc[i].wt == WT_LEN && packable(f->type)) {
                    const uint8_t *pp = r.p, *pe = r.p + r.len;
                    struct raw e;
                    while (pp < pe && packed_next(&pp, pe, wire_of[f->type], &e))
                        put_scalar(&w, f, &e);
                } else {
                    put_scalar(&w, f, &r);
                }
            }
            jclose(&x->c, &w, false);
        }
        return json_sval(x, tmp, o);
    }
    case LEAF_MSG: {
        if (!t->set || !t->have_buf) {
            o->type = SV_MISSING;
            return 0;
        }
        const struct proto_msg *lm = t->leaf_msg;
        if (lm->wkt == WKT_WRAPPER) {
            struct small sm;
            TRY(scan_small(&x->c, lm, t->buf, t->blen, &sm, 1));
            if (sm.has[1])
                scalar_sval(&lm->fields[0], &sm.v[1], o);
            else
                default_sval(&lm->fields[0], o);
            return 0;
        }
        if (lm->wkt == WKT_TIMESTAMP || lm->wkt == WKT_DURATION) {
            struct small sm;
            char buf[64];
            TRY(scan_small(&x->c, lm, t->buf, t->blen, &sm, 1));
            int rc = time_text(&x->c, lm->wkt, &sm, buf);
            if (rc) {
                o->type = SV_MISSING;
                return 0;
            }
            size_t n = strlen(buf);
            char *d = arena_strndup(x->c.a, buf, n);
            if (!d)
                return ERR_NOMEM;
            o->type = SV_STR;
            o->escaped = false;
            o->p = d;
            o->len = (uint32_t)n;
            return 0;
        }
        sbuf_reset(tmp);
        struct jw w;
        jw_init(&w, tmp);
        x->c.jdepth = 0;
        TRY(render_message(&x->c, &w, lm, t->buf, t->blen, 1));
        return json_sval(x, tmp, o);
    }
    }
    o->type = SV_MISSING;
    return 0;
}

/* ---- the sfmt ------------------------------------------------------------------------------------ */

struct sfmt_proto {
    struct sfmt base;
    const struct proto_schema *s;
    const struct proto_msg *m;
};

static int extract_chunk(const struct sfmt_proto *fp, struct slice rec, const struct spath *paths,
                         size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    struct tgt tg[TGT_CHUNK];
    struct act acts[TGT_CHUNK] = {{0, 0}};
    struct xctx x = {.c = {.s = fp->s, .a = scratch}, .tg = tg};
    uint32_t nact = 0;
    for (size_t i = 0; i < n; i++) {
        struct tgt *t = &tg[i];
        t->out = &out[i];
        t->set = t->have_buf = false;
        t->entered = 0;
        t->buf = NULL;
        t->blen = t->bcap = 0;
        t->out->type = SV_MISSING;
        plan(fp->m, &paths[i], t);
        if (!t->dead)
            acts[nact++] = (struct act){(uint8_t)i, 0};
    }
    int rc = walk(&x, fp->m, rec.ptr, rec.ptr + rec.len, 0, acts, nact);
    struct sbuf tmp;
    sbuf_init(&tmp, 0);
    for (size_t i = 0; i < n && !rc; i++)
        rc = finish(&x, &tg[i], &tmp);
    sbuf_free(&tmp);
    if (rc && err)
        *err = rc == ERR_NOMEM ? "scratch arena full" : x.c.why;
    return rc;
}

static int proto_extract(const struct sfmt *f, struct slice rec, const struct spath *paths,
                         size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    const struct sfmt_proto *fp = (const struct sfmt_proto *)f;
    if (err)
        *err = NULL;
    if (n == 0) {
        /* Still validate the whole record. */
        return extract_chunk(fp, rec, paths, 0, out, scratch, err);
    }
    for (size_t i = 0; i < n; i += TGT_CHUNK) {
        size_t k = n - i < TGT_CHUNK ? n - i : TGT_CHUNK;
        int rc = extract_chunk(fp, rec, paths + i, k, out + i, scratch, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int proto_to_json(const struct sfmt *f, struct slice rec, struct sbuf *out,
                         struct arena *scratch, const char **err)
{
    const struct sfmt_proto *fp = (const struct sfmt_proto *)f;
    struct dctx c = {.s = fp->s, .a = scratch};
    size_t start = out->len;
    struct jw w;
    jw_init(&w, out);
    int rc = render_message(&c, &w, fp->m, rec.ptr, rec.len, 0);
    if (!rc && !sbuf_ok(out)) {
        rc = ERR_NOMEM;
        c.why = "output buffer full";
    }
    if (rc) {
        out->len = start;
        if (err)
            *err = rc == ERR_NOMEM && !c.why ? "scratch arena full" : c.why;
        return rc;
    }
    if (err)
        *err = NULL;
    return 0;
}

static void proto_free(struct sfmt *f) { xfree(f); }

static const struct sfmt_ops proto_ops = {
    .extract = proto_extract, .to_json = proto_to_json, .free = proto_free, .name = "protobuf"};

int sfmt_proto_new(const struct proto_schema *s, const struct proto_msg *m, struct sfmt **out,
                   struct serr *e)
{
    if (!s || !m) {
        serr_set(e, "", "no message type");
        return ERR_INVALID;
    }
    struct sfmt_proto *fp = xcalloc(1, sizeof *fp);
    if (!fp)
        return ERR_NOMEM;
    fp->base.ops = &proto_ops;
    fp->s = s;
    fp->m = m;
    *out = &fp->base;
    return 0;
}
