/* proto_render.c -- the proto3 JSON mapping of binary Protobuf records: the to_json half of the
 * descriptor-driven decoder (sfmt_proto_new in proto_decode.c), and the JSON of whole fields that
 * extract returns (lists, maps, messages). Not to be confused with proto_json.c, which reads
 * records that are already JSON.
 *
 *   proto_render_message ──▶ well-known type? ──▶ render_wkt (Timestamp, Duration, Struct, Any...)
 *        │                                    no
 *        ▼
 *   render_fields: pass 1 validates this level's framing and counts known fields
 *                  pass 2 collects the occurrences of each field (merged across repeats)
 *                  ──▶ members in field-number order: scalars, packed runs, lists, maps
 *                      (put_map: entries sorted by key text, last wins), embedded messages
 *
 * Invariants:
 *  1. Output is the canonical proto3 JSON: JSON names, implicit-presence defaults omitted, 64-bit
 *     integers as strings, bytes as base64, enums by name (number when undeclared), unknown fields
 *     dropped; a map entry that loses to a later one with the same key is still validated.
 *  2. Nothing is written for bytes that were not validated: every embedded message is checked by
 *     rendering it or by proto_validate_msg (the extract walk with no targets), so to_json accepts
 *     exactly the records extract accepts.
 *  3. Depth is bounded twice: PROTO_DECODE_DEPTH_MAX for messages (ERR_CORRUPT) and JSON_NEST_MAX
 *     for the JSON written (ERR_INVALID; jopen/jclose keep c->jdepth balanced on success).
 *  4. Memory comes from the scratch arena only (occurrence tables, map key texts, merged
 *     messages): O(record size + fields of the messages present); the cap makes it ERR_NOMEM.
 */
#include "stream/fmt/proto_int.h"

#include "base/err.h"
#include "base/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_NEST_MAX 31

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_)                                                                                   \
            return rc_;                                                                            \
    } while (0)

static int render_fields(struct dctx *c, struct jw *w, const struct proto_msg *m,
                         const uint8_t *p, size_t len, int depth);

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

/* The key of a map entry as text (JSON object key / path segment). */
void proto_map_key_text(const struct proto_field *kf, const struct raw *r, char *buf,
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
                         const struct proto_entry *e, int depth)
{
    if (vf->type == PT_MESSAGE)
        return proto_render_message(c, w, vf->msg, e->val.p, e->has_val ? e->val.len : 0,
                                    depth + 1);
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
    struct proto_entry e;
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
        TRY(proto_parse_entry(c, em, occ[i].p, occ[i].p + occ[i].len, &k->e, depth + 1));
        if (!k->e.has_key && em->fields[0].type == PT_STRING)
            k->e.key.p = (const uint8_t *)"";
        proto_map_key_text(&em->fields[0], &k->e.key, kbuf + 24 * n, &k->k, &k->klen);
        k->pos = n++;
    }
    qsort(ke, n, sizeof *ke, cmp_kentry);
    TRY(jopen(c, w, true));
    for (uint32_t i = 0; i < n; i++) {
        if (i + 1 < n && ke[i + 1].klen == ke[i].klen &&
            memcmp(ke[i + 1].k, ke[i].k, ke[i].klen) == 0) {
            /* A later entry has the same key: last wins, but this one must still be valid. */
            if (em->fields[1].type == PT_MESSAGE && ke[i].e.has_val)
                TRY(proto_validate_msg(c, em->fields[1].msg, ke[i].e.val.p, ke[i].e.val.len,
                                       depth + 2));
            continue;
        }
        jw_keyn(w, (const uint8_t *)ke[i].k, ke[i].klen);
        TRY(put_map_value(c, w, &em->fields[1], &ke[i].e, depth + 1));
    }
    jclose(c, w, true);
    return 0;
}

/* ---- well-known types -------------------------------------------------------------------------- */

int proto_scan_small(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                     struct proto_small *o, int depth)
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
            TRY(proto_skip_field(c, &p, end, wt, num, depth + 1));
            continue;
        }
        struct raw r = {0};
        if (!get_value(&p, end, wt, &r))
            return corrupt(c, "truncated field");
        if (!check_str(f, &r))
            return corrupt(c, "string is not UTF-8");
        if (f->type == PT_MESSAGE)
            TRY(proto_validate_msg(c, f->msg, r.p, r.len, depth + 1));
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
int proto_time_text(struct dctx *c, uint8_t wkt, const struct proto_small *sm, char *buf)
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
    struct proto_small sm;
    switch (m->wkt) {
    case WKT_TIMESTAMP:
    case WKT_DURATION: {
        char buf[64];
        TRY(proto_scan_small(c, m, p, len, &sm, depth));
        TRY(proto_time_text(c, m->wkt, &sm, buf));
        jw_str(w, buf);
        return 0;
    }
    case WKT_WRAPPER: {
        TRY(proto_scan_small(c, m, p, len, &sm, depth));
        const struct proto_field *f = &m->fields[0];
        struct raw r = sm.v[1];
        if (!sm.has[1])
            r.p = (const uint8_t *)"";
        put_scalar(w, f, &r);
        return 0;
    }
    case WKT_VALUE: {
        TRY(proto_scan_small(c, m, p, len, &sm, depth));
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
                    TRY(proto_validate_msg(c, f->msg, r.p, r.len, depth + 1));
                    TRY(proto_cat(c, &buf, &bl, &bc, r.p, r.len));
                } else {
                    TRY(proto_skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, depth + 1));
                }
            }
            return proto_render_message(c, w, f->msg, buf ? buf : p, buf ? bl : 0, depth + 1);
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
                TRY(proto_skip_field(c, &q, end, wt, tag >> 3, depth + 1));
                continue;
            }
            struct raw r = {0};
            if (!get_value(&q, end, WT_LEN, &r))
                return corrupt(c, "truncated field");
            if (!mask) {
                TRY(proto_render_message(c, w, f->msg, r.p, r.len, depth + 1));
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
            TRY(proto_skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, depth + 1));
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
                TRY(proto_skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, depth + 1));
            }
        }
        return put_map(c, w, f, oc, count ? 0 : -1, count, depth);
    }
    case WKT_ANY: {
        TRY(proto_scan_small(c, m, p, len, &sm, depth));
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
                TRY(proto_render_message(c, w, im, val.p, val.len, depth + 1));
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

int proto_render_message(struct dctx *c, struct jw *w, const struct proto_msg *m,
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
        TRY(proto_skip_field(c, &q, end, wt, num, depth + 1));
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
            TRY(proto_skip_field(c, &q, end, wt, tag >> 3, depth + 1));
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
                    TRY(proto_validate_msg(c, f->msg, r.p, r.len, depth + 1));
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
                    TRY(proto_render_message(c, w, f->msg, o->p, o->len, depth + 1));
                } else if (o->wt == WT_LEN && packable(f->type)) {
                    uint32_t ewt = wire_of[f->type];
                    TRY(proto_check_packed(c, ewt, &r));
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
                    TRY(proto_validate_msg(c, f->msg, occ[i].p, occ[i].len, depth + 1));
                TRY(proto_cat(c, &buf, &bl, &bc, occ[i].p, occ[i].len));
            }
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(proto_render_message(c, w, f->msg, buf, bl, depth + 1));
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

/* Field f of a container message (bytes buf..buf+blen, every occurrence of f) as JSON: a map's
 * object or a list (extract's LEAF_MAP / LEAF_LIST results). */
int proto_render_field(struct dctx *c, struct jw *w, const struct proto_field *f,
                       const uint8_t *buf, size_t blen, bool is_map)
{
    /* Collect occurrences of f in the container. */
    const uint8_t *q = buf, *end = buf + blen;
    uint32_t count = 0;
    while (q < end) {
        uint64_t tag = 0;
        if (!get_varint(&q, end, &tag))
            return corrupt(c, "truncated tag");
        struct raw r = {0};
        if ((tag >> 3) == (uint64_t)f->number && (tag & 7) == WT_LEN)
            count++;
        if ((tag & 7) == WT_SGROUP || (tag & 7) == WT_EGROUP)
            TRY(proto_skip_field(c, &q, end, (uint32_t)(tag & 7), tag >> 3, 1));
        else if (!get_value(&q, end, (uint32_t)(tag & 7), &r))
            return corrupt(c, "truncated field");
        else if ((tag >> 3) == (uint64_t)f->number && (tag & 7) != WT_LEN)
            count++;
    }
    struct occ *oc = arena_alloc(c->a, (count ? count : 1) * sizeof *oc);
    if (!oc)
        return ERR_NOMEM;
    uint32_t k = 0;
    q = buf;
    while (q < end) {
        uint64_t tag = 0;
        struct raw r = {0};
        get_varint(&q, end, &tag);
        uint32_t wt = (uint32_t)(tag & 7);
        if (wt == WT_SGROUP || wt == WT_EGROUP) {
            TRY(proto_skip_field(c, &q, end, wt, tag >> 3, 1));
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
    if (is_map) {
        TRY(put_map(c, w, f, oc, k ? 0 : -1, k, 1));
    } else {
        TRY(jopen(c, w, false));
        for (uint32_t i = 0; i < k; i++) {
            struct raw r = {.u = oc[i].u, .p = oc[i].p, .len = oc[i].len};
            if (f->type == PT_MESSAGE) {
                TRY(proto_render_message(c, w, f->msg, r.p, r.len, 1));
            } else if (oc[i].wt == WT_LEN && packable(f->type)) {
                const uint8_t *pp = r.p, *pe = r.p + r.len;
                struct raw e;
                while (pp < pe && packed_next(&pp, pe, wire_of[f->type], &e))
                    put_scalar(w, f, &e);
            } else {
                put_scalar(w, f, &r);
            }
        }
        jclose(c, w, false);
    }
    return 0;
}

