/* json.c -- JSON text records: an on-demand, validating, single-pass scanner (fmt/json.h).
 *
 * One pass over the record does two things at once: it validates the whole text strictly and it
 * picks out the values at the requested paths. There is no DOM and no allocation on the common
 * path: extracted strings point into the record (with `escaped` set when they contain a
 * backslash), nested objects/arrays requested as a whole are handed out as their raw text
 * (SV_JSON). Numbers are converted only when a path asks for them (the others are just
 * validated); a double with at most 19 significant digits and a small exponent is computed exactly
 * without strtod (fast_double), any other goes through strtod on a bounded copy (a stack buffer,
 * or the scratch arena for absurdly long numbers).
 *
 * How paths are matched: each path is one bit of a 64-bit mask. scan_value() receives the set of
 * paths whose first d segments lead to the value being scanned; the paths with exactly d segments
 * take the value, the longer ones are narrowed by each member key / array index. A scan with an
 * empty set is pure validation. More than 64 paths are handled 64 at a time (one pass each).
 *
 * Strictness (RFC 8259; every item is enforced and tested, tests/unit/test_stream_json.c):
 *  1. The grammar exactly: no comments, no trailing commas, no single quotes, no leading '+' or
 *     zeros, no NaN/Infinity, no bare '.5' or '5.', whitespace only space/tab/LF/CR.
 *  2. Strings: UTF-8 validated (no overlongs, no surrogates, nothing above U+10FFFF), no raw
 *     control characters, escapes only \" \\ \/ \b \f \n \r \t \uXXXX; a \uD800-\uDBFF escape must
 *     be followed by a \uDC00-\uDFFF escape and a lone low surrogate is rejected (like jansson).
 *     \u0000 is accepted (RFC 8259 allows it; jansson needs JSON_ALLOW_NUL).
 *  3. Nesting at most JSON_SCAN_DEPTH_MAX (64) containers deep.
 *  4. Exactly one value, optionally surrounded by whitespace.
 *  5. Duplicate member names are accepted and the LAST one wins: when a key matches a path step
 *     the path's value is reset before the member's value is scanned, so an earlier occurrence
 *     never leaks through (jansson with JSON_REJECT_DUPLICATES rejects such objects instead).
 *  6. Numbers: an integer that fits int64 is SV_INT, anything else SV_DOUBLE, correctly rounded
 *     (Clinger's exact fast path for short decimals, strtod otherwise). A number whose magnitude overflows a double (1e400) is valid JSON for
 *     json_scan_validate, but extracting it fails the record with ERR_CORRUPT ("number out of
 *     range") rather than producing an infinity: value.h promises finite doubles. Underflow
 *     rounds toward zero as strtod does.
 *
 * Errors: ERR_CORRUPT (not JSON), ERR_INVALID (valid JSON but not an object), ERR_NOMEM (the
 * scratch arena's cap, only for numbers longer than 256 characters).
 */
#include "stream/fmt/json.h"

#include "base/alloc.h"
#include "base/err.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define JSON_SCAN_DEPTH_MAX 64

/* fast_double needs each double operation rounded once, to double (no x87 extended precision). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define JSON_FAST_DOUBLE 1
#else
#define JSON_FAST_DOUBLE 0
#endif

/* Byte classes inside a string: 0 plain ASCII, 1 quote, 2 backslash, 3 control, 4 non-ASCII. */
static const uint8_t str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

struct jscan {
    const uint8_t *p, *end;
    const struct spath *paths; /* this pass's paths (at most 64) */
    struct sval *out;
    uint64_t len_mask[SPATH_SEGS_MAX + 1]; /* bit i set in len_mask[d] iff paths[i].nseg == d */
    struct arena *scratch;
    const char *err;
    int rc;
    int depth;
};

static inline void skip_ws(struct jscan *s)
{
    const uint8_t *p = s->p, *end = s->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    s->p = p;
}

static int fail(struct jscan *s, const char *why)
{
    if (s->rc == 0) {
        s->rc = ERR_CORRUPT;
        s->err = why;
    }
    return -1;
}

static inline int hexv(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool read_hex4(const uint8_t *p, const uint8_t *end, uint32_t *cp)
{
    if (end - p < 4)
        return false;
    int a = hexv(p[0]), b = hexv(p[1]), c = hexv(p[2]), d = hexv(p[3]);
    if ((a | b | c | d) < 0)
        return false;
    *cp = (uint32_t)(a << 12 | b << 8 | c << 4 | d);
    return true;
}

/* One UTF-8 sequence starting at p (p[0] >= 0x80); returns its length or 0 if invalid. */
static inline size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
    uint8_t c = p[0];
    size_t left = (size_t)(end - p);
    if (c >= 0xC2 && c <= 0xDF)
        return left >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3)
            return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F; /* no UTF-16 surrogates */
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4)
            return 0;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* s->p at the opening quote. Sets the contents span and whether it has escapes. */
static int scan_string(struct jscan *s, const uint8_t **start, size_t *len, bool *escaped)
{
    const uint8_t *p = s->p + 1, *end = s->end;
    bool esc = false;
    *start = p;
    for (;;) {
        while (p < end && str_class[*p] == 0)
            p++;
        if (p >= end)
            return fail(s, "unterminated string");
        switch (str_class[*p]) {
        case 1:
            *len = (size_t)(p - *start);
            *escaped = esc;
            s->p = p + 1;
            return 0;
        case 2: {
            esc = true;
            if (end - p < 2)
                return fail(s, "unterminated string");
            uint8_t e = p[1];
            if (e == 'u') {
                uint32_t cp;
                if (!read_hex4(p + 2, end, &cp))
                    return fail(s, "bad \\u escape");
                p += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(s, "lone low surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !read_hex4(p + 2, end, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return fail(s, "lone high surrogate");
                    p += 6;
                }
            } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                       e == 'r' || e == 't') {
                p += 2;
            } else {
                return fail(s, "bad escape");
            }
            break;
        }
        case 3:
            return fail(s, "control character in string");
        default: {
            size_t n = utf8_seq(p, end);
            if (n == 0)
                return fail(s, "invalid UTF-8");
            p += n;
        }
        }
    }
}

/* Exact powers of ten: 10^22 is the largest that a double holds exactly (5^22 < 2^53). */
static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                       1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                       1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Clinger's fast path for the number text [a, b) (grammar already checked): when the decimal
 * significand m is at most 2^53 and the decimal exponent e is within [-22, 22], both m and 10^|e|
 * are exact doubles, so the one IEEE multiply or divide m * 10^e (m / 10^-e) is correctly rounded
 * -- the same double strtod gives. Returns false (the caller falls back to strtod) for anything
 * else: more than 19 significant digits, a bigger significand or exponent. Needs double
 * arithmetic without extended precision (FLT_EVAL_METHOD 0, i.e. SSE2 on x86-64, any arm64). */
static bool fast_double(const uint8_t *a, const uint8_t *b, double *out)
{
    const uint8_t *q = a;
    bool neg = *q == '-';
    q += neg;
    uint64_t m = 0;
    int digits = 0, e10 = 0;
    for (; q < b && *q >= '0' && *q <= '9'; q++) {
        if ((digits += m != 0 || *q != '0') > 19)
            return false;
        m = m * 10 + (uint64_t)(*q - '0');
    }
    if (q < b && *q == '.') {
        for (q++; q < b && *q >= '0' && *q <= '9'; q++) {
            e10--;
            if ((digits += m != 0 || *q != '0') > 19)
                return false;
            m = m * 10 + (uint64_t)(*q - '0');
        }
    }
    if (q < b) { /* 'e' or 'E' */
        q++;
        bool eneg = *q == '-';
        q += *q == '-' || *q == '+';
        int x = 0;
        for (; q < b; q++) {
            if (x > 100000)
                return false; /* absurd exponent: strtod decides */
            x = x * 10 + (*q - '0');
        }
        e10 += eneg ? -x : x;
    }
    double d;
    if (m == 0) {
        d = 0.0; /* 0e999 is zero */
    } else {
        if (m > (1ull << 53) || e10 < -22 || e10 > 22)
            return false;
        d = e10 < 0 ? (double)m / pow10_exact[-e10] : (double)m * pow10_exact[e10];
    }
    *out = neg ? -d : d;
    return true;
}

/* Convert the number text [a, b) (grammar already checked) into v. */
static int number_value(struct jscan *s, const uint8_t *a, const uint8_t *b, bool is_int,
                        struct sval *v)
{
    size_t n = (size_t)(b - a);
    if (is_int) {
        const uint8_t *q = a;
        bool neg = *q == '-';
        q += neg;
        uint64_t acc = 0;
        bool ovf = false;
        for (; q < b; q++) {
            uint64_t dgt = (uint64_t)(*q - '0');
            if (acc > (UINT64_MAX - dgt) / 10) {
                ovf = true;
                break;
            }
            acc = acc * 10 + dgt;
        }
        if (!ovf && (neg ? acc <= (uint64_t)INT64_MAX + 1 : acc <= (uint64_t)INT64_MAX)) {
            v->type = SV_INT;
            v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
            return 0;
        }
    }
    v->type = SV_DOUBLE;
    if (JSON_FAST_DOUBLE && fast_double(a, b, &v->d))
        return 0;
    char stackbuf[257];
    char *buf = stackbuf;
    if (n >= sizeof stackbuf) {
        buf = s->scratch ? arena_alloc(s->scratch, n + 1) : NULL;
        if (!buf) {
            s->rc = ERR_NOMEM;
            s->err = "number too long for the scratch arena";
            return -1;
        }
    }
    memcpy(buf, a, n);
    buf[n] = 0;
    errno = 0;
    double d = strtod(buf, NULL);
    if (isinf(d))
        return fail(s, "number out of range");
    v->d = d;
    return 0;
}

/* s->p at '-' or a digit. */
static int scan_number(struct jscan *s, const uint8_t **a, bool *is_int)
{
    const uint8_t *p = s->p, *end = s->end;
    *a = p;
    *is_int = true;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return fail(s, "bad number");
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return fail(s, "bad number");
    }
    if (p < end && *p == '.') {
        *is_int = false;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail(s, "bad number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = false;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail(s, "bad number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    return 0;
}

/* s->p at '-' or a digit and a path wants the number: its grammar is checked and its value
 * computed in the same pass for the common forms -- an integer of at most 18 digits, a decimal
 * fraction that fast_double would take -- with the same results number_value gives; anything
 * else (an exponent, more digits) is converted by number_value from the scanned text. */
static int scan_number_value(struct jscan *s, struct sval *v)
{
    const uint8_t *a = s->p, *p = a, *end = s->end;
    bool neg = p < end && *p == '-';
    p += neg;
    if (p >= end)
        return fail(s, "bad number");
    uint64_t m = 0; /* wraps past 19 digits: then unused */
    int digits = 0, e10 = 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        do {
            m = m * 10 + (uint64_t)(*p - '0');
            digits++;
            p++;
        } while (p < end && *p >= '0' && *p <= '9');
    } else {
        return fail(s, "bad number");
    }
    bool is_int = true, exp = false;
    if (p < end && *p == '.') {
        is_int = false;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail(s, "bad number");
        do {
            digits += m != 0 || *p != '0'; /* leading zeros are not significant */
            m = m * 10 + (uint64_t)(*p - '0');
            e10--;
            p++;
        } while (p < end && *p >= '0' && *p <= '9');
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = false;
        exp = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return fail(s, "bad number");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    s->p = p;
    if (!exp) {
        if (is_int && digits <= 18) {
            v->type = SV_INT;
            v->i = neg ? -(int64_t)m : (int64_t)m;
            return 0;
        }
        if (JSON_FAST_DOUBLE && !is_int && digits <= 19 &&
            (m == 0 || (m <= (1ull << 53) && e10 >= -22))) {
            double d = m == 0 ? 0.0 : (double)m / pow10_exact[-e10];
            v->type = SV_DOUBLE;
            v->d = neg ? -d : d;
            return 0;
        }
    }
    return number_value(s, a, p, is_int, v);
}

static inline void set_targets(struct jscan *s, uint64_t targets, const struct sval *v)
{
    while (targets) {
        int i = __builtin_ctzll(targets);
        targets &= targets - 1;
        s->out[i] = *v;
    }
}

static int scan_value(struct jscan *s, uint64_t active, uint32_t d);

/* Member names are short: compare them inline rather than through a memcmp call. */
static inline bool name_eq(const uint8_t *k, const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (k[i] != (uint8_t)name[i])
            return false;
    return true;
}

static inline bool key_matches(const struct spath_seg *seg, const uint8_t *k, size_t klen,
                               bool kesc)
{
    if (!seg->name)
        return false;
    if (!kesc)
        return klen == seg->len && name_eq(k, seg->name, klen);
    struct sval a = {.type = SV_STR, .escaped = true, .len = (uint32_t)klen, .p = (const char *)k};
    struct sval b = {.type = SV_STR, .len = seg->len, .p = seg->name};
    return sval_eq(&a, &b);
}

/* The paths in `inner` narrowed by one step; out[] of every path taking this step is reset so a
 * later duplicate key replaces an earlier one (strictness 5). */
static uint64_t narrow(struct jscan *s, uint64_t inner, uint32_t d, const uint8_t *k, size_t klen,
                       bool kesc, int64_t index)
{
    uint64_t next = 0;
    while (inner) {
        int i = __builtin_ctzll(inner);
        inner &= inner - 1;
        const struct spath_seg *seg = &s->paths[i].seg[d];
        bool hit = k ? key_matches(seg, k, klen, kesc) : (!seg->name && seg->index == index);
        if (hit) {
            next |= 1ull << i;
            s->out[i].type = SV_MISSING;
        }
    }
    return next;
}

/* A string at s->p (the opening quote): the common case -- printable ASCII, no escapes -- is
 * scanned inline; anything else goes through scan_string, which validates it. */
static inline int scan_plain_string(struct jscan *s, const uint8_t **start, size_t *len,
                                    bool *escaped)
{
    const uint8_t *p = s->p + 1, *q = p, *end = s->end;
    while (q < end && str_class[*q] == 0)
        q++;
    if (q < end && *q == '"') {
        *start = p;
        *len = (size_t)(q - p);
        *escaped = false;
        s->p = q + 1;
        return 0;
    }
    return scan_string(s, start, len, escaped);
}

static inline void skip_ws_fast(struct jscan *s)
{
    if (s->p < s->end && *s->p <= ' ')
        skip_ws(s);
}

/* A value that no path needs: validated and skipped. Strings and numbers -- nearly every such
 * value -- are done here without scan_value's dispatch; containers and literals go through it
 * with an empty path set (pure validation). */
static inline int skip_value(struct jscan *s, uint32_t d)
{
    if (s->p < s->end) {
        uint8_t c = *s->p;
        if (c == '"') {
            const uint8_t *a;
            size_t n;
            bool esc;
            return scan_plain_string(s, &a, &n, &esc);
        }
        if (c == '-' || (c >= '0' && c <= '9')) {
            const uint8_t *a;
            bool is_int;
            return scan_number(s, &a, &is_int);
        }
    }
    return scan_value(s, 0, d);
}

static int scan_object(struct jscan *s, uint64_t inner, uint32_t d)
{
    s->p++; /* '{' */
    skip_ws_fast(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a member name");
        const uint8_t *k;
        size_t klen;
        bool kesc;
        if (scan_plain_string(s, &k, &klen, &kesc))
            return -1;
        skip_ws_fast(s);
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected ':'");
        s->p++;
        skip_ws_fast(s);
        uint64_t next = inner ? narrow(s, inner, d, k, klen, kesc, -1) : 0;
        if (next ? scan_value(s, next, d + 1) : skip_value(s, d + 1))
            return -1;
        skip_ws_fast(s);
        if (s->p >= s->end)
            return fail(s, "unterminated object");
        if (*s->p == ',') {
            s->p++;
            skip_ws_fast(s);
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            return 0;
        }
        return fail(s, "expected ',' or '}'");
    }
}

static int scan_array(struct jscan *s, uint64_t inner, uint32_t d)
{
    s->p++; /* '[' */
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (int64_t idx = 0;; idx++) {
        uint64_t next = inner ? narrow(s, inner, d, NULL, 0, false, idx) : 0;
        if (next ? scan_value(s, next, d + 1) : skip_value(s, d + 1))
            return -1;
        skip_ws(s);
        if (s->p >= s->end)
            return fail(s, "unterminated array");
        if (*s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (*s->p == ']') {
            s->p++;
            return 0;
        }
        return fail(s, "expected ',' or ']'");
    }
}

static bool lit(struct jscan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return false;
    s->p += n;
    return true;
}

/* `active`: the paths whose first d segments lead here. */
static int scan_value(struct jscan *s, uint64_t active, uint32_t d)
{
    if (s->p >= s->end)
        return fail(s, "expected a value");
    uint64_t targets = 0, inner = 0;
    if (active) {
        targets = active & s->len_mask[d];
        inner = active & ~targets;
    }
    struct sval v = {0};
    const uint8_t *start = s->p;
    switch (*s->p) {
    case '{':
    case '[': {
        if (++s->depth > JSON_SCAN_DEPTH_MAX)
            return fail(s, "nested too deep");
        int rc = *s->p == '{' ? scan_object(s, inner, d) : scan_array(s, inner, d);
        s->depth--;
        if (rc)
            return -1;
        if (targets) {
            v.type = SV_JSON;
            v.p = (const char *)start;
            v.len = (uint32_t)(s->p - start);
            set_targets(s, targets, &v);
        }
        return 0;
    }
    case '"': {
        const uint8_t *a;
        size_t n;
        bool esc;
        if (scan_plain_string(s, &a, &n, &esc))
            return -1;
        if (targets) {
            if (n > UINT32_MAX)
                return fail(s, "string too long");
            v.type = SV_STR;
            v.escaped = esc;
            v.p = (const char *)a;
            v.len = (uint32_t)n;
            set_targets(s, targets, &v);
        }
        return 0;
    }
    case 't':
        if (!lit(s, "true", 4))
            return fail(s, "bad literal");
        v.type = SV_BOOL;
        v.b = true;
        break;
    case 'f':
        if (!lit(s, "false", 5))
            return fail(s, "bad literal");
        v.type = SV_BOOL;
        v.b = false;
        break;
    case 'n':
        if (!lit(s, "null", 4))
            return fail(s, "bad literal");
        v.type = SV_NULL;
        break;
    default: {
        if (targets) {
            if (scan_number_value(s, &v))
                return -1;
            set_targets(s, targets, &v);
            return 0;
        }
        const uint8_t *a;
        bool is_int;
        return scan_number(s, &a, &is_int);
    }
    }
    if (targets)
        set_targets(s, targets, &v);
    return 0;
}

/* One pass: validate all of [p, end) and extract up to 64 paths. *top_obj tells whether the one
 * value is an object. */
static int scan_doc(const uint8_t *p, size_t n, const struct spath *paths, size_t np,
                    struct sval *out, struct arena *scratch, const char **err, bool *top_obj,
                    const uint8_t **vstart, const uint8_t **vend)
{
    struct jscan s;
    s.p = p;
    s.end = p + n;
    s.paths = paths;
    s.out = out;
    s.scratch = scratch;
    s.err = NULL;
    s.rc = 0;
    s.depth = 0;
    /* len_mask[d] is read only at depths d where some path is still active, i.e. d <= the
     * deepest path: only those entries are cleared (this runs for every record). */
    uint32_t deepest = 0;
    for (size_t i = 0; i < np; i++)
        if (paths[i].nseg <= SPATH_SEGS_MAX && paths[i].nseg > deepest)
            deepest = paths[i].nseg;
    for (uint32_t d = 0; d <= deepest; d++)
        s.len_mask[d] = 0;
    uint64_t all = 0;
    for (size_t i = 0; i < np; i++) {
        out[i].type = SV_MISSING;
        uint8_t k = paths[i].nseg;
        if (k == 0 || k > SPATH_SEGS_MAX)
            continue; /* an empty path matches nothing */
        s.len_mask[k] |= 1ull << i;
        all |= 1ull << i;
    }
    skip_ws(&s);
    *top_obj = s.p < s.end && *s.p == '{';
    if (vstart)
        *vstart = s.p;
    /* only an object's members are addressable; a top-level array is not a record */
    if (scan_value(&s, *top_obj ? all : 0, 0) == 0) {
        if (vend)
            *vend = s.p;
        skip_ws(&s);
        if (s.p != s.end)
            fail(&s, "trailing characters after the value");
    }
    if (err)
        *err = s.err;
    return s.rc;
}

static int json_extract(const struct sfmt *f, struct slice rec, const struct spath *paths,
                        size_t n, struct sval *out, struct arena *scratch, const char **err)
{
    (void)f;
    if (err)
        *err = NULL;
    size_t done = 0;
    do {
        size_t k = n - done > 64 ? 64 : n - done;
        bool obj;
        int rc = scan_doc(rec.ptr, rec.len, k ? paths + done : NULL, k, k ? out + done : NULL,
                          scratch, err, &obj, NULL, NULL);
        if (rc)
            return rc;
        if (!obj) {
            if (err)
                *err = "record is not a JSON object";
            return ERR_INVALID;
        }
        done += k;
    } while (done < n);
    return 0;
}

static int json_to_json(const struct sfmt *f, struct slice rec, struct sbuf *out,
                        struct arena *scratch, const char **err)
{
    (void)f;
    if (err)
        *err = NULL;
    bool obj;
    const uint8_t *a = NULL, *b = NULL;
    int rc = scan_doc(rec.ptr, rec.len, NULL, 0, NULL, scratch, err, &obj, &a, &b);
    if (rc)
        return rc;
    if (!obj) {
        if (err)
            *err = "record is not a JSON object";
        return ERR_INVALID;
    }
    size_t before = out->len;
    sbuf_append(out, a, (size_t)(b - a));
    if (!sbuf_ok(out)) {
        out->len = before;
        return ERR_NOMEM;
    }
    return 0;
}

static void json_free(struct sfmt *f)
{
    (void)f; /* the JSON format is a stateless singleton */
}

static const struct sfmt_ops json_ops = {
    .extract = json_extract,
    .to_json = json_to_json,
    .free = json_free,
    .name = "json",
};
static struct sfmt json_singleton = {&json_ops};

int sfmt_json_new(struct sfmt **out)
{
    *out = &json_singleton;
    return 0;
}

bool json_scan_validate(const uint8_t *p, size_t n)
{
    bool obj;
    return scan_doc(p, n, NULL, 0, NULL, NULL, NULL, &obj, NULL, NULL) == 0;
}

int json_scan_array(const uint8_t *p, size_t n, bool (*visit)(void *ctx, const struct sval *v),
                    void *ctx)
{
    struct sval v;
    struct jscan s;
    memset(&s, 0, sizeof s);
    s.p = p;
    s.end = p + n;
    s.out = &v;
    s.len_mask[0] = 1; /* "path" 0 has no segments: it takes each element scanned at depth 0 */
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '[')
        return json_scan_validate(p, n) ? ERR_INVALID : ERR_CORRUPT;
    s.p++;
    s.depth = 1;
    skip_ws(&s);
    if (s.p < s.end && *s.p == ']') {
        s.p++;
    } else {
        for (;;) {
            v.type = SV_MISSING;
            if (scan_value(&s, 1, 0))
                return s.rc ? s.rc : ERR_CORRUPT;
            if (!visit(ctx, &v))
                return 0; /* stopped early: the rest is not validated (the caller had the
                             record validated already) */
            skip_ws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                skip_ws(&s);
                continue;
            }
            if (s.p < s.end && *s.p == ']') {
                s.p++;
                break;
            }
            return ERR_CORRUPT;
        }
    }
    skip_ws(&s);
    return s.p == s.end ? 0 : ERR_CORRUPT;
}

int json_scan_validate_err(const uint8_t *p, size_t n, const char **why)
{
    bool obj;
    return scan_doc(p, n, NULL, 0, NULL, NULL, why, &obj, NULL, NULL);
}
