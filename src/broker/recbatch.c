/* recbatch.c -- Kafka RecordBatch v2 encoder and validating decoder (layout in recbatch.h and
 * docs/DISK_FORMAT.md "Partition logs").
 *
 * The encoder computes the exact size first, reserves it once, writes every field through a
 * cursor and patches the CRC last. The decoder treats its input as hostile: it checks the fixed
 * header, the exact length, the CRC, and then walks every record with a bounds-checked reader
 * before anyone may iterate, so a batch is either served whole or not at all.
 *
 * Invariants:
 *  1. An encoded batch has batchLength == size - 12, CRC-32C over bytes 21..end, magic 2,
 *     attributes 0, lastOffsetDelta == count - 1, offsetDelta of record i == i.
 *  2. recbatch_decode accepts a batch only if every record parses, offset deltas strictly
 *     increase within [0, lastOffsetDelta], each record ends exactly at its length prefix, and
 *     the records end exactly at the batch end. Hence recbatch_iter_next cannot fail afterwards
 *     (except ERR_NOMEM when growing the header array). recbatch_decode_index runs the same
 *     checks (one walk, walk_records) and also records each record's fields, so a reader
 *     decodes every record once instead of twice (validate, then iterate) while a bad batch
 *     still fails before any of its records is handed out.
 *  3. Timestamps are stored as deltas computed with wrapping (unsigned) arithmetic, so every
 *     int64 timestamp round-trips without signed overflow.
 */
#include "broker/recbatch.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/crc32c.h"
#include "base/err.h"

#include <limits.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Encoding
 * ------------------------------------------------------------------------------------------- */

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static size_t uvarint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t varint_size(int64_t v) { return uvarint_size(zigzag(v)); }

static uint8_t *put_varint(uint8_t *w, int64_t v)
{
    uint64_t u = zigzag(v);
    while (u >= 0x80) {
        *w++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *w++ = (uint8_t)u;
    return w;
}

static int64_t ts_delta(int64_t ts, int64_t base) { return (int64_t)((uint64_t)ts - (uint64_t)base); }

/* Size of one record's body (after its length prefix); 0 with *bad set if a length is too big. */
static uint64_t record_body_size(const struct plog_record *r, int64_t base_ts, size_t i, bool *bad)
{
    uint64_t s = 1; /* attributes */
    s += varint_size(ts_delta(r->timestamp_ms, base_ts));
    s += varint_size((int64_t)i);
    if (r->has_key) {
        if (r->key.len > INT32_MAX)
            *bad = true;
        s += varint_size((int64_t)r->key.len) + r->key.len;
    } else {
        s += varint_size(-1);
    }
    if (r->value.len > INT32_MAX || r->header_count > INT32_MAX)
        *bad = true;
    s += varint_size((int64_t)r->value.len) + r->value.len;
    s += varint_size((int64_t)r->header_count);
    for (size_t h = 0; h < r->header_count && !*bad; h++) {
        const struct plog_header *hd = &r->headers[h];
        if (hd->key.len > INT32_MAX || hd->value.len > INT32_MAX)
            *bad = true;
        s += varint_size((int64_t)hd->key.len) + hd->key.len;
        s += varint_size((int64_t)hd->value.len) + hd->value.len;
        if (s > RECBATCH_MAX_BYTES)
            *bad = true; /* stop summing absurd inputs early; reported as too large below */
    }
    return s;
}

/* Total batch size, or an error. */
static int batch_size(const struct plog_record *recs, size_t n, uint64_t *out)
{
    if (n == 0 || n > INT32_MAX)
        return ERR_INVALID;
    uint64_t total = RECBATCH_HEADER_BYTES;
    for (size_t i = 0; i < n; i++) {
        bool bad = false;
        uint64_t body = record_body_size(&recs[i], recs[0].timestamp_ms, i, &bad);
        if (bad)
            return body > RECBATCH_MAX_BYTES ? ERR_TOO_LARGE : ERR_INVALID;
        total += uvarint_size(zigzag((int64_t)body)) + body;
        if (total > RECBATCH_MAX_BYTES)
            return ERR_TOO_LARGE;
    }
    *out = total;
    return 0;
}

size_t recbatch_encoded_size(const struct plog_record *recs, size_t n)
{
    uint64_t total = 0;
    return batch_size(recs, n, &total) == 0 ? (size_t)total : 0;
}

uint32_t recbatch_crc(const uint8_t *batch, size_t batch_bytes)
{
    ASSERT(batch_bytes >= RECBATCH_HEADER_BYTES);
    return crc32c(0, batch + RECBATCH_CRC_START, batch_bytes - RECBATCH_CRC_START);
}

int recbatch_encode(struct sbuf *out, int64_t base_offset, const struct plog_record *recs,
                    size_t n, struct recbatch_info *info)
{
    uint64_t total = 0;
    int rc = batch_size(recs, n, &total);
    if (rc)
        return rc;
    uint8_t *start = sbuf_reserve(out, (size_t)total);
    if (!start)
        return ERR_NOMEM;

    int64_t base_ts = recs[0].timestamp_ms, max_ts = base_ts;
    for (size_t i = 1; i < n; i++)
        if (recs[i].timestamp_ms > max_ts)
            max_ts = recs[i].timestamp_ms;

    struct recbatch_info h = {
        .base_offset = base_offset,
        .batch_bytes = (uint32_t)total,
        .partition_leader_epoch = 0,
        .attributes = 0,
        .last_offset_delta = (int32_t)(n - 1),
        .base_timestamp = base_ts,
        .max_timestamp = max_ts,
        .producer_id = -1,
        .producer_epoch = -1,
        .base_sequence = -1,
        .record_count = (int32_t)n,
    };
    uint8_t *w = start;
    put_be64(w, (uint64_t)h.base_offset);
    put_be32(w + 8, (uint32_t)(total - RECBATCH_LOG_OVERHEAD));
    put_be32(w + 12, (uint32_t)h.partition_leader_epoch);
    w[16] = RECBATCH_MAGIC;
    put_be32(w + 17, 0); /* crc, patched below */
    put_be16(w + 21, (uint16_t)h.attributes);
    put_be32(w + 23, (uint32_t)h.last_offset_delta);
    put_be64(w + 27, (uint64_t)h.base_timestamp);
    put_be64(w + 35, (uint64_t)h.max_timestamp);
    put_be64(w + 43, (uint64_t)h.producer_id);
    put_be16(w + 51, (uint16_t)h.producer_epoch);
    put_be32(w + 53, (uint32_t)h.base_sequence);
    put_be32(w + 57, (uint32_t)h.record_count);
    w += RECBATCH_HEADER_BYTES;

    for (size_t i = 0; i < n; i++) {
        const struct plog_record *r = &recs[i];
        bool bad = false;
        uint64_t body = record_body_size(r, base_ts, i, &bad);
        w = put_varint(w, (int64_t)body);
        uint8_t *body_start = w;
        *w++ = 0; /* record attributes: unused */
        w = put_varint(w, ts_delta(r->timestamp_ms, base_ts));
        w = put_varint(w, (int64_t)i);
        if (r->has_key) {
            w = put_varint(w, (int64_t)r->key.len);
            if (r->key.len)
                memcpy(w, r->key.ptr, r->key.len);
            w += r->key.len;
        } else {
            w = put_varint(w, -1);
        }
        w = put_varint(w, (int64_t)r->value.len);
        if (r->value.len)
            memcpy(w, r->value.ptr, r->value.len);
        w += r->value.len;
        w = put_varint(w, (int64_t)r->header_count);
        for (size_t k = 0; k < r->header_count; k++) {
            const struct plog_header *hd = &r->headers[k];
            w = put_varint(w, (int64_t)hd->key.len);
            if (hd->key.len)
                memcpy(w, hd->key.ptr, hd->key.len);
            w += hd->key.len;
            w = put_varint(w, (int64_t)hd->value.len);
            if (hd->value.len)
                memcpy(w, hd->value.ptr, hd->value.len);
            w += hd->value.len;
        }
        ASSERT((uint64_t)(w - body_start) == body);
    }
    ASSERT((uint64_t)(w - start) == total);

    h.crc = recbatch_crc(start, (size_t)total);
    put_be32(start + 17, h.crc);
    out->len += (size_t)total;
    if (info)
        *info = h;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding
 * ------------------------------------------------------------------------------------------- */

int recbatch_peek(const uint8_t *p, size_t n, struct recbatch_info *h)
{
    if (n < RECBATCH_HEADER_BYTES)
        return ERR_EOF;
    memset(h, 0, sizeof *h);
    h->base_offset = (int64_t)get_be64(p);
    uint32_t len = get_be32(p + 8);
    h->partition_leader_epoch = (int32_t)get_be32(p + 12);
    uint8_t magic = p[16];
    h->crc = get_be32(p + 17);
    h->attributes = (int16_t)get_be16(p + 21);
    h->last_offset_delta = (int32_t)get_be32(p + 23);
    h->base_timestamp = (int64_t)get_be64(p + 27);
    h->max_timestamp = (int64_t)get_be64(p + 35);
    h->producer_id = (int64_t)get_be64(p + 43);
    h->producer_epoch = (int16_t)get_be16(p + 51);
    h->base_sequence = (int32_t)get_be32(p + 53);
    h->record_count = (int32_t)get_be32(p + 57);

    if (magic != RECBATCH_MAGIC)
        return ERR_CORRUPT;
    if (len < RECBATCH_HEADER_BYTES - RECBATCH_LOG_OVERHEAD ||
        len > RECBATCH_MAX_BYTES - RECBATCH_LOG_OVERHEAD)
        return ERR_CORRUPT;
    h->batch_bytes = len + RECBATCH_LOG_OVERHEAD;
    if (h->base_offset < 0 || h->record_count < 0 || h->last_offset_delta < 0)
        return ERR_CORRUPT;
    if (h->attributes & RECBATCH_ATTR_COMPRESSION_MASK)
        return ERR_CORRUPT; /* we never write compressed batches */
    if ((uint64_t)h->record_count * RECBATCH_MIN_RECORD_BYTES >
        h->batch_bytes - RECBATCH_HEADER_BYTES)
        return ERR_CORRUPT;
    if (h->record_count > 0 && h->last_offset_delta < h->record_count - 1)
        return ERR_CORRUPT;
    if ((uint64_t)h->base_offset + (uint64_t)h->last_offset_delta > (uint64_t)INT64_MAX)
        return ERR_CORRUPT;
    return 0;
}

void recbatch_iter_init(struct recbatch_iter *it, struct slice batch, const struct recbatch_info *h)
{
    ASSERT(batch.len >= h->batch_bytes);
    it->h = *h;
    it->r = reader_of(slice_of(batch.ptr + RECBATCH_HEADER_BYTES,
                               h->batch_bytes - RECBATCH_HEADER_BYTES));
    it->left = h->record_count;
    it->prev_delta = -1;
    it->hdrs = it->inline_hdrs;
    it->hdr_cap = sizeof it->inline_hdrs / sizeof it->inline_hdrs[0];
    it->ents = NULL;
    it->base = batch.ptr;
}

void recbatch_iter_finish(struct recbatch_iter *it)
{
    if (it->hdrs != it->inline_hdrs)
        xfree(it->hdrs);
    it->hdrs = it->inline_hdrs;
    it->hdr_cap = sizeof it->inline_hdrs / sizeof it->inline_hdrs[0];
}

/* Record fields are read through a local cursor [*pp, end) rather than a struct reader: this
 * runs for every record (once with recbatch_decode_index, twice otherwise),
 * so the common one- to three-byte varints are decoded inline and the rest by rd_uvarint. The
 * accepted encodings are exactly rd_uvarint's. */
static inline bool get_uvarint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
    const uint8_t *p = *pp;
    if (p < end && p[0] < 0x80) {
        *v = p[0];
        *pp = p + 1;
        return true;
    }
    if (end - p >= 2 && p[1] < 0x80) {
        *v = (uint64_t)(p[0] & 0x7f) | (uint64_t)p[1] << 7;
        *pp = p + 2;
        return true;
    }
    if (end - p >= 3 && p[2] < 0x80) { /* offset deltas up to 2^20 */
        *v = (uint64_t)(p[0] & 0x7f) | (uint64_t)(p[1] & 0x7f) << 7 | (uint64_t)p[2] << 14;
        *pp = p + 3;
        return true;
    }
    struct reader r = {p, end, false};
    if (!rd_uvarint(&r, v))
        return false;
    *pp = r.p;
    return true;
}

/* A zigzag varint (Kafka varlong). */
static inline bool get_varint(const uint8_t **pp, const uint8_t *end, int64_t *v)
{
    uint64_t u;
    if (!get_uvarint(pp, end, &u))
        return false;
    *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return true;
}

/* A Kafka int32 varint (zigzag) in [lo, INT32_MAX]. */
static inline bool get_i32(const uint8_t **pp, const uint8_t *end, int64_t lo, int64_t *v)
{
    return get_varint(pp, end, v) && *v >= lo && *v <= INT32_MAX;
}

/* Nullable bytes: length -1 = null (an empty slice, *present = false). */
static inline bool get_nbytes(const uint8_t **pp, const uint8_t *end, bool nullable,
                              struct slice *out, bool *present)
{
    int64_t n;
    if (!get_i32(pp, end, nullable ? -1 : 0, &n))
        return false;
    if (present)
        *present = n >= 0;
    if (n < 0) {
        *out = (struct slice){NULL, 0};
        return true;
    }
    if ((uint64_t)n > (size_t)(end - *pp))
        return false;
    *out = slice_of(*pp, (size_t)n);
    *pp += n;
    return true;
}

/* The header count and headers at *pp (bounded by end) into it->hdrs, growing it if needed. */
static int get_headers(struct recbatch_iter *it, const uint8_t **pp, const uint8_t *end,
                       int64_t *hcount)
{
    /* Each header takes at least two bytes: bound the count before allocating. */
    if (!get_i32(pp, end, 0, hcount) || (uint64_t)*hcount > (size_t)(end - *pp) / 2)
        return ERR_CORRUPT;
    if ((size_t)*hcount > it->hdr_cap) {
        struct plog_header *nh = xmalloc((size_t)*hcount * sizeof *nh);
        if (!nh)
            return ERR_NOMEM;
        recbatch_iter_finish(it);
        it->hdrs = nh;
        it->hdr_cap = (size_t)*hcount;
    }
    for (int64_t k = 0; k < *hcount; k++) {
        if (!get_nbytes(pp, end, false, &it->hdrs[k].key, NULL) ||
            !get_nbytes(pp, end, true, &it->hdrs[k].value, NULL))
            return ERR_CORRUPT;
    }
    return 0;
}

/* The next record from the entries recbatch_decode_index recorded: no varint is decoded again
 * except a record's headers, which are rare (their count byte is 0 otherwise). */
static int iter_next_indexed(struct recbatch_iter *it, struct plog_record *rec)
{
    if (it->left == 0)
        return 0;
    const struct recbatch_ent *e = it->ents++;
    const uint8_t *b = it->base;
    rec->has_key = e->key_off != RECBATCH_ENT_NULL;
    rec->key = rec->has_key ? slice_of(b + e->key_off, e->key_len) : (struct slice){NULL, 0};
    rec->value = e->value_off != RECBATCH_ENT_NULL ? slice_of(b + e->value_off, e->value_len)
                                                   : (struct slice){NULL, 0};
    int64_t hcount = 0;
    const uint8_t *p = b + e->hdr_off;
    if (*p != 0) {
        int rc = get_headers(it, &p, it->r.end, &hcount);
        if (rc)
            return rc;
    }
    rec->timestamp_ms = (int64_t)((uint64_t)it->h.base_timestamp + (uint64_t)e->ts_delta);
    rec->offset = (uint64_t)it->h.base_offset + (uint64_t)e->offset_delta;
    rec->headers = hcount ? it->hdrs : NULL;
    rec->header_count = (size_t)hcount;
    rec->batch_end = false;
    it->left--;
    return 1;
}

int recbatch_iter_next(struct recbatch_iter *it, struct plog_record *rec)
{
    if (it->ents)
        return iter_next_indexed(it, rec);
    const uint8_t *p = it->r.p, *end = it->r.end;
    if (it->left == 0)
        return p == end ? 0 : ERR_CORRUPT;
    int64_t len;
    if (!get_i32(&p, end, 0, &len) || (uint64_t)len > (size_t)(end - p))
        return ERR_CORRUPT;
    const uint8_t *rend = p + len;
    it->r.p = rend;

    int64_t tsd, od, hcount;
    if (p >= rend)
        return ERR_CORRUPT;
    p++; /* record attributes: unused */
    if (!get_varint(&p, rend, &tsd))
        return ERR_CORRUPT;
    if (!get_i32(&p, rend, 0, &od) || od <= it->prev_delta || od > it->h.last_offset_delta)
        return ERR_CORRUPT;
    if (!get_nbytes(&p, rend, true, &rec->key, &rec->has_key))
        return ERR_CORRUPT;
    if (!get_nbytes(&p, rend, true, &rec->value, NULL))
        return ERR_CORRUPT;
    int rc = get_headers(it, &p, rend, &hcount);
    if (rc)
        return rc;
    if (p != rend)
        return ERR_CORRUPT;

    rec->timestamp_ms = (int64_t)((uint64_t)it->h.base_timestamp + (uint64_t)tsd);
    rec->offset = (uint64_t)it->h.base_offset + (uint64_t)od;
    rec->headers = hcount ? it->hdrs : NULL;
    rec->header_count = (size_t)hcount;
    rec->batch_end = false;
    it->prev_delta = od;
    it->left--;
    return 1;
}

/* Validate every record of a batch whose header, length and CRC were checked, exactly as
 * recbatch_iter_next would (invariant 2), without building plog_records; with ents, record
 * each record's fields so the batch can be iterated without decoding it again. */
static int walk_records(const uint8_t *batch, const struct recbatch_info *h,
                        struct recbatch_ent *ents)
{
    const uint8_t *p = batch + RECBATCH_HEADER_BYTES, *end = batch + h->batch_bytes;
    int64_t prev = -1;
    for (int32_t i = 0; i < h->record_count; i++) {
        int64_t len, tsd, od, hcount;
        if (!get_i32(&p, end, 0, &len) || (uint64_t)len > (size_t)(end - p))
            return ERR_CORRUPT;
        const uint8_t *rend = p + len;
        if (p >= rend)
            return ERR_CORRUPT;
        p++; /* record attributes: unused */
        if (!get_varint(&p, rend, &tsd))
            return ERR_CORRUPT;
        if (!get_i32(&p, rend, 0, &od) || od <= prev || od > h->last_offset_delta)
            return ERR_CORRUPT;
        struct slice key, value;
        bool has_key, has_value;
        if (!get_nbytes(&p, rend, true, &key, &has_key) ||
            !get_nbytes(&p, rend, true, &value, &has_value))
            return ERR_CORRUPT;
        const uint8_t *hp = p;
        if (!get_i32(&p, rend, 0, &hcount) || (uint64_t)hcount > (size_t)(rend - p) / 2)
            return ERR_CORRUPT;
        for (int64_t k = 0; k < hcount; k++) {
            struct slice hk, hv;
            if (!get_nbytes(&p, rend, false, &hk, NULL) || !get_nbytes(&p, rend, true, &hv, NULL))
                return ERR_CORRUPT;
        }
        if (p != rend)
            return ERR_CORRUPT;
        if (ents) {
            struct recbatch_ent *e = &ents[i];
            e->ts_delta = tsd;
            e->key_off = has_key ? (uint32_t)(key.ptr - batch) : RECBATCH_ENT_NULL;
            e->key_len = (uint32_t)key.len;
            e->value_off = has_value ? (uint32_t)(value.ptr - batch) : RECBATCH_ENT_NULL;
            e->value_len = (uint32_t)value.len;
            e->offset_delta = (int32_t)od;
            e->hdr_off = (uint32_t)(hp - batch);
        }
        prev = od;
    }
    return p == end ? 0 : ERR_CORRUPT;
}

static int decode(struct slice in, struct recbatch_info *h, struct recbatch_ent *ents,
                  size_t ents_cap)
{
    int rc = recbatch_peek(in.ptr, in.len, h);
    if (rc)
        return rc;
    if (in.len < h->batch_bytes)
        return ERR_EOF;
    if (ents && (size_t)h->record_count > ents_cap)
        return ERR_TOO_LARGE;
    if (recbatch_crc(in.ptr, h->batch_bytes) != h->crc)
        return ERR_CORRUPT;
    return walk_records(in.ptr, h, ents);
}

int recbatch_decode(struct slice in, struct recbatch_info *h)
{
    return decode(in, h, NULL, 0);
}

int recbatch_decode_index(struct slice in, struct recbatch_info *h, struct recbatch_ent *ents,
                          size_t ents_cap)
{
    return decode(in, h, ents, ents_cap);
}

void recbatch_iter_init_index(struct recbatch_iter *it, struct slice batch,
                              const struct recbatch_info *h, const struct recbatch_ent *ents)
{
    recbatch_iter_init(it, batch, h);
    it->ents = ents;
    it->base = batch.ptr;
}
