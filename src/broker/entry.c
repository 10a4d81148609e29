/* entry.c -- see entry.h. Decoders treat payloads as untrusted bytes (they come from disk or,
 * later, from the network): every length is bounds-checked and a malformed payload is
 * ERR_CORRUPT, never a crash. */
#include "broker/entry.h"

#include "base/err.h"

static void put_ts(struct sbuf *b, int64_t ts) { sbuf_put_le64(b, (uint64_t)ts); }

static bool get_ts(struct reader *r, int64_t *ts)
{
    uint64_t v;
    bool ok = rd_le64(r, &v);
    *ts = (int64_t)v;
    return ok;
}

int64_t entry_ts(struct slice p) { return p.len >= 8 ? (int64_t)get_le64(p.ptr) : 0; }

/* --- PRODUCE ------------------------------------------------------------------------------ */
/* [0] ts u64 | [8] flags u8 | [9] partition u32 | [13] base u64 | [21] create_parts u32 |
 * topic lp | idem lp | count u32 | records... */

void entry_produce_begin(struct sbuf *b, int64_t ts_ms, struct slice topic, struct slice idem_key)
{
    uint8_t fixed[PRODUCE_FIXED_BYTES] = {0};
    put_le64(fixed + PRODUCE_OFF_TS, (uint64_t)ts_ms);
    sbuf_append(b, fixed, sizeof fixed);
    sbuf_put_lp(b, topic.ptr, topic.len);
    sbuf_put_lp(b, idem_key.ptr, idem_key.len);
    sbuf_put_le32(b, 0); /* count, patched by finish */
}

void entry_produce_add(struct sbuf *b, const struct plog_record *rec)
{
    sbuf_putc(b, rec->has_key ? 1 : 0);
    if (rec->has_key)
        sbuf_put_lp(b, rec->key.ptr, rec->key.len);
    sbuf_put_lp(b, rec->value.ptr, rec->value.len);
    sbuf_put_uvarint(b, rec->header_count);
    for (size_t i = 0; i < rec->header_count; i++) {
        sbuf_put_lp(b, rec->headers[i].key.ptr, rec->headers[i].key.len);
        sbuf_put_lp(b, rec->headers[i].value.ptr, rec->headers[i].value.len);
    }
}

void entry_produce_finish(struct sbuf *b, uint32_t count)
{
    if (!sbuf_ok(b) || b->len < PRODUCE_FIXED_BYTES)
        return;
    /* locate the count field: after the fixed part and two lp fields */
    struct reader r = reader_of(slice_of(b->data + PRODUCE_FIXED_BYTES, b->len - PRODUCE_FIXED_BYTES));
    struct slice s;
    rd_lp(&r, ENTRY_NAME_MAX, &s);
    rd_lp(&r, ENTRY_IDEM_MAX, &s);
    if (!r.bad && rd_left(&r) >= 4)
        put_le32((uint8_t *)r.p, count);
}

void entry_produce_raw(struct sbuf *b, int64_t ts_ms, struct slice topic, struct slice batch,
                       uint32_t count)
{
    entry_produce_begin(b, ts_ms, topic, (struct slice){NULL, 0});
    sbuf_append(b, batch.ptr, batch.len);
    entry_produce_finish(b, count);
    if (sbuf_ok(b))
        b->data[PRODUCE_OFF_FLAGS] = PRODUCE_RAW_BATCH;
}

void entry_produce_patch(uint8_t *p, uint8_t flags, uint32_t partition, uint64_t base,
                         uint32_t create_parts)
{
    p[PRODUCE_OFF_FLAGS] = flags;
    put_le32(p + PRODUCE_OFF_PARTITION, partition);
    put_le64(p + PRODUCE_OFF_BASE, base);
    put_le32(p + PRODUCE_OFF_CREATE_PARTS, create_parts);
}

int entry_produce_decode(struct slice p, struct entry_produce *e)
{
    if (p.len < PRODUCE_FIXED_BYTES)
        return ERR_CORRUPT;
    e->ts_ms = (int64_t)get_le64(p.ptr + PRODUCE_OFF_TS);
    e->flags = p.ptr[PRODUCE_OFF_FLAGS];
    e->partition = get_le32(p.ptr + PRODUCE_OFF_PARTITION);
    e->base_offset = get_le64(p.ptr + PRODUCE_OFF_BASE);
    e->create_partitions = get_le32(p.ptr + PRODUCE_OFF_CREATE_PARTS);
    struct reader r = reader_of(slice_of(p.ptr + PRODUCE_FIXED_BYTES, p.len - PRODUCE_FIXED_BYTES));
    rd_lp(&r, ENTRY_NAME_MAX, &e->topic);
    rd_lp(&r, ENTRY_IDEM_MAX, &e->idem_key);
    rd_le32(&r, &e->count);
    if (r.bad)
        return ERR_CORRUPT;
    e->records = slice_of(r.p, rd_left(&r));
    return 0;
}

int entry_records_next(const struct entry_produce *e, size_t *pos, struct plog_record *rec,
                       struct plog_header *headers)
{
    if (*pos >= e->records.len)
        return 0;
    struct reader r = reader_of(slice_of(e->records.ptr + *pos, e->records.len - *pos));
    uint8_t has_key;
    uint64_t nh;
    rd_u8(&r, &has_key);
    rec->has_key = has_key == 1;
    rec->key = (struct slice){NULL, 0};
    if (has_key > 1)
        return ERR_CORRUPT;
    if (rec->has_key)
        rd_lp(&r, ENTRY_KEY_MAX, &rec->key);
    rd_lp(&r, ENTRY_VALUE_MAX, &rec->value);
    rd_uvarint(&r, &nh);
    if (r.bad || nh > ENTRY_HEADERS_MAX)
        return ERR_CORRUPT;
    for (uint64_t i = 0; i < nh; i++) {
        rd_lp(&r, ENTRY_KEY_MAX, &headers[i].key);
        rd_lp(&r, ENTRY_VALUE_MAX, &headers[i].value);
    }
    if (r.bad)
        return ERR_CORRUPT;
    rec->headers = headers;
    rec->header_count = (size_t)nh;
    rec->timestamp_ms = e->ts_ms;
    rec->offset = 0;
    *pos = (size_t)(r.p - e->records.ptr);
    return 1;
}

/* --- small entries ------------------------------------------------------------------------ */

void entry_topic_encode(struct sbuf *b, const struct entry_topic *e)
{
    put_ts(b, e->ts_ms);
    sbuf_put_lp(b, e->name.ptr, e->name.len);
    sbuf_put_uvarint(b, e->partitions);
}

int entry_topic_decode(struct slice p, struct entry_topic *e)
{
    struct reader r = reader_of(p);
    uint64_t n = 0;
    get_ts(&r, &e->ts_ms);
    rd_lp(&r, ENTRY_NAME_MAX, &e->name);
    rd_uvarint(&r, &n);
    if (r.bad || n > UINT32_MAX)
        return ERR_CORRUPT;
    e->partitions = (uint32_t)n;
    return 0;
}

void entry_commit_encode(struct sbuf *b, const struct entry_commit *e)
{
    put_ts(b, e->ts_ms);
    sbuf_put_lp(b, e->topic.ptr, e->topic.len);
    sbuf_put_lp(b, e->group.ptr, e->group.len);
    sbuf_put_uvarint(b, e->partition);
    sbuf_put_uvarint(b, e->offset);
}

int entry_commit_decode(struct slice p, struct entry_commit *e)
{
    struct reader r = reader_of(p);
    uint64_t part = 0;
    get_ts(&r, &e->ts_ms);
    rd_lp(&r, ENTRY_NAME_MAX, &e->topic);
    rd_lp(&r, ENTRY_NAME_MAX, &e->group);
    rd_uvarint(&r, &part);
    rd_uvarint(&r, &e->offset);
    if (r.bad || part > UINT32_MAX)
        return ERR_CORRUPT;
    e->partition = (uint32_t)part;
    return 0;
}

void entry_delete_before_encode(struct sbuf *b, const struct entry_delete_before *e)
{
    put_ts(b, e->ts_ms);
    sbuf_put_lp(b, e->topic.ptr, e->topic.len);
    sbuf_put_uvarint(b, e->partition);
    sbuf_put_uvarint(b, e->before);
}

int entry_delete_before_decode(struct slice p, struct entry_delete_before *e)
{
    struct reader r = reader_of(p);
    uint64_t part = 0;
    get_ts(&r, &e->ts_ms);
    rd_lp(&r, ENTRY_NAME_MAX, &e->topic);
    rd_uvarint(&r, &part);
    rd_uvarint(&r, &e->before);
    if (r.bad || part > UINT32_MAX)
        return ERR_CORRUPT;
    e->partition = (uint32_t)part;
    return 0;
}

void entry_retention_encode(struct sbuf *b, const struct entry_retention *e)
{
    put_ts(b, e->ts_ms);
    sbuf_put_lp(b, e->topic.ptr, e->topic.len);
    sbuf_put_le32(b, e->partition);
    sbuf_put_varint(b, e->ttl_ms);
    sbuf_put_varint(b, e->max_bytes);
}

int entry_retention_decode(struct slice p, struct entry_retention *e)
{
    struct reader r = reader_of(p);
    get_ts(&r, &e->ts_ms);
    rd_lp(&r, ENTRY_NAME_MAX, &e->topic);
    rd_le32(&r, &e->partition);
    rd_varint(&r, &e->ttl_ms);
    rd_varint(&r, &e->max_bytes);
    return r.bad ? ERR_CORRUPT : 0;
}

void entry_kv_encode(struct sbuf *b, const struct entry_kv *e)
{
    put_ts(b, e->ts_ms);
    sbuf_put_lp(b, e->ns.ptr, e->ns.len);
    sbuf_put_lp(b, e->key.ptr, e->key.len);
    sbuf_put_lp(b, e->value.ptr, e->value.len);
    sbuf_put_le64(b, e->expected);
    sbuf_put_uvarint(b, e->ttl_ms);
}

int entry_kv_decode(struct slice p, struct entry_kv *e)
{
    struct reader r = reader_of(p);
    get_ts(&r, &e->ts_ms);
    rd_lp(&r, ENTRY_NAME_MAX, &e->ns);
    rd_lp(&r, ENTRY_KEY_MAX, &e->key);
    rd_lp(&r, ENTRY_VALUE_MAX, &e->value);
    rd_le64(&r, &e->expected);
    rd_uvarint(&r, &e->ttl_ms);
    return r.bad ? ERR_CORRUPT : 0;
}

/* --- SCHEMA_REGISTER ---------------------------------------------------------------------- */
/* ts u64 | subject lp | type u8 | flags u8 | text lp | canon lp | nrefs uv |
 * nrefs x { name lp | subject lp | version uv } */

void entry_schema_encode(struct sbuf *b, const struct entry_schema *e)
{
    put_ts(b, e->ts_ms);
    sbuf_put_lp(b, e->subject.ptr, e->subject.len);
    sbuf_putc(b, e->type);
    sbuf_putc(b, e->flags);
    sbuf_put_lp(b, e->text.ptr, e->text.len);
    sbuf_put_lp(b, e->canon.ptr, e->canon.len);
    sbuf_put_uvarint(b, e->nrefs);
    for (uint32_t i = 0; i < e->nrefs && i < ENTRY_SCHEMA_REFS_MAX; i++) {
        sbuf_put_lp(b, e->refs[i].name.ptr, e->refs[i].name.len);
        sbuf_put_lp(b, e->refs[i].subject.ptr, e->refs[i].subject.len);
        sbuf_put_uvarint(b, e->refs[i].version);
    }
}

int entry_schema_decode(struct slice p, struct entry_schema *e)
{
    struct reader r = reader_of(p);
    uint64_t n = 0;
    get_ts(&r, &e->ts_ms);
    rd_lp(&r, ENTRY_SCHEMA_SUBJECT_MAX, &e->subject);
    rd_u8(&r, &e->type);
    rd_u8(&r, &e->flags);
    rd_lp(&r, ENTRY_SCHEMA_TEXT_MAX, &e->text);
    rd_lp(&r, ENTRY_SCHEMA_TEXT_MAX, &e->canon);
    rd_uvarint(&r, &n);
    if (r.bad || n > ENTRY_SCHEMA_REFS_MAX || e->type < ENTRY_SCHEMA_TYPE_MIN ||
        e->type > ENTRY_SCHEMA_TYPE_MAX || (e->flags & ~ENTRY_SCHEMA_FLAGS_ALL) != 0)
        return ERR_CORRUPT;
    e->nrefs = (uint32_t)n;
    for (uint32_t i = 0; i < e->nrefs; i++) {
        uint64_t v = 0;
        rd_lp(&r, ENTRY_SCHEMA_REF_NAME_MAX, &e->refs[i].name);
        rd_lp(&r, ENTRY_SCHEMA_SUBJECT_MAX, &e->refs[i].subject);
        rd_uvarint(&r, &v);
        if (r.bad || v > UINT32_MAX)
            return ERR_CORRUPT;
        e->refs[i].version = (uint32_t)v;
    }
    return r.bad ? ERR_CORRUPT : 0;
}
