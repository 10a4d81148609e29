/* codec.c -- Kafka request decoding and response primitives (see codec.h).
 *
 * Invariants:
 *  1. No read goes past the frame: every field goes through struct kr, which fails (and stays
 *     failed) instead of reading short.
 *  2. Array counts are checked against the bytes left before anything is allocated, so a lying
 *     count costs nothing (each element takes at least one byte... usually four).
 *  3. Request field layouts follow the protocol's version history exactly for the versions in
 *     kafka_api_table; a request must end where its last field ends.
 */
#include "kafka/codec.h"

#include "base/err.h"
#include "broker/recbatch.h"

#include <string.h>

const struct kafka_api_range kafka_api_table[] = {
    {KAFKA_PRODUCE, 3, 7},          {KAFKA_FETCH, 4, 11},
    {KAFKA_LIST_OFFSETS, 1, 2},     {KAFKA_METADATA, 0, 4},
    {KAFKA_OFFSET_COMMIT, 2, 7},    {KAFKA_OFFSET_FETCH, 1, 5},
    {KAFKA_FIND_COORDINATOR, 0, 2}, {KAFKA_JOIN_GROUP, 0, 5},
    {KAFKA_HEARTBEAT, 0, 3},        {KAFKA_LEAVE_GROUP, 0, 1},
    {KAFKA_SYNC_GROUP, 0, 3},       {KAFKA_API_VERSIONS, 0, 2},
    {KAFKA_CREATE_TOPICS, 0, 4},    {KAFKA_DELETE_TOPICS, 0, 3},
};
const size_t kafka_api_table_len = sizeof kafka_api_table / sizeof kafka_api_table[0];

const struct kafka_api_range *kafka_api_find(int16_t key)
{
    for (size_t i = 0; i < kafka_api_table_len; i++)
        if (kafka_api_table[i].key == key)
            return &kafka_api_table[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                      */

struct kr {
    const uint8_t *p, *end;
    bool bad;
};

static bool kr_need(struct kr *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static int8_t kr_i8(struct kr *r)
{
    if (!kr_need(r, 1))
        return 0;
    return (int8_t)*r->p++;
}

static int16_t kr_i16(struct kr *r)
{
    if (!kr_need(r, 2))
        return 0;
    int16_t v = (int16_t)get_be16(r->p);
    r->p += 2;
    return v;
}

static int32_t kr_i32(struct kr *r)
{
    if (!kr_need(r, 4))
        return 0;
    int32_t v = (int32_t)get_be32(r->p);
    r->p += 4;
    return v;
}

static int64_t kr_i64(struct kr *r)
{
    if (!kr_need(r, 8))
        return 0;
    int64_t v = (int64_t)get_be64(r->p);
    r->p += 8;
    return v;
}

/* int16-length string; -1 = null (allowed only when nullable). */
static struct slice kr_str(struct kr *r, bool nullable, bool *is_null)
{
    int16_t n = kr_i16(r);
    if (is_null)
        *is_null = false;
    if (n < 0) {
        if (n != -1 || !nullable)
            r->bad = true;
        else if (is_null)
            *is_null = true;
        return (struct slice){NULL, 0};
    }
    if (!kr_need(r, (size_t)n))
        return (struct slice){NULL, 0};
    struct slice s = slice_of(r->p, (size_t)n);
    r->p += n;
    return s;
}

/* int32-length bytes; -1 = null. */
static struct slice kr_bytes(struct kr *r, bool *is_null)
{
    int32_t n = kr_i32(r);
    *is_null = false;
    if (n < 0) {
        if (n != -1)
            r->bad = true;
        *is_null = true;
        return (struct slice){NULL, 0};
    }
    if (!kr_need(r, (size_t)n))
        return (struct slice){NULL, 0};
    struct slice s = slice_of(r->p, (size_t)n);
    r->p += n;
    return s;
}

/* Array count: -1 = null (only if nullable); each element needs at least min_elem bytes. */
static uint32_t kr_count(struct kr *r, size_t min_elem, bool nullable, bool *is_null)
{
    int32_t n = kr_i32(r);
    if (is_null)
        *is_null = false;
    if (r->bad)
        return 0;
    if (n < 0) {
        if (n != -1 || !nullable)
            r->bad = true;
        else if (is_null)
            *is_null = true;
        return 0;
    }
    if (n > KAFKA_ARRAY_MAX || (size_t)n * min_elem > (size_t)(r->end - r->p)) {
        r->bad = true;
        return 0;
    }
    return (uint32_t)n;
}

/* ------------------------------------------------------------------------------------------ */
/* Header                                                                                      */

int kafka_header_decode(struct slice frame, struct kafka_header *h, struct slice *body)
{
    struct kr r = {frame.ptr, frame.ptr + frame.len, false};
    memset(h, 0, sizeof *h);
    h->api_key = kr_i16(&r);
    h->api_version = kr_i16(&r);
    h->correlation_id = kr_i32(&r);
    h->client_id = kr_str(&r, true, NULL);
    if (r.bad)
        return ERR_INVALID;
    *body = slice_of(r.p, (size_t)(r.end - r.p));
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Requests                                                                                    */

static void *alloc_array(struct arena *a, struct kr *r, uint32_t n, size_t size)
{
    if (n == 0)
        return NULL;
    void *p = arena_alloc(a, (size_t)n * size);
    if (!p)
        r->bad = true;
    else
        memset(p, 0, (size_t)n * size);
    return p;
}

/* The recurring shape: [topic name, [partition ...]] with a per-API partition reader. */
typedef void (*part_fn)(struct kr *r, int16_t v, struct kafka_part *p);

static bool read_topics(struct kr *r, struct arena *a, struct kafka_request *q, size_t min_part,
                        part_fn fn, bool nullable)
{
    q->ntopics = kr_count(r, 6, nullable, &q->topics_null);
    q->topics = alloc_array(a, r, q->ntopics, sizeof *q->topics);
    for (uint32_t i = 0; i < q->ntopics && !r->bad; i++) {
        struct kafka_topic *t = &q->topics[i];
        t->name = kr_str(r, false, NULL);
        t->nparts = kr_count(r, min_part, false, NULL);
        t->parts = alloc_array(a, r, t->nparts, sizeof *t->parts);
        for (uint32_t j = 0; j < t->nparts && !r->bad; j++)
            fn(r, q->h.api_version, &t->parts[j]);
    }
    return !r->bad;
}

static void produce_part(struct kr *r, int16_t v, struct kafka_part *p)
{
    (void)v;
    p->partition = kr_i32(r);
    p->data = kr_bytes(r, &p->data_null);
}

static void fetch_part(struct kr *r, int16_t v, struct kafka_part *p)
{
    p->partition = kr_i32(r);
    if (v >= 9)
        (void)kr_i32(r); /* current_leader_epoch */
    p->offset = kr_i64(r);
    if (v >= 5)
        (void)kr_i64(r); /* log_start_offset (followers only) */
    p->max_bytes = kr_i32(r);
}

static void list_offsets_part(struct kr *r, int16_t v, struct kafka_part *p)
{
    p->partition = kr_i32(r);
    if (v >= 4)
        (void)kr_i32(r); /* current_leader_epoch (not served: max 2) */
    p->timestamp = kr_i64(r);
}

static void commit_part(struct kr *r, int16_t v, struct kafka_part *p)
{
    p->partition = kr_i32(r);
    p->offset = kr_i64(r);
    if (v >= 6)
        (void)kr_i32(r); /* committed_leader_epoch */
    if (v == 1)
        (void)kr_i64(r); /* commit_timestamp */
    p->data = kr_str(r, true, &p->data_null);
}

static void offset_fetch_part(struct kr *r, int16_t v, struct kafka_part *p)
{
    (void)v;
    p->partition = kr_i32(r);
}

static int decode_body(struct kr *r, struct arena *a, struct kafka_request *q)
{
    int16_t v = q->h.api_version;
    bool isnull;
    switch (q->h.api_key) {
    case KAFKA_API_VERSIONS:
        break; /* v0..v2: empty body */
    case KAFKA_METADATA:
        q->ntopics = kr_count(r, 2, v >= 1, &q->topics_null);
        q->topics = alloc_array(a, r, q->ntopics, sizeof *q->topics);
        for (uint32_t i = 0; i < q->ntopics && !r->bad; i++)
            q->topics[i].name = kr_str(r, false, NULL);
        q->allow_auto_create = true;
        if (v >= 4)
            q->allow_auto_create = kr_i8(r) != 0;
        break;
    case KAFKA_PRODUCE:
        q->transactional_id = kr_str(r, true, &isnull);
        q->transactional = !isnull;
        q->acks = kr_i16(r);
        q->timeout_ms = kr_i32(r);
        read_topics(r, a, q, 8, produce_part, false);
        break;
    case KAFKA_FETCH:
        (void)kr_i32(r); /* replica_id */
        q->max_wait_ms = kr_i32(r);
        q->min_bytes = kr_i32(r);
        q->max_bytes = kr_i32(r);
        q->isolation_level = kr_i8(r);
        if (v >= 7) {
            q->session_id = kr_i32(r);
            q->session_epoch = kr_i32(r);
        }
        read_topics(r, a, q, 16, fetch_part, false);
        if (v >= 7) { /* forgotten_topics_data: read and ignored (no fetch sessions) */
            uint32_t n = kr_count(r, 6, false, NULL);
            for (uint32_t i = 0; i < n && !r->bad; i++) {
                (void)kr_str(r, false, NULL);
                uint32_t m = kr_count(r, 4, false, NULL);
                for (uint32_t j = 0; j < m && !r->bad; j++)
                    (void)kr_i32(r);
            }
        }
        if (v >= 11)
            (void)kr_str(r, false, NULL); /* rack_id */
        break;
    case KAFKA_LIST_OFFSETS:
        (void)kr_i32(r); /* replica_id */
        if (v >= 2)
            q->isolation_level = kr_i8(r);
        read_topics(r, a, q, 12, list_offsets_part, false);
        break;
    case KAFKA_OFFSET_COMMIT:
        q->group_id = kr_str(r, false, NULL);
        q->generation_id = kr_i32(r);
        q->member_id = kr_str(r, false, NULL);
        if (v >= 2 && v <= 4)
            (void)kr_i64(r); /* retention_time_ms */
        if (v >= 7)
            q->group_instance_id = kr_str(r, true, NULL);
        read_topics(r, a, q, 14, commit_part, false);
        break;
    case KAFKA_OFFSET_FETCH:
        q->group_id = kr_str(r, false, NULL);
        read_topics(r, a, q, 4, offset_fetch_part, v >= 2);
        break;
    case KAFKA_FIND_COORDINATOR:
        q->group_id = kr_str(r, false, NULL);
        if (v >= 1)
            q->key_type = kr_i8(r);
        break;
    case KAFKA_JOIN_GROUP:
        q->group_id = kr_str(r, false, NULL);
        q->session_timeout_ms = kr_i32(r);
        q->rebalance_timeout_ms = v >= 1 ? kr_i32(r) : q->session_timeout_ms;
        q->member_id = kr_str(r, false, NULL);
        if (v >= 5)
            q->group_instance_id = kr_str(r, true, NULL);
        q->protocol_type = kr_str(r, false, NULL);
        q->ntopics = kr_count(r, 6, false, NULL);
        q->topics = alloc_array(a, r, q->ntopics, sizeof *q->topics);
        for (uint32_t i = 0; i < q->ntopics && !r->bad; i++) {
            q->topics[i].name = kr_str(r, false, NULL);
            q->topics[i].data = kr_bytes(r, &isnull);
        }
        break;
    case KAFKA_SYNC_GROUP:
        q->group_id = kr_str(r, false, NULL);
        q->generation_id = kr_i32(r);
        q->member_id = kr_str(r, false, NULL);
        if (v >= 3)
            q->group_instance_id = kr_str(r, true, NULL);
        q->ntopics = kr_count(r, 6, false, NULL);
        q->topics = alloc_array(a, r, q->ntopics, sizeof *q->topics);
        for (uint32_t i = 0; i < q->ntopics && !r->bad; i++) {
            q->topics[i].name = kr_str(r, false, NULL);
            q->topics[i].data = kr_bytes(r, &isnull);
        }
        break;
    case KAFKA_HEARTBEAT:
        q->group_id = kr_str(r, false, NULL);
        q->generation_id = kr_i32(r);
        q->member_id = kr_str(r, false, NULL);
        if (v >= 3)
            q->group_instance_id = kr_str(r, true, NULL);
        break;
    case KAFKA_LEAVE_GROUP:
        q->group_id = kr_str(r, false, NULL);
        q->member_id = kr_str(r, false, NULL);
        break;
    case KAFKA_CREATE_TOPICS:
        q->ntopics = kr_count(r, 14, false, NULL);
        q->topics = alloc_array(a, r, q->ntopics, sizeof *q->topics);
        for (uint32_t i = 0; i < q->ntopics && !r->bad; i++) {
            struct kafka_topic *t = &q->topics[i];
            t->name = kr_str(r, false, NULL);
            t->num_partitions = kr_i32(r);
            t->replication_factor = kr_i16(r);
            uint32_t n = kr_count(r, 8, false, NULL); /* manual assignments: refused later */
            t->nparts = n;
            for (uint32_t j = 0; j < n && !r->bad; j++) {
                (void)kr_i32(r);
                uint32_t m = kr_count(r, 4, false, NULL);
                for (uint32_t k = 0; k < m && !r->bad; k++)
                    (void)kr_i32(r);
            }
            n = kr_count(r, 4, false, NULL); /* configs: accepted and ignored */
            for (uint32_t j = 0; j < n && !r->bad; j++) {
                (void)kr_str(r, false, NULL);
                (void)kr_str(r, true, NULL);
            }
        }
        q->timeout_ms = kr_i32(r);
        if (v >= 1)
            q->validate_only = kr_i8(r) != 0;
        break;
    case KAFKA_DELETE_TOPICS:
        q->ntopics = kr_count(r, 2, false, NULL);
        q->topics = alloc_array(a, r, q->ntopics, sizeof *q->topics);
        for (uint32_t i = 0; i < q->ntopics && !r->bad; i++)
            q->topics[i].name = kr_str(r, false, NULL);
        q->timeout_ms = kr_i32(r);
        break;
    default:
        return ERR_UNSUPPORTED;
    }
    if (r->bad || r->p != r->end)
        return ERR_INVALID;
    return 0;
}

int kafka_request_decode(struct slice frame, struct arena *a, struct kafka_request *q)
{
    memset(q, 0, sizeof *q);
    struct slice body;
    if (kafka_header_decode(frame, &q->h, &body))
        return ERR_INVALID;
    const struct kafka_api_range *ar = kafka_api_find(q->h.api_key);
    if (!ar || q->h.api_version < ar->min || q->h.api_version > ar->max)
        return ERR_UNSUPPORTED;
    struct kr r = {body.ptr, body.ptr + body.len, false};
    return decode_body(&r, a, q);
}

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                      */

void kw_i8(struct sbuf *b, int8_t v) { sbuf_putc(b, (uint8_t)v); }

void kw_i16(struct sbuf *b, int16_t v)
{
    uint8_t t[2];
    put_be16(t, (uint16_t)v);
    sbuf_append(b, t, 2);
}

void kw_i32(struct sbuf *b, int32_t v)
{
    uint8_t t[4];
    put_be32(t, (uint32_t)v);
    sbuf_append(b, t, 4);
}

void kw_i64(struct sbuf *b, int64_t v)
{
    uint8_t t[8];
    put_be64(t, (uint64_t)v);
    sbuf_append(b, t, 8);
}

void kw_str(struct sbuf *b, struct slice s)
{
    size_t n = s.len > INT16_MAX ? INT16_MAX : s.len;
    kw_i16(b, (int16_t)n);
    sbuf_append(b, s.ptr, n);
}

void kw_cstr(struct sbuf *b, const char *s) { kw_str(b, slice_cstr(s)); }
void kw_null_str(struct sbuf *b) { kw_i16(b, -1); }

void kw_bytes(struct sbuf *b, struct slice s)
{
    kw_i32(b, (int32_t)s.len);
    sbuf_append(b, s.ptr, s.len);
}

void kw_null_bytes(struct sbuf *b) { kw_i32(b, -1); }

size_t kafka_resp_begin(struct sbuf *b, int32_t correlation_id)
{
    size_t start = b->len;
    kw_i32(b, 0);
    kw_i32(b, correlation_id);
    return start;
}

void kafka_resp_end(struct sbuf *b, size_t start)
{
    if (!sbuf_ok(b) || b->len < start + 4)
        return;
    put_be32(b->data + start, (uint32_t)(b->len - start - 4));
}

void kafka_write_api_versions(struct sbuf *b, int16_t version, int16_t error)
{
    kw_i16(b, error);
    kw_i32(b, (int32_t)kafka_api_table_len);
    for (size_t i = 0; i < kafka_api_table_len; i++) {
        kw_i16(b, kafka_api_table[i].key);
        kw_i16(b, kafka_api_table[i].min);
        kw_i16(b, kafka_api_table[i].max);
    }
    if (version >= 1)
        kw_i32(b, 0); /* throttle_time_ms */
}

/* ------------------------------------------------------------------------------------------ */
/* Produce record sets                                                                         */

#define ATTR_TRANSACTIONAL 0x10
#define ATTR_CONTROL 0x20

int kafka_check_batch(struct slice records, uint32_t *count)
{
    if (records.len < RECBATCH_HEADER_BYTES)
        return KERR_CORRUPT_MESSAGE;
    if (records.ptr[16] != RECBATCH_MAGIC)
        return KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT; /* MessageSet v0/v1 */
    uint16_t attrs = get_be16(records.ptr + RECBATCH_CRC_START);
    if (attrs & RECBATCH_ATTR_COMPRESSION_MASK)
        return KERR_UNSUPPORTED_COMPRESSION_TYPE;
    if (attrs & (ATTR_TRANSACTIONAL | ATTR_CONTROL))
        return KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT;
    struct recbatch_info h;
    if (recbatch_decode(records, &h))
        return KERR_CORRUPT_MESSAGE;
    if (h.batch_bytes != records.len)
        return KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT; /* more than one batch per partition */
    if (h.record_count < 1 || h.last_offset_delta != h.record_count - 1)
        return KERR_CORRUPT_MESSAGE;
    *count = (uint32_t)h.record_count;
    return 0;
}
