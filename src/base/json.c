/* json.c -- see json.h. */
#include "base/json.h"
#include "base/assert.h"
#include "base/b64.h"

void jw_init(struct jw *w, struct sbuf *out)
{
    w->out = out;
    w->depth = 0;
    w->need_comma[0] = false;
}

static void pre_value(struct jw *w)
{
    if (w->need_comma[w->depth])
        sbuf_putc(w->out, ',');
    w->need_comma[w->depth] = true;
}

static void open(struct jw *w, char c)
{
    pre_value(w);
    sbuf_putc(w->out, (uint8_t)c);
    if (w->depth + 1 < JSON_DEPTH_MAX)
        w->depth++;
    w->need_comma[w->depth] = false;
}

static void close_(struct jw *w, char c)
{
    sbuf_putc(w->out, (uint8_t)c);
    if (w->depth > 0)
        w->depth--;
}

void jw_obj_open(struct jw *w) { open(w, '{'); }
void jw_obj_close(struct jw *w) { close_(w, '}'); }
void jw_arr_open(struct jw *w) { open(w, '['); }
void jw_arr_close(struct jw *w) { close_(w, ']'); }

static const char hex[] = "0123456789abcdef";

/* 1 for bytes that need escaping in a JSON string: control characters, '"' and '\\'. */
static const uint8_t needs_escape[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1, [0x07] = 1,
    [0x08] = 1, [0x09] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1,
    [0x10] = 1, [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1,
    [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1,
    ['"'] = 1, ['\\'] = 1,
};

/* Hot path of every consume response: copy runs of plain bytes with one reserve each. */
static void escape(struct sbuf *o, const uint8_t *s, size_t n)
{
    uint8_t *w = sbuf_reserve(o, n + 2);
    if (!w)
        return;
    *w++ = '"';
    size_t i = 0;
    for (;;) {
        size_t run = i;
        while (run < n && !needs_escape[s[run]])
            run++;
        memcpy(w, s + i, run - i);
        w += run - i;
        o->len = (size_t)(w - o->data);
        if (run == n)
            break;
        uint8_t c = s[run];
        i = run + 1;
        /* room for this escape (at most 6 bytes), the rest of the string and the quote */
        w = sbuf_reserve(o, 6 + (n - i) + 1);
        if (!w)
            return;
        switch (c) {
        case '"': *w++ = '\\'; *w++ = '"'; break;
        case '\\': *w++ = '\\'; *w++ = '\\'; break;
        case '\n': *w++ = '\\'; *w++ = 'n'; break;
        case '\r': *w++ = '\\'; *w++ = 'r'; break;
        case '\t': *w++ = '\\'; *w++ = 't'; break;
        default:
            memcpy(w, "\\u00", 4);
            w[4] = (uint8_t)hex[c >> 4];
            w[5] = (uint8_t)hex[c & 15];
            w += 6;
        }
    }
    *w++ = '"';
    o->len = (size_t)(w - o->data);
}

void jw_key(struct jw *w, const char *key)
{
    pre_value(w);
    size_t n = strlen(key);
    uint8_t *p = sbuf_reserve(w->out, n + 3);
    if (p) {
        /* literal keys (the only callers) never need escaping */
        p[0] = '"';
        memcpy(p + 1, key, n);
        p[n + 1] = '"';
        p[n + 2] = ':';
        w->out->len += n + 3;
    }
    w->need_comma[w->depth] = false; /* the value follows without a comma */
}

void jw_keyn(struct jw *w, const uint8_t *key, size_t n)
{
    pre_value(w);
    escape(w->out, key, n);
    sbuf_putc(w->out, ':');
    w->need_comma[w->depth] = false;
}

/* After a value inside an object, the next key needs a comma: values set need_comma. */
void jw_str(struct jw *w, const char *s) { jw_strn(w, (const uint8_t *)s, strlen(s)); }

void jw_strn(struct jw *w, const uint8_t *s, size_t n)
{
    pre_value(w);
    escape(w->out, s, n);
}

void jw_b64(struct jw *w, const uint8_t *s, size_t n)
{
    pre_value(w);
    sbuf_putc(w->out, '"');
    b64_encode(w->out, s, n);
    sbuf_putc(w->out, '"');
}

void jw_u64(struct jw *w, uint64_t v)
{
    pre_value(w);
    sbuf_put_u64(w->out, v);
}

void jw_i64(struct jw *w, int64_t v)
{
    pre_value(w);
    sbuf_put_i64(w->out, v);
}

void jw_bool(struct jw *w, bool v)
{
    pre_value(w);
    if (v)
        sbuf_append(w->out, "true", 4);
    else
        sbuf_append(w->out, "false", 5);
}

void jw_null(struct jw *w)
{
    pre_value(w);
    sbuf_append(w->out, "null", 4);
}

void jw_raw(struct jw *w, const char *json)
{
    pre_value(w);
    sbuf_puts(w->out, json);
}

void jw_rawn(struct jw *w, const uint8_t *json, size_t n)
{
    pre_value(w);
    sbuf_append(w->out, json, n);
}

bool utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}
