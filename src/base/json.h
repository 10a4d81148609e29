/* json.h -- a small streaming JSON writer over struct sbuf.
 *
 * The writer tracks nesting so commas are inserted automatically; strings are escaped per
 * RFC 8259. Output is always valid JSON for any input bytes: json_str() requires valid UTF-8 and
 * escapes control characters; utf8_valid() lets callers decide to base64 a value instead.
 * Parsing of request bodies uses jansson (with a depth limit), not this module.
 */
#ifndef AYDER_BASE_JSON_H
#define AYDER_BASE_JSON_H

#include "base/buf.h"

#define JSON_DEPTH_MAX 32

struct jw {
    struct sbuf *out;
    int depth;
    bool need_comma[JSON_DEPTH_MAX];
};

void jw_init(struct jw *w, struct sbuf *out);
void jw_obj_open(struct jw *w);
void jw_obj_close(struct jw *w);
void jw_arr_open(struct jw *w);
void jw_arr_close(struct jw *w);
/* Object member key (must be followed by exactly one value). jw_key is for literal keys that
 * need no escaping; jw_keyn escapes (for keys that come from data). */
void jw_key(struct jw *w, const char *key);
void jw_keyn(struct jw *w, const uint8_t *key, size_t n);
void jw_str(struct jw *w, const char *s);
void jw_strn(struct jw *w, const uint8_t *s, size_t n); /* s must be valid UTF-8 */
void jw_b64(struct jw *w, const uint8_t *s, size_t n);  /* a JSON string of base64 */
void jw_u64(struct jw *w, uint64_t v);
void jw_i64(struct jw *w, int64_t v);
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);
void jw_raw(struct jw *w, const char *json); /* a pre-formed JSON value */
void jw_rawn(struct jw *w, const uint8_t *json, size_t n); /* the same, as a slice */

/* Shorthands for "key":value members. */
static inline void jw_kstr(struct jw *w, const char *k, const char *v) { jw_key(w, k); jw_str(w, v); }
static inline void jw_ku64(struct jw *w, const char *k, uint64_t v) { jw_key(w, k); jw_u64(w, v); }
static inline void jw_ki64(struct jw *w, const char *k, int64_t v) { jw_key(w, k); jw_i64(w, v); }
static inline void jw_kbool(struct jw *w, const char *k, bool v) { jw_key(w, k); jw_bool(w, v); }
static inline void jw_knull(struct jw *w, const char *k) { jw_key(w, k); jw_null(w); }

bool utf8_valid(const uint8_t *s, size_t n);

#endif
