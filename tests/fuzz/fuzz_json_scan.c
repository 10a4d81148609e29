/* fuzz_json_scan.c -- libFuzzer target for the JSON record scanner (stream/fmt/json.h), checked
 * against jansson.
 *
 * Checks, for any input:
 *  1. json_scan_validate accepts exactly what jansson (JSON_DECODE_ANY | JSON_ALLOW_NUL) accepts,
 *     except for the deliberate differences, which are skipped: integers beyond int64 and doubles
 *     beyond DBL_MAX (jansson rejects them, they are valid JSON to us) and nesting deeper than 64
 *     (our limit; jansson's is 2048), and \u0000 inside a member name (jansson refuses it even
 *     with JSON_ALLOW_NUL; RFC 8259 allows it and so do we). Input with a raw NUL byte must be invalid to us (jansson
 *     treats NUL as the end of input, so it is not asked).
 *  2. For a valid object, the values extracted at paths built from jansson's own tree (its first
 *     members, one level down, array element 0) equal jansson's values, and duplicate keys resolve
 *     to the last occurrence as in jansson.
 *  3. to_json returns the record's bytes and they are valid JSON.
 */
#include "base/arena.h"
#include "base/assert.h"
#include "base/err.h"
#include "stream/fmt/json.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static bool same_value(const struct sval *v, json_t *j, struct arena *a)
{
    if (!j)
        return v->type == SV_MISSING;
    switch (json_typeof(j)) {
    case JSON_NULL: return v->type == SV_NULL;
    case JSON_TRUE: return v->type == SV_BOOL && v->b;
    case JSON_FALSE: return v->type == SV_BOOL && !v->b;
    case JSON_INTEGER: return v->type == SV_INT && v->i == json_integer_value(j);
    case JSON_REAL: return v->type == SV_DOUBLE && v->d == json_real_value(j);
    case JSON_STRING: {
        if (v->type != SV_STR)
            return false;
        struct sval u = *v;
        if (sval_unescape(&u, a))
            return false;
        return u.len == json_string_length(j) && memcmp(u.p, json_string_value(j), u.len) == 0;
    }
    default: {
        if (v->type != SV_JSON)
            return false;
        json_error_t je;
        json_t *back = json_loadb(v->p, v->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        bool eq = back && json_equal(back, j);
        json_decref(back);
        return eq;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *why = NULL;
    int rc = json_scan_validate_err(data, size, &why);
    ASSERT(rc == 0 || rc == ERR_CORRUPT);
    ASSERT(json_scan_validate(data, size) == (rc == 0));
    /* A raw NUL byte is never valid JSON (not whitespace, and a control character inside a
     * string), but jansson stops reading at one and may accept the prefix: check ours alone. */
    if (memchr(data, 0, size)) {
        ASSERT(rc == ERR_CORRUPT);
        return 0;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j && (strstr(je.text, "too big") || strstr(je.text, "overflow") ||
               strstr(je.text, "NUL byte in object key")))
        return 0;
    if (rc != 0 && why && strstr(why, "too deep")) {
        json_decref(j);
        return 0;
    }
    ASSERT((rc == 0) == (j != NULL));
    struct sfmt *f;
    sfmt_json_new(&f);
    struct arena a;
    arena_init(&a, 1 << 20);
    if (j && json_is_object(j)) {
        struct spath paths[8];
        json_t *want[8];
        size_t n = 0;
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(j, k, klen, v)
        {
            if (n + 2 > 8)
                break;
            if (klen > SPATH_NAME_MAX)
                continue;
            paths[n].nseg = 1;
            paths[n].seg[0] = (struct spath_seg){k, (uint32_t)klen, -1};
            want[n++] = v;
            if (json_is_array(v)) {
                paths[n].nseg = 2;
                paths[n].seg[0] = (struct spath_seg){k, (uint32_t)klen, -1};
                paths[n].seg[1] = (struct spath_seg){NULL, 0, 0};
                want[n++] = json_array_get(v, 0);
            } else if (json_is_object(v) && json_object_size(v) > 0) {
                void *it = json_object_iter(v);
                const char *k2 = json_object_iter_key(it);
                size_t k2len = json_object_iter_key_len(it);
                if (k2len <= SPATH_NAME_MAX) {
                    paths[n].nseg = 2;
                    paths[n].seg[0] = (struct spath_seg){k, (uint32_t)klen, -1};
                    paths[n].seg[1] = (struct spath_seg){k2, (uint32_t)k2len, -1};
                    want[n++] = json_object_iter_value(json_object_iter(v));
                }
            }
        }
        struct sval out[8];
        int erc = f->ops->extract(f, slice_of(data, size), paths, n, out, &a, NULL);
        ASSERT(erc == 0);
        for (size_t i = 0; i < n; i++)
            ASSERT(same_value(&out[i], want[i], &a));
        struct sbuf b;
        sbuf_init(&b, 0);
        ASSERT(f->ops->to_json(f, slice_of(data, size), &b, &a, NULL) == 0);
        ASSERT(json_scan_validate(b.data, b.len));
        sbuf_free(&b);
    } else {
        struct spath p;
        ASSERT(spath_parse("a", 1, &p) == 0);
        struct sval out;
        int erc = f->ops->extract(f, slice_of(data, size), &p, 1, &out, &a, NULL);
        ASSERT(erc == (rc == 0 ? ERR_INVALID : ERR_CORRUPT));
    }
    arena_free(&a);
    json_decref(j);
    return 0;
}
