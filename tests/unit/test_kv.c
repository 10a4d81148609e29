/* test_kv.c -- unit tests for the KV state machine (src/kv). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "harness.h"
#include "kv/kv.h"

#define S(lit) SLICE_LIT(lit)
#define NOW 1000000

static struct slice sl(const char *s) { return slice_cstr(s); }

static int put(struct kv *kv, const char *ns, const char *key, const char *val, uint64_t expected,
               uint64_t ttl_ms, int64_t now_ms, struct kv_result *res)
{
    return kv_apply_put(kv, sl(ns), sl(key), sl(val), expected, ttl_ms, now_ms, res);
}

/* Value of (ns, key) at now as a NUL-terminated copy in buf, or NULL if not found. */
static const char *get_str(struct kv *kv, const char *ns, const char *key, int64_t now_ms,
                           uint64_t *cas, char *buf, size_t cap)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    int rc = kv_get(kv, sl(ns), sl(key), now_ms, &b, cas, NULL);
    const char *out = NULL;
    if (rc == 0 && b.len < cap) {
        memcpy(buf, b.data, b.len);
        buf[b.len] = 0;
        out = buf;
    }
    sbuf_free(&b);
    return out;
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

TEST(kv_cas_chain)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    CHECK_EQ_INT(put(kv, "ns", "k", "v1", 0, 0, NOW, &r), 0);
    CHECK_EQ_INT(r.cas, 1);
    /* create-only again: mismatch, current = 1 */
    CHECK_EQ_INT(put(kv, "ns", "k", "v2", 0, 0, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 1);
    CHECK_EQ_INT(put(kv, "ns", "k", "v2", 1, 0, NOW, &r), 0);
    CHECK_EQ_INT(r.cas, 2);
    CHECK_EQ_INT(put(kv, "ns", "k", "v3", 1, 0, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 2);
    CHECK_EQ_INT(put(kv, "ns", "k", "v3", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(r.cas, 3);
    /* a version on an absent key: mismatch with current 0 */
    CHECK_EQ_INT(put(kv, "ns", "other", "x", 3, 0, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 0);
    /* a failed CAS changes nothing */
    char buf[16];
    uint64_t cas = 0;
    const char *v = get_str(kv, "ns", "k", NOW, &cas, buf, sizeof buf);
    REQUIRE(v);
    CHECK(strcmp(v, "v3") == 0);
    CHECK_EQ_INT(cas, 3);
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.revision, 3);
    CHECK_EQ_INT(st.puts_ok, 3);
    CHECK_EQ_INT(st.puts_cas_fail, 3);
    CHECK_EQ_INT(st.keys, 1);
    CHECK_EQ_INT(st.gets_hit, 1);
    /* the same key in another namespace is a different key */
    CHECK_EQ_INT(put(kv, "ns2", "k", "z", 0, 0, NOW, &r), 0);
    CHECK_EQ_INT(r.cas, 4);
    kv_free(kv);
}

TEST(kv_versions_grow_across_delete)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    CHECK_EQ_INT(put(kv, "ns", "k", "a", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(r.cas, 1);
    /* delete with a wrong version, and "only if absent" on a live key */
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), 7, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 1);
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), 0, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 1);
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), 1, NOW, &r), 0);
    CHECK(r.deleted);
    CHECK_EQ_INT(r.cas, 2);
    CHECK_EQ_INT(kv_get(kv, S("ns"), S("k"), NOW, NULL, NULL, NULL), ERR_NOT_FOUND);
    /* deleting an absent key: success, nothing deleted, revision unchanged */
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), KV_CAS_ANY, NOW, &r), 0);
    CHECK(!r.deleted);
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), 0, NOW, &r), 0);
    CHECK(!r.deleted);
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), 1, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 0);
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.revision, 2);
    CHECK_EQ_INT(st.keys, 0);
    CHECK_EQ_INT(st.bytes, 0);
    /* re-create: the version is above every earlier one */
    CHECK_EQ_INT(put(kv, "ns", "k", "b", 0, 0, NOW, &r), 0);
    CHECK_EQ_INT(r.cas, 3);
    uint64_t last = r.cas;
    for (int i = 0; i < 50; i++) {
        CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k"), last, NOW, &r), 0);
        CHECK(r.cas > last);
        last = r.cas;
        CHECK_EQ_INT(put(kv, "ns", "k", "c", 0, 0, NOW, &r), 0);
        CHECK(r.cas > last);
        last = r.cas;
    }
    kv_free(kv);
}

TEST(kv_ttl_boundary)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    CHECK_EQ_INT(put(kv, "ns", "t", "v", KV_CAS_ANY, 1000, 5000, &r), 0);
    uint64_t cas = 0;
    int64_t exp = 0;
    CHECK_EQ_INT(kv_get(kv, S("ns"), S("t"), 5999, NULL, &cas, &exp), 0);
    CHECK_EQ_INT(exp, 6000);
    CHECK_EQ_INT(cas, r.cas);
    size_t vlen = 99;
    CHECK_EQ_INT(kv_meta(kv, S("ns"), S("t"), 5999, NULL, NULL, &vlen), 0);
    CHECK_EQ_INT(vlen, 1);
    CHECK_EQ_INT(kv_get(kv, S("ns"), S("t"), 6000, NULL, NULL, NULL), ERR_NOT_FOUND);
    CHECK_EQ_INT(kv_meta(kv, S("ns"), S("t"), 6000, NULL, NULL, NULL), ERR_NOT_FOUND);
    /* a key without TTL never expires */
    CHECK_EQ_INT(put(kv, "ns", "p", "v", KV_CAS_ANY, 0, 5000, &r), 0);
    CHECK_EQ_INT(kv_get(kv, S("ns"), S("p"), INT64_MAX, NULL, NULL, &exp), 0);
    CHECK_EQ_INT(exp, 0);
    /* TTL overflow is refused, not wrapped */
    CHECK_EQ_INT(put(kv, "ns", "o", "v", KV_CAS_ANY, UINT64_MAX - 1, 5000, &r), ERR_BAD_PARAM);
    CHECK_EQ_INT(put(kv, "ns", "o", "v", KV_CAS_ANY, 1, -1, &r), ERR_BAD_PARAM);
    kv_free(kv);
}

TEST(kv_put_over_expired)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    CHECK_EQ_INT(put(kv, "ns", "k", "old", KV_CAS_ANY, 10, NOW, &r), 0);
    uint64_t old = r.cas;
    struct kv_stats st;
    kv_stats(kv, &st);
    uint64_t bytes_before = st.bytes;
    /* CAS with the expired key's version fails with current 0 */
    CHECK_EQ_INT(put(kv, "ns", "k", "new", old, 0, NOW + 10, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(r.current, 0);
    CHECK_EQ_INT(put(kv, "ns", "k", "new", 0, 0, NOW + 10, &r), 0);
    CHECK(r.cas > old);
    char buf[16];
    const char *v = get_str(kv, "ns", "k", NOW + 10, NULL, buf, sizeof buf);
    REQUIRE(v);
    CHECK(strcmp(v, "new") == 0);
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.keys, 1);
    CHECK_EQ_INT(st.bytes, bytes_before); /* same sizes: replaced in place */
    /* delete of an expired key: absent, frees memory, revision unchanged */
    CHECK_EQ_INT(put(kv, "ns", "e", "x", KV_CAS_ANY, 5, NOW, &r), 0);
    uint64_t rev = r.cas;
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("e"), KV_CAS_ANY, NOW + 5, &r), 0);
    CHECK(!r.deleted);
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.keys, 1);
    CHECK_EQ_INT(st.revision, rev);
    CHECK_EQ_INT(st.expired_removed, 1);
    kv_free(kv);
}

TEST(kv_limits)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    uint8_t *big = xcalloc(1, KV_VALUE_MAX + 1);
    REQUIRE(big);
    CHECK_EQ_INT(kv_apply_put(kv, S("ns"), S("big"), slice_of(big, KV_VALUE_MAX), KV_CAS_ANY, 0,
                              NOW, &r),
                 0);
    CHECK_EQ_INT(kv_apply_put(kv, S("ns"), S("big2"), slice_of(big, KV_VALUE_MAX + 1), KV_CAS_ANY,
                              0, NOW, &r),
                 ERR_TOO_LARGE);
    CHECK_EQ_INT(kv_validate(kv, S("ns"), S("big2"), KV_VALUE_MAX + 1), ERR_TOO_LARGE);
    CHECK_EQ_INT(kv_validate(kv, S("ns"), S("big2"), KV_VALUE_MAX), 0);
    struct sbuf b;
    sbuf_init(&b, 0);
    CHECK_EQ_INT(kv_get(kv, S("ns"), S("big"), NOW, &b, NULL, NULL), 0);
    CHECK_EQ_INT(b.len, KV_VALUE_MAX);
    sbuf_free(&b);
    xfree(big);
    kv_free(kv);

    /* total bytes: each entry is ns(2) + key(2) + value(100) + overhead */
    struct kv_limits l;
    kv_limits_default(&l);
    uint64_t per = 2 + 2 + 100 + KV_ENTRY_OVERHEAD;
    l.total_bytes_max = per * 3;
    kv = kv_new(&l);
    REQUIRE(kv);
    char val[101];
    memset(val, 'x', 100);
    val[100] = 0;
    CHECK_EQ_INT(put(kv, "ns", "k1", val, KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "k2", val, KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "k3", val, KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "k4", val, KV_CAS_ANY, 0, NOW, &r), ERR_NOSPACE);
    CHECK_EQ_INT(err_http_status(ERR_NOSPACE), 507);
    /* overwriting with the same size fits; growing does not */
    CHECK_EQ_INT(put(kv, "ns", "k3", val, KV_CAS_ANY, 0, NOW, &r), 0);
    char bigger[102];
    memset(bigger, 'y', 101);
    bigger[101] = 0;
    CHECK_EQ_INT(put(kv, "ns", "k3", bigger, KV_CAS_ANY, 0, NOW, &r), ERR_NOSPACE);
    /* freeing space lets the put through */
    CHECK_EQ_INT(kv_apply_delete(kv, S("ns"), S("k1"), KV_CAS_ANY, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "k4", val, KV_CAS_ANY, 0, NOW, &r), 0);
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.bytes, per * 3);
    CHECK_EQ_INT(st.puts_rejected, 2);
    kv_free(kv);

    /* key count */
    kv_limits_default(&l);
    l.keys_max = 2;
    kv = kv_new(&l);
    REQUIRE(kv);
    CHECK_EQ_INT(put(kv, "ns", "a", "", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "b", "", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "c", "", KV_CAS_ANY, 0, NOW, &r), ERR_NOSPACE);
    CHECK_EQ_INT(put(kv, "ns", "a", "1", KV_CAS_ANY, 0, NOW, &r), 0);
    kv_free(kv);
}

TEST(kv_names)
{
    char ns[KV_NS_MAX + 2], key[KV_KEY_MAX + 2];
    memset(ns, 'n', sizeof ns);
    memset(key, 'k', sizeof key);
    CHECK_EQ_INT(kv_validate_ns(slice_of(ns, KV_NS_MAX)), 0);
    CHECK_EQ_INT(kv_validate_ns(slice_of(ns, KV_NS_MAX + 1)), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_ns(S("")), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_ns(S("a/b")), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_ns(S("a b")), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_ns(S("a\0b")), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_ns(S("Az09._-")), 0);
    CHECK_EQ_INT(kv_validate_key(slice_of(key, KV_KEY_MAX)), 0);
    CHECK_EQ_INT(kv_validate_key(slice_of(key, KV_KEY_MAX + 1)), ERR_TOO_LARGE);
    CHECK_EQ_INT(kv_validate_key(S("")), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_key(S("a\0b")), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_validate_key(S("users/42/name")), 0);
    CHECK_EQ_INT(kv_validate_key(S("\xff\x01 ?#%")), 0);

    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    /* the apply re-checks */
    CHECK_EQ_INT(kv_apply_put(kv, S("a\0b"), S("k"), S("v"), KV_CAS_ANY, 0, NOW, &r), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_apply_put(kv, S("ns"), S("k\0"), S("v"), KV_CAS_ANY, 0, NOW, &r), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_apply_delete(kv, S(""), S("k"), KV_CAS_ANY, NOW, &r), ERR_BAD_NAME);
    CHECK_EQ_INT(kv_get(kv, S("a\0b"), S("k"), NOW, NULL, NULL, NULL), ERR_BAD_NAME);
    /* keys with '/' are exact keys, distinct from their neighbours */
    CHECK_EQ_INT(put(kv, "ns", "a/b", "1", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "a/b/", "2", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ns", "a", "3", KV_CAS_ANY, 0, NOW, &r), 0);
    char buf[8];
    const char *v = get_str(kv, "ns", "a/b", NOW, NULL, buf, sizeof buf);
    REQUIRE(v);
    CHECK(strcmp(v, "1") == 0);
    v = get_str(kv, "ns", "a/b/", NOW, NULL, buf, sizeof buf);
    REQUIRE(v);
    CHECK(strcmp(v, "2") == 0);
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.keys, 3);
    CHECK_EQ_INT(st.revision, 3);
    kv_free(kv);
}

TEST(kv_binary_values)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    uint8_t val[256];
    for (int i = 0; i < 256; i++)
        val[i] = (uint8_t)(255 - i);
    struct kv_result r;
    CHECK_EQ_INT(kv_apply_put(kv, S("bin"), S("\x01\x02\xff"), slice_of(val, sizeof val),
                              KV_CAS_ANY, 0, NOW, &r),
                 0);
    CHECK_EQ_INT(kv_apply_put(kv, S("bin"), S("empty"), slice_of(NULL, 0), KV_CAS_ANY, 0, NOW, &r),
                 0);
    struct sbuf b;
    sbuf_init(&b, 0);
    sbuf_append(&b, "pre", 3); /* kv_get appends */
    CHECK_EQ_INT(kv_get(kv, S("bin"), S("\x01\x02\xff"), NOW, &b, NULL, NULL), 0);
    REQUIRE(b.len == 3 + sizeof val);
    CHECK(memcmp(b.data, "pre", 3) == 0);
    CHECK(memcmp(b.data + 3, val, sizeof val) == 0);
    sbuf_reset(&b);
    CHECK_EQ_INT(kv_get(kv, S("bin"), S("empty"), NOW, &b, NULL, NULL), 0);
    CHECK_EQ_INT(b.len, 0);
    sbuf_free(&b);
    kv_free(kv);
}

struct collect {
    char keys[2048][32];
    uint64_t cas[2048];
    size_t n;
    size_t stop_after; /* 0 = never */
};

static int collect_fn(void *ctx, struct slice key, uint64_t cas, int64_t expires_at_ms,
                      size_t value_len)
{
    (void)expires_at_ms;
    (void)value_len;
    struct collect *c = ctx;
    if (c->n < 2048 && key.len < 32) {
        memcpy(c->keys[c->n], key.ptr, key.len);
        c->keys[c->n][key.len] = 0;
        c->cas[c->n] = cas;
    }
    c->n++;
    if (c->stop_after && c->n == c->stop_after)
        return 42;
    return 0;
}

TEST(kv_list_prefix)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    const char *keys[] = {"user/b", "user/a", "user/", "usera", "admin/x", "user/c/d", "user/t"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        CHECK_EQ_INT(put(kv, "ns", keys[i], "v", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "other", "user/z", "v", KV_CAS_ANY, 0, NOW, &r), 0);
    /* user/t expires before the listing's now */
    CHECK_EQ_INT(put(kv, "ns", "user/t", "v", KV_CAS_ANY, 5, NOW, &r), 0);

    static struct collect c;
    memset(&c, 0, sizeof c);
    bool more = true;
    CHECK_EQ_INT(kv_list(kv, S("ns"), S("user/"), S(""), 100, NOW + 5, collect_fn, &c, &more), 0);
    CHECK(!more);
    REQUIRE(c.n == 4);
    CHECK(strcmp(c.keys[0], "user/") == 0);
    CHECK(strcmp(c.keys[1], "user/a") == 0);
    CHECK(strcmp(c.keys[2], "user/b") == 0);
    CHECK(strcmp(c.keys[3], "user/c/d") == 0);
    /* before expiry user/t is listed; a limit sets more */
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(kv_list(kv, S("ns"), S("user/"), S(""), 4, NOW, collect_fn, &c, &more), 0);
    CHECK_EQ_INT(c.n, 4);
    CHECK(more);
    /* limit 0: nothing emitted, more says whether any exist */
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(kv_list(kv, S("ns"), S("zzz"), S(""), 0, NOW, collect_fn, &c, &more), 0);
    CHECK(!more);
    CHECK_EQ_INT(kv_list(kv, S("ns"), S(""), S(""), 0, NOW, collect_fn, &c, &more), 0);
    CHECK(more);
    CHECK_EQ_INT(c.n, 0);
    /* empty prefix lists the whole namespace in order */
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(kv_list(kv, S("ns"), S(""), S(""), 100, NOW, collect_fn, &c, &more), 0);
    REQUIRE(c.n == 7);
    CHECK(strcmp(c.keys[0], "admin/x") == 0);
    CHECK(strcmp(c.keys[6], "usera") == 0);
    /* a callback's nonzero return stops the listing and is returned */
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    CHECK_EQ_INT(kv_list(kv, S("ns"), S(""), S(""), 100, NOW, collect_fn, &c, &more), 42);
    CHECK_EQ_INT(c.n, 2);
    CHECK_EQ_INT(kv_list(kv, S("bad ns"), S(""), S(""), 1, NOW, collect_fn, &c, &more),
                 ERR_BAD_NAME);
    kv_free(kv);
}

TEST(kv_list_cursor_paging)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    enum { N = 1000 };
    uint64_t seed = 12345;
    for (int i = 0; i < N; i++) {
        char k[32];
        /* random-looking insertion order; distinct keys */
        snprintf(k, sizeof k, "k/%08llx/%d", (unsigned long long)(rng_next(&seed) & 0xffffffff), i);
        CHECK_EQ_INT(put(kv, "pg", k, "v", KV_CAS_ANY, 0, NOW, &r), 0);
        snprintf(k, sizeof k, "other/%d", i);
        CHECK_EQ_INT(put(kv, "pg", k, "v", KV_CAS_ANY, 0, NOW, &r), 0);
    }
    static struct collect all, page;
    memset(&all, 0, sizeof all);
    char cursor[32] = "";
    bool more = true;
    int pages = 0;
    while (more) {
        memset(&page, 0, sizeof page);
        CHECK_EQ_INT(kv_list(kv, S("pg"), S("k/"), sl(cursor), 7, NOW, collect_fn, &page, &more),
                     0);
        REQUIRE(page.n <= 7);
        REQUIRE(page.n > 0 || !more);
        for (size_t i = 0; i < page.n; i++) {
            REQUIRE(all.n < 2048);
            strcpy(all.keys[all.n++], page.keys[i]);
        }
        if (page.n)
            strcpy(cursor, page.keys[page.n - 1]);
        pages++;
        REQUIRE(pages < 1000);
    }
    REQUIRE(all.n == N);
    /* strictly increasing means each key exactly once */
    for (size_t i = 1; i < all.n; i++)
        CHECK(strcmp(all.keys[i - 1], all.keys[i]) < 0);
    for (size_t i = 0; i < all.n; i++)
        CHECK(strncmp(all.keys[i], "k/", 2) == 0);
    kv_free(kv);
}

#define EXPIRED_MAX 4096

/* What kv_collect_expired reported, in order (the first EXPIRED_MAX of them; n counts all). */
struct expired_list {
    char ns[EXPIRED_MAX][8];
    char key[EXPIRED_MAX][32];
    uint64_t cas[EXPIRED_MAX];
    size_t n;
};

static void expired_fn(void *ctx, struct slice ns, struct slice key, uint64_t cas)
{
    struct expired_list *e = ctx;
    if (e->n < EXPIRED_MAX && ns.len < 8 && key.len < 32) {
        memcpy(e->ns[e->n], ns.ptr, ns.len);
        e->ns[e->n][ns.len] = 0;
        memcpy(e->key[e->n], key.ptr, key.len);
        e->key[e->n][key.len] = 0;
        e->cas[e->n] = cas;
    }
    e->n++;
}

TEST(kv_collect_expired)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        /* every third key has a TTL of 10 ms */
        CHECK_EQ_INT(put(kv, "ex", k, "v", KV_CAS_ANY, i % 3 == 0 ? 10 : 0, NOW, &r), 0);
    }
    struct kv_stats st;
    kv_stats(kv, &st);
    uint64_t rev = st.revision;
    static struct expired_list e;
    memset(&e, 0, sizeof e);
    CHECK_EQ_INT(kv_collect_expired(kv, NOW + 9, 100, expired_fn, &e), 0);
    /* bounded by max; reporting removes nothing, so the next call reports the same keys */
    CHECK_EQ_INT(kv_collect_expired(kv, NOW + 10, 10, expired_fn, &e), 10);
    CHECK_EQ_INT(kv_collect_expired(kv, NOW + 10, 10, expired_fn, &e), 10);
    REQUIRE(e.n == 20);
    for (size_t i = 0; i < 10; i++) {
        CHECK(strcmp(e.key[i], e.key[10 + i]) == 0);
        CHECK_EQ_INT(e.cas[i], e.cas[10 + i]);
    }
    memset(&e, 0, sizeof e);
    CHECK_EQ_INT(kv_collect_expired(kv, NOW + 10, 1000, expired_fn, &e), 34);
    REQUIRE(e.n == 34);
    /* a stale cas (key rewritten meanwhile) is a no-op */
    CHECK_EQ_INT(put(kv, "ex", e.key[0], "new", KV_CAS_ANY, 0, NOW + 10, &r), 0);
    rev = r.cas;
    CHECK_EQ_INT(kv_apply_expire(kv, sl(e.ns[0]), sl(e.key[0]), e.cas[0], NOW + 10, &r), 0);
    CHECK(!r.deleted);
    CHECK_EQ_INT(kv_get(kv, S("ex"), sl(e.key[0]), NOW + 10, NULL, NULL, NULL), 0);
    /* an entry whose own clock says "not yet expired" is a no-op */
    CHECK_EQ_INT(kv_apply_expire(kv, sl(e.ns[1]), sl(e.key[1]), e.cas[1], NOW + 9, &r), 0);
    CHECK(!r.deleted);
    kv_stats(kv, &st);
    uint64_t bytes = st.bytes;
    for (size_t i = 1; i < e.n; i++) {
        CHECK_EQ_INT(kv_apply_expire(kv, sl(e.ns[i]), sl(e.key[i]), e.cas[i], NOW + 10, &r), 0);
        CHECK(r.deleted);
        bytes -= 2 + strlen(e.key[i]) + 1 + KV_ENTRY_OVERHEAD;
    }
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.keys, 100 - 33);
    CHECK_EQ_INT(st.revision, rev); /* expiry never takes a version */
    CHECK_EQ_INT(st.expired_removed, 33);
    CHECK_EQ_INT(st.bytes, bytes);
    memset(&e, 0, sizeof e);
    CHECK_EQ_INT(kv_collect_expired(kv, INT64_MAX, 1000, expired_fn, &e), 0);
    kv_free(kv);
}

/* Put a reproducible mix of keys, deletes and TTLs into kv. */
static void fill_mixed(struct kv *kv, int n)
{
    struct kv_result r;
    for (int i = 0; i < n; i++) {
        char k[32], v[64];
        snprintf(k, sizeof k, "key/%d", i);
        int vn = snprintf(v, sizeof v, "value-%d-%c", i * 7, (char)(i & 0x7f));
        const char *ns = i % 4 == 0 ? "alpha" : i % 4 == 1 ? "beta" : "gamma";
        kv_apply_put(kv, sl(ns), sl(k), slice_of(v, (size_t)vn), KV_CAS_ANY,
                     i % 5 == 0 ? (uint64_t)(1000 + i) : 0, NOW, &r);
        if (i % 7 == 0)
            kv_apply_delete(kv, sl(ns), sl(k), KV_CAS_ANY, NOW, &r);
    }
}

static size_t collect(struct kv *kv, int64_t now_ms, size_t max, struct expired_list *e)
{
    memset(e, 0, sizeof *e);
    return kv_collect_expired(kv, now_ms, max, expired_fn, e);
}

static bool same_expired(const struct expired_list *a, const struct expired_list *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n && i < EXPIRED_MAX; i++)
        if (strcmp(a->ns[i], b->ns[i]) || strcmp(a->key[i], b->key[i]) || a->cas[i] != b->cas[i])
            return false;
    return true;
}

/* Key i of the order tests expires at NOW + order_ttl(i): 1..100, each value taken by exactly
 * three of 300 consecutive i (19 is coprime to 100), so ties are common. */
static uint64_t order_ttl(int i) { return 1 + (uint64_t)(i * 19) % 100; }

TEST(kv_expiry_order_and_max)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    static struct expired_list e, first;
    struct kv_result r;
    /* keys without a TTL are never reported */
    CHECK_EQ_INT(put(kv, "ex", "plain", "v", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(collect(kv, INT64_MAX, 1000, &e), 0);
    enum { N = 300 };
    uint64_t cas[N];
    for (int i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ_INT(put(kv, "ex", k, "v", KV_CAS_ANY, order_ttl(i), NOW, &r), 0);
        cas[i] = r.cas;
    }
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, NOW, 1000, &e), 0);
    CHECK_EQ_INT(collect(kv, NOW + 50, 0, &e), 0);
    /* at NOW + 50 exactly the 150 keys with ttl <= 50, by expiry, ties by the lower cas */
    CHECK_EQ_INT(collect(kv, NOW + 50, 1000, &first), 150);
    REQUIRE(first.n == 150);
    uint64_t last_ttl = 0, last_cas = 0;
    for (size_t j = 0; j < first.n; j++) {
        int i = atoi(first.key[j] + 1);
        REQUIRE(i >= 0 && i < N);
        CHECK(strcmp(first.ns[j], "ex") == 0);
        CHECK_EQ_INT(first.cas[j], cas[i]);
        CHECK(order_ttl(i) <= 50);
        /* strictly increasing (expiry, cas): each key once, in order */
        CHECK(order_ttl(i) > last_ttl || (order_ttl(i) == last_ttl && first.cas[j] > last_cas));
        last_ttl = order_ttl(i);
        last_cas = first.cas[j];
    }
    /* max keeps the earliest: each bound gives a prefix of the full order */
    size_t bounds[] = {1, 2, 3, 10, 149, 150};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        CHECK_EQ_INT(collect(kv, NOW + 50, bounds[b], &e), bounds[b]);
        for (size_t j = 0; j < e.n; j++) {
            CHECK(strcmp(e.key[j], first.key[j]) == 0);
            CHECK_EQ_INT(e.cas[j], first.cas[j]);
        }
    }
    CHECK_EQ_INT(collect(kv, NOW + 100, 1000, &e), N);
    CHECK_EQ_INT(collect(kv, NOW + 100, N - 1, &e), N - 1);
    kv_free(kv);
}

TEST(kv_expired_reported_until_applied)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    static struct expired_list a, b;
    struct kv_result r;
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ_INT(put(kv, "ex", k, "v", KV_CAS_ANY, 10 + (uint64_t)i % 5, NOW, &r), 0);
    }
    /* a leader that lost office before applying its expires: the next call reports them again */
    CHECK_EQ_INT(collect(kv, NOW + 20, 20, &a), 20);
    CHECK_EQ_INT(collect(kv, NOW + 20, 20, &b), 20);
    CHECK(same_expired(&a, &b));
    for (size_t i = 0; i < a.n; i++) {
        CHECK_EQ_INT(kv_apply_expire(kv, sl(a.ns[i]), sl(a.key[i]), a.cas[i], NOW + 20, &r), 0);
        CHECK(r.deleted);
        CHECK_EQ_INT(kv_check_invariants(kv), 0);
    }
    /* the applied ones are gone; the other 30 are reported */
    CHECK_EQ_INT(collect(kv, NOW + 20, 1000, &b), 30);
    for (size_t i = 0; i < b.n; i++)
        for (size_t j = 0; j < a.n; j++)
            CHECK(strcmp(b.key[i], a.key[j]) != 0);
    /* a stale expire (wrong version) removes nothing: the key is still reported */
    CHECK_EQ_INT(kv_apply_expire(kv, sl(b.ns[0]), sl(b.key[0]), b.cas[0] + 1000, NOW + 20, &r), 0);
    CHECK(!r.deleted);
    CHECK_EQ_INT(collect(kv, NOW + 20, 1, &a), 1);
    CHECK(strcmp(a.key[0], b.key[0]) == 0);
    /* a delete that finds the key expired frees it too */
    CHECK_EQ_INT(kv_apply_delete(kv, sl(b.ns[0]), sl(b.key[0]), KV_CAS_ANY, NOW + 20, &r), 0);
    CHECK(!r.deleted);
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, NOW + 20, 1000, &a), 29);
    for (size_t i = 0; i < a.n; i++)
        CHECK_EQ_INT(kv_apply_expire(kv, sl(a.ns[i]), sl(a.key[i]), a.cas[i], NOW + 20, &r), 0);
    CHECK_EQ_INT(collect(kv, INT64_MAX, 1000, &a), 0);
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.keys, 0);
    CHECK_EQ_INT(st.expired_removed, 50);
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    kv_free(kv);
}

TEST(kv_ttl_rewrites)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    static struct expired_list e;
    struct kv_result r;
    CHECK_EQ_INT(put(kv, "ex", "a", "v", KV_CAS_ANY, 10, NOW, &r), 0);
    CHECK_EQ_INT(put(kv, "ex", "b", "v", KV_CAS_ANY, 20, NOW, &r), 0);
    uint64_t b_cas = r.cas;
    CHECK_EQ_INT(put(kv, "ex", "c", "v", KV_CAS_ANY, 0, NOW, &r), 0);
    /* a re-put without a TTL takes the key out of the index */
    CHECK_EQ_INT(put(kv, "ex", "a", "v", KV_CAS_ANY, 0, NOW, &r), 0);
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, INT64_MAX, 1000, &e), 1);
    CHECK(strcmp(e.key[0], "b") == 0);
    CHECK_EQ_INT(e.cas[0], b_cas);
    /* a re-put with a TTL puts a key without one in */
    CHECK_EQ_INT(put(kv, "ex", "c", "v", KV_CAS_ANY, 5, NOW, &r), 0);
    uint64_t c_cas = r.cas;
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, NOW + 5, 1000, &e), 1);
    CHECK(strcmp(e.key[0], "c") == 0);
    CHECK_EQ_INT(e.cas[0], c_cas);
    CHECK_EQ_INT(collect(kv, NOW + 20, 1000, &e), 2);
    CHECK(strcmp(e.key[0], "c") == 0 && strcmp(e.key[1], "b") == 0);
    /* a changed TTL moves the key: later, then earlier */
    CHECK_EQ_INT(put(kv, "ex", "c", "v", KV_CAS_ANY, 30, NOW, &r), 0);
    c_cas = r.cas;
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, NOW + 29, 1000, &e), 1);
    CHECK(strcmp(e.key[0], "b") == 0);
    CHECK_EQ_INT(collect(kv, NOW + 30, 1000, &e), 2);
    CHECK(strcmp(e.key[0], "b") == 0 && strcmp(e.key[1], "c") == 0);
    CHECK_EQ_INT(e.cas[1], c_cas);
    CHECK_EQ_INT(put(kv, "ex", "c", "v", KV_CAS_ANY, 1, NOW, &r), 0);
    c_cas = r.cas;
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, NOW + 30, 1000, &e), 2);
    CHECK(strcmp(e.key[0], "c") == 0 && strcmp(e.key[1], "b") == 0);
    CHECK_EQ_INT(e.cas[0], c_cas);
    /* a put refused by CAS changes nothing */
    CHECK_EQ_INT(put(kv, "ex", "b", "v", b_cas + 100, 0, NOW, &r), ERR_CAS_MISMATCH);
    CHECK_EQ_INT(collect(kv, NOW + 30, 1000, &e), 2);
    /* a delete takes the key out */
    CHECK_EQ_INT(kv_apply_delete(kv, S("ex"), S("c"), KV_CAS_ANY, NOW, &r), 0);
    CHECK(r.deleted);
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, INT64_MAX, 1000, &e), 1);
    CHECK(strcmp(e.key[0], "b") == 0);
    /* a growing value reallocates the entry: the index must follow the new allocation (a stale
     * pointer would report the old version, or be a use-after-free under ASan) */
    static char big[8192];
    for (int round = 1; round <= 8; round++) {
        memset(big, 'a' + round, (size_t)round * 1000);
        big[round * 1000] = 0;
        CHECK_EQ_INT(put(kv, "ex", "b", big, KV_CAS_ANY, 20, NOW, &r), 0);
        CHECK_EQ_INT(kv_check_invariants(kv), 0);
        CHECK_EQ_INT(collect(kv, NOW + 20, 1000, &e), 1);
        CHECK(strcmp(e.ns[0], "ex") == 0 && strcmp(e.key[0], "b") == 0);
        CHECK_EQ_INT(e.cas[0], r.cas);
    }
    kv_free(kv);
}

TEST(kv_ttl_snapshot_restore)
{
    struct kv *a = kv_new(NULL), *b = kv_new(NULL);
    REQUIRE(a && b);
    fill_mixed(a, 3000);
    struct kv_result r;
    CHECK_EQ_INT(put(a, "gamma", "short", "x", KV_CAS_ANY, 1, NOW, &r), 0);
    struct sbuf s;
    sbuf_init(&s, 0);
    CHECK_EQ_INT(kv_snapshot_write(a, &s), 0);
    static struct expired_list ea, eb;
    int64_t times[] = {NOW, NOW + 1, NOW + 1500, NOW + 2500, NOW + 4000};
    for (int pass = 0; pass < 2; pass++) {
        CHECK_EQ_INT(kv_snapshot_read(b, slice_of(s.data, s.len)), 0);
        CHECK_EQ_INT(kv_check_invariants(b), 0);
        for (size_t t = 0; t < sizeof times / sizeof times[0]; t++) {
            size_t na = collect(a, times[t], 1000, &ea);
            CHECK_EQ_INT(collect(b, times[t], 1000, &eb), na);
            CHECK(same_expired(&ea, &eb));
        }
        /* every TTL of fill_mixed (i % 5 == 0, not deleted: i % 7 != 0) has passed, and "short" */
        CHECK_EQ_INT(collect(b, NOW + 4000, 1000, &eb), 600 - 86 + 1);
        /* kv_reset empties the index too, and the next restore fills it again */
        kv_reset(b);
        CHECK_EQ_INT(kv_check_invariants(b), 0);
        CHECK_EQ_INT(collect(b, INT64_MAX, 1000, &eb), 0);
    }
    sbuf_free(&s);
    kv_free(a);
    kv_free(b);
}

TEST(kv_ttl_table_growth)
{
    /* Many TTL keys across several table doublings, with deletes shifting entries between
     * slots: the index holds pointers, so neither may disturb it. */
    enum { N = 20000 };
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    static struct expired_list e;
    struct kv_result r;
    size_t due = 0; /* keys with a TTL, not deleted, expired at NOW + 2500 */
    for (int i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        uint64_t ttl = i % 2 ? 1 + (uint64_t)(i * 31) % 5000 : 0;
        CHECK_EQ_INT(put(kv, "g", k, "v", KV_CAS_ANY, ttl, NOW, &r), 0);
        if (i % 5 == 0)
            CHECK_EQ_INT(kv_apply_delete(kv, S("g"), sl(k), KV_CAS_ANY, NOW, &r), 0);
        else if (ttl && ttl <= 2500)
            due++;
        if (i % 2500 == 0)
            CHECK_EQ_INT(kv_check_invariants(kv), 0);
    }
    CHECK_EQ_INT(kv_check_invariants(kv), 0);
    CHECK_EQ_INT(collect(kv, NOW + 2500, N, &e), due);
    uint64_t last = 0;
    for (size_t j = 0; j < e.n && j < EXPIRED_MAX; j++) {
        int i = atoi(e.key[j] + 1);
        uint64_t ttl = 1 + (uint64_t)(i * 31) % 5000;
        CHECK(i % 2 == 1 && i % 5 != 0 && ttl <= 2500 && ttl >= last);
        last = ttl;
    }
    kv_free(kv);
}

/* Put under countdown fault injection: fail the 1st, 2nd, ... allocation until it succeeds;
 * each failure must be ERR_NOMEM and leave the store as it was (counts, bytes, revision, index).
 * Returns how many allocations the put made (the number of failures). */
static long put_under_alloc_failures(struct kv *kv, const char *key, size_t value_len,
                                     uint64_t ttl_ms)
{
    static char value[4096];
    static struct expired_list before, after;
    memset(value, 'v', value_len);
    value[value_len] = 0;
    struct kv_stats s0, s1;
    kv_stats(kv, &s0);
    collect(kv, INT64_MAX, EXPIRED_MAX, &before);
    for (long k = 1; k < 10; k++) {
        struct kv_result r;
        alloc_fail_after(k);
        int rc = put(kv, "f", key, value, KV_CAS_ANY, ttl_ms, NOW, &r);
        alloc_fail_after(0);
        CHECK_EQ_INT(kv_check_invariants(kv), 0);
        if (rc == 0)
            return k - 1;
        CHECK_EQ_INT(rc, ERR_NOMEM);
        kv_stats(kv, &s1);
        CHECK(s1.keys == s0.keys && s1.bytes == s0.bytes && s1.revision == s0.revision);
        collect(kv, INT64_MAX, EXPIRED_MAX, &after);
        CHECK(same_expired(&before, &after));
    }
    CHECK(!"put never succeeded");
    return -1;
}

TEST(kv_ttl_alloc_failure)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    /* Allocations per put (the table never grows here): the entry, plus the index when it must
     * grow. The first TTL key allocates the index. */
    CHECK_EQ_INT(put_under_alloc_failures(kv, "first", 1, 10), 2);
    CHECK_EQ_INT(put(kv, "f", "plain", "v", KV_CAS_ANY, 0, NOW, &r), 0);
    for (int i = 1; i < 127; i++) {
        char k[16];
        snprintf(k, sizeof k, "t%d", i);
        CHECK_EQ_INT(put(kv, "f", k, "v", KV_CAS_ANY, (uint64_t)i, NOW, &r), 0);
        /* the index is full at 64, then at 128 keys with a TTL (it starts at 64 and doubles): a
         * new TTL key, and a TTL added to a key without one, must grow it */
        if (i == 63)
            CHECK_EQ_INT(put_under_alloc_failures(kv, "new", 1, 3), 2);
    }
    CHECK_EQ_INT(put_under_alloc_failures(kv, "plain", 1, 7), 2);
    /* re-keying and growing a TTL key, and dropping a TTL, need no index room */
    CHECK_EQ_INT(put_under_alloc_failures(kv, "t5", 3000, 100), 1);
    CHECK_EQ_INT(put_under_alloc_failures(kv, "t6", 1, 0), 1);
    CHECK_EQ_INT(put_under_alloc_failures(kv, "t7", 1, 0), 1);
    CHECK_EQ_INT(put_under_alloc_failures(kv, "t7", 1, 50), 1); /* room left by t6 and t7 */
    /* a restore that fails part-way leaves an empty store and an empty index */
    struct sbuf s;
    sbuf_init(&s, 0);
    REQUIRE(kv_snapshot_write(kv, &s) == 0);
    int rc = ERR_NOMEM;
    for (long k = 1; k < 200 && rc != 0; k++) {
        struct kv *b = kv_new(NULL);
        REQUIRE(b);
        alloc_fail_after(k);
        rc = kv_snapshot_read(b, slice_of(s.data, s.len));
        alloc_fail_after(0);
        CHECK(rc == 0 || rc == ERR_NOMEM);
        CHECK_EQ_INT(kv_check_invariants(b), 0);
        kv_free(b);
    }
    CHECK_EQ_INT(rc, 0);
    sbuf_free(&s);
    /* collect reports nothing if its scratch array cannot be allocated; the next call does */
    static struct expired_list e;
    alloc_fail_after(1);
    CHECK_EQ_INT(collect(kv, INT64_MAX, 1000, &e), 0);
    alloc_fail_after(0);
    CHECK_EQ_INT(collect(kv, INT64_MAX, 1000, &e), 128);
    kv_free(kv);
}

TEST(kv_ttl_model_random_ops)
{
    /* Random puts (with and without TTL, some conditional), deletes, expires of collected keys,
     * snapshot round trips and clock steps over a small key space, against a plain array model:
     * after every op the invariants hold, and every collect equals a brute-force scan of the
     * model (expired keys by (expires_at, cas), the first max of them). */
    enum { KEYS = 200, OPS = 5000 };
    static struct {
        bool present; /* in memory, expired or not */
        uint64_t cas;
        int64_t expires_at_ms;
    } m[KEYS];
    memset(m, 0, sizeof m);
    static struct expired_list got;
    static int want[KEYS];
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    uint64_t seed = 0x5eed0fe1ull, rev = 0;
    int64_t now = NOW;
    for (int op = 0; op < OPS && harness_current_failed() == 0; op++) {
        uint64_t x = rng_next(&seed);
        int k = (int)(x % KEYS);
        char key[16];
        snprintf(key, sizeof key, "r%d", k);
        bool live = m[k].present && (m[k].expires_at_ms == 0 || now < m[k].expires_at_ms);
        struct kv_result r;
        switch ((x >> 16) % 10) {
        case 0:
        case 1:
        case 2:
        case 3: { /* put: half with a TTL (often equal expiries), some create-only */
            uint64_t ttl = (x >> 24) % 2 ? 1 + (x >> 28) % 40 : 0;
            uint64_t expected = (x >> 40) % 4 == 0 ? 0 : KV_CAS_ANY;
            int rc = kv_apply_put(kv, S("m"), sl(key), slice_of(&x, (x >> 44) % 8), expected, ttl,
                                  now, &r);
            if (expected == 0 && live) {
                CHECK_EQ_INT(rc, ERR_CAS_MISMATCH);
            } else {
                CHECK_EQ_INT(rc, 0);
                CHECK_EQ_INT(r.cas, ++rev);
                m[k].present = true;
                m[k].cas = r.cas;
                m[k].expires_at_ms = ttl ? now + (int64_t)ttl : 0;
            }
            break;
        }
        case 4: { /* delete */
            CHECK_EQ_INT(kv_apply_delete(kv, S("m"), sl(key), KV_CAS_ANY, now, &r), 0);
            CHECK(r.deleted == live);
            if (live)
                CHECK_EQ_INT(r.cas, ++rev);
            m[k].present = false;
            break;
        }
        case 5:
        case 6:
        case 7: { /* collect, compare with the model, expire some of what was reported */
            size_t max = 1 + (x >> 24) % 12, n = 0;
            for (int i = 0; i < KEYS; i++)
                if (m[i].present && m[i].expires_at_ms != 0 && now >= m[i].expires_at_ms)
                    want[n++] = i;
            for (size_t i = 1; i < n; i++) /* insertion sort by (expires_at, cas) */
                for (size_t j = i; j > 0; j--) {
                    int p = want[j - 1], q = want[j];
                    if (m[p].expires_at_ms < m[q].expires_at_ms ||
                        (m[p].expires_at_ms == m[q].expires_at_ms && m[p].cas < m[q].cas))
                        break;
                    want[j - 1] = q;
                    want[j] = p;
                }
            size_t expect = n < max ? n : max;
            CHECK_EQ_INT(collect(kv, now, max, &got), expect);
            for (size_t i = 0; i < got.n && i < expect; i++) {
                char wk[16];
                snprintf(wk, sizeof wk, "r%d", want[i]);
                CHECK(strcmp(got.key[i], wk) == 0);
                CHECK_EQ_INT(got.cas[i], m[want[i]].cas);
            }
            for (size_t i = 0; i < got.n; i++) {
                if ((x >> (32 + i % 32)) & 1)
                    continue;
                int j = atoi(got.key[i] + 1);
                /* sometimes with a stale version: then nothing happens */
                uint64_t cas = (x >> 20) % 7 == 0 ? got.cas[i] + 1 : got.cas[i];
                CHECK_EQ_INT(kv_apply_expire(kv, S("m"), sl(got.key[i]), cas, now, &r), 0);
                CHECK(r.deleted == (cas == m[j].cas));
                if (r.deleted)
                    m[j].present = false;
                CHECK_EQ_INT(kv_check_invariants(kv), 0);
            }
            break;
        }
        case 8: /* the clock moves on */
            now += (int64_t)((x >> 24) % 15);
            break;
        default: { /* a replica restores this state from a snapshot and takes over */
            if ((x >> 24) % 8)
                break;
            struct sbuf s;
            sbuf_init(&s, 0);
            CHECK_EQ_INT(kv_snapshot_write(kv, &s), 0);
            struct kv *b = kv_new(NULL);
            REQUIRE(b);
            CHECK_EQ_INT(kv_snapshot_read(b, slice_of(s.data, s.len)), 0);
            sbuf_free(&s);
            kv_free(kv);
            kv = b;
            break;
        }
        }
        CHECK_EQ_INT(kv_check_invariants(kv), 0);
    }
    size_t present = 0;
    for (int i = 0; i < KEYS; i++)
        present += m[i].present;
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK_EQ_INT(st.keys, present);
    CHECK_EQ_INT(st.revision, rev);
    kv_free(kv);
}

TEST(kv_snapshot_roundtrip)
{
    struct kv *a = kv_new(NULL), *b = kv_new(NULL);
    REQUIRE(a && b);
    fill_mixed(a, 3000);
    struct kv_result r;
    /* an expired-but-unswept entry is kept in the snapshot */
    CHECK_EQ_INT(put(a, "gamma", "short", "x", KV_CAS_ANY, 1, NOW, &r), 0);
    struct sbuf s1, s2;
    sbuf_init(&s1, 0);
    sbuf_init(&s2, 0);
    CHECK_EQ_INT(kv_snapshot_write(a, &s1), 0);
    CHECK_EQ_INT(kv_snapshot_read(b, slice_of(s1.data, s1.len)), 0);
    struct kv_stats sa, sb;
    kv_stats(a, &sa);
    kv_stats(b, &sb);
    CHECK_EQ_INT(sa.keys, sb.keys);
    CHECK_EQ_INT(sa.bytes, sb.bytes);
    CHECK_EQ_INT(sa.revision, sb.revision);
    /* same gets */
    for (int i = 0; i < 3000; i++) {
        char k[32];
        snprintf(k, sizeof k, "key/%d", i);
        const char *ns = i % 4 == 0 ? "alpha" : i % 4 == 1 ? "beta" : "gamma";
        struct sbuf va, vb;
        sbuf_init(&va, 0);
        sbuf_init(&vb, 0);
        uint64_t ca = 0, cb = 0;
        int64_t ea = 0, eb = 0;
        int ra = kv_get(a, sl(ns), sl(k), NOW + 2000, &va, &ca, &ea);
        int rb = kv_get(b, sl(ns), sl(k), NOW + 2000, &vb, &cb, &eb);
        CHECK_EQ_INT(ra, rb);
        CHECK_EQ_INT(ca, cb);
        CHECK_EQ_INT(ea, eb);
        CHECK(va.len == vb.len && (va.len == 0 || memcmp(va.data, vb.data, va.len) == 0));
        sbuf_free(&va);
        sbuf_free(&vb);
    }
    /* the restored state serializes to the same bytes (canonical order) */
    CHECK_EQ_INT(kv_snapshot_write(b, &s2), 0);
    CHECK(s1.len == s2.len && memcmp(s1.data, s2.data, s1.len) == 0);
    /* the same next versions */
    struct kv_result ra, rb;
    CHECK_EQ_INT(put(a, "alpha", "next", "n", KV_CAS_ANY, 0, NOW, &ra), 0);
    CHECK_EQ_INT(put(b, "alpha", "next", "n", KV_CAS_ANY, 0, NOW, &rb), 0);
    CHECK_EQ_INT(ra.cas, rb.cas);
    CHECK_EQ_INT(ra.cas, sa.revision + 1);
    /* the expired entry came back and is still expirable */
    CHECK_EQ_INT(kv_apply_expire(b, S("gamma"), S("short"), sa.revision, NOW + 1, &rb), 0);
    CHECK(rb.deleted);
    /* restore needs an empty store */
    CHECK_EQ_INT(kv_snapshot_read(a, slice_of(s1.data, s1.len)), ERR_INVALID);
    /* empty store round-trips too */
    struct kv *c = kv_new(NULL), *d = kv_new(NULL);
    REQUIRE(c && d);
    sbuf_reset(&s2);
    CHECK_EQ_INT(kv_snapshot_write(c, &s2), 0);
    CHECK_EQ_INT(kv_snapshot_read(d, slice_of(s2.data, s2.len)), 0);
    kv_free(c);
    kv_free(d);
    sbuf_free(&s1);
    sbuf_free(&s2);
    kv_free(a);
    kv_free(b);
}

static bool kv_is_empty(struct kv *kv)
{
    struct kv_stats st;
    kv_stats(kv, &st);
    return st.keys == 0 && st.bytes == 0 && st.revision == 0 && kv_check_invariants(kv) == 0;
}

/* Re-seal a crafted snapshot body with a valid CRC. */
static void reseal(struct sbuf *s)
{
    s->len -= 4;
    sbuf_put_le32(s, crc32c(0, s->data, s->len));
}

TEST(kv_snapshot_corrupt)
{
    struct kv *a = kv_new(NULL);
    REQUIRE(a);
    fill_mixed(a, 50);
    struct sbuf s;
    sbuf_init(&s, 0);
    REQUIRE(kv_snapshot_write(a, &s) == 0);
    /* every single-byte flip is caught */
    for (size_t i = 0; i < s.len; i++) {
        struct kv *b = kv_new(NULL);
        REQUIRE(b);
        s.data[i] ^= 0x40;
        CHECK_EQ_INT(kv_snapshot_read(b, slice_of(s.data, s.len)), ERR_CORRUPT);
        s.data[i] ^= 0x40;
        CHECK(kv_is_empty(b));
        kv_free(b);
    }
    /* every truncation is caught */
    for (size_t n = 0; n < s.len; n += 3) {
        struct kv *b = kv_new(NULL);
        REQUIRE(b);
        CHECK_EQ_INT(kv_snapshot_read(b, slice_of(s.data, n)), ERR_CORRUPT);
        CHECK(kv_is_empty(b));
        kv_free(b);
    }
    kv_free(a);

    /* structurally bad content behind a valid CRC: duplicate key, version above revision,
     * bad namespace, NUL in key, trailing bytes, unknown version */
    struct {
        const char *what;
        uint64_t revision, cas2;
        const char *ns2, *key2;
        size_t key2_len;
        bool trailing;
        uint32_t version;
    } cases[] = {
        {"dup", 5, 2, "ns", "a", 1, false, 1},
        {"cas>rev", 5, 6, "ns", "b", 1, false, 1},
        {"cas0", 5, 0, "ns", "b", 1, false, 1},
        {"bad ns", 5, 2, "n s", "b", 1, false, 1},
        {"nul key", 5, 2, "ns", "b\0c", 3, false, 1},
        {"empty key", 5, 2, "ns", "", 0, false, 1},
        {"trailing", 5, 2, "ns", "b", 1, true, 1},
        {"version", 5, 2, "ns", "b", 1, false, 2},
        {"ok", 5, 2, "ns", "b", 1, false, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sbuf_reset(&s);
        sbuf_append(&s, "AYKV", 4);
        sbuf_put_le32(&s, cases[i].version);
        sbuf_put_le64(&s, cases[i].revision);
        sbuf_put_le64(&s, 2);
        sbuf_put_le64(&s, 1);
        sbuf_put_le64(&s, 0);
        sbuf_put_lp(&s, "ns", 2);
        sbuf_put_lp(&s, "a", 1);
        sbuf_put_lp(&s, "v", 1);
        sbuf_put_le64(&s, cases[i].cas2);
        sbuf_put_le64(&s, 0);
        sbuf_put_lp(&s, cases[i].ns2, strlen(cases[i].ns2));
        sbuf_put_lp(&s, cases[i].key2, cases[i].key2_len);
        sbuf_put_lp(&s, "w", 1);
        if (cases[i].trailing)
            sbuf_putc(&s, 0);
        sbuf_put_le32(&s, 0);
        reseal(&s);
        struct kv *b = kv_new(NULL);
        REQUIRE(b);
        int rc = kv_snapshot_read(b, slice_of(s.data, s.len));
        if (strcmp(cases[i].what, "ok") == 0) {
            CHECK_EQ_INT(rc, 0);
            CHECK_EQ_INT(kv_get(b, S("ns"), S("b"), NOW, NULL, NULL, NULL), 0);
        } else {
            if (rc != ERR_CORRUPT)
                fprintf(stderr, "    case %s: rc %d\n", cases[i].what, rc);
            CHECK_EQ_INT(rc, ERR_CORRUPT);
            CHECK(kv_is_empty(b));
        }
        kv_free(b);
    }
    sbuf_free(&s);
}

TEST(kv_model_random_ops)
{
    /* Random puts/deletes over a small key space against a plain array model: exercises table
     * growth, probe runs that wrap around and backward-shift deletion. */
    enum { KEYS = 300, OPS = 40000 };
    static struct {
        bool live;
        uint64_t cas;
        uint32_t val;
    } model[KEYS];
    memset(model, 0, sizeof model);
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    uint64_t seed = 0x9e3779b97f4a7c15ull, rev = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t x = rng_next(&seed);
        int k = (int)(x % KEYS);
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        struct kv_result r;
        if ((x >> 20) % 3 == 0) {
            int rc = kv_apply_delete(kv, S("m"), sl(key), KV_CAS_ANY, NOW, &r);
            CHECK_EQ_INT(rc, 0);
            CHECK(r.deleted == model[k].live);
            if (model[k].live) {
                CHECK_EQ_INT(r.cas, ++rev);
                model[k].live = false;
            }
        } else {
            uint32_t v = (uint32_t)(x >> 32);
            uint64_t expected = (x >> 24) % 2 ? KV_CAS_ANY : model[k].live ? model[k].cas : 0;
            if ((x >> 26) % 5 == 0)
                expected = model[k].cas + 1; /* a wrong version */
            int rc = kv_apply_put(kv, S("m"), sl(key), slice_of(&v, sizeof v), expected, 0, NOW,
                                  &r);
            uint64_t cur = model[k].live ? model[k].cas : 0;
            if (expected == KV_CAS_ANY || expected == cur) {
                CHECK_EQ_INT(rc, 0);
                CHECK_EQ_INT(r.cas, ++rev);
                model[k].live = true;
                model[k].cas = r.cas;
                model[k].val = v;
            } else {
                CHECK_EQ_INT(rc, ERR_CAS_MISMATCH);
                CHECK_EQ_INT(r.current, cur);
            }
        }
        if (op % 4000 == 0 || op == OPS - 1) {
            size_t live = 0;
            uint64_t bytes = 0;
            for (int i = 0; i < KEYS; i++) {
                char kk[16];
                snprintf(kk, sizeof kk, "%d", i);
                uint64_t cas = 0;
                uint32_t got = 0;
                struct sbuf b;
                sbuf_init(&b, 0);
                int rc = kv_get(kv, S("m"), sl(kk), NOW, &b, &cas, NULL);
                if (model[i].live) {
                    live++;
                    bytes += 1 + strlen(kk) + 4 + KV_ENTRY_OVERHEAD;
                    CHECK_EQ_INT(rc, 0);
                    CHECK_EQ_INT(cas, model[i].cas);
                    if (b.len == 4)
                        memcpy(&got, b.data, 4);
                    CHECK_EQ_INT(got, model[i].val);
                } else {
                    CHECK_EQ_INT(rc, ERR_NOT_FOUND);
                }
                sbuf_free(&b);
            }
            struct kv_stats st;
            kv_stats(kv, &st);
            CHECK_EQ_INT(st.keys, live);
            CHECK_EQ_INT(st.revision, rev);
            CHECK_EQ_INT(st.bytes, bytes);
        }
        if (harness_current_failed() > 20)
            break;
    }
    kv_free(kv);
}

TEST(kv_alloc_failure_changes_nothing)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    struct kv_result r;
    CHECK_EQ_INT(put(kv, "ns", "a", "1", KV_CAS_ANY, 0, NOW, &r), 0);
    alloc_fail_after(1);
    int rc = put(kv, "ns", "a", "2", KV_CAS_ANY, 0, NOW, &r);
    alloc_fail_after(0);
    CHECK_EQ_INT(rc, ERR_NOMEM);
    char buf[8];
    uint64_t cas = 0;
    const char *v = get_str(kv, "ns", "a", NOW, &cas, buf, sizeof buf);
    REQUIRE(v);
    CHECK(strcmp(v, "1") == 0);
    CHECK_EQ_INT(cas, 1);
    /* a growth failure: fill to the resize point, then fail the table allocation */
    for (int i = 0; i < 47; i++) {
        char k[16];
        snprintf(k, sizeof k, "g%d", i);
        CHECK_EQ_INT(put(kv, "ns", k, "v", KV_CAS_ANY, 0, NOW, &r), 0);
    }
    struct kv_stats before, after;
    kv_stats(kv, &before);
    CHECK_EQ_INT(before.keys, 48); /* 64 slots * 3/4 */
    alloc_fail_after(1);
    rc = put(kv, "ns", "one-more", "v", KV_CAS_ANY, 0, NOW, &r);
    alloc_fail_after(0);
    CHECK_EQ_INT(rc, ERR_NOMEM);
    kv_stats(kv, &after);
    CHECK_EQ_INT(after.keys, before.keys);
    CHECK_EQ_INT(after.bytes, before.bytes);
    CHECK_EQ_INT(after.revision, before.revision);
    CHECK_EQ_INT(put(kv, "ns", "one-more", "v", KV_CAS_ANY, 0, NOW, &r), 0);
    kv_free(kv);
}

TEST(kv_deterministic_replicas)
{
    /* Two instances (different random hash seeds) fed the same applies agree on every result
     * and end with byte-identical snapshots. */
    struct kv *a = kv_new(NULL), *b = kv_new(NULL);
    REQUIRE(a && b);
    uint64_t seed = 777;
    int64_t now = NOW;
    for (int i = 0; i < 20000; i++) {
        uint64_t x = rng_next(&seed);
        char key[16], ns[8];
        snprintf(key, sizeof key, "k%u", (unsigned)(x % 500));
        snprintf(ns, sizeof ns, "n%u", (unsigned)((x >> 10) % 3));
        now += (int64_t)((x >> 12) % 4);
        uint64_t expected = (x >> 16) % 3 == 0 ? KV_CAS_ANY : (x >> 18) % 40;
        uint64_t ttl = (x >> 24) % 4 == 0 ? (x >> 26) % 50 : 0;
        struct kv_result ra, rb;
        int ca, cb;
        switch ((x >> 32) % 4) {
        case 0:
        case 1:
            ca = kv_apply_put(a, sl(ns), sl(key), slice_of(&x, sizeof x), expected, ttl, now, &ra);
            cb = kv_apply_put(b, sl(ns), sl(key), slice_of(&x, sizeof x), expected, ttl, now, &rb);
            break;
        case 2:
            ca = kv_apply_delete(a, sl(ns), sl(key), expected, now, &ra);
            cb = kv_apply_delete(b, sl(ns), sl(key), expected, now, &rb);
            break;
        default:
            ca = kv_apply_expire(a, sl(ns), sl(key), expected, now, &ra);
            cb = kv_apply_expire(b, sl(ns), sl(key), expected, now, &rb);
            break;
        }
        CHECK_EQ_INT(ca, cb);
        CHECK(memcmp(&ra, &rb, sizeof ra) == 0);
        if (harness_current_failed())
            break;
    }
    struct sbuf sa, sb;
    sbuf_init(&sa, 0);
    sbuf_init(&sb, 0);
    CHECK_EQ_INT(kv_snapshot_write(a, &sa), 0);
    CHECK_EQ_INT(kv_snapshot_write(b, &sb), 0);
    CHECK(sa.len > 100);
    CHECK(sa.len == sb.len && memcmp(sa.data, sb.data, sa.len) == 0);
    sbuf_free(&sa);
    sbuf_free(&sb);
    kv_free(a);
    kv_free(b);
}

struct reader_ctx {
    struct kv *kv;
    atomic_bool *stop;
    long hits, misses, bad;
};

static void *reader_main(void *arg)
{
    struct reader_ctx *c = arg;
    struct sbuf b;
    sbuf_init(&b, 0);
    uint64_t seed = (uint64_t)(uintptr_t)arg | 1;
    while (!atomic_load(c->stop)) {
        char k[16];
        unsigned i = (unsigned)(rng_next(&seed) % 1000);
        snprintf(k, sizeof k, "k%u", i);
        sbuf_reset(&b);
        uint64_t cas = 0;
        int rc = kv_get(c->kv, S("mt"), sl(k), NOW, &b, &cas, NULL);
        if (rc == 0) {
            c->hits++;
            /* values are "k<i>" padded to 8 bytes: a torn value would not match */
            if (b.len != 8 || memcmp(b.data, k, strlen(k)) != 0 || cas == 0)
                c->bad++;
        } else if (rc == ERR_NOT_FOUND) {
            c->misses++;
        } else {
            c->bad++;
        }
        if (i % 97 == 0) {
            struct kv_stats st;
            kv_stats(c->kv, &st);
        }
    }
    sbuf_free(&b);
    return NULL;
}

TEST(kv_threads_readers_during_applies)
{
    struct kv *kv = kv_new(NULL);
    REQUIRE(kv);
    atomic_bool stop;
    atomic_init(&stop, false);
    struct reader_ctx ctx[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (struct reader_ctx){kv, &stop, 0, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, reader_main, &ctx[i]) == 0);
    }
    struct kv_result r;
    for (int i = 0; i < 100000; i++) {
        char k[16], v[8];
        unsigned n = (unsigned)(i % 1000);
        snprintf(k, sizeof k, "k%u", n);
        memset(v, '.', sizeof v);
        memcpy(v, k, strlen(k) < 8 ? strlen(k) : 8);
        if (i % 10 == 9)
            kv_apply_delete(kv, S("mt"), sl(k), KV_CAS_ANY, NOW, &r);
        else
            CHECK_EQ_INT(kv_apply_put(kv, S("mt"), sl(k), slice_of(v, 8), KV_CAS_ANY, 0, NOW, &r),
                         0);
    }
    atomic_store(&stop, true);
    long bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        bad += ctx[i].bad;
    }
    CHECK_EQ_INT(bad, 0);
    struct kv_stats st;
    kv_stats(kv, &st);
    CHECK(st.revision >= 90000);
    kv_free(kv);
}
