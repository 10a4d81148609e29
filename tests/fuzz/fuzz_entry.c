/* fuzz_entry.c -- libFuzzer target: decode arbitrary bytes as a journal entry payload.
 *
 * Byte 0 of the input, modulo 11, is the entry type (enum entry_type); the rest is the payload,
 * handed to the decoder that apply uses for that type (NOOP: entry_ts only).
 *
 * Properties checked on every input:
 *  1. No decoder (entry_produce_decode + entry_records_next over every record, the topic, commit,
 *     delete-before, retention, KV and schema-register decoders, entry_ts) reads outside the payload (ASan) or
 *     trips UB (UBSan).
 *  2. An accepted payload's fields are sane: every slice lies inside the payload; the lengths the
 *     decoders bound are within those bounds (names <= ENTRY_NAME_MAX, idempotency key <=
 *     ENTRY_IDEM_MAX, KV/record/header keys <= ENTRY_KEY_MAX, values <= ENTRY_VALUE_MAX, at most
 *     ENTRY_HEADERS_MAX headers, partitions fit in 32 bits); ts_ms == entry_ts(payload). A PRODUCE's
 *     fixed fields are the bytes at their documented offsets and its records blob is the payload's
 *     tail; entry_records_next moves strictly forward inside it and leaves *pos alone on error.
 *  3. Re-encoding an accepted payload (the small encoders; for PRODUCE begin/add/finish/patch,
 *     when all its records parse) decodes to the same fields and records. The encoding is not
 *     canonical (decoders accept overlong varints and ignore trailing bytes), so instead: the
 *     re-encoding is never longer than the payload, and when it is exactly as long it is the
 *     payload byte for byte (minimal varints, nothing trailing).
 */
#include "base/assert.h"
#include "base/buf.h"
#include "base/err.h"
#include "broker/entry.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t *g_lo, *g_hi; /* the payload being decoded */

static bool inside(struct slice s)
{
    return s.len == 0 || (s.ptr >= g_lo && s.ptr <= g_hi && s.len <= (size_t)(g_hi - s.ptr));
}

/* The re-encoding b of payload p: never longer; equal length means equal bytes. */
static void check_reencoding(const struct sbuf *b, struct slice p)
{
    ASSERT(sbuf_ok(b));
    ASSERT(b->len <= p.len);
    if (b->len == p.len)
        ASSERT(p.len == 0 || memcmp(b->data, p.ptr, p.len) == 0);
}

static void check_record(const struct entry_produce *e, const struct plog_record *r,
                         const struct plog_header *hdrs)
{
    ASSERT(r->has_key || (r->key.ptr == NULL && r->key.len == 0));
    ASSERT(r->key.len <= ENTRY_KEY_MAX && r->value.len <= ENTRY_VALUE_MAX);
    ASSERT(r->header_count <= ENTRY_HEADERS_MAX && r->headers == hdrs);
    ASSERT(r->timestamp_ms == e->ts_ms && r->offset == 0);
    for (size_t i = 0; i < r->header_count; i++) {
        ASSERT(hdrs[i].key.len <= ENTRY_KEY_MAX && hdrs[i].value.len <= ENTRY_VALUE_MAX);
    }
}

static void check_records_inside(const struct plog_record *r, const struct plog_header *hdrs)
{
    ASSERT(inside(r->key) && inside(r->value));
    for (size_t i = 0; i < r->header_count; i++)
        ASSERT(inside(hdrs[i].key) && inside(hdrs[i].value));
}

static bool records_equal(const struct plog_record *a, const struct plog_record *b)
{
    if (a->has_key != b->has_key || !slice_eq(a->key, b->key) || !slice_eq(a->value, b->value) ||
        a->header_count != b->header_count || a->timestamp_ms != b->timestamp_ms)
        return false;
    for (size_t i = 0; i < a->header_count; i++)
        if (!slice_eq(a->headers[i].key, b->headers[i].key) ||
            !slice_eq(a->headers[i].value, b->headers[i].value))
            return false;
    return true;
}

static void fuzz_produce(struct slice p)
{
    struct entry_produce e;
    if (entry_produce_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= PRODUCE_FIXED_BYTES);
    ASSERT(e.ts_ms == entry_ts(p) && e.flags == p.ptr[PRODUCE_OFF_FLAGS]);
    ASSERT(e.partition == get_le32(p.ptr + PRODUCE_OFF_PARTITION));
    ASSERT(e.base_offset == get_le64(p.ptr + PRODUCE_OFF_BASE));
    ASSERT(e.create_partitions == get_le32(p.ptr + PRODUCE_OFF_CREATE_PARTS));
    ASSERT(e.topic.len <= ENTRY_NAME_MAX && e.idem_key.len <= ENTRY_IDEM_MAX);
    ASSERT(inside(e.topic) && inside(e.idem_key) && inside(e.records));
    ASSERT(e.records.ptr + e.records.len == p.ptr + p.len);

    /* Pass 1: walk every record, re-encoding as we go. */
    struct plog_header hdrs[ENTRY_HEADERS_MAX];
    struct plog_record rec;
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_produce_begin(&b, e.ts_ms, e.topic, e.idem_key);
    size_t pos = 0, n = 0;
    int rc;
    for (;;) {
        size_t before = pos;
        rc = entry_records_next(&e, &pos, &rec, hdrs);
        if (rc != 1) {
            ASSERT(pos == before);
            break;
        }
        ASSERT(pos > before && pos <= e.records.len);
        check_record(&e, &rec, hdrs);
        check_records_inside(&rec, hdrs);
        entry_produce_add(&b, &rec);
        n++;
    }
    ASSERT(rc == 0 || rc == ERR_CORRUPT);
    if (rc == 0)
        ASSERT(pos == e.records.len);
    if (rc != 0) {
        sbuf_free(&b);
        return;
    }
    entry_produce_finish(&b, e.count);
    ASSERT(sbuf_ok(&b) && b.len >= PRODUCE_FIXED_BYTES);
    entry_produce_patch(b.data, e.flags, e.partition, e.base_offset, e.create_partitions);
    check_reencoding(&b, p);

    /* Pass 2: the re-encoding decodes to the same fields and, in lockstep, the same records. */
    struct entry_produce e2;
    ASSERT(entry_produce_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && e2.flags == e.flags && e2.partition == e.partition);
    ASSERT(e2.base_offset == e.base_offset && e2.create_partitions == e.create_partitions);
    ASSERT(slice_eq(e2.topic, e.topic) && slice_eq(e2.idem_key, e.idem_key));
    ASSERT(e2.count == e.count && e2.records.len <= e.records.len);
    struct plog_header hdrs2[ENTRY_HEADERS_MAX];
    struct plog_record rec2;
    size_t pos2 = 0, n2 = 0;
    pos = 0;
    for (;;) {
        int r1 = entry_records_next(&e, &pos, &rec, hdrs);
        int r2 = entry_records_next(&e2, &pos2, &rec2, hdrs2);
        ASSERT(r1 == r2);
        if (r1 != 1)
            break;
        ASSERT(records_equal(&rec, &rec2));
        n2++;
    }
    ASSERT(n2 == n && pos2 == e2.records.len);
    sbuf_free(&b);
}

static void fuzz_topic(struct slice p)
{
    struct entry_topic e, e2;
    if (entry_topic_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= 8 && e.ts_ms == entry_ts(p));
    ASSERT(e.name.len <= ENTRY_NAME_MAX && inside(e.name));
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_topic_encode(&b, &e);
    check_reencoding(&b, p);
    ASSERT(entry_topic_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && slice_eq(e2.name, e.name) && e2.partitions == e.partitions);
    sbuf_free(&b);
}

static void fuzz_commit(struct slice p)
{
    struct entry_commit e, e2;
    if (entry_commit_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= 8 && e.ts_ms == entry_ts(p));
    ASSERT(e.topic.len <= ENTRY_NAME_MAX && e.group.len <= ENTRY_NAME_MAX);
    ASSERT(inside(e.topic) && inside(e.group));
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_commit_encode(&b, &e);
    check_reencoding(&b, p);
    ASSERT(entry_commit_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && slice_eq(e2.topic, e.topic) && slice_eq(e2.group, e.group));
    ASSERT(e2.partition == e.partition && e2.offset == e.offset);
    sbuf_free(&b);
}

static void fuzz_delete_before(struct slice p)
{
    struct entry_delete_before e, e2;
    if (entry_delete_before_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= 8 && e.ts_ms == entry_ts(p));
    ASSERT(e.topic.len <= ENTRY_NAME_MAX && inside(e.topic));
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_delete_before_encode(&b, &e);
    check_reencoding(&b, p);
    ASSERT(entry_delete_before_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && slice_eq(e2.topic, e.topic));
    ASSERT(e2.partition == e.partition && e2.before == e.before);
    sbuf_free(&b);
}

static void fuzz_retention(struct slice p)
{
    struct entry_retention e, e2;
    if (entry_retention_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= 8 && e.ts_ms == entry_ts(p));
    ASSERT(e.topic.len <= ENTRY_NAME_MAX && inside(e.topic));
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_retention_encode(&b, &e);
    check_reencoding(&b, p);
    ASSERT(entry_retention_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && slice_eq(e2.topic, e.topic) && e2.partition == e.partition);
    ASSERT(e2.ttl_ms == e.ttl_ms && e2.max_bytes == e.max_bytes);
    sbuf_free(&b);
}

static void fuzz_kv(struct slice p)
{
    struct entry_kv e, e2;
    if (entry_kv_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= 8 && e.ts_ms == entry_ts(p));
    ASSERT(e.ns.len <= ENTRY_NAME_MAX && e.key.len <= ENTRY_KEY_MAX);
    ASSERT(e.value.len <= ENTRY_VALUE_MAX);
    ASSERT(inside(e.ns) && inside(e.key) && inside(e.value));
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_kv_encode(&b, &e);
    check_reencoding(&b, p);
    ASSERT(entry_kv_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && slice_eq(e2.ns, e.ns) && slice_eq(e2.key, e.key));
    ASSERT(slice_eq(e2.value, e.value) && e2.expected == e.expected && e2.ttl_ms == e.ttl_ms);
    sbuf_free(&b);
}

static void fuzz_schema(struct slice p)
{
    static struct entry_schema e, e2; /* large (the refs array): not on the stack */
    if (entry_schema_decode(p, &e) != 0)
        return;
    ASSERT(p.len >= 8 && e.ts_ms == entry_ts(p));
    ASSERT(e.subject.len <= ENTRY_SCHEMA_SUBJECT_MAX && inside(e.subject));
    ASSERT(e.text.len <= ENTRY_SCHEMA_TEXT_MAX && inside(e.text));
    ASSERT(e.canon.len <= ENTRY_SCHEMA_TEXT_MAX && inside(e.canon));
    ASSERT(e.type >= ENTRY_SCHEMA_TYPE_MIN && e.type <= ENTRY_SCHEMA_TYPE_MAX);
    ASSERT((e.flags & ~ENTRY_SCHEMA_FLAGS_ALL) == 0 && e.nrefs <= ENTRY_SCHEMA_REFS_MAX);
    for (uint32_t i = 0; i < e.nrefs; i++) {
        ASSERT(e.refs[i].name.len <= ENTRY_SCHEMA_REF_NAME_MAX && inside(e.refs[i].name));
        ASSERT(e.refs[i].subject.len <= ENTRY_SCHEMA_SUBJECT_MAX && inside(e.refs[i].subject));
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_schema_encode(&b, &e);
    check_reencoding(&b, p);
    ASSERT(entry_schema_decode(slice_of(b.data, b.len), &e2) == 0);
    ASSERT(e2.ts_ms == e.ts_ms && slice_eq(e2.subject, e.subject) && e2.type == e.type);
    ASSERT(e2.flags == e.flags && slice_eq(e2.text, e.text) && slice_eq(e2.canon, e.canon));
    ASSERT(e2.nrefs == e.nrefs);
    for (uint32_t i = 0; i < e.nrefs; i++) {
        ASSERT(slice_eq(e2.refs[i].name, e.refs[i].name));
        ASSERT(slice_eq(e2.refs[i].subject, e.refs[i].subject));
        ASSERT(e2.refs[i].version == e.refs[i].version);
    }
    sbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct slice p = slice_of(data + 1, size - 1);
    g_lo = p.ptr;
    g_hi = p.ptr + p.len;
    int64_t ts = entry_ts(p);
    ASSERT(p.len < 8 ? ts == 0 : ts == (int64_t)get_le64(p.ptr));
    switch ((enum entry_type)(data[0] % 11)) {
    case ENTRY_NOOP:
        break;
    case ENTRY_TOPIC_CREATE:
    case ENTRY_TOPIC_DELETE:
        fuzz_topic(p);
        break;
    case ENTRY_PRODUCE:
        fuzz_produce(p);
        break;
    case ENTRY_COMMIT:
        fuzz_commit(p);
        break;
    case ENTRY_DELETE_BEFORE:
        fuzz_delete_before(p);
        break;
    case ENTRY_RETENTION:
        fuzz_retention(p);
        break;
    case ENTRY_KV_PUT:
    case ENTRY_KV_DEL:
    case ENTRY_KV_EXPIRE:
        fuzz_kv(p);
        break;
    case ENTRY_SCHEMA_REGISTER:
        fuzz_schema(p);
        break;
    }
    return 0;
}
