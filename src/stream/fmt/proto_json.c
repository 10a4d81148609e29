/* proto_json.c -- records in the proto3 JSON encoding, read through a message type
 * (sfmt_proto_json_new). Not the fast path: each record is parsed with jansson.
 *
 *   record ──json_loadb──▶ json_t ──path walk (extract) / schema walk (to_json)──▶ svals / JSON
 *
 * Reading rules (the proto3 JSON mapping, parsing side):
 *  1. A field is found under its JSON name, its .proto name, or (top level only) one of its
 *     field_aliases; the first of those present wins. Unknown members are ignored.
 *  2. null or absence: message fields and fields with presence are SV_MISSING; implicit-presence
 *     scalars read as their default (as in the binary format, proto.h); a repeated field or map
 *     reads as [] / {}.
 *  3. Integers accept JSON numbers with an integral value and decimal strings ("123"); they must
 *     fit the field's type. uint64 above INT64_MAX reads as SV_DOUBLE. Floats accept numbers and
 *     "NaN", "Infinity", "-Infinity" and numeric strings. Enums accept names (SV_STR) and numbers
 *     (the name when declared). bytes accept standard or URL-safe base64, padded or not.
 *  4. A value of the wrong JSON type for its field is ERR_CORRUPT (with the reason); a record
 *     that is not JSON is ERR_CORRUPT, valid JSON that is not an object ERR_INVALID.
 *  5. extract validates the JSON text and the values it reads; to_json validates the whole
 *     record against the schema while writing its canonical form (JSON names, defaults omitted,
 *     64-bit integers as strings, unknown members dropped; well-known types passed through).
 *  6. Strings handed out are copies in the scratch arena (jansson's tree is freed per call).
 */
#include "stream/fmt/proto_int.h"

#include "base/alloc.h"
#include "base/b64.h"
#include "base/err.h"
#include "base/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_NEST_MAX 31

struct alias {
    const struct proto_field *f;
    char *name;
};

struct sfmt_pjson {
    struct sfmt base;
    const struct proto_schema *s;
    const struct proto_msg *m;
    struct alias *aliases;
    size_t naliases;
};

struct jctx {
    const struct sfmt_pjson *fp;
    struct arena *a;
    const char *why;
    int jdepth;
};

static int bad(struct jctx *c, const char *why)
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

/* The member of obj holding field f (top: aliases apply), or NULL. */
static json_t *member(const struct jctx *c, json_t *obj, const struct proto_field *f, bool top)
{
    json_t *v = json_object_getn(obj, f->json_name, f->json_name_len);
    if (!v)
        v = json_object_getn(obj, f->name, f->name_len);
    if (!v && top)
        for (size_t i = 0; i < c->fp->naliases && !v; i++)
            if (c->fp->aliases[i].f == f)
                v = json_object_get(obj, c->fp->aliases[i].name);
    return v;
}

static const struct proto_field *field_named(const struct jctx *c, const struct proto_msg *m,
                                             const char *name, size_t n, bool top)
{
    const struct proto_field *f = proto_field_by_name(m, name, n);
    if (!f && top)
        for (size_t i = 0; i < c->fp->naliases; i++)
            if (strlen(c->fp->aliases[i].name) == n && memcmp(c->fp->aliases[i].name, name, n) == 0)
                return c->fp->aliases[i].f;
    return f;
}

/* ---- scalars ------------------------------------------------------------------------------------ */

static bool parse_i(const char *s, size_t n, bool is_unsigned, int64_t *i, uint64_t *u)
{
    if (n == 0 || n > 20)
        return false;
    char buf[24];
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    if (is_unsigned) {
        if (buf[0] == '-')
            return false;
        *u = strtoull(buf, &end, 10);
    } else {
        *i = strtoll(buf, &end, 10);
    }
    if (*end || !(buf[0] == '-' || (buf[0] >= '0' && buf[0] <= '9')))
        return false;
    /* strtoll saturates: reject values it clamped. */
    if (!is_unsigned && (*i == INT64_MAX || *i == INT64_MIN)) {
        char chk[24];
        snprintf(chk, sizeof chk, "%lld", (long long)*i);
        return strcmp(chk, buf) == 0;
    }
    if (is_unsigned && *u == UINT64_MAX)
        return strcmp(buf, "18446744073709551615") == 0;
    return true;
}

static int b64_any(struct jctx *c, const char *s, size_t n, struct sval *o)
{
    /* URL-safe to standard, padding restored. */
    char *t = arena_alloc(c->a, n + 4);
    if (!t)
        return ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        t[k++] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    while (k % 4)
        t[k++] = '=';
    struct sbuf b;
    sbuf_init(&b, 0);
    int rc = b64_decode(&b, (const uint8_t *)t, k);
    if (rc || !sbuf_ok(&b)) {
        sbuf_free(&b);
        return rc ? bad(c, "bytes value is not base64") : ERR_NOMEM;
    }
    char *d = arena_alloc(c->a, b.len ? b.len : 1);
    if (!d) {
        sbuf_free(&b);
        return ERR_NOMEM;
    }
    if (b.len)
        memcpy(d, b.data, b.len);
    o->type = SV_BYTES;
    o->p = d;
    o->len = (uint32_t)b.len;
    sbuf_free(&b);
    return 0;
}

/* JSON value j (not null) for scalar field f -> o. */
static int conv_scalar(struct jctx *c, const struct proto_field *f, json_t *j, struct sval *o)
{
    o->escaped = false;
    o->len = 0;
    switch (f->type) {
    case PT_INT32: case PT_SINT32: case PT_SFIXED32: case PT_INT64: case PT_SINT64:
    case PT_SFIXED64: case PT_UINT32: case PT_FIXED32: case PT_UINT64: case PT_FIXED64: {
        bool uns = f->type == PT_UINT32 || f->type == PT_FIXED32 || f->type == PT_UINT64 ||
                   f->type == PT_FIXED64;
        int64_t i = 0;
        uint64_t u = 0;
        if (json_is_integer(j)) {
            i = json_integer_value(j);
            if (uns && i < 0)
                return bad(c, "negative value for an unsigned field");
            u = (uint64_t)i;
        } else if (json_is_real(j)) {
            double d = json_real_value(j);
            if (d != floor(d) || fabs(d) > 9007199254740992.0 || (uns && d < 0))
                return bad(c, "non-integral number for an integer field");
            i = (int64_t)d;
            u = (uint64_t)(uns ? d : 0);
        } else if (json_is_string(j)) {
            if (!parse_i(json_string_value(j), json_string_length(j), uns, &i, &u))
                return bad(c, "string is not an integer");
        } else {
            return bad(c, "wrong JSON type for an integer field");
        }
        bool is32 = f->type == PT_INT32 || f->type == PT_SINT32 || f->type == PT_SFIXED32 ||
                    f->type == PT_UINT32 || f->type == PT_FIXED32;
        if (is32 && (uns ? u > UINT32_MAX : (i < INT32_MIN || i > INT32_MAX)))
            return bad(c, "integer out of range for a 32-bit field");
        if (uns && u > INT64_MAX) {
            o->type = SV_DOUBLE;
            o->d = (double)u;
        } else {
            o->type = SV_INT;
            o->i = uns ? (int64_t)u : i;
        }
        return 0;
    }
    case PT_FLOAT:
    case PT_DOUBLE:
        o->type = SV_DOUBLE;
        if (json_is_number(j)) {
            o->d = json_number_value(j);
        } else if (json_is_string(j)) {
            const char *s = json_string_value(j);
            if (strcmp(s, "NaN") == 0)
                o->d = NAN;
            else if (strcmp(s, "Infinity") == 0)
                o->d = INFINITY;
            else if (strcmp(s, "-Infinity") == 0)
                o->d = -INFINITY;
            else {
                char *end;
                o->d = strtod(s, &end);
                if (!*s || *end || json_string_length(j) != strlen(s))
                    return bad(c, "string is not a number");
            }
        } else {
            return bad(c, "wrong JSON type for a float field");
        }
        if (f->type == PT_FLOAT)
            o->d = (float)o->d;
        return 0;
    case PT_BOOL:
        if (!json_is_boolean(j))
            return bad(c, "wrong JSON type for a bool field");
        o->type = SV_BOOL;
        o->b = json_is_true(j);
        return 0;
    case PT_STRING: {
        if (!json_is_string(j))
            return bad(c, "wrong JSON type for a string field");
        size_t n = json_string_length(j);
        char *d = arena_strndup(c->a, json_string_value(j), n);
        if (!d)
            return ERR_NOMEM;
        o->type = SV_STR;
        o->p = d;
        o->len = (uint32_t)n;
        return 0;
    }
    case PT_BYTES:
        if (!json_is_string(j))
            return bad(c, "wrong JSON type for a bytes field");
        return b64_any(c, json_string_value(j), json_string_length(j), o);
    case PT_ENUM: {
        if (json_is_string(j)) {
            int32_t num;
            size_t n = json_string_length(j);
            if (!proto_enum_number(f->en, json_string_value(j), n, &num))
                return bad(c, "unknown enum value name");
            const char *name = proto_enum_name(f->en, num);
            o->type = SV_STR;
            o->p = name;
            o->len = (uint32_t)strlen(name);
            return 0;
        }
        if (json_is_integer(j)) {
            json_int_t v = json_integer_value(j);
            if (v < INT32_MIN || v > INT32_MAX)
                return bad(c, "enum number out of range");
            const char *name = proto_enum_name(f->en, (int32_t)v);
            if (name) {
                o->type = SV_STR;
                o->p = name;
                o->len = (uint32_t)strlen(name);
            } else {
                o->type = SV_INT;
                o->i = v;
            }
            return 0;
        }
        return bad(c, "wrong JSON type for an enum field");
    }
    default:
        return bad(c, "unsupported field type");
    }
}

static void default_of(const struct proto_field *f, struct sval *o)
{
    o->escaped = false;
    o->len = 0;
    switch (f->type) {
    case PT_FLOAT: case PT_DOUBLE: o->type = SV_DOUBLE; o->d = 0; break;
    case PT_BOOL: o->type = SV_BOOL; o->b = false; break;
    case PT_STRING: o->type = SV_STR; o->p = ""; break;
    case PT_BYTES: o->type = SV_BYTES; o->p = ""; break;
    case PT_ENUM:
        o->type = SV_STR;
        o->p = f->en->values[0].name;
        o->len = (uint32_t)strlen(o->p);
        break;
    default: o->type = SV_INT; o->i = 0; break;
    }
}

static int dump_sval(struct jctx *c, json_t *j, const char *empty, struct sval *o)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    const char *src = s ? s : empty;
    size_t n = strlen(src);
    char *d = arena_strndup(c->a, src, n);
    free(s);
    if (!d)
        return ERR_NOMEM;
    o->type = SV_JSON;
    o->escaped = false;
    o->p = d;
    o->len = (uint32_t)n;
    return 0;
}

/* ---- extract -------------------------------------------------------------------------------------- */

static int value_at(struct jctx *c, const struct proto_msg *m, json_t *obj, const struct spath *p,
                    uint32_t si, struct sval *o, int depth)
{
    o->type = SV_MISSING;
    if (depth > PROTO_DECODE_DEPTH_MAX)
        return 0;
    const struct spath_seg *seg = &p->seg[si];
    if (!seg->name)
        return 0;
    bool top = depth == 0;
    const struct proto_field *f = field_named(c, m, seg->name, seg->len, top);
    if (!f)
        return 0;
    json_t *j = member(c, obj, f, top);
    if (j && json_is_null(j) && !(f->type == PT_MESSAGE && f->msg->wkt == WKT_VALUE))
        j = NULL;
    bool last = si + 1 == p->nseg;
    if (f->is_map) {
        if (j && !json_is_object(j))
            return bad(c, "map field is not an object");
        if (last)
            return dump_sval(c, j, "{}", o);
        const struct spath_seg *ks = &p->seg[si + 1];
        if (!ks->name || !j)
            return 0;
        json_t *v = json_object_getn(j, ks->name, ks->len);
        const struct proto_field *vf = &f->msg->fields[1];
        if (!v || json_is_null(v)) {
            if (!v)
                return 0;
            if (vf->type != PT_MESSAGE)
                default_of(vf, o);
            return 0;
        }
        if (vf->type != PT_MESSAGE) {
            if (si + 2 != p->nseg)
                return 0;
            return conv_scalar(c, vf, v, o);
        }
        if (si + 2 == p->nseg)
            return dump_sval(c, v, "{}", o);
        if (!json_is_object(v))
            return bad(c, "message value is not an object");
        return value_at(c, vf->msg, v, p, si + 2, o, depth + 1);
    }
    if (f->label == PL_REPEATED) {
        if (j && !json_is_array(j))
            return bad(c, "repeated field is not an array");
        if (last)
            return dump_sval(c, j, "[]", o);
        const struct spath_seg *is = &p->seg[si + 1];
        if (is->name || !j || (size_t)is->index >= json_array_size(j))
            return 0;
        json_t *v = json_array_get(j, (size_t)is->index);
        if (f->type != PT_MESSAGE) {
            if (si + 2 != p->nseg || json_is_null(v))
                return 0;
            return conv_scalar(c, f, v, o);
        }
        if (si + 2 == p->nseg)
            return dump_sval(c, v, "{}", o);
        if (!json_is_object(v))
            return bad(c, "message element is not an object");
        return value_at(c, f->msg, v, p, si + 2, o, depth + 1);
    }
    if (f->type == PT_MESSAGE) {
        if (!j)
            return 0;
        const struct proto_msg *fm = f->msg;
        if (last) {
            if (fm->wkt == WKT_WRAPPER)
                return conv_scalar(c, &fm->fields[0], j, o);
            if ((fm->wkt == WKT_TIMESTAMP || fm->wkt == WKT_DURATION) && json_is_string(j))
                return conv_scalar(c, &(struct proto_field){.type = PT_STRING}, j, o);
            return dump_sval(c, j, "{}", o);
        }
        if (!json_is_object(j))
            return fm->wkt ? 0 : bad(c, "message field is not an object");
        return value_at(c, fm, j, p, si + 1, o, depth + 1);
    }
    if (!last)
        return 0;
    if (!j) {
        if (!f->presence)
            default_of(f, o);
        return 0;
    }
    return conv_scalar(c, f, j, o);
}

static int parse_record(struct jctx *c, struct slice rec, json_t **out)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)rec.ptr, rec.len, JSON_ALLOW_NUL, &je);
    if (!j)
        return bad(c, "not JSON");
    if (!json_is_object(j)) {
        json_decref(j);
        c->why = "record is not a JSON object";
        return ERR_INVALID;
    }
    *out = j;
    return 0;
}

static int pj_extract(const struct sfmt *f, struct slice rec, const struct spath *paths, size_t n,
                      struct sval *out, struct arena *scratch, const char **err)
{
    struct jctx c = {.fp = (const struct sfmt_pjson *)f, .a = scratch};
    json_t *j = NULL;
    int rc = parse_record(&c, rec, &j);
    for (size_t i = 0; i < n && !rc; i++)
        rc = paths[i].nseg ? value_at(&c, c.fp->m, j, &paths[i], 0, &out[i], 0)
                           : (out[i].type = SV_MISSING, 0);
    json_decref(j);
    if (err)
        *err = rc ? (rc == ERR_NOMEM ? "scratch arena full" : c.why) : NULL;
    return rc;
}

/* ---- to_json: canonical proto3 JSON --------------------------------------------------------------- */

static void put_sval(struct jw *w, const struct proto_field *f, const struct sval *v)
{
    switch (v->type) {
    case SV_INT:
        if (f->type == PT_INT64 || f->type == PT_SINT64 || f->type == PT_SFIXED64 ||
            f->type == PT_UINT64 || f->type == PT_FIXED64) {
            char b[24];
            snprintf(b, sizeof b, "%lld", (long long)v->i);
            jw_str(w, b);
        } else {
            jw_i64(w, v->i);
        }
        break;
    case SV_DOUBLE:
        if (f->type == PT_UINT64 || f->type == PT_FIXED64) {
            char b[24];
            snprintf(b, sizeof b, "%.0f", v->d);
            jw_str(w, b);
        } else {
            proto_put_double(w, v->d, f->type == PT_FLOAT);
        }
        break;
    case SV_BOOL: jw_bool(w, v->b); break;
    case SV_STR:
        if (f->type == PT_ENUM && f->en->null_value)
            jw_null(w);
        else
            jw_strn(w, (const uint8_t *)v->p, v->len);
        break;
    case SV_BYTES: jw_b64(w, (const uint8_t *)v->p, v->len); break;
    default: jw_null(w); break;
    }
}

static bool sval_default(const struct sval *v)
{
    switch (v->type) {
    case SV_INT: return v->i == 0;
    case SV_DOUBLE: return v->d == 0 && !signbit(v->d);
    case SV_BOOL: return !v->b;
    case SV_STR: case SV_BYTES: return v->len == 0;
    default: return false;
    }
}

static int write_message(struct jctx *c, struct jw *w, const struct proto_msg *m, json_t *obj,
                         int depth, bool top);

static int jopen(struct jctx *c, struct jw *w, bool obj)
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

static void jclose(struct jctx *c, struct jw *w, bool obj)
{
    c->jdepth--;
    if (obj)
        jw_obj_close(w);
    else
        jw_arr_close(w);
}

static int write_value(struct jctx *c, struct jw *w, const struct proto_field *f, json_t *j, int depth)
{
    if (f->type == PT_MESSAGE) {
        if (f->msg->wkt == WKT_WRAPPER && !json_is_null(j)) {
            struct sval v;
            TRY(conv_scalar(c, &f->msg->fields[0], j, &v));
            put_sval(w, &f->msg->fields[0], &v);
            return 0;
        }
        if (f->msg->wkt) {
            char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!s)
                return ERR_NOMEM;
            jw_raw(w, s);
            free(s);
            return 0;
        }
        if (!json_is_object(j))
            return bad(c, "message value is not an object");
        return write_message(c, w, f->msg, j, depth + 1, false);
    }
    struct sval v;
    TRY(conv_scalar(c, f, j, &v));
    if (v.type == SV_DOUBLE && json_is_string(j) && (f->type == PT_UINT64 || f->type == PT_FIXED64))
        jw_strn(w, (const uint8_t *)json_string_value(j), json_string_length(j)); /* exact */
    else
        put_sval(w, f, &v);
    return 0;
}

static int write_message(struct jctx *c, struct jw *w, const struct proto_msg *m, json_t *obj,
                         int depth, bool top)
{
    if (depth > PROTO_DECODE_DEPTH_MAX)
        return bad(c, "messages nested too deep");
    TRY(jopen(c, w, true));
    for (uint32_t n = 0; n < m->nfields; n++) {
        const struct proto_field *f = &m->fields[m->by_number[n]];
        json_t *j = member(c, obj, f, top);
        if (!j || (json_is_null(j) && !(f->type == PT_MESSAGE && f->msg->wkt == WKT_VALUE)))
            continue;
        if (f->is_map) {
            if (!json_is_object(j))
                return bad(c, "map field is not an object");
            if (json_object_size(j) == 0)
                continue;
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(jopen(c, w, true));
            const char *k;
            size_t klen;
            json_t *v;
            const struct proto_field *kf = &f->msg->fields[0], *vf = &f->msg->fields[1];
            json_object_keylen_foreach(j, k, klen, v)
            {
                if (kf->type != PT_STRING) {
                    struct sval kv;
                    json_t *ks = json_stringn(k, klen);
                    int rc = ks ? conv_scalar(c, kf, ks, &kv) : ERR_NOMEM;
                    if (!rc && kf->type == PT_BOOL)
                        rc = bad(c, "bool map keys are not supported in JSON records");
                    json_decref(ks);
                    TRY(rc);
                }
                jw_keyn(w, (const uint8_t *)k, klen);
                if (json_is_null(v)) {
                    struct sval d;
                    if (vf->type == PT_MESSAGE) {
                        TRY(jopen(c, w, true));
                        jclose(c, w, true);
                    } else {
                        default_of(vf, &d);
                        put_sval(w, vf, &d);
                    }
                    continue;
                }
                TRY(write_value(c, w, vf, v, depth));
            }
            jclose(c, w, true);
            continue;
        }
        if (f->label == PL_REPEATED) {
            if (!json_is_array(j))
                return bad(c, "repeated field is not an array");
            if (json_array_size(j) == 0)
                continue;
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(jopen(c, w, false));
            size_t i;
            json_t *v;
            json_array_foreach(j, i, v)
            {
                if (json_is_null(v) && !(f->type == PT_MESSAGE && f->msg->wkt == WKT_VALUE))
                    return bad(c, "null in a repeated field");
                TRY(write_value(c, w, f, v, depth));
            }
            jclose(c, w, false);
            continue;
        }
        if (f->type != PT_MESSAGE && !f->presence) {
            struct sval v;
            TRY(conv_scalar(c, f, j, &v));
            if (sval_default(&v) || (f->type == PT_ENUM && v.type == SV_STR &&
                                     strcmp(v.p, f->en->values[0].name) == 0))
                continue;
            jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
            TRY(write_value(c, w, f, j, depth));
            continue;
        }
        jw_keyn(w, (const uint8_t *)f->json_name, f->json_name_len);
        TRY(write_value(c, w, f, j, depth));
    }
    jclose(c, w, true);
    return 0;
}

static int pj_to_json(const struct sfmt *f, struct slice rec, struct sbuf *out,
                      struct arena *scratch, const char **err)
{
    struct jctx c = {.fp = (const struct sfmt_pjson *)f, .a = scratch};
    size_t start = out->len;
    json_t *j = NULL;
    int rc = parse_record(&c, rec, &j);
    if (!rc) {
        struct jw w;
        jw_init(&w, out);
        rc = write_message(&c, &w, c.fp->m, j, 0, true);
        if (!rc && !sbuf_ok(out)) {
            rc = ERR_NOMEM;
            c.why = "output buffer full";
        }
    }
    json_decref(j);
    if (rc)
        out->len = start;
    if (err)
        *err = rc ? (rc == ERR_NOMEM && !c.why ? "scratch arena full" : c.why) : NULL;
    return rc;
}

static void pj_free(struct sfmt *f)
{
    struct sfmt_pjson *fp = (struct sfmt_pjson *)f;
    for (size_t i = 0; i < fp->naliases; i++)
        xfree(fp->aliases[i].name);
    xfree(fp->aliases);
    xfree(fp);
}

static const struct sfmt_ops pjson_ops = {
    .extract = pj_extract, .to_json = pj_to_json, .free = pj_free, .name = "protobuf-json"};

int sfmt_proto_json_new(const struct proto_schema *s, const struct proto_msg *m,
                        json_t *field_aliases, struct sfmt **out, struct serr *e)
{
    if (!s || !m) {
        serr_set(e, "", "no message type");
        return ERR_INVALID;
    }
    if (field_aliases && !json_is_object(field_aliases)) {
        serr_set(e, "field_aliases", "must be an object {\"field\": [\"alias\", ...]}");
        return ERR_INVALID;
    }
    struct sfmt_pjson *fp = xcalloc(1, sizeof *fp);
    if (!fp)
        return ERR_NOMEM;
    fp->base.ops = &pjson_ops;
    fp->s = s;
    fp->m = m;
    size_t total = 0;
    const char *k;
    json_t *v;
    if (field_aliases) {
        json_object_foreach(field_aliases, k, v)
        {
            if (!json_is_array(v)) {
                serr_set(e, "field_aliases", "aliases of \"%s\" must be an array of strings", k);
                goto err_free;
            }
            total += json_array_size(v);
        }
        if (total > 1024) {
            serr_set(e, "field_aliases", "more than 1024 aliases");
            goto err_free;
        }
        fp->aliases = xcalloc(total ? total : 1, sizeof *fp->aliases);
        if (!fp->aliases) {
            pj_free(&fp->base);
            return ERR_NOMEM;
        }
        json_object_foreach(field_aliases, k, v)
        {
            const struct proto_field *f = proto_field_by_name(m, k, strlen(k));
            if (!f) {
                serr_set(e, "field_aliases", "no field \"%s\" in %s", k, m->full_name);
                goto err_free;
            }
            size_t i;
            json_t *a;
            json_array_foreach(v, i, a)
            {
                if (!json_is_string(a)) {
                    serr_set(e, "field_aliases", "aliases of \"%s\" must be strings", k);
                    goto err_free;
                }
                struct alias *al = &fp->aliases[fp->naliases];
                al->f = f;
                al->name = xstrndup(json_string_value(a), json_string_length(a));
                if (!al->name) {
                    pj_free(&fp->base);
                    return ERR_NOMEM;
                }
                fp->naliases++;
            }
        }
    }
    *out = &fp->base;
    return 0;
err_free:
    pj_free(&fp->base);
    return ERR_INVALID;
}
