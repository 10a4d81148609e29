/* kv.c -- the KV area of the API: /kv/{ns} (list) and /kv/{ns}/{key} (get, meta, put, delete).
 *
 * Reads are answered on the worker from the KV state machine (kv.h); puts and deletes are journal
 * entries proposed through api_start_write and answered after they are applied, so CAS is atomic
 * by construction (docs/HTTP_API.md "KV store").
 */
#include "api/api_internal.h"

#include "base/clock.h"
#include "base/err.h"
#include "broker/entry.h"

#include <string.h>

static bool kv_names(struct rctx *x, const struct route_match *m, struct slice *ns, struct slice *key)
{
    *ns = route_param(m, "ns");
    *key = route_param(m, "key");
    int rc = kv_validate_ns(*ns);
    if (rc) {
        api_respond_error(x, rc, "Namespace must be 1..128 characters of [A-Za-z0-9._-]");
        return false;
    }
    if (key) {
        rc = kv_validate_key(*key);
        if (rc) {
            api_respond_error(x, rc, rc == ERR_TOO_LARGE ? "Keys are limited to 1024 bytes"
                                                     : "Keys must be 1..1024 bytes without NUL");
            return false;
        }
    }
    return true;
}

static void answer_kv(struct rctx *x, int phase)
{
    (void)phase;
    struct sbuf b;
    struct jw w;
    if (!api_answer_open(x, &b, &w))
        return;
    const struct apply_result *r = &x->prop.res;
    if (x->prop.type == ENTRY_KV_DEL) {
        jw_kbool(&w, "deleted", r->deleted);
        if (r->deleted)
            jw_ku64(&w, "cas", r->cas);
    } else {
        jw_ku64(&w, "cas", r->cas);
    }
    api_write_durability(&w, x, true);
    jw_ku64(&w, "batch_id", x->prop.index);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

static void h_kv_write(struct rctx *x, const struct route_match *m, bool del)
{
    struct slice ns, key;
    if (!kv_names(x, m, &ns, &key))
        return;
    struct entry_kv e = {0};
    e.ns = ns;
    e.key = key;
    e.expected = KV_EXPECT_ANY;
    uint64_t v;
    int rc = api_qparam_u64(x, "cas", 0, UINT64_MAX - 1, &v);
    if (rc < 0)
        return;
    if (rc)
        e.expected = v;
    x->commit_offset = e.expected; /* echoed as "expected" on a mismatch */
    if (!del) {
        rc = api_qparam_u64(x, "ttl_ms", 0, (uint64_t)INT64_MAX / 2, &e.ttl_ms);
        if (rc < 0)
            return;
        e.value = http_req_body(x->req);
        rc = kv_validate(x->api->kv, ns, key, e.value.len);
        if (rc) {
            api_respond_error(x, rc, rc == ERR_TOO_LARGE ? "KV values are limited to 1 MiB" : NULL);
            return;
        }
    }
    if (api_qparam_u64(x, "timeout_ms", 0, 600000, &x->timeout_ms) < 0)
        return;
    e.ts_ms = clock_wall_ms();
    sbuf_init(&x->prop.payload, 0);
    entry_kv_encode(&x->prop.payload, &e);
    api_start_write(x, del ? ENTRY_KV_DEL : ENTRY_KV_PUT, answer_kv);
}

static void h_kv_put(struct rctx *x, const struct route_match *m) { h_kv_write(x, m, false); }
static void h_kv_del(struct rctx *x, const struct route_match *m) { h_kv_write(x, m, true); }

static void h_kv_get(struct rctx *x, const struct route_match *m)
{
    struct slice ns, key;
    if (!kv_names(x, m, &ns, &key))
        return;
    bool meta = false;
    if (key.len > 5 && memcmp(key.ptr + key.len - 5, "/meta", 5) == 0) {
        meta = true;
        key.len -= 5;
    }
    int64_t now = clock_wall_ms();
    struct sbuf val, b;
    sbuf_init(&val, 0);
    sbuf_init(&b, 0);
    uint64_t cas = 0;
    int64_t exp = 0;
    int rc = kv_get(x->api->kv, ns, key, now, meta ? NULL : &val, &cas, &exp);
    if (rc) {
        sbuf_free(&val);
        api_respond_error(x, rc, rc == ERR_NOT_FOUND ? "Key does not exist (or has expired)" : NULL);
        return;
    }
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    if (!meta) {
        jw_key(&w, "value");
        jw_b64(&w, val.data, val.len);
    }
    jw_ku64(&w, "cas", cas);
    if (meta)
        jw_ki64(&w, "ttl_ms", exp ? (exp > now ? exp - now : 0) : 0);
    jw_obj_close(&w);
    sbuf_free(&val);
    api_respond_json(x, 200, &b);
}

struct kv_list_ctx {
    struct jw *w;
    int64_t now;
    struct slice last;
    struct arena *a;
};

static int kv_list_visit(void *ctx, struct slice key, uint64_t cas, int64_t exp, size_t vlen)
{
    struct kv_list_ctx *k = ctx;
    struct jw *w = k->w;
    jw_obj_open(w);
    api_write_bytes(w, "key", "key_b64", key, false);
    jw_ku64(w, "cas", cas);
    jw_ki64(w, "ttl_ms", exp ? (exp > k->now ? exp - k->now : 0) : 0);
    jw_ku64(w, "size", vlen);
    jw_obj_close(w);
    uint8_t *c = arena_alloc(k->a, key.len);
    if (c) {
        memcpy(c, key.ptr, key.len);
        k->last = slice_of(c, key.len);
    }
    return 0;
}

static void h_kv_list(struct rctx *x, const struct route_match *m)
{
    struct slice ns = route_param(m, "ns"), prefix = {NULL, 0}, after = {NULL, 0};
    int rc = kv_validate_ns(ns);
    if (rc) {
        api_respond_error(x, rc, "Namespace must be 1..128 characters of [A-Za-z0-9._-]");
        return;
    }
    if (api_qparam(x, "prefix", &prefix) < 0 || api_qparam(x, "after", &after) < 0) {
        api_respond_error(x, ERR_BAD_ESCAPE, NULL);
        return;
    }
    uint64_t limit = 100;
    if (api_qparam_u64(x, "limit", 1, 1000, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_key(&w, "keys");
    jw_arr_open(&w);
    struct kv_list_ctx k = {&w, clock_wall_ms(), {NULL, 0}, http_req_arena(x->req)};
    bool more = false;
    rc = kv_list(x->api->kv, ns, prefix, after, (size_t)limit, k.now, kv_list_visit, &k, &more);
    if (rc) {
        sbuf_free(&b);
        api_respond_error(x, rc, NULL);
        return;
    }
    jw_arr_close(&w);
    if (more && k.last.len) {
        /* the cursor for the next page: pass it back as ?after= (URL-encode it) */
        api_write_bytes(&w, "next_after", "next_after_b64", k.last, false);
    } else {
        jw_knull(&w, "next_after");
    }
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

const struct api_route api_kv_routes[] = {
    {"GET", "/kv/:ns", "kv_list", SCOPE_KV, API_READ, h_kv_list},
    {"GET", "/kv/:ns/*key", "kv_get", SCOPE_KV, API_READ, h_kv_get},
    {"POST", "/kv/:ns/*key", "kv_put", SCOPE_KV, API_WRITE, h_kv_put},
    {"PUT", "/kv/:ns/*key", "kv_put", SCOPE_KV, API_WRITE, h_kv_put},
    {"DELETE", "/kv/:ns/*key", "kv_delete", SCOPE_KV, API_WRITE, h_kv_del},
    API_ROUTES_END,
};
