/* http_parser.c -- pure HTTP/1.1 request-head parser and chunked-body decoder (RFC 9112).
 *
 * The head parser is stateless: the server calls it on the bytes of the current request each time
 * more arrive. It walks the head line by line, finding each LF with memchr (vectorised by libc) and
 * then validating the line with one table lookup per byte, so a complete head costs one pass; a
 * head that arrives in k reads costs k passes, which is fine because nearly all heads arrive in
 * one.
 * Nothing is copied or allocated: every slice in struct http_request points into the caller's
 * buffer.
 *
 * Invariants:
 *  1. Lines end in CRLF only. A bare LF terminator, a CR anywhere else, and obs-fold (a header line
 *     starting with SP/HTAB) are ERR_INVALID: lenient line handling is how request smuggling and
 *     header injection get through front proxies, so we accept exactly one framing.
 *  2. Limits are checked before content, line by line, and the LF search never looks past
 *     head_max (nor past request_line_max + 2 for the request line). Hence a prefix of a request
 *     yields either 0 or the same result the whole request yields: lines are judged in order, each
 *     complete line the same way whatever follows it, and an incomplete line only by the limits it
 *     has already provably crossed. (This holds when request_line_max < head_max, as by default.)
 *  3. Framing is unambiguous: at most one Content-Length, a single plain decimal <= INT64_MAX;
 *     Transfer-Encoding only as exactly "chunked", never on HTTP/1.0, never with Content-Length;
 *     singleton fields we expose (Host, Authorization, Content-Type, Origin) at most once.
 *  4. All returned slices lie inside buf[0..head_len), head_len <= min(len, head_max).
 *
 * The chunked decoder is a byte-at-a-time state machine over the framing (size lines, CRLFs,
 * trailers) that hands out chunk data as slices of the input without copying:
 *
 *   SIZE0 -hex-> SIZE -CR-> SIZE_LF -LF, size>0-> DATA -n bytes-> DATA_CR -CR-> DATA_LF -LF-> SIZE0
 *                 |  ';'/SP: EXT_* states (token / quoted-string), CR -> SIZE_LF
 *   SIZE_LF -LF, size==0-> TR_START -CR-> TR_END_LF -LF-> DONE
 *   TR_START -tchar-> TR_NAME -':'-> TR_VALUE -CR-> TR_LF -LF-> TR_START
 *   any state -bad byte-> ERR_INVALID / ERR_TOO_LARGE (sticky)
 *
 *  5. The decoder's result (data bytes, error, done, consumed total) does not depend on how the
 *     input is split across calls; it never consumes a byte after the final CRLF.
 */
#include "http/http_parser.h"

#include "base/err.h"

#include <string.h>

/* ------------------------------------------------------------------------------------------------
 * Character classes (RFC 9110 §5.6.2 tchar, RFC 3986 request-target characters, field-value
 * characters, HEXDIG, quoted-string qdtext). One table, one lookup per byte.
 */
enum {
    C_TCHAR = 1,  /* token character */
    C_TARGET = 2, /* unreserved / sub-delims / ":@/?%" (no '#', no obs-text, no CTL/SP) */
    C_VALUE = 4,  /* field-value octet: SP, HTAB, VCHAR, obs-text */
    C_HEX = 8,
    C_QDTEXT = 16, /* HTAB, SP, '!', '#'..'[', ']'..'~', obs-text */
};

static const uint8_t char_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  20, 0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    20, 23, 4,  21, 23, 23, 23, 23, 22, 22, 23, 23, 22, 23, 23, 22, /* 0x20  !"#$%&'()*+,-./ */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 22, 22, 20, 22, 20, 22, /* 0x30 0-9:;<=>? */
    22, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23, /* 0x40 @A-O */
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 20, 4,  20, 21, 23, /* 0x50 P-Z[\]^_ */
    21, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23, /* 0x60 `a-o */
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 20, 21, 20, 23, 0,  /* 0x70 p-z{|}~DEL */
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, /* 0x80 obs-text */
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
};

static inline bool is_class(uint8_t c, uint8_t cls) { return (char_class[c] & cls) != 0; }
static inline bool is_ows(uint8_t c) { return c == ' ' || c == '\t'; }

/* Case-insensitive compare of n validated bytes against a lower-case literal made only of
 * letters, digits and '-'. OR-ing 0x20 folds 'A'-'Z' onto 'a'-'z'; the only other bytes it could
 * fold onto a digit or '-' are control characters, which never survive validation. */
static inline bool eq_lower(const uint8_t *p, size_t n, const char *lower, size_t lower_len)
{
    if (n != lower_len)
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((uint8_t)(p[i] | 0x20) != (uint8_t)lower[i])
            return false;
    }
    return true;
}
#define EQ_LIT(s, lit) eq_lower((s).ptr, (s).len, lit, sizeof(lit) - 1)

static inline int hex_value(uint8_t c)
{
    if (c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

void http_limits_default(struct http_limits *l)
{
    l->request_line_max = 8192;
    l->head_max = 65536;
    l->header_count_max = HTTP_MAX_HEADERS;
    l->host_required = false;
}

/* ------------------------------------------------------------------------------------------------
 * Request line
 */

static bool prefix_nocase(const uint8_t *p, size_t n, const char *lower)
{
    size_t m = strlen(lower);
    if (n < m)
        return false;
    return slice_eq_nocase(slice_of(p, m), lower);
}

/* Classify the request-target and set path/query. Returns 0 or ERR_INVALID. */
static int parse_target(struct http_request *req)
{
    const uint8_t *t = req->target.ptr;
    size_t n = req->target.len;
    size_t path_off;

    if (t[0] == '/') {
        path_off = 0; /* origin-form */
    } else if (n == 1 && t[0] == '*') {
        /* asterisk-form: only for OPTIONS (RFC 9112 §3.2.4). */
        if (!slice_eq_cstr(req->method, "OPTIONS"))
            return ERR_INVALID;
        req->path = req->target;
        req->query = slice_of(t + n, 0);
        return 0;
    } else {
        /* absolute-form: "http://authority/path" or https; the path must be present so that
         * req->path can point into the buffer. authority-form (CONNECT) is not served. */
        size_t skip;
        if (prefix_nocase(t, n, "http://"))
            skip = 7;
        else if (prefix_nocase(t, n, "https://"))
            skip = 8;
        else
            return ERR_INVALID;
        const uint8_t *slash = memchr(t + skip, '/', n - skip);
        if (!slash || slash == t + skip)
            return ERR_INVALID;
        /* The authority must not contain '?' (a query without a path). */
        if (memchr(t + skip, '?', (size_t)(slash - (t + skip))))
            return ERR_INVALID;
        path_off = (size_t)(slash - t);
    }
    const uint8_t *p = t + path_off;
    size_t pn = n - path_off;
    const uint8_t *q = memchr(p, '?', pn);
    if (q) {
        req->path = slice_of(p, (size_t)(q - p));
        req->query = slice_of(q + 1, pn - (size_t)(q - p) - 1);
    } else {
        req->path = slice_of(p, pn);
        req->query = slice_of(p + pn, 0);
    }
    return 0;
}

/* line = the request line without CRLF. */
static int parse_request_line(const uint8_t *line, size_t n, struct http_request *req)
{
    size_t i = 0;
    while (i < n && is_class(line[i], C_TCHAR))
        i++;
    if (i == 0 || i == n || line[i] != ' ')
        return ERR_INVALID;
    req->method = slice_of(line, i);
    size_t ts = ++i;
    while (i < n && is_class(line[i], C_TARGET))
        i++;
    if (i == ts)
        return ERR_INVALID;
    req->target = slice_of(line + ts, i - ts);
    if (i == n) /* "GET /" is HTTP/0.9 (501); "GET HTTP/1.1" has no target: malformed (400) */
        return parse_target(req) ? ERR_INVALID : ERR_UNSUPPORTED;
    if (line[i] != ' ')
        return ERR_INVALID;
    i++;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3). */
    const uint8_t *v = line + i;
    if (n - i != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
        v[7] < '0' || v[7] > '9')
        return ERR_INVALID;
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return ERR_UNSUPPORTED; /* HTTP/2.0 preface, HTTP/0.9, HTTP/1.2, ... */
    req->version_minor = v[7] - '0';
    return parse_target(req);
}

/* ------------------------------------------------------------------------------------------------
 * Header fields
 */

struct head_state {
    bool seen_te;
    bool te_chunked;
    bool conn_close;
    bool conn_keep_alive;
};

/* Content-Length = 1*DIGIT, one value only, <= INT64_MAX. */
static int parse_content_length(struct slice v, uint64_t *out)
{
    if (v.len == 0 || v.len > 19)
        return ERR_INVALID;
    uint64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        uint8_t c = v.ptr[i];
        if (c < '0' || c > '9')
            return ERR_INVALID;
        x = x * 10 + (uint64_t)(c - '0'); /* 19 digits fit in u64 */
    }
    if (x > (uint64_t)INT64_MAX)
        return ERR_INVALID;
    *out = x;
    return 0;
}

/* Walk a comma-separated list of tokens (Connection), noting close / keep-alive. */
static void scan_connection(struct slice v, struct head_state *hs)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (is_ows(v.ptr[i]) || v.ptr[i] == ','))
            i++;
        size_t s = i;
        while (i < v.len && v.ptr[i] != ',')
            i++;
        size_t e = i;
        while (e > s && is_ows(v.ptr[e - 1]))
            e--;
        struct slice tok = slice_of(v.ptr + s, e - s);
        if (EQ_LIT(tok, "close"))
            hs->conn_close = true;
        else if (EQ_LIT(tok, "keep-alive"))
            hs->conn_keep_alive = true;
    }
}

static int set_singleton(struct slice *dst, struct slice v)
{
    if (dst->ptr != NULL)
        return ERR_INVALID; /* a second Host/Authorization/...: ambiguous, reject */
    *dst = v;
    return 0;
}

/* Interpret the fields the server relies on. Dispatch on length first: most fields are none. */
static int apply_header(const struct http_header *h, struct http_request *req,
                        struct head_state *hs)
{
    struct slice n = h->name;
    switch (n.len) {
    case 4:
        if (EQ_LIT(n, "host"))
            return set_singleton(&req->host, h->value);
        break;
    case 6:
        if (EQ_LIT(n, "origin"))
            return set_singleton(&req->origin, h->value);
        if (EQ_LIT(n, "expect") && EQ_LIT(h->value, "100-continue"))
            req->expect_continue = true;
        break;
    case 10:
        if (EQ_LIT(n, "connection"))
            scan_connection(h->value, hs);
        break;
    case 12:
        if (EQ_LIT(n, "content-type"))
            return set_singleton(&req->content_type, h->value);
        break;
    case 13:
        if (EQ_LIT(n, "authorization"))
            return set_singleton(&req->authorization, h->value);
        break;
    case 14:
        if (EQ_LIT(n, "content-length")) {
            if (req->has_content_length)
                return ERR_INVALID; /* duplicates rejected even when equal */
            int rc = parse_content_length(h->value, &req->content_length);
            if (rc < 0)
                return rc;
            req->has_content_length = true;
        }
        break;
    case 17:
        if (EQ_LIT(n, "transfer-encoding")) {
            if (hs->seen_te)
                return ERR_INVALID; /* would mean "chunked, chunked" or a coding list */
            hs->seen_te = true;
            hs->te_chunked = EQ_LIT(h->value, "chunked");
        }
        break;
    default:
        break;
    }
    return 0;
}

/* line = a header line without CRLF, n > 0. */
static int parse_header_line(const uint8_t *line, size_t n, struct http_header *h)
{
    size_t i = 0;
    /* A leading SP/HTAB is obs-fold (or whitespace before the first field): rejected. */
    while (i < n && is_class(line[i], C_TCHAR))
        i++;
    if (i == 0 || i == n || line[i] != ':')
        return ERR_INVALID;
    h->name = slice_of(line, i);
    i++;
    while (i < n && is_ows(line[i]))
        i++;
    size_t vs = i;
    for (; i < n; i++) {
        if (!is_class(line[i], C_VALUE))
            return ERR_INVALID; /* CTL (incl. bare CR, NUL) or DEL in a value */
    }
    size_t ve = n;
    while (ve > vs && is_ows(line[ve - 1]))
        ve--;
    h->value = slice_of(line + vs, ve - vs);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Head
 */

/* Find the LF ending the line that starts at ls, searching only [ls, w_end). When there is none,
 * decide from the limits alone (invariant 2): returns 1 with *lf set, or 0 / a negative ERR_*. */
static int find_line(const uint8_t *buf, size_t ls, size_t w_end, size_t head_max,
                     size_t rl_max, bool request_line, size_t *lf)
{
    const uint8_t *p = w_end > ls ? memchr(buf + ls, '\n', w_end - ls) : NULL;
    if (p) {
        *lf = (size_t)(p - buf);
        return 1;
    }
    size_t avail = w_end - ls;
    /* A trailing CR may be the start of the CRLF: it is not yet known to be content. */
    size_t content_lb = avail - (avail > 0 && buf[w_end - 1] == '\r');
    if (request_line && content_lb > rl_max)
        return ERR_URI_TOO_LONG;
    if (w_end >= head_max)
        return ERR_HEADERS_TOO_LARGE; /* the LF, wherever it is, ends past head_max */
    return 0;
}

int http_parse_head(const uint8_t *buf, size_t len, const struct http_limits *lim,
                    struct http_request *req)
{
    struct http_limits defaults;
    if (!lim) {
        http_limits_default(&defaults);
        lim = &defaults;
    }
    size_t head_max = lim->head_max;
    size_t rl_max = lim->request_line_max;
    size_t count_max = lim->header_count_max < HTTP_MAX_HEADERS ? lim->header_count_max
                                                                : HTTP_MAX_HEADERS;
    size_t scan_end = len < head_max ? len : head_max;
    size_t pos = 0;

    /* RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line. */
    while (pos < scan_end && buf[pos] == '\r') {
        if (pos + 1 >= scan_end)
            return scan_end >= head_max ? ERR_HEADERS_TOO_LARGE : 0;
        if (buf[pos + 1] != '\n')
            return ERR_INVALID; /* bare CR */
        pos += 2;
    }
    if (pos >= head_max)
        return ERR_HEADERS_TOO_LARGE;

    memset(req, 0, offsetof(struct http_request, headers));
    req->header_count = 0;
    memset(&req->has_content_length, 0,
           sizeof *req - offsetof(struct http_request, has_content_length));

    /* Request line. */
    size_t lf;
    size_t w_end = scan_end;
    if (w_end - pos > rl_max && w_end - pos - rl_max > 2)
        w_end = pos + rl_max + 2;
    int rc = find_line(buf, pos, w_end, head_max, rl_max, true, &lf);
    if (rc <= 0)
        return rc;
    bool cr = lf > pos && buf[lf - 1] == '\r';
    size_t content_len = lf - pos - cr;
    if (content_len > rl_max)
        return ERR_URI_TOO_LONG;
    if (!cr)
        return ERR_INVALID; /* bare LF line terminator */
    rc = parse_request_line(buf + pos, content_len, req);
    if (rc < 0)
        return rc;
    pos = lf + 1;

    /* Header lines, up to the empty line. */
    struct head_state hs = {0};
    for (;;) {
        rc = find_line(buf, pos, scan_end, head_max, rl_max, false, &lf);
        if (rc <= 0)
            return rc;
        cr = lf > pos && buf[lf - 1] == '\r';
        if (!cr)
            return ERR_INVALID;
        content_len = lf - pos - 1;
        size_t ls = pos;
        pos = lf + 1;
        if (content_len == 0)
            break;
        if (req->header_count >= count_max)
            return ERR_HEADERS_TOO_LARGE;
        struct http_header *h = &req->headers[req->header_count];
        rc = parse_header_line(buf + ls, content_len, h);
        if (rc < 0)
            return rc;
        req->header_count++;
        rc = apply_header(h, req, &hs);
        if (rc < 0)
            return rc;
    }
    req->head_len = pos;

    /* Framing decisions (RFC 9112 §6). */
    if (hs.seen_te) {
        if (req->version_minor == 0)
            return ERR_INVALID; /* §6.1: TE in a 1.0 message means a faulty framing */
        if (req->has_content_length)
            return ERR_INVALID; /* CL + TE: the classic smuggling vector */
        if (!hs.te_chunked)
            return ERR_UNSUPPORTED;
        req->chunked = true;
    }
    if (lim->host_required && req->version_minor == 1 && req->host.ptr == NULL)
        return ERR_INVALID;
    if (req->version_minor == 1)
        req->keep_alive = !hs.conn_close;
    else
        req->keep_alive = hs.conn_keep_alive && !hs.conn_close;
    return 1;
}

const struct http_header *http_find_header(const struct http_request *req, const char *lower_name)
{
    size_t n = strlen(lower_name);
    for (size_t i = 0; i < req->header_count; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name.len == n && slice_eq_nocase(h->name, lower_name))
            return h;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------------
 * Chunked decoder
 */

enum chunk_state {
    CH_SIZE0,         /* first hex digit of a chunk size */
    CH_SIZE,          /* further hex digits */
    CH_EXT_PRE_SEMI,  /* BWS before ';' */
    CH_EXT_NAME0,     /* BWS then first char of an ext-name */
    CH_EXT_NAME,      /* ext-name token */
    CH_EXT_POST_NAME, /* BWS after ext-name: expect '=' or ';' */
    CH_EXT_VAL0,      /* BWS then ext-val */
    CH_EXT_TOKEN,     /* token ext-val */
    CH_EXT_QUOTED,    /* inside a quoted-string ext-val */
    CH_EXT_QESC,      /* after a backslash in a quoted-string */
    CH_EXT_AFTER_VAL, /* after an ext-val: BWS, ';' or CR */
    CH_SIZE_LF,       /* CR seen at end of the size line */
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_START, /* start of a trailer line (or the final CRLF) */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_TR_END_LF,
    CH_DONE,
    CH_ERR_INVALID,
    CH_ERR_TOO_LARGE,
};

void http_chunked_init(struct http_chunked *c, size_t trailer_max)
{
    c->remaining = 0;
    c->line_len = 0;
    c->trailer_max = trailer_max;
    c->state = CH_SIZE0;
}

static int chunk_fail(struct http_chunked *c, int err)
{
    c->state = err == ERR_HEADERS_TOO_LARGE ? CH_ERR_TOO_LARGE : CH_ERR_INVALID;
    return err;
}

/* What may follow an ext-val (token or quoted-string): BWS, another ';', or the CR. */
static int after_ext_value(struct http_chunked *c, uint8_t b)
{
    if (b == ';')
        c->state = CH_EXT_NAME0;
    else if (b == '\r')
        c->state = CH_SIZE_LF;
    else if (is_ows(b))
        c->state = CH_EXT_PRE_SEMI;
    else
        return ERR_INVALID;
    return 0;
}

/* One framing byte. Returns 0 or a negative ERR_*. */
static int chunk_step(struct http_chunked *c, uint8_t b)
{
    if (c->state <= CH_SIZE_LF) {
        if (c->state != CH_SIZE_LF && ++c->line_len > HTTP_CHUNK_LINE_MAX)
            return ERR_INVALID;
    } else if (c->state >= CH_TR_START && c->state <= CH_TR_END_LF) {
        if (++c->line_len > c->trailer_max)
            return ERR_HEADERS_TOO_LARGE;
    }
    switch (c->state) {
    case CH_SIZE0:
    case CH_SIZE:
        if (is_class(b, C_HEX)) {
            uint64_t d = (uint64_t)hex_value(b);
            if (c->remaining > ((uint64_t)INT64_MAX - d) / 16)
                return ERR_INVALID; /* chunk size overflow */
            c->remaining = c->remaining * 16 + d;
            c->state = CH_SIZE;
            return 0;
        }
        if (c->state == CH_SIZE0)
            return ERR_INVALID;
        if (b == '\r')
            c->state = CH_SIZE_LF;
        else if (b == ';')
            c->state = CH_EXT_NAME0;
        else if (is_ows(b))
            c->state = CH_EXT_PRE_SEMI;
        else
            return ERR_INVALID;
        return 0;
    case CH_EXT_PRE_SEMI:
        if (b == ';')
            c->state = CH_EXT_NAME0;
        else if (!is_ows(b))
            return ERR_INVALID;
        return 0;
    case CH_EXT_NAME0:
        if (is_class(b, C_TCHAR))
            c->state = CH_EXT_NAME;
        else if (!is_ows(b))
            return ERR_INVALID;
        return 0;
    case CH_EXT_NAME:
        if (is_class(b, C_TCHAR))
            return 0;
        if (b == '=')
            c->state = CH_EXT_VAL0;
        else if (b == ';')
            c->state = CH_EXT_NAME0;
        else if (b == '\r')
            c->state = CH_SIZE_LF;
        else if (is_ows(b))
            c->state = CH_EXT_POST_NAME;
        else
            return ERR_INVALID;
        return 0;
    case CH_EXT_POST_NAME:
        if (b == '=')
            c->state = CH_EXT_VAL0;
        else if (b == ';')
            c->state = CH_EXT_NAME0;
        else if (!is_ows(b))
            return ERR_INVALID;
        return 0;
    case CH_EXT_VAL0:
        if (b == '"')
            c->state = CH_EXT_QUOTED;
        else if (is_class(b, C_TCHAR))
            c->state = CH_EXT_TOKEN;
        else if (!is_ows(b))
            return ERR_INVALID;
        return 0;
    case CH_EXT_TOKEN:
        if (is_class(b, C_TCHAR))
            return 0;
        return after_ext_value(c, b);
    case CH_EXT_AFTER_VAL:
        return after_ext_value(c, b);
    case CH_EXT_QUOTED:
        if (b == '"')
            c->state = CH_EXT_AFTER_VAL;
        else if (b == '\\')
            c->state = CH_EXT_QESC;
        else if (!is_class(b, C_QDTEXT))
            return ERR_INVALID;
        return 0;
    case CH_EXT_QESC:
        /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
        if (!is_class(b, C_VALUE))
            return ERR_INVALID;
        c->state = CH_EXT_QUOTED;
        return 0;
    case CH_SIZE_LF:
        if (b != '\n')
            return ERR_INVALID;
        c->line_len = 0;
        c->state = c->remaining ? CH_DATA : CH_TR_START;
        return 0;
    case CH_DATA_CR:
        if (b != '\r')
            return ERR_INVALID; /* chunk data longer than its size, or CRLF missing */
        c->state = CH_DATA_LF;
        return 0;
    case CH_DATA_LF:
        if (b != '\n')
            return ERR_INVALID;
        c->state = CH_SIZE0;
        c->remaining = 0;
        c->line_len = 0;
        return 0;
    case CH_TR_START:
        if (b == '\r')
            c->state = CH_TR_END_LF;
        else if (is_class(b, C_TCHAR))
            c->state = CH_TR_NAME; /* SP/HTAB here would be obs-fold: rejected below */
        else
            return ERR_INVALID;
        return 0;
    case CH_TR_NAME:
        if (b == ':')
            c->state = CH_TR_VALUE;
        else if (!is_class(b, C_TCHAR))
            return ERR_INVALID;
        return 0;
    case CH_TR_VALUE:
        if (b == '\r')
            c->state = CH_TR_LF;
        else if (!is_class(b, C_VALUE))
            return ERR_INVALID;
        return 0;
    case CH_TR_LF:
        if (b != '\n')
            return ERR_INVALID;
        c->state = CH_TR_START;
        return 0;
    case CH_TR_END_LF:
        if (b != '\n')
            return ERR_INVALID;
        c->state = CH_DONE;
        return 0;
    default:
        return ERR_INVALID; /* CH_DATA and terminal states are handled by the caller */
    }
}

int http_chunked_decode(struct http_chunked *c, const uint8_t *in, size_t len, size_t *consumed,
                        struct slice *data, bool *done)
{
    *consumed = 0;
    *data = slice_of(in, 0);
    *done = false;
    if (c->state == CH_DONE) {
        *done = true;
        return 0;
    }
    if (c->state == CH_ERR_INVALID)
        return ERR_INVALID;
    if (c->state == CH_ERR_TOO_LARGE)
        return ERR_HEADERS_TOO_LARGE;

    size_t i = 0;
    while (i < len) {
        if (c->state == CH_DATA) {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            *data = slice_of(in + i, n);
            c->remaining -= n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            *consumed = i + n;
            return 0;
        }
        int rc = chunk_step(c, in[i]);
        if (rc < 0) {
            *consumed = i;
            return chunk_fail(c, rc);
        }
        i++;
        if (c->state == CH_DONE) {
            *done = true;
            break;
        }
    }
    *consumed = i;
    return 0;
}
