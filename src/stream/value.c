/* value.c -- field paths and typed values of the stream layer (see value.h for the semantics).
 *
 * Escaped strings (SV_STR with `escaped`) are the raw contents of a JSON string literal between
 * its quotes, already validated by the scanner. Comparison and hashing read them through a byte
 * iterator that yields the unescaped UTF-8 bytes one at a time, so no allocation is ever needed
 * to compare or hash a value; sval_unescape materialises them only when a caller wants to.
 *
 * Invariants:
 *  1. sval_eq(a, b) implies sval_hash(a, s) == sval_hash(b, s): numbers hash by value (an integral
 *     double within int64 range hashes as that int), strings hash their unescaped bytes exactly as
 *     hash_bytes() would hash the contiguous unescaped string.
 *  2. sval_cmp never allocates and never reads outside [p, p + len).
 *  3. spath segment names point into the parsed text; nothing is copied.
 */
#include "stream/value.h"

#include "base/buf.h"
#include "base/err.h"
#include "base/hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Paths                                                                                       */
/* ------------------------------------------------------------------------------------------ */

int spath_parse(const char *text, size_t len, struct spath *p)
{
    memset(p, 0, sizeof *p);
    if (!text || len == 0)
        return ERR_INVALID;
    size_t i = 0;
    bool need_name = true; /* at the start or after '.' */
    while (i < len) {
        if (text[i] == '[') {
            /* an index: allowed at the start or after any segment, not right after '.' */
            if (need_name && p->nseg > 0)
                return ERR_INVALID;
            i++;
            size_t start = i;
            int64_t v = 0;
            while (i < len && text[i] >= '0' && text[i] <= '9') {
                v = v * 10 + (text[i] - '0');
                if (v > INT32_MAX)
                    return ERR_INVALID;
                i++;
            }
            if (i == start || i >= len || text[i] != ']')
                return ERR_INVALID;
            if (i - start > 1 && text[start] == '0')
                return ERR_INVALID; /* no leading zeros */
            i++;
            if (p->nseg >= SPATH_SEGS_MAX)
                return ERR_INVALID;
            p->seg[p->nseg++] = (struct spath_seg){NULL, 0, (int32_t)v};
            need_name = false;
            if (i < len) {
                if (text[i] == '.') {
                    i++;
                    need_name = true;
                    if (i == len)
                        return ERR_INVALID;
                } else if (text[i] != '[') {
                    return ERR_INVALID;
                }
            }
            continue;
        }
        if (!need_name)
            return ERR_INVALID;
        const char *name;
        size_t n;
        if (text[i] == '`') {
            size_t start = ++i;
            while (i < len && text[i] != '`')
                i++;
            if (i >= len)
                return ERR_INVALID; /* unterminated quote */
            name = text + start;
            n = i - start;
            i++;
        } else {
            size_t start = i;
            while (i < len && text[i] != '.' && text[i] != '[' && text[i] != '`')
                i++;
            if (i < len && text[i] == '`')
                return ERR_INVALID;
            name = text + start;
            n = i - start;
        }
        if (n == 0 || n > SPATH_NAME_MAX || p->nseg >= SPATH_SEGS_MAX)
            return ERR_INVALID;
        p->seg[p->nseg++] = (struct spath_seg){name, (uint32_t)n, -1};
        need_name = false;
        if (i < len) {
            if (text[i] == '.') {
                i++;
                need_name = true;
                if (i == len)
                    return ERR_INVALID;
            } else if (text[i] != '[') {
                return ERR_INVALID;
            }
        }
    }
    return p->nseg > 0 ? 0 : ERR_INVALID;
}

/* ------------------------------------------------------------------------------------------ */
/* Unescaping iterator                                                                         */
/* ------------------------------------------------------------------------------------------ */

struct uit {
    const uint8_t *p, *end;
    uint8_t buf[4];
    uint8_t bi, bn;
};

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool hex4(const uint8_t *p, const uint8_t *end, uint32_t *out)
{
    if (end - p < 4)
        return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p[k]);
        if (h < 0)
            return false;
        v = v << 4 | (uint32_t)h;
    }
    *out = v;
    return true;
}

static uint8_t utf8_put(uint8_t *b, uint32_t cp)
{
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | cp >> 6);
        b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | cp >> 12);
        b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (uint8_t)(0xF0 | cp >> 18);
    b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode one escape sequence at p (p[0] == '\\') into b; returns bytes consumed from p (0 when
 * malformed: the caller then takes the backslash literally, which only happens for strings that
 * did not come from the validating scanner). */
static size_t unescape_one(const uint8_t *p, const uint8_t *end, uint8_t *b, uint8_t *bn)
{
    if (end - p < 2)
        return 0;
    switch (p[1]) {
    case '"': b[0] = '"'; break;
    case '\\': b[0] = '\\'; break;
    case '/': b[0] = '/'; break;
    case 'b': b[0] = '\b'; break;
    case 'f': b[0] = '\f'; break;
    case 'n': b[0] = '\n'; break;
    case 'r': b[0] = '\r'; break;
    case 't': b[0] = '\t'; break;
    case 'u': {
        uint32_t cp;
        if (!hex4(p + 2, end, &cp))
            return 0;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (end - p >= 12 && p[6] == '\\' && p[7] == 'u' && hex4(p + 8, end, &lo) &&
                lo >= 0xDC00 && lo <= 0xDFFF) {
                *bn = utf8_put(b, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
                return 12;
            }
            cp = 0xFFFD; /* a lone surrogate (the scanner rejects these) */
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;
        }
        *bn = utf8_put(b, cp);
        return 6;
    }
    default:
        return 0;
    }
    *bn = 1;
    return 2;
}

static inline int uit_next(struct uit *it)
{
    if (it->bi < it->bn)
        return it->buf[it->bi++];
    if (it->p >= it->end)
        return -1;
    uint8_t c = *it->p;
    if (c != '\\') {
        it->p++;
        return c;
    }
    uint8_t bn = 0;
    size_t used = unescape_one(it->p, it->end, it->buf, &bn);
    if (used == 0) {
        it->p++;
        return '\\';
    }
    it->p += used;
    it->bi = 1;
    it->bn = bn;
    return it->buf[0];
}

static struct uit uit_of(const struct sval *v)
{
    struct uit it = {(const uint8_t *)v->p, (const uint8_t *)v->p + v->len, {0}, 0, 0};
    if (!v->escaped)
        it.p = it.end = NULL; /* not used for plain strings */
    return it;
}

/* ------------------------------------------------------------------------------------------ */
/* Comparison                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Exact comparison of an int64 with a finite double. */
static int cmp_int_double(int64_t i, double d)
{
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    double t = trunc(d); /* |t| < 2^63, exactly representable as int64 */
    int64_t ti = (int64_t)t;
    if (i != ti)
        return i < ti ? -1 : 1;
    double frac = d - t;
    return frac > 0 ? -1 : frac < 0 ? 1 : 0;
}

static int cmp_str(const struct sval *a, const struct sval *b)
{
    if (!a->escaped && !b->escaped) {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = n ? memcmp(a->p, b->p, n) : 0;
        if (c)
            return c < 0 ? -1 : 1;
        return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
    }
    struct uit ia = uit_of(a), ib = uit_of(b);
    size_t pa = 0, pb = 0;
    for (;;) {
        int ca = a->escaped ? uit_next(&ia) : (pa < a->len ? (uint8_t)a->p[pa++] : -1);
        int cb = b->escaped ? uit_next(&ib) : (pb < b->len ? (uint8_t)b->p[pb++] : -1);
        if (ca != cb)
            return ca < cb ? -1 : 1;
        if (ca < 0)
            return 0;
    }
}

static bool is_num(const struct sval *v) { return v->type == SV_INT || v->type == SV_DOUBLE; }

bool sval_cmp(const struct sval *a, const struct sval *b, int *out)
{
    if (is_num(a) && is_num(b)) {
        if (a->type == SV_INT && b->type == SV_INT) {
            *out = a->i < b->i ? -1 : a->i > b->i ? 1 : 0;
            return true;
        }
        if (a->type == SV_DOUBLE && isnan(a->d))
            return false;
        if (b->type == SV_DOUBLE && isnan(b->d))
            return false;
        if (a->type == SV_DOUBLE && b->type == SV_DOUBLE) {
            *out = a->d < b->d ? -1 : a->d > b->d ? 1 : 0;
            return true;
        }
        if (a->type == SV_INT) {
            *out = isinf(b->d) ? (b->d > 0 ? -1 : 1) : cmp_int_double(a->i, b->d);
        } else {
            *out = isinf(a->d) ? (a->d > 0 ? 1 : -1) : -cmp_int_double(b->i, a->d);
        }
        return true;
    }
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case SV_STR:
        *out = cmp_str(a, b);
        return true;
    case SV_BOOL:
        *out = (int)a->b - (int)b->b;
        return true;
    case SV_BYTES: {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = n ? memcmp(a->p, b->p, n) : 0;
        *out = c ? (c < 0 ? -1 : 1) : (a->len < b->len ? -1 : a->len > b->len ? 1 : 0);
        return true;
    }
    default: /* missing, null, json: never ordered */
        return false;
    }
}

bool sval_eq(const struct sval *a, const struct sval *b)
{
    if (a->type == SV_STR && b->type == SV_STR && !a->escaped && !b->escaped)
        return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
    int c;
    return sval_cmp(a, b, &c) && c == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Hashing                                                                                     */
/* ------------------------------------------------------------------------------------------ */

enum { HK_NULL = 1, HK_BOOL, HK_NUM, HK_STR, HK_BYTES, HK_JSON };

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* hash_bytes() over the unescaped bytes of an escaped string, streamed: the same word schedule
 * as base/hash.c so both forms of one string hash alike (invariant 1). */
static uint64_t hash_escaped(const struct sval *v, uint64_t seed)
{
    struct uit it = uit_of(v);
    size_t n = 0;
    while (uit_next(&it) >= 0)
        n++;
    it = uit_of(v);
    uint64_t h = 0xcbf29ce484222325ull ^ seed ^ (n * 0x9E3779B97F4A7C15ull);
    size_t left = n;
    while (left >= 8) {
        uint64_t w = 0;
        uint8_t b[8];
        for (int k = 0; k < 8; k++)
            b[k] = (uint8_t)uit_next(&it);
        w = load_le64(b);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        left -= 8;
    }
    uint8_t b[8] = {0};
    for (size_t k = 0; k < left; k++)
        b[k] = (uint8_t)uit_next(&it);
    uint64_t w = load_le64(b);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint64_t sval_hash(const struct sval *v, uint64_t seed)
{
    switch (v->type) {
    case SV_MISSING:
    case SV_NULL:
        return mix64(seed ^ HK_NULL);
    case SV_BOOL:
        return mix64(seed ^ (HK_BOOL << 8) ^ (uint64_t)v->b);
    case SV_INT:
        return mix64((seed ^ (HK_NUM << 8)) + 0x9E3779B97F4A7C15ull * (uint64_t)v->i);
    case SV_DOUBLE: {
        double d = v->d;
        if (d == trunc(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
            return mix64((seed ^ (HK_NUM << 8)) + 0x9E3779B97F4A7C15ull * (uint64_t)(int64_t)d);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return mix64((seed ^ (HK_NUM << 8) ^ 0x5555) + bits);
    }
    case SV_STR:
        return v->escaped ? hash_escaped(v, seed ^ HK_STR) : hash_bytes(v->p, v->len, seed ^ HK_STR);
    case SV_BYTES:
        return hash_bytes(v->p, v->len, seed ^ HK_BYTES);
    default:
        return hash_bytes(v->p, v->len, seed ^ HK_JSON);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                      */
/* ------------------------------------------------------------------------------------------ */

size_t sval_fmt_double(char buf[SVAL_DOUBLE_CHARS], double d)
{
    if (!isfinite(d)) {
        memcpy(buf, "null", 4);
        return 4;
    }
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, SVAL_DOUBLE_CHARS, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* keep a double recognisable as one ("2.0", not "2") so typed readers see a float */
    if (!memchr(buf, '.', (size_t)n) && !memchr(buf, 'e', (size_t)n) && n + 2 < SVAL_DOUBLE_CHARS) {
        buf[n++] = '.';
        buf[n++] = '0';
    }
    return (size_t)n;
}

void sval_write_json(struct jw *w, const struct sval *v)
{
    switch (v->type) {
    case SV_MISSING:
    case SV_NULL:
        jw_null(w);
        return;
    case SV_BOOL:
        jw_bool(w, v->b);
        return;
    case SV_INT:
        jw_i64(w, v->i);
        return;
    case SV_DOUBLE: {
        if (!isfinite(v->d)) {
            jw_null(w);
            return;
        }
        char tmp[SVAL_DOUBLE_CHARS];
        size_t n = sval_fmt_double(tmp, v->d);
        jw_rawn(w, (const uint8_t *)tmp, n);
        return;
    }
    case SV_STR:
        if (v->escaped) {
            /* the raw contents of a validated JSON string: already valid JSON between quotes */
            jw_rawn(w, (const uint8_t *)"\"", 1);
            sbuf_append(w->out, v->p, v->len);
            sbuf_putc(w->out, '"');
        } else if (utf8_valid((const uint8_t *)v->p, v->len)) {
            jw_strn(w, (const uint8_t *)v->p, v->len);
        } else {
            jw_b64(w, (const uint8_t *)v->p, v->len); /* not text: never emit invalid JSON */
        }
        return;
    case SV_BYTES:
        jw_b64(w, (const uint8_t *)v->p, v->len);
        return;
    case SV_JSON:
        jw_rawn(w, (const uint8_t *)v->p, v->len);
        return;
    default:
        jw_null(w);
    }
}

int sval_unescape(struct sval *v, struct arena *a)
{
    if (v->type != SV_STR || !v->escaped)
        return 0;
    char *out = arena_alloc(a, v->len ? v->len : 1); /* unescaping never lengthens */
    if (!out)
        return ERR_NOMEM;
    struct uit it = uit_of(v);
    size_t n = 0;
    int c;
    while ((c = uit_next(&it)) >= 0)
        out[n++] = (char)c;
    v->p = out;
    v->len = (uint32_t)n;
    v->escaped = false;
    return 0;
}
