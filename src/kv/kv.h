/* kv.h -- the KV store state machine: exact keys in namespaces, CAS versions, TTL, snapshots.
 *
 * What it owns: every (namespace, key) -> {value, version, expiry} entry in memory, the
 * store-wide revision counter that versions come from, and the counters reported by kv_stats().
 * It does no I/O and never reads the clock: the HTTP layer validates a request, the integrator
 * journals it, and the core thread calls kv_apply_*() with the wall-clock timestamp carried in the
 * journal entry, so every replica (and every replay) decides CAS and expiry identically.
 *
 * Threads: kv_apply_*() and kv_snapshot_read() take an internal write lock; kv_get(), kv_list(),
 * kv_collect_expired(), kv_snapshot_write() and kv_stats() take it shared, so HTTP workers read
 * concurrently with applies on the core thread.
 *
 * Ownership: the struct kv is owned by whoever called kv_new() and freed by kv_free(). Slices
 * passed in are borrowed for the call only (the store copies what it keeps). Slices handed to the
 * kv_list_fn / kv_expired_fn callbacks point into the store and are valid only during that
 * callback, which runs under the read lock: it must not call back into the same kv. Values read
 * with kv_get() are copied into the caller's sbuf.
 *
 * Versions: one revision counter for the whole store (like etcd). Each successful put and each
 * delete of a live key takes ++revision; a put's version is that number. Versions therefore only
 * grow, also across delete and re-create, without tombstones.
 *
 * Expiry: an entry with expires_at_ms != 0 is expired once now_ms >= expires_at_ms. Reads and
 * applies treat an expired entry as absent. Expired entries stay in memory (and in snapshots) until
 * an apply replaces or removes them: kv_collect_expired() lists them, the owner journals one
 * kv_apply_expire() per key, and applying it frees the memory.
 */
#ifndef AYDER_KV_KV_H
#define AYDER_KV_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

/* Default limits. KV_ENTRY_OVERHEAD is what each entry adds to the byte total on top of its
 * namespace, key and value bytes (entry header, table slot, allocator overhead, rounded up). A
 * key with a TTL also holds 8-16 bytes in the expiry index, which the total does not count: the
 * total decides 507s on every replica, so changing what it counts is a state-machine change. */
#define KV_NS_MAX 128
#define KV_KEY_MAX 1024
#define KV_VALUE_MAX (1024u * 1024u)
#define KV_TOTAL_BYTES_MAX (256ull * 1024 * 1024)
#define KV_KEYS_MAX 4000000ull
#define KV_ENTRY_OVERHEAD 64
/* Hard ceiling on any configured per-item length: lengths are stored in 32 bits. */
#define KV_ITEM_HARD_MAX (1u << 30)

struct kv_limits {
    size_t ns_max;            /* namespace length, bytes (1..ns_max) */
    size_t key_max;           /* key length, bytes (1..key_max) */
    size_t value_max;         /* value length, bytes (0..value_max) -> else ERR_TOO_LARGE */
    uint64_t total_bytes_max; /* sum of ns+key+value+KV_ENTRY_OVERHEAD -> ERR_NOSPACE */
    uint64_t keys_max;        /* number of entries -> ERR_NOSPACE */
};

void kv_limits_default(struct kv_limits *l);

/* l may be NULL (defaults). Lengths above KV_ITEM_HARD_MAX are clamped to it. NULL on OOM. */
struct kv *kv_new(const struct kv_limits *l);
void kv_free(struct kv *kv);

/* Pre-journal validation with the default limits (the apply re-checks with the instance's).
 * Namespace: 1..KV_NS_MAX bytes of [A-Za-z0-9._-], else ERR_BAD_NAME.
 * Key: 1..KV_KEY_MAX bytes, any byte except NUL ('/' allowed); empty or NUL -> ERR_BAD_NAME,
 * too long -> ERR_TOO_LARGE. */
int kv_validate_ns(struct slice ns);
int kv_validate_key(struct slice key);
/* The same checks plus the value length, against this instance's limits. */
int kv_validate(const struct kv *kv, struct slice ns, struct slice key, size_t value_len);

#define KV_CAS_ANY UINT64_MAX /* "cas absent": unconditional */

struct kv_result {
    uint64_t cas;     /* put: the new version; delete: the revision the deletion took (0 if none) */
    uint64_t current; /* on ERR_CAS_MISMATCH: the current version, 0 if absent or expired */
    bool deleted;     /* delete/expire: an entry was removed */
};

/* Put. expected: KV_CAS_ANY (unconditional), 0 (create only if absent or expired), or a version
 * (apply only if the live entry has exactly that version). ttl_ms = 0: no expiry; else
 * expires_at = now_ms + ttl_ms (ERR_BAD_PARAM if that overflows or now_ms < 0).
 * Returns 0 (res->cas = new version), ERR_CAS_MISMATCH (res->current), ERR_BAD_NAME,
 * ERR_TOO_LARGE, ERR_BAD_PARAM, ERR_NOSPACE, ERR_NOMEM. Checks run in that order: names and sizes,
 * then CAS, then space; on any error nothing changes.
 * ERR_NOMEM from an apply means this replica could not apply a committed entry: treat as fatal. */
int kv_apply_put(struct kv *kv, struct slice ns, struct slice key, struct slice value,
                 uint64_t expected, uint64_t ttl_ms, int64_t now_ms, struct kv_result *res);

/* Delete. expected: KV_CAS_ANY (delete if live), 0 ("only if absent": a live key is a mismatch, an
 * absent one is a successful no-op), or a version (delete only if the live entry has it; an absent
 * key is a mismatch with current = 0).
 * Returns 0 with res->deleted = true and res->cas = the new revision if a live entry was removed;
 * 0 with res->deleted = false if the key was absent (revision unchanged); ERR_CAS_MISMATCH;
 * ERR_BAD_NAME / ERR_TOO_LARGE. An expired entry found on the way is freed (no revision change). */
int kv_apply_delete(struct kv *kv, struct slice ns, struct slice key, uint64_t expected,
                    int64_t now_ms, struct kv_result *res);

/* The deletion a TTL sweep journals: remove the entry iff it still has version cas and is expired
 * at now_ms (the entry's timestamp). Otherwise (rewritten meanwhile, or not yet expired by this
 * entry's clock) it is a no-op. Never changes the revision: an expired key was already absent.
 * Returns 0 (res->deleted says whether it was removed), ERR_BAD_NAME / ERR_TOO_LARGE. */
int kv_apply_expire(struct kv *kv, struct slice ns, struct slice key, uint64_t cas, int64_t now_ms,
                    struct kv_result *res);

/* Get: appends the value to value_out (may be NULL), sets *cas and *expires_at_ms (0 = no expiry;
 * either may be NULL). ERR_NOT_FOUND if absent or expired at now_ms; ERR_BAD_NAME / ERR_TOO_LARGE
 * for an invalid name; ERR_NOMEM if value_out failed to grow. kv_meta is the same without copying
 * the value, reporting its length instead (for GET .../meta and HEAD). */
int kv_get(struct kv *kv, struct slice ns, struct slice key, int64_t now_ms, struct sbuf *value_out,
           uint64_t *cas, int64_t *expires_at_ms);
int kv_meta(struct kv *kv, struct slice ns, struct slice key, int64_t now_ms, uint64_t *cas,
            int64_t *expires_at_ms, size_t *value_len);

/* List the live keys of ns that start with prefix, in ascending key-byte order (shorter key first
 * on a common prefix), strictly after `after` (the cursor: the last key of the previous page; empty
 * = from the start), at most limit of them. fn runs per key under the read lock; a nonzero return
 * stops the listing and is returned. *more (may be NULL) says whether keys remain after this page.
 * Cost: one scan of the whole table, O(n log limit), memory O(limit). ERR_NOMEM possible. */
typedef int (*kv_list_fn)(void *ctx, struct slice key, uint64_t cas, int64_t expires_at_ms,
                          size_t value_len);
int kv_list(struct kv *kv, struct slice ns, struct slice prefix, struct slice after, size_t limit,
            int64_t now_ms, kv_list_fn fn, void *ctx, bool *more);

/* Report up to max entries expired at now_ms (ns, key, cas) so the owner can journal one
 * kv_apply_expire() each: the earliest expiry first, ties by the lower cas. Reporting removes
 * nothing: an entry is reported again by every call until an apply replaces or removes it, so a
 * leader that loses office before its expires are applied leaves nothing behind. Cost: O(1) when
 * nothing has expired, else O(k log k) for the k reported, independent of the number of keys
 * (an index holds the keys with a TTL; keys without one are never looked at). It allocates a
 * k-entry scratch array; if that fails it reports nothing and the next call retries.
 * Returns how many were reported. */
typedef void (*kv_expired_fn)(void *ctx, struct slice ns, struct slice key, uint64_t cas);
size_t kv_collect_expired(struct kv *kv, int64_t now_ms, size_t max, kv_expired_fn fn, void *ctx);

/* Snapshot: appends the whole state (revision and every entry present, expired-but-unswept ones
 * included, sorted by (ns, key) so equal states give equal bytes) to out. Format in kv.c.
 * Returns 0, or ERR_NOMEM (out failed to grow). */
int kv_snapshot_write(struct kv *kv, struct sbuf *out);
/* Drop every key (before restoring a snapshot received from the leader); readers may run. */
void kv_reset(struct kv *kv);
/* Restore into an EMPTY kv (else ERR_INVALID). Damaged bytes (bad magic, version, CRC, structure,
 * invalid names, duplicate keys, versions above the revision) -> ERR_CORRUPT and the kv stays
 * empty. The configured size limits are not enforced: the snapshot is the agreed state. */
int kv_snapshot_read(struct kv *kv, struct slice in);

struct kv_stats {
    uint64_t keys;     /* entries in memory (expired-but-unswept included) */
    uint64_t bytes;    /* accounted bytes, see KV_ENTRY_OVERHEAD */
    uint64_t revision; /* last version handed out */
    uint64_t puts_ok, puts_cas_fail, puts_rejected; /* rejected: name/size/space/nomem */
    uint64_t deletes_ok, deletes_absent, deletes_cas_fail;
    uint64_t expired_removed;
    uint64_t gets_hit, gets_miss;
};
void kv_stats(struct kv *kv, struct kv_stats *st);

/* For tests: walk the whole state (O(n)) and check kv.c's invariants (versions, counts and bytes,
 * probe runs, and that the expiry index holds exactly the entries with a TTL, in heap order, each
 * at its recorded position). Returns 0, or ERR_CORRUPT if one is broken. */
int kv_check_invariants(struct kv *kv);

#endif
