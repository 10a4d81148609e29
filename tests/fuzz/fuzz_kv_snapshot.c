/* fuzz_kv_snapshot.c -- libFuzzer target: restore arbitrary bytes as a KV snapshot.
 *
 * Each input is handed to kv_snapshot_read() on a fresh in-memory store (kv_new(NULL)).
 * Properties checked on every input:
 *  1. kv_snapshot_read never reads outside the input (ASan), never trips UB (UBSan) and leaks
 *     nothing (LeakSanitizer; every store and buffer is freed).
 *  2. It returns 0 or ERR_CORRUPT (kv.h: damaged bytes are ERR_CORRUPT).
 *  3. On ERR_CORRUPT the store stays empty, as kv.h promises: no keys, no bytes, revision 0, the
 *     invariants hold, its snapshot is the empty store's, and it still counts as empty (restoring
 *     the empty snapshot into it succeeds).
 *  4. On success kv_check_invariants holds, the revision and key count are the header's, and the
 *     state round-trips: kv_snapshot_write gives bytes A (never longer than the input, as entries
 *     are only reordered and varints made minimal); A restores into a second fresh store whose
 *     snapshot is A byte for byte. A restore into the now non-empty store is ERR_INVALID and
 *     changes nothing.
 * Every input is tried twice: as given, and with its last 4 bytes replaced by the CRC-32C of
 * the rest, so that mutations reach the parser behind the checksum.
 */
#include "fuzz_crc.h"
#include "base/assert.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "kv/kv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct sbuf snapshot_of(struct kv *kv)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    ASSERT(kv_snapshot_write(kv, &b) == 0 && sbuf_ok(&b));
    return b;
}

static bool same_bytes(const struct sbuf *a, const struct sbuf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void check(const uint8_t *data, size_t size)
{
    struct kv *kv = kv_new(NULL);
    ASSERT(kv);
    int rc = kv_snapshot_read(kv, slice_of(data, size));
    ASSERT(rc == 0 || rc == ERR_CORRUPT);
    ASSERT(kv_check_invariants(kv) == 0);
    struct kv_stats st;
    kv_stats(kv, &st);
    struct sbuf a = snapshot_of(kv);

    if (rc != 0) {
        ASSERT(st.keys == 0 && st.bytes == 0 && st.revision == 0);
        struct kv *empty = kv_new(NULL);
        ASSERT(empty);
        struct sbuf e = snapshot_of(empty);
        ASSERT(same_bytes(&a, &e));
        ASSERT(kv_snapshot_read(kv, slice_of(e.data, e.len)) == 0);
        ASSERT(kv_check_invariants(kv) == 0);
        sbuf_free(&e);
        kv_free(empty);
    } else {
        ASSERT(size >= 28 && memcmp(data, "AYKV", 4) == 0);
        ASSERT(st.revision == get_le64(data + 8) && st.keys == get_le64(data + 16));
        ASSERT(a.len <= size);
        struct kv *kv2 = kv_new(NULL);
        ASSERT(kv2);
        ASSERT(kv_snapshot_read(kv2, slice_of(a.data, a.len)) == 0);
        ASSERT(kv_check_invariants(kv2) == 0);
        struct kv_stats st2;
        kv_stats(kv2, &st2);
        ASSERT(st2.keys == st.keys && st2.bytes == st.bytes && st2.revision == st.revision);
        struct sbuf b = snapshot_of(kv2);
        ASSERT(same_bytes(&a, &b));
        if (st.keys != 0 || st.revision != 0) {
            ASSERT(kv_snapshot_read(kv, slice_of(a.data, a.len)) == ERR_INVALID);
            struct sbuf c = snapshot_of(kv);
            ASSERT(same_bytes(&a, &c));
            sbuf_free(&c);
        }
        sbuf_free(&b);
        kv_free(kv2);
    }
    sbuf_free(&a);
    kv_free(kv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_as_is_and_with_crc(data, size, check);
    return 0;
}
