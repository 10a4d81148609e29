/* json.c -- see json.h. */
#include "base/json.h"
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

static void escape(struct sbuf *o, const uint8_t *s, size_t n)
{
    sbuf_putc(o, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sbuf_append(o, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': sbuf_append(o, "\\\"", 2); break;
        case '\\': sbuf_append(o, "\\\\", 2); break;
        case '\n': sbuf_append(o, "\\n", 2); break;
        case '\r': sbuf_append(o, "\\r", 2); break;
        case '\t': sbuf_append(o, "\\t", 2); break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sbuf_append(o, e, 6);
        }
        }
    }
    sbuf_append(o, s + run, n - run);
    sbuf_putc(o, '"');
}

void jw_key(struct jw *w, const char *key)
{
    pre_value(w);
    escape(w->out, (const uint8_t *)key, strlen(key));
    sbuf_putc(w->out, ':');
    w->need_comma[w->depth] = false; /* the value follows without a comma */
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
