/* fuzz_kafka.c -- libFuzzer target: decode arbitrary bytes as a Kafka request frame (the bytes
 * after the size prefix), as the listener does for every frame a client sends.
 *
 * Properties checked on every input:
 *  1. kafka_request_decode never reads outside the frame (ASan) nor trips UB (UBSan), and never
 *     allocates outside its capped arena.
 *  2. It returns 0, ERR_INVALID, ERR_NOMEM or ERR_UNSUPPORTED, nothing else; ERR_UNSUPPORTED only
 *     for a key/version outside kafka_api_table, 0 only for one inside it.
 *  3. On success every slice (client id, names, records, metadata, group fields) lies inside the
 *     frame, and array counts fit the frame (each element takes at least one byte).
 *  4. A Produce partition's records pass kafka_check_batch or get a Kafka error code, never a
 *     crash; an accepted batch's record count is at least 1.
 */
#include "base/arena.h"
#include "base/assert.h"
#include "base/buf.h"
#include "base/err.h"
#include "kafka/codec.h"

#include <stdint.h>
#include <string.h>

static const uint8_t *g_lo, *g_hi;

static bool inside(struct slice s)
{
    return s.len == 0 || (s.ptr >= g_lo && s.ptr <= g_hi && s.len <= (size_t)(g_hi - s.ptr));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_lo = data;
    g_hi = data + size;
    struct arena a;
    arena_init(&a, 1u << 20);
    struct kafka_request q;
    int rc = kafka_request_decode(slice_of(data, size), &a, &q);
    ASSERT(rc == 0 || rc == ERR_INVALID || rc == ERR_NOMEM || rc == ERR_UNSUPPORTED);
    if (rc == ERR_UNSUPPORTED || rc == 0) {
        const struct kafka_api_range *r = kafka_api_find(q.h.api_key);
        bool in = r && q.h.api_version >= r->min && q.h.api_version <= r->max;
        ASSERT(in == (rc == 0));
    }
    if (rc == 0) {
        ASSERT(inside(q.h.client_id) && inside(q.group_id) && inside(q.member_id) &&
               inside(q.protocol_type) && inside(q.group_instance_id) &&
               inside(q.transactional_id));
        ASSERT(q.ntopics <= size);
        for (uint32_t i = 0; i < q.ntopics; i++) {
            const struct kafka_topic *t = &q.topics[i];
            ASSERT(inside(t->name) && inside(t->data));
            ASSERT(t->nparts <= size);
            for (uint32_t j = 0; t->parts && j < t->nparts; j++) {
                ASSERT(inside(t->parts[j].data));
                if (q.h.api_key == KAFKA_PRODUCE && !t->parts[j].data_null) {
                    uint32_t count = 0;
                    int e = kafka_check_batch(t->parts[j].data, &count);
                    ASSERT(e >= 0);
                    ASSERT(e != 0 || count >= 1);
                }
            }
        }
    }
    /* the header decoder agrees with the full decoder on every frame it accepts */
    struct kafka_header h;
    struct slice body;
    if (kafka_header_decode(slice_of(data, size), &h, &body) == 0) {
        ASSERT(inside(body) && inside(h.client_id));
        if (rc == 0)
            ASSERT(h.api_key == q.h.api_key && h.api_version == q.h.api_version &&
                   h.correlation_id == q.h.correlation_id);
    } else {
        ASSERT(rc == ERR_INVALID);
    }
    arena_free(&a);
    return 0;
}
