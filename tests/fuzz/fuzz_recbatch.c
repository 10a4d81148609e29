/* fuzz_recbatch.c -- libFuzzer target: decode arbitrary bytes as a run of record batches.
 *
 * Properties checked on every input:
 *  1. recbatch_decode never reads outside the input (ASan) and never trips UB (UBSan).
 *  2. A batch it accepts iterates exactly record_count records without error, each offset
 *     within [base, base + lastOffsetDelta].
 *  3. Re-encoding the decoded records gives a batch that decodes to the same records.
 *  4. recbatch_decode_index gives the same verdict as recbatch_decode, and iterating its entries
 *     gives exactly the records (offsets, timestamps, keys, values, headers) the decoding
 *     iterator gives.
 * The CRC would stop almost every mutation at the door, so each input is also decoded once more
 * with its first batch's CRC patched to match ("resealed"), to fuzz the record parser itself.
 */
#include "base/alloc.h"
#include "base/assert.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "broker/recbatch.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECS 4096

static void check_reencode(const struct recbatch_info *h, const struct plog_record *recs,
                           size_t n)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    int rc = recbatch_encode(&b, h->base_offset, recs, n, NULL);
    if (rc == ERR_TOO_LARGE) { /* varint widths can grow the re-encoding past the cap */
        sbuf_free(&b);
        return;
    }
    ASSERT(rc == 0);
    struct recbatch_info h2;
    ASSERT(recbatch_decode(slice_of(b.data, b.len), &h2) == 0);
    ASSERT(h2.record_count == (int32_t)n && h2.batch_bytes == b.len);
    struct recbatch_iter it;
    struct plog_record r;
    recbatch_iter_init(&it, slice_of(b.data, b.len), &h2);
    for (size_t i = 0; i < n; i++) {
        ASSERT(recbatch_iter_next(&it, &r) == 1);
        ASSERT(r.timestamp_ms == recs[i].timestamp_ms && r.has_key == recs[i].has_key);
        ASSERT(slice_eq(r.value, recs[i].value) && r.header_count == recs[i].header_count);
        ASSERT(!r.has_key || slice_eq(r.key, recs[i].key));
    }
    ASSERT(recbatch_iter_next(&it, &r) == 0);
    recbatch_iter_finish(&it);
    sbuf_free(&b);
}

static void decode_run(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode_run(data, size);
    if (size >= RECBATCH_HEADER_BYTES) {
        uint8_t *copy = malloc(size);
        memcpy(copy, data, size);
        uint64_t end = (uint64_t)get_be32(copy + 8) + RECBATCH_LOG_OVERHEAD;
        if (end > size)
            end = size;
        if (end >= RECBATCH_HEADER_BYTES) {
            put_be32(copy + 17, crc32c(0, copy + RECBATCH_CRC_START, end - RECBATCH_CRC_START));
            decode_run(copy, size);
        }
        free(copy);
    }
    return 0;
}

static bool same_slice(struct slice a, struct slice b)
{
    return a.ptr == b.ptr && a.len == b.len;
}

/* Property 4 for the batch at b that recbatch_decode accepted (h). */
static void check_indexed(const uint8_t *b, size_t avail, const struct recbatch_info *h)
{
    static struct recbatch_ent ents[MAX_RECS];
    struct recbatch_info hi;
    int rc = recbatch_decode_index(slice_of(b, avail), &hi, ents, MAX_RECS);
    if ((size_t)h->record_count > MAX_RECS) {
        ASSERT(rc == ERR_TOO_LARGE);
        return;
    }
    ASSERT(rc == 0 && hi.batch_bytes == h->batch_bytes && hi.record_count == h->record_count);
    struct recbatch_iter a, x;
    recbatch_iter_init(&a, slice_of(b, h->batch_bytes), h);
    recbatch_iter_init_index(&x, slice_of(b, h->batch_bytes), &hi, ents);
    for (;;) {
        struct plog_record ra, rx;
        int ca = recbatch_iter_next(&a, &ra), cx = recbatch_iter_next(&x, &rx);
        ASSERT(ca == cx);
        if (ca != 1)
            break;
        ASSERT(ra.offset == rx.offset && ra.timestamp_ms == rx.timestamp_ms &&
               ra.has_key == rx.has_key && same_slice(ra.key, rx.key) &&
               same_slice(ra.value, rx.value) && ra.header_count == rx.header_count);
        for (size_t k = 0; k < ra.header_count; k++)
            ASSERT(same_slice(ra.headers[k].key, rx.headers[k].key) &&
                   same_slice(ra.headers[k].value, rx.headers[k].value));
    }
    recbatch_iter_finish(&a);
    recbatch_iter_finish(&x);
}

static void decode_run(const uint8_t *data, size_t size)
{
    static struct plog_record recs[MAX_RECS];
    static struct recbatch_ent ents[MAX_RECS];
    size_t pos = 0;
    while (pos < size) {
        struct recbatch_info h, hi;
        int drc = recbatch_decode(slice_of(data + pos, size - pos), &h);
        int irc = recbatch_decode_index(slice_of(data + pos, size - pos), &hi, ents, MAX_RECS);
        ASSERT(irc == drc || (drc == 0 && irc == ERR_TOO_LARGE) ||
               (irc == ERR_TOO_LARGE && (drc == ERR_CORRUPT || drc == ERR_EOF)));
        if (drc != 0)
            break;
        check_indexed(data + pos, size - pos, &h);
        ASSERT(h.batch_bytes <= size - pos && h.batch_bytes >= RECBATCH_HEADER_BYTES);
        /* Iterate; headers are not re-encoded (their storage is per record), so drop them. */
        struct recbatch_iter it;
        struct plog_record r;
        recbatch_iter_init(&it, slice_of(data + pos, h.batch_bytes), &h);
        size_t n = 0;
        int rc;
        while ((rc = recbatch_iter_next(&it, &r)) == 1) {
            ASSERT(r.offset >= (uint64_t)h.base_offset &&
                   r.offset <= (uint64_t)h.base_offset + (uint64_t)h.last_offset_delta);
            if (n < MAX_RECS) {
                recs[n] = r;
                recs[n].headers = NULL;
                recs[n].header_count = 0;
            }
            n++;
        }
        recbatch_iter_finish(&it);
        ASSERT(rc == 0 && n == (size_t)h.record_count);
        if (n > 0 && n <= MAX_RECS)
            check_reencode(&h, recs, n);
        pos += h.batch_bytes;
    }
}
