/* kv.c -- the KV store state machine (see kv.h for the contract).
 *
 * Layout: one open-addressing hash table (linear probing, power-of-two capacity, load <= 3/4) of
 * pointers to entries. Each entry is one allocation: a header {hash, cas, expires_at_ms, lengths,
 * ttl_pos} followed by the namespace, key and value bytes. Lookups compare the stored hash, then
 * the exact namespace and key bytes, so distinct keys never collide. Removal uses backward-shift
 * deletion (no tombstones). The table doubles at once when an insert would pass 3/4 load (a
 * one-off O(n) rehash on the core thread; at the 4M-key default that is a few tens of
 * milliseconds) and never shrinks. The hash seed is random per instance (flooding defence);
 * nothing observable depends on table order: listings and snapshots are sorted.
 *
 * Expiry index: a binary min-heap of pointers to the entries that have a TTL, ordered by
 * (expires_at_ms, cas); each entry stores its heap position (ttl_pos), so a put, delete or expire
 * updates the index in O(log n), and kv_collect_expired() finds the expired entries without
 * looking at any other: O(1) when none has expired, O(k log k) to report k. Keys without a TTL
 * cost it nothing (ttl_pos fills what was padding in the header). Its array doubles when full and,
 * like the table, never shrinks: at most two pointers per key with a TTL at the peak count of such
 * keys. The index is never serialized and its order never reaches a snapshot, a listing or an
 * apply result.
 *
 * Invariants:
 *  1. revision only grows; every entry's cas is in 1..revision; a successful put or a delete of a
 *     live entry takes exactly ++revision.
 *  2. count == number of non-NULL slots <= keys_max (except after a restore, see kv.h), and
 *     bytes == sum of entry_bytes() over them.
 *  3. For every entry, every slot from its home slot (hash & mask) up to its own slot is non-NULL
 *     (the linear-probing invariant that lookups and backward-shift deletion rely on).
 *  4. At most one entry per exact (ns, key) pair.
 *  5. Applies are pure functions of (state, arguments): no clock, no randomness that reaches the
 *     observable state, so replicas fed the same entries produce byte-identical snapshots.
 *  6. Mutations hold the write lock; reads hold the read lock; slices given to callbacks are only
 *     valid while that lock is held.
 *  7. The index holds exactly the entries with expires_at_ms != 0, each once, and for every entry
 *     e: e->ttl_pos == TTL_POS_NONE if it has no TTL, else ttl_heap[e->ttl_pos] == e. Every
 *     change of a slot's entry goes through insert_new(), replace_at() or remove_at(), which keep
 *     this; every allocation a put or restore needs is made before its first change.
 *  8. Heap order: no entry precedes its parent under ttl_cmp(), so an entry never expires before
 *     its parent and the expired entries form a subtree at the root.
 *
 * Entry life cycle (per exact key, as seen by applies at the entry's now_ms):
 *
 *     absent --put--> live(cas=r) --put--> live(cas=r') ...
 *        ^               |   \
 *        |            delete   now >= expires_at
 *        |               |     v
 *        +---------------+-- expired (still in memory; reads say absent)
 *        ^                     |  put -> live (replaced in place)
 *        +--- delete/expire ---+  (memory freed, revision unchanged)
 *
 * Snapshot format (little-endian; version 1):
 *
 *     "AYKV" | version u32 | revision u64 | count u64 |
 *     count x { cas u64 | expires_at_ms i64 | ns lp | key lp | value lp }
 *     | crc32c u32 over every preceding byte
 *
 * where lp = uvarint length, then that many bytes.
 *
 * Entries are sorted by (ns, key) bytewise, so equal states serialize to equal bytes.
 */
#include "kv/kv.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "base/alloc.h"
#include "base/assert.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hash.h"

#define TABLE_CAP_MIN 64
#define SNAP_MAGIC "AYKV"
#define SNAP_VERSION 1u
#define SNAP_HEADER_BYTES 24
#define SNAP_ENTRY_MIN_BYTES 21 /* cas + expiry + three length bytes + 1-byte ns + 1-byte key */

/* Positions in the expiry index are 32-bit (they fill what was padding in the entry header), so
 * it holds at most TTL_HEAP_MAX entries; one more TTL key than that is refused with ERR_NOMEM. */
#define TTL_POS_NONE UINT32_MAX
#define TTL_HEAP_MAX ((size_t)UINT32_MAX)
#define TTL_HEAP_CAP_MIN 64

struct kv_entry {
    uint64_t hash;
    uint64_t cas;
    int64_t expires_at_ms; /* 0 = never */
    uint32_t ns_len;
    uint32_t key_len;
    uint32_t value_len;
    uint32_t ttl_pos; /* index in kv->ttl_heap, TTL_POS_NONE iff expires_at_ms == 0 */
    uint8_t bytes[];  /* ns, then key, then value */
};

struct kv {
    pthread_rwlock_t lock;
    struct kv_limits limits;
    uint64_t seed;
    struct kv_entry **slots;
    size_t cap; /* power of two */
    size_t count;
    uint64_t bytes;
    uint64_t revision;
    struct kv_entry **ttl_heap; /* the expiry index: a binary min-heap under ttl_cmp() */
    size_t ttl_len;
    size_t ttl_cap;
    /* Counters written under the write lock. */
    uint64_t puts_ok, puts_cas_fail, puts_rejected;
    uint64_t deletes_ok, deletes_absent, deletes_cas_fail, expired_removed;
    /* Counters written by readers concurrently. */
    atomic_uint_fast64_t gets_hit, gets_miss;
};

/* ---------------------------------------------------------------------------------------------
 * Entries
 * ------------------------------------------------------------------------------------------- */

static struct slice entry_ns(const struct kv_entry *e) { return slice_of(e->bytes, e->ns_len); }
static struct slice entry_key(const struct kv_entry *e)
{
    return slice_of(e->bytes + e->ns_len, e->key_len);
}
static struct slice entry_value(const struct kv_entry *e)
{
    return slice_of(e->bytes + e->ns_len + e->key_len, e->value_len);
}

static uint64_t item_bytes(size_t ns_len, size_t key_len, size_t value_len)
{
    return (uint64_t)ns_len + key_len + value_len + KV_ENTRY_OVERHEAD;
}
static uint64_t entry_bytes(const struct kv_entry *e)
{
    return item_bytes(e->ns_len, e->key_len, e->value_len);
}

static bool expired_at(const struct kv_entry *e, int64_t now_ms)
{
    return e->expires_at_ms != 0 && now_ms >= e->expires_at_ms;
}

static struct kv_entry *entry_new(uint64_t hash, struct slice ns, struct slice key,
                                  struct slice value)
{
    struct kv_entry *e = xmalloc(sizeof *e + ns.len + key.len + value.len);
    if (!e)
        return NULL;
    e->hash = hash;
    e->cas = 0;
    e->expires_at_ms = 0;
    e->ttl_pos = TTL_POS_NONE;
    e->ns_len = (uint32_t)ns.len;
    e->key_len = (uint32_t)key.len;
    e->value_len = (uint32_t)value.len;
    memcpy(e->bytes, ns.ptr, ns.len);
    memcpy(e->bytes + ns.len, key.ptr, key.len);
    if (value.len)
        memcpy(e->bytes + ns.len + key.len, value.ptr, value.len);
    return e;
}

/* Bytewise order, a proper prefix first. */
static int cmp_bytes(struct slice a, struct slice b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len ? 1 : 0;
}

static bool has_prefix(struct slice s, struct slice prefix)
{
    return s.len >= prefix.len && (prefix.len == 0 || memcmp(s.ptr, prefix.ptr, prefix.len) == 0);
}

/* ---------------------------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------------------------- */

static bool ns_char_ok(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

static int check_ns(struct slice ns, size_t ns_max)
{
    if (ns.len == 0 || ns.len > ns_max)
        return ERR_BAD_NAME;
    for (size_t i = 0; i < ns.len; i++)
        if (!ns_char_ok(ns.ptr[i]))
            return ERR_BAD_NAME;
    return 0;
}

static int check_key(struct slice key, size_t key_max)
{
    if (key.len == 0)
        return ERR_BAD_NAME;
    if (key.len > key_max)
        return ERR_TOO_LARGE;
    if (memchr(key.ptr, 0, key.len))
        return ERR_BAD_NAME;
    return 0;
}

int kv_validate_ns(struct slice ns) { return check_ns(ns, KV_NS_MAX); }
int kv_validate_key(struct slice key) { return check_key(key, KV_KEY_MAX); }

static int check_item(const struct kv_limits *l, struct slice ns, struct slice key,
                      size_t value_len)
{
    int rc = check_ns(ns, l->ns_max);
    if (rc == 0)
        rc = check_key(key, l->key_max);
    if (rc == 0 && value_len > l->value_max)
        rc = ERR_TOO_LARGE;
    return rc;
}

int kv_validate(const struct kv *kv, struct slice ns, struct slice key, size_t value_len)
{
    /* limits are immutable after kv_new, so no lock is needed. */
    return check_item(&kv->limits, ns, key, value_len);
}

/* ---------------------------------------------------------------------------------------------
 * Expiry index
 *
 * A binary min-heap (parent of i at (i - 1) / 2) of pointers to exactly the entries that have a
 * TTL. Each entry records its own position in ttl_pos, so any entry is removed or re-keyed in
 * O(log n). The heap holds pointers, not slots: moving entries between slots (growth,
 * backward-shift deletion) leaves it alone; replacing an entry's allocation does not (replace_at).
 * ------------------------------------------------------------------------------------------- */

/* The index order: earlier expiry first, then the lower version. Versions are unique among the
 * entries applies create, so the order is a function of the state alone. */
static int ttl_cmp(const struct kv_entry *a, const struct kv_entry *b)
{
    if (a->expires_at_ms != b->expires_at_ms)
        return a->expires_at_ms < b->expires_at_ms ? -1 : 1;
    return a->cas < b->cas ? -1 : a->cas > b->cas ? 1 : 0;
}

static void ttl_set(struct kv *kv, size_t i, struct kv_entry *e)
{
    kv->ttl_heap[i] = e;
    e->ttl_pos = (uint32_t)i;
}

/* Restore the heap order after the entry at position i was placed there or re-keyed: move it up
 * past later-expiring parents, else down past earlier-expiring children. */
static void ttl_fix(struct kv *kv, size_t i)
{
    struct kv_entry *e = kv->ttl_heap[i];
    while (i > 0 && ttl_cmp(e, kv->ttl_heap[(i - 1) / 2]) < 0) {
        size_t parent = (i - 1) / 2;
        ttl_set(kv, i, kv->ttl_heap[parent]);
        i = parent;
    }
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= kv->ttl_len)
            break;
        if (child + 1 < kv->ttl_len && ttl_cmp(kv->ttl_heap[child + 1], kv->ttl_heap[child]) < 0)
            child++;
        if (ttl_cmp(kv->ttl_heap[child], e) >= 0)
            break;
        ttl_set(kv, i, kv->ttl_heap[child]);
        i = child;
    }
    ttl_set(kv, i, e);
}

/* Make room for one more entry in the index (doubling); on failure nothing changes. */
static int ttl_reserve(struct kv *kv)
{
    if (kv->ttl_len < kv->ttl_cap)
        return 0;
    if (kv->ttl_cap == TTL_HEAP_MAX)
        return ERR_NOMEM;
    size_t cap = kv->ttl_cap ? kv->ttl_cap * 2 : TTL_HEAP_CAP_MIN;
    if (cap > TTL_HEAP_MAX)
        cap = TTL_HEAP_MAX;
    struct kv_entry **heap = xrealloc(kv->ttl_heap, cap * sizeof *heap);
    if (!heap)
        return ERR_NOMEM;
    kv->ttl_heap = heap;
    kv->ttl_cap = cap;
    return 0;
}

/* Add e (which has a TTL); the caller reserved room. */
static void ttl_push(struct kv *kv, struct kv_entry *e)
{
    ASSERT(e->expires_at_ms != 0 && e->ttl_pos == TTL_POS_NONE && kv->ttl_len < kv->ttl_cap);
    size_t i = kv->ttl_len++;
    ttl_set(kv, i, e);
    ttl_fix(kv, i);
}

/* Remove e: the last entry fills its position. */
static void ttl_remove(struct kv *kv, struct kv_entry *e)
{
    size_t i = e->ttl_pos;
    ASSERT(i < kv->ttl_len && kv->ttl_heap[i] == e);
    struct kv_entry *last = kv->ttl_heap[--kv->ttl_len];
    e->ttl_pos = TTL_POS_NONE;
    if (i < kv->ttl_len) {
        ttl_set(kv, i, last);
        ttl_fix(kv, i);
    }
}

/* e (new) replaces old (about to be freed) for the same key, with or without a TTL on either side.
 * Only "old had none, e has one" adds an entry; the caller reserved room for that case. */
static void ttl_replace(struct kv *kv, struct kv_entry *old, struct kv_entry *e)
{
    if (old->ttl_pos == TTL_POS_NONE) {
        if (e->expires_at_ms != 0)
            ttl_push(kv, e);
    } else if (e->expires_at_ms != 0) {
        size_t i = old->ttl_pos;
        old->ttl_pos = TTL_POS_NONE;
        ttl_set(kv, i, e);
        ttl_fix(kv, i);
    } else {
        ttl_remove(kv, old);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Hash table
 * ------------------------------------------------------------------------------------------- */

static uint64_t key_hash(const struct kv *kv, struct slice ns, struct slice key)
{
    return hash_bytes(key.ptr, key.len, hash_bytes(ns.ptr, ns.len, kv->seed));
}

/* Slot index of (ns, key), or SIZE_MAX. */
static size_t find_slot(const struct kv *kv, uint64_t h, struct slice ns, struct slice key)
{
    size_t mask = kv->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const struct kv_entry *e = kv->slots[i];
        if (!e)
            return SIZE_MAX;
        if (e->hash == h && slice_eq(entry_ns(e), ns) && slice_eq(entry_key(e), key))
            return i;
    }
}

/* Place e in the first free slot from its home; the caller ensured capacity. */
static void place(struct kv_entry **slots, size_t cap, struct kv_entry *e)
{
    size_t mask = cap - 1;
    size_t i = (size_t)e->hash & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = e;
}

/* Make room for one more entry under the 3/4 load bound. */
static int reserve_one(struct kv *kv)
{
    if ((kv->count + 1) * 4 <= kv->cap * 3)
        return 0;
    size_t cap = kv->cap * 2;
    struct kv_entry **slots = xcalloc(cap, sizeof *slots);
    if (!slots)
        return ERR_NOMEM;
    for (size_t i = 0; i < kv->cap; i++)
        if (kv->slots[i])
            place(slots, cap, kv->slots[i]);
    xfree(kv->slots);
    kv->slots = slots;
    kv->cap = cap;
    return 0;
}

/* Add e, a key not in the table; the caller reserved a slot and, if e has a TTL, index room. */
static void insert_new(struct kv *kv, struct kv_entry *e)
{
    ASSERT((kv->count + 1) * 4 <= kv->cap * 3);
    place(kv->slots, kv->cap, e);
    kv->count++;
    kv->bytes += entry_bytes(e);
    if (e->expires_at_ms != 0)
        ttl_push(kv, e);
}

/* Put e in slot i in place of the entry there, which it frees. Same key, so the same hash: the
 * probe position stays valid. The caller reserved index room if only e has a TTL. */
static void replace_at(struct kv *kv, size_t i, struct kv_entry *e)
{
    struct kv_entry *old = kv->slots[i];
    ASSERT(old && old->hash == e->hash && kv->bytes >= entry_bytes(old));
    kv->bytes = kv->bytes - entry_bytes(old) + entry_bytes(e);
    kv->slots[i] = e;
    ttl_replace(kv, old, e);
    xfree(old);
}

/* Free the entry at slot i and close the gap by shifting later entries of the probe run back
 * (invariant 3 holds afterwards without tombstones). */
static void remove_at(struct kv *kv, size_t i)
{
    size_t mask = kv->cap - 1;
    struct kv_entry *gone = kv->slots[i];
    ASSERT(gone && kv->count > 0 && kv->bytes >= entry_bytes(gone));
    kv->count--;
    kv->bytes -= entry_bytes(gone);
    if (gone->ttl_pos != TTL_POS_NONE)
        ttl_remove(kv, gone);
    xfree(gone);
    kv->slots[i] = NULL;
    size_t hole = i;
    for (size_t j = (i + 1) & mask; kv->slots[j]; j = (j + 1) & mask) {
        size_t home = (size_t)kv->slots[j]->hash & mask;
        /* The entry at j may move to the hole unless its home lies cyclically in (hole, j]. */
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            kv->slots[hole] = kv->slots[j];
            kv->slots[j] = NULL;
            hole = j;
        }
    }
}

static void clear_all(struct kv *kv)
{
    for (size_t i = 0; i < kv->cap; i++) {
        xfree(kv->slots[i]);
        kv->slots[i] = NULL;
    }
    kv->count = 0;
    kv->bytes = 0;
    kv->revision = 0;
    kv->ttl_len = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------------------------- */

void kv_limits_default(struct kv_limits *l)
{
    l->ns_max = KV_NS_MAX;
    l->key_max = KV_KEY_MAX;
    l->value_max = KV_VALUE_MAX;
    l->total_bytes_max = KV_TOTAL_BYTES_MAX;
    l->keys_max = KV_KEYS_MAX;
}

static uint64_t random_seed(const void *salt)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        /* No entropy yet: still vary per process and instance. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)salt;
    }
    return s;
}

struct kv *kv_new(const struct kv_limits *l)
{
    struct kv *kv = xcalloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    if (l)
        kv->limits = *l;
    else
        kv_limits_default(&kv->limits);
    if (kv->limits.ns_max > KV_ITEM_HARD_MAX)
        kv->limits.ns_max = KV_ITEM_HARD_MAX;
    if (kv->limits.key_max > KV_ITEM_HARD_MAX)
        kv->limits.key_max = KV_ITEM_HARD_MAX;
    if (kv->limits.value_max > KV_ITEM_HARD_MAX)
        kv->limits.value_max = KV_ITEM_HARD_MAX;
    kv->cap = TABLE_CAP_MIN;
    kv->slots = xcalloc(kv->cap, sizeof *kv->slots);
    if (!kv->slots)
        goto err_free_kv;
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr) != 0)
        goto err_free_slots;
#ifdef __GLIBC__
    /* The core thread applies while many workers read: do not let a stream of readers starve it. */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    int rc = pthread_rwlock_init(&kv->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0)
        goto err_free_slots;
    kv->seed = random_seed(kv);
    atomic_init(&kv->gets_hit, 0);
    atomic_init(&kv->gets_miss, 0);
    return kv;

err_free_slots:
    xfree(kv->slots);
err_free_kv:
    xfree(kv);
    return NULL;
}

void kv_free(struct kv *kv)
{
    if (!kv)
        return;
    clear_all(kv);
    xfree(kv->slots);
    xfree(kv->ttl_heap);
    pthread_rwlock_destroy(&kv->lock);
    xfree(kv);
}

/* ---------------------------------------------------------------------------------------------
 * Applies (core thread, write lock)
 * ------------------------------------------------------------------------------------------- */

static int put_locked(struct kv *kv, struct slice ns, struct slice key, struct slice value,
                      uint64_t expected, uint64_t ttl_ms, int64_t now_ms, struct kv_result *res)
{
    int rc = check_item(&kv->limits, ns, key, value.len);
    if (rc)
        return rc;
    int64_t expires_at_ms = 0;
    if (ttl_ms != 0) {
        if (now_ms < 0 || ttl_ms > (uint64_t)(INT64_MAX - now_ms))
            return ERR_BAD_PARAM;
        expires_at_ms = now_ms + (int64_t)ttl_ms;
    }

    uint64_t h = key_hash(kv, ns, key);
    size_t slot = find_slot(kv, h, ns, key);
    struct kv_entry *old = slot == SIZE_MAX ? NULL : kv->slots[slot];
    uint64_t current = old && !expired_at(old, now_ms) ? old->cas : 0;
    if (expected != KV_CAS_ANY && expected != current) {
        /* expected == 0 wants "absent" (current == 0); a version wants exactly that version. */
        res->current = current;
        return ERR_CAS_MISMATCH;
    }

    uint64_t add = item_bytes(ns.len, key.len, value.len);
    uint64_t base = kv->bytes - (old ? entry_bytes(old) : 0);
    if (add > kv->limits.total_bytes_max || base > kv->limits.total_bytes_max - add)
        return ERR_NOSPACE;
    if (!old && kv->count >= kv->limits.keys_max)
        return ERR_NOSPACE;
    /* Every allocation happens before the first change, so ERR_NOMEM leaves the state as it was
     * (a grown table or index is not observable). */
    if (!old && reserve_one(kv) != 0)
        return ERR_NOMEM;
    if (expires_at_ms != 0 && (!old || old->ttl_pos == TTL_POS_NONE) && ttl_reserve(kv) != 0)
        return ERR_NOMEM;
    struct kv_entry *e = entry_new(h, ns, key, value);
    if (!e)
        return ERR_NOMEM;
    e->expires_at_ms = expires_at_ms;
    ASSERT(kv->revision < UINT64_MAX - 1); /* KV_CAS_ANY must never become a real version */
    e->cas = ++kv->revision;
    if (old)
        replace_at(kv, slot, e);
    else
        insert_new(kv, e);
    res->cas = e->cas;
    return 0;
}

int kv_apply_put(struct kv *kv, struct slice ns, struct slice key, struct slice value,
                 uint64_t expected, uint64_t ttl_ms, int64_t now_ms, struct kv_result *res)
{
    struct kv_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    pthread_rwlock_wrlock(&kv->lock);
    int rc = put_locked(kv, ns, key, value, expected, ttl_ms, now_ms, res);
    if (rc == 0)
        kv->puts_ok++;
    else if (rc == ERR_CAS_MISMATCH)
        kv->puts_cas_fail++;
    else
        kv->puts_rejected++;
    pthread_rwlock_unlock(&kv->lock);
    return rc;
}

static int delete_locked(struct kv *kv, struct slice ns, struct slice key, uint64_t expected,
                         int64_t now_ms, struct kv_result *res)
{
    int rc = check_ns(ns, kv->limits.ns_max);
    if (rc == 0)
        rc = check_key(key, kv->limits.key_max);
    if (rc)
        return rc;
    uint64_t h = key_hash(kv, ns, key);
    size_t slot = find_slot(kv, h, ns, key);
    if (slot != SIZE_MAX && expired_at(kv->slots[slot], now_ms)) {
        /* Logically absent already; freeing it now is as deterministic as the check. */
        remove_at(kv, slot);
        kv->expired_removed++;
        slot = SIZE_MAX;
    }
    if (slot == SIZE_MAX) {
        if (expected != KV_CAS_ANY && expected != 0) {
            res->current = 0;
            kv->deletes_cas_fail++;
            return ERR_CAS_MISMATCH;
        }
        kv->deletes_absent++;
        return 0;
    }
    uint64_t cur = kv->slots[slot]->cas;
    if (expected != KV_CAS_ANY && expected != cur) {
        res->current = cur;
        kv->deletes_cas_fail++;
        return ERR_CAS_MISMATCH;
    }
    remove_at(kv, slot);
    ASSERT(kv->revision < UINT64_MAX - 1);
    res->cas = ++kv->revision;
    res->deleted = true;
    kv->deletes_ok++;
    return 0;
}

int kv_apply_delete(struct kv *kv, struct slice ns, struct slice key, uint64_t expected,
                    int64_t now_ms, struct kv_result *res)
{
    struct kv_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    pthread_rwlock_wrlock(&kv->lock);
    int rc = delete_locked(kv, ns, key, expected, now_ms, res);
    pthread_rwlock_unlock(&kv->lock);
    return rc;
}

int kv_apply_expire(struct kv *kv, struct slice ns, struct slice key, uint64_t cas, int64_t now_ms,
                    struct kv_result *res)
{
    struct kv_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    int rc = check_ns(ns, kv->limits.ns_max);
    if (rc == 0)
        rc = check_key(key, kv->limits.key_max);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&kv->lock);
    uint64_t h = key_hash(kv, ns, key);
    size_t slot = find_slot(kv, h, ns, key);
    if (slot != SIZE_MAX) {
        const struct kv_entry *e = kv->slots[slot];
        res->current = e->cas;
        if (e->cas == cas && expired_at(e, now_ms)) {
            remove_at(kv, slot);
            kv->expired_removed++;
            res->deleted = true;
        }
    }
    pthread_rwlock_unlock(&kv->lock);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Reads (any thread, read lock)
 * ------------------------------------------------------------------------------------------- */

int kv_meta(struct kv *kv, struct slice ns, struct slice key, int64_t now_ms, uint64_t *cas,
            int64_t *expires_at_ms, size_t *value_len)
{
    int rc = check_ns(ns, kv->limits.ns_max);
    if (rc == 0)
        rc = check_key(key, kv->limits.key_max);
    if (rc)
        return rc;
    rc = ERR_NOT_FOUND;
    pthread_rwlock_rdlock(&kv->lock);
    size_t slot = find_slot(kv, key_hash(kv, ns, key), ns, key);
    if (slot != SIZE_MAX && !expired_at(kv->slots[slot], now_ms)) {
        const struct kv_entry *e = kv->slots[slot];
        if (cas)
            *cas = e->cas;
        if (expires_at_ms)
            *expires_at_ms = e->expires_at_ms;
        if (value_len)
            *value_len = e->value_len;
        rc = 0;
    }
    pthread_rwlock_unlock(&kv->lock);
    atomic_fetch_add_explicit(rc == 0 ? &kv->gets_hit : &kv->gets_miss, 1, memory_order_relaxed);
    return rc;
}

int kv_get(struct kv *kv, struct slice ns, struct slice key, int64_t now_ms, struct sbuf *value_out,
           uint64_t *cas, int64_t *expires_at_ms)
{
    int rc = check_ns(ns, kv->limits.ns_max);
    if (rc == 0)
        rc = check_key(key, kv->limits.key_max);
    if (rc)
        return rc;
    rc = ERR_NOT_FOUND;
    pthread_rwlock_rdlock(&kv->lock);
    size_t slot = find_slot(kv, key_hash(kv, ns, key), ns, key);
    if (slot != SIZE_MAX && !expired_at(kv->slots[slot], now_ms)) {
        const struct kv_entry *e = kv->slots[slot];
        if (cas)
            *cas = e->cas;
        if (expires_at_ms)
            *expires_at_ms = e->expires_at_ms;
        rc = 0;
        if (value_out) {
            struct slice v = entry_value(e);
            sbuf_append(value_out, v.ptr, v.len);
            if (!sbuf_ok(value_out))
                rc = ERR_NOMEM;
        }
    }
    pthread_rwlock_unlock(&kv->lock);
    atomic_fetch_add_explicit(rc == 0 ? &kv->gets_hit : &kv->gets_miss, 1, memory_order_relaxed);
    return rc;
}

/* Scratch max-heaps of entry pointers under an order cmp, for one read call: kv_list keeps the
 * smallest keys in one, kv_collect_expired its frontier (under the reversed expiry order). */
typedef int (*entry_cmp_fn)(const struct kv_entry *a, const struct kv_entry *b);

static int key_cmp(const struct kv_entry *a, const struct kv_entry *b)
{
    return cmp_bytes(entry_key(a), entry_key(b));
}

static void heap_sift_down(const struct kv_entry **h, size_t n, size_t i, entry_cmp_fn cmp)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, big = i;
        if (l < n && cmp(h[l], h[big]) > 0)
            big = l;
        if (r < n && cmp(h[r], h[big]) > 0)
            big = r;
        if (big == i)
            return;
        const struct kv_entry *t = h[i];
        h[i] = h[big];
        h[big] = t;
        i = big;
    }
}

static void heap_push(const struct kv_entry **h, size_t *n, const struct kv_entry *e,
                      entry_cmp_fn cmp)
{
    size_t i = (*n)++;
    h[i] = e;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (cmp(h[p], h[i]) >= 0)
            break;
        const struct kv_entry *t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

int kv_list(struct kv *kv, struct slice ns, struct slice prefix, struct slice after, size_t limit,
            int64_t now_ms, kv_list_fn fn, void *ctx, bool *more)
{
    if (more)
        *more = false;
    if (check_ns(ns, kv->limits.ns_max))
        return ERR_BAD_NAME;
    int rc = 0;
    pthread_rwlock_rdlock(&kv->lock);
    /* One extra slot tells whether keys remain after this page. */
    size_t cap = (limit < kv->count ? limit : kv->count) + 1;
    const struct kv_entry **heap = xmalloc(cap * sizeof *heap);
    if (!heap) {
        rc = ERR_NOMEM;
        goto out_unlock;
    }
    size_t n = 0;
    for (size_t i = 0; i < kv->cap; i++) {
        const struct kv_entry *e = kv->slots[i];
        if (!e || expired_at(e, now_ms) || !slice_eq(entry_ns(e), ns))
            continue;
        struct slice k = entry_key(e);
        if (!has_prefix(k, prefix) || (after.len && cmp_bytes(k, after) <= 0))
            continue;
        if (n < cap) {
            heap_push(heap, &n, e, key_cmp);
        } else if (key_cmp(e, heap[0]) < 0) {
            heap[0] = e;
            heap_sift_down(heap, n, 0, key_cmp);
        }
    }
    /* Heap sort in place: ascending order. */
    for (size_t end = n; end > 1; end--) {
        const struct kv_entry *t = heap[0];
        heap[0] = heap[end - 1];
        heap[end - 1] = t;
        heap_sift_down(heap, end - 1, 0, key_cmp);
    }
    size_t emit = n < limit ? n : limit;
    if (more)
        *more = n > limit;
    for (size_t i = 0; i < emit && rc == 0; i++)
        rc = fn(ctx, entry_key(heap[i]), heap[i]->cas, heap[i]->expires_at_ms, heap[i]->value_len);
    xfree(heap);
out_unlock:
    pthread_rwlock_unlock(&kv->lock);
    return rc;
}

static int ttl_cmp_reversed(const struct kv_entry *a, const struct kv_entry *b)
{
    return ttl_cmp(b, a);
}

/* The expired entries form a subtree at the root of the index (no entry expires before its
 * parent), so nothing else is looked at. The walk is best-first: the frontier heap holds the
 * expired children of the entries reported so far, and the earliest of them is reported next.
 * Before the k-th report the frontier holds at most k entries, and none are added after the
 * max-th, so min(max, ttl_len) slots suffice. */
size_t kv_collect_expired(struct kv *kv, int64_t now_ms, size_t max, kv_expired_fn fn, void *ctx)
{
    size_t reported = 0;
    pthread_rwlock_rdlock(&kv->lock);
    if (max == 0 || kv->ttl_len == 0 || !expired_at(kv->ttl_heap[0], now_ms))
        goto out_unlock;
    size_t cap = max < kv->ttl_len ? max : kv->ttl_len;
    const struct kv_entry **frontier = xmalloc(cap * sizeof *frontier);
    if (!frontier)
        goto out_unlock;
    size_t n = 0;
    heap_push(frontier, &n, kv->ttl_heap[0], ttl_cmp_reversed);
    while (n > 0 && reported < max) {
        const struct kv_entry *e = frontier[0];
        frontier[0] = frontier[--n];
        heap_sift_down(frontier, n, 0, ttl_cmp_reversed);
        fn(ctx, entry_ns(e), entry_key(e), e->cas);
        reported++;
        size_t first = 2 * (size_t)e->ttl_pos + 1;
        for (size_t c = first; c < first + 2 && c < kv->ttl_len && reported < max; c++) {
            if (expired_at(kv->ttl_heap[c], now_ms)) {
                ASSERT(n < cap);
                heap_push(frontier, &n, kv->ttl_heap[c], ttl_cmp_reversed);
            }
        }
    }
    xfree(frontier);
out_unlock:
    pthread_rwlock_unlock(&kv->lock);
    return reported;
}

int kv_check_invariants(struct kv *kv)
{
    int rc = 0;
    pthread_rwlock_rdlock(&kv->lock);
    size_t mask = kv->cap - 1, count = 0, ttl_count = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < kv->cap && rc == 0; i++) {
        const struct kv_entry *e = kv->slots[i];
        if (!e)
            continue;
        count++;
        bytes += entry_bytes(e);
        if (e->cas == 0 || e->cas > kv->revision)
            rc = ERR_CORRUPT; /* invariant 1 */
        for (size_t j = (size_t)e->hash & mask; j != i; j = (j + 1) & mask)
            if (!kv->slots[j])
                rc = ERR_CORRUPT; /* invariant 3 */
        if (e->expires_at_ms == 0 ? e->ttl_pos != TTL_POS_NONE
                                  : e->ttl_pos >= kv->ttl_len || kv->ttl_heap[e->ttl_pos] != e)
            rc = ERR_CORRUPT; /* invariant 7: every entry with a TTL is in the index, at ttl_pos */
        ttl_count += e->expires_at_ms != 0;
    }
    if (count != kv->count || bytes != kv->bytes) /* invariant 2 */
        rc = ERR_CORRUPT;
    if (ttl_count != kv->ttl_len || kv->ttl_len > kv->ttl_cap) /* and nothing else is */
        rc = ERR_CORRUPT;
    for (size_t i = 0; i < kv->ttl_len && rc == 0; i++) {
        const struct kv_entry *e = kv->ttl_heap[i];
        if (e->ttl_pos != i || (i > 0 && ttl_cmp(e, kv->ttl_heap[(i - 1) / 2]) < 0))
            rc = ERR_CORRUPT; /* invariant 8 */
    }
    pthread_rwlock_unlock(&kv->lock);
    return rc;
}

void kv_stats(struct kv *kv, struct kv_stats *st)
{
    pthread_rwlock_rdlock(&kv->lock);
    st->keys = kv->count;
    st->bytes = kv->bytes;
    st->revision = kv->revision;
    st->puts_ok = kv->puts_ok;
    st->puts_cas_fail = kv->puts_cas_fail;
    st->puts_rejected = kv->puts_rejected;
    st->deletes_ok = kv->deletes_ok;
    st->deletes_absent = kv->deletes_absent;
    st->deletes_cas_fail = kv->deletes_cas_fail;
    st->expired_removed = kv->expired_removed;
    pthread_rwlock_unlock(&kv->lock);
    st->gets_hit = atomic_load_explicit(&kv->gets_hit, memory_order_relaxed);
    st->gets_miss = atomic_load_explicit(&kv->gets_miss, memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------
 * Snapshots
 * ------------------------------------------------------------------------------------------- */

static int cmp_entry_ptr(const void *a, const void *b)
{
    const struct kv_entry *x = *(const struct kv_entry *const *)a;
    const struct kv_entry *y = *(const struct kv_entry *const *)b;
    int c = cmp_bytes(entry_ns(x), entry_ns(y));
    return c ? c : cmp_bytes(entry_key(x), entry_key(y));
}

int kv_snapshot_write(struct kv *kv, struct sbuf *out)
{
    int rc = 0;
    pthread_rwlock_rdlock(&kv->lock);
    const struct kv_entry **all = NULL;
    if (kv->count) {
        all = xmalloc(kv->count * sizeof *all);
        if (!all) {
            rc = ERR_NOMEM;
            goto out_unlock;
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < kv->cap; i++)
        if (kv->slots[i])
            all[n++] = kv->slots[i];
    ASSERT(n == kv->count);
    if (n > 1)
        qsort(all, n, sizeof *all, cmp_entry_ptr);

    size_t start = out->len;
    sbuf_append(out, SNAP_MAGIC, 4);
    sbuf_put_le32(out, SNAP_VERSION);
    sbuf_put_le64(out, kv->revision);
    sbuf_put_le64(out, (uint64_t)n);
    for (size_t i = 0; i < n && sbuf_ok(out); i++) {
        const struct kv_entry *e = all[i];
        sbuf_put_le64(out, e->cas);
        sbuf_put_le64(out, (uint64_t)e->expires_at_ms);
        struct slice s = entry_ns(e);
        sbuf_put_lp(out, s.ptr, s.len);
        s = entry_key(e);
        sbuf_put_lp(out, s.ptr, s.len);
        s = entry_value(e);
        sbuf_put_lp(out, s.ptr, s.len);
    }
    if (sbuf_ok(out))
        sbuf_put_le32(out, crc32c(0, out->data + start, out->len - start));
    if (!sbuf_ok(out))
        rc = out->too_big ? ERR_TOO_LARGE : ERR_NOMEM;
    xfree(all);
out_unlock:
    pthread_rwlock_unlock(&kv->lock);
    return rc;
}

static int restore_locked(struct kv *kv, struct slice in)
{
    if (in.len < SNAP_HEADER_BYTES + 4)
        return ERR_CORRUPT;
    struct slice body = slice_of(in.ptr, in.len - 4);
    if (crc32c(0, body.ptr, body.len) != get_le32(in.ptr + body.len))
        return ERR_CORRUPT;
    if (memcmp(body.ptr, SNAP_MAGIC, 4) != 0)
        return ERR_CORRUPT;
    struct reader r = reader_of(slice_of(body.ptr + 4, body.len - 4));
    uint32_t version;
    uint64_t revision, count;
    rd_le32(&r, &version);
    rd_le64(&r, &revision);
    rd_le64(&r, &count);
    if (r.bad || version != SNAP_VERSION || revision >= UINT64_MAX - 1)
        return ERR_CORRUPT;
    if (count > rd_left(&r) / SNAP_ENTRY_MIN_BYTES)
        return ERR_CORRUPT;
    kv->revision = revision;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t cas, expires;
        struct slice ns, key, value;
        rd_le64(&r, &cas);
        rd_le64(&r, &expires);
        rd_lp(&r, KV_ITEM_HARD_MAX, &ns);
        rd_lp(&r, KV_ITEM_HARD_MAX, &key);
        rd_lp(&r, KV_ITEM_HARD_MAX, &value);
        if (r.bad || cas == 0 || cas > revision || (int64_t)expires < 0)
            return ERR_CORRUPT;
        if (check_ns(ns, KV_ITEM_HARD_MAX) || check_key(key, KV_ITEM_HARD_MAX))
            return ERR_CORRUPT;
        uint64_t h = key_hash(kv, ns, key);
        if (find_slot(kv, h, ns, key) != SIZE_MAX)
            return ERR_CORRUPT;
        if (reserve_one(kv) != 0 || (expires != 0 && ttl_reserve(kv) != 0))
            return ERR_NOMEM;
        struct kv_entry *e = entry_new(h, ns, key, value);
        if (!e)
            return ERR_NOMEM;
        e->cas = cas;
        e->expires_at_ms = (int64_t)expires;
        insert_new(kv, e);
    }
    if (rd_left(&r) != 0)
        return ERR_CORRUPT;
    return 0;
}

void kv_reset(struct kv *kv)
{
    pthread_rwlock_wrlock(&kv->lock);
    clear_all(kv);
    pthread_rwlock_unlock(&kv->lock);
}

int kv_snapshot_read(struct kv *kv, struct slice in)
{
    pthread_rwlock_wrlock(&kv->lock);
    int rc = ERR_INVALID;
    if (kv->count == 0 && kv->revision == 0) {
        rc = restore_locked(kv, in);
        if (rc)
            clear_all(kv);
    }
    pthread_rwlock_unlock(&kv->lock);
    return rc;
}
